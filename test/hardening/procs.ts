/**
 * Real `castellan` processes for the hardening tests: started through
 * bin/castellan.js under the project's Node 24, every byte of stdout and
 * stderr kept, JSON log lines parsed as they come; plus a CA API client
 * that records everything a caller sees (status, details, headers,
 * trailers).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import * as grpc from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import { IstioCertificateRequestSchema, IstioCertificateService } from '../../src/gen/istio/v1/auth/ca_pb.js';
import { createClient } from '../../src/grpc/service.ts';

export const ROOT = new URL('../..', import.meta.url).pathname;
export const NODE = join(ROOT, 'node_modules/.bin/node');
export const BIN = join(ROOT, 'bin/castellan.js');

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function until(what: string, fn: () => boolean | Promise<boolean>, ms = 30_000, stepMs = 50): Promise<void> {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(stepMs);
  }
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
    s.on('error', reject);
  });
}

export interface Proc {
  readonly name: string;
  readonly child: ChildProcess;
  /** everything written to stdout and stderr, in arrival order per stream */
  readonly stdout: string[];
  readonly stderr: string[];
  /** stderr lines that parsed as JSON (log records) */
  readonly events: Record<string, unknown>[];
  exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  /** the first log record matching `pred` (waits for it) */
  waitFor(pred: (e: Record<string, unknown>) => boolean, ms?: number, what?: string): Promise<Record<string, unknown>>;
  /** sends `signal` and waits for the exit */
  stop(signal?: NodeJS.Signals, ms?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM, then SIGKILL if it has not exited within `ms`; says which it took */
  stopOrKill(ms?: number): Promise<{ graceful: boolean; code: number | null; signal: NodeJS.Signals | null }>;
  text(): string;
}

/** Starts `castellan <args…>`; tracked in `all` so a test's afterAll can kill leftovers. */
export function startCastellan(name: string, args: string[], all: Proc[], o: { env?: NodeJS.ProcessEnv; nodeArgs?: string[] } = {}): Proc {
  const child = spawn(NODE, [...(o.nodeArgs ?? []), BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...o.env } });
  const p: Proc = {
    name,
    child,
    stdout: [],
    stderr: [],
    events: [],
    exited: undefined,
    async waitFor(pred, ms = 30_000, what = 'a log record') {
      let hit: Record<string, unknown> | undefined;
      await until(`${name}: ${what}`, () => {
        if (p.exited) throw new Error(`${name} exited (${p.exited.code ?? p.exited.signal}) while waiting for ${what}:\n${p.stderr.join('\n').slice(-3000)}`);
        hit = p.events.find(pred);
        return hit !== undefined;
      }, ms);
      return hit!;
    },
    async stop(signal = 'SIGTERM', ms = 20_000) {
      if (!p.exited) {
        child.kill(signal);
        try {
          await until(`${name} to exit after ${signal}`, () => p.exited !== undefined, ms);
        } catch (e) {
          throw new Error(`${(e as Error).message}; last stderr lines:\n${p.stderr.slice(-15).join('\n')}`);
        }
      }
      return p.exited!;
    },
    async stopOrKill(ms = 5000) {
      try {
        return { graceful: true, ...(await p.stop('SIGTERM', ms)) };
      } catch {
        return { graceful: false, ...(await p.stop('SIGKILL', 10_000)) };
      }
    },
    text: () => [...p.stdout, ...p.stderr].join('\n'),
  };
  child.stdout!.setEncoding('utf8').on('data', (d: string) => p.stdout.push(d));
  createInterface({ input: child.stderr! }).on('line', (l) => {
    p.stderr.push(l);
    try {
      const j = JSON.parse(l) as unknown;
      if (j && typeof j === 'object') p.events.push(j as Record<string, unknown>);
    } catch {
      /* not a log record */
    }
  });
  child.once('exit', (code, signal) => {
    p.exited = { code, signal };
  });
  all.push(p);
  return p;
}

export function killAll(all: Proc[]): void {
  for (const p of all) if (!p.exited) p.child.kill('SIGKILL');
}

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** One short-lived `castellan …` command (e.g. `castellan ca status`). */
export function castellanOnce(args: string[], timeoutMs = 30_000): Promise<CliRun> {
  return new Promise((resolve) => {
    execFile(NODE, [BIN, ...args], { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

export type CaClient = ReturnType<typeof caClient>;

export function caClient(address: string, rootPem: string | Buffer, opts: grpc.ClientOptions = {}) {
  return createClient(IstioCertificateService, address, grpc.credentials.createSsl(Buffer.from(rootPem)), {
    'grpc.ssl_target_name_override': 'localhost',
    'grpc.default_authority': 'localhost',
    ...opts,
  } as grpc.ClientOptions);
}

/** What a caller saw: the chain on success; otherwise status, details, headers and trailers. */
export interface CallOutcome {
  chain?: string[];
  code?: grpc.status;
  status: string;
  details?: string;
  headers: Record<string, string>;
  trailers: Record<string, string>;
}

const mdText = (md: grpc.Metadata | undefined): Record<string, string> =>
  Object.fromEntries(Object.entries(md?.getMap() ?? {}).map(([k, v]) => [k, Buffer.isBuffer(v) ? v.toString('latin1') : String(v)]));

export async function createCertificate(
  client: CaClient,
  r: { csr: string; ttlSec?: bigint; authorization?: string[]; metadata?: Record<string, string>; deadlineMs?: number },
): Promise<CallOutcome> {
  const md = new grpc.Metadata();
  for (const a of r.authorization ?? []) md.add('authorization', a);
  const req = create(IstioCertificateRequestSchema, { csr: r.csr, validityDuration: r.ttlSec ?? 3600n, metadata: r.metadata });
  // The raw grpc-js call, to see the response headers and the trailers as well as the result.
  const raw = client.raw as grpc.Client & Record<string, (...a: unknown[]) => grpc.ClientUnaryCall>;
  return new Promise((resolve) => {
    let headers: Record<string, string> = {};
    let trailers: Record<string, string> = {};
    let result: { chain?: string[]; err?: grpc.ServiceError } | undefined;
    let status = false;
    const done = () => {
      if (!result || !status) return;
      if (result.err) resolve({ code: result.err.code, status: grpc.status[result.err.code] ?? String(result.err.code), details: result.err.details, headers, trailers: { ...trailers, ...mdText(result.err.metadata) } });
      else resolve({ chain: result.chain, status: 'OK', headers, trailers });
    };
    const call = raw.createCertificate!(req, md, { deadline: Date.now() + (r.deadlineMs ?? 20_000) }, (err: grpc.ServiceError | null, res: { certChain: string[] } | undefined) => {
      result = err ? { err } : { chain: res!.certChain };
      done();
    });
    call.on('metadata', (m: grpc.Metadata) => {
      headers = mdText(m);
    });
    call.on('status', (st: grpc.StatusObject) => {
      trailers = mdText(st.metadata);
      status = true;
      done();
    });
  });
}
