/**
 * burst: 100 000 CreateCertificate calls started at once against one server
 * process (over TLS, JWT-authenticated, 64 connections from a separate
 * load-generator process), as after a partition heals or a root taint. Reports
 * the time to drain, errors (the target is zero), and the server's peak
 * memory (VmHWM) and CPU. The server's queue limit is raised to hold the
 * whole burst; with the default (10 000) the excess would get a retryable
 * RESOURCE_EXHAUSTED instead.
 *
 *   node_modules/.bin/node bench/burst.ts        (BURST_N=100000 by default)
 */
import { readFileSync } from 'node:fs';
import { grpcGoBinary, startBenchServer, type LoadgenKind } from './lib/e2e.ts';
import { percentile, processRssBytes } from './lib/proc.ts';

const N = Number(process.env.BURST_N ?? 100_000);

function peakRssBytes(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

// The grpc-go load generator when Go is installed (BURST_LOADGEN=node|go overrides).
const loadgen: LoadgenKind = (process.env.BURST_LOADGEN as LoadgenKind | undefined) ?? (grpcGoBinary() ? 'go' : 'node');
const server = await startBenchServer({ identities: 1000, loadgen, extraArgs: ['--queue-max', String(N + 1000), ...(process.env.BURST_SERVER_ARGS ?? '').split(' ').filter(Boolean)] });
try {
  const rssBefore = processRssBytes(server.pid);
  const r = await server.drive({ mode: 'burst', total: N, channels: 64, deadlineMs: 600_000 });
  const seconds = r.elapsedMs / 1000;
  const out = {
    n: N,
    loadgen,
    drainSeconds: seconds,
    perSec: r.done / seconds,
    errors: r.errors,
    codes: r.codes,
    p50Ms: percentile(r.latenciesMs, 50),
    p99Ms: percentile(r.latenciesMs, 99),
    serverCpuSeconds: r.serverCpu,
    perServerCpuSecond: r.done / r.serverCpu,
    serverRssBeforeMiB: rssBefore / 2 ** 20,
    serverPeakRssMiB: peakRssBytes(server.pid) / 2 ** 20,
  };
  console.log(`burst: ${N} CreateCertificate calls at once (TLS + JWT, 64 connections, one server process, ${loadgen === "go" ? "grpc-go" : "grpc-js"} load generator)`);
  console.log(`  drained in ${seconds.toFixed(1)} s (${out.perSec.toFixed(0)} certs/s), errors ${out.errors} ${JSON.stringify(out.codes)}`);
  console.log(`  latency p50 ${(out.p50Ms / 1000).toFixed(1)} s, p99 ${(out.p99Ms / 1000).toFixed(1)} s (queueing behind the burst)`);
  console.log(`  server: ${out.serverCpuSeconds.toFixed(1)} CPU-s (${out.perServerCpuSecond.toFixed(0)} issuances per CPU-second), RSS ${out.serverRssBeforeMiB.toFixed(0)} MiB before, peak ${out.serverPeakRssMiB.toFixed(0)} MiB`);
  console.log(`RESULT ${JSON.stringify(out)}`);
} finally {
  await server.stop();
}
