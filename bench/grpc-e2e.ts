/**
 * grpc-e2e: the real CA server process, driven over TLS with JWT
 * authentication by a separate load-generator process using pre-made CSRs
 * and tokens. Reports throughput, p50/p99 latency and issuances per server
 * CPU-second (from the server process's own CPU time in /proc).
 *
 *   node_modules/.bin/node bench/grpc-e2e.ts            (BENCH_SECONDS=10 by default)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { DevTokenIssuer } from '../src/identity/dev-issuer.ts';
import { peculiarCsr } from '../test/support/csr.ts';
import { tempDir } from '../test/support/tmp.ts';
import { percentile, processCpuSeconds, processRssBytes } from './lib/proc.ts';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const root = new URL('..', import.meta.url).pathname;
const node = join(root, 'node_modules/.bin/node');

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

async function waitForPort(port: number, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const ok = await new Promise<boolean>((resolve) => {
      const c = connect(port, '127.0.0.1', () => {
        c.destroy();
        resolve(true);
      });
      c.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`server did not listen on ${port}`);
}

interface LoadResult {
  done: number;
  errors: number;
  codes: Record<string, number>;
  latenciesMs: number[];
  elapsedMs: number;
}

async function drive(server: ChildProcess, jobFile: string): Promise<LoadResult & { serverCpu: number }> {
  const lg = spawn(node, [join(root, 'bench/lib/loadgen.ts'), jobFile], { stdio: ['pipe', 'pipe', 'inherit'] });
  // One line reader for the whole conversation: READY, then one JSON line.
  const lines = createInterface({ input: lg.stdout })[Symbol.asyncIterator]();
  const exited = new Promise<never>((_, reject) => lg.once('exit', (c) => reject(new Error(`load generator exited (${c})`))));
  exited.catch(() => undefined);
  const nextLine = async (): Promise<string> => {
    const r = await Promise.race([lines.next(), exited]);
    if (r.done) throw new Error('load generator closed its output');
    return r.value;
  };
  if ((await nextLine()) !== 'READY') throw new Error('load generator did not get ready');
  const cpu0 = processCpuSeconds(server.pid!);
  lg.stdin.write('go\n');
  const res = JSON.parse(await nextLine()) as LoadResult;
  const serverCpu = processCpuSeconds(server.pid!) - cpu0;
  await new Promise((r) => (lg.exitCode === null ? lg.once('exit', r) : r(null)));
  return { ...res, serverCpu };
}

export async function runGrpcE2e(): Promise<Record<string, number>> {
  const tmp = tempDir('castellan-bench-');
  let server: ChildProcess | undefined;
  try {
    const issuer = await DevTokenIssuer.create({ dir: join(tmp.path, 'issuer') });
    const N = 200;
    const requests: { csr: string; token: string }[] = [];
    for (let i = 0; i < N; i++) {
      const sa = `sa-${i}`;
      requests.push({
        csr: (await peculiarCsr(`spiffe://cluster.local/ns/bench/sa/${sa}`)).csrPem,
        token: await issuer.mint({ namespace: 'bench', serviceAccount: sa }),
      });
    }
    const port = await freePort();
    // SERVER_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" profiles the server.
    const nodeArgs = (process.env.SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean);
    server = spawn(
      node,
      [...nodeArgs, join(root, 'bin/castellan.js'), 'server', '--data-dir', join(tmp.path, 'data'), '--grpc-listen', `127.0.0.1:${port}`, '--http-listen', 'off',
        '--jwks-file', issuer.jwksPath, '--jwt-issuer', issuer.issuer, '--log-level', 'warn', '--queue-max', '100000'],
      { stdio: ['ignore', 'ignore', 'inherit'] },
    );
    await waitForPort(port, 20_000);
    const rootPem = (await import('node:fs')).readFileSync(join(tmp.path, 'data/root-cert.pem'), 'utf8');
    const job = (over: object) => {
      const f = join(tmp.path, `job-${Math.random()}.json`);
      writeFileSync(f, JSON.stringify({ target: `127.0.0.1:${port}`, rootPem, requests, channels: 8, concurrency: 64, ratePerSec: 0, durationMs: SECONDS * 1000, mode: 'closed', ...over }));
      return f;
    };
    const peak = await drive(server, job({ mode: 'closed' }));
    const peakRate = peak.done / (peak.elapsedMs / 1000);
    const perCpu = peak.done / peak.serverCpu;
    const half = await drive(server, job({ mode: 'open', ratePerSec: Math.max(1, Math.round(peakRate / 2)) }));
    const rss = processRssBytes(server.pid!);
    const r = {
      peakPerSec: peakRate,
      peakP50Ms: percentile(peak.latenciesMs, 50),
      peakP99Ms: percentile(peak.latenciesMs, 99),
      peakErrors: peak.errors,
      perServerCpuSecond: perCpu,
      serverCpuCores: peak.serverCpu / (peak.elapsedMs / 1000),
      halfRatePerSec: half.done / (half.elapsedMs / 1000),
      halfP50Ms: percentile(half.latenciesMs, 50),
      halfP99Ms: percentile(half.latenciesMs, 99),
      halfErrors: half.errors,
      serverRssMiB: rss / 2 ** 20,
    };
    console.log('grpc-e2e: CreateCertificate over TLS + JWT (ES256) auth, P-256 root, separate load-generator process');
    console.log(`  peak (64 in flight, 8 channels, ${SECONDS}s): ${r.peakPerSec.toFixed(0)} certs/s, p50 ${r.peakP50Ms.toFixed(2)} ms, p99 ${r.peakP99Ms.toFixed(2)} ms, errors ${r.peakErrors} ${JSON.stringify(peak.codes)}`);
    console.log(`  server CPU: ${r.serverCpuCores.toFixed(2)} cores busy → ${r.perServerCpuSecond.toFixed(0)} issuances per server CPU-second`);
    console.log(`  half of peak (${Math.round(peakRate / 2)}/s offered, open loop): ${r.halfRatePerSec.toFixed(0)} certs/s, p50 ${r.halfP50Ms.toFixed(2)} ms, p99 ${r.halfP99Ms.toFixed(2)} ms, errors ${r.halfErrors}`);
    console.log(`  server RSS after: ${r.serverRssMiB.toFixed(0)} MiB`);
    return r;
  } finally {
    server?.kill('SIGTERM');
    await new Promise((res) => (server && server.exitCode === null ? server.once('exit', res) : res(null)));
    tmp.cleanup();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await runGrpcE2e();
  console.log('RESULT ' + JSON.stringify({ bench: 'grpc-e2e', ...r }));
}
