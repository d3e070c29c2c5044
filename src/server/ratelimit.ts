/**
 * Token-bucket rate limits keyed by peer address or by identity
 * (security.md D3: one compromised pod, or one noisy node, cannot starve the
 * others). Each key gets `ratePerSec` tokens per second and holds at most
 * `burst`; a request takes one or is refused (the caller answers
 * RESOURCE_EXHAUSTED, which Istio agents retry with backoff).
 *
 * Memory is bounded: at most `maxKeys` buckets are kept; a full bucket is
 * indistinguishable from a missing one, so buckets that have refilled are
 * dropped first, and past the bound the oldest are evicted.
 */
import type { Clock } from '../platform/clock.ts';

export interface RateLimitOptions {
  /** tokens per second per key; 0 disables the limit */
  ratePerSec: number;
  /** bucket size; default: one second's worth (at least 1) */
  burst?: number;
  /** most keys tracked; default 100 000 */
  maxKeys?: number;
  clock: Clock;
}

interface Bucket {
  tokens: number;
  at: number;
}

export class KeyedRateLimiter {
  private readonly rate: number;
  private readonly burst: number;
  private readonly maxKeys: number;
  private readonly clock: Clock;
  private readonly buckets = new Map<string, Bucket>();
  /** requests refused so far */
  refused = 0;

  constructor(o: RateLimitOptions) {
    this.rate = o.ratePerSec;
    this.burst = Math.max(1, o.burst ?? Math.ceil(o.ratePerSec));
    this.maxKeys = o.maxKeys ?? 100_000;
    this.clock = o.clock;
  }

  get enabled(): boolean {
    return this.rate > 0;
  }

  /** Takes one token for `key`; false when the key is over its rate. */
  tryTake(key: string): boolean {
    if (this.rate <= 0) return true;
    const now = this.clock.now();
    let b = this.buckets.get(key);
    if (b) {
      b.tokens = Math.min(this.burst, b.tokens + ((now - b.at) / 1000) * this.rate);
      b.at = now;
      // keep recently used keys last, so eviction takes the idle ones
      this.buckets.delete(key);
      this.buckets.set(key, b);
    } else {
      if (this.buckets.size >= this.maxKeys) this.evict(now);
      b = { tokens: this.burst, at: now };
      this.buckets.set(key, b);
    }
    if (b.tokens < 1) {
      this.refused++;
      return false;
    }
    b.tokens -= 1;
    return true;
  }

  /** Keys tracked now (for tests and metrics). */
  get size(): number {
    return this.buckets.size;
  }

  private evict(now: number): void {
    const refill = (this.burst / this.rate) * 1000;
    for (const [k, b] of this.buckets) {
      if (now - b.at >= refill) this.buckets.delete(k);
      else break; // insertion order is last use: the rest are more recent
    }
    while (this.buckets.size >= this.maxKeys) this.buckets.delete(this.buckets.keys().next().value!);
  }
}

/** The address part of a grpc-js peer string ("10.1.2.3:5432", "::ffff:10.1.2.3:5432", "ipv6:[::1]:5432", "unix:/path"). */
export function peerAddress(peer: string | undefined): string {
  if (!peer) return 'unknown';
  if (peer.startsWith('unix')) return 'unix';
  const p = peer.replace(/^ipv[46]:/, '');
  if (p.startsWith('[')) return p.slice(1, Math.max(1, p.indexOf(']')));
  const i = p.lastIndexOf(':');
  return i > 0 ? p.slice(0, i) : p;
}
