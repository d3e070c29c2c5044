/**
 * Principals of other trust domains (issue 17 §5) and Istio's trust-domain
 * aliasing (pilot/pkg/security/trustdomain): the expansion itself, the engine
 * against the reference interpreter and the walk-every-policy model, `authz
 * check --trust-domain`, and ext_authz (`authz serve --trust-domain`) over
 * real gRPC.
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { create } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { type EngineOptions } from '../../src/authz/engine.ts';
import { referenceEvaluate, WalkEveryPolicy } from '../../src/authz/reference.ts';
import { expandTrustDomainAliases } from '../../src/authz/trust-domain.ts';
import { AddressSchema, SocketAddressSchema } from '../../src/gen/envoy/config/core/v3/address_pb.js';
import { AttributeContext_HttpRequestSchema, AttributeContext_PeerSchema, AttributeContext_RequestSchema, AttributeContextSchema } from '../../src/gen/envoy/service/auth/v3/attribute_context_pb.js';
import { Authorization, CheckRequestSchema } from '../../src/gen/envoy/service/auth/v3/external_auth_pb.js';
import { createClient } from '../../src/grpc/service.ts';
import { tempDir } from '../support/tmp.ts';
import { allow, deny, engineOf, from, req, type Doc, when } from './helpers.ts';
import { startServe, type ServeProcess } from './serve-helpers.ts';

describe('expandTrustDomainAliases (Istio\'s ReplaceTrustDomainAliases)', () => {
  it.each([
    ['defaults: nothing changes', ['cluster.local/ns/foo/sa/bar', 'other.example/ns/x/sa/y'], ['cluster.local'], ['cluster.local/ns/foo/sa/bar', 'other.example/ns/x/sa/y']],
    ['cluster.local points at the local trust domain', ['cluster.local/ns/foo/sa/bar'], ['a.example'], ['a.example/ns/foo/sa/bar']],
    ['the local trust domain and each alias', ['a.example/ns/foo/sa/bar'], ['a.example', 'old.example'], ['a.example/ns/foo/sa/bar', 'old.example/ns/foo/sa/bar']],
    ['an alias stands for the trust domain too', ['old.example/ns/foo/sa/bar'], ['a.example', 'old.example'], ['a.example/ns/foo/sa/bar', 'old.example/ns/foo/sa/bar']],
    ['a federated (foreign) trust domain is kept as written', ['b.example/ns/foo/sa/bar'], ['a.example', 'old.example'], ['b.example/ns/foo/sa/bar']],
    ['"*" as trust domain is kept', ['*/ns/foo/sa/bar'], ['a.example'], ['*/ns/foo/sa/bar']],
    ['a *suffix trust domain matching every listed one stays once', ['*-td/ns/foo/sa/bar'], ['new-td', 'old-td'], ['*-td/ns/foo/sa/bar']],
    ['not five parts: kept', ['sa/bar', 'cluster.local/ns/foo/sa/bar/extra', '*'], ['a.example'], ['sa/bar', 'cluster.local/ns/foo/sa/bar/extra', '*']],
  ])('%s', (_n, principals, tds, want) => {
    expect(expandTrustDomainAliases(principals, tds)).toEqual(want);
  });
});

