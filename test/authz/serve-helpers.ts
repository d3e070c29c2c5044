/** Runs `castellan authz serve` as a child process and finds its addresses in its logs. */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { PYTHON, protoClosure } from '../sds/py-stubs.ts';

const root = join(import.meta.dirname, '../..');
const DEPS = join(root, 'node_modules/@grpc/grpc-js-xds/deps');
const ROOTS = ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((r) => join(DEPS, r));

export interface ServeProcess {
  readonly grpc: string;
  readonly http: string;
  readonly child: ChildProcess;
  /** Every log line so far (pino JSON, parsed). */
  readonly logs: Record<string, unknown>[];
  /** Resolves with the next log line satisfying `pred`. */
  waitLog(pred: (l: Record<string, unknown>) => boolean, ms?: number): Promise<Record<string, unknown>>;
  stop(): Promise<number | null>;
}

export async function startServe(args: string[]): Promise<ServeProcess> {
  const env = { ...process.env };
  delete env.CASTELLAN_LOG_LEVEL;
  const child = spawn(join(root, 'node_modules/.bin/node'), [join(root, 'bin/castellan.js'), 'authz', 'serve', '--grpc-listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0', ...args], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
    env,
  });
  const logs: Record<string, unknown>[] = [];
  const waiters: { pred: (l: Record<string, unknown>) => boolean; resolve: (l: Record<string, unknown>) => void }[] = [];
  let raw = '';
  createInterface({ input: child.stderr! }).on('line', (line) => {
    raw += line + '\n';
    let l: Record<string, unknown>;
    try {
      l = JSON.parse(line) as Record<string, unknown>;
    } catch {
      l = { raw: line };
    }
    logs.push(l);
    for (const w of [...waiters]) {
      if (w.pred(l)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(l);
      }
    }
  });
  const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
  const waitLog = (pred: (l: Record<string, unknown>) => boolean, ms = 15_000): Promise<Record<string, unknown>> => {
    const seen = logs.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timed out waiting for a log line; logs so far:\n${raw}`)), ms);
      waiters.push({ pred, resolve: (l) => (clearTimeout(t), resolve(l)) });
      void exited.then((code) => reject(new Error(`serve exited with ${code}:\n${raw}`)));
    });
  };
  const listening = await waitLog((l) => l.event === 'authz.listening');
  return {
    grpc: String(listening.grpc),
    http: String(listening.http),
    child,
    logs,
    waitLog,
    async stop() {
      if (child.exitCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      return exited;
    },
  };
}

/** Python grpcio stubs for ext_authz (envoy/service/auth/v3) and its imports. */
export function generateExtAuthzStubs(outDir: string): void {
  const files = protoClosure(['envoy/service/auth/v3/external_auth.proto']);
  execFileSync(PYTHON, ['-m', 'grpc_tools.protoc', ...ROOTS.map((r) => `-I${r}`), `--python_out=${outDir}`, `--grpc_python_out=${outDir}`, ...files], { stdio: 'pipe' });
}

export { PYTHON };
