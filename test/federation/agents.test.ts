/**
 * End to end across two real CA servers (issue 17): a.example and b.example
 * federate through their bundle endpoints (https_spiffe both ways,
 * bootstrapped from each other's bundle file), each with a real agent. A
 * workload of a.example (SDS `default` + `ALL`) calls one of b.example
 * (Workload API material, the Go peer validating per trust domain) over
 * mutual TLS; a JWT-SVID minted in a.example validates at b.example's agent;
 * a new root prepared in a.example reaches b.example's agent (an open
 * Workload API stream) within one refresh, and the call still works.
 */
import { createPrivateKey } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { create } from '@bufbuild/protobuf';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startAgent, type AgentHandle } from '../../src/agent/agent.ts';
import { splitPemCertificates } from '../../src/agent/cert-info.ts';
import { JWTSVIDRequestSchema, ValidateJWTSVIDRequestSchema, X509SVIDRequestSchema, type X509SVIDResponse } from '../../src/gen/spiffe/workload/workload_pb.js';
import { writeFileAtomic } from '../../src/platform/files.ts';
import { resolveFederationConfig } from '../../src/server/federation-config.ts';
import { splitDer } from '../../src/workload/der.ts';
import { buildGo, collect, derToPem, goFlags, goServer, killPeers, md, nodeCall, sdsMaterial, workloadClient } from '../agent/fed-peers.ts';
import { describeWith, peers } from '../support/peers.ts';
import { tempDir } from '../support/tmp.ts';
import { startFedCa, until, type FedCa } from './harness.ts';

const tmp = tempDir('castellan-fed-agents-');
let a: FedCa;
let b: FedCa;
let agentA: AgentHandle;
let agentB: AgentHandle;
let goBin = '';

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** Server federation settings: endpoint on `port`, fetching `peer` over https_spiffe with its bootstrap file. */
function federation(td: string, port: number, peer?: { td: string; port: number; bootstrap: string }) {
  const flags: Record<string, unknown> = {
    'bundle-endpoint-listen': `127.0.0.1:${port}`,
    'bundle-endpoint-profile': 'https_spiffe',
    'bundle-refresh-hint': '1s',
    'federate-with': [],
    'federation-refresh-min': '200ms',
    'federation-refresh-max': '5s',
  };
  if (peer) flags.federation = JSON.stringify([{ trustDomain: peer.td, bundleEndpointUrl: `https://127.0.0.1:${peer.port}/`, endpointSpiffeId: `spiffe://${peer.td}/castellan/bundle-endpoint`, bootstrapBundle: peer.bootstrap }]);
  return resolveFederationConfig(flags as never, td);
}

