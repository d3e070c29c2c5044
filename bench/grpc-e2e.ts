/**
 * grpc-e2e: the real CA server process, driven over TLS with JWT
 * authentication by a separate load-generator process using pre-made CSRs
 * and tokens. Reports throughput, p50/p99 latency and issuances per server
 * CPU-second (from the server process's own CPU time in /proc), at peak
 * (closed loop, 64 in flight) and at half of that rate (open loop, where
 * latency counts), in E2E_ROUNDS (3) interleaved rounds: medians and spread.
 *
 * In the same run, when Go and grpc-go are installed (Debian: golang-go
 * golang-google-grpc-dev):
 *  - the load generator is bench/grpc-go's (grpc-go: an independent client,
 *    and cheaper than a Node one on the shared cores);
 *  - the same profile against bench/grpc-go's istiod-shaped server (grpc-go
 *    + crypto/x509 doing the same JWT and CSR work): the like-for-like ratio;
 *  - Go's bare signing core (bench/vs-go/main.go, one core, no gRPC, no TLS,
 *    no JWT): the ratio issue 5 names.
 *
 *   node_modules/.bin/node bench/grpc-e2e.ts    (BENCH_SECONDS=6 per phase; E2E_ROUNDS=3; E2E_LOADGEN=node|go)
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../test/support/tmp.ts';
import { goUnavailable, grpcGoBinary, startBenchServer, startGoBaselineServer, type BenchServer, type LoadgenKind } from './lib/e2e.ts';
import { BENCH_ID, makeBenchCa, makeCsrs } from './lib/fixtures.ts';
import { goBuild, goVersion } from './lib/measure.ts';
import { median, percentile, processRssBytes } from './lib/proc.ts';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 6);

export interface E2eFigures {
  peakPerSec: number;
  peakP50Ms: number;
  peakP99Ms: number;
  peakErrors: number;
  perServerCpuSecond: number;
  /** lowest and highest of the rounds */
  perServerCpuSecondRange: [number, number];
  serverCpuCores: number;
  halfRatePerSec: number;
  halfP50Ms: number;
  halfP99Ms: number;
  halfP99MsRange: [number, number];
  halfErrors: number;
  halfPerServerCpuSecond: number;
  serverRssMiB: number;
}

interface Phase {
  rate: number;
  p50: number;
  p99: number;
  errors: number;
  perCpu: number;
  cores: number;
}

const ROUNDS = Math.max(1, Number(process.env.E2E_ROUNDS ?? 3));

async function phase(server: BenchServer, job: Record<string, unknown>): Promise<Phase> {
  const r = await server.drive({ durationMs: SECONDS * 1000, ...job });
  const sec = r.elapsedMs / 1000;
  return { rate: r.done / sec, p50: percentile(r.latenciesMs, 50), p99: percentile(r.latenciesMs, 99), errors: r.errors, perCpu: r.done / r.serverCpu, cores: r.serverCpu / sec };
}

const range = (xs: number[]): [number, number] => [Math.min(...xs), Math.max(...xs)];

/**
 * The servers side by side: ROUNDS rounds of peak (closed loop, 64 in flight),
 * each round driving every server in turn, then ROUNDS rounds at half of each
 * server's median peak (open loop); medians, with the spread of the rounds.
 * Interleaving keeps a drift of the machine (other tenants of the VM host)
 * from landing on one server only.
 */
async function sideBySide(servers: BenchServer[]): Promise<E2eFigures[]> {
  const peaks: Phase[][] = servers.map(() => []);
  const halves: Phase[][] = servers.map(() => []);
  for (let r = 0; r < ROUNDS; r++) for (const [i, s] of servers.entries()) peaks[i]!.push(await phase(s, { mode: 'closed', concurrency: 64 }));
  const halfRates = peaks.map((p) => Math.max(1, Math.round(median(p.map((x) => x.rate)) / 2)));
  for (let r = 0; r < ROUNDS; r++) for (const [i, s] of servers.entries()) halves[i]!.push(await phase(s, { mode: 'open', ratePerSec: halfRates[i] }));
  return servers.map((s, i) => {
    const p = peaks[i]!;
    const h = halves[i]!;
    return {
      peakPerSec: median(p.map((x) => x.rate)),
      peakP50Ms: median(p.map((x) => x.p50)),
      peakP99Ms: median(p.map((x) => x.p99)),
      peakErrors: p.reduce((a, x) => a + x.errors, 0),
      perServerCpuSecond: median(p.map((x) => x.perCpu)),
      perServerCpuSecondRange: range(p.map((x) => x.perCpu)),
      serverCpuCores: median(p.map((x) => x.cores)),
      halfRatePerSec: median(h.map((x) => x.rate)),
      halfP50Ms: median(h.map((x) => x.p50)),
      halfP99Ms: median(h.map((x) => x.p99)),
      halfP99MsRange: range(h.map((x) => x.p99)),
      halfErrors: h.reduce((a, x) => a + x.errors, 0),
      halfPerServerCpuSecond: median(h.map((x) => x.perCpu)),
      serverRssMiB: processRssBytes(s.pid) / 2 ** 20,
    };
  });
}

