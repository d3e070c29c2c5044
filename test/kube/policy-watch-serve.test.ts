/**
 * `castellan authz serve --kubernetes` as a real process against the HTTP
 * double of the Kubernetes API, driven by a grpc-js ext_authz client: it
 * waits for the first list before serving, a DENY policy created in the
 * cluster denies the same Check within seconds, deleting it allows again,
 * also across a dropped watch; and the flag errors of the new source.
 */
import { create } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { CustomObjectsApi } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { AddressSchema, SocketAddressSchema } from '../../src/gen/envoy/config/core/v3/address_pb.js';
import { AttributeContext_HttpRequestSchema, AttributeContext_PeerSchema, AttributeContext_RequestSchema, AttributeContextSchema } from '../../src/gen/envoy/service/auth/v3/attribute_context_pb.js';
import { Authorization, CheckRequestSchema, type CheckRequest, type CheckResponse } from '../../src/gen/envoy/service/auth/v3/external_auth_pb.js';
import { createClient } from '../../src/grpc/service.ts';
import { startServe, type ServeProcess } from '../authz/serve-helpers.ts';
import { startDouble, until, type DoubleEnv } from './helpers.ts';

const root = join(import.meta.dirname, '../..');
const G = { group: 'security.istio.io', version: 'v1', plural: 'authorizationpolicies' } as const;

const addr = (ip: string, port: number) => create(AddressSchema, { address: { case: 'socketAddress', value: create(SocketAddressSchema, { address: ip, portSpecifier: { case: 'portValue', value: port } }) } });

/** GET `path` on httpbin (namespace foo) from sleep (namespace bar). */
function httpCheck(path: string): CheckRequest {
  return create(CheckRequestSchema, {
    attributes: create(AttributeContextSchema, {
      source: create(AttributeContext_PeerSchema, { address: addr('10.1.2.3', 51000), principal: 'spiffe://cluster.local/ns/bar/sa/sleep' }),
      destination: create(AttributeContext_PeerSchema, { address: addr('10.0.0.5', 8000), principal: 'spiffe://cluster.local/ns/foo/sa/httpbin', labels: { app: 'httpbin' } }),
      request: create(AttributeContext_RequestSchema, { http: create(AttributeContext_HttpRequestSchema, { method: 'GET', host: 'httpbin.foo:8000', path, headers: {} }) }),
    }),
  });
}

const policyHeader = (r: CheckResponse): string | undefined =>
  r.httpResponse.case === 'deniedResponse' ? r.httpResponse.value.headers.find((h) => h.header?.key === 'x-castellan-authz-policy')?.header?.value : undefined;

