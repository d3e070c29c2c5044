/**
 * Leaf accounting of one process: per authority, the certificates signed
 * since the last flush to the keystore (count, latest expiry) and, since
 * start, a histogram of expiries by hour (what is still live). Cheap: in
 * memory, flushed by CaManager.
 */
const HOUR = 3_600_000;

export interface LeafDelta {
  issued: number;
  lastNotAfter: number;
}

export class LeafLedger {
  private readonly pendingById = new Map<string, LeafDelta>();
  private readonly live = new Map<string, Map<number, number>>();

  /** One certificate signed by `issuerId` expiring at `notAfter` (ms). */
  record(issuerId: string, notAfter: number): void {
    const p = this.pendingById.get(issuerId);
    if (p) {
      p.issued++;
      if (notAfter > p.lastNotAfter) p.lastNotAfter = notAfter;
    } else this.pendingById.set(issuerId, { issued: 1, lastNotAfter: notAfter });
    let h = this.live.get(issuerId);
    if (!h) this.live.set(issuerId, (h = new Map()));
    const bucket = Math.floor(notAfter / HOUR);
    h.set(bucket, (h.get(bucket) ?? 0) + 1);
  }

  /** Leaves signed by `id` (this process, since start) that have not expired at `now`, counted by hour of expiry. */
  liveLeaves(id: string, now: number): number {
    const h = this.live.get(id);
    if (!h) return 0;
    const nowBucket = Math.floor(now / HOUR);
    let n = 0;
    for (const [b, c] of h) {
      if (b < nowBucket) h.delete(b);
      else n += c;
    }
    return n;
  }

  /** Not yet flushed for `id`. */
  pending(id: string): LeafDelta | undefined {
    return this.pendingById.get(id);
  }

  /** Takes everything not yet flushed (empty map when nothing is). */
  take(): Map<string, LeafDelta> {
    const deltas = new Map(this.pendingById);
    this.pendingById.clear();
    return deltas;
  }

  /** Puts back deltas a flush could not write, to be written with the next one. */
  restore(deltas: Map<string, LeafDelta>): void {
    for (const [id, d] of deltas) {
      const p = this.pendingById.get(id);
      if (p) {
        p.issued += d.issued;
        p.lastNotAfter = Math.max(p.lastNotAfter, d.lastNotAfter);
      } else this.pendingById.set(id, d);
    }
  }
}
