/**
 * grpc-e2e: the real CA server process, driven over TLS with JWT
 * authentication by a separate load-generator process using pre-made CSRs
 * and tokens. Reports throughput, p50/p99 latency and issuances per server
 * CPU-second (from the server process's own CPU time in /proc), at peak
 * (closed loop, 64 in flight) and at half of Castellan's peak (open loop,
 * where latency counts), in E2E_ROUNDS (3) interleaved rounds: medians and
 * spread.
 *
 * Tokens: RS256 (what a kube-apiserver signs service-account tokens with
 * unless configured otherwise) and ES256, side by side in the same rounds
 * (E2E_TOKENS=RS256,ES256 picks).
 *
 * In the same run, when Go and grpc-go are installed (Debian: golang-go
 * golang-google-grpc-dev):
 *  - the load generator is bench/grpc-go's (grpc-go: an independent client,
 *    and cheaper than a Node one on the shared cores);
 *  - the same profile against bench/grpc-go's istiod-shaped server (grpc-go
 *    + crypto/x509 doing the same JWT and CSR work), per token algorithm, at
 *    the same offered load as Castellan in the half-peak phase: the
 *    like-for-like ratios the targets of issue 15 name;
 *  - Go's bare signing core (bench/vs-go/main.go, one core, no gRPC, no TLS,
 *    no JWT).
 *
 * A/B of server settings in the same rounds: E2E_VARIANTS lists Castellan
 * variants, `;`-separated, each `name` or `name=args` where an arg starting
 * `node:` is a Node flag (e.g. `base;semi4=node:--max-semi-space-size=4`)
 * and any other a server flag; every variant is driven at the half rate of
 * the first, and each is reported with its per-round ratios to the first.
 *
 *   node_modules/.bin/node bench/grpc-e2e.ts    (BENCH_SECONDS=6 per phase; E2E_ROUNDS=3; E2E_WARMUP_SECONDS=2; E2E_LOADGEN=node|go; E2E_TOKENS=RS256,ES256; E2E_VARIANTS)
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { DevTokenAlg } from '../src/identity/dev-issuer.ts';
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
const WARMUP_SECONDS = Number(process.env.E2E_WARMUP_SECONDS ?? 2);

async function phase(server: BenchServer, job: Record<string, unknown>): Promise<Phase> {
  const r = await server.drive({ durationMs: SECONDS * 1000, ...job });
  const sec = r.elapsedMs / 1000;
  return { rate: r.done / sec, p50: percentile(r.latenciesMs, 50), p99: percentile(r.latenciesMs, 99), errors: r.errors, perCpu: r.done / r.serverCpu, cores: r.serverCpu / sec };
}

const range = (xs: number[]): [number, number] => [Math.min(...xs), Math.max(...xs)];

/**
 * The servers side by side: ROUNDS rounds of peak (closed loop, 64 in flight),
 * each round driving every server in turn, then ROUNDS rounds at the open-loop
 * rate `halfRate(i, medianPeaks)` gives server i; medians, with the spread of
 * the rounds. Interleaving keeps a drift of the machine (other tenants of the
 * VM host) from landing on one server only.
 */
