/**
 * `castellan dev`: the whole system on one machine, no Kubernetes.
 *   CA server (self-signed, file keyring under <data-dir>/ca, TLS on loopback)
 *   + a DEVELOPMENT-ONLY token issuer standing in for the cluster
 *   + two agents (default/frontend, default/backend), each on its own SDS socket
 *   + two workloads that get their secrets over SDS and call each other with
 *     mutual TLS, each checking the other's SPIFFE ID.
 * Everything it writes stays under <data-dir> (gitignored `.castellan/`).
 */
import { join, relative } from 'node:path';
import { startAgent, type AgentHandle } from '../agent/agent.ts';
import { leafInfo } from '../agent/cert-info.ts';
import { DevTokenIssuer } from '../identity/dev-issuer.ts';
import { ensurePrivateDir, writeFileAtomic } from '../platform/files.ts';
import type { Logger } from '../platform/logger.ts';
import { startCaServer, type CaServerHandle } from '../server/ca-server.ts';
import { defaultServerConfig } from '../server/config.ts';
import { watchSecrets, type SdsWatch, type WorkloadSecrets } from './sds-client.ts';
import { callBackend, startBackend, type Backend } from './workloads.ts';
import { startWorkloadApiDemo } from './workload-demo.ts';

export interface DemoOptions {
  dataDir: string;
  /** Leaf lifetime, ms (short, so renewals show). */
  certTtlMs: number;
  /** CA listen address; port 0 = ephemeral. */
  grpcListen: string;
  trustDomain: string;
  logger: Logger;
  /** Where the readable lines go. */
  print: (line: string) => void;
}

export interface Demo {
  /** Resolves after the first mTLS call (rejects if it failed). */
  readonly firstCall: Promise<void>;
  close(): Promise<void>;
}

const NS = 'default';
const TOKEN_TTL_S = 3600;

/** A path as the user would type it: relative to the cwd when inside it. */
function shown(p: string): string {
  const r = relative(process.cwd(), p);
  return r === '' ? '.' : r.startsWith('..') ? p : r;
}

function hhmmss(ms: number): string {
  return new Date(ms).toISOString().slice(11, 19) + 'Z';
}

function describe(s: WorkloadSecrets): { id: string; serial: string; notAfter: number } {
  const i = leafInfo(s.chainPem);
  return { id: i.uris[0] ?? '?', serial: i.serial.replace(/^0+/, '').slice(0, 16).toLowerCase(), notAfter: i.notAfter };
}

