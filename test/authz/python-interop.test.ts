/**
 * Acceptance: an ext_authz client that is not grpc-js (Python grpcio from
 * Debian, stubs generated from the Envoy protos in @grpc/grpc-js-xds) drives
 * `castellan authz serve`: HTTP checks (allow, deny with 403 and the deciding
 * policy, default deny, principal with and without spiffe://, plaintext,
 * repeated raw headers), TCP checks, the workload from context extensions, an
 * unmappable check, and a concurrent burst.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../support/tmp.ts';
import { generateExtAuthzStubs, PYTHON, startServe, type ServeProcess } from './serve-helpers.ts';
import { describeWith, peers } from '../support/peers.ts';

const POLICIES = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: foo}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin-readers, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/bar/sa/sleep"]}}]
    to: [{operation: {methods: ["GET"], paths: ["/status/*", "/ip"]}}]
  - from: [{source: {principals: ["cluster.local/ns/bar/sa/sleep"]}}]
    to: [{operation: {paths: ["/headers"]}}]
    when: [{key: "request.headers[x-team]", values: ["blue"]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: foo}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin"], ports: ["8000"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db-clients, namespace: foo}
spec:
  selector: {matchLabels: {app: db}}
  rules:
  - from: [{source: {namespaces: ["foo"]}}]
    to: [{operation: {ports: ["5432"]}}]
`;

const tmp = tempDir('castellan-authz-py-');
const stubs = join(tmp.path, 'stubs');
let serve: ServeProcess;

describeWith([peers.pythonGrpc], 'Python grpcio peer', () => {
  beforeAll(async () => {
    mkdirSync(stubs);
    generateExtAuthzStubs(stubs);
    writeFileSync(join(tmp.path, 'policies.yaml'), POLICIES);
    serve = await startServe(['--policies', join(tmp.path, 'policies.yaml'), '--log-level', 'info']);
  }, 60_000);

  afterAll(async () => {
    expect(await serve?.stop()).toBe(0);
    tmp.cleanup();
  });

  describe('ext_authz interop with Python grpcio', () => {
    it('ok/http and tcp checks from a grpcio client', async () => {
      const py = spawn(PYTHON, [join(import.meta.dirname, 'py', 'ext_authz_client.py'), stubs, serve.grpc], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      py.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const steps: Record<string, Record<string, unknown>> = {};
      createInterface({ input: py.stdout }).on('line', (line) => {
        const m = JSON.parse(line) as { step: string };
        steps[m.step] = m;
      });
      const code = await new Promise<number | null>((res) => py.on('close', res));
      expect(stderr, stderr).toBe('');
      expect(code).toBe(0);
      const denied = (policy: string, reason: string) => ({ code: 7, kind: 'denied_response', http_status: 403, headers: expect.objectContaining({ 'x-castellan-authz-policy': policy, 'x-castellan-authz-reason': reason }) });
      expect(steps.allow_http).toEqual({ step: 'allow_http', code: 0, kind: 'ok_response' });
      expect(steps.deny_admin).toMatchObject(denied('foo/deny-admin', 'deny-matched'));
      expect(steps.deny_admin!.body).toBe('RBAC: access denied\n');
      expect(steps.deny_default).toMatchObject(denied('none', 'no-allow-matched'));
      expect(steps.principal_without_scheme).toMatchObject({ code: 0 });
      expect(steps.plaintext).toMatchObject(denied('none', 'no-allow-matched'));
      expect(steps.repeated_header).toMatchObject(denied('none', 'no-allow-matched'));
      expect(steps.single_header).toMatchObject({ code: 0, kind: 'ok_response' });
      expect(steps.tcp_allow).toEqual({ step: 'tcp_allow', code: 0, kind: null });
      expect(steps.tcp_deny).toEqual({ step: 'tcp_deny', code: 7, kind: null });
      expect(steps.context_extension_namespace).toMatchObject({ code: 0 });
      expect(steps.no_namespace).toMatchObject(denied('none', 'invalid-check-request'));
      expect(steps.burst).toMatchObject({ codes: [0], count: 300 });
      expect(steps.done).toBeDefined();
    }, 60_000);
  });
});
