/** `castellan authz check|test|validate` as users run them: bin/castellan.js, exit codes, output. */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { tempDir } from '../support/tmp.ts';

const root = join(import.meta.dirname, '../..');
const node = join(root, 'node_modules/.bin/node');
const bin = join(root, 'bin/castellan.js');
const examples = join(root, 'deploy/examples/authz');
const tmp = tempDir('castellan-authz-cli-');
afterAll(() => tmp.cleanup());

function castellan(args: string[], stdin?: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(node, [bin, 'authz', ...args], { cwd: root, env: { ...process.env, CASTELLAN_LOG_LEVEL: 'silent' } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d));
    p.stderr.on('data', (d: Buffer) => (stderr += d));
    p.on('close', (code) => resolve({ code, stdout, stderr }));
    p.stdin.end(stdin ?? '');
  });
}

const file = (name: string, text: string): string => {
  const p = join(tmp.path, name);
  writeFileSync(p, text);
  return p;
};

const POLICIES = `${examples}/policies`;
const SLEEP_GET = `${examples}/requests/sleep-get-status.yaml`;
const ADMIN = `${examples}/requests/sleep-admin-dotdot.yaml`;

describe('castellan authz CLI', () => {
  it('check: text output names the deciding policy, action and rule; exit 0', async () => {
    const r = await castellan(['check', '--policies', POLICIES, '--request', SLEEP_GET]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^ALLOW by foo\/httpbin-readers \(ALLOW, rule 0\)/);
    expect(r.stdout).toContain('path matched as: /status/200');
  });

  it('check --output json has decision, policy, action, rule', async () => {
    const r = await castellan(['check', '--policies', POLICIES, '--request', ADMIN, '--output', 'json']);
    expect(r.code).toBe(0);
    const d = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(d).toMatchObject({ decision: 'DENY', policy: 'foo/deny-admin', action: 'DENY', rule: 0, reason: 'deny-matched', normalizedPath: '/admin' });
  });

  it('check --explain lists every policy considered with the first failing condition', async () => {
    const r = await castellan(['check', '--policies', POLICIES, '--request', ADMIN, '--explain']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/DENY +foo\/deny-admin +matched rule 0 +<- decides/);
    expect(r.stdout).toMatch(/ALLOW +foo\/httpbin-readers +no match\n +rule 0: spec\.rules\[0\]\.to\[0\]\.operation\.paths: normalised path "\/admin" matches none of paths/);
    expect(r.stdout).toMatch(/foo\/db-clients +not selected: selector app=db/);
  });

  it('check --expect: exit 1 on mismatch, 0 on match; the request may come from stdin; paths may follow --policies', async () => {
    const req = 'workload: {namespace: foo, labels: {app: db}}\nsource: {principal: cluster.local/ns/foo/sa/orders}\ndestination: {port: 5432}\n';
    const ok = await castellan(['check', '--policies', `${POLICIES}/foo.yaml`, `${POLICIES}/00-mesh.yaml`, '--request', '-', '--expect', 'allow'], req);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/^ALLOW by foo\/db-clients/);
    const bad = await castellan(['check', '--policies', POLICIES, '--request', '-', '--expect', 'DENY'], req);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('expected DENY, got ALLOW');
  });

  it('check: invalid input exits 2 with file, document, field and reason', async () => {
    const pol = file('bad.yaml', 'apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: x, namespace: foo}\nspec:\n  action: DENY\n  rules:\n  - from: []\n');
    const r = await castellan(['check', '--policies', pol, '--request', SLEEP_GET]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${pol}:7: document 1 (foo/x): spec.rules[0].from: "from" must not be empty`);
    const req = file('bad-req.yaml', 'workload: {labels: {app: x}}\nsource: {ip: 10.0.0.300}\nrequest: {methd: GET}\n');
    const r2 = await castellan(['check', '--policies', POLICIES, '--request', req]);
    expect(r2.code).toBe(2);
    expect(r2.stderr).toMatch(/workload\.namespace: is required/);
    expect(r2.stderr).toMatch(/source\.ip: "10\.0\.0\.300" is not an IP address/);
    expect(r2.stderr).toMatch(/request\.methd: unknown field/);
    const r3 = await castellan(['check', '--policies', POLICIES, '--request', SLEEP_GET, '--path-normalization', 'strict']);
    expect(r3.code).toBe(2);
    expect(r3.stderr).toMatch(/--path-normalization must be one of none, base, merge-slashes, decode-and-merge-slashes/);
    const r4 = await castellan(['check', '--request', SLEEP_GET]);
    expect(r4.code).toBe(2);
    expect(r4.stderr).toMatch(/--policies PATH is required/);
  });

  it('check --path-normalization and --root-namespace change the decision', async () => {
    const pol = file('mesh.yaml', 'apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: d, namespace: mesh}\nspec:\n  action: DENY\n  rules:\n  - to:\n    - operation: {paths: ["/admin"]}\n');
    const req = file('slashes.yaml', 'workload: {namespace: web}\nrequest: {method: GET, path: //admin}\n');
    const base = await castellan(['check', '--policies', pol, '--request', req, '--root-namespace', 'mesh', '--output', 'json']);
    expect(JSON.parse(base.stdout)).toMatchObject({ decision: 'ALLOW', normalizedPath: '//admin' });
    const merged = await castellan(['check', '--policies', pol, '--request', req, '--root-namespace', 'mesh', '--path-normalization', 'merge-slashes', '--output', 'json']);
    expect(JSON.parse(merged.stdout)).toMatchObject({ decision: 'DENY', policy: 'mesh/d', normalizedPath: '/admin' });
    const notRoot = await castellan(['check', '--policies', pol, '--request', req, '--path-normalization', 'merge-slashes', '--output', 'json']);
    expect(JSON.parse(notRoot.stdout)).toMatchObject({ decision: 'ALLOW', policy: null });
  });

  it('check --custom-decision: what the CUSTOM provider answers', async () => {
    const req = 'workload: {namespace: foo, labels: {app: orders}}\ndestination: {port: 8080}\nrequest: {method: POST, host: orders.foo, path: /orders}\n';
    const denied = await castellan(['check', '--policies', POLICIES, '--request', '-', '--output', 'json'], req);
    expect(JSON.parse(denied.stdout)).toMatchObject({ decision: 'DENY', policy: 'foo/orders-ext-authz', action: 'CUSTOM', reason: 'custom-denied', customProvider: 'opa' });
    const allowed = await castellan(['check', '--policies', POLICIES, '--request', '-', '--output', 'json', '--custom-decision', 'allow'], req);
    expect(JSON.parse(allowed.stdout)).toMatchObject({ decision: 'ALLOW', policy: 'foo/orders-open', customProvider: 'opa' });
    expect((await castellan(['check', '--policies', POLICIES, '--request', '-', '--custom-decision', 'maybe'], req)).code).toBe(2);
  });

  it('test: a line per case and a summary; exit 1 when a case fails, 2 for an invalid suite', async () => {
    const suite = file('s.yaml', `policies: [${POLICIES}]\ncases:\n  - name: good\n    request: {workload: {namespace: foo, labels: {app: db}}, source: {principal: cluster.local/ns/foo/sa/x}, destination: {port: 5432}}\n    expect: ALLOW\n  - name: wrong on purpose\n    request: {workload: {namespace: foo, labels: {app: db}}, destination: {port: 5432}}\n    expect: ALLOW\n    policy: foo/db-clients\n`);
    const r = await castellan(['test', suite]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('PASS  good: ALLOW by foo/db-clients (ALLOW, rule 0)');
    expect(r.stdout).toContain('FAIL  wrong on purpose: expected ALLOW, expected the decision by foo/db-clients; got DENY by default (no-allow-matched)');
    expect(r.stdout.trimEnd().split('\n').at(-1)).toBe('1 passed, 1 failed');
    const json = await castellan(['test', suite, '--output', 'json']);
    expect(JSON.parse(json.stdout)).toMatchObject({ passed: 1, failed: 1 });
    const invalid = file('inv.yaml', `policies: [${POLICIES}]\ncases:\n  - name: x\n    request: {workload: {namespace: foo}}\n    expect: MAYBE\n`);
    const r2 = await castellan(['test', invalid]);
    expect(r2.code).toBe(2);
    expect(r2.stderr).toMatch(/inv\.yaml: cases\[0\] \(x\): expect must be ALLOW or DENY/);
  });

  it('validate: issues with severity and location; exit 2 on errors, 0 with warnings only', async () => {
    const ok = await castellan(['validate', POLICIES]);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/warning: .*foo\.yaml:\d+: document 3 \(foo\/deny-admin\): spec\.rules\[0\]\.to\[0\]\.operation\.paths: DENY with paths is fragile/);
    expect(ok.stdout).toMatch(/note: .*skipped Service/);
    expect(ok.stdout).toMatch(/2 file\(s\), 8 policies: 0 error\(s\)/);
    const bad = file('v.yaml', 'apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: v, namespace: foo}\nspec:\n  action: CUSTOM\n  rules: [{}]\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: w, namespace: foo}\nspec:\n  rules:\n  - when: [{key: "request.headers[x]", values: []}]\n');
    const r = await castellan(['validate', bad, '--output', 'json']);
    expect(r.code).toBe(2);
    const out = JSON.parse(r.stdout) as { errors: number; issues: { severity: string; document: number; path: string; message: string }[] };
    expect(out.errors).toBe(2);
    expect(out.issues).toEqual(expect.arrayContaining([
      expect.objectContaining({ severity: 'error', document: 1, path: 'spec.provider.name' }),
      expect.objectContaining({ severity: 'error', document: 2, path: 'spec.rules[0].when[0]', message: expect.stringMatching(/at least one of "values" or "notValues"/) }),
    ]));
  });

  it('--help for each command, and usage errors exit 2', async () => {
    for (const sub of ['check', 'test', 'validate', 'serve']) {
      const r = await castellan([sub, '--help']);
      expect(r.code, sub).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^usage: castellan authz ${sub} `));
    }
    const h = await castellan(['serve', '--help']);
    for (const f of ['--policies', '--grpc-listen', '--http-listen', '--root-namespace', '--path-normalization', '--custom-decision']) expect(h.stdout).toContain(f);
    const top = await castellan(['--help']);
    expect(top.code).toBe(0);
    expect(top.stdout).toMatch(/check[\s\S]*test[\s\S]*validate[\s\S]*serve/);
    expect((await castellan(['frobnicate'])).code).toBe(2);
    expect((await castellan(['check', '--nope'])).code).toBe(2);
  });
});