export async function startDemo(o: DemoOptions): Promise<Demo> {
  const { print, logger } = o;
  const closers: (() => Promise<void> | void)[] = [];
  const close = async (): Promise<void> => {
    for (const c of closers.splice(0).reverse()) {
      try {
        await c();
      } catch (e) {
        logger.warn({ err: e }, 'shutdown step failed');
      }
    }
  };
  try {
    await ensurePrivateDir(o.dataDir);
    print('castellan dev: DEVELOPMENT ONLY. Local CA + local token issuer, no Kubernetes. Data in ' + shown(o.dataDir));

    const issuer = await DevTokenIssuer.create({ dir: join(o.dataDir, 'dev-token-issuer') });
    const ca: CaServerHandle = await startCaServer(
      defaultServerConfig({
        dataDir: join(o.dataDir, 'ca'),
        trustDomain: o.trustDomain,
        grpcListen: o.grpcListen,
        httpListen: null,
        defaultTtlMs: o.certTtlMs,
        auth: { audiences: ['istio-ca'], jwt: { jwksFile: issuer.jwksPath, issuer: issuer.issuer } },
        signer: { workers: 1, maxBatchSize: 16, maxBatchWaitMs: 1, maxQueue: 1000 },
        logLevel: 'warn',
        shutdownGraceMs: 1000,
        // rotation by hand is part of the demo: a short propagation time, no automatic steps
        propagationMs: 30_000,
        autoRotate: false,
      }),
      { logger },
    );
    closers.push(() => ca.close());
    const root = leafInfo(ca.trustBundlePem);
    print(`CA        listening on ${ca.grpcAddress} (gRPC over TLS), root serial ${root.serial.slice(0, 16).toLowerCase()} valid until ${new Date(root.notAfter).toISOString().slice(0, 10)}`);
    print(`tokens    development-only issuer ${issuer.issuer} (JWKS ${shown(issuer.jwksPath)}); never use it in production`);

    const secrets = new Map<string, WorkloadSecrets>();
    const agents = new Map<string, AgentHandle>();
    for (const sa of ['frontend', 'backend']) {
      const dir = join(o.dataDir, sa);
      await ensurePrivateDir(dir);
      const tokenFile = join(dir, 'token');
      const mint = async (): Promise<void> => writeFileAtomic(tokenFile, await issuer.mint({ namespace: NS, serviceAccount: sa, ttlSeconds: TOKEN_TTL_S }), 0o600);
      await mint();
      // Like the kubelet: refresh the projected token well before it expires.
      const refresh = setInterval(() => void mint().catch((e: unknown) => logger.warn({ err: e }, 'token refresh failed')), (TOKEN_TTL_S / 2) * 1000);
      refresh.unref();
      closers.push(() => clearInterval(refresh));
      const agent = await startAgent(
        {
          caAddress: ca.grpcAddress,
          caRootPem: ca.trustBundlePem,
          caServerName: 'localhost',
          tokenFile,
          trustDomain: o.trustDomain,
          sdsSocket: join(dir, 'sds.sock'),
          workloadApiSocket: join(dir, 'workload.sock'),
          certTtlMs: o.certTtlMs,
          keyType: 'ec-p256',
          graceRatio: 0.5,
          httpListen: null,
        },
        { logger },
      );
      closers.push(() => agent.close());
      agents.set(sa, agent);
    }

    const ids = { frontend: `spiffe://${o.trustDomain}/ns/${NS}/sa/frontend`, backend: `spiffe://${o.trustDomain}/ns/${NS}/sa/backend` };
    let backend: Backend | undefined;
    let started = false;
    let resolveFirst!: () => void;
    let rejectFirst!: (e: Error) => void;
    const firstCall = new Promise<void>((res, rej) => {
      resolveFirst = res;
      rejectFirst = rej;
    });
    firstCall.catch(() => undefined);

    const call = async (label: string): Promise<void> => {
      const r = await callBackend({ port: backend!.port, secrets: secrets.get('frontend')!, expectServer: ids.backend });
      print(`${label.padEnd(9)} frontend → backend over mutual TLS (${r.protocol}): OK, server is ${r.serverId}; backend says "${r.reply}"`);
    };

    const onSecrets = async (sa: 'frontend' | 'backend', s: WorkloadSecrets): Promise<void> => {
      const renewed = secrets.has(sa);
      const prev = secrets.get(sa);
      secrets.set(sa, s);
      const d = describe(s);
      if (prev && describe(prev).serial === d.serial) {
        // ROOTCA-only change (a root prepared or retired): the workloads trust the new bundle at once.
        if (prev.bundlePem !== s.bundlePem) {
          print(`bundle    ${sa} now trusts ${(s.bundlePem.match(/BEGIN CERTIFICATE/g) ?? []).length} root(s) (pushed over SDS)`);
          if (sa === 'backend') backend?.update(s);
        }
        return;
      }
      if (!renewed) {
        print(`${sa.padEnd(9)} ${d.id}  serial ${d.serial}  expires ${hhmmss(d.notAfter)}  (over SDS: ${shown(agents.get(sa)!.sdsSocket)})`);
      } else {
        print(`renewed   ${sa} → serial ${d.serial}, expires ${hhmmss(d.notAfter)} (pushed over SDS)`);
        if (sa === 'backend') backend?.update(s);
      }
      if (!started && secrets.has('frontend') && secrets.has('backend')) {
        started = true;
        backend = await startBackend({
          secrets: secrets.get('backend')!,
          selfId: ids.backend,
          allowedClient: ids.frontend,
          onRefused: (why) => logger.warn({ event: 'dev.backend_refused', why }, 'backend refused a connection'),
        });
        closers.push(() => backend!.close());
        try {
          await call('mTLS');
          print(`running   certificates live ${Math.round(o.certTtlMs / 1000)}s and renew at half-life; each renewal is printed and re-tested. Ctrl-C to stop.`);
          print(`rotate    in another terminal: npx castellan ca status --data-dir ${shown(join(o.dataDir, 'ca'))}  (then prepare, activate after 30 s, taint, retire)`);
          const workloadSocket = agents.get('frontend')!.workload!.server.socketPath;
          print(`spiffe    Workload API on ${shown(workloadSocket)}: npx castellan workload fetch-x509 --socket ${shown(workloadSocket)}`);
          const wl = startWorkloadApiDemo({ callerSocket: workloadSocket, backendSocket: agents.get('backend')!.workload!.server.socketPath, backendPort: () => backend!.port, backendId: ids.backend, print, logger });
          closers.push(wl.close);
          await wl.done;
          resolveFirst();
        } catch (e) {
          print(`mTLS      frontend → backend FAILED: ${(e as Error).message}`);
          rejectFirst(e as Error);
        }
      } else if (renewed && started) {
        try {
          await call('mTLS');
        } catch (e) {
          print(`mTLS      frontend → backend FAILED after renewal: ${(e as Error).message}`);
        }
      }
    };

    for (const sa of ['frontend', 'backend'] as const) {
      const w: SdsWatch = watchSecrets(agents.get(sa)!.sdsSocket, `${sa}~demo`, (s) => {
        void onSecrets(sa, s).catch((e: unknown) => logger.error({ err: e }, 'demo step failed'));
      });
      closers.push(() => w.close());
    }
    return { firstCall, close };
  } catch (e) {
    await close();
    throw e;
  }
}
