/**
 * security.md D2 / issue 8 scope 3, as one function shared by the full load
 * test (test/load/load.test.ts, `npm run test:load`, LOAD_N=10000 by
 * default) and its CI-sized copy inside `npm test`
 * (test/hardening/load-small.test.ts):
 *
 * - one real `castellan server` process on loopback, TLS, JWT auth against a
 *   development JWKS, its default signer (a worker per core), default
 *   queue bound and per-identity rate limit; the per-peer limit is off
 *   because one load generator on one address plays every workload;
 * - a separate load-generator process (bench/lib/loadgen.ts, burst mode)
 *   that starts all N CreateCertificate calls at once over 16 channels,
 *   from `identities` distinct workloads, valid and invalid mixed: bad
 *   tokens (garbage, expired, foreign key, wrong audience), bad CSRs
 *   (garbage, broken signature, RSA-1024), a CSR for another identity, a
 *   TTL over the maximum;
 * - meanwhile this process polls /healthz (each answer timed) and samples
 *   the server's RSS (/proc) and heap (/metrics).
 *
 * The report says, per kind of request, which statuses came back; the
 * callers assert on it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, sign as cryptoSign } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { makeCsrs } from '../../bench/lib/fixtures.ts';
import { lineReader, percentile, processRssBytes } from '../../bench/lib/proc.ts';
import * as vitest from 'vitest';
import { DevTokenIssuer } from '../../src/identity/dev-issuer.ts';
import { tempDir } from '../support/tmp.ts';

const ROOT = new URL('../..', import.meta.url).pathname;
const NODE = join(ROOT, 'node_modules/.bin/node');
const BIN = join(ROOT, 'bin/castellan.js');

export type Kind = 'valid' | 'bad-token' | 'bad-csr' | 'wrong-identity' | 'bad-ttl';
/** The one status each invalid kind must get; valid calls: OK or RESOURCE_EXHAUSTED. */
export const EXPECTED: Record<Exclude<Kind, 'valid'>, string> = {
  'bad-token': 'UNAUTHENTICATED',
  'bad-csr': 'INVALID_ARGUMENT',
  'wrong-identity': 'PERMISSION_DENIED',
  'bad-ttl': 'INVALID_ARGUMENT',
};
const MIX: [Kind, number][] = [['valid', 0.6], ['bad-token', 0.15], ['bad-csr', 0.1], ['wrong-identity', 0.1], ['bad-ttl', 0.05]];

export interface LoadOptions {
  n: number;
  identities: number;
  /** extra `castellan server` flags */
  serverArgs?: string[];
  /** per-call deadline in the load generator, ms */
  deadlineMs?: number;
  log?: (line: string) => void;
}

export interface LoadReport {
  n: number;
  identities: number;
  /** requests sent, per kind */
  sent: Record<Kind, number>;
  /** statuses received, per kind */
  byKind: Record<string, Record<string, number>>;
  samples: { kind: string; code: string; details: string }[];
  serials: { issued: number; unique: number };
  elapsedMs: number;
  throughputPerSec: number;
  latencyMs: { p50: number; p99: number; max: number };
  rss: { beforeBytes: number; peakBytes: number; afterBytes: number; hwmBytes: number };
  heapUsed: { beforeBytes: number; peakBytes: number };
  health: { polls: number; failures: number; maxMs: number; p99Ms: number; slowOver100ms: number; controlMaxMs: number; ownLagMaxMs: number };
  /** every /healthz poll with the idle control probe sent at the same instant */
  healthPairs: { healthMs: number; controlMs: number }[];
  /** the server's own event-loop delay (nodejs_eventloop_lag_max_seconds, max over the samples), ms */
  eventLoopLagMaxMs: number;
  serverAlive: boolean;
  serverExit: { code: number | null; signal: string | null } | undefined;
  /** log records of escaped errors (D4 net), handler crashes or fatal logs */
  bugs: string[];
  metrics: Record<string, number>;
}

/** Small deterministic PRNG so the mix is the same on every run. */
function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

