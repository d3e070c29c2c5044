/**
 * The batching signing queue. Requests are collected into micro-batches
 * (at most `maxBatchSize` items, waiting at most `maxBatchWaitMs` for the
 * batch to fill), each batch is signed against ONE issuer snapshot (the one
 * current when the batch is cut: a rotation never splits a batch), batches
 * are spread over worker threads (the least busy first), and every request
 * gets its own result (one bad CSR never fails its neighbours). Past
 * `maxQueue` queued-or-in-flight requests, new ones are refused at once with
 * RESOURCE_EXHAUSTED 'signer.queue_full' (retryable by Istio agents).
 *
 * Nothing slow belongs in here: authentication happens before `issue()`.
 */
import { Worker } from 'node:worker_threads';
import { systemClock, type Clock, type TimerHandle } from '../../platform/clock.ts';
import { CastellanError } from '../../platform/errors.ts';
import type { IssueRequest, IssueResult, IssuerMaterial } from '../issue.ts';
import type { BatchMessage, BatchReply, ItemOutcome } from './protocol.ts';
import { runBatch } from './run-batch.ts';

export interface BatchSignerOptions {
  /** worker threads; 0 signs on the calling thread (between event-loop turns) */
  workers: number;
  /** most requests per batch (>= 1) */
  maxBatchSize: number;
  /**
   * ms a partial batch waits for company before it is cut; 0 cuts at the end
   * of the current event-loop turn. A batch is also cut as soon as there is a
   * full batch for every worker.
   */
  maxBatchWaitMs: number;
  /** queued + in-flight requests beyond which new ones are refused */
  maxQueue: number;
  /**
   * Nice value of the worker threads (Linux: per thread, raising it needs no
   * privilege). At 0 a worker woken by postMessage often preempts the main
   * thread on its own core, which then waits out the signing in the middle of
   * its turn (more main-thread busy time, most of it inside postMessage).
   * > 0 avoids that, and lets the main thread (accepting calls,
   * authenticating) and the probes' thread go first when the cores are
   * saturated. But the workers then yield to every other process on the
   * machine as well, a load generator on the same cores included, and the
   * tail got worse in a bench/grpc-e2e run (docs/performance.md). Default 0.
   */
  nice?: number;
  /**
   * Time for requests that bring none, the batch-wait window (when
   * maxBatchWaitMs > 0), the batches' signMs and close()'s drain deadline;
   * default the system clock.
   */
  clock?: Clock;
  /** Observer called once per settled batch (metrics, tests). Must not throw. */
  onBatch?: (b: BatchReport) => void;
}

/** What one batch did: which issuer signed it and the serials it produced. */
export interface BatchReport {
  readonly seq: number;
  readonly issuerId: string;
  readonly size: number;
  /** serialHex of every certificate issued by this batch */
  readonly serials: readonly string[];
  readonly errors: number;
  /** ms of the signer's clock from the batch being cut to its results arriving */
  readonly signMs: number;
}

interface Pending {
  req: IssueRequest;
  /** aborted when the caller has gone away: the request is dropped when its batch is cut */
  signal: AbortSignal | undefined;
  resolve: (r: IssueResult) => void;
  reject: (e: CastellanError) => void;
}

interface Batch {
  seq: number;
  issuerId: string;
  items: Pending[];
  cutAt: number;
}

interface WorkerSlot {
  worker: Worker;
  inFlight: Map<number, Batch>;
  dead: boolean;
}

/** Respawns allowed for crashed workers before the signer falls back to its own thread. */
const MAX_RESPAWNS = 16;
/** How long close() waits for in-flight batches before failing them (ms). */
const CLOSE_DRAIN_MS = 30_000;

