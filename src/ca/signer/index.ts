/**
 * The batching signing queue. Requests are collected into micro-batches
 * (at most `maxBatchSize` items, waiting at most `maxBatchWaitMs` for the
 * batch to fill), each batch is signed against ONE issuer snapshot (the one
 * current when the batch was cut: a rotation never splits a batch), batches
 * are spread over worker threads (the least busy first), and every request
 * gets its own result. Past `maxQueue` queued-or-in-flight requests, new
 * ones are refused at once with RESOURCE_EXHAUSTED (retryable by agents).
 */
import { Worker } from 'node:worker_threads';
import { CastellanError } from '../../platform/errors.ts';
import type { IssueRequest, IssueResult, IssuerMaterial } from '../issue.ts';
import type { BatchMessage, BatchReply, ItemOutcome } from './protocol.ts';
import { runBatch } from './run-batch.ts';

export interface BatchSignerOptions {
  /** worker threads; 0 signs on the calling thread */
  workers: number;
  maxBatchSize: number;
  /** ms */
  maxBatchWaitMs: number;
  /** queued + in-flight requests beyond which new ones are refused */
  maxQueue: number;
}

interface Pending {
  req: IssueRequest;
  resolve: (r: IssueResult) => void;
  reject: (e: CastellanError) => void;
}

interface WorkerSlot {
  worker: Worker;
  known: Set<string>;
  inFlight: Map<number, Pending[]>;
}

export class BatchSigner {
  private readonly opts: BatchSignerOptions;
  private issuer: IssuerMaterial | undefined;
  private queue: Pending[] = [];
  private timer: NodeJS.Timeout | undefined;
  private slots: WorkerSlot[] = [];
  private inFlightCount = 0;
  private batchSeq = 0;
  private batches = 0;
  private issued = 0;
  private closed = false;

  constructor(opts: BatchSignerOptions) {
    this.opts = opts;
    for (let i = 0; i < opts.workers; i++) this.slots.push(this.spawn());
  }

  private spawn(): WorkerSlot {
    const worker = new Worker(new URL('./worker.ts', import.meta.url));
    worker.unref();
    const slot: WorkerSlot = { worker, known: new Set(), inFlight: new Map() };
    worker.on('message', (reply: BatchReply) => {
      const items = slot.inFlight.get(reply.batchId);
      if (!items) return;
      slot.inFlight.delete(reply.batchId);
      this.settle(items, reply.outcomes);
    });
    const fail = (why: string) => {
      // A crashed worker fails only its own batches (retryable), and is replaced.
      for (const items of slot.inFlight.values()) {
        this.inFlightCount -= items.length;
        for (const p of items) p.reject(new CastellanError('UNAVAILABLE', 'signer.worker_failed', `signing worker failed (${why}); retry`));
      }
      slot.inFlight.clear();
      const i = this.slots.indexOf(slot);
      if (i >= 0 && !this.closed) this.slots[i] = this.spawn();
    };
    worker.on('error', (e) => fail(e.message));
    worker.on('exit', (code) => {
      if (!this.closed) fail(`exit ${code}`);
    });
    return slot;
  }

  /** Batches cut from now on are signed by `m`. */
  setIssuer(m: IssuerMaterial): void {
    this.issuer = m;
  }

  issue(req: Omit<IssueRequest, 'now'> & { now?: number }): Promise<IssueResult> {
    if (this.closed) return Promise.reject(new CastellanError('UNAVAILABLE', 'signer.closed', 'the CA is shutting down'));
    if (!this.issuer) return Promise.reject(new CastellanError('UNAVAILABLE', 'signer.no_issuer', 'the CA has no signing authority yet'));
    if (this.queue.length + this.inFlightCount >= this.opts.maxQueue) {
      return Promise.reject(new CastellanError('RESOURCE_EXHAUSTED', 'signer.queue_full', 'the CA is at capacity; retry with backoff'));
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ req: { ...req, now: req.now ?? Date.now() }, resolve, reject });
      if (this.queue.length >= this.opts.maxBatchSize) this.flush();
      else this.timer ??= setTimeout(() => this.flush(), this.opts.maxBatchWaitMs);
    });
  }

  private flush(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    while (this.queue.length > 0) {
      const items = this.queue.splice(0, this.opts.maxBatchSize);
      this.dispatch(items, this.issuer!);
    }
  }

  private dispatch(items: Pending[], issuer: IssuerMaterial): void {
    this.batches++;
    this.inFlightCount += items.length;
    if (this.slots.length === 0) {
      // In-thread mode: yield to the event loop between batches.
      setImmediate(() => this.settle(items, runBatch(issuer, items.map((p) => p.req))));
      return;
    }
    let slot = this.slots[0]!;
    for (const s of this.slots) if (s.inFlight.size < slot.inFlight.size) slot = s;
    const batchId = ++this.batchSeq;
    const msg: BatchMessage = { batchId, issuerId: issuer.id, items: items.map((p) => p.req) };
    if (!slot.known.has(issuer.id)) {
      msg.issuer = issuer;
      slot.known.add(issuer.id);
    }
    slot.inFlight.set(batchId, items);
    slot.worker.postMessage(msg);
  }

  private settle(items: Pending[], outcomes: ItemOutcome[]): void {
    this.inFlightCount -= items.length;
    items.forEach((p, i) => {
      const o = outcomes[i];
      if (o?.ok) {
        this.issued++;
        // Structured clone turns Buffers into plain Uint8Arrays; keep the type honest.
        p.resolve({ ...o.result, certDer: Buffer.from(o.result.certDer) });
      } else if (o) p.reject(new CastellanError(o.kind, o.code, o.message));
      else p.reject(new CastellanError('INTERNAL', 'signer.no_outcome', 'internal error: no result for this request'));
    });
  }

  stats(): { queued: number; inFlight: number; batches: number; issued: number } {
    return { queued: this.queue.length, inFlight: this.inFlightCount, batches: this.batches, issued: this.issued };
  }

  /** Signs what is queued, waits for in-flight batches, then stops the workers. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.flush();
    const deadline = Date.now() + 10_000;
    while (this.inFlightCount > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    this.closed = true;
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
    this.slots = [];
  }
}
