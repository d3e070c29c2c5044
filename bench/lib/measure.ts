/**
 * Measurement helpers shared by the issuance benchmarks: wall time and this
 * process's CPU time (process.cpuUsage counts every thread, workers
 * included), rates per second and per CPU-second, and a Go build helper.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

export interface Rate {
  n: number;
  wallSec: number;
  cpuSec: number;
  /** operations per wall-clock second */
  perSec: number;
  /** operations per CPU-second (all threads of the measured process) */
  perCpuSec: number;
}

export function rate(n: number, wallSec: number, cpuSec: number): Rate {
  return { n, wallSec, cpuSec, perSec: n / wallSec, perCpuSec: n / cpuSec };
}

function cpuNow(): number {
  const c = process.cpuUsage();
  return (c.user + c.system) / 1e6;
}

/** Runs `fn(i)` for i in [0, n) after `warmup` untimed calls. */
export function measureSync(n: number, fn: (i: number) => void, warmup = Math.min(500, n)): Rate {
  for (let i = 0; i < warmup; i++) fn(i);
  const c0 = cpuNow();
  const t0 = performance.now();
  for (let i = 0; i < n; i++) fn(i);
  return rate(n, (performance.now() - t0) / 1000, cpuNow() - c0);
}

/** Times one async job that performs `n` operations. */
export async function measureAsync(n: number, job: () => Promise<void>): Promise<Rate> {
  const c0 = cpuNow();
  const t0 = performance.now();
  await job();
  return rate(n, (performance.now() - t0) / 1000, cpuNow() - c0);
}

export const fmt = (x: number): string => (x >= 100 ? Math.round(x).toLocaleString('en-US') : x.toFixed(2));

/** Prints an aligned table. */
export function table(rows: (string | number)[][]): void {
  const cells = rows.map((r) => r.map((c) => (typeof c === 'number' ? fmt(c) : c)));
  const widths = cells[0]!.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  for (const r of cells) console.log(r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  '));
}

/** `go` on PATH? */
export function goVersion(): string | undefined {
  try {
    return execFileSync('go', ['version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return undefined;
  }
}

/** Builds one stdlib-only Go file into `dir` (GOPATH/GOCACHE kept inside `dir`); returns the binary path. */
export function goBuild(source: string, dir: string, name: string): string {
  const out = join(dir, name);
  execFileSync('go', ['build', '-o', out, source], {
    env: { ...process.env, GO111MODULE: 'off', GOFLAGS: '', GOCACHE: join(dir, 'gocache'), GOPATH: join(dir, 'gopath') },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return out;
}

/** Machine line for reports. */
export async function machine(): Promise<string> {
  const os = await import('node:os');
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  return `${cpu}, ${os.availableParallelism()} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}, ${os.type()} ${os.release()}`;
}