// Every case is decided by the engine, the reference interpreter and the walk-every-policy model.
const A: EngineOptions = { trustDomain: 'a.example', trustDomainAliases: ['old.example'] };
const P = (p: string): Doc => ({ source: { principal: p } });
const cases: { name: string; policies: Doc[]; opts: EngineOptions; request: Doc; expect: 'ALLOW' | 'DENY' }[] = [
  { name: 'ok/a foreign principal in principals', policies: [allow('a', [from({ principals: ['b.example/ns/bar/sa/sleep'] })])], opts: A, request: P('b.example/ns/bar/sa/sleep'), expect: 'ALLOW' },
  { name: 'fail/the same path in our trust domain is not the foreign principal', policies: [allow('a', [from({ principals: ['b.example/ns/bar/sa/sleep'] })])], opts: A, request: P('a.example/ns/bar/sa/sleep'), expect: 'DENY' },
  { name: 'fail/a third trust domain', policies: [allow('a', [from({ principals: ['b.example/ns/bar/sa/sleep'] })])], opts: A, request: P('c.example/ns/bar/sa/sleep'), expect: 'DENY' },
  { name: 'ok/cluster.local/… means the local trust domain', policies: [allow('a', [from({ principals: ['cluster.local/ns/bar/sa/sleep'] })])], opts: A, request: P('a.example/ns/bar/sa/sleep'), expect: 'ALLOW' },
  { name: 'ok/… and its alias', policies: [allow('a', [from({ principals: ['cluster.local/ns/bar/sa/sleep'] })])], opts: A, request: P('old.example/ns/bar/sa/sleep'), expect: 'ALLOW' },
  { name: 'fail/… but not a foreign trust domain literally named cluster.local', policies: [allow('a', [from({ principals: ['cluster.local/ns/bar/sa/sleep'] })])], opts: A, request: P('cluster.local/ns/bar/sa/sleep'), expect: 'DENY' },
  { name: 'ok/defaults: cluster.local is cluster.local', policies: [allow('a', [from({ principals: ['cluster.local/ns/bar/sa/sleep'] })])], opts: {}, request: P('cluster.local/ns/bar/sa/sleep'), expect: 'ALLOW' },
  { name: 'fail/DENY notPrincipals: every local alias counts as local', policies: [deny('d', [from({ notPrincipals: ['a.example/ns/bar/sa/sleep'] })])], opts: A, request: P('old.example/ns/bar/sa/sleep'), expect: 'ALLOW' },
  { name: 'fail/DENY notPrincipals: a foreign caller with the same path is denied', policies: [deny('d', [from({ notPrincipals: ['a.example/ns/bar/sa/sleep'] })])], opts: A, request: P('b.example/ns/bar/sa/sleep'), expect: 'DENY' },
  { name: 'ok/when source.principal with a foreign principal', policies: [allow('a', [when('source.principal', ['b.example/ns/bar/sa/sleep'])])], opts: A, request: P('b.example/ns/bar/sa/sleep'), expect: 'ALLOW' },
  { name: 'ok/when source.principal cluster.local/… aliased', policies: [allow('a', [when('source.principal', ['cluster.local/ns/bar/sa/sleep'])])], opts: A, request: P('old.example/ns/bar/sa/sleep'), expect: 'ALLOW' },
  { name: 'ok/trustDomains names a foreign trust domain', policies: [allow('a', [from({ trustDomains: ['b.example'] })])], opts: A, request: P('b.example/ns/x/sa/y'), expect: 'ALLOW' },
  { name: 'fail/trustDomains of ours does not admit a foreign caller', policies: [allow('a', [from({ trustDomains: ['a.example'] })])], opts: A, request: P('b.example/ns/x/sa/y'), expect: 'DENY' },
  { name: 'ok/namespaces match the namespace of a foreign principal (Istio: any trust domain)', policies: [allow('a', [from({ namespaces: ['bar'] })])], opts: A, request: P('b.example/ns/bar/sa/y'), expect: 'ALLOW' },
];

describe('foreign principals and aliases: engine = reference = walk-every-policy', () => {
  it.each(cases)('$name', (c) => {
    const engine = engineOf(c.policies, c.opts);
    const r = req(c.request);
    const got = engine.evaluate(r).decision;
    expect(got).toBe(c.expect);
    expect(referenceEvaluate(engine.policies, r, c.opts).decision).toBe(c.expect);
    expect(new WalkEveryPolicy(engine.policies, c.opts).evaluate(r).decision).toBe(c.expect);
  });
});

const tmp = tempDir('castellan-authz-td-');
const root = join(import.meta.dirname, '../..');
afterAll(() => tmp.cleanup());

