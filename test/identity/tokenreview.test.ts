/**
 * TokenReview authentication through @kubernetes/client-node against an HTTP
 * double of the Kubernetes API's TokenReview endpoint (no real API server
 * can run here): acceptance rules (T2), caching keyed by token hash and
 * capped by the token's expiry, and failing closed with bounded time and
 * concurrency when the API is down, slow or broken (T4).
 */
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { TokenReviewAuthenticator, type TokenReviewOptions } from '../../src/identity/tokenreview.ts';
import { kubeTokenReviewer } from '../../src/kube/tokenreview.ts';
import { FakeClock } from '../../src/platform/clock.ts';
import { CastellanError } from '../../src/platform/errors.ts';
import { tempDir } from '../support/tmp.ts';
import { opaqueToken, TokenReviewDouble, type DoubleToken } from './tokenreview-double.ts';

const tmp = tempDir('castellan-tr-');
const kubeconfig = join(tmp.path, 'kubeconfig');
const api = new TokenReviewDouble();
const clock = new FakeClock(Date.UTC(2031, 0, 1));
const nowSec = () => Math.floor(clock.now() / 1000);
const SA: DoubleToken = {
  username: 'system:serviceaccount:shop:cart',
  groups: ['system:serviceaccounts', 'system:serviceaccounts:shop', 'system:authenticated'],
  audiences: ['istio-ca'],
  extra: { 'authentication.kubernetes.io/pod-name': ['cart-7d9f'], 'authentication.kubernetes.io/pod-uid': ['4b1c'] },
};
let n = 0;
/** registers a fresh token with the double */
function token(t: Partial<DoubleToken> = {}, expSec: number | undefined = nowSec() + 3600): string {
  const tok = opaqueToken(`t${++n}`, expSec);
  api.tokens.set(tok, { ...SA, ...t });
  return tok;
}
function authenticator(o: Partial<TokenReviewOptions> = {}): TokenReviewAuthenticator {
  return new TokenReviewAuthenticator({ audiences: ['istio-ca'], trustDomain: 'cluster.local', clock, reviewer: kubeTokenReviewer(kubeconfig), ...o });
}
async function refusal(a: TokenReviewAuthenticator, tok: string): Promise<CastellanError> {
  try {
    await a.authenticate(tok);
  } catch (e) {
    expect(e).toBeInstanceOf(CastellanError);
    return e as CastellanError;
  }
  throw new Error('accepted');
}

beforeAll(async () => {
  await api.start(tmp.path);
  api.writeKubeconfig(kubeconfig);
});
afterEach(() => {
  api.fault = { kind: 'none' };
});
afterAll(async () => {
  await api.stop();
  tmp.cleanup();
});

describe('TokenReview (HTTP double of the Kubernetes API)', () => {
  it('ok/a service-account token is reviewed with our audience and names the workload and pod', async () => {
    const a = authenticator();
    const tok = token();
    const before = api.requests.length;
    const c = await a.authenticate(tok);
    expect(c).toMatchObject({ spiffeId: 'spiffe://cluster.local/ns/shop/sa/cart', method: 'tokenreview', pod: { name: 'cart-7d9f', uid: '4b1c' } });
    const sent = api.requests.at(-1)!;
    expect(api.requests.length - before).toBe(1);
    expect(sent).toMatchObject({ token: tok, audiences: ['istio-ca'], authorization: 'Bearer castellan-ca-sa-token' });
  });

  it('ok/cached by token hash: a repeat costs no API call; identical reviews in flight are coalesced', async () => {
    const a = authenticator();
    const tok = token();
    const before = api.requests.length;
    const all = await Promise.all(Array.from({ length: 8 }, () => a.authenticate(tok)));
    await a.authenticate(tok);
    expect(new Set(all.map((c) => c.spiffeId)).size).toBe(1);
    expect(api.requests.length - before).toBe(1);
    expect(a.calls).toBe(1);
  });

  it('ok/the cache never outlives the token: after exp the token is reviewed again', async () => {
    const a = authenticator();
    const tok = token({}, nowSec() + 120);
    await a.authenticate(tok);
    clock.advance(60_000);
    await a.authenticate(tok);
    expect(a.calls).toBe(1);
    clock.advance(61_000);
    api.tokens.delete(tok); // the API now refuses it
    expect(await refusal(a, tok)).toMatchObject({ kind: 'UNAUTHENTICATED', code: 'auth.tokenreview_refused' });
    expect(a.calls).toBe(2);
  });

  it('ok/the cache is bounded by cacheTtlMs even for long tokens (bounds revocation delay)', async () => {
    const a = authenticator({ cacheTtlMs: 10_000 });
    const tok = token({}, nowSec() + 86400);
    await a.authenticate(tok);
    clock.advance(11_000);
    await a.authenticate(tok);
    expect(a.calls).toBe(2);
  });

  it('ok/the cache is bounded in size', async () => {
    const a = authenticator({ cacheSize: 2 });
    const [t1, t2, t3] = [token(), token(), token()];
    for (const t of [t1, t2, t3]) await a.authenticate(t!);
    await a.authenticate(t3!);
    expect(a.calls).toBe(3);
    await a.authenticate(t1!); // evicted
    expect(a.calls).toBe(4);
  });

  it('fail/refusals are not cached', async () => {
    const a = authenticator();
    const tok = opaqueToken('unknown-to-the-api', nowSec() + 3600);
    await refusal(a, tok);
    api.tokens.set(tok, SA);
    await expect(a.authenticate(tok)).resolves.toMatchObject({ method: 'tokenreview' });
    expect(a.calls).toBe(2);
  });

  const t2: [string, () => string | { script: Record<string, unknown> }, string][] = [
    ['T2/token for the API-server audience only (the API says not authenticated)', () => token({ audiences: ['https://kubernetes.default.svc.cluster.local'] }), 'auth.tokenreview_refused'],
    ['T2/unknown token', () => opaqueToken('never-issued', nowSec() + 60), 'auth.tokenreview_refused'],
    ['T2/user not in system:serviceaccounts', () => token({ username: 'system:serviceaccount:shop:cart', groups: ['system:authenticated'] }), 'auth.token_subject'],
    ['T2/a user, not a service account', () => token({ username: 'alice@example.com' }), 'auth.token_subject'],
    ['T2/a node identity', () => token({ username: 'system:node:worker-1' }), 'auth.token_subject'],
    ['T2/username with an extra segment', () => token({ username: 'system:serviceaccount:shop:cart:x' }), 'auth.token_subject'],
    ['T2/username with an upper-case namespace', () => token({ username: 'system:serviceaccount:Shop:cart' }), 'auth.token_subject'],
    ['T2/username with an empty name', () => token({ username: 'system:serviceaccount:shop:' }), 'auth.token_subject'],
    ['T2/authenticated but status.audiences misses ours', () => ({ script: { authenticated: true, user: { username: SA.username, groups: SA.groups }, audiences: ['vault'] } }), 'auth.token_claims'],
    ['T2/authenticated but no status.audiences at all', () => ({ script: { authenticated: true, user: { username: SA.username, groups: SA.groups } } }), 'auth.token_claims'],
    ['T2/authenticated but status.error is set', () => ({ script: { authenticated: true, error: 'webhook said maybe', user: { username: SA.username, groups: SA.groups }, audiences: ['istio-ca'] } }), 'auth.tokenreview_refused'],
    ['T2/authenticated is the string "true"', () => ({ script: { authenticated: 'true', user: { username: SA.username, groups: SA.groups }, audiences: ['istio-ca'] } }), 'auth.tokenreview_refused'],
  ];
  it.each(t2)('%s', async (_name, make, code) => {
    const a = authenticator();
    const m = make();
    let tok: string;
    if (typeof m === 'string') tok = m;
    else {
      tok = token();
      api.fault = { kind: 'script', status: m.script };
    }
    const e = await refusal(a, tok);
    expect(e).toMatchObject({ kind: 'UNAUTHENTICATED', code });
    expect(e.message).not.toContain(tok);
  });
});