function httpGet(url: string, timeoutMs: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`timeout after ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

function metricValue(text: string, name: string): number {
  let sum = 0;
  let seen = false;
  for (const m of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, 'gm'))) {
    sum += Number(m[1]);
    seen = true;
  }
  return seen ? sum : NaN;
}

function vmHwmBytes(pid: number): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}


export async function runLoad(o: LoadOptions): Promise<LoadReport> {
  const log = o.log ?? ((l: string) => console.log(l));
  const tmp = tempDir('castellan-load-');
  let server: ChildProcess | undefined;
  let lg: ChildProcess | undefined;
  let controlProc: ChildProcess | undefined;
  let poller: ChildProcess | undefined;
  try {
    // ---- material: one CSR and one token per identity, and the invalid variants ----
    const t0 = performance.now();
    const issuer = await DevTokenIssuer.create({ dir: join(tmp.path, 'issuer') });
    const stranger = await DevTokenIssuer.create({ dir: join(tmp.path, 'stranger'), issuer: issuer.issuer });
    const ids = Array.from({ length: o.identities }, (_, i) => ({ ns: `load-${i % 50}`, sa: `workload-${i}` }));
    const id = (i: number) => `spiffe://cluster.local/ns/${ids[i]!.ns}/sa/${ids[i]!.sa}`;
    const csrs: string[] = [];
    const tokens: string[] = [];
    for (let i = 0; i < o.identities; i++) {
      // half name their identity in the CSR, half leave it to the CA (both are valid)
      csrs.push((await makeCsrs(1, i % 2 === 0 ? id(i) : undefined))[0]!);
      tokens.push(await issuer.mint({ namespace: ids[i]!.ns, serviceAccount: ids[i]!.sa }));
    }
    const badTokens = [
      'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl',
      await issuer.mint({ namespace: 'load-0', serviceAccount: 'expired', now: Date.now() - 7200_000, ttlSeconds: 60 }),
      await stranger.mint({ namespace: 'load-0', serviceAccount: 'stranger' }),
      await issuer.mint({ namespace: 'load-0', serviceAccount: 'other-aud', audiences: ['https://kubernetes.default.svc'] }),
    ];
    // a CSR whose signature does not verify: a valid one with a signature byte flipped
    const broken = (() => {
      const der = Buffer.from(csrs[0]!.replace(/-----[^-]+-----|\s/g, ''), 'base64');
      der[der.length - 5] = der[der.length - 5]! ^ 0x41;
      return `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    })();
    // RSA-1024 (key policy): built by hand, no CSR library would make it
    const rsa1024 = (() => {
      const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 1024 });
      const spki = publicKey.export({ type: 'spki', format: 'der' });
      const tlv = (tag: number, body: Buffer): Buffer => {
        const len = body.length < 0x80 ? Buffer.of(body.length) : body.length < 0x100 ? Buffer.of(0x81, body.length) : Buffer.of(0x82, body.length >> 8, body.length & 0xff);
        return Buffer.concat([Buffer.of(tag), len, body]);
      };
      const cri = tlv(0x30, Buffer.concat([Buffer.from('020100', 'hex'), Buffer.from('3000', 'hex'), spki, Buffer.from('a000', 'hex')]));
      const sig = cryptoSign('sha256', cri, privateKey);
      const der = tlv(0x30, Buffer.concat([cri, Buffer.from('300d06092a864886f70d01010b0500', 'hex'), tlv(0x03, Buffer.concat([Buffer.of(0), sig]))]));
      return `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    })();
    const badCsrs = ['-----BEGIN CERTIFICATE REQUEST-----\nTUlJQmFk\n-----END CERTIFICATE REQUEST-----\n', broken, rsa1024, 'not a CSR at all'];
    // a CSR naming identity j, sent with the token of i (j = i + 1)
    const namedCsr: string[] = [];
    for (let k = 0; k < Math.min(64, o.identities); k++) namedCsr.push((await makeCsrs(1, id((k + 1) % o.identities)))[0]!);

    const rnd = prng(0x10ad);
    const sent: Record<Kind, number> = { valid: 0, 'bad-token': 0, 'bad-csr': 0, 'wrong-identity': 0, 'bad-ttl': 0 };
    const requests: { csr: string; token: string; kind: Kind; validitySec?: number }[] = [];
    for (let c = 0; c < o.n; c++) {
      let u = rnd();
      let kind: Kind = 'valid';
      for (const [k, w] of MIX) {
        if (u < w) {
          kind = k;
          break;
        }
        u -= w;
      }
      const i = c % o.identities;
      sent[kind]++;
      if (kind === 'valid') requests.push({ csr: csrs[i]!, token: tokens[i]!, kind });
      else if (kind === 'bad-token') requests.push({ csr: csrs[i]!, token: badTokens[c % badTokens.length]!, kind });
      else if (kind === 'bad-csr') requests.push({ csr: badCsrs[c % badCsrs.length]!, token: tokens[i]!, kind });
      else if (kind === 'wrong-identity') {
        const k = c % namedCsr.length;
        requests.push({ csr: namedCsr[k]!, token: tokens[k]!, kind });
      } else requests.push({ csr: csrs[i]!, token: tokens[i]!, kind, validitySec: 400 * 86400 });
    }
    log(`load: ${o.n} calls from ${o.identities} identities (${Object.entries(sent).map(([k, v]) => `${k} ${v}`).join(', ')}); material in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    // ---- the server ----
    // LOAD_SERVER_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" profiles the server, LOAD_SERVER_ARGS
    // adds server flags (e.g. "--queue-max 500"): for investigations
    const nodeArgs = (process.env.LOAD_SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean);
    server = spawn(
      NODE,
      [...nodeArgs, BIN, 'server', '--data-dir', join(tmp.path, 'ca'), '--grpc-listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0', '--jwks-file', issuer.jwksPath, '--jwt-issuer', issuer.issuer,
        '--rate-limit-per-peer', '0', '--shutdown-grace', '5s', ...(o.serverArgs ?? []), ...(process.env.LOAD_SERVER_ARGS ?? '').split(' ').filter(Boolean)],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    const srv = server;
    let exit: LoadReport['serverExit'];
    srv.once('exit', (code, signal) => (exit = { code, signal }));
    const bugs: string[] = [];
    let listening: { grpc: string; http: string } | undefined;
    let logLines = 0;
    createInterface({ input: srv.stderr! }).on('line', (l) => {
      logLines++;
      let j: Record<string, unknown>;
      try {
        j = JSON.parse(l) as Record<string, unknown>;
      } catch {
        bugs.push(`non-JSON stderr: ${l.slice(0, 300)}`);
        return;
      }
      if (j.event === 'server.listening') listening = { grpc: j.grpc as string, http: j.http as string };
      if (j.level === 'fatal' || j.level === 'error' || /crash|uncaught|unhandled/.test(String(j.event))) bugs.push(l.slice(0, 500));
    });
    const startBy = Date.now() + 60_000;
    while (!listening) {
      if (exit || Date.now() > startBy) throw new Error(`server did not start (${JSON.stringify(exit)}): ${bugs.join('\n')}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const health = `http://${listening.http}/healthz`;
    // the control probe: a trivial HTTP server in its own, otherwise idle process
    controlProc = spawn(NODE, ['-e', "const s=require('node:http').createServer((q,r)=>r.end('ok')).listen(0,'127.0.0.1',()=>console.log(s.address().port))"], { stdio: ['ignore', 'pipe', 'inherit'] });
    const controlPort = await new Promise<number>((resolve, reject) => {
      controlProc!.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
      controlProc!.once('exit', (c) => reject(new Error(`control probe exited (${c})`)));
    });
    const control = `http://127.0.0.1:${controlPort}/`;
    const metricsUrl = `http://${listening.http}/metrics`;
    const rootPem = readFileSync(join(tmp.path, 'ca', 'root-cert.pem'), 'utf8');

    // ---- the load generator ----
    const jobFile = join(tmp.path, 'job.json');
    writeFileSync(jobFile, JSON.stringify({ target: listening.grpc, rootPem, requests, mode: 'burst', total: o.n, channels: 16, concurrency: 0, ratePerSec: 0, durationMs: 0, deadlineMs: o.deadlineMs ?? 120_000, detail: true }));
    lg = spawn(NODE, [join(ROOT, 'bench/lib/loadgen.ts'), jobFile], { stdio: ['pipe', 'pipe', 'inherit'] });
    const gen = lg;
    const nextLine = lineReader(gen);
    if ((await nextLine()) !== 'READY') throw new Error('load generator did not get ready');
    // after the generator's warm-up calls (one per channel), so the counters below are the burst's own
    const m0 = (await httpGet(metricsUrl, 5000)).body;

    // ---- monitors: /healthz answered and timed, RSS and heap sampled ----
    const rssBefore = processRssBytes(srv.pid!);
    const heapBefore = metricValue(m0, 'nodejs_heap_size_used_bytes');
    let monitoring = true;
    // the /healthz prober runs in its own process (health-poller.ts), next to an idle control endpoint
    poller = spawn(NODE, [join(ROOT, 'test/load/health-poller.ts'), health, control], { stdio: ['pipe', 'pipe', 'inherit'] });
    const pollerOut = createInterface({ input: poller.stdout! })[Symbol.asyncIterator]();
    if ((await pollerOut.next()).value !== 'READY') throw new Error('health poller did not start');
    let rssPeak = rssBefore;
    const rssTimer = setInterval(() => {
      try {
        rssPeak = Math.max(rssPeak, processRssBytes(srv.pid!));
      } catch {
        /* gone */
      }
    }, 50);
    let heapPeak = heapBefore;
    let loopLagMax = 0;
    const heapLoop = (async () => {
      while (monitoring) {
        try {
          const text = (await httpGet(metricsUrl, 5000)).body;
          heapPeak = Math.max(heapPeak, metricValue(text, 'nodejs_heap_size_used_bytes') || 0);
          loopLagMax = Math.max(loopLagMax, metricValue(text, 'nodejs_eventloop_lag_max_seconds') || 0);
        } catch {
          /* counted by the health loop */
        }
        await new Promise((r) => setTimeout(r, 500));
      }
    })();

    gen.stdin!.write('go\n');
    const res = JSON.parse(await nextLine()) as {
      done: number; errors: number; elapsedMs: number; latenciesMs: number[];
      byKind: Record<string, Record<string, number>>; serials: string[]; samples: LoadReport['samples'];
    };
    // a little longer: the server must still answer once the burst is over
    await new Promise((r) => setTimeout(r, 300));
    monitoring = false;
    clearInterval(rssTimer);
    poller.stdin!.write('stop\n');
    const polled = JSON.parse((await pollerOut.next()).value as string) as { pairs: { healthMs: number; controlMs: number; ok: boolean }[]; ownLagMaxMs: number };
    const pairs = polled.pairs;
    const healthMs = pairs.map((p) => p.healthMs);
    const healthFailures = pairs.filter((p) => !p.ok).length;
    await heapLoop;
    const mEnd = (await httpGet(metricsUrl, 5000)).body;
    const alive = exit === undefined && (await httpGet(health, 2000).then((r) => r.status === 200, () => false));
    const rssAfter = processRssBytes(srv.pid!);
    const hwm = vmHwmBytes(srv.pid!);
    srv.kill('SIGTERM');
    const exitBy = Date.now() + 20_000;
    while (!exit && Date.now() < exitBy) await new Promise((r) => setTimeout(r, 50));

    const hs = [...healthMs].sort((a, b) => a - b);
    const report: LoadReport = {
      n: o.n,
      identities: o.identities,
      sent,
      byKind: res.byKind,
      samples: res.samples,
      serials: { issued: res.serials.length, unique: new Set(res.serials).size },
      elapsedMs: res.elapsedMs,
      throughputPerSec: (res.done + res.errors) / (res.elapsedMs / 1000),
      latencyMs: { p50: percentile(res.latenciesMs, 50), p99: percentile(res.latenciesMs, 99), max: res.latenciesMs.at(-1) ?? NaN },
      rss: { beforeBytes: rssBefore, peakBytes: Math.max(rssPeak, rssAfter), afterBytes: rssAfter, hwmBytes: hwm },
      heapUsed: { beforeBytes: heapBefore, peakBytes: Math.max(heapPeak, metricValue(mEnd, 'nodejs_heap_size_used_bytes') || 0) },
      health: {
        polls: hs.length, failures: healthFailures, maxMs: hs.at(-1) ?? NaN, p99Ms: percentile(hs, 99), slowOver100ms: hs.filter((x) => x > 100).length,
        controlMaxMs: Math.max(...pairs.map((p) => p.controlMs)), ownLagMaxMs: polled.ownLagMaxMs,
      },
      healthPairs: pairs.map(({ healthMs, controlMs }) => ({ healthMs, controlMs })),
      eventLoopLagMaxMs: Math.max(loopLagMax, metricValue(mEnd, 'nodejs_eventloop_lag_max_seconds') || 0) * 1000,
      serverAlive: alive,
      serverExit: exit,
      bugs,
      metrics: {
        issued: metricValue(mEnd, 'citadel_server_success_cert_issuance_count') - (metricValue(m0, 'citadel_server_success_cert_issuance_count') || 0),
        rateLimited: metricValue(mEnd, 'castellan_rate_limited'),
        authFailures: metricValue(mEnd, 'citadel_server_authentication_failure_count'),
        logLines,
      },
    };
    const mb = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
    log(
      [
        `load: ${o.n} calls in ${(res.elapsedMs / 1000).toFixed(2)} s: ${report.throughputPerSec.toFixed(0)} calls/s, latency p50 ${report.latencyMs.p50.toFixed(0)} ms, p99 ${report.latencyMs.p99.toFixed(0)} ms, max ${report.latencyMs.max.toFixed(0)} ms`,
        `load: outcomes ${JSON.stringify(res.byKind)}`,
        `load: serials ${report.serials.unique} unique of ${report.serials.issued} issued`,
        `load: server RSS ${mb(rssBefore)} before, peak ${mb(report.rss.peakBytes)} (VmHWM ${mb(hwm)}), ${mb(rssAfter)} after; heap used ${mb(heapBefore)} before, peak ${mb(report.heapUsed.peakBytes)}`,
        `load: /healthz ${hs.length} polls, max ${report.health.maxMs.toFixed(1)} ms, p99 ${report.health.p99Ms.toFixed(1)} ms, ${report.health.slowOver100ms} over 100 ms, ${healthFailures} failed; idle control probe max ${report.health.controlMaxMs.toFixed(1)} ms, prober's own loop lag max ${report.health.ownLagMaxMs.toFixed(0)} ms; slow polls (healthz/control ms) ${JSON.stringify(pairs.filter((p) => p.healthMs > 100).map((p) => `${p.healthMs.toFixed(0)}/${p.controlMs.toFixed(0)}`))}; server event-loop lag max ${report.eventLoopLagMaxMs.toFixed(0)} ms; server alive ${alive}, exit ${JSON.stringify(exit)}`,
      ].join('\n'),
    );
    return report;
  } finally {
    if (lg && lg.exitCode === null) lg.kill('SIGKILL');
    if (controlProc && controlProc.exitCode === null) controlProc.kill('SIGKILL');
    if (poller && poller.exitCode === null) poller.kill('SIGKILL');
    if (server && server.exitCode === null && server.signalCode === null) server.kill('SIGKILL');
    tmp.cleanup();
  }
}

