/**
 * ext_authz: the CheckRequest mapping and the answers (no network), then
 * `castellan authz serve` end to end with a grpc-js client: decisions,
 * 403 with the deciding policy, reload on file change under load without a
 * failed call, a bad edit keeps the last good set (and is logged), metrics.
 */
import { create } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkRequestToAuthz, decisionToCheckResponse, POLICY_HEADER, REASON_HEADER, UnmappableCheck } from '../../src/authz/ext-authz.ts';
import { AddressSchema, SocketAddressSchema } from '../../src/gen/envoy/config/core/v3/address_pb.js';
import { HeaderMapSchema, HeaderValueSchema, MetadataSchema } from '../../src/gen/envoy/config/core/v3/base_pb.js';
import {
  AttributeContext_HttpRequestSchema, AttributeContext_PeerSchema, AttributeContext_RequestSchema, AttributeContext_TLSSessionSchema,
  AttributeContextSchema,
} from '../../src/gen/envoy/service/auth/v3/attribute_context_pb.js';
import { Authorization, CheckRequestSchema, type CheckRequest, type CheckResponse } from '../../src/gen/envoy/service/auth/v3/external_auth_pb.js';
import { spiffeIdOfCertificate } from '../../src/grpc/ext-authz.ts';
import { createClient } from '../../src/grpc/service.ts';
import { openssl } from '../support/openssl-pki.ts';
import { tempDir } from '../support/tmp.ts';
import { allow, deny, engineOf, from, to, when } from './helpers.ts';
import { startServe, type ServeProcess } from './serve-helpers.ts';

const addr = (ip: string, port: number) => create(AddressSchema, { address: { case: 'socketAddress', value: create(SocketAddressSchema, { address: ip, portSpecifier: { case: 'portValue', value: port } }) } });

function httpCheck(o: { method?: string; path?: string; principal?: string; labels?: Record<string, string>; headers?: Record<string, string>; headerMap?: [string, string][]; ext?: Record<string, string>; jwt?: Record<string, unknown>; dstPrincipal?: string } = {}): CheckRequest {
  return create(CheckRequestSchema, {
    attributes: create(AttributeContextSchema, {
      source: create(AttributeContext_PeerSchema, { address: addr('10.1.2.3', 51000), principal: o.principal ?? 'spiffe://cluster.local/ns/bar/sa/sleep' }),
      destination: create(AttributeContext_PeerSchema, { address: addr('10.0.0.5', 8000), principal: o.dstPrincipal ?? 'spiffe://cluster.local/ns/foo/sa/httpbin', labels: o.labels ?? { app: 'httpbin' } }),
      request: create(AttributeContext_RequestSchema, {
        http: create(AttributeContext_HttpRequestSchema, {
          method: o.method ?? 'GET',
          host: 'httpbin.foo:8000',
          path: o.path ?? '/status/200',
          headers: o.headers ?? {},
          ...(o.headerMap ? { headerMap: create(HeaderMapSchema, { headers: o.headerMap.map(([key, v]) => create(HeaderValueSchema, { key, rawValue: Buffer.from(v) })) }) } : {}),
        }),
      }),
      contextExtensions: o.ext ?? {},
      ...(o.jwt ? { metadataContext: create(MetadataSchema, { filterMetadata: { 'envoy.filters.http.jwt_authn': { payload: o.jwt } } as never }) } : {}),
      tlsSession: create(AttributeContext_TLSSessionSchema, { sni: 'outbound_.8000_._.httpbin.foo.svc.cluster.local' }),
    }),
  });
}

function tcpCheck(principal: string, port: number): CheckRequest {
  return create(CheckRequestSchema, {
    attributes: create(AttributeContextSchema, {
      source: create(AttributeContext_PeerSchema, { address: addr('10.1.4.7', 40000), principal }),
      destination: create(AttributeContext_PeerSchema, { address: addr('10.0.0.9', port), principal: 'spiffe://cluster.local/ns/foo/sa/db', labels: { app: 'db' } }),
    }),
  });
}