function castellan(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(join(root, 'node_modules/.bin/node'), [join(root, 'bin/castellan.js'), 'authz', ...args], { cwd: root, env: { ...process.env, CASTELLAN_LOG_LEVEL: 'silent' } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d));
    p.stderr.on('data', (d: Buffer) => (stderr += d));
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const POLICY = stringify(allow('foreign', [from({ principals: ['b.example/ns/bar/sa/sleep', 'cluster.local/ns/bar/sa/local'] })], { app: 'httpbin' }));

describe('castellan authz check --trust-domain', () => {
  it('ok/a foreign principal allowed; cluster.local/… follows --trust-domain; bad values exit 2', async () => {
    const pol = join(tmp.path, 'p.yaml');
    writeFileSync(pol, POLICY);
    const request = (p: string): string => {
      const f = join(tmp.path, `r-${p.replace(/\W/g, '_')}.yaml`);
      writeFileSync(f, stringify({ workload: { namespace: 'foo', labels: { app: 'httpbin' } }, source: { principal: p }, request: { method: 'GET', host: 'h', path: '/' } }));
      return f;
    };
    const check = async (p: string, ...flags: string[]) => (await castellan(['check', '--policies', pol, '--request', request(p), '--output', 'json', ...flags])).stdout;
    expect(JSON.parse(await check('b.example/ns/bar/sa/sleep', '--trust-domain', 'a.example')).decision).toBe('ALLOW');
    expect(JSON.parse(await check('c.example/ns/bar/sa/sleep', '--trust-domain', 'a.example')).decision).toBe('DENY');
    expect(JSON.parse(await check('a.example/ns/bar/sa/local', '--trust-domain', 'a.example')).decision).toBe('ALLOW');
    expect(JSON.parse(await check('old.example/ns/bar/sa/local', '--trust-domain', 'a.example', '--trust-domain-alias', 'old.example')).decision).toBe('ALLOW');
    expect(JSON.parse(await check('a.example/ns/bar/sa/local')).decision).toBe('DENY');
    const bad = await castellan(['check', '--policies', pol, '--request', request('x/ns/a/sa/b'), '--trust-domain', 'A.Example']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--trust-domain must be a trust domain name/);
  });
});

describe('ext_authz: castellan authz serve --trust-domain (real gRPC)', () => {
  let serve: ServeProcess;
  let client: ReturnType<typeof createClient<typeof Authorization.method>>;
  beforeAll(async () => {
    writeFileSync(join(tmp.path, 'serve.yaml'), POLICY);
    serve = await startServe(['--policies', join(tmp.path, 'serve.yaml'), '--trust-domain', 'a.example']);
    client = createClient(Authorization, serve.grpc, grpc.credentials.createInsecure());
  }, 30_000);
  afterAll(async () => {
    client?.close();
    await serve?.stop();
  });

  const addr = (ip: string, port: number) => create(AddressSchema, { address: { case: 'socketAddress', value: create(SocketAddressSchema, { address: ip, portSpecifier: { case: 'portValue', value: port } }) } });
  const check = (principal: string) =>
    client.check(
      create(CheckRequestSchema, {
        attributes: create(AttributeContextSchema, {
          source: create(AttributeContext_PeerSchema, { address: addr('10.1.2.3', 51000), principal }),
          destination: create(AttributeContext_PeerSchema, { address: addr('10.0.0.5', 8000), principal: 'spiffe://a.example/ns/foo/sa/httpbin', labels: { app: 'httpbin' } }),
          request: create(AttributeContext_RequestSchema, { http: create(AttributeContext_HttpRequestSchema, { method: 'GET', host: 'httpbin.foo', path: '/' }) }),
        }),
      }),
      { deadline: Date.now() + 5000 },
    );

  it('ok/the peer certificate\'s foreign SPIFFE ID is allowed by its principal; fail/a third trust domain, and cluster.local taken literally', async () => {
    expect((await check('spiffe://b.example/ns/bar/sa/sleep')).status?.code).toBe(0);
    expect((await check('spiffe://a.example/ns/bar/sa/local')).status?.code).toBe(0);
    expect((await check('spiffe://c.example/ns/bar/sa/sleep')).status?.code).toBe(7);
    expect((await check('spiffe://cluster.local/ns/bar/sa/local')).status?.code).toBe(7);
  });
});
