/**
 * BatchSigner: one result per request, batches signed by one issuer snapshot
 * (a rotation never splits a batch), nothing lost or mixed under concurrent
 * rotation, back-pressure, shutdown — in-thread and over worker threads.
 */
import { X509Certificate } from 'node:crypto';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BatchSigner, type BatchReport, type BatchSignerOptions } from '../../src/ca/signer/index.ts';
import type { IssueResult } from '../../src/ca/issue.ts';
import { FakeClock } from '../../src/platform/clock.ts';
import { CastellanError } from '../../src/platform/errors.ts';
import { makeCa, opensslCsr, peculiarCsr, type TestCa } from '../pki/helpers.ts';

const ID = 'spiffe://cluster.local/ns/default/sa/web';
const HOUR = 3600_000;

let cas: TestCa[] = [];
let csrs: string[] = [];
const signers: BatchSigner[] = [];

beforeAll(async () => {
  cas = await Promise.all([makeCa(), makeCa({ keyType: 'ec-p384' }), makeCa(), makeCa({ keyType: 'rsa-2048' }), makeCa()]);
  csrs = [opensslCsr({ uris: [ID] }).csrPem, opensslCsr().csrPem];
  for (let i = 0; i < 30; i++) csrs.push((await peculiarCsr(i % 2 ? { uris: [ID] } : {})).csrPem);
}, 60_000);

afterEach(async () => {
  await Promise.all(signers.splice(0).map((s) => s.close()));
});

function signer(o: Partial<BatchSignerOptions>, reports?: BatchReport[]): BatchSigner {
  const s = new BatchSigner({ workers: 0, maxBatchSize: 16, maxBatchWaitMs: 2, maxQueue: 10_000, ...o, onBatch: reports ? (b) => reports.push(b) : undefined });
  signers.push(s);
  return s;
}

async function settleAll<T>(ps: Promise<T>[]): Promise<({ ok: true; value: T } | { ok: false; error: CastellanError })[]> {
  return Promise.all(ps.map((p) => p.then((value) => ({ ok: true as const, value }), (error: CastellanError) => ({ ok: false as const, error }))));
}

/** The certificate really was signed by the CA named in `issuerId`. */
function signedBy(r: IssueResult): boolean {
  const ca = cas.find((c) => c.material.id === r.issuerId)!;
  return new X509Certificate(Buffer.from(r.certDer)).verify(new X509Certificate(Buffer.from(ca.certDer)).publicKey);
}

