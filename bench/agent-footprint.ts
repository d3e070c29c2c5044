/**
 * agent-footprint (issue 21): what one `castellan agent` costs a pod, beside
 * a bare Node process and a Node process with grpc-js loaded, measured in the
 * same run on the same machine:
 *
 * - resident memory of the agent's whole process tree (VmRSS summed; PSS too)
 *   after serving one SDS client (a StreamSecrets stream kept open, as Envoy
 *   does) and one SPIFFE Workload API client (a FetchX509SVID stream kept
 *   open, as go-spiffe's X509Source does, and one FetchJWTSVID call, which
 *   the agent mints through the CA), one /metrics scrape, /healthz and
 *   /readyz probes every 5 s, and FOOTPRINT_IDLE_MS (15 000) of idling;
 *   FOOTPRINT_WORKLOAD_API=0 runs the agent without the Workload API;
 * - the peak over start-up, the first issuance and the idle (the tree's RSS
 *   sampled every 5 ms, or VmHWM if higher);
 * - CPU over the idle window, in % of one core;
 * - from spawning the process to the first certificate served over SDS;
 * - the CA server's resident memory, idle, after it issued that certificate
 *   (its peak during the 100 000 burst is bench/burst.ts's).
 *
 * The agent runs as an operator runs it: the pinned Node 24, no npm wrapper,
 * `node bin/castellan.js agent ...` (FOOTPRINT_ENTRY=dist/cli/main.js measures
 * the compiled tree of the container image, after `npm run build`).
 * FOOTPRINT_RUNS=3 repeats the agent (medians); AGENT_NODE_ARGS adds Node
 * flags; FOOTPRINT_VARIANTS compares agents side by side in one run, their
 * runs interleaved: `label=ENTRY [--node-flag ...] [VAR=value ...]` separated
 * by `;` (an ENTRY relative to the repository or absolute; VAR=value goes to
 * the agent's environment, FOOTPRINT_WORKLOAD_API=0 drops its Workload API),
 * e.g. `a=dist/cli/main.js;b=dist/cli/main.js --single-threaded-gc`;
 * FOOTPRINT_BURST=50x3 ends each run with the agent's worst case, the SDS
 * burst of test/agent/ops-burst.test.ts (50 clients connecting at once, each
 * its own connection, 3 rounds, from another process), and reports its wall
 * time, the agent's CPU for it and its peak RSS (VmHWM: the run's whole
 * peak): what a V8 flag costs the agent's hot path; FOOTPRINT_PROBE=1 preloads bench/lib/footprint-probe.ts into the
 * agent and prints the runtime's own breakdown (it costs memory itself: the
 * headline figures come from runs without it).
 *
 *   node_modules/.bin/node bench/agent-footprint.ts
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { isAbsolute, join } from 'node:path';
import { watchSecrets, type SdsWatch } from '../src/dev/sds-client.ts';
import { workloadApiClient } from '../src/dev/workload-demo.ts';
import { tempDir } from '../test/support/tmp.ts';
import { startBenchServer } from './lib/e2e.ts';
import { median, processCpuSeconds } from './lib/proc.ts';

const root = new URL('..', import.meta.url).pathname;
const node = join(root, 'node_modules/.bin/node');
const IDLE_MS = Number(process.env.FOOTPRINT_IDLE_MS ?? 15_000);
const RUNS = Math.max(1, Number(process.env.FOOTPRINT_RUNS ?? 1));
const PROBE = process.env.FOOTPRINT_PROBE === '1';
const BURST = /^(\d+)x(\d+)$/.exec(process.env.FOOTPRINT_BURST ?? '');

/** One way of running the agent: its entry file, Node flags and environment. */
interface Variant {
  label: string;
  entry: string;
  nodeArgs: string[];
  env: Record<string, string>;
  workloadApi: boolean;
}

function variant(label: string, entry: string, tokens: string[], env: Record<string, string> = {}): Variant {
  for (const t of tokens.filter((t) => !t.startsWith('-'))) env[t.slice(0, t.indexOf('='))] = t.slice(t.indexOf('=') + 1);
  const workloadApi = (env.FOOTPRINT_WORKLOAD_API ?? process.env.FOOTPRINT_WORKLOAD_API) !== '0';
  return { label, entry: isAbsolute(entry) ? entry : join(root, entry), nodeArgs: tokens.filter((t) => t.startsWith('-')), env, workloadApi };
}

