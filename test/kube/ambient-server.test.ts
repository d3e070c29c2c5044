/**
 * Ambient mode end to end in one process: the CA server with
 * --trusted-node-accounts istio-system/ztunnel, its pod cache and its
 * TokenReview calls going through @kubernetes/client-node to the HTTP double
 * of the Kubernetes API (test/kube/apiserver-double.ts), a node agent
 * calling CreateCertificate over real TLS with `ImpersonatedIdentity`, as
 * ztunnel does. The caller's pod comes from TokenReview's user.extra or
 * from the `kubernetes.io.pod` claims of a locally verified JWT.
 */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { X509Certificate } from 'node:crypto';
import { exportJWK, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IstioCertificateService } from '../../src/gen/istio/v1/auth/ca_pb.js';
import { createClient } from '../../src/grpc/service.ts';
import { createLogger } from '../../src/platform/logger.ts';
import { startCaServer, type CaServerHandle } from '../../src/server/ca-server.ts';
import { defaultServerConfig } from '../../src/server/config.ts';
import { caClient, createCertificate, type CaClient } from '../hardening/procs.ts';
import { opaqueToken } from '../identity/tokenreview-double.ts';
import { peculiarCsr } from '../support/csr.ts';
import { sleep, startDouble, type DoubleEnv } from './helpers.ts';

const TD = 'cluster.local';
const ISSUER = 'https://kubernetes.default.svc.cluster.local';
const id = (ns: string, sa: string): string => `spiffe://${TD}/ns/${ns}/sa/${sa}`;
const CART = id('shop', 'cart');
const ZTUNNEL = id('istio-system', 'ztunnel');

let env: DoubleEnv;
let server: CaServerHandle;
let client: CaClient;
let signingKey: KeyObject;
const lines: Record<string, unknown>[] = [];
const logger = createLogger({ level: 'info', destination: { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) } });
let readyBeforeList: number | undefined;

let n = 0;
/** A TokenReview-checked token of `ns/sa`, bound to `pod` (user.extra), as the kubelet's projected token is. */
function reviewedToken(ns: string, sa: string, pod?: { name: string; uid: string }): string {
  const tok = opaqueToken(`tok-${++n}`, Math.floor(Date.now() / 1000) + 3600);
  env.api.reviews.set(tok, {
    username: `system:serviceaccount:${ns}:${sa}`,
    audiences: ['istio-ca'],
    extra: pod ? { 'authentication.kubernetes.io/pod-name': [pod.name], 'authentication.kubernetes.io/pod-uid': [pod.uid] } : undefined,
  });
  return tok;
}

/** A locally verified service-account JWT with the `kubernetes.io.pod` claims. */
async function boundJwt(ns: string, sa: string, pod: { name: string; uid: string }): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ 'kubernetes.io': { namespace: ns, serviceaccount: { name: sa, uid: 'sa-uid' }, pod } })
    .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
    .setIssuer(ISSUER)
    .setSubject(`system:serviceaccount:${ns}:${sa}`)
    .setAudience('istio-ca')
    .setIssuedAt(now)
    .setExpirationTime(now + 600)
    .sign(signingKey);
}

/** Polls an async condition (the pod cache follows the API asynchronously). */
async function eventually(fn: () => Promise<boolean> | boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error('condition not reached in time');
    await sleep(25);
  }
}

const uidOf = (ns: string, name: string): string => env.api.get('pods', ns, name)!.metadata.uid!;
const ztunnelPod = () => ({ name: 'ztunnel-n1', uid: uidOf('istio-system', 'ztunnel-n1') });

async function ask(token: string, impersonate: string | undefined, csrUri?: string) {
  const csr = await peculiarCsr(csrUri);
  const r = await createCertificate(client, { csr: csr.csrPem, authorization: [`Bearer ${token}`], metadata: impersonate === undefined ? undefined : { ImpersonatedIdentity: impersonate } });
  return { ...r, csr, uri: r.chain ? new X509Certificate(r.chain[0]!).subjectAltName : undefined };
}

const metric = async (name: string, labels: Record<string, string>): Promise<number> => {
  const m = await server.metrics.registry.getSingleMetric(name)!.get();
  return m.values.find((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x))?.value ?? 0;
};

