/**
 * A whole mesh on a fake clock, without sockets: the keyring manager, the
 * CreateCertificate service logic and an in-thread signer (the code the
 * server runs), and agents' secret caches fed by it. "Subscribed" agents get
 * the bundle pushes Castellan's TrustService sends; a "legacy" agent (like
 * Istio's) only learns the bundle from its own responses. TLS is left out
 * on purpose: certificates here live on fake time, which OpenSSL's handshake
 * would judge by the real clock.
 */
import { expect } from 'vitest';
import { SecretCache } from '../../src/agent/cache.ts';
import { chainsTo, leafInfo, splitPemCertificates } from '../../src/agent/cert-info.ts';
import { CaManager, type CaMode } from '../../src/ca/manager.ts';
import { BatchSigner } from '../../src/ca/signer/index.ts';
import { FakeClock } from '../../src/platform/clock.ts';
import { CastellanError } from '../../src/platform/errors.ts';
import { silentLogger } from '../../src/platform/logger.ts';
import { createCertificate, type CaServiceDeps } from '../../src/server/ca-service.ts';
import { createCaMetrics } from '../../src/server/metrics.ts';
import type { Caller, TokenAuthenticator, TokenAuthRequest } from '../../src/identity/types.ts';
import { MemoryKeystore } from '../support/memory-keystore.ts';

export const HOUR = 3_600_000;
export const DAY = 24 * HOUR;

/** Tokens are "Bearer <service account>" in namespace default. */
class NameTokens implements TokenAuthenticator {
  async authenticate(req: TokenAuthRequest): Promise<Caller> {
    const sa = /^Bearer ([a-z-]+)$/.exec(req.authorization[0] ?? '')?.[1];
    if (!sa) throw new CastellanError('UNAUTHENTICATED', 'auth.test', 'bad token');
    return { spiffeId: `spiffe://cluster.local/ns/default/sa/${sa}`, identity: { trustDomain: 'cluster.local', namespace: 'default', serviceAccount: sa }, method: 'jwt' };
  }
  close(): void {}
}

export interface Agent {
  name: string;
  subscribed: boolean;
  cache: SecretCache;
}

export interface Mesh {
  clock: FakeClock;
  keystore: MemoryKeystore;
  manager: CaManager;
  agents: Agent[];
  /** invariant checks made so far */
  checks: number;
  close(): Promise<void>;
}

export async function startMesh(o: { start: number; mode: CaMode; propagationMs: number; autoRotate: boolean; leafTtlMs: number; agents: { name: string; subscribed: boolean }[] }): Promise<Mesh> {
  const clock = new FakeClock(o.start);
  const keystore = new MemoryKeystore();
  const logger = silentLogger();
  const manager = await CaManager.start({ keystore, trustDomain: 'cluster.local', mode: o.mode, propagationMs: o.propagationMs, autoRotate: o.autoRotate, maxLeafTtlMs: 90 * DAY, clock, logger, flushIntervalMs: HOUR });
  const signer = new BatchSigner({ workers: 0, maxBatchSize: 16, maxBatchWaitMs: 0, maxQueue: 1000 });
  signer.setIssuer(issuer(manager));
  const deps: CaServiceDeps = {
    trustDomain: 'cluster.local',
    defaultTtlMs: DAY,
    maxTtlMs: 90 * DAY,
    view: () => manager.view(),
    onIssued: (id, notAfter) => manager.recordIssued(id, notAfter),
    signer,
    tokenAuth: new NameTokens(),
    clock,
    logger,
    metrics: createCaMetrics({ defaultMetrics: false }),
  };
  const agents: Agent[] = o.agents.map((a) => ({
    ...a,
    cache: new SecretCache({
      source: { sign: async (csr, ttl) => (await createCertificate(deps, { csr, validityDurationSec: BigInt(ttl), authorization: [`Bearer ${a.name}`], requestId: 'r' })).certChain },
      ttlMs: o.leafTtlMs,
      trustDomain: 'cluster.local',
      clock,
      logger,
      checkIntervalMs: DAY,
      backoff: { initialMs: 60_000, maxMs: HOUR },
    }),
  }));
  // What the server does on every keyring change (ca-server.ts), including the pushes.
  manager.onChange((view) => {
    signer.setIssuer(issuer(manager));
    for (const a of agents) if (a.subscribed) void a.cache.applyBundleUpdate({ bundlePem: view.trustBundlePem, taintedIds: view.taintedIds });
  });
  for (const a of agents) a.cache.start();
  const mesh: Mesh = {
    clock,
    keystore,
    manager,
    agents,
    checks: 0,
    async close() {
      for (const a of agents) a.cache.stop();
      await manager.close();
      await signer.close();
    },
  };
  await settle(mesh);
  return mesh;
}

function issuer(m: CaManager) {
  const a = m.view().active;
  return { id: a.id, certDer: a.certDer, keyPkcs8Der: a.keyPkcs8Der, notBefore: a.notBefore, notAfter: a.notAfter };
}

/** Lets every async consequence of the last clock move finish. */
export async function settle(m: Mesh): Promise<void> {
  for (let i = 0; i < 6; i++) {
    await new Promise((r) => setImmediate(r));
    await m.manager.idle();
    await Promise.all(m.agents.map((a) => a.cache.settled()));
  }
}

/**
 * security.md R1: every agent serves a valid leaf (no gap), and every live
 * leaf — with each CA certificate of its chain valid now — verifies against
 * every bundle any agent holds.
 */
export function checkInvariant(m: Mesh, label: string): void {
  const now = m.clock.now();
  const bundles = m.agents.map((a) => ({ who: a.name, pem: a.cache.bundlePem }));
  for (const a of m.agents) {
    const leaf = a.cache.issued;
    expect(leaf, `${label}: ${a.name} has no certificate`).toBeDefined();
    expect(leaf!.notBefore <= now && now < leaf!.notAfter, `${label}: ${a.name}'s certificate is not valid at ${new Date(now).toISOString()}`).toBe(true);
    for (const c of splitPemCertificates(leaf!.chainPem).slice(1)) {
      const info = leafInfo(c);
      expect(info.notBefore <= now && now < info.notAfter, `${label}: an intermediate of ${a.name}'s chain is not valid now`).toBe(true);
    }
    for (const b of bundles) {
      expect(b.pem, `${label}: ${b.who} holds no bundle`).toBeDefined();
      expect(chainsTo(leaf!.chainPem, b.pem!), `${label}: ${a.name}'s leaf (issuer ${leaf!.issuerKeyId}) does not verify against ${b.who}'s bundle`).toBe(true);
    }
  }
  m.checks++;
}

/** Moves the clock in `stepMs` steps up to `totalMs`, settling and checking after each. */
export async function run(m: Mesh, totalMs: number, stepMs: number, label: string): Promise<void> {
  for (let t = 0; t < totalMs; t += stepMs) {
    m.clock.advance(Math.min(stepMs, totalMs - t));
    await settle(m);
    checkInvariant(m, `${label} +${Math.round((t + stepMs) / HOUR)}h`);
  }
}