const VARIANTS: Variant[] = process.env.FOOTPRINT_VARIANTS
  ? process.env.FOOTPRINT_VARIANTS.split(';').filter((v) => v.trim()).map((v) => {
      const [label, rest] = [v.slice(0, v.indexOf('=')).trim(), v.slice(v.indexOf('=') + 1).trim().split(/\s+/)];
      if (!label || !rest[0]) throw new Error(`FOOTPRINT_VARIANTS: expected label=ENTRY [args], got "${v}"`);
      return variant(label, rest[0], rest.slice(1));
    })
  : [variant('agent', process.env.FOOTPRINT_ENTRY ?? 'bin/castellan.js', (process.env.AGENT_NODE_ARGS ?? '').split(' ').filter(Boolean))];
const rel = (entry: string): string => (entry.startsWith(root) ? entry.slice(root.length) : entry);
const ENTRY = VARIANTS[0]!.entry;
const AGENT_NODE_ARGS = VARIANTS[0]!.nodeArgs;
const WORKLOAD_API = VARIANTS[0]!.workloadApi;
const MiB = 2 ** 20;

// ---- /proc readings over a process tree

function children(pid: number): number[] {
  const out: number[] = [];
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    try {
      out.push(...readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').split(' ').filter(Boolean).map(Number));
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

function tree(pid: number): number[] {
  const all = [pid];
  for (let i = 0; i < all.length; i++) all.push(...children(all[i]!));
  return all;
}

function statusKb(pid: number, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

function pssKb(pid: number): number {
  const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

interface TreeReading {
  processes: number;
  threads: number;
  rssMiB: number;
  pssMiB: number;
  /** summed VmHWM: the tree's peak when its processes peak together (an upper bound) */
  hwmMiB: number;
  cpuSeconds: number;
}

function readTree(pid: number): TreeReading {
  const pids = tree(pid);
  const sum = (f: (p: number) => number): number => pids.reduce((a, p) => a + f(p), 0);
  return {
    processes: pids.length,
    threads: sum((p) => statusKb(p, 'Threads')),
    rssMiB: sum((p) => statusKb(p, 'VmRSS')) / 1024,
    pssMiB: sum(pssKb) / 1024,
    hwmMiB: sum((p) => statusKb(p, 'VmHWM')) / 1024,
    cpuSeconds: sum(processCpuSeconds),
  };
}

// ---- processes

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function stop(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
  const exited = new Promise<void>((r) => p.once('exit', () => r()));
  p.kill('SIGTERM');
  return exited;
}

function get(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`timeout: ${url}`)));
    req.on('error', reject);
    req.end();
  });
}

/** The comparison processes: idle Node, and idle Node that has imported grpc-js. */
function baseline(code: string): ChildProcess {
  return spawn(node, ['--input-type=module', '-e', code], { cwd: root, stdio: 'ignore' });
}
const BARE = 'setInterval(() => {}, 1 << 30);';
const GRPC = "await import('@grpc/grpc-js'); setInterval(() => {}, 1 << 30);";

/** The tree's resident memory sampled every 5 ms: VmHWM alone misses peaks (the kernel updates it lazily). */
function rssSampler(pid: number): { stop(): number } {
  let peak = 0;
  const sample = (): void => {
    try {
      peak = Math.max(peak, tree(pid).reduce((a, p) => a + statusKb(p, 'VmRSS'), 0) / 1024);
    } catch {
      // a process of the tree ended between the listing and the reading
    }
  };
  sample();
  const t = setInterval(sample, 5);
  return {
    stop() {
      clearInterval(t);
      sample();
      return peak;
    },
  };
}

interface AgentRun {
  /** max of the 5 ms samples and the summed VmHWM, start to end of the idle */
  peakRssMiB: number;
  startToSocketMs: number;
  startToFirstCertMs: number;
  /** CPU the agent used from start to the first certificate: what the wall time is on an idle machine's core, give or take waiting for the CA */
  startCpuMs: number;
  idle: TreeReading;
  idleCpuPercent: number;
  probe?: Record<string, unknown>;
  /** FOOTPRINT_BURST: the SDS burst's wall time and the agent's CPU for it */
  burst?: { elapsedMs: number; cpuMs: number; errors: number; peakRssMiB: number };
}