function castellan(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const base: NodeJS.ProcessEnv = { ...process.env, CASTELLAN_LOG_LEVEL: 'silent' };
    delete base.KUBECONFIG;
    delete base.KUBERNETES_SERVICE_HOST;
    const p = spawn(join(root, 'node_modules/.bin/node'), [join(root, 'bin/castellan.js'), 'authz', ...args], { cwd: root, env: { ...base, ...env } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d));
    p.stderr.on('data', (d: Buffer) => (stderr += d));
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Polls an async condition (helpers' `until` is synchronous). */
const eventually = (fn: () => Promise<boolean>, timeout: number): Promise<void> =>
  vi.waitFor(
    async () => {
      if (!(await fn())) throw new Error('not yet');
    },
    { timeout, interval: 50 },
  );

let env: DoubleEnv;
let serve: ServeProcess | undefined;
let check: (r: CheckRequest) => Promise<CheckResponse>;
let closeClient: (() => void) | undefined;

beforeAll(async () => {
  env = await startDouble('castellan-apserve-');
  for (const ns of ['istio-system', 'foo', 'bar']) env.api.createNamespace(ns);
  env.api.put('authorizationpolicies', {
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name: 'httpbin-readers', namespace: 'foo' },
    spec: { selector: { matchLabels: { app: 'httpbin' } }, action: 'ALLOW', rules: [{ from: [{ source: { namespaces: ['bar'] } }], to: [{ operation: { methods: ['GET'] } }] }] },
  });
});
afterAll(async () => {
  closeClient?.();
  if (serve) expect(await serve.stop()).toBe(0);
  await env.stop();
});

describe('castellan authz serve --kubernetes (HTTP double of the Kubernetes API)', () => {
  it('serves only once the first list is in force; a DENY created in the cluster denies the Check, deleting it allows again', async () => {
    // the first lists fail: serve waits (no gRPC port yet) and retries
    env.api.inject({ method: 'GET', resource: 'authorizationpolicies', watch: false, status: 503, count: 2 });
    serve = await startServe(['--kubernetes', '--kubeconfig', env.kubeconfig, '--log-level', 'debug']);
    expect(env.api.faults).toEqual([]);
    const listening = serve.logs.find((l) => l.event === 'authz.listening')!;
    expect(listening).toMatchObject({ policies: 1, source: 'kubernetes' });
    const at = (event: string): number => serve!.logs.findIndex((l) => l.event === event);
    // (the waiting notice and the first failed list race each other: only their presence counts)
    expect(at('authz.kubernetes_waiting')).toBeGreaterThanOrEqual(0);
    expect(at('kube.list_failed')).toBeGreaterThanOrEqual(0);
    expect(at('authz.kubernetes_synced')).toBeGreaterThan(at('kube.list_failed'));
    expect(at('authz.kubernetes_synced')).toBeLessThan(serve.logs.indexOf(listening));
    const c = createClient(Authorization, serve.grpc, grpc.credentials.createInsecure());
    check = (r) => c.check(r, { deadline: Date.now() + 5000 });
    closeClient = () => c.close();
    expect((await fetch(`http://${serve.http}/readyz`)).status).toBe(200);

    expect((await check(httpCheck('/status/200'))).status?.code).toBe(0);

    const api = env.kc().makeApiClient(CustomObjectsApi);
    await api.createNamespacedCustomObject({
      ...G,
      namespace: 'foo',
      body: { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'deny-status' }, spec: { selector: { matchLabels: { app: 'httpbin' } }, action: 'DENY', rules: [{ to: [{ operation: { paths: ['/status/*'] } }] }] } },
    });
    const createdAt = Date.now();
    await eventually(async () => (await check(httpCheck('/status/200'))).status?.code === 7, 5000);
    expect(Date.now() - createdAt).toBeLessThan(5000);
    const denied = await check(httpCheck('/status/200'));
    expect(policyHeader(denied)).toBe('foo/deny-status');
    expect((await check(httpCheck('/headers'))).status?.code).toBe(0); // the rest of the set still applies

    await api.deleteNamespacedCustomObject({ ...G, namespace: 'foo', name: 'deny-status' });
    await eventually(async () => (await check(httpCheck('/status/200'))).status?.code === 0, 5000);

    // a dropped watch connection: the next change still arrives
    await until(() => env.api.openWatches('authorizationpolicies') === 1);
    env.api.dropWatches('authorizationpolicies');
    env.api.put('authorizationpolicies', { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'deny-headers', namespace: 'foo' }, spec: { action: 'DENY', rules: [{ to: [{ operation: { paths: ['/headers'] } }] }] } });
    await eventually(async () => (await check(httpCheck('/headers'))).status?.code === 7, 8000);
    expect((await check(httpCheck('/status/200'))).status?.code).toBe(0);

    const reloads = serve.logs.filter((l) => l.event === 'authz.reload');
    expect(reloads.length).toBeGreaterThanOrEqual(3);
    expect(reloads.every((l) => l.source === 'kubernetes')).toBe(true);
    const metrics = await (await fetch(`http://${serve.http}/metrics`)).text();
    expect(metrics).toMatch(/^castellan_authz_policies 2$/m);
    expect(metrics).toMatch(/^castellan_authz_invalid_policies 0$/m);
    expect(Number(/^castellan_authz_policy_reloads_total\{result="ok"\} (\d+)$/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(4);
  }, 60_000);

  it('flags: --help lists them; one source only; Kubernetes flags need --kubernetes; no cluster without a kubeconfig', async () => {
    const h = await castellan(['serve', '--help']);
    expect(h.code).toBe(0);
    for (const f of ['--kubernetes ', '--kubeconfig PATH', '--kubernetes-namespace NS', '--kubernetes-invalid MODE']) expect(h.stdout).toContain(f);
    expect(h.stdout).toMatch(/usage: castellan authz serve --policies PATH\.\.\. \| --kubernetes/);
    const both = await castellan(['serve', '--kubernetes', '--kubeconfig', env.kubeconfig, '--policies', 'x.yaml']);
    expect(both).toMatchObject({ code: 2, stderr: expect.stringMatching(/drop --policies/) });
    const lone = await castellan(['serve', '--policies', 'x.yaml', '--kubernetes-namespace', 'foo']);
    expect(lone).toMatchObject({ code: 2, stderr: expect.stringMatching(/--kubernetes-namespace is only used with --kubernetes/) });
    const mode = await castellan(['serve', '--kubernetes', '--kubeconfig', env.kubeconfig, '--kubernetes-invalid', 'open']);
    expect(mode).toMatchObject({ code: 2, stderr: expect.stringMatching(/--kubernetes-invalid must be one of fail-closed, skip/) });
    const ns = await castellan(['serve', '--kubernetes', '--kubeconfig', env.kubeconfig, '--kubernetes-namespace', 'Not_A_Namespace']);
    expect(ns).toMatchObject({ code: 2, stderr: expect.stringMatching(/DNS-1123/) });
    const nowhere = await castellan(['serve', '--kubernetes']);
    expect(nowhere).toMatchObject({ code: 2, stderr: expect.stringMatching(/not running in a cluster/) });
    const missing = await castellan(['serve', '--kubernetes', '--kubeconfig', join(root, 'no-such-kubeconfig')]);
    expect(missing).toMatchObject({ code: 2, stderr: expect.stringMatching(/cannot load the kubeconfig/) });
  });
});