describe('TokenReview fails closed (T4)', () => {
  it.each([
    ['T4/API answers 500', { kind: 'status', code: 500 } as const],
    ['T4/API answers 503', { kind: 'status', code: 503 } as const],
    ['T4/API answers 429', { kind: 'status', code: 429 } as const],
    ['T4/API returns a truncated body', { kind: 'garbage' } as const],
  ])('%s: UNAVAILABLE (retryable), nothing cached', async (_n, fault) => {
    const a = authenticator();
    const tok = token();
    api.fault = fault;
    await expect(a.authenticate(tok)).rejects.toMatchObject({ kind: 'UNAVAILABLE', code: 'auth.tokenreview_unavailable' });
    api.fault = { kind: 'none' };
    await expect(a.authenticate(tok)).resolves.toMatchObject({ method: 'tokenreview' });
  });

  it('T4/our own credentials refused by the API (403): UNAVAILABLE, not the caller\'s fault', async () => {
    const cfg = join(tmp.path, 'kubeconfig-bad');
    api.writeKubeconfig(cfg, 'wrong-token');
    const a = authenticator({ reviewer: kubeTokenReviewer(cfg) });
    const e = await refusal(a, token());
    expect(e).toMatchObject({ kind: 'UNAVAILABLE' });
    expect(e.message).toMatch(/HTTP 403/);
  });

  it('T4/API slow: the call fails after the bounded timeout', async () => {
    const a = authenticator({ timeoutMs: 200 });
    api.fault = { kind: 'delay', ms: 1500 };
    const t0 = Date.now();
    await expect(a.authenticate(token())).rejects.toMatchObject({ kind: 'UNAVAILABLE', message: expect.stringMatching(/timed out after 200 ms/) });
    expect(Date.now() - t0).toBeLessThan(1000);
  });

  it('T4/API slow: calls beyond maxConcurrent are refused at once, no pile-up at the API', async () => {
    const a = authenticator({ timeoutMs: 5000, maxConcurrent: 3 });
    while (api.inFlight > 0) await new Promise((r) => setTimeout(r, 50)); // reviews other tests abandoned
    api.fault = { kind: 'delay', ms: 400 };
    api.maxInFlight = 0;
    const t0 = Date.now();
    const results = await Promise.allSettled(Array.from({ length: 12 }, () => a.authenticate(token())));
    const refusedFast = results.filter((r) => r.status === 'rejected');
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(3);
    expect(refusedFast).toHaveLength(9);
    for (const r of refusedFast) expect((r as PromiseRejectedResult).reason).toMatchObject({ kind: 'UNAVAILABLE', message: expect.stringMatching(/too many TokenReview calls/) });
    expect(api.maxInFlight).toBeLessThanOrEqual(3);
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  it('T4/API down (nothing listening): UNAVAILABLE', async () => {
    const down = new TokenReviewDouble();
    await down.start(tmp.path);
    const cfg = join(tmp.path, 'kubeconfig-down');
    down.writeKubeconfig(cfg);
    await down.stop();
    const a = authenticator({ reviewer: kubeTokenReviewer(cfg), timeoutMs: 2000 });
    await expect(a.authenticate(token())).rejects.toMatchObject({ kind: 'UNAVAILABLE' });
  });
});
