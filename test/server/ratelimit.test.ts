/**
 * security.md D3: per-peer and per-identity issuance limits. The limiter on
 * a fake clock, then through the CreateCertificate service logic: a peer
 * over its rate is refused before any token is looked at; an identity over
 * its rate does not slow down other identities.
 */
import { describe, expect, it } from 'vitest';
import { KeyedRateLimiter, peerAddress } from '../../src/server/ratelimit.ts';
import { createCertificate, type CaServiceDeps } from '../../src/server/ca-service.ts';
import { createCaMetrics } from '../../src/server/metrics.ts';
import { FakeClock } from '../../src/platform/clock.ts';
import type { CastellanError } from '../../src/platform/errors.ts';
import { silentLogger } from '../../src/platform/logger.ts';
import type { KeyringView } from '../../src/ca/keyring.ts';
import type { Caller, TokenAuthenticator, TokenAuthRequest } from '../../src/identity/types.ts';

describe('KeyedRateLimiter', () => {
  it('ok/a burst of one second, then the steady rate, per key', () => {
    const clock = new FakeClock(0);
    const l = new KeyedRateLimiter({ ratePerSec: 10, clock });
    const take = (k: string, n: number) => Array.from({ length: n }, () => l.tryTake(k)).filter(Boolean).length;
    expect(take('a', 15)).toBe(10);
    expect(take('b', 3)).toBe(3); // another key is not affected
    clock.advance(500);
    expect(take('a', 10)).toBe(5);
    clock.advance(10_000);
    expect(take('a', 20)).toBe(10); // never more than the burst
    expect(l.refused).toBe(5 + 5 + 10);
  });

  it('ok/0 disables the limit', () => {
    const l = new KeyedRateLimiter({ ratePerSec: 0, clock: new FakeClock(0) });
    for (let i = 0; i < 10_000; i++) expect(l.tryTake('x')).toBe(true);
    expect(l.size).toBe(0);
  });

  it('ok/memory is bounded: refilled buckets go first, then the least recently used', () => {
    const clock = new FakeClock(0);
    const l = new KeyedRateLimiter({ ratePerSec: 1, burst: 2, maxKeys: 100, clock });
    for (let i = 0; i < 1000; i++) l.tryTake(`k${i}`);
    expect(l.size).toBeLessThanOrEqual(100);
    // a hot key stays tracked (its empty bucket is not forgotten) while others churn
    l.tryTake('hot');
    l.tryTake('hot');
    expect(l.tryTake('hot')).toBe(false);
    for (let i = 0; i < 50; i++) l.tryTake(`churn${i}`);
    expect(l.tryTake('hot')).toBe(false);
  });

  it.each([
    ['127.0.0.1:40000', '127.0.0.1'],
    ['::ffff:10.1.2.3:5432', '::ffff:10.1.2.3'],
    ['ipv6:[::1]:5432', '::1'],
    ['ipv4:10.0.0.7:1', '10.0.0.7'],
    ['unix:/tmp/s', 'unix'],
    ['unknown', 'unknown'],
  ])('peerAddress(%s) = %s', (peer, addr) => {
    expect(peerAddress(peer)).toBe(addr);
  });
});

describe('rate limits in CreateCertificate', () => {
  class CountingAuth implements TokenAuthenticator {
    calls = 0;
    async authenticate(req: TokenAuthRequest): Promise<Caller> {
      this.calls++;
      const sa = req.authorization[0]!.slice('Bearer '.length);
      return { spiffeId: `spiffe://td/ns/a/sa/${sa}`, identity: { trustDomain: 'td', namespace: 'a', serviceAccount: sa }, method: 'jwt' };
    }
    close(): void {}
  }
  function deps(perPeer: number, perIdentity: number) {
    const clock = new FakeClock(0);
    const auth = new CountingAuth();
    const authority = { id: 'i', chainPem: [], trustBundlePem: 'ROOTS', certDer: Buffer.alloc(0) };
    const d: CaServiceDeps = {
      trustDomain: 'td',
      defaultTtlMs: 3600_000,
      maxTtlMs: 3600_000,
      view: () => ({ active: authority, authorities: new Map([['i', authority]]), trustBundlePem: 'ROOTS', vouchingSignersDer: [], taintedSignersDer: [] }) as unknown as KeyringView,
      signer: { issue: async () => ({ certPem: 'LEAF', certDer: new Uint8Array(), serialHex: '01', notBefore: 0, notAfter: 1, issuerId: 'i' }) },
      tokenAuth: auth,
      clock,
      logger: silentLogger(),
      metrics: createCaMetrics({ defaultMetrics: false }),
      limits: { peer: new KeyedRateLimiter({ ratePerSec: perPeer, clock }), identity: new KeyedRateLimiter({ ratePerSec: perIdentity, clock }) },
    };
    return { d, auth, clock };
  }
  const call = (d: CaServiceDeps, peer: string, sa: string) =>
    createCertificate(d, { csr: 'CSR', validityDurationSec: 0n, authorization: [`Bearer ${sa}`], requestId: 'r', peer }).then(
      () => 'OK',
      (e: CastellanError) => `${e.kind} ${e.code}`,
    );

  it('D3/a peer over its rate is refused RESOURCE_EXHAUSTED before authentication', async () => {
    const { d, auth } = deps(5, 0);
    const out = [];
    for (let i = 0; i < 8; i++) out.push(await call(d, '10.0.0.1:1000', 'web'));
    expect(out.filter((o) => o === 'OK')).toHaveLength(5);
    expect(out.slice(5)).toEqual(Array(3).fill('RESOURCE_EXHAUSTED ratelimit.peer'));
    expect(auth.calls).toBe(5);
    expect(await call(d, '10.0.0.2:1000', 'web')).toBe('OK');
    expect(await d.metrics.registry.getSingleMetricAsString('castellan_rate_limited')).toMatch(/scope="peer"} 3/);
  });

  it('D3/one identity over its rate does not starve the others', async () => {
    const { d, clock } = deps(0, 3);
    const noisy = [];
    for (let i = 0; i < 10; i++) noisy.push(await call(d, `10.0.1.${i}:1`, 'compromised'));
    expect(noisy.filter((o) => o === 'OK')).toHaveLength(3);
    expect(noisy.at(-1)).toBe('RESOURCE_EXHAUSTED ratelimit.identity');
    for (const sa of ['a', 'b', 'c']) expect(await call(d, '10.0.9.9:1', sa)).toBe('OK');
    clock.advance(1000);
    expect(await call(d, '10.0.1.1:1', 'compromised')).toBe('OK');
  });
});
