/**
 * The scoping test of issue 17 (security.md F1): two trust domains,
 * a.example and b.example, each with its own CA (a test CA over real gRPC and
 * TLS that streams federated bundles over TrustService.WatchBundle:
 * federating-ca.ts) and a real agent. A workload of a.example (material from
 * its agent's SDS: `default` and `ALL`) calls a workload of b.example
 * (material from its agent's Workload API) over mutual TLS; the b.example
 * side is an independent Go peer (crypto/tls + crypto/x509, the pool chosen
 * by the peer's trust domain as go-spiffe does). The call works; it fails when
 * either side presents a certificate for the wrong trust domain signed by a
 * root the other side trusts — and a control shows the same forged
 * certificate passing a verifier that pools every root. Also: the Workload
 * API's federated bundles and pushes, ALL decoded by Python, JWT-SVIDs of a
 * foreign trust domain validated with that domain's keys only.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { create } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startAgent, type AgentHandle } from '../../src/agent/agent.ts';
import { chainsTo, splitPemCertificates } from '../../src/agent/cert-info.ts';
import { JWTBundlesRequestSchema, ValidateJWTSVIDRequestSchema, X509BundlesRequestSchema, X509SVIDRequestSchema } from '../../src/gen/spiffe/workload/workload_pb.js';
import { splitDer } from '../../src/workload/der.ts';
import { describeWith, peers } from '../support/peers.ts';
import { tempDir } from '../support/tmp.ts';
import { generateSdsStubs, PYTHON } from '../sds/py-stubs.ts';
import { FederatingCa } from './federating-ca.ts';
import { buildGo, collect, derToPem, goFlags, goServer, killPeers, md, nodeCall, sdsMaterial, until, workloadClient, x509Svid } from './fed-peers.ts';
import { issueLeaf, makeRoot } from './td-pki.ts';

const tmp = tempDir('castellan-fed-mtls-');
let caA: FederatingCa;
let caB: FederatingCa;
let agentA: AgentHandle;
let agentB: AgentHandle;
let goBin = '';

async function agentFor(ca: FederatingCa, sa: string): Promise<AgentHandle> {
  const dir = join(tmp.path, ca.trustDomain);
  mkdirSync(dir, { recursive: true });
  const tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, sa, { mode: 0o600 });
  const agent = await startAgent({
    caAddress: ca.address,
    caRootPem: ca.root.pem,
    caServerName: 'localhost',
    tokenFile,
    trustDomain: ca.trustDomain,
    sdsSocket: join(dir, 'sds.sock'),
    workloadApiSocket: join(dir, 'workload.sock'),
    certTtlMs: 3600_000,
    keyType: 'ec-p256',
    graceRatio: 0.5,
    httpListen: null,
  });
  await agent.cache.whenReady();
  return agent;
}

describeWith([peers.go], 'federation: mutual TLS across trust domains, scoped per trust domain (F1)', () => {
  beforeAll(async () => {
    [caA, caB] = await Promise.all([FederatingCa.start('a.example'), FederatingCa.start('b.example')]);
    caA.setFederated({ 'b.example': caB.asFederated() });
    caB.setFederated({ 'a.example': caA.asFederated() });
    agentA = await agentFor(caA, 'frontend');
    agentB = await agentFor(caB, 'backend');
    await until(() => agentA.cache.federatedBundles.has('b.example') && agentB.cache.federatedBundles.has('a.example'), 'federated bundles at both agents');
    goBin = buildGo(join(tmp.path, 'go'));
  }, 120_000);

  afterAll(async () => {
    killPeers();
    await agentA?.close();
    await agentB?.close();
    await caA?.close();
    await caB?.close();
    tmp.cleanup();
  });

  it('ok/Workload API: federated_bundles keyed spiffe://<td> (DER), FetchX509Bundles and FetchJWTBundles with every trust domain', async () => {
    const r = await x509Svid(agentB);
    expect(r.svids[0]!.spiffeId).toBe('spiffe://b.example/ns/default/sa/backend');
    expect(Object.keys(r.federatedBundles)).toEqual(['spiffe://a.example']);
    expect(derToPem(splitDer(r.federatedBundles['spiffe://a.example']!))).toBe(new X509Certificate(caA.root.pem).toString());
    expect(derToPem(splitDer(r.svids[0]!.bundle))).toBe(new X509Certificate(caB.root.pem).toString());
    const c = workloadClient(agentB);
    try {
      const xb = c.fetchX509Bundles(create(X509BundlesRequestSchema, {}), { metadata: md() });
      const b = await collect(xb).next(1);
      xb.cancel();
      expect(Object.keys(b.bundles).sort()).toEqual(['spiffe://a.example', 'spiffe://b.example']);
      const jb = c.fetchJWTBundles(create(JWTBundlesRequestSchema, {}), { metadata: md() });
      const j = await collect(jb).next(1);
      jb.cancel();
      expect(Object.keys(j.bundles).sort()).toEqual(['spiffe://a.example', 'spiffe://b.example']);
      expect((JSON.parse(Buffer.from(j.bundles['spiffe://a.example']!).toString()) as { keys: { kid: string }[] }).keys.map((k) => k.kid)).toEqual(['a.example-jwt-1']);
    } finally {
      c.close();
    }
  });

  it('ok/metrics: the sequence and the earliest root expiry of each foreign bundle', async () => {
    const text = await agentB.metrics.registry.metrics();
    expect(text).toMatch(/castellan_agent_federated_bundle_sequence\{trust_domain="a\.example"\} 1\n/);
    const m = /cert_expiry_seconds\{resource_name="spiffe:\/\/a\.example"\} ([\d.]+)/.exec(text);
    expect(Number(m?.[1])).toBeGreaterThan(29 * 86400);
    expect(text).not.toMatch(/trust_domain="b\.example"|resource_name="spiffe:\/\/b\.example"/);
  });

  it('ok/a.example (SDS default + ALL, Node) calls b.example (Workload API material, Go peer) over mutual TLS, each validating per trust domain', async () => {
    const a = await sdsMaterial(agentA);
    expect([...a.domains.keys()]).toEqual(['a.example', 'b.example']);
    const b = await x509Svid(agentB);
    const svid = b.svids[0]!;
    const server = await goServer(
      goBin,
      goFlags(tmp.path, 'b', derToPem(splitDer(svid.x509Svid)), createPrivateKey({ key: Buffer.from(svid.x509SvidKey), format: 'der', type: 'pkcs8' }).export({ format: 'pem', type: 'pkcs8' }) as string, {
        'b.example': derToPem(splitDer(svid.bundle)),
        ...Object.fromEntries(Object.entries(b.federatedBundles).map(([k, v]) => [k.replace('spiffe://', ''), derToPem(splitDer(v))])),
      }),
    );
    const r = await nodeCall(server.addr, a.chainPem, a.keyPem, a.domains);
    expect(r).toEqual({ ok: true, peer: 'spiffe://b.example/ns/default/sa/backend', line: 'hello spiffe://a.example/ns/default/sa/frontend, this is spiffe://b.example/ns/default/sa/backend' });
    await until(() => server.lines.length > 0, 'the Go server to log the call');
    expect(server.lines).toEqual(['accepted spiffe://a.example/ns/default/sa/frontend']);
  });

  it('fail/a server certificate for a.example or c.example signed by b.example\'s (trusted) root is refused by the a.example workload', async () => {
    const a = await sdsMaterial(agentA);
    const b = await x509Svid(agentB);
    const bBundles = { 'b.example': caB.root.pem, 'a.example': caA.root.pem };
    for (const forgedId of ['spiffe://a.example/ns/default/sa/frontend', 'spiffe://c.example/ns/default/sa/backend']) {
      const forged = await issueLeaf(caB.root, forgedId);
      // The forged chain does verify against b.example's root, which a.example trusts (for b.example only).
      expect(chainsTo(forged.certPem, [...a.domains.values()].join(''))).toBe(true);
      const server = await goServer(goBin, goFlags(tmp.path, `forged-${forgedId.slice(9, 18)}`, forged.certPem, forged.keyPem, bBundles));
      const r = await nodeCall(server.addr, a.chainPem, a.keyPem, a.domains);
      expect(r.ok).toBe(false);
      expect((r as { reason: string }).reason).toBe(forgedId.includes('a.example') ? 'chain does not verify against the bundle of a.example' : 'no bundle for trust domain c.example');
    }
    expect(b.svids).toHaveLength(1);
  });

  it('fail/a client certificate for a.example or c.example signed by b.example\'s root is refused by the b.example workload (Go); control: one pool of every root accepts it', async () => {
    const b = await x509Svid(agentB);
    const svid = b.svids[0]!;
    const keyPem = createPrivateKey({ key: Buffer.from(svid.x509SvidKey), format: 'der', type: 'pkcs8' }).export({ format: 'pem', type: 'pkcs8' }) as string;
    const bundles = { 'b.example': derToPem(splitDer(svid.bundle)), 'a.example': derToPem(splitDer(b.federatedBundles['spiffe://a.example']!)) };
    const honest = await goServer(goBin, goFlags(tmp.path, 'b-honest', derToPem(splitDer(svid.x509Svid)), keyPem, bundles));
    const broken = await goServer(goBin, [...goFlags(tmp.path, 'b-broken', derToPem(splitDer(svid.x509Svid)), keyPem, bundles), '-one-pool']);
    const trustAll = new Map([['b.example', caB.root.pem]]);
    const forgedA = await issueLeaf(caB.root, 'spiffe://a.example/ns/default/sa/evil');
    const forgedC = await issueLeaf(caB.root, 'spiffe://c.example/ns/default/sa/evil');
    await nodeCall(honest.addr, forgedA.certPem, forgedA.keyPem, trustAll);
    await nodeCall(honest.addr, forgedC.certPem, forgedC.keyPem, trustAll);
    await until(() => honest.lines.length >= 2, 'the Go server to judge both calls');
    expect(honest.lines[0]).toMatch(/^refused .*chain does not verify against the bundle of "a\.example"/);
    expect(honest.lines[1]).toMatch(/^refused .*no bundle for trust domain "c\.example"/);
    // The control: the same forged certificate passes a verifier with one pool of every root.
    const r = await nodeCall(broken.addr, forgedA.certPem, forgedA.keyPem, trustAll);
    expect(r).toMatchObject({ ok: true, line: 'hello spiffe://a.example/ns/default/sa/evil, this is spiffe://b.example/ns/default/sa/backend' });
    await until(() => broken.lines.length > 0, 'the broken Go server to log the call');
    expect(broken.lines).toEqual(['accepted spiffe://a.example/ns/default/sa/evil']);
  });

  it('ok/JWT-SVIDs: a b.example token validates at a.example with b.example\'s keys; b.example\'s key never validates a token claiming a.example or c.example', async () => {
    const c = workloadClient(agentA);
    const validate = (svid: string) => c.validateJWTSVID(create(ValidateJWTSVIDRequestSchema, { audience: 'a-api', svid }), { metadata: md() });
    try {
      const ok = await validate(await caB.mintJwt('spiffe://b.example/ns/default/sa/backend', 'a-api'));
      expect(ok.spiffeId).toBe('spiffe://b.example/ns/default/sa/backend');
      await expect(validate(await caB.mintJwt('spiffe://a.example/ns/default/sa/frontend', 'a-api'))).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: expect.stringMatching(/no key of the trust domain's JWT bundle has this kid/) });
      await expect(validate(await caB.mintJwt('spiffe://c.example/ns/default/sa/x', 'a-api'))).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: expect.stringMatching(/no JWT bundle for spiffe:\/\/c\.example/) });
      // a.example's own key still validates its own tokens.
      expect((await validate(await caA.mintJwt('spiffe://a.example/ns/default/sa/frontend', 'a-api'))).spiffeId).toBe('spiffe://a.example/ns/default/sa/frontend');
    } finally {
      c.close();
    }
  });

  it('ok/a federation change reaches the agent over WatchBundle and is pushed on an open Workload API stream; a trust domain removed is gone', async () => {
    const c = workloadClient(agentB);
    const s = c.fetchX509SVID(create(X509SVIDRequestSchema, {}), { metadata: md() });
    const got = collect(s);
    try {
      await got.next(1);
      const rootC = await makeRoot('c.example root');
      caB.setFederated({ 'a.example': caA.asFederated(2n), 'c.example': { x509AuthoritiesPem: rootC.pem, jwtBundleJson: '', sequence: 1n } });
      const second = await got.next(2);
      expect(Object.keys(second.federatedBundles).sort()).toEqual(['spiffe://a.example', 'spiffe://c.example']);
      expect(splitPemCertificates(derToPem(splitDer(second.federatedBundles['spiffe://c.example']!)))).toHaveLength(1);
      caB.setFederated({ 'a.example': caA.asFederated(2n) });
      const third = await got.next(3);
      expect(Object.keys(third.federatedBundles)).toEqual(['spiffe://a.example']);
      expect((await sdsMaterial(agentB)).domains.has('c.example')).toBe(false);
    } finally {
      s.cancel();
      c.close();
    }
  });
});

describeWith([peers.pythonGrpc], 'federation: SDS ALL decoded by Python grpcio (Envoy protos compiled by grpc_tools)', () => {
  let ca1: FederatingCa;
  let ca2: FederatingCa;
  let agent: AgentHandle;
  const stubs = join(tmp.path, 'py-stubs');
  beforeAll(async () => {
    mkdirSync(stubs, { recursive: true });
    generateSdsStubs(stubs, ['envoy/extensions/transport_sockets/tls/v3/tls_spiffe_validator_config.proto']);
    [ca1, ca2] = await Promise.all([FederatingCa.start('one.example'), FederatingCa.start('two.example')]);
    ca1.setFederated({ 'two.example': ca2.asFederated() });
    agent = await agentFor(ca1, 'web');
    await until(() => agent.cache.federatedBundles.has('two.example'), 'the federated bundle');
  }, 120_000);
  afterAll(async () => {
    await agent?.close();
    await ca1?.close();
    await ca2?.close();
  });

  // Asynchronous: the agent answering runs in this process.
  const py = (...names: string[]) => promisify(execFile)(PYTHON, [join(import.meta.dirname, 'py', 'sds_trust.py'), stubs, agent.sdsSocket, ...names], { encoding: 'utf8' });

  it('ok/ALL is envoy.tls.cert_validator.spiffe with one trust domain each; spiffe://two.example one; ROOTCA plain', async () => {
    const out = JSON.parse((await py('ALL', 'spiffe://two.example', 'ROOTCA')).stdout) as Record<string, { kind: string; validator?: string; type_url?: string; trust_domains?: [string, string][]; pem?: string }>;
    expect(out.ALL).toEqual({
      kind: 'spiffe',
      validator: 'envoy.tls.cert_validator.spiffe',
      type_url: 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig',
      trust_domains: [['one.example', ca1.root.pem], ['two.example', ca2.root.pem]],
    });
    expect(out['spiffe://two.example']!.trust_domains).toEqual([['two.example', ca2.root.pem]]);
    expect(out.ROOTCA).toEqual({ kind: 'trusted_ca', pem: ca1.root.pem });
  });

  it('fail/a trust domain that is not federated is an unknown resource name', async () => {
    let err = '';
    try {
      await py('spiffe://three.example');
    } catch (e) {
      err = String((e as { stderr?: string }).stderr);
    }
    expect(err).toMatch(/^NOT_FOUND unknown SDS resource name "spiffe:\/\/three.example"/);
  });
});