function report(name: string, r: E2eFigures): void {
  console.log(`  ${name}`);
  console.log(`    peak (64 in flight, 8 connections, ${SECONDS}s x ${ROUNDS}, medians): ${r.peakPerSec.toFixed(0)} certs/s, p50 ${r.peakP50Ms.toFixed(2)} ms, p99 ${r.peakP99Ms.toFixed(2)} ms, errors ${r.peakErrors}`);
  console.log(`    server CPU: ${r.serverCpuCores.toFixed(2)} cores busy -> ${r.perServerCpuSecond.toFixed(0)} issuances per server CPU-second (rounds ${r.perServerCpuSecondRange.map((x) => x.toFixed(0)).join('-')})`);
  console.log(`    half of peak (open loop): ${r.halfRatePerSec.toFixed(0)} certs/s, p50 ${r.halfP50Ms.toFixed(2)} ms, p99 ${r.halfP99Ms.toFixed(2)} ms (rounds ${r.halfP99MsRange.map((x) => x.toFixed(1)).join('-')}), errors ${r.halfErrors}; RSS ${r.serverRssMiB.toFixed(0)} MiB`);
}

/** Go's bare signing core on one core (bench/vs-go/main.go): issuances per CPU-second. */
async function goBareCore(): Promise<number | undefined> {
  if (!goVersion()) return undefined;
  const dir = tempDir('castellan-e2e-go-');
  try {
    const bin = goBuild(new URL('./vs-go/main.go', import.meta.url).pathname, dir.path, 'vs-go');
    const ca = await makeBenchCa('ec-p256');
    writeFileSync(join(dir.path, 'ca.pem'), ca.certPem);
    writeFileSync(join(dir.path, 'ca.key'), ca.keyPem, { mode: 0o600 });
    writeFileSync(join(dir.path, 'csrs.pem'), (await makeCsrs(500, BENCH_ID)).join(''));
    const out = execFileSync(bin, [join(dir.path, 'ca.pem'), join(dir.path, 'ca.key'), join(dir.path, 'csrs.pem'), BENCH_ID, '10000', '1'], {
      encoding: 'utf8',
      env: { ...process.env, GOMAXPROCS: '1' },
    });
    const r = JSON.parse(out) as { n: number; errors: number; cpuSec: number };
    if (r.errors) throw new Error(`Go bare core: ${r.errors} errors`);
    return r.n / r.cpuSec;
  } finally {
    dir.cleanup();
  }
}

export async function runGrpcE2e(): Promise<Record<string, unknown>> {
  const go = grpcGoBinary();
  const loadgen: LoadgenKind = (process.env.E2E_LOADGEN as LoadgenKind | undefined) ?? (go ? 'go' : 'node');
  console.log(`grpc-e2e: CreateCertificate over TLS + ES256 JWT auth, P-256 CA, 500 identities, ${loadgen === 'go' ? 'grpc-go' : 'grpc-js'} load generator in its own process`);
  if (!go) console.log(`  (Go comparisons skipped: ${goUnavailable()})`);
  // E2E_SERVER_ARGS="--signer-workers 1" tries other server settings.
  const extra = (process.env.E2E_SERVER_ARGS ?? '').split(' ').filter(Boolean);
  const servers: BenchServer[] = [await startBenchServer({ identities: 500, loadgen, extraArgs: extra })];
  try {
    if (go) servers.push(await startGoBaselineServer({ identities: 500, loadgen }));
    const figures = await sideBySide(servers);
    const castellan = figures[0];
    const baseline = go ? figures.at(-1) : undefined;
    report('Castellan (castellan server: grpc-js, batched signer)', castellan!);
    const out: Record<string, unknown> = { loadgen, rounds: ROUNDS, ...castellan };
    if (baseline) {
      report('Go baseline (bench/grpc-go: grpc-go + crypto/x509, same JWT and CSR work)', baseline);
      const bare = await goBareCore();
      const vsServer = castellan!.perServerCpuSecond / baseline.perServerCpuSecond;
      console.log(`  Castellan / Go gRPC server per server CPU-second: ${vsServer.toFixed(2)}x (Go's server itself: ${bare ? (baseline.perServerCpuSecond / bare).toFixed(2) + 'x its bare core' : 'bare core not measured'})`);
      if (bare) console.log(`  Castellan / Go bare core (${bare.toFixed(0)} per CPU-second, 1 core, no gRPC/TLS/JWT): ${(castellan!.perServerCpuSecond / bare).toFixed(2)}x  (issue 5 target: >= 1.0x)`);
      console.log(`  half-peak p99: Castellan ${castellan!.halfP99Ms.toFixed(1)} ms, Go server ${baseline.halfP99Ms.toFixed(1)} ms  (issue 5 target: < 10 ms)`);
      Object.assign(out, { goServer: baseline, goBareCorePerCpuSecond: bare, ratioVsGoServer: vsServer, ratioVsGoBareCore: bare ? castellan!.perServerCpuSecond / bare : undefined });
    }
    return out;
  } finally {
    for (const s of servers) await s.stop();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await runGrpcE2e();
  console.log('RESULT ' + JSON.stringify({ bench: 'grpc-e2e', ...r }));
}
