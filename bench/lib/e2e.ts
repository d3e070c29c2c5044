/**
 * End-to-end benchmark harness: a real server process (TLS, JWT
 * authentication against a development JWKS), pre-made CSRs and tokens, and
 * a separate load-generator process, so the server's CPU time (read from
 * /proc) is the server's alone.
 *
 * Servers: Castellan (`castellan server`), or the istiod-shaped Go baseline
 * of bench/grpc-go (grpc-go + crypto/x509 doing the same JWT and CSR work).
 * Load generators: bench/lib/loadgen.ts (grpc-js), or the grpc-go one of
 * bench/grpc-go: an independent client that also leaves the shared cores more
 * CPU for the server. Both read the same job and print the same result.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { join } from 'node:path';
import { DevTokenIssuer, type DevTokenAlg } from '../../src/identity/dev-issuer.ts';
import { tempDir } from '../../test/support/tmp.ts';
import { makeBenchCa, makeCsrs } from './fixtures.ts';
import { lineReader, processCpuSeconds } from './proc.ts';

const root = new URL('../..', import.meta.url).pathname;
const node = join(root, 'node_modules/.bin/node');

export type LoadgenKind = 'node' | 'go';

/**
 * SERVER_CPUS / LOADGEN_CPUS (taskset lists, e.g. "0" and "1") pin the two
 * processes to their own cores, so neither's scheduling delays show up in the
 * other's latency.
 */
function pinned(cpus: string | undefined, cmd: string, args: string[]): [string, string[]] {
  return cpus ? ['taskset', ['-c', cpus, cmd, ...args]] : [cmd, args];
}

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
  /** a valid token of the fixture (its first identity) */
  readonly sampleToken: string;
  /** the PEM bundle a client trusts for the server's TLS */
  readonly rootPem: string;
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

async function waitForPort(port: number, ms: number, proc: ChildProcess): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (proc.exitCode !== null) throw new Error(`server exited (${proc.exitCode}) before listening`);
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

let goBinary: string | undefined | null = null;
let goWhyNot = '';

/**
 * Builds bench/grpc-go once per process (Go in GOPATH mode against Debian's
 * golang-google-grpc-dev in /usr/share/gocode). Undefined, with the reason in
 * `goUnavailable()`, when Go or grpc-go is not installed.
 */
