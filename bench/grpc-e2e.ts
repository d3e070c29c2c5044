/**
 * grpc-e2e: the real CA server process, driven over TLS with JWT
 * authentication by a separate load-generator process using pre-made CSRs
 * and tokens. Reports throughput, p50/p99 latency and issuances per server
 * CPU-second (from the server process's own CPU time in /proc), at peak
 * (closed loop) and at half of that rate (open loop, where latency counts).
 *
 *   node_modules/.bin/node bench/grpc-e2e.ts            (BENCH_SECONDS=10 by default)
 */
import { startBenchServer } from './lib/e2e.ts';
import { percentile, processRssBytes } from './lib/proc.ts';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);

export async function runGrpcE2e(): Promise<Record<string, number>> {
  // E2E_SERVER_ARGS="--signer-workers 1" tries other server settings.
  const server = await startBenchServer({ identities: 500, extraArgs: (process.env.E2E_SERVER_ARGS ?? '').split(' ').filter(Boolean) });
  try {
    const peak = await server.drive({ mode: 'closed', concurrency: 64, durationMs: SECONDS * 1000 });
    const peakRate = peak.done / (peak.elapsedMs / 1000);
    const half = await server.drive({ mode: 'open', ratePerSec: Math.max(1, Math.round(peakRate / 2)), durationMs: SECONDS * 1000 });
    const r = {
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
    console.log('grpc-e2e: CreateCertificate over TLS + JWT (ES256) auth, P-256 root, 500 identities, separate load-generator process');
    console.log(`  peak (64 in flight, 8 channels, ${SECONDS}s): ${r.peakPerSec.toFixed(0)} certs/s, p50 ${r.peakP50Ms.toFixed(2)} ms, p99 ${r.peakP99Ms.toFixed(2)} ms, errors ${r.peakErrors} ${JSON.stringify(peak.codes)}`);
    console.log(`  server CPU: ${r.serverCpuCores.toFixed(2)} cores busy → ${r.perServerCpuSecond.toFixed(0)} issuances per server CPU-second`);
    console.log(`  half of peak (${Math.round(peakRate / 2)}/s offered, open loop): ${r.halfRatePerSec.toFixed(0)} certs/s, p50 ${r.halfP50Ms.toFixed(2)} ms, p99 ${r.halfP99Ms.toFixed(2)} ms, errors ${r.halfErrors}`);
    console.log(`  server RSS after: ${r.serverRssMiB.toFixed(0)} MiB`);
    return r;
  } finally {
    await server.stop();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await runGrpcE2e();
  console.log('RESULT ' + JSON.stringify({ bench: 'grpc-e2e', ...r }));
}