async function sideBySide(servers: BenchServer[], halfRate: (i: number, medianPeaks: number[]) => number): Promise<{ figures: E2eFigures[]; peaks: Phase[][]; halves: Phase[][] }> {
  const peaks: Phase[][] = servers.map(() => []);
  const halves: Phase[][] = servers.map(() => []);
  // Not counted: JIT warm-up, connection set-up, the first JWKS and key-cache fills.
  for (const s of servers) await s.drive({ mode: 'closed', concurrency: 64, durationMs: WARMUP_SECONDS * 1000 });
  for (let r = 0; r < ROUNDS; r++) for (const [i, s] of servers.entries()) peaks[i]!.push(await phase(s, { mode: 'closed', concurrency: 64 }));
  const medianPeaks = peaks.map((p) => median(p.map((x) => x.rate)));
  const halfRates = servers.map((_, i) => Math.max(1, Math.round(halfRate(i, medianPeaks))));
  for (let r = 0; r < ROUNDS; r++) for (const [i, s] of servers.entries()) halves[i]!.push(await phase(s, { mode: 'open', ratePerSec: halfRates[i] }));
  const figures = servers.map((s, i) => {
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
  return { figures, peaks, halves };
}

function report(name: string, r: E2eFigures): void {
  console.log(`  ${name}`);
  console.log(`    peak (64 in flight, 8 connections, ${SECONDS}s x ${ROUNDS}, medians): ${r.peakPerSec.toFixed(0)} certs/s, p50 ${r.peakP50Ms.toFixed(2)} ms, p99 ${r.peakP99Ms.toFixed(2)} ms, errors ${r.peakErrors}`);
  console.log(`    server CPU: ${r.serverCpuCores.toFixed(2)} cores busy -> ${r.perServerCpuSecond.toFixed(0)} issuances per server CPU-second (rounds ${r.perServerCpuSecondRange.map((x) => x.toFixed(0)).join('-')})`);
  console.log(`    half of Castellan's peak (open loop): ${r.halfRatePerSec.toFixed(0)} certs/s, p50 ${r.halfP50Ms.toFixed(2)} ms, p99 ${r.halfP99Ms.toFixed(2)} ms (rounds ${r.halfP99MsRange.map((x) => x.toFixed(1)).join('-')}), errors ${r.halfErrors}; RSS ${r.serverRssMiB.toFixed(0)} MiB`);
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

interface Entry {
  alg: DevTokenAlg;
  kind: 'castellan' | 'go';
  /** the E2E_VARIANTS name of a Castellan server ('' without variants) */
  variant: string;
  server: BenchServer;
}

interface Variant {
  name: string;
  serverArgs: string[];
  nodeArgs: string[];
}

/** E2E_VARIANTS: `name` or `name=arg arg ...`; `node:`-prefixed args are Node flags. */
export function parseVariants(spec: string | undefined): Variant[] {
  if (!spec?.trim()) return [{ name: '', serverArgs: [], nodeArgs: [] }];
  return spec.split(';').filter((v) => v.trim()).map((v) => {
    const [name, rest = ''] = v.split(/=(.*)/s) as [string, string?];
    const args = rest.split(' ').filter(Boolean);
    return { name: name.trim(), serverArgs: args.filter((a) => !a.startsWith('node:')), nodeArgs: args.filter((a) => a.startsWith('node:')).map((a) => a.slice(5)) };
  });
}

/** Per-round ratios of two servers' phases (adjacent in every round, so a drift of the host cancels): median and range. */
function roundRatios(a: Phase[], b: Phase[], of: (p: Phase) => number): { median: number; range: [number, number] } {
  const r = a.map((x, i) => of(x) / of(b[i]!));
  return { median: median(r), range: range(r) };
}

/** Per token algorithm: Castellan's figures, the Go server's, and the ratios the targets name. */
function compare(alg: DevTokenAlg, castellan: E2eFigures, go: E2eFigures | undefined): Record<string, unknown> {
  report(`Castellan, ${alg} tokens (castellan server: grpc-js, batched signer)`, castellan);
  if (!go) return { castellan };
  report(`Go baseline, ${alg} tokens (bench/grpc-go: grpc-go + crypto/x509, same JWT and CSR work)`, go);
  const ratioVsGoServer = castellan.perServerCpuSecond / go.perServerCpuSecond;
  const halfP99VsGo = castellan.halfP99Ms / go.halfP99Ms;
  console.log(`  ${alg}: Castellan / Go gRPC server per server CPU-second: ${ratioVsGoServer.toFixed(2)}x (target >= 1.0x)`);
  console.log(`  ${alg}: half-peak p99 at the same offered load: Castellan ${castellan.halfP99Ms.toFixed(1)} ms, Go ${go.halfP99Ms.toFixed(1)} ms: ${halfP99VsGo.toFixed(2)}x (target <= 2x)`);
  return { castellan, goServer: go, ratioVsGoServer, halfP99VsGo };
}

/** Every E2E_VARIANTS variant against the first, per token algorithm, by per-round ratios. */
function compareVariants(entries: Entry[], figures: E2eFigures[], peaks: Phase[][], halves: Phase[][]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [i, e] of entries.entries()) {
    if (e.kind !== 'castellan') continue;
    const ref = entries.findIndex((x) => x.alg === e.alg && x.kind === 'castellan');
    if (i !== ref) {
      const perCpu = roundRatios(peaks[i]!, peaks[ref]!, (p) => p.perCpu);
      const halfP99 = roundRatios(halves[i]!, halves[ref]!, (p) => p.p99);
      const halfCpu = roundRatios(halves[i]!, halves[ref]!, (p) => p.perCpu);
      const fmt = (r: { median: number; range: [number, number] }): string => `${r.median.toFixed(2)}x (rounds ${r.range.map((x) => x.toFixed(2)).join('-')})`;
      console.log(`  ${e.alg} variant ${e.variant} / ${entries[ref]!.variant}: per CPU-second at peak ${fmt(perCpu)}, half-peak p99 ${fmt(halfP99)}, per CPU-second at half peak ${fmt(halfCpu)}`);
      out[`${e.alg}:${e.variant}`] = { perCpu, halfP99, halfCpu };
    }
    report(`Castellan variant ${e.variant || '(default)'}, ${e.alg} tokens`, figures[i]!);
  }
  return out;
}

export async function runGrpcE2e(): Promise<Record<string, unknown>> {
  const go = grpcGoBinary();
  const loadgen: LoadgenKind = (process.env.E2E_LOADGEN as LoadgenKind | undefined) ?? (go ? 'go' : 'node');
  const algs = (process.env.E2E_TOKENS ?? 'RS256,ES256').split(',').filter(Boolean) as DevTokenAlg[];
  console.log(`grpc-e2e: CreateCertificate over TLS + JWT auth (${algs.join(', ')} tokens), P-256 CA, 500 identities, ${loadgen === 'go' ? 'grpc-go' : 'grpc-js'} load generator in its own process`);
  if (!go) console.log(`  (Go comparisons skipped: ${goUnavailable()})`);
  // E2E_SERVER_ARGS="--signer-workers 1" tries other server settings.
  const extra = (process.env.E2E_SERVER_ARGS ?? '').split(' ').filter(Boolean);
  const variants = parseVariants(process.env.E2E_VARIANTS);
  const entries: Entry[] = [];
  try {
    for (const alg of algs) {
      for (const v of variants) {
        entries.push({ alg, kind: 'castellan', variant: v.name, server: await startBenchServer({ identities: 500, loadgen, extraArgs: [...extra, ...v.serverArgs], nodeArgs: v.nodeArgs, alg }) });
      }
      if (go) entries.push({ alg, kind: 'go', variant: '', server: await startGoBaselineServer({ identities: 500, loadgen, alg }) });
    }
    // Half of (the first variant of) Castellan's peak for every server of a token algorithm: the same offered load.
    const castellanOf = (alg: DevTokenAlg): number => entries.findIndex((e) => e.alg === alg && e.kind === 'castellan');
    const { figures, peaks, halves } = await sideBySide(
      entries.map((e) => e.server),
      (i, medianPeaks) => medianPeaks[castellanOf(entries[i]!.alg)]! / 2,
    );
    const out: Record<string, unknown> = { loadgen, rounds: ROUNDS, seconds: SECONDS };
    const of = (alg: DevTokenAlg, kind: Entry['kind']): E2eFigures | undefined => figures[entries.findIndex((e) => e.alg === alg && e.kind === kind)];
    for (const alg of algs) out[alg] = compare(alg, of(alg, 'castellan')!, of(alg, 'go'));
    if (variants.length > 1) out.variants = compareVariants(entries, figures, peaks, halves);
    if (go) {
      const bare = await goBareCore();
      if (bare) console.log(`  Go's bare signing core (bench/vs-go, 1 core, no gRPC/TLS/JWT): ${bare.toFixed(0)} per CPU-second`);
      out.goBareCorePerCpuSecond = bare;
    }
    return out;
  } finally {
    for (const e of entries) await e.server.stop();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await runGrpcE2e();
  console.log('RESULT ' + JSON.stringify({ bench: 'grpc-e2e', ...r }));
}