async function agentOf(ca: FedCa, sa: string): Promise<AgentHandle> {
  const dir = join(tmp.path, `agent-${ca.config.trustDomain}`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tokenFile = join(dir, 'token');
  await writeFileAtomic(tokenFile, await ca.issuer.mint({ namespace: 'default', serviceAccount: sa }), 0o600);
  const agent = await startAgent({
    caAddress: ca.server.grpcAddress,
    caRootPem: ca.server.trustBundlePem,
    caServerName: 'localhost',
    tokenFile,
    trustDomain: ca.config.trustDomain,
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

const certCount = (r: X509SVIDResponse, key: string): number => (r.federatedBundles[key] ? splitDer(r.federatedBundles[key]) : []).length;

describeWith([peers.go], 'federation end to end: two real CA servers, their agents, mutual TLS and rotation', () => {
  beforeAll(async () => {
    const [portA, portB] = [await freePort(), await freePort()];
    a = await startFedCa(tmp.path, 'a', 'a.example', { federation: federation('a.example', portA) });
    writeFileSync(join(tmp.path, 'a-bootstrap.json'), a.server.federation.ownBundleDocument());
    b = await startFedCa(tmp.path, 'b', 'b.example', { federation: federation('b.example', portB, { td: 'a.example', port: portA, bootstrap: join(tmp.path, 'a-bootstrap.json') }) });
    writeFileSync(join(tmp.path, 'b-bootstrap.json'), b.server.federation.ownBundleDocument());
    await a.stop();
    await a.restart({ federation: federation('a.example', portA, { td: 'b.example', port: portB, bootstrap: join(tmp.path, 'b-bootstrap.json') }) });
    await until(() => a.server.federation.find('b.example')?.record.source === 'endpoint' && b.server.federation.find('a.example')?.record.source === 'endpoint', 30_000, 'both servers to fetch the other\'s bundle');
    agentA = await agentOf(a, 'frontend');
    agentB = await agentOf(b, 'backend');
    await until(() => agentA.cache.federatedBundles.has('b.example') && agentB.cache.federatedBundles.has('a.example'), 15_000, 'the agents to receive the federated bundles');
    goBin = buildGo(join(tmp.path, 'go'));
  }, 120_000);

  afterAll(async () => {
    killPeers();
    await agentA?.close();
    await agentB?.close();
    await a?.stop();
    await b?.stop();
    tmp.cleanup();
  });

  /** b.example's workload as the Go peer, from its agent's Workload API; a.example's calls it with its SDS material. */
  async function callAtoB(): Promise<Awaited<ReturnType<typeof nodeCall>>> {
    const c = workloadClient(agentB);
    const s = c.fetchX509SVID(create(X509SVIDRequestSchema, {}), { metadata: md() });
    const r = await collect(s).next(1);
    s.cancel();
    c.close();
    const svid = r.svids[0]!;
    const keyPem = createPrivateKey({ key: Buffer.from(svid.x509SvidKey), format: 'der', type: 'pkcs8' }).export({ format: 'pem', type: 'pkcs8' }) as string;
    const bundles = { 'b.example': derToPem(splitDer(svid.bundle)), ...Object.fromEntries(Object.entries(r.federatedBundles).map(([k, v]) => [k.slice('spiffe://'.length), derToPem(splitDer(v))])) };
    const server = await goServer(goBin, goFlags(tmp.path, `b-${Date.now()}`, derToPem(splitDer(svid.x509Svid)), keyPem, bundles));
    const m = await sdsMaterial(agentA);
    return nodeCall(server.addr, m.chainPem, m.keyPem, m.domains);
  }

  it('ok/a.example calls b.example over mutual TLS with what their agents serve; a.example\'s JWT-SVID validates at b.example', async () => {
    const m = await sdsMaterial(agentA);
    expect([...m.domains.keys()]).toEqual(['a.example', 'b.example']);
    expect(m.domains.get('b.example')).toBe(b.server.trustBundlePem);
    expect(await callAtoB()).toEqual({ ok: true, peer: 'spiffe://b.example/ns/default/sa/backend', line: 'hello spiffe://a.example/ns/default/sa/frontend, this is spiffe://b.example/ns/default/sa/backend' });
    const ca = workloadClient(agentA);
    const cb = workloadClient(agentB);
    try {
      const jwt = await ca.fetchJWTSVID(create(JWTSVIDRequestSchema, { audience: ['b-api'] }), { metadata: md() });
      const v = await cb.validateJWTSVID(create(ValidateJWTSVIDRequestSchema, { audience: 'b-api', svid: jwt.svids[0]!.svid }), { metadata: md() });
      expect(v.spiffeId).toBe('spiffe://a.example/ns/default/sa/frontend');
    } finally {
      ca.close();
      cb.close();
    }
  });

  it('ok/a new root prepared in a.example reaches b.example\'s agent (open Workload API stream) within one refresh; the call still works', async () => {
    const c = workloadClient(agentB);
    const s = c.fetchX509SVID(create(X509SVIDRequestSchema, {}), { metadata: md() });
    const got = collect(s);
    try {
      expect(certCount(await got.next(1), 'spiffe://a.example')).toBe(1);
      const t0 = Date.now();
      await a.server.manager.prepare();
      await until(() => got.msgs.some((r) => certCount(r, 'spiffe://a.example') === 2), 15_000, 'a.example\'s new root at b.example\'s agent');
      const ms = Date.now() - t0;
      // refresh hint 1 s (bounded to [200 ms, 5 s]), then WatchBundle and the stream: within one refresh, with a loaded machine's slack
      expect(ms).toBeLessThan(6000);
      console.log(`federation e2e: a.example's new root reached b.example's Workload API stream in ${ms} ms`);
      expect(splitPemCertificates(agentB.cache.federatedBundles.get('a.example')!.x509Pem)).toHaveLength(2);
      await until(() => splitPemCertificates((agentA.cache.bundlePem ?? '')).length === 2, 10_000, 'a.example\'s agent to trust its new root');
      expect((await callAtoB()).ok).toBe(true);
    } finally {
      s.cancel();
      c.close();
    }
  }, 60_000);
});