export class BatchSigner {
  private readonly opts: BatchSignerOptions;
  private issuer: IssuerMaterial | undefined;
  private queue: Pending[] = [];
  private timer: { window?: TimerHandle; immediate?: NodeJS.Immediate } | undefined;
  /** queued requests have waited their maxBatchWaitMs: cut as soon as a worker is free */
  private ripe = false;
  private slots: WorkerSlot[] = [];
  private inFlightCount = 0;
  private batchSeq = 0;
  private issued = 0;
  private respawns = 0;
  /** queued requests dropped unsigned because their caller went away */
  private abandoned = 0;
  private closed = false;
  private readonly clock: Clock;
  /** arms the batch-wait window (maxBatchWaitMs > 0) */
  private readonly windowTimer: (fn: () => void, ms: number) => TimerHandle;
  /** close() waiting for the queue and the batches in flight to empty */
  private onDrained: (() => void) | undefined;

  constructor(opts: BatchSignerOptions) {
    if (!(opts.maxBatchSize >= 1) || !(opts.maxQueue >= 1) || !(opts.maxBatchWaitMs >= 0) || !(opts.workers >= 0)) {
      throw new CastellanError('INVALID_ARGUMENT', 'signer.options', 'signer options: maxBatchSize and maxQueue must be >= 1, maxBatchWaitMs and workers >= 0');
    }
    this.opts = opts;
    this.clock = opts.clock ?? systemClock;
    // An injected clock drives the window (a fake one in tests). Without one it is a plain
    // ref'd timer, as the system clock's are unref'd: a script awaiting issue() with nothing
    // else pending must not exit while its request waits for company.
    this.windowTimer = opts.clock
      ? (fn, ms) => opts.clock!.setTimer(fn, ms)
      : (fn, ms) => {
          const t = setTimeout(fn, ms);
          return { cancel: () => clearTimeout(t) };
        };
    for (let i = 0; i < opts.workers; i++) this.slots.push(this.spawn());
  }

  private spawn(): WorkerSlot {
    // Run from source (type stripping) the worker is worker.ts; compiled to dist/, worker.js.
    const worker = new Worker(new URL(import.meta.url.endsWith('.ts') ? './worker.ts' : './worker.js', import.meta.url), { workerData: { nice: this.opts.nice ?? 0 } });
    worker.unref();
    const slot: WorkerSlot = { worker, inFlight: new Map(), dead: false };
    worker.on('message', (reply: BatchReply) => {
      const batch = slot.inFlight.get(reply.batchId);
      if (!batch) return;
      slot.inFlight.delete(reply.batchId);
      this.settle(batch, reply.outcomes);
      if (this.ripe || this.queue.length >= this.opts.maxBatchSize) this.cut();
    });
    const fail = (why: string) => {
      if (slot.dead) return;
      slot.dead = true;
      // A crashed worker fails only its own batches (UNAVAILABLE: retryable), and is replaced.
      for (const batch of slot.inFlight.values()) {
        this.settle(batch, batch.items.map(() => ({ ok: false, kind: 'UNAVAILABLE', code: 'signer.worker_failed', message: `signing worker failed (${why}); retry` })));
      }
      slot.inFlight.clear();
      const i = this.slots.indexOf(slot);
      if (i < 0 || this.closed) return;
      if (this.respawns++ < MAX_RESPAWNS) this.slots[i] = this.spawn();
      else this.slots.splice(i, 1); // keep failing? sign on this thread rather than loop forever
      if (this.queue.length > 0) {
        this.ripe = true;
        this.cut();
      }
    };
    worker.on('error', (e) => fail(e.message));
    worker.on('exit', (code) => fail(`exit ${code}`));
    return slot;
  }

  /** Batches cut from now on are signed by `m`; batches already cut keep their issuer. */
  setIssuer(m: IssuerMaterial): void {
    // Own, exact-size copies: a Buffer is often a view into a 64 KiB pool slab, and
    // structured clone copies a view's whole backing store, so every batch would
    // otherwise carry ~128 KiB to its worker (measured: 78 us vs 7 us per message).
    this.issuer = { ...m, certDer: new Uint8Array(m.certDer), keyPkcs8Der: new Uint8Array(m.keyPkcs8Der) };
  }

