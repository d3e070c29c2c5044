/** Loading policies from files and directories; never anything but CastellanError. */
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { assertNoErrors, collectPolicies, collectPolicyText, formatIssue, loadPolicies } from '../../src/authz/loader.ts';
import { parseRequestText } from '../../src/authz/request.ts';
import { CastellanError } from '../../src/platform/errors.ts';
import { tempDir } from '../support/tmp.ts';

const tmp = tempDir('castellan-authz-loader-');
afterAll(() => tmp.cleanup());

const P = (name: string, ns = 'foo', spec = '{}'): string => `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: ${name}\n  namespace: ${ns}\nspec: ${spec}\n`;

describe('policy loader', () => {
  it('reads multi-document YAML, skipping other kinds with a note', () => {
    const text = [P('a'), 'apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n', '', P('b', 'bar', '{action: DENY, rules: [{}]}')].join('---\n');
    const r = collectPolicyText(text, 'm.yaml');
    expect(r.policies.map((p) => `${p.namespace}/${p.name}`)).toEqual(['foo/a', 'bar/b']);
    const notes = r.issues.filter((i) => i.severity === 'note');
    expect(notes.some((n) => n.document === 2 && /skipped Deployment \(apps\/v1\)/.test(n.message))).toBe(true);
    expect(r.policies[1]!.origin).toEqual({ file: 'm.yaml', document: 4 });
  });

  it('an empty file, or only comments and separators, holds no policies', () => {
    for (const t of ['', '\n', '# nothing here\n', '---\n---\n']) {
      const r = collectPolicyText(t, 'e.yaml');
      expect(r.policies).toEqual([]);
      expect(r.issues.filter((i) => i.severity === 'error')).toEqual([]);
    }
  });

  it('expands kind: List (kubectl get -o yaml)', () => {
    const text = `apiVersion: v1\nkind: List\nitems:\n- apiVersion: security.istio.io/v1beta1\n  kind: AuthorizationPolicy\n  metadata: {name: a, namespace: foo}\n  spec: {}\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: c}\n`;
    const r = collectPolicyText(text, 'l.yaml');
    expect(r.policies.map((p) => p.name)).toEqual(['a']);
    expect(r.issues.some((i) => i.path === 'items[1]' && /skipped ConfigMap/.test(i.message))).toBe(true);
  });

  it('reads JSON: one object or an array of documents', () => {
    const one = JSON.stringify({ apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'j', namespace: 'foo' }, spec: {} });
    expect(collectPolicyText(one, 'p.json').policies.map((p) => p.name)).toEqual(['j']);
    expect(collectPolicyText(`[${one}, ${one.replace('"j"', '"k"')}]`, 'p.json').policies.map((p) => p.name)).toEqual(['j', 'k']);
    const bad = collectPolicyText('{"kind": ', 'p.json');
    expect(bad.issues[0]!.message).toMatch(/cannot parse JSON/);
  });

  it('errors name the file, line, document, policy, field path and reason', () => {
    const text = `${P('ok')}---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: broken\n  namespace: foo\nspec:\n  action: DENY\n  rules:\n  - to:\n    - operation:\n        ports: ["http"]\n`;
    const r = collectPolicyText(text, 'policies/deny.yaml');
    let err: unknown;
    try {
      assertNoErrors(r);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CastellanError);
    expect((err as CastellanError).code).toBe('authz.invalid_policy');
    expect((err as Error).message).toContain('policies/deny.yaml:18: document 2 (foo/broken): spec.rules[0].to[0].operation.ports[0]: bad port "http"');
  });

  it('reports YAML syntax errors with their line, and duplicate keys', () => {
    const r = collectPolicyText(`${P('a')}---\nmetadata: {name: x\n`, 'y.yaml');
    const e = r.issues.find((i) => i.severity === 'error')!;
    expect(e.document).toBe(2);
    expect(e.line).toBeGreaterThan(0);
    expect(formatIssue(e)).toMatch(/^y\.yaml:\d+: document 2: invalid YAML/);
    const dup = collectPolicyText('apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nkind: AuthorizationPolicy\n', 'd.yaml');
    expect(dup.issues.some((i) => i.severity === 'error' && /invalid YAML/.test(i.message))).toBe(true);
  });

  it('reads directories recursively, sorted, skipping hidden entries and other extensions', () => {
    const d = join(tmp.path, 'tree');
    mkdirSync(join(d, 'sub'), { recursive: true });
    mkdirSync(join(d, '..2024_01_01'), { recursive: true });
    writeFileSync(join(d, 'b.yaml'), P('b'));
    writeFileSync(join(d, 'a.yml'), P('a'));
    writeFileSync(join(d, 'sub', 'c.json'), JSON.stringify({ apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'c', namespace: 'foo' } }));
    writeFileSync(join(d, 'README.md'), '# not a policy');
    writeFileSync(join(d, '.hidden.yaml'), P('hidden'));
    writeFileSync(join(d, '..2024_01_01', 'x.yaml'), P('old'));
    symlinkSync(d, join(d, 'sub', 'loop'));
    const r = loadPolicies([d]);
    expect(r.policies.map((p) => p.name)).toEqual(['a', 'b', 'c']);
    expect(r.files.map((f) => f.slice(d.length + 1))).toEqual(['a.yml', 'b.yaml', 'sub/c.json']);
  });

  it('missing paths, unreadable and non-UTF-8 files are errors', () => {
    const r = collectPolicies([join(tmp.path, 'nope.yaml')]);
    expect(formatIssue(r.issues[0]!)).toMatch(/nope\.yaml: cannot read: no such file or directory/);
    const f = join(tmp.path, 'latin1.yaml');
    writeFileSync(f, Buffer.from([0x6b, 0x69, 0x6e, 0x64, 0x3a, 0x20, 0xe9, 0x0a]));
    expect(collectPolicies([f]).issues[0]!.message).toMatch(/not valid UTF-8/);
  });

  it('a policy defined twice is an error naming both places', () => {
    expect(() => assertNoErrors(collectPolicyText(`${P('a')}---\n${P('a')}`, 'twice.yaml'))).toThrow(/foo\/a is defined twice: twice\.yaml document 1 and twice\.yaml document 2/);
  });

  it('property: arbitrary bytes and YAML-ish text only ever produce issues or CastellanError', () => {
    const yamlish = fc.array(
      fc.oneof(
        fc.constantFrom('apiVersion: security.istio.io/v1\n', 'kind: AuthorizationPolicy\n', 'metadata: {name: a, namespace: foo}\n', 'spec:\n', '  rules:\n', '  - from:\n', '    - source: {principals: ["a"]}\n', '  action: DENY\n', '---\n', '&a [*a]\n', 'kind: List\nitems: [1, null, {kind: AuthorizationPolicy}]\n', '  when: [{key: x}]\n', '{', ']', ': :', '!!binary x\n', '%YAML 1.1\n'),
        fc.string({ maxLength: 30 }),
      ),
      { maxLength: 12 },
    ).map((parts) => parts.join(''));
    const check = (text: string, file: string): void => {
      try {
        assertNoErrors(collectPolicyText(text, file));
      } catch (e) {
        if (!(e instanceof CastellanError)) throw e;
        expect(e.message).toMatch(/^(invalid policy|\d+ errors in policies|policy .* is defined twice):?/);
      }
    };
    fc.assert(fc.property(yamlish, (t) => check(t, 'f.yaml')), { seed: 4242, numRuns: 1500 });
    fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), (b) => check(Buffer.from(b).toString('latin1'), 'f.yaml')), { seed: 4242, numRuns: 800 });
    fc.assert(fc.property(fc.string({ maxLength: 200 }), (t) => check(t, 'f.json')), { seed: 4242, numRuns: 800 });
    fc.assert(fc.property(fc.jsonValue({ maxDepth: 4 }), (v) => check(JSON.stringify({ apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'p' }, spec: v }), 'f.json')), { seed: 4242, numRuns: 1500 });
  });

  it('property: the request parser only ever throws CastellanError', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 200 }), fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify({ workload: { namespace: 'foo' }, request: v }))), (t) => {
        try {
          parseRequestText(t, 'r');
        } catch (e) {
          expect(e).toBeInstanceOf(CastellanError);
          expect((e as CastellanError).code).toBe('authz.invalid_request');
        }
      }),
      { seed: 4242, numRuns: 1500 },
    );
  });
});
