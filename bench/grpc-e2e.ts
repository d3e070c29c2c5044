/**
 * grpc-e2e: the real CA server process, driven over TLS with JWT
 * authentication by a separate load-generator process using pre-made CSRs
 * and tokens. Reports throughput, p50/p99 latency and issuances per server
 * CPU-second (from the server process's own CPU time in /proc), at peak
 * (closed loop, 64 in flight) and at half of that rate (open loop, where
 * latency counts).
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
 *   node_modules/.bin/node bench/grpc-e2e.ts    (BENCH_SECONDS=10; E2E_LOADGEN=node|go)
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../test/support/tmp.ts';
import { goUnavailable, grpcGoBinary, startBenchServer, startGoBaselineServer, type BenchServer, type LoadgenKind } from './lib/e2e.ts';
import { BENCH_ID, makeBenchCa, makeCsrs } from './lib/fixtures.ts';
import { goBuild, goVersion } from './lib/measure.ts';
import { percentile, processRssBytes } from './lib/proc.ts';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);

export interface E2eFigures {
  peakPerSec: number;
  peakP50Ms: number;
  peakP99Ms: number;
  peakErrors: number;
  perServerCpuSecond: number;
  serverCpuCores: number;
  halfRatePerSec: number;
  halfP50Ms: number;
  halfP99Ms: number;
  halfErrors: number;
  halfPerServerCpuSecond: number;
  serverRssMiB: number;
}

/** Peak (closed loop), then half of it (open loop), against one started server. */
async function profile(server: BenchServer): Promise<E2eFigures> {
  try {
    const peak = await server.drive({ mode: 'closed', concurrency: 64, durationMs: SECONDS * 1000 });
    const peakRate = peak.done / (peak.elapsedMs / 1000);
    const half = await server.drive({ mode: 'open', ratePerSec: Math.max(1, Math.round(peakRate / 2)), durationMs: SECONDS * 1000 });
    return {
      peakPerSec: peakRate,
      peakP50Ms: percentile(peak.latenciesMs, 50),
      peakP99Ms: percentile(peak.latenciesMs, 99),
      peakErrors: peak.errors,
      perServerCpuSecond: peak.done / peak.serverCpu,
      serverCpuCores: peak.serverCpu / (peak.elapsedMs / 1000),
      halfRatePerSec: half.done / (half.elapsedMs / 1000),
      halfP50Ms: percentile(half.latenciesMs, 50),
      halfP99Ms: percentile(half.latenciesMs, 99),
      halfErrors: half.errors,
      halfPerServerCpuSecond: half.done / half.serverCpu,
      serverRssMiB: processRssBytes(server.pid) / 2 ** 20,
    };
  } finally {
    await server.stop();
  }
}

function report(name: string, r: E2eFigures): void {
  console.log(`  ${name}`);
  console.log(`    peak (64 in flight, 8 connections, ${SECONDS}s): ${r.peakPerSec.toFixed(0)} certs/s, p50 ${r.peakP50Ms.toFixed(2)} ms, p99 ${r.peakP99Ms.toFixed(2)} ms, errors ${r.peakErrors}`);
  console.log(`    server CPU: ${r.serverCpuCores.toFixed(2)} cores busy -> ${r.perServerCpuSecond.toFixed(0)} issuances per server CPU-second`);
  console.log(`    half of peak (open loop): ${r.halfRatePerSec.toFixed(0)} certs/s, p50 ${r.halfP50Ms.toFixed(2)} ms, p99 ${r.halfP99Ms.toFixed(2)} ms, errors ${r.halfErrors}; RSS ${r.serverRssMiB.toFixed(0)} MiB`);
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
  const castellan = await profile(await startBenchServer({ identities: 500, loadgen, extraArgs: (process.env.E2E_SERVER_ARGS ?? '').split(' ').filter(Boolean) }));
  report('Castellan (castellan server: grpc-js, batched signer)', castellan);
  const out: Record<string, unknown> = { loadgen, ...castellan };
  if (go) {
    const baseline = await profile(await startGoBaselineServer({ identities: 500, loadgen }));
    report('Go baseline (bench/grpc-go: grpc-go + crypto/x509, same JWT and CSR work)', baseline);
    const bare = await goBareCore();
    const vsServer = castellan.perServerCpuSecond / baseline.perServerCpuSecond;
    console.log(`  Castellan / Go gRPC server per server CPU-second: ${vsServer.toFixed(2)}x (Go's server itself: ${bare ? (baseline.perServerCpuSecond / bare).toFixed(2) + 'x its bare core' : 'bare core not measured'})`);
    if (bare) console.log(`  Castellan / Go bare core (${bare.toFixed(0)} per CPU-second, 1 core, no gRPC/TLS/JWT): ${(castellan.perServerCpuSecond / bare).toFixed(2)}x  (issue 5 target: >= 1.0x)`);
    console.log(`  half-peak p99: Castellan ${castellan.halfP99Ms.toFixed(1)} ms, Go server ${baseline.halfP99Ms.toFixed(1)} ms  (issue 5 target: < 10 ms)`);
    Object.assign(out, { goServer: baseline, goBareCorePerCpuSecond: bare, ratioVsGoServer: vsServer, ratioVsGoBareCore: bare ? castellan.perServerCpuSecond / bare : undefined });
  }
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await runGrpcE2e();
  console.log('RESULT ' + JSON.stringify({ bench: 'grpc-e2e', ...r }));
}
