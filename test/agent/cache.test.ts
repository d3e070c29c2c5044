import { X509Certificate } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { SecretCache, type IssuedCertificate } from '../../src/agent/cache.ts';
import { newKeyAndCsr, type KeyType } from '../../src/agent/csr.ts';
import { FakeClock } from '../../src/platform/clock.ts';
import type { ErrorKind } from '../../src/platform/errors.ts';
import { FakeCa } from './fake-ca.ts';

const H = 3600_000;

/** Lets promise chains (key generation, signing) settle. */
async function settle(cache: SecretCache): Promise<void> {
  for (let i = 0; i < 5; i++) {
    await new Promise((r) => setImmediate(r));
    await cache.settled();
  }
}

async function setup(o: { ttlMs?: number; keyType?: KeyType } = {}) {
  const clock = new FakeClock();
  const ca = await FakeCa.create(clock);
  const issued: IssuedCertificate[] = [];
  const changes: string[] = [];
  const keys: string[] = [];
  const cache = new SecretCache({
    source: ca,
    clock,
    ttlMs: o.ttlMs ?? 24 * H,
    keyType: o.keyType,
    jitter: 0,
    random: () => 0.5,
    backoff: { initialMs: 1000, maxMs: 60_000 },
    trustDomain: 'cluster.local',
    newKey: async (t) => {
      const k = await newKeyAndCsr(t);
      keys.push(k.keyPem);
      return k;
    },
    onIssued: (c) => void issued.push(c),
  });
  cache.onChange((n) => changes.push(n));
  cache.start();
  await cache.whenReady();
  return { clock, ca, cache, issued, changes, keys };
}