  /**
   * Queues one issuance; resolves with the certificate or rejects with a
   * CastellanError (the item's own error, RESOURCE_EXHAUSTED
   * 'signer.queue_full', UNAVAILABLE 'signer.no_issuer' | 'signer.closed' |
   * 'signer.worker_failed'). `now` defaults to the time of this call.
   */
  issue(req: Omit<IssueRequest, 'now'> & { now?: number; signal?: AbortSignal }): Promise<IssueResult> {
    if (this.closed) return Promise.reject(new CastellanError('UNAVAILABLE', 'signer.closed', 'the CA is shutting down'));
    if (!this.issuer) return Promise.reject(new CastellanError('UNAVAILABLE', 'signer.no_issuer', 'the CA has no signing authority yet'));
    if (this.queue.length + this.inFlightCount >= this.opts.maxQueue) {
      return Promise.reject(new CastellanError('RESOURCE_EXHAUSTED', 'signer.queue_full', 'the CA is at capacity; retry with backoff'));
    }
    return new Promise((resolve, reject) => {
      const full: IssueRequest = { csrPem: req.csrPem, spiffeId: req.spiffeId, ttlMs: req.ttlMs, now: req.now ?? this.clock.now() };
      this.queue.push({ req: full, signal: req.signal, resolve, reject });
      if (this.ripe || this.queue.length >= this.opts.maxBatchSize) this.cut();
      else if (!this.timer) {
        // 0 ms: ripe at the end of this event-loop turn, so requests decoded from the
        // same socket reads share a batch without any added latency.
        const fire = (): void => {
          this.timer = undefined;
          this.ripe = true;
          this.cut();
        };
        this.timer = this.opts.maxBatchWaitMs === 0 ? { immediate: setImmediate(fire) } : { window: this.windowTimer(fire, this.opts.maxBatchWaitMs) };
      }
    });
  }

  /**
   * Cuts batches for the workers that have none in flight, against the issuer
   * current now. Queued requests wait while every worker is busy (they are
   * not cut yet, so a rotation meanwhile applies to them): a reply frees a
   * worker and cuts again. So batches stay small under light load and grow
   * by themselves under heavy load, where they save the most per item.
   */
  private cut(): void {
    if (this.queue.length === 0) {
      this.ripe = false;
      return;
    }
    this.timer?.window?.cancel();
    if (this.timer?.immediate) clearImmediate(this.timer.immediate);
    this.timer = undefined;
    const issuer = this.issuer!;
    const live = this.slots.filter((s) => !s.dead);
    if (live.length === 0) {
      // In-thread mode: every batch is cut now and signed one per event-loop turn.
      while (this.queue.length > 0) {
        const batch = this.batchOf(this.opts.maxBatchSize, issuer);
        if (batch) this.dispatch(batch, issuer, undefined);
      }
      this.ripe = false;
      return;
    }
    const free = live.filter((s) => s.inFlight.size === 0);
    if (free.length > 0) {
      // Spread what is queued evenly over the free workers, at most maxBatchSize each.
      const size = Math.min(this.opts.maxBatchSize, Math.ceil(this.queue.length / free.length));
      for (const slot of free) {
        const batch = this.batchOf(size, issuer);
        if (!batch) break;
        this.dispatch(batch, issuer, slot);
      }
    }
    this.ripe = this.queue.length > 0;
  }

  /**
   * The next `size` queued requests whose callers are still there, or undefined
   * when the queue holds none. A request whose caller went away while it waited
   * is rejected CANCELLED here, unsigned: after a burst whose clients gave up,
   * the backlog costs nothing to drain.
   */
  private batchOf(size: number, issuer: IssuerMaterial): Batch | undefined {
    const items: Pending[] = [];
    while (items.length < size && this.queue.length > 0) {
      for (const p of this.queue.splice(0, size - items.length)) {
        if (p.signal?.aborted) {
          this.abandoned++;
          p.reject(new CastellanError('CANCELLED', 'signer.abandoned', 'the caller went away before its certificate was signed'));
        } else items.push(p);
      }
    }
    return items.length === 0 ? undefined : { seq: ++this.batchSeq, issuerId: issuer.id, items, cutAt: this.clock.now() };
  }