/** test/agent/sds-burst.ts against `socket`: N clients at once, R rounds. */
async function sdsBurst(socket: string, agentPid: number, clients: number, rounds: number): Promise<{ elapsedMs: number; cpuMs: number; errors: number; peakRssMiB: number }> {
  const p = spawn(node, [join(root, 'test/agent/sds-burst.ts'), socket, String(clients), String(rounds)], { stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  p.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  while (!out.includes('READY\n')) {
    if (p.exitCode !== null) throw new Error('sds-burst exited before READY');
    await sleep(10);
  }
  const cpu0 = readTree(agentPid).cpuSeconds;
  const sampler = rssSampler(agentPid);
  p.stdin!.write('go\n');
  await new Promise((r) => p.once('exit', r));
  const after = readTree(agentPid);
  const peakRssMiB = Math.max(sampler.stop(), after.hwmMiB);
  const cpuMs = (after.cpuSeconds - cpu0) * 1000;
  const r = JSON.parse(out.split('\n').filter(Boolean).pop()!) as { errors: number; elapsedMs: number };
  return { elapsedMs: r.elapsedMs, cpuMs, errors: r.errors, peakRssMiB };
}

async function runAgent(ca: { target: string; rootPem: string; token: string }, dir: string, n: number, v: Variant): Promise<AgentRun> {
  const d = join(dir, `agent-${n}`);
  const rootFile = join(dir, 'root-cert.pem');
  const tokenFile = join(dir, 'token');
  writeFileSync(rootFile, ca.rootPem);
  writeFileSync(tokenFile, ca.token, { mode: 0o600 });
  const socket = join(d, 'sds', 'socket');
  const workloadSocket = join(d, 'workload', 'socket');
  const probeOut = join(d, 'probe.json');
  const args = [
    ...v.nodeArgs,
    ...(PROBE ? ['--import', join(root, 'bench/lib/footprint-probe.ts')] : []),
    v.entry, 'agent', '--ca-address', ca.target.replace('127.0.0.1', 'localhost'), '--ca-root-cert', rootFile, '--token-file', tokenFile,
    '--sds-socket', socket, '--http-listen', '127.0.0.1:0', '--log-level', 'info',
    ...(v.workloadApi ? ['--workload-api-socket', workloadSocket] : []),
  ];
  const t0 = performance.now();
  const agent = spawn(node, args, { cwd: d.replace(/\/agent-\d+$/, ''), stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...v.env, FOOTPRINT_PROBE_OUT: probeOut } });
  let log = '';
  agent.stderr!.setEncoding('utf8').on('data', (s: string) => (log += s));
  const sampler = rssSampler(agent.pid!);
  let watch: SdsWatch | undefined;
  let workload: { stopX509: () => void; close: () => void } | undefined;
  try {
    while (!existsSync(socket)) {
      if (agent.exitCode !== null) throw new Error(`the agent exited (${agent.exitCode}) before listening`);
      if (performance.now() - t0 > 30_000) throw new Error('the agent did not listen within 30 s');
      await sleep(2);
    }
    const startToSocketMs = performance.now() - t0;
    const first = new Promise<number>((resolve) => {
      // The socket file can exist a moment before the agent accepts on it: the watcher retries.
      watch = watchSecrets(socket, `sidecar~10.0.0.1~footprint-${n}.bench~bench.svc.cluster.local`, () => resolve(performance.now() - t0), () => undefined);
    });
    const startToFirstCertMs = await Promise.race([first, sleep(60_000).then(() => Promise.reject(new Error('no certificate within 60 s')))]);
    const startCpuMs = readTree(agent.pid!).cpuSeconds * 1000;
    if (v.workloadApi) {
      // A workload that is not Envoy: its X.509-SVID stream stays open, and it asks for one JWT-SVID.
      const client = workloadApiClient(workloadSocket);
      const svid = new Promise<string>((resolve, reject) => {
        workload = { stopX509: client.watchX509((s) => resolve(s.spiffeId), reject), close: client.close };
      });
      const x509Id = await Promise.race([svid, sleep(30_000).then(() => Promise.reject(new Error('no X.509-SVID within 30 s')))]);
      const jwt = await client.fetchJwt('spiffe://cluster.local/ns/bench/sa/backend');
      if (jwt.spiffeId !== x509Id || jwt.token.split('.').length !== 3) throw new Error(`Workload API: X.509-SVID ${x509Id}, JWT-SVID ${jwt.spiffeId}`);
    }
    // The ops address (the agent logs it once started).
    while (!/"event":"agent.started"/.test(log)) {
      if (agent.exitCode !== null || performance.now() - t0 > 60_000) throw new Error(`the agent did not log its start: ${log.slice(-2000)}`);
      await sleep(10);
    }
    const http = /"http":"([^"]+)"/.exec(log)?.[1];
    if (!http) throw new Error('the agent did not log its http address');
    if ((await get(`http://${http}/metrics`)).status !== 200) throw new Error('/metrics failed');
    const cpu0 = readTree(agent.pid!).cpuSeconds;
    const idleStart = performance.now();
    while (performance.now() - idleStart < IDLE_MS) {
      for (const path of ['/healthz', '/readyz']) {
        const r = await get(`http://${http}${path}`);
        if (r.status !== 200) throw new Error(`${path}: ${r.status} ${r.body}`);
      }
      await sleep(Math.max(0, Math.min(5000, IDLE_MS - (performance.now() - idleStart))));
    }
    const idleSeconds = (performance.now() - idleStart) / 1000;
    const idle = readTree(agent.pid!);
    const peakRssMiB = Math.max(sampler.stop(), idle.hwmMiB);
    let probe: Record<string, unknown> | undefined;
    if (PROBE) {
      agent.kill('SIGUSR2');
      for (let i = 0; i < 500 && !existsSync(probeOut); i++) await sleep(20);
      await sleep(200);
      probe = JSON.parse(readFileSync(probeOut, 'utf8')) as Record<string, unknown>;
    }
    const burst = BURST ? await sdsBurst(socket, agent.pid!, Number(BURST[1]), Number(BURST[2])) : undefined;
    return { peakRssMiB, startToSocketMs, startToFirstCertMs, startCpuMs, idle, idleCpuPercent: ((idle.cpuSeconds - cpu0) / idleSeconds) * 100, probe, burst };
  } finally {
    sampler.stop();
    watch?.close();
    workload?.stopX509();
    workload?.close();
    await stop(agent);
  }
}