export function grpcGoBinary(): string | undefined {
  if (goBinary !== null) return goBinary;
  goBinary = undefined;
  const gopath = process.env.BENCH_GOPATH ?? '/usr/share/gocode';
  if (!existsSync(join(gopath, 'src/google.golang.org/grpc'))) {
    goWhyNot = `grpc-go not found under ${gopath} (apt-get install golang-go golang-google-grpc-dev)`;
    return goBinary;
  }
  const dir = tempDir('castellan-grpc-go-');
  process.once('exit', () => dir.cleanup());
  try {
    const out = join(dir.path, 'grpc-go');
    execFileSync('go', ['build', '-o', out, join(root, 'bench/grpc-go/main.go')], {
      env: { ...process.env, GO111MODULE: 'off', GOFLAGS: '', GOPATH: gopath, GOCACHE: join(dir.path, 'gocache') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    goBinary = out;
  } catch (e) {
    goWhyNot = `could not build bench/grpc-go: ${(e as { stderr?: Buffer }).stderr?.toString().trim() || String(e)}`;
  }
  return goBinary;
}

export function goUnavailable(): string {
  return goWhyNot;
}

interface Fixture {
  tmp: { path: string; cleanup: () => void };
  issuer: DevTokenIssuer;
  requests: { csr: string; token: string }[];
}

/** `identities` distinct workload identities: one CSR and one token (signed with `alg`) each, cycled by the load generator. */
async function fixture(identities: number, alg: DevTokenAlg = 'ES256'): Promise<Fixture> {
  const tmp = tempDir('castellan-bench-');
  const issuer = await DevTokenIssuer.create({ dir: join(tmp.path, 'issuer'), alg });
  const requests: { csr: string; token: string }[] = [];
  for (let i = 0; i < identities; i++) {
    const sa = `sa-${i}`;
    requests.push({ csr: (await makeCsrs(1, `spiffe://cluster.local/ns/bench/sa/${sa}`))[0]!, token: await issuer.mint({ namespace: 'bench', serviceAccount: sa }) });
  }
  return { tmp, issuer, requests };
}

function benchServer(f: Fixture, server: ChildProcess, target: string, rootPem: string, loadgen: LoadgenKind): BenchServer {
  let jobs = 0;
  const goBin = loadgen === 'go' ? grpcGoBinary() : undefined;
  if (loadgen === 'go' && !goBin) throw new Error(`the Go load generator is unavailable: ${goUnavailable()}`);
  return {
    pid: server.pid!,
    target,
    sampleToken: f.requests[0]!.token,
    rootPem,
    async drive(job) {
      const file = join(f.tmp.path, `job-${++jobs}.json`);
      writeFileSync(file, JSON.stringify({ target, rootPem, requests: f.requests, channels: 8, concurrency: 64, ratePerSec: 0, durationMs: 10_000, ...job }));
      const [cmd, args] = goBin ? [goBin, ['loadgen', file]] : [node, [join(root, 'bench/lib/loadgen.ts'), file]];
      const lg = spawn(...pinned(process.env.LOADGEN_CPUS, cmd, args), { stdio: ['pipe', 'pipe', 'inherit'] });
      const nextLine = lineReader(lg);
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
      f.tmp.cleanup();
    },
  };
}

/**
 * Starts `castellan server` with `extraArgs` (server flags), `nodeArgs` (Node
 * flags before the script) and `identities` workload identities. SERVER_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" profiles
 * the server; BENCH_SERVER_STDOUT=1 shows its stdout (e.g. with --trace-gc).
 */
export async function startBenchServer(o: { identities: number; extraArgs?: string[]; nodeArgs?: string[]; loadgen?: LoadgenKind; alg?: DevTokenAlg }): Promise<BenchServer> {
  const f = await fixture(o.identities, o.alg);
  const port = await freePort();
  const nodeArgs = [...(o.nodeArgs ?? []), ...(process.env.SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean)];
  const server: ChildProcess = spawn(
    ...pinned(process.env.SERVER_CPUS, node, [...nodeArgs, join(root, 'bin/castellan.js'), 'server', '--data-dir', join(f.tmp.path, 'data'), '--grpc-listen', `127.0.0.1:${port}`, '--http-listen', 'off',
      '--jwks-file', f.issuer.jwksPath, '--jwt-issuer', f.issuer.issuer, '--log-level', 'warn',
      // one load generator on one address plays thousands of workloads: no per-peer limit
      '--rate-limit-per-peer', '0', '--rate-limit-per-identity', '0', ...(o.extraArgs ?? []),
      // BENCH_SERVER_ARGS="--signer-nice 0" tries other server settings in any benchmark
      ...(process.env.BENCH_SERVER_ARGS ?? '').split(' ').filter(Boolean)]),
    { stdio: ['ignore', process.env.BENCH_SERVER_STDOUT ? 'inherit' : 'ignore', 'inherit'] },
  );
  await waitForPort(port, 30_000, server);
  const rootPem = readFileSync(join(f.tmp.path, 'data/root-cert.pem'), 'utf8');
  return benchServer(f, server, `127.0.0.1:${port}`, rootPem, o.loadgen ?? 'node');
}

/**
 * Starts the Go baseline server of bench/grpc-go (P-256 CA, serving
 * certificate for localhost signed by it) with the same identities, token
 * issuer and audience as startBenchServer. Throws when Go is unavailable.
 */
export async function startGoBaselineServer(o: { identities: number; loadgen?: LoadgenKind; alg?: DevTokenAlg }): Promise<BenchServer> {
  const bin = grpcGoBinary();
  if (!bin) throw new Error(goUnavailable());
  const f = await fixture(o.identities, o.alg);
  const ca = await makeBenchCa('ec-p256');
  const p = (name: string) => join(f.tmp.path, name);
  writeFileSync(p('ca.pem'), ca.certPem);
  writeFileSync(p('ca.key'), ca.keyPem, { mode: 0o600 });
  // The serving certificate: signed by the same CA, DNS:localhost (what both load generators ask for).
  execFileSync('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', p('serving.key'), '-out', p('serving.csr'), '-subj', '/CN=localhost'], { stdio: 'ignore' });
  writeFileSync(p('ext.cnf'), 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n');
  execFileSync('openssl', ['x509', '-req', '-in', p('serving.csr'), '-CA', p('ca.pem'), '-CAkey', p('ca.key'), '-CAcreateserial', '-days', '1', '-extfile', p('ext.cnf'), '-out', p('serving.pem')], { stdio: 'ignore' });
  const port = await freePort();
  const server = spawn(
    ...pinned(process.env.SERVER_CPUS, bin, ['server', `127.0.0.1:${port}`, p('serving.pem'), p('serving.key'), p('ca.pem'), p('ca.key'), f.issuer.jwksPath, f.issuer.issuer, 'istio-ca', 'cluster.local']),
    // stdin stays open: the Go server exits when it closes (never outlives the benchmark)
    { stdio: ['pipe', 'ignore', 'inherit'] },
  );
  await waitForPort(port, 30_000, server);
  return benchServer(f, server, `127.0.0.1:${port}`, ca.certPem, o.loadgen ?? 'go');
}