const deniedHeaders = (r: CheckResponse): Record<string, string> =>
  r.httpResponse.case === 'deniedResponse' ? Object.fromEntries(r.httpResponse.value.headers.map((h) => [h.header!.key, h.header!.value])) : {};

describe('ext_authz mapping (transport-free)', () => {
  it('maps an HTTP check: principal without spiffe://, addresses, sni, workload from the destination principal and labels', () => {
    const r = checkRequestToAuthz(httpCheck({ path: '/a?b=1' }));
    expect(r).toEqual({
      workload: { namespace: 'foo', labels: { app: 'httpbin' } },
      source: { principal: 'cluster.local/ns/bar/sa/sleep', ip: '10.1.2.3', remoteIp: '10.1.2.3' },
      destination: { ip: '10.0.0.5', port: 8000 },
      connection: { sni: 'outbound_.8000_._.httpbin.foo.svc.cluster.local' },
      request: { method: 'GET', host: 'httpbin.foo:8000', path: '/a?b=1', headers: {} },
    });
  });

  it('a check without request.http is a TCP check', () => {
    const r = checkRequestToAuthz(tcpCheck('spiffe://cluster.local/ns/foo/sa/orders', 5432));
    expect(r.request).toBeUndefined();
    expect(r.destination.port).toBe(5432);
  });

  it('raw header_map keeps repeated headers apart; the headers map is one value per name', () => {
    expect(checkRequestToAuthz(httpCheck({ headerMap: [['X-Team', 'blue'], ['x-team', 'red']] })).request!.headers).toEqual({ 'x-team': ['blue', 'red'] });
    expect(checkRequestToAuthz(httpCheck({ headers: { 'x-team': 'blue,red' } })).request!.headers).toEqual({ 'x-team': ['blue,red'] });
  });

  it('context extensions and server defaults name the workload; the JWT payload comes from jwt_authn metadata', () => {
    const r = checkRequestToAuthz(httpCheck({ ext: { 'castellan.namespace': 'shop', 'castellan.labels': 'app=cart, version=v2' }, jwt: { iss: 'https://issuer', sub: 'alice', aud: 'cart', groups: ['a'] } }), { labels: { tier: 'web' } });
    expect(r.workload).toEqual({ namespace: 'shop', labels: { tier: 'web', app: 'cart', version: 'v2' } });
    expect(r.request!.auth).toMatchObject({ issuer: 'https://issuer', subject: 'alice', audiences: ['cart'], claims: { groups: ['a'] } });
    expect(checkRequestToAuthz(httpCheck({ dstPrincipal: '' }), { namespace: 'dflt' }).workload.namespace).toBe('dflt');
    expect(() => checkRequestToAuthz(httpCheck({ dstPrincipal: '' }))).toThrow(UnmappableCheck);
    expect(() => checkRequestToAuthz(httpCheck({ ext: { 'castellan.labels': 'nonsense' } }))).toThrow(UnmappableCheck);
  });

  it('reads the SPIFFE ID from source.certificate (URL-encoded PEM) when source.principal is empty', () => {
    const t = tempDir('castellan-authz-cert-');
    try {
      const mk = (name: string, san: string): string => {
        openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '1', '-subj', '/O=test', '-addext', `subjectAltName=${san}`], t.path);
        return encodeURIComponent(readFileSync(join(t.path, `${name}.pem`), 'utf8'));
      };
      const one = mk('one', 'URI:spiffe://cluster.local/ns/bar/sa/sleep,DNS:sleep.bar');
      const two = mk('two', 'URI:spiffe://cluster.local/ns/bar/sa/a,URI:spiffe://cluster.local/ns/bar/sa/b');
      const none = mk('none', 'DNS:x.example');
      expect(spiffeIdOfCertificate(one)).toBe('spiffe://cluster.local/ns/bar/sa/sleep');
      expect(spiffeIdOfCertificate(two)).toBeUndefined();
      expect(spiffeIdOfCertificate(none)).toBeUndefined();
      expect(spiffeIdOfCertificate('%E0%A4%A')).toBeUndefined();
      const req = httpCheck({ principal: '' });
      req.attributes!.source!.certificate = one;
      expect(checkRequestToAuthz(req, { principalFromCertificate: spiffeIdOfCertificate }).source.principal).toBe('cluster.local/ns/bar/sa/sleep');
      expect(checkRequestToAuthz(req).source.principal).toBeUndefined();
    } finally {
      t.cleanup();
    }
  });

  it('answers: OK on allow; PERMISSION_DENIED + 403 naming the policy and reason on deny; status only for TCP', () => {
    const engine = engineOf([deny('d', [to({ paths: ['/admin'] })]), allow('a', [from({ namespaces: ['bar'] })])]);
    const ok = decisionToCheckResponse(engine.evaluate(checkRequestToAuthz(httpCheck())), true);
    expect(ok.status?.code).toBe(0);
    expect(ok.httpResponse.case).toBe('okResponse');
    const no = decisionToCheckResponse(engine.evaluate(checkRequestToAuthz(httpCheck({ path: '/x/../admin' }))), true);
    expect(no.status?.code).toBe(7);
    expect(no.httpResponse.case === 'deniedResponse' && no.httpResponse.value.status?.code).toBe(403);
    expect(deniedHeaders(no)).toMatchObject({ [POLICY_HEADER]: 'foo/d', [REASON_HEADER]: 'deny-matched' });
    const byDefault = decisionToCheckResponse(engine.evaluate(checkRequestToAuthz(httpCheck({ principal: 'spiffe://cluster.local/ns/x/sa/y' }))), true);
    expect(deniedHeaders(byDefault)).toMatchObject({ [POLICY_HEADER]: 'none', [REASON_HEADER]: 'no-allow-matched' });
    const tcp = decisionToCheckResponse(engine.evaluate(checkRequestToAuthz(tcpCheck('spiffe://cluster.local/ns/x/sa/y', 5432))), false);
    expect(tcp.status?.code).toBe(7);
    expect(tcp.httpResponse.case).toBeUndefined();
  });
});