  private dispatch(batch: Batch, issuer: IssuerMaterial, slot: WorkerSlot | undefined): void {
    this.inFlightCount += batch.items.length;
    if (!slot) {
      setImmediate(() => this.settle(batch, runBatch(issuer, batch.items.map((p) => p.req))));
      return;
    }
    // The issuer travels with every batch (about 1 KB, cloned): the worker needs no
    // issuer state of its own, so a batch can only ever be signed by its own snapshot.
    const msg: BatchMessage = { batchId: batch.seq, issuer, items: batch.items.map((p) => p.req) };
    slot.inFlight.set(batch.seq, batch);
    slot.worker.postMessage(msg);
  }

  private settle(batch: Batch, outcomes: ItemOutcome[]): void {
    this.inFlightCount -= batch.items.length;
    const serials: string[] = [];
    let errors = 0;
    batch.items.forEach((p, i) => {
      const o = outcomes[i];
      if (o?.ok) {
        this.issued++;
        serials.push(o.result.serialHex);
        // Structured clone turns Buffers into plain Uint8Arrays; keep the type honest.
        p.resolve({ ...o.result, certDer: Buffer.from(o.result.certDer.buffer, o.result.certDer.byteOffset, o.result.certDer.byteLength) });
      } else {
        errors++;
        p.reject(o ? new CastellanError(o.kind, o.code, o.message) : new CastellanError('INTERNAL', 'signer.no_outcome', 'internal error: no result for this request'));
      }
    });
    try {
      this.opts.onBatch?.({ seq: batch.seq, issuerId: batch.issuerId, size: batch.items.length, serials, errors, signMs: Math.max(0, this.clock.now() - batch.cutAt) });
    } catch {
      // an observer must not break issuance
    }
    if (this.onDrained && this.queue.length + this.inFlightCount === 0) this.onDrained();
  }

  stats(): { queued: number; inFlight: number; batches: number; issued: number; abandoned: number } {
    return { queued: this.queue.length, inFlight: this.inFlightCount, batches: this.batchSeq, issued: this.issued, abandoned: this.abandoned };
  }

  /**
   * Stops accepting, signs what is queued, waits for in-flight batches (at
   * most 30 s; anything still pending then is rejected UNAVAILABLE), then
   * terminates the workers. Idempotent.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.queue.length > 0 && this.issuer) {
      this.ripe = true;
      this.cut();
    }
    if (this.queue.length + this.inFlightCount > 0) {
      // Settled batches call onDrained once nothing is queued or in flight; the deadline cuts the wait short.
      // The workers are unref'd: a ref'd handle keeps the process up until the drain ends (no polling).
      const keepAlive = setInterval(() => undefined, 2 ** 30);
      await new Promise<void>((resolve) => {
        const deadline = this.clock.setTimer(resolve, CLOSE_DRAIN_MS);
        this.onDrained = () => {
          deadline.cancel();
          resolve();
        };
      });
      this.onDrained = undefined;
      clearInterval(keepAlive);
    }
    const slots = this.slots;
    this.slots = [];
    for (const s of slots) s.dead = true;
    await Promise.all(slots.map((s) => s.worker.terminate()));
    const closedOutcome = (): ItemOutcome => ({ ok: false, kind: 'UNAVAILABLE', code: 'signer.closed', message: 'the CA shut down before signing; retry' });
    for (const s of slots) {
      for (const batch of s.inFlight.values()) this.settle(batch, batch.items.map(closedOutcome));
      s.inFlight.clear();
    }
    for (const p of this.queue.splice(0)) p.reject(new CastellanError('UNAVAILABLE', 'signer.closed', 'the CA shut down before signing; retry'));
  }
}
