/**
 * Load generator for bench/grpc-e2e.ts, run as its own process so the
 * server's CPU time is the server's alone. Reads a job (JSON) on argv[2]:
 * { target, rootPem, requests: [{csr, token}], mode: 'closed'|'open'|'burst',
 *   concurrency, ratePerSec, durationMs, total }
 * closed: `concurrency` calls in flight for durationMs; open: ratePerSec
 * arrivals for durationMs; burst: `total` calls started at once.
 * and prints one JSON line: { done, errors, codes, latenciesMs (sorted sample), elapsedMs }.
 *
 * Optional (test/load uses them; benchmarks leave them out and nothing changes):
 * each request may carry `kind` (a label) and `validitySec` (default 3600);
 * `detail: true` adds to the result `byKind` ({kind: {code: count}}, OK
 * included), `serials` (hex serial of every issued leaf) and `samples` (the
 * first few status details per kind and code).
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import { IstioCertificateRequestSchema, IstioCertificateService } from '../../src/gen/istio/v1/auth/ca_pb.js';
import { createClient } from '../../src/grpc/service.ts';

interface Job {
  target: string;
  rootPem: string;
  requests: { csr: string; token: string; kind?: string; validitySec?: number }[];
  /** per-kind outcome counts, issued serials and sample details in the result */
  detail?: boolean;
  mode: 'closed' | 'open' | 'burst';
  /** burst: calls started at once */
  total?: number;
  /** per-call deadline, ms (default 30 000) */
  deadlineMs?: number;
  concurrency: number;
  ratePerSec: number;
  durationMs: number;
  channels: number;
}

const job = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as Job;
const clients = Array.from({ length: job.channels }, (_, i) =>
  createClient(IstioCertificateService, job.target, grpc.credentials.createSsl(Buffer.from(job.rootPem)), {
    'grpc.ssl_target_name_override': 'localhost',
    'grpc.default_authority': 'localhost',
    'grpc.channel_id': i, // distinct channels, not one shared subchannel
  } as grpc.ClientOptions),
);
const reqs = job.requests.map((r) => ({ msg: create(IstioCertificateRequestSchema, { csr: r.csr, validityDuration: BigInt(r.validitySec ?? 3600) }), token: r.token, kind: r.kind ?? '' }));

let next = 0;
let done = 0;
let errors = 0;
const codes: Record<string, number> = {};
const lat: number[] = [];
let byKind: Record<string, Record<string, number>> = {};
let serials: string[] = [];
let samples: { kind: string; code: string; details: string }[] = [];
const sampled = new Map<string, number>();
function record(kind: string, code: string, details?: string): void {
  if (!job.detail) return;
  const k = (byKind[kind] ??= {});
  k[code] = (k[code] ?? 0) + 1;
  if (details !== undefined) {
    const key = `${kind}/${code}`;
    const n = sampled.get(key) ?? 0;
    if (n < 3) {
      sampled.set(key, n + 1);
      samples.push({ kind, code, details: details.slice(0, 300) });
    }
  }
}

async function one(): Promise<void> {
  const i = next++;
  const r = reqs[i % reqs.length]!;
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${r.token}`);
  const t0 = performance.now();
  try {
    const res = await clients[i % clients.length]!.createCertificate(r.msg, { metadata: md, deadline: Date.now() + (job.deadlineMs ?? 30_000) });
    done++;
    if (job.detail) {
      record(r.kind, 'OK');
      serials.push(new X509Certificate(res.certChain[0]!).serialNumber);
    }
  } catch (e) {
    errors++;
    const c = grpc.status[(e as grpc.ServiceError).code] ?? 'UNKNOWN';
    codes[c] = (codes[c] ?? 0) + 1;
    record(r.kind, c, (e as grpc.ServiceError).details ?? String(e));
  }
  lat.push(performance.now() - t0);
}

// Warm up connections (TLS handshakes) before the clock starts.
await Promise.all(clients.map((_, i) => { next = i; return one(); }));
done = 0; errors = 0; lat.length = 0; next = 0;
if (job.detail) {
  // only the measured calls in the detailed result (the warm-up's codes stay in `codes` otherwise, as before)
  for (const k of Object.keys(codes)) delete codes[k];
  byKind = {}; serials = []; samples = []; sampled.clear();
}
process.stdout.write('READY\n');
await new Promise<void>((resolve) => process.stdin.once('data', () => resolve()));

const start = performance.now();
const end = start + job.durationMs;
if (job.mode === 'burst') {
  await Promise.all(Array.from({ length: job.total ?? 0 }, () => one()));
} else if (job.mode === 'closed') {
  await Promise.all(
    Array.from({ length: job.concurrency }, async () => {
      while (performance.now() < end) await one();
    }),
  );
} else {
  const interval = 1000 / job.ratePerSec;
  const inflight = new Set<Promise<void>>();
  let due = start;
  while (performance.now() < end) {
    const now = performance.now();
    while (due <= now) {
      const p = one().finally(() => inflight.delete(p));
      inflight.add(p);
      due += interval;
    }
    await new Promise((r) => setTimeout(r, Math.max(0, Math.min(2, due - performance.now()))));
  }
  await Promise.all(inflight);
}
const elapsedMs = performance.now() - start;
lat.sort((a, b) => a - b);
// At most 20 000 evenly spaced samples of the sorted latencies (percentiles stay exact enough).
const step = Math.max(1, Math.ceil(lat.length / 20_000));
const sample = lat.filter((_, i) => i % step === 0);
for (const c of clients) c.close();
// stdout is a pipe (asynchronous): exit only once the line is flushed.
const detail = job.detail ? { byKind, serials, samples } : {};
process.stdout.write(JSON.stringify({ done, errors, codes, latenciesMs: sample, elapsedMs, ...detail }) + '\n', () => process.exit(0));
