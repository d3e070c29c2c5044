/** In-process CA servers of chosen trust domains for the federation tests, and a WatchBundle reader. */
import { execFile } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import { TrustService, WatchBundleRequestSchema, type BundleUpdate } from '../../src/gen/castellan/v1/trust_pb.js';
import { createClient } from '../../src/grpc/service.ts';
import { DevTokenIssuer } from '../../src/identity/dev-issuer.ts';
import { createLogger, silentLogger, type Logger } from '../../src/platform/logger.ts';
import { startCaServer, type CaServerDeps, type CaServerHandle } from '../../src/server/ca-server.ts';
import { defaultServerConfig, type ServerConfig } from '../../src/server/config.ts';

const root = new URL('../..', import.meta.url).pathname;

export interface FedCa {
  server: CaServerHandle;
  issuer: DevTokenIssuer;
  config: ServerConfig;
  dataDir: string;
  stop(): Promise<void>;
  restart(over?: Partial<ServerConfig>): Promise<void>;
}

export async function startFedCa(dir: string, name: string, trustDomain: string, over: Partial<ServerConfig> = {}, deps: CaServerDeps = {}): Promise<FedCa> {
  const dataDir = join(dir, name);
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const issuer = await DevTokenIssuer.create({ dir: join(dir, `${name}-issuer`) });
  let config = defaultServerConfig({
    dataDir,
    trustDomain,
    grpcListen: '127.0.0.1:0',
    httpListen: null,
    propagationMs: 0,
    autoRotate: false,
    auth: { audiences: ['istio-ca'], jwt: { jwksFile: issuer.jwksPath, issuer: issuer.issuer } },
    signer: { workers: 0, maxBatchSize: 16, maxBatchWaitMs: 1, maxQueue: 1000 },
    shutdownGraceMs: 200,
    logLevel: 'silent',
    ...over,
  });
  let server = await startCaServer(config, { logger: silentLogger(), ...deps });
  const ca: FedCa = {
    get server() {
      return server;
    },
    issuer,
    get config() {
      return config;
    },
    dataDir,
    stop: () => server.close(),
    async restart(more = {}) {
      config = { ...config, grpcListen: server.grpcAddress, ...more };
      server = await startCaServer(config, { logger: silentLogger(), ...deps });
    },
  };
  return ca;
}

/** A logger that keeps every record (parsed JSON lines) for assertions. */
export function recordingLogger(): { logger: Logger; records: Record<string, unknown>[] } {
  const records: Record<string, unknown>[] = [];
  const logger = createLogger({ level: 'debug', destination: { write: (line: string) => void records.push(JSON.parse(line) as Record<string, unknown>) } });
  return { logger, records };
}

/** Opens WatchBundle (a token of default/watcher) and collects the updates. */
export async function watchBundle(ca: FedCa): Promise<{ updates: BundleUpdate[]; next(pred: (u: BundleUpdate) => boolean, ms?: number): Promise<BundleUpdate>; close(): void }> {
  const token = await ca.issuer.mint({ namespace: 'default', serviceAccount: 'watcher' });
  const client = createClient(TrustService, ca.server.grpcAddress, grpc.credentials.createSsl(Buffer.from(ca.server.trustBundlePem)), { 'grpc.ssl_target_name_override': 'localhost' });
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${token}`);
  const call = client.watchBundle(create(WatchBundleRequestSchema, {}), { metadata: md });
  const updates: BundleUpdate[] = [];
  const waiters = new Set<() => void>();
  call.on('data', (u: BundleUpdate) => {
    updates.push(u);
    for (const w of waiters) w();
  });
  call.on('error', () => undefined);
  return {
    updates,
    next(pred, ms = 15_000) {
      return new Promise((res, rej) => {
        const check = (): void => {
          const u = updates.find(pred);
          if (u) {
            waiters.delete(check);
            clearTimeout(t);
            res(u);
          }
        };
        const t = setTimeout(() => {
          waiters.delete(check);
          rej(new Error(`no matching BundleUpdate within ${ms} ms (${updates.length} seen)`));
        }, ms);
        waiters.add(check);
        check();
      });
    },
    close() {
      call.cancel();
      client.close();
    },
  };
}

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs bin/castellan.js with the project's Node. */
export async function castellan(args: string[], cwd: string, input?: string): Promise<CliRun> {
  const run = promisify(execFile);
  try {
    const p = run(join(root, 'node_modules/.bin/node'), [join(root, 'bin/castellan.js'), ...args], { cwd, timeout: 60_000 });
    if (input !== undefined) {
      p.child.stdin!.end(input);
    }
    const { stdout, stderr } = await p;
    return { code: 0, stdout, stderr };
  } catch (e) {
    const x = e as { code?: number; stdout: string; stderr: string };
    return { code: typeof x.code === 'number' ? x.code : null, stdout: x.stdout, stderr: x.stderr };
  }
}

/** Polls `f` until it returns a truthy value. */
export async function until<T>(f: () => T | Promise<T>, ms = 15_000, what = 'condition'): Promise<NonNullable<T>> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v as NonNullable<T>;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