beforeAll(async () => {
  env = await startDouble('castellan-ambient-');
  env.api.createPod('istio-system', 'ztunnel-n1', { serviceAccount: 'ztunnel', node: 'n1' });
  env.api.createPod('istio-system', 'ztunnel-n2', { serviceAccount: 'ztunnel', node: 'n2' });
  env.api.createPod('shop', 'cart-0', { serviceAccount: 'cart', node: 'n1' });
  env.api.createPod('shop', 'pay-0', { serviceAccount: 'pay', node: 'n2' });
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  signingKey = privateKey;
  const jwks = join(env.kubeconfig, '../jwks.json');
  writeFileSync(jwks, JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' }] }));
  // The pod lists fail: the server must not call itself ready before one succeeds.
  env.api.inject({ resource: 'pods', watch: false, status: 503, count: 1_000_000 });
  server = await startCaServer(
    defaultServerConfig({
      dataDir: join(env.kubeconfig, '../data'),
      grpcListen: '127.0.0.1:0',
      httpListen: '127.0.0.1:0',
      auth: { audiences: ['istio-ca'], tokenReview: { kubeconfig: env.kubeconfig }, jwt: { jwksFile: jwks, issuer: ISSUER } },
      trustedNodeAccounts: [{ namespace: 'istio-system', serviceAccount: 'ztunnel' }],
      kubeconfig: env.kubeconfig,
      rateLimits: { perPeer: 0, perIdentity: 3 },
      signer: { workers: 0, maxBatchSize: 16, maxBatchWaitMs: 0, maxQueue: 1000 },
    }),
    { logger },
  );
  readyBeforeList = (await fetch(`http://${server.httpAddress}/readyz`)).status;
  env.api.faults.length = 0;
  client = caClient(server.grpcAddress, server.trustBundlePem);
  await eventually(async () => (await fetch(`http://${server.httpAddress}/readyz`)).status === 200, 40_000);
}, 90_000);
afterAll(async () => {
  client?.close();
  await server?.close();
  await env?.stop();
});

describe('ambient mode: ztunnel impersonation (HTTP double of the Kubernetes API: pods and TokenReview)', () => {
  it('is not ready until the first pod list succeeds', () => {
    expect(readyBeforeList).toBe(503);
  });

  it('ok/a node agent (TokenReview, pod from user.extra) gets the certificate of a workload on its node, audited and counted', async () => {
    const r = await ask(reviewedToken('istio-system', 'ztunnel', ztunnelPod()), CART, CART);
    expect(r.status).toBe('OK');
    expect(r.uri).toBe(`URI:${CART}`);
    const audit = lines.find((l) => l.event === 'ca.impersonated_issued');
    const serial = new X509Certificate(r.chain![0]!).serialNumber.toLowerCase();
    expect(audit).toMatchObject({ caller: ZTUNNEL, node: 'n1', spiffeId: CART, pod: 'ztunnel-n1' });
    expect(String(audit!.serial).toLowerCase().replace(/^0+/, '')).toBe(serial.replace(/^0+/, ''));
    expect(await metric('castellan_impersonated_issued', { caller: 'istio-system/ztunnel' })).toBeGreaterThanOrEqual(1);
  });

  it('ok/a node agent with a local JWT (pod from the kubernetes.io.pod claims), CSR without a SAN', async () => {
    const r = await ask(await boundJwt('istio-system', 'ztunnel', ztunnelPod()), CART);
    expect(r.status).toBe('OK');
    expect(r.uri).toBe(`URI:${CART}`);
  });

  it.each<[string, () => Promise<string>, string, string | undefined, string]>([
    ['a workload on another node', async () => reviewedToken('istio-system', 'ztunnel', ztunnelPod()), id('shop', 'pay'), undefined, 'not_on_node'],
    ['an untrusted caller (a workload asking for another)', async () => reviewedToken('shop', 'cart', { name: 'cart-0', uid: uidOf('shop', 'cart-0') }), id('shop', 'pay'), undefined, 'not_node_account'],
    ['a malformed identity', async () => reviewedToken('istio-system', 'ztunnel', ztunnelPod()), 'spiffe://cluster.local/ns/shop/cart', undefined, 'bad_identity'],
    ['a JWT whose pod UID is not the live pod\'s', () => boundJwt('istio-system', 'ztunnel', { name: 'ztunnel-n1', uid: 'e3b0c442-0000-4000-8000-000000000000' }), CART, undefined, 'caller_pod_uid'],
  ])('C1/refuses %s: PERMISSION_DENIED auth.impersonation, the reason only in the log', async (_n, token, wanted, csrUri, reason) => {
    const before = await metric('castellan_impersonation_refused', { reason });
    const r = await ask(await token(), wanted, csrUri);
    expect([r.status, r.trailers['x-castellan-error'], r.details]).toEqual(['PERMISSION_DENIED', 'auth.impersonation', 'ImpersonatedIdentity is not permitted for this caller']);
    expect(await metric('castellan_impersonation_refused', { reason })).toBe(before + 1);
    expect(lines.filter((l) => l.event === 'ca.impersonation_refused').at(-1)).toMatchObject({ reason });
  });

  it('C1/refuses a CSR whose SAN disagrees with the impersonated identity (Istio would overwrite it)', async () => {
    const r = await ask(reviewedToken('istio-system', 'ztunnel', ztunnelPod()), CART, id('shop', 'pay'));
    expect([r.status, r.trailers['x-castellan-error']]).toEqual(['PERMISSION_DENIED', 'csr.identity_mismatch']);
  });

  it('C1/refuses a deleted, then re-created, node-agent pod whose token names the old UID', async () => {
    const tok = reviewedToken('istio-system', 'ztunnel', ztunnelPod());
    // the earlier tests may have spent this second's budget for (ztunnel, cart) (3/s here): wait for it to refill
    await eventually(async () => (await ask(tok, CART)).status === 'OK');
    env.api.delete('pods', 'istio-system', 'ztunnel-n1');
    await eventually(async () => (await ask(tok, CART)).status === 'PERMISSION_DENIED');
    expect(lines.filter((l) => l.event === 'ca.impersonation_refused').at(-1)).toMatchObject({ reason: 'caller_pod_missing' });
    env.api.createPod('istio-system', 'ztunnel-n1', { serviceAccount: 'ztunnel', node: 'n1' });
    await eventually(async () => {
      await ask(tok, CART);
      return lines.filter((l) => l.event === 'ca.impersonation_refused').at(-1)?.reason === 'caller_pod_uid';
    });
    // A token of the new pod works again.
    await eventually(async () => (await ask(reviewedToken('istio-system', 'ztunnel', ztunnelPod()), CART)).status === 'OK');
  });

  it('follows the pods: a workload scheduled on the node becomes allowed, one deleted stops being allowed', async () => {
    const tok = reviewedToken('istio-system', 'ztunnel', ztunnelPod());
    const web = id('shop', 'web');
    expect((await ask(tok, web)).status).toBe('PERMISSION_DENIED');
    env.api.createPod('shop', 'web-0', { serviceAccount: 'web' });
    env.api.bind('shop', 'web-0', 'n1');
    await eventually(async () => (await ask(tok, web)).status === 'OK');
    env.api.delete('pods', 'shop', 'web-0');
    await eventually(async () => (await ask(tok, web)).status === 'PERMISSION_DENIED');
  });

  it('C1/refuses ImpersonatedIdentity on an mTLS renewal clearly', async () => {
    const first = await ask(reviewedToken('istio-system', 'ztunnel', ztunnelPod()), undefined);
    expect(first.uri).toBe(`URI:${ZTUNNEL}`);
    const mtls = createClient(IstioCertificateService, server.grpcAddress, grpc.credentials.createSsl(Buffer.from(server.trustBundlePem), Buffer.from(first.csr.keyPem), Buffer.from(first.chain![0]!)), {
      'grpc.ssl_target_name_override': 'localhost',
      'grpc.default_authority': 'localhost',
    } as grpc.ClientOptions);
    try {
      const r = await createCertificate(mtls, { csr: (await peculiarCsr()).csrPem, metadata: { ImpersonatedIdentity: CART } });
      expect([r.status, r.trailers['x-castellan-error']]).toEqual(['PERMISSION_DENIED', 'auth.impersonation_mtls']);
      expect(r.details).toMatch(/service-account token/);
      expect((await createCertificate(mtls, { csr: (await peculiarCsr()).csrPem })).status).toBe('OK'); // a plain renewal still works
    } finally {
      mtls.close();
    }
  });

  it('D3/rate limit is per (node agent, identity): one workload over its budget does not starve another', async () => {
    const tok = reviewedToken('istio-system', 'ztunnel', ztunnelPod());
    env.api.createPod('shop', 'db-0', { serviceAccount: 'db', node: 'n1' });
    env.api.createPod('shop', 'queue-0', { serviceAccount: 'queue', node: 'n1' });
    await eventually(async () => (await ask(tok, id('shop', 'queue'))).status === 'OK');
    // CSRs made first, then sent together: the burst (3) is spent before a token refills, however loaded the machine.
    const csrs = await Promise.all(Array.from({ length: 8 }, () => peculiarCsr()));
    const db = await Promise.all(csrs.map((c) => createCertificate(client, { csr: c.csrPem, authorization: [`Bearer ${tok}`], metadata: { ImpersonatedIdentity: id('shop', 'db') } })));
    expect(db.map((r) => r.status)).toContain('RESOURCE_EXHAUSTED');
    expect(db.map((r) => r.status)).toContain('OK');
    expect((await ask(tok, id('shop', 'queue'))).status).toBe('OK');
  });
});