describe('secret cache', () => {
  for (const keyType of ['ec-p256', 'rsa-2048'] as const) {
    it(`ok/first issuance serves default and ROOTCA (${keyType}); ROOTCA announced first`, async () => {
      const { cache, changes, issued } = await setup({ keyType });
      // Every trust resource (ROOTCA, then the SPIFFE-validator forms) before the leaf.
      expect(changes).toEqual(['ROOTCA', 'spiffe://cluster.local', 'ALL', 'default']);
      expect(cache.get('default')).toBeDefined();
      expect(cache.get('ROOTCA')).toBeDefined();
      expect(cache.status().ready).toBe(true);
      expect(issued[0]!.spiffeId).toBe('spiffe://cluster.local/ns/default/sa/frontend');
      expect(new X509Certificate(issued[0]!.chainPem).publicKey.asymmetricKeyType).toBe(keyType === 'ec-p256' ? 'ec' : 'rsa');
    });
  }

  it('ok/renews at the grace ratio with a fresh key each time, before expiry', async () => {
    const { clock, ca, cache, issued, keys } = await setup();
    expect(ca.calls[0]!.ttlSeconds).toBe(24 * 3600);
    expect(issued[0]!.renewAt - clock.now()).toBe(12 * H);
    clock.advance(12 * H - 1);
    await settle(cache);
    expect(ca.calls).toHaveLength(1);
    clock.advance(1);
    await settle(cache);
    expect(ca.calls).toHaveLength(2);
    expect(issued).toHaveLength(2);
    expect(keys[0]).not.toBe(keys[1]);
    expect(issued[1]!.serial).not.toBe(issued[0]!.serial);
    expect(issued[1]!.notBefore).toBeLessThan(issued[0]!.notAfter);
  });

  it('ok/jitter spreads the renewal time within ± jitter of the lifetime', async () => {
    for (const r of [0, 1]) {
      const clock = new FakeClock();
      const ca = await FakeCa.create(clock);
      const cache = new SecretCache({ source: ca, clock, ttlMs: 100 * H, graceRatio: 0.5, jitter: 0.1, random: () => r });
      cache.start();
      await cache.whenReady();
      const at = cache.issued!.renewAt - clock.now();
      expect(at).toBe(r === 0 ? 60 * H : 40 * H);
      cache.stop();
    }
  });

  const retryable: ErrorKind[] = ['UNAVAILABLE', 'RESOURCE_EXHAUSTED', 'ABORTED', 'INTERNAL', 'DEADLINE_EXCEEDED'];
  for (const kind of retryable) {
    it(`ok/${kind} keeps serving and backs off exponentially`, async () => {
      const { clock, ca, cache } = await setup();
      const served = cache.get('default')!.version;
      ca.failWith = kind;
      clock.advance(12 * H);
      await settle(cache);
      const times: number[] = [];
      for (let i = 0; i < 5; i++) {
        const before = ca.calls.length;
        // step until the next attempt
        let waited = 0;
        while (ca.calls.length === before && waited < 120_000) {
          clock.advance(100);
          waited += 100;
          await settle(cache);
        }
        times.push(waited);
      }
      expect(cache.get('default')!.version).toBe(served);
      // jitter is off at random()=0.5: delays are 0.75 * 1s, 2s, 4s, 8s, 16s
      expect(times).toEqual([800, 1500, 3000, 6000, 12000]);
      ca.failWith = undefined;
      clock.advance(30_000);
      await settle(cache);
      expect(cache.get('default')!.version).not.toBe(served);
      expect(cache.status().consecutiveFailures).toBe(0);
    });
  }

  for (const kind of ['UNAUTHENTICATED', 'INVALID_ARGUMENT', 'PERMISSION_DENIED'] as ErrorKind[]) {
    it(`fail/${kind} is not retried quickly: next attempt after the max backoff`, async () => {
      const { clock, ca, cache } = await setup();
      ca.failWith = kind;
      clock.advance(12 * H);
      await settle(cache);
      const n = ca.calls.length;
      clock.advance(59_999);
      await settle(cache);
      expect(ca.calls.length).toBe(n);
      clock.advance(1);
      await settle(cache);
      expect(ca.calls.length).toBe(n + 1);
    });
  }

  it('ok/failed renewals retry within half of what is left of the certificate, so a CA back in time is used in time', async () => {
    const { clock, ca, cache } = await setup({ ttlMs: 20_000 });
    const notAfter = ca.issued[0]!.notAfter;
    ca.failWith = 'UNAUTHENTICATED'; // backs off the longest (60 s), longer than the whole lifetime
    const attempts: number[] = [];
    while (attempts.length < 4) {
      const before = ca.calls.length;
      clock.advance(50);
      await settle(cache);
      if (ca.calls.length > before) attempts.push(notAfter - clock.now());
    }
    // due at half life (10 s left), then 5 s, 2.5 s, 1.25 s left: never at the expiry itself
    expect(attempts.map((ms) => Math.round(ms / 50) * 50)).toEqual([10_000, 5000, 2500, 1250]);
    ca.failWith = undefined;
    while (clock.now() < notAfter && ca.issued.length === 1) {
      clock.advance(50);
      await settle(cache);
    }
    expect(ca.issued).toHaveLength(2);
    expect(ca.issued[1]!.notBefore).toBeLessThan(notAfter);
  });

  it('ok/root rotation pushes ROOTCA before default', async () => {
    const { ca, cache, changes, issued } = await setup();
    await ca.rotate();
    changes.length = 0;
    await cache.reissueNow('test');
    expect(changes).toEqual(['ROOTCA', 'spiffe://cluster.local', 'ALL', 'default']);
    expect(issued[1]!.bundleChanged).toBe(true);
  });

  it('ok/same bundle: only default changes', async () => {
    const { cache, changes } = await setup();
    changes.length = 0;
    await cache.reissueNow('test');
    expect(changes).toEqual(['default']);
  });

  it('ok/L4 clock jump forward past expiry renews at once', async () => {
    const { clock, ca, cache } = await setup();
    clock.set(clock.now() + 30 * H); // wall clock jumps; no timer fires
    expect(ca.calls).toHaveLength(1);
    clock.advance(5000); // next clock check
    await settle(cache);
    expect(ca.calls).toHaveLength(2);
    expect(cache.status().clockJumps).toBe(1);
    expect(cache.status().ready).toBe(true);
  });

  it('ok/L4 clock jump during a backoff cancels the wait', async () => {
    const { clock, ca, cache } = await setup();
    ca.failWith = 'UNAUTHENTICATED';
    clock.advance(12 * H);
    await settle(cache);
    const n = ca.calls.length;
    ca.failWith = undefined;
    clock.set(clock.now() + 20 * H);
    clock.advance(5000);
    await settle(cache);
    expect(ca.calls.length).toBe(n + 1);
    expect(cache.status().ready).toBe(true);
  });

  it('ok/small clock drift is not a jump', async () => {
    const { clock, cache } = await setup();
    clock.set(clock.now() + 500);
    clock.advance(5000);
    expect(cache.status().clockJumps).toBe(0);
  });

  it('fail/response with one element, wrong key or wrong trust domain is rejected and retried', async () => {
    const clock = new FakeClock();
    const ca = await FakeCa.create(clock, 'spiffe://other.domain/ns/a/sa/b');
    const failures: string[] = [];
    const cache = new SecretCache({ source: ca, clock, ttlMs: H, trustDomain: 'cluster.local', random: () => 0.5, onFailure: (e) => failures.push(e.code) });
    cache.start();
    await settle(cache);
    await new Promise((r) => setTimeout(r, 50));
    await settle(cache);
    expect(failures).toEqual(['agent.bad_response']);
    expect(cache.get('default')).toBeUndefined();
    cache.stop();
    const short = new SecretCache({ source: { sign: async () => ['x'] }, clock, ttlMs: H, onFailure: (e) => failures.push(e.message) });
    short.start();
    await new Promise((r) => setTimeout(r, 50));
    expect(failures[1]).toMatch(/at least 2/);
    short.stop();
  });

  it('fail/bad grace ratio or ttl', () => {
    const src = { sign: async () => [] };
    expect(() => new SecretCache({ source: src, ttlMs: H, graceRatio: 1 })).toThrow(/grace ratio/);
    expect(() => new SecretCache({ source: src, ttlMs: 0 })).toThrow(/TTL/);
  });
});
