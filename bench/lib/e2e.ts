/**
 * End-to-end benchmark harness: a real `castellan server` process (TLS, JWT
 * authentication against a development JWKS), pre-made CSRs and tokens, and
 * a separate load-generator process (bench/lib/loadgen.ts), so the server's
 * CPU time (read from /proc) is the server's alone.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { DevTokenIssuer } from '../../src/identity/dev-issuer.ts';
import { tempDir } from '../../test/support/tmp.ts';
import { makeCsrs } from './fixtures.ts';
import { processCpuSeconds } from './proc.ts';

const root = new URL('../..', import.meta.url).pathname;
const node = join(root, 'node_modules/.bin/node');

export interface LoadResult {
  done: number;
  errors: number;
  codes: Record<string, number>;
  /** sorted */
  latenciesMs: number[];
  elapsedMs: number;
  /** CPU-seconds the server process used during the run */
  serverCpu: number;
}

export interface BenchServer {
  readonly pid: number;
  readonly target: string;
  /** runs one load-generator job (see bench/lib/loadgen.ts) against the server */
  drive(job: Record<string, unknown>): Promise<LoadResult>;
  stop(): Promise<void>;
}

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

/**
 * Starts the server with `extraArgs` and `identities` distinct workload
 * identities (one CSR and one token each, cycled by the load generator).
 * SERVER_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" profiles the server.
 */
export async function startBenchServer(o: { identities: number; extraArgs?: string[] }): Promise<BenchServer> {
  const tmp = tempDir('castellan-bench-');
  const issuer = await DevTokenIssuer.create({ dir: join(tmp.path, 'issuer') });
  const requests: { csr: string; token: string }[] = [];
  for (let i = 0; i < o.identities; i++) {
    const sa = `sa-${i}`;
    requests.push({ csr: (await makeCsrs(1, `spiffe://cluster.local/ns/bench/sa/${sa}`))[0]!, token: await issuer.mint({ namespace: 'bench', serviceAccount: sa }) });
  }
  const port = await freePort();
  const nodeArgs = (process.env.SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const server: ChildProcess = spawn(
    node,
    [...nodeArgs, join(root, 'bin/castellan.js'), 'server', '--data-dir', join(tmp.path, 'data'), '--grpc-listen', `127.0.0.1:${port}`, '--http-listen', 'off',
      '--jwks-file', issuer.jwksPath, '--jwt-issuer', issuer.issuer, '--log-level', 'warn',
      // one load generator on one address plays thousands of workloads: no per-peer limit
      '--rate-limit-per-peer', '0', '--rate-limit-per-identity', '0', ...(o.extraArgs ?? []),
      // BENCH_SERVER_ARGS="--signer-nice 0" tries other server settings in any benchmark
      ...(process.env.BENCH_SERVER_ARGS ?? '').split(' ').filter(Boolean)],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  await waitForPort(port, 30_000);
  const rootPem = readFileSync(join(tmp.path, 'data/root-cert.pem'), 'utf8');
  const target = `127.0.0.1:${port}`;
  let jobs = 0;
  return {
    pid: server.pid!,
    target,
    async drive(job) {
      const file = join(tmp.path, `job-${++jobs}.json`);
      writeFileSync(file, JSON.stringify({ target, rootPem, requests, channels: 8, concurrency: 64, ratePerSec: 0, durationMs: 10_000, ...job }));
      const lg = spawn(node, [join(root, 'bench/lib/loadgen.ts'), file], { stdio: ['pipe', 'pipe', 'inherit'] });
      // One line reader for the whole conversation: READY, then one JSON line.
      const lines = createInterface({ input: lg.stdout! })[Symbol.asyncIterator]();
      const exited = new Promise<never>((_, reject) => lg.once('exit', (c) => reject(new Error(`load generator exited (${c})`))));
      exited.catch(() => undefined);
      const nextLine = async (): Promise<string> => {
        const r = await Promise.race([lines.next(), exited]);
        if (r.done) throw new Error('load generator closed its output');
        return r.value as string;
      };
      if ((await nextLine()) !== 'READY') throw new Error('load generator did not get ready');
      const cpu0 = processCpuSeconds(server.pid!);
      lg.stdin!.write('go\n');
      const res = JSON.parse(await nextLine()) as Omit<LoadResult, 'serverCpu'>;
      const serverCpu = processCpuSeconds(server.pid!) - cpu0;
      await new Promise((r) => (lg.exitCode === null ? lg.once('exit', r) : r(null)));
      return { ...res, serverCpu };
    },
    async stop() {
      if (server.exitCode === null) {
        server.kill('SIGTERM');
        await new Promise((r) => server.once('exit', r));
      }
      tmp.cleanup();
    },
  };
}