function printProbe(p: Record<string, unknown>): void {
  const mu = p.memoryUsage as Record<string, number>;
  const sm = p.smapsKb as Record<string, number>;
  const mods = p.modules as { url: string; bytes: number }[];
  const byPkg = new Map<string, { n: number; bytes: number }>();
  for (const m of mods) {
    const k = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(m.url)?.[1] ?? (m.url.includes('/src/gen/') ? 'src/gen' : m.url.startsWith('file:') ? 'src (own)' : m.url.split(':')[0]!);
    const e = byPkg.get(k) ?? { n: 0, bytes: 0 };
    e.n++;
    e.bytes += m.bytes;
    byPkg.set(k, e);
  }
  console.log('  probe (inside the agent, after the idle):');
  console.log(`    memoryUsage: rss ${(mu.rss! / MiB).toFixed(1)} MiB, heapTotal ${(mu.heapTotal! / MiB).toFixed(1)}, heapUsed ${(mu.heapUsed! / MiB).toFixed(1)}, external ${(mu.external! / MiB).toFixed(1)}, arrayBuffers ${(mu.arrayBuffers! / MiB).toFixed(1)}`);
  console.log(`    smaps_rollup: Rss ${(sm.Rss! / 1024).toFixed(1)} MiB = anon ${(sm.Anonymous! / 1024).toFixed(1)} + file ${((sm.Rss! - sm.Anonymous!) / 1024).toFixed(1)}; Pss ${(sm.Pss! / 1024).toFixed(1)}`);
  console.log(`    heap spaces: ${(p.heapSpaces as { name: string; size: number; used: number }[]).map((s) => `${s.name} ${(s.size / MiB).toFixed(1)}/${(s.used / MiB).toFixed(1)}`).join(', ')}`);
  console.log(`    threads (${(p.threads as string[]).length}): ${(p.threads as string[]).join(', ')}`);
  const maps = Object.entries(p.mappings as Record<string, { rssKb: number; anonKb: number }>).sort((a, b) => b[1].rssKb - a[1].rssKb).slice(0, 6);
  console.log(`    mappings: ${maps.map(([k, v]) => `${k.split('/').pop()} ${(v.rssKb / 1024).toFixed(1)} (anon ${(v.anonKb / 1024).toFixed(1)})`).join(', ')}`);
  console.log(`    modules: ${mods.length} loaded, ${(p.builtins as string[]).length} built-ins`);
  for (const [k, v] of [...byPkg].sort((a, b) => b[1].bytes - a[1].bytes).slice(0, 20)) console.log(`      ${k.padEnd(36)} ${String(v.n).padStart(4)} files ${(v.bytes / 1024).toFixed(0).padStart(6)} KiB source`);
}