for (const workers of [0, 2]) {
  describe(`BatchSigner (workers: ${workers})`, () => {
    it('ok/one-result-per-request-bad-csrs-fail-alone', async () => {
      const reports: BatchReport[] = [];
      const s = signer({ workers, maxBatchSize: 8 }, reports);
      s.setIssuer(cas[0]!.material);
      const reqs = Array.from({ length: 40 }, (_, i) =>
        i % 5 === 0 ? { csrPem: 'garbage', spiffeId: ID, ttlMs: HOUR } : i % 7 === 0 ? { csrPem: csrs[i % csrs.length]!, spiffeId: 'spiffe://cluster.local/ns/x/sa/y', ttlMs: HOUR } : { csrPem: csrs[i % csrs.length]!, spiffeId: ID, ttlMs: HOUR },
      );
      const out = await settleAll(reqs.map((r) => s.issue(r)));
      out.forEach((o, i) => {
        if (i % 5 === 0) expect(o.ok || o.error.code).toBe('csr.malformed');
        else if (i % 7 === 0 && reqs[i]!.csrPem.includes('BEGIN') && !o.ok) expect(o.error.code).toBe('csr.identity_mismatch');
        else {
          expect(o.ok).toBe(true);
          if (o.ok) {
            expect(o.value.issuerId).toBe(cas[0]!.material.id);
            expect(Buffer.isBuffer(o.value.certDer)).toBe(true);
            expect(signedBy(o.value)).toBe(true);
          }
        }
      });
      // Every batch reported, sizes add up, batches bounded by maxBatchSize.
      expect(reports.reduce((n, b) => n + b.size, 0)).toBe(40);
      expect(Math.max(...reports.map((b) => b.size))).toBeLessThanOrEqual(8);
      expect(reports.reduce((n, b) => n + b.serials.length, 0)).toBe(out.filter((o) => o.ok).length);
      expect(s.stats()).toMatchObject({ queued: 0, inFlight: 0, issued: out.filter((o) => o.ok).length, batches: reports.length });
    });

    it('ok/a-request-whose-caller-went-away-is-dropped-unsigned', async () => {
      const reports: BatchReport[] = [];
      // Batches larger than the queue: nothing is cut before the end of this turn.
      const s = signer({ workers, maxBatchSize: 64, maxBatchWaitMs: 0 }, reports);
      s.setIssuer(cas[0]!.material);
      const gone = Array.from({ length: 40 }, (_, i) => (i % 2 ? new AbortController() : undefined));
      const pending = gone.map((g, i) => s.issue({ csrPem: csrs[(i % 15) * 2]!, spiffeId: ID, ttlMs: HOUR, signal: g?.signal }));
      // The callers go away while their requests wait in the queue (before the end of this turn).
      for (const g of gone) g?.abort();
      const out = await settleAll(pending);
      out.forEach((o, i) => {
        if (i % 2) expect(o.ok ? 'signed' : `${o.error.kind} ${o.error.code}`).toBe('CANCELLED signer.abandoned');
        else expect(o.ok && signedBy(o.value)).toBe(true);
      });
      // Only the 20 live requests reached a batch and were signed.
      expect(reports.reduce((n, b) => n + b.size, 0)).toBe(20);
      expect(s.stats()).toMatchObject({ queued: 0, inFlight: 0, issued: 20, abandoned: 20 });
      // A queue of nothing but abandoned requests cuts no batch and drains.
      const all = Array.from({ length: 5 }, () => new AbortController());
      const p2 = all.map((g) => s.issue({ csrPem: csrs[0]!, spiffeId: ID, ttlMs: HOUR, signal: g.signal }));
      for (const g of all) g.abort();
      expect((await settleAll(p2)).every((o) => !o.ok && o.error.code === 'signer.abandoned')).toBe(true);
      expect(reports.reduce((n, b) => n + b.size, 0)).toBe(20);
      expect(s.stats()).toMatchObject({ queued: 0, inFlight: 0, abandoned: 25 });
    });

    it('ok/a-rotation-never-splits-a-batch', async () => {
      const reports: BatchReport[] = [];
      const s = signer({ workers, maxBatchSize: 8, maxBatchWaitMs: 60_000 }, reports);
      const [a, b] = [cas[0]!.material, cas[2]!.material];
      s.setIssuer(a);
      const first = Array.from({ length: 4 }, (_, i) => s.issue({ csrPem: csrs[i]!, spiffeId: ID, ttlMs: HOUR }));
      expect(s.stats()).toMatchObject({ queued: 4, inFlight: 0 }); // not cut yet: waiting for company
      s.setIssuer(b);
      // Cut when the 8th request arrives: all 8 signed by the issuer current then.
      const second = Array.from({ length: 4 }, (_, i) => s.issue({ csrPem: csrs[i + 4]!, spiffeId: ID, ttlMs: HOUR }));
      expect(s.stats()).toMatchObject({ queued: 0, inFlight: 8 });
      const all = await Promise.all([...first, ...second]);
      expect(all.map((r) => r.issuerId)).toEqual(Array(8).fill(b.id));
      // Requests already cut keep their snapshot even if the issuer changes before they are signed.
      const cut = Array.from({ length: 8 }, (_, i) => s.issue({ csrPem: csrs[i]!, spiffeId: ID, ttlMs: HOUR }));
      expect(s.stats()).toMatchObject({ queued: 0, inFlight: 8 });
      s.setIssuer(a);
      expect((await Promise.all(cut)).map((r) => r.issuerId)).toEqual(Array(8).fill(b.id));
      // Every batch had one issuer; with workers the cut is spread over them (never above maxBatchSize).
      expect(reports.every((r) => r.issuerId === b.id && r.size <= 8)).toBe(true);
      expect(reports.reduce((n, r) => n + r.size, 0)).toBe(16);
      if (workers === 0) expect(reports.map((r) => r.size)).toEqual([8, 8]);
      else expect(reports.map((r) => r.size)).toEqual([4, 4, 4, 4]);
    });

    it('ok/requests wait uncut while every worker is busy, then take the issuer current at their cut', async () => {
      if (workers === 0) return; // in-thread mode cuts at once
      const reports: BatchReport[] = [];
      const s = signer({ workers, maxBatchSize: 4, maxBatchWaitMs: 0 }, reports);
      const [a, b] = [cas[0]!.material, cas[2]!.material];
      s.setIssuer(a);
      // The 4th request fills a batch: cut at once and spread over both workers (2 + 2).
      const busy = Array.from({ length: 4 }, (_, i) => s.issue({ csrPem: csrs[i]!, spiffeId: ID, ttlMs: HOUR }));
      expect(s.stats()).toMatchObject({ queued: 0, inFlight: 4 });
      const waiting = Array.from({ length: 10 }, (_, i) => s.issue({ csrPem: csrs[i]!, spiffeId: ID, ttlMs: HOUR }));
      expect(s.stats()).toMatchObject({ queued: 10, inFlight: 4 });
      s.setIssuer(b);
      expect((await Promise.all(busy)).every((r) => r.issuerId === a.id)).toBe(true);
      expect((await Promise.all(waiting)).every((r) => r.issuerId === b.id)).toBe(true);
      for (const r of reports) expect(r.size).toBeLessThanOrEqual(4);
    });

    it('ok/concurrent-rotation-loses-nothing-mixes-nothing', async () => {
      const reports: BatchReport[] = [];
      const clock = new FakeClock(Date.now());
      const s = signer({ workers, maxBatchSize: 16, maxBatchWaitMs: 1, clock }, reports);
      s.setIssuer(cas[0]!.material);
      const N = workers ? 1500 : 600;
      const ps: Promise<IssueResult>[] = [];
      let rotations = 0;
      // Requests arrive in bursts over several event-loop turns while the issuer rotates in between.
      for (let i = 0, k = 0; i < N; k++) {
        const burst = 1 + ((k * 7919) % 37);
        for (let j = 0; j < burst && i < N; j++, i++) ps.push(s.issue({ csrPem: csrs[i % csrs.length]!, spiffeId: ID, ttlMs: HOUR }));
        if (k % 2 === 0) {
          s.setIssuer(cas[k % cas.length]!.material);
          rotations++;
        }
        if (k % 3 === 0) {
          // a partial batch's window ends every third turn (on the test's clock)
          clock.advance(1);
          await new Promise((r) => setImmediate(r));
        }
      }
      clock.advance(1);
      const out = await settleAll(ps);
      expect(rotations).toBeGreaterThan(10);
      const failures = out.filter((o) => !o.ok);
      expect(failures).toEqual([]);
      const results = out.map((o) => (o.ok ? o.value : undefined)!);
      // nothing lost: N distinct serials
      const bySerial = new Map(results.map((r) => [r.serialHex, r]));
      expect(bySerial.size).toBe(N);
      // nothing mixed: every batch's certificates carry that batch's issuer, and really were signed by it
      expect(reports.reduce((n, b) => n + b.serials.length, 0)).toBe(N);
      const issuersUsed = new Set<string>();
      for (const b of reports) {
        issuersUsed.add(b.issuerId);
        for (const serial of b.serials) expect(bySerial.get(serial)!.issuerId).toBe(b.issuerId);
      }
      expect(issuersUsed.size).toBeGreaterThanOrEqual(2);
      for (let i = 0; i < results.length; i += 7) expect(signedBy(results[i]!)).toBe(true);
    }, 120_000);

    it('ok/a-partial-batch-is-cut-when-its-window-ends-on-the-injected-clock', async () => {
      const clock = new FakeClock(Date.now());
      const reports: BatchReport[] = [];
      const s = signer({ workers, maxBatchSize: 8, maxBatchWaitMs: 50, clock }, reports);
      s.setIssuer(cas[0]!.material);
      const ps = Array.from({ length: 3 }, (_, i) => s.issue({ csrPem: csrs[i]!, spiffeId: ID, ttlMs: HOUR }));
      expect(clock.pendingTimers).toBe(1); // one window for the batch, not one per request
      clock.advance(49);
      await new Promise((r) => setImmediate(r));
      expect(s.stats()).toMatchObject({ queued: 3, inFlight: 0, batches: 0 });
      clock.advance(1);
      expect(s.stats()).toMatchObject({ queued: 0, inFlight: 3 });
      const out = await Promise.all(ps);
      // Requests that bring no time are issued at the clock's now, when they were queued.
      for (const r of out) expect(r.notAfter).toBe(Math.floor((clock.now() - 50 + HOUR) / 1000) * 1000);
      // The batch's sign time is the injected clock's: it did not move while signing.
      // (with workers the three are spread over both, 2 + 1, settling in either order)
      expect(reports.map((r) => [r.size, r.signMs]).sort()).toEqual(workers ? [[1, 0], [2, 0]] : [[3, 0]]);
      // A full batch is cut at once and disarms the window.
      const full = Array.from({ length: 8 }, (_, i) => s.issue({ csrPem: csrs[i]!, spiffeId: ID, ttlMs: HOUR }));
      expect(s.stats()).toMatchObject({ queued: 0, inFlight: 8 });
      expect(clock.pendingTimers).toBe(0);
      await Promise.all(full);
    });

    it('fail/queue_full-is-resource-exhausted', async () => {
      const clock = new FakeClock(Date.now());
      const s = signer({ workers, maxBatchSize: 4, maxBatchWaitMs: 50, maxQueue: 10, clock });
      s.setIssuer(cas[0]!.material);
      const pending = settleAll(Array.from({ length: 15 }, (_, i) => s.issue({ csrPem: csrs[i % csrs.length]!, spiffeId: ID, ttlMs: HOUR })));
      // the last partial batch waits out its window, on the test's clock
      clock.advance(50);
      const out = await pending;
      expect(out.filter((o) => o.ok)).toHaveLength(10);
      for (const o of out.slice(10)) expect(!o.ok && [o.error.kind, o.error.code]).toEqual(['RESOURCE_EXHAUSTED', 'signer.queue_full']);
      // capacity comes back once drained
      const again = s.issue({ csrPem: csrs[0]!, spiffeId: ID, ttlMs: HOUR });
      clock.advance(50);
      await expect(again).resolves.toMatchObject({ issuerId: cas[0]!.material.id });
    });

    it('ok/close-drains-then-refuses', async () => {
      const s = signer({ workers, maxBatchSize: 64, maxBatchWaitMs: 60_000 });
      s.setIssuer(cas[1]!.material);
      const ps = Array.from({ length: 30 }, (_, i) => s.issue({ csrPem: csrs[i % csrs.length]!, spiffeId: ID, ttlMs: HOUR }));
      await s.close();
      expect((await settleAll(ps)).every((o) => o.ok)).toBe(true);
      await expect(s.issue({ csrPem: csrs[0]!, spiffeId: ID, ttlMs: HOUR })).rejects.toMatchObject({ kind: 'UNAVAILABLE', code: 'signer.closed' });
    });

    it('fail/broken-issuer-fails-its-batch-only-then-recovers', async () => {
      const s = signer({ workers, maxBatchSize: 4, maxBatchWaitMs: 1 });
      s.setIssuer({ ...cas[0]!.material, id: 'broken', keyPkcs8Der: new Uint8Array([0x30, 0x00]) });
      const bad = await settleAll(Array.from({ length: 4 }, () => s.issue({ csrPem: csrs[0]!, spiffeId: ID, ttlMs: HOUR })));
      for (const o of bad) expect(!o.ok && o.error.kind).toBe('INTERNAL');
      for (const o of bad) expect(!o.ok && o.error.message).not.toMatch(/pkcs8|asn1|decoder/i);
      s.setIssuer(cas[0]!.material);
      await expect(s.issue({ csrPem: csrs[0]!, spiffeId: ID, ttlMs: HOUR })).resolves.toMatchObject({ issuerId: cas[0]!.material.id });
    });
  });
}

describe('BatchSigner without an issuer / bad options', () => {
  it('fail/no-issuer-is-unavailable', async () => {
    const s = signer({});
    await expect(s.issue({ csrPem: csrs[0]!, spiffeId: ID, ttlMs: HOUR })).rejects.toMatchObject({ kind: 'UNAVAILABLE', code: 'signer.no_issuer' });
  });
  it('fail/options', () => {
    expect(() => new BatchSigner({ workers: 0, maxBatchSize: 0, maxBatchWaitMs: 1, maxQueue: 1 })).toThrow(CastellanError);
  });
});
