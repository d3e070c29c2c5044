/**
 * Authentication by the Kubernetes TokenReview API, cached (protocols.md §2,
 * security.md T2, T4). Accepted only if the review is authenticated without
 * error, the user is in `system:serviceaccounts`, the username is exactly
 * `system:serviceaccount:<ns>:<sa>` (DNS-1123), and the review's audiences
 * intersect ours.
 *
 * Cache: keyed by SHA-256 of the token (the token itself is never stored),
 * bounded in size (LRU), an entry living until min(token exp, cacheTtlMs).
 * Refusals are not cached. Identical reviews in flight are coalesced.
 * Calls are bounded in time and number: beyond `maxConcurrent` in flight,
 * callers get UNAVAILABLE at once instead of queueing (no pile-up).
 */
import { createHash } from 'node:crypto';
import { CastellanError } from '../platform/errors.ts';
import type { Clock } from '../platform/clock.ts';
import { workloadSpiffeId } from '../spiffe/id.ts';
import { parseServiceAccountUser, unauthenticated } from './bearer.ts';
import type { Caller } from './types.ts';

/** What Castellan needs of a review's answer. */
export interface TokenReviewStatus {
  authenticated?: boolean;
  error?: string;
  audiences?: string[];
  user?: { username?: string; uid?: string; groups?: string[]; extra?: Record<string, string[]> };
}

/**
 * Port: sends one review. Rejects on transport or HTTP errors. The
 * Kubernetes implementation is src/kube/tokenreview.ts, joined in the
 * server's composition root.
 */
export type TokenReviewer = (token: string, audiences: string[]) => Promise<TokenReviewStatus>;

export interface TokenReviewOptions {
  audiences: string[];
  trustDomain: string;
  clock: Clock;
  /** sends the reviews (the Kubernetes API, or a double in tests) */
  reviewer: TokenReviewer;
  /** ms, default 5000 */
  timeoutMs?: number;
  /** default 32 */
  maxConcurrent?: number;
  /** entries, default 10000 */
  cacheSize?: number;
  /** ms, default 300000 (5 min): bounds how long a revoked token may still pass */
  cacheTtlMs?: number;
}

interface Entry {
  caller: Caller;
  until: number;
}

function unavailable(msg: string, cause?: unknown): CastellanError {
  return new CastellanError('UNAVAILABLE', 'auth.tokenreview_unavailable', msg, { cause });
}

/** `exp` of a JWT payload without verifying it: used only to cap cache lifetime, never to accept. */
function unverifiedExpiry(token: string): number | undefined {
  try {
    const payload = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as { exp?: unknown };
    return typeof payload.exp === 'number' ? payload.exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

export class TokenReviewAuthenticator {
  private readonly o: Required<TokenReviewOptions>;
  private readonly cache = new Map<string, Entry>();
  private readonly inflight = new Map<string, Promise<Caller>>();
  private active = 0;
  /** reviews actually sent (for tests and metrics) */
  calls = 0;

  constructor(opts: TokenReviewOptions) {
    this.o = {
      audiences: opts.audiences,
      trustDomain: opts.trustDomain,
      clock: opts.clock,
      reviewer: opts.reviewer,
      timeoutMs: opts.timeoutMs ?? 5000,
      maxConcurrent: opts.maxConcurrent ?? 32,
      cacheSize: opts.cacheSize ?? 10_000,
      cacheTtlMs: opts.cacheTtlMs ?? 300_000,
    };
  }

  async authenticate(token: string): Promise<Caller> {
    const now = this.o.clock.now();
    const key = createHash('sha256').update(token).digest('base64url');
    const hit = this.cache.get(key);
    if (hit) {
      this.cache.delete(key);
      if (hit.until > now) {
        this.cache.set(key, hit);
        return hit.caller;
      }
    }
    let p = this.inflight.get(key);
    if (!p) {
      p = this.review(token, key).finally(() => this.inflight.delete(key));
      this.inflight.set(key, p);
    }
    return p;
  }

  private async review(token: string, key: string): Promise<Caller> {
    if (this.active >= this.o.maxConcurrent) throw unavailable('too many TokenReview calls in flight; retry');
    this.active++;
    this.calls++;
    let status: TokenReviewStatus;
    try {
      const call = this.o.reviewer(token, this.o.audiences);
      // The slot is freed when the call really ends, so a slow API server cannot pile up calls.
      call.then(
        () => this.active--,
        () => this.active--,
      );
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(unavailable(`TokenReview timed out after ${this.o.timeoutMs} ms`)), this.o.timeoutMs);
      });
      try {
        status = await Promise.race([call, timeout]);
      } finally {
        clearTimeout(timer);
      }
    } catch (e) {
      if (e instanceof CastellanError) throw e;
      const code = (e as { code?: number }).code;
      // 401/403: our own credentials are refused; 5xx/network: the API is down. Both: fail closed, retryable.
      throw unavailable(`TokenReview failed${typeof code === 'number' ? ` (HTTP ${code})` : ''}`, e);
    }
    const caller = this.check(status);
    const exp = unverifiedExpiry(token);
    const now = this.o.clock.now();
    const until = Math.min(now + this.o.cacheTtlMs, exp ?? now + 30_000);
    if (until > now) {
      if (this.cache.size >= this.o.cacheSize) this.cache.delete(this.cache.keys().next().value!);
      this.cache.set(key, { caller: { ...caller, expiresAt: exp }, until });
    }
    return caller;
  }

  private check(s: TokenReviewStatus): Caller {
    if (s.error) throw unauthenticated('auth.tokenreview_refused', 'TokenReview reported an error for this token');
    if (s.authenticated !== true) throw unauthenticated('auth.tokenreview_refused', 'TokenReview did not authenticate this token');
    if (!s.user?.groups?.includes('system:serviceaccounts')) throw unauthenticated('auth.token_subject', 'token does not belong to a service account');
    const sa = parseServiceAccountUser(s.user.username);
    if (!sa) throw unauthenticated('auth.token_subject', 'token user is not system:serviceaccount:<namespace>:<name>');
    if (!(s.audiences ?? []).some((a) => this.o.audiences.includes(a))) throw unauthenticated('auth.token_claims', 'token audiences do not include ours');
    const identity = { trustDomain: this.o.trustDomain, ...sa };
    const extra = s.user.extra ?? {};
    return {
      spiffeId: workloadSpiffeId(identity),
      identity,
      method: 'tokenreview',
      pod: { name: extra['authentication.kubernetes.io/pod-name']?.[0], uid: extra['authentication.kubernetes.io/pod-uid']?.[0] },
    };
  }

  close(): void {
    this.cache.clear();
  }
}