function summary(runs: AgentRun[]): Record<string, number> {
  const m = (f: (r: AgentRun) => number): number => median(runs.map(f));
  return {
    steadyRssMiB: m((r) => r.idle.rssMiB),
    steadyPssMiB: m((r) => r.idle.pssMiB),
    peakRssMiB: m((r) => r.peakRssMiB),
    idleCpuPercent: m((r) => r.idleCpuPercent),
    startToFirstCertMs: m((r) => r.startToFirstCertMs),
    startCpuMs: m((r) => r.startCpuMs),
    threads: runs[0]!.idle.threads,
    ...(runs[0]!.burst ? { burstMs: m((r) => r.burst!.elapsedMs), burstCpuMs: m((r) => r.burst!.cpuMs), burstPeakRssMiB: m((r) => r.burst!.peakRssMiB), burstErrors: runs.reduce((a, r) => a + r.burst!.errors, 0) } : {}),
  };
}

/** The variants side by side (medians), bare Node's steady RSS for scale. */
function printVariants(byVariant: AgentRun[][], bareRssMiB: number): void {
  console.log(`  variants side by side (medians of ${RUNS} interleaved run(s) each; bare Node ${bareRssMiB.toFixed(1)} MiB):`);
  console.log(`    ${'variant'.padEnd(14)} ${'steady RSS'.padStart(10)} ${'PSS'.padStart(7)} ${'peak'.padStart(7)} ${'idle CPU %'.padStart(10)} ${'start CPU ms'.padStart(12)} ${'1st cert ms'.padStart(11)} ${'threads'.padStart(7)}${BURST ? ` ${'burst ms'.padStart(8)} ${'burst CPU'.padStart(9)} ${'burst peak'.padStart(10)} errors` : ''}  args`);
  for (const [k, v] of VARIANTS.entries()) {
    const s = summary(byVariant[k]!);
    const args = [rel(v.entry), ...v.nodeArgs, ...Object.entries(v.env).map(([a, b]) => `${a}=${b}`)].join(' ');
    console.log(`    ${v.label.padEnd(14)} ${s.steadyRssMiB!.toFixed(1).padStart(10)} ${s.steadyPssMiB!.toFixed(1).padStart(7)} ${s.peakRssMiB!.toFixed(1).padStart(7)} ${s.idleCpuPercent!.toFixed(2).padStart(10)} ${s.startCpuMs!.toFixed(0).padStart(12)} ${s.startToFirstCertMs!.toFixed(0).padStart(11)} ${String(s.threads).padStart(7)}${BURST ? ` ${s.burstMs!.toFixed(0).padStart(8)} ${s.burstCpuMs!.toFixed(0).padStart(9)} ${s.burstPeakRssMiB!.toFixed(1).padStart(10)} ${String(s.burstErrors).padStart(6)}` : ''}  ${args}`);
  }
}