const POLICY_V1 = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: readers, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/bar/sa/sleep"]}}]
    to: [{operation: {methods: ["GET"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: foo}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin"], ports: ["8000"]}}]
`;
const POLICY_V2 = POLICY_V1.replace('methods: ["GET"]', 'methods: ["GET", "POST"]');

describe('castellan authz serve (grpc-js client)', () => {
  const tmp = tempDir('castellan-authz-serve-');
  const dir = join(tmp.path, 'policies');
  let serve: ServeProcess;
  let closeClient: (() => void) | undefined;
  let check: (r: CheckRequest) => Promise<CheckResponse>;

  beforeAll(async () => {
    mkdirSync(dir);
    writeFileSync(join(dir, 'policies.yaml'), POLICY_V1);
    serve = await startServe(['--policies', dir, '--poll-interval', '200ms', '--log-level', 'debug']);
    const c = createClient(Authorization, serve.grpc, grpc.credentials.createInsecure());
    check = (r) => c.check(r, { deadline: Date.now() + 5000 });
    closeClient = () => c.close();
  }, 30_000);

  afterAll(async () => {
    closeClient?.();
    expect(await serve?.stop()).toBe(0);
    tmp.cleanup();
  });

  it('allows, denies with 403 naming the deciding policy, and answers TCP checks', async () => {
    expect((await check(httpCheck())).status?.code).toBe(0);
    const d = await check(httpCheck({ path: '/admin' }));
    expect(d.status?.code).toBe(7);
    expect(deniedHeaders(d)[POLICY_HEADER]).toBe('foo/deny-admin');
    expect(deniedHeaders(await check(httpCheck({ method: 'POST' })))[POLICY_HEADER]).toBe('none');
    expect((await check(tcpCheck('spiffe://cluster.local/ns/bar/sa/sleep', 5432))).status?.code).toBe(0); // no policy selects app=db
    const bad = await check(httpCheck({ dstPrincipal: '' }));
    expect(deniedHeaders(bad)[REASON_HEADER]).toBe('invalid-check-request');
  });

  it('reloads on file change without failing a call, and keeps the last good set on a bad edit', async () => {
    let stop = false;
    let calls = 0;
    let failures = 0;
    // four concurrent callers for the whole test
    const load = Promise.all(
      [0, 1, 2, 3].map(async () => {
        while (!stop) {
          try {
            const r = await check(httpCheck({ path: '/status/200' }));
            if (r.status?.code !== 0) failures++;
          } catch {
            failures++;
          }
          calls++;
        }
      }),
    );
    const moreCalls = async (n: number): Promise<void> => {
      const target = calls + n;
      while (calls < target) await new Promise((r) => setTimeout(r, 5));
    };
    await moreCalls(20);
    expect(deniedHeaders(await check(httpCheck({ method: 'POST' })))[POLICY_HEADER]).toBe('none');
    // an atomic replace, as editors and ConfigMap updates do
    writeFileSync(join(dir, '.policies.yaml.tmp'), POLICY_V2);
    renameSync(join(dir, '.policies.yaml.tmp'), join(dir, 'policies.yaml'));
    await serve.waitLog((l) => l.event === 'authz.reload');
    expect((await check(httpCheck({ method: 'POST' }))).status?.code).toBe(0);
    // a broken edit: the POST stays allowed, the error is logged
    writeFileSync(join(dir, 'policies.yaml'), POLICY_V2 + '---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: broken, namespace: foo}\nspec: {action: DENY}\n');
    const failed = await serve.waitLog((l) => l.event === 'authz.reload_failed');
    expect(String(failed.error)).toMatch(/policies\.yaml:\d+: document 3 \(foo\/broken\): spec\.rules: a DENY policy without rules/);
    expect((await check(httpCheck({ method: 'POST' }))).status?.code).toBe(0);
    await moreCalls(20);
    stop = true;
    await load;
    expect(calls).toBeGreaterThan(40);
    expect(failures).toBe(0);
  });

  it('serves decision metrics, health and readiness over HTTP', async () => {
    const metrics = await (await fetch(`http://${serve.http}/metrics`)).text();
    expect(metrics).toMatch(/castellan_authz_decisions_total\{decision="ALLOW",action="ALLOW"\} \d+/);
    expect(metrics).toMatch(/castellan_authz_decisions_total\{decision="DENY",action="DENY"\} \d+/);
    expect(metrics).toMatch(/castellan_authz_decisions_total\{decision="DENY",action="none"\} \d+/);
    expect(metrics).toMatch(/castellan_authz_policy_reloads_total\{result="error"\} [1-9]/);
    expect(metrics).toMatch(/castellan_authz_policies 2/);
    expect(metrics).toMatch(/castellan_authz_check_duration_seconds_count \d+/);
    expect((await fetch(`http://${serve.http}/healthz`)).status).toBe(200);
    expect((await fetch(`http://${serve.http}/readyz`)).status).toBe(200);
  });
});

// a CUSTOM-free sanity check that when() works through the adapter
describe('ext_authz headers', () => {
  it('header conditions see the request headers', () => {
    const engine = engineOf([allow('a', [when('request.headers[x-team]', ['blue'])])]);
    expect(engine.evaluate(checkRequestToAuthz(httpCheck({ headers: { 'x-team': 'blue' } }))).decision).toBe('ALLOW');
    expect(engine.evaluate(checkRequestToAuthz(httpCheck({ headerMap: [['x-team', 'blue'], ['x-team', 'red']] }))).decision).toBe('DENY');
  });
});