export interface LoadBounds {
  /** peak RSS of the server process (VmHWM), bytes */
  maxRssBytes: number;
  /** peak V8 heap used (nodejs_heap_size_used_bytes), bytes */
  maxHeapBytes: number;
  /** every /healthz answer within this, ms */
  healthMs: number;
  /** p99 of CreateCertificate latency, ms */
  p99Ms: number;
}

const MiB = 2 ** 20;

/**
 * The D2 suite: one run in beforeAll, then one test per property, so a
 * property that breaks is named by the test that fails (and one known
 * failure does not hide the others).
 */
export function loadSuite(o: LoadOptions & { bounds: LoadBounds; overload?: boolean }): void {
  const { describe, it, beforeAll, expect } = vitest;
  const title = o.overload
    ? `D2 overload: ${o.n} concurrent calls from ${o.identities} identities against a signer queue bounded far below the burst (${(o.serverArgs ?? []).join(' ')})`
    : `D2: ${o.n} concurrent CreateCertificate calls from ${o.identities} identities, valid and invalid mixed, one server process over TLS`;
  describe(title, () => {
    let r: LoadReport;
    beforeAll(async () => {
      r = await runLoad(o);
    }, 600_000);

    it('D2/the server lives: no escaped error, handler crash or fatal log; answers after the burst; exits 0 on SIGTERM', () => {
      expect(r.bugs).toEqual([]);
      expect(r.serverAlive).toBe(true);
      expect(r.serverExit?.code).toBe(0);
    });

    it('D2/every call is answered; every valid call gets OK or a retryable RESOURCE_EXHAUSTED, most get OK', () => {
      const answered = Object.values(r.byKind).flatMap((c) => Object.values(c)).reduce((a, b) => a + b, 0);
      expect(answered).toBe(r.n);
      const valid = r.byKind.valid ?? {};
      const other = Object.entries(valid).filter(([c]) => c !== 'OK' && c !== 'RESOURCE_EXHAUSTED');
      expect(other, `samples: ${JSON.stringify(r.samples.filter((s) => s.kind === 'valid'))}`).toEqual([]);
      if (o.overload) {
        // admission control did shed, and still let work through
        expect(valid.RESOURCE_EXHAUSTED ?? 0).toBeGreaterThan(0);
        expect(valid.OK ?? 0).toBeGreaterThan(0);
      } else expect(valid.OK ?? 0).toBeGreaterThan(r.sent.valid / 2);
    });

    /** Kinds refused before admission to the signer (authentication, TTL): their status is exact even under overload. */
    const beforeAdmission = new Set(['bad-token', 'bad-ttl']);
    it.each(Object.entries(EXPECTED))('D2/every %s call gets exactly %s', (kind, want) => {
      const got = r.byKind[kind] ?? {};
      const why = `samples: ${JSON.stringify(r.samples.filter((s) => s.kind === kind))}`;
      if (o.overload && !beforeAdmission.has(kind)) {
        // A call shed at admission gets the retryable RESOURCE_EXHAUSTED, unless the shape check of the
        // refusal path finds its CSR malformed (INVALID_ARGUMENT, as the signer would say): what needs a key
        // operation (a bad signature, another identity) is judged only when it is retried. Never any other status.
        expect(Object.keys(got).filter((c) => c !== want && c !== 'RESOURCE_EXHAUSTED'), why).toEqual([]);
        expect(Object.values(got).reduce((a, b) => a + b, 0)).toBe(r.sent[kind as Kind]);
      } else expect(got, why).toEqual({ [want]: r.sent[kind as Kind] });
    });

    it('D2/serials are unique among the successes, and the server counted exactly those', () => {
      expect(r.serials.issued).toBe(r.byKind.valid?.OK ?? 0);
      expect(r.serials.unique).toBe(r.serials.issued);
      expect(r.metrics.issued).toBe(r.serials.issued);
    });

    it(`D2/memory bounded: peak RSS < ${o.bounds.maxRssBytes / MiB} MiB, peak heap used < ${o.bounds.maxHeapBytes / MiB} MiB`, () => {
      expect(r.rss.hwmBytes).toBeLessThan(o.bounds.maxRssBytes);
      expect(r.rss.peakBytes).toBeLessThan(o.bounds.maxRssBytes);
      expect(r.heapUsed.peakBytes).toBeLessThan(o.bounds.maxHeapBytes);
    });

    it(`D2/p99 latency bounded (< ${o.bounds.p99Ms / 1000} s) and /healthz never fails during the burst`, () => {
      expect(r.latencyMs.p99).toBeLessThan(o.bounds.p99Ms);
      expect(r.health.failures).toBe(0);
      expect(r.health.polls).toBeGreaterThan(3);
    });

    // Found by this test: during the burst the main event loop stalls for hundreds of milliseconds
    // (every JWT is verified on it), and /healthz stalled with it. Fixed in src/platform/http.ts: the
    // ops endpoints are served from their own thread, reading a heartbeat the main thread writes.
    // On 2 saturated cores the OS itself sometimes answers late: an idle process probed at the same
    // instant (the control) has taken up to ~400 ms here. A slow /healthz poll is the server's fault
    // unless the control was slow too in the same instant; those must stay rare (< 2 % of polls).
    it(`D2/healthz answers within ${o.bounds.healthMs} ms throughout the burst (a poll is excused only if an idle process on the same machine was slow at the same instant)`, () => {
      const bound = o.bounds.healthMs;
      const slow = r.healthPairs.filter((p) => p.healthMs >= bound);
      const servers = slow.filter((p) => p.controlMs < bound / 2);
      const machines = slow.filter((p) => p.controlMs >= bound / 2);
      const show = (ps: typeof slow) => JSON.stringify(ps.map((p) => `${p.healthMs.toFixed(0)}/${p.controlMs.toFixed(0)} ms`));
      expect(servers, `/healthz slow while the machine was not (healthz/control): ${show(servers)}`).toEqual([]);
      expect(machines.length, `polls slow on the whole machine: ${show(machines)}`).toBeLessThanOrEqual(Math.ceil(r.healthPairs.length * 0.02));
    });
  });
}