/** CPU (ms) a process running `code` uses from start to exit, from its own process.cpuUsage() at exit. */
async function startCpu(code: string): Promise<number> {
  const p = spawn(node, ['--input-type=module', '-e', `${code}; process.on('exit', () => { const c = process.cpuUsage(); process.stdout.write(String((c.user + c.system) / 1000)); });`], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  p.stdout!.on('data', (d: Buffer) => (out += d));
  await new Promise((r) => p.once('exit', r));
  return Number(out);
}

const dir = tempDir('castellan-footprint-');
const bareStartCpuMs = median([await startCpu(''), await startCpu(''), await startCpu('')]);
const grpcStartCpuMs = median([await startCpu("await import('@grpc/grpc-js')"), await startCpu("await import('@grpc/grpc-js')"), await startCpu("await import('@grpc/grpc-js')")]);
const server = await startBenchServer({ identities: 1, extraArgs: ['--http-listen', '127.0.0.1:0'] });
const bare = baseline(BARE);
const grpc = baseline(GRPC);
try {
  const byVariant = VARIANTS.map(() => [] as AgentRun[]);
  for (let i = 0, n = 0; i < RUNS; i++) for (const [k, v] of VARIANTS.entries()) byVariant[k]!.push(await runAgent({ target: server.target, rootPem: server.rootPem, token: server.sampleToken }, dir.path, n++, v));
  const runs = byVariant[0]!;
  // The baselines have idled for at least as long as the agent.
  const b = readTree(bare.pid!);
  const g = readTree(grpc.pid!);
  const ca = readTree(server.pid);
  const m = (f: (r: AgentRun) => number): number => median(runs.map(f));
  const out = {
    runs: RUNS,
    idleMs: IDLE_MS,
    entry: rel(ENTRY),
    agentNodeArgs: AGENT_NODE_ARGS,
    workloadApi: WORKLOAD_API,
    agent: {
      steadyRssMiB: m((r) => r.idle.rssMiB),
      steadyPssMiB: m((r) => r.idle.pssMiB),
      peakRssMiB: m((r) => r.peakRssMiB),
      idleCpuPercent: m((r) => r.idleCpuPercent),
      startToSocketMs: m((r) => r.startToSocketMs),
      startToFirstCertMs: m((r) => r.startToFirstCertMs),
      startCpuMs: m((r) => r.startCpuMs),
      processes: runs[0]!.idle.processes,
      threads: runs[0]!.idle.threads,
    },
    bareNode: { rssMiB: b.rssMiB, pssMiB: b.pssMiB, peakRssMiB: b.hwmMiB, threads: b.threads },
    nodeGrpcJs: { rssMiB: g.rssMiB, pssMiB: g.pssMiB, peakRssMiB: g.hwmMiB, threads: g.threads },
    bareNodeStartCpuMs: bareStartCpuMs,
    nodeGrpcJsStartCpuMs: grpcStartCpuMs,
    caServer: { idleRssMiB: ca.rssMiB, threads: ca.threads, processes: ca.processes },
  };
  const f = (x: number): string => x.toFixed(1).padStart(8);
  console.log(`agent-footprint: ${rel(ENTRY)}${AGENT_NODE_ARGS.length ? ` with ${AGENT_NODE_ARGS.join(' ')}` : ''}, SDS${WORKLOAD_API ? ' + Workload API' : ' only'}, ${RUNS} run(s), ${IDLE_MS / 1000} s idle (medians)`);
  console.log(`  ${''.padEnd(40)}   agent bareNode  +grpcjs  target`);
  console.log(`  ${'steady RSS, whole tree (MiB)'.padEnd(40)}${f(out.agent.steadyRssMiB)}${f(b.rssMiB)}${f(g.rssMiB)}     75`);
  console.log(`  ${'steady PSS, whole tree (MiB)'.padEnd(40)}${f(out.agent.steadyPssMiB)}${f(b.pssMiB)}${f(g.pssMiB)}`);
  console.log(`  ${'peak RSS, start-up + first issuance (MiB)'.padEnd(40)}${f(out.agent.peakRssMiB)}${f(b.hwmMiB)}${f(g.hwmMiB)}     90`);
  console.log(`  ${'idle CPU (% of a core)'.padEnd(40)}${f(out.agent.idleCpuPercent)}`.padEnd(82) + '      1');
  console.log(`  ${'threads'.padEnd(40)}${f(out.agent.threads)}${f(b.threads)}${f(g.threads)}`);
  console.log(`  ${'start -> SDS socket listening (ms)'.padEnd(40)}${f(out.agent.startToSocketMs)}`);
  console.log(`  ${'start -> first certificate over SDS (ms)'.padEnd(40)}${f(out.agent.startToFirstCertMs)}`.padEnd(82) + '   1000');
  console.log(`  ${'  CPU used until then (ms)'.padEnd(40)}${f(out.agent.startCpuMs)}${f(bareStartCpuMs)}${f(grpcStartCpuMs)}`);
  console.log(`  CA server, idle after issuing: RSS ${ca.rssMiB.toFixed(1)} MiB, ${ca.threads} threads (peak under the 100 000 burst: bench/burst.ts)`);
  if (runs[0]!.probe) printProbe(runs[0]!.probe);
  if (VARIANTS.length > 1) printVariants(byVariant, b.rssMiB);
  console.log(`RESULT ${JSON.stringify({ ...out, ...(VARIANTS.length > 1 ? { variants: VARIANTS.map((v, k) => ({ ...v, entry: rel(v.entry), ...summary(byVariant[k]!) })) } : {}) })}`);
} finally {
  await Promise.all([stop(bare), stop(grpc)]);
  await server.stop();
  dir.cleanup();
}
