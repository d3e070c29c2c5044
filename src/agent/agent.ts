/**
 * Composition root of `castellan agent` (also embedded by `castellan dev`
 * and tests): CA client → secret cache → SDS server on the Unix socket,
 * plus the optional output directory and the /healthz /readyz /metrics
 * endpoint. The CA root file is watched: when it changes, the CA client
 * trusts the new bundle and `default` is re-issued (the response's bundle
 * then replaces ROOTCA, pushed before the new leaf).
 */
import { readFile } from 'node:fs/promises';
import { systemClock, type Clock, type TimerHandle } from '../platform/clock.ts';
import { CastellanError } from '../platform/errors.ts';
import { silentLogger, type Logger } from '../platform/logger.ts';
import { startSdsServer, type SdsServer } from '../sds/server.ts';
import { resolveGroup } from '../sds/socket.ts';
import { startOpsServer, type OpsServer } from '../platform/http.ts';
import { createCaClient, type CaClient } from './ca-client.ts';
import { SecretCache, type CertificateSource, type IssuedCertificate } from './cache.ts';
import type { KeyType } from './csr.ts';
import { createAgentMetrics, type AgentMetrics } from './metrics.ts';
import { writeOutputBundle, writeOutputDir } from './output.ts';
import type { WorkloadApi } from '../workload/agent-side.ts';

export interface AgentConfig {
  /** host:port of the CA */
  caAddress: string;
  /** Path of the PEM bundle trusted for the CA's TLS (watched for changes). */
  caRootCertFile?: string;
  /** PEM bundle given directly (instead of caRootCertFile). */
  caRootPem?: string;
  tokenFile: string;
  trustDomain: string;
  sdsSocket: string;
  /** Group name or gid allowed to connect to the socket. */
  sdsSocketGroup?: string;
  /** ms */
  certTtlMs: number;
  keyType: KeyType;
  graceRatio: number;
  outputDir?: string;
  /** host:port, or null for none */
  httpListen: string | null;
  /** TLS name checked on the CA's certificate when it differs from the host of caAddress. */
  caServerName?: string;
  /** Period of the CA root file check, ms. Default 10 000. */
  rootCheckIntervalMs?: number;
  /** Follow the CA's pushed bundle updates (castellan.v1.TrustService). Default true. */
  bundleWatch?: boolean;
  /** Also serve the SPIFFE Workload API on this Unix socket (src/workload/). */
  workloadApiSocket?: string;
  /** Group name or gid allowed to connect to the Workload API socket. */
  workloadApiSocketGroup?: string;
  /** Renew over mTLS with the current certificate, the token only when it is refused. Default false. */
  renewWithCertificate?: boolean;
}

export interface AgentDeps {
  clock?: Clock;
  logger?: Logger;
  /** Replaces the CA client (tests). */
  source?: CertificateSource;
  /** Called after every issuance (castellan dev prints them). */
  onIssued?: (c: IssuedCertificate) => void;
  /** Cache tuning (tests use short backoffs). */
  backoff?: { initialMs: number; maxMs: number };
  checkIntervalMs?: number;
  jitter?: number;
}

export interface AgentHandle {
  readonly sdsSocket: string;
  readonly httpAddress?: string;
  readonly cache: SecretCache;
  readonly metrics: AgentMetrics;
  readonly sds: SdsServer;
  /** The SPIFFE Workload API, when --workload-api-socket is given. */
  readonly workload?: WorkloadApi;
  /** Stops renewing, closes every SDS stream, removes the socket, stops HTTP. */
  close(): Promise<void>;
}

async function readRoot(path: string): Promise<string> {
  try {
    const pem = await readFile(path, 'utf8');
    if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new Error('no certificate in file');
    return pem;
  } catch (e) {
    throw new CastellanError('FAILED_PRECONDITION', 'agent.ca_root', `cannot read the CA root certificate ${path}: ${(e as Error).message}`, { cause: e });
  }
}

interface Endpoints {
  sds: SdsServer;
  ops?: OpsServer;
  workload?: WorkloadApi;
}

/**
 * The agent's servers: SDS on its socket, then the /healthz /readyz /metrics
 * endpoint and the Workload API when asked for. On a failure the ones
 * already started are closed.
 */
async function startEndpoints(config: AgentConfig, gid: number | undefined, cache: SecretCache, metrics: ReturnType<typeof createAgentMetrics>, w: { client: () => CaClient | undefined; clock: Clock; logger: Logger }): Promise<Endpoints> {
  const { logger } = w;
  const sds = await startSdsServer({ socketPath: config.sdsSocket, store: cache, policy: { gid }, logger });
  metrics.bind({ status: () => cache.status(), streams: () => sds.activeStreams(), federated: () => cache.federatedBundles });
  let ops: OpsServer | undefined;
  try {
    // On the main thread: a second V8 isolate for three endpoints would cost the pod more
    // memory than the rest of the agent's heap, and the agent's loop is never busy for long
    // (test/agent/ops-burst.test.ts: probes answered under a burst of SDS clients).
    if (config.httpListen) ops = await startOpsServer(config.httpListen, { registry: metrics.registry, ready: () => cache.status().ready, logger, thread: false });
  } catch (e) {
    await sds.close();
    throw e;
  }
  let workload: WorkloadApi | undefined;
  try {
    // Loaded only when asked for: an SDS-only agent never imports it.
    if (config.workloadApiSocket) workload = await (await import('../workload/agent-side.ts')).startWorkloadApi(config, { cache, client: w.client, registry: metrics.registry, clock: w.clock, logger });
  } catch (e) {
    await ops?.close();
    await sds.close();
    throw e;
  }
  return { sds, ops, workload };
}

/**
 * Reads the CA root file every `periodMs` and calls `onChange` with its
 * content when it differs from the last seen (`initial` at first); an
 * unreadable file keeps the previous root. Returns a function that stops.
 * (Exported for test/agent/root-file-watch.test.ts.)
 */
export function watchRootFile(path: string, initial: string | undefined, periodMs: number, clock: Clock, logger: Logger, onChange: (pem: string) => Promise<void>): () => void {
  let last = initial;
  let stopped = false;
  let timer: TimerHandle | undefined;
  const check = async (): Promise<void> => {
    try {
      const pem = await readRoot(path);
      if (pem !== last) {
        last = pem;
        logger.info({ event: 'agent.ca_root_changed', path }, 'CA root certificate file changed');
        await onChange(pem);
      }
    } catch (e) {
      logger.warn({ event: 'agent.ca_root_unreadable', err: (e as Error).message }, 'keeping the previous CA root');
    }
    if (!stopped) timer = clock.setTimer(() => void check(), periodMs);
  };
  timer = clock.setTimer(() => void check(), periodMs);
  return () => {
    stopped = true;
    timer?.cancel();
  };
}

export async function startAgent(config: AgentConfig, deps: AgentDeps = {}): Promise<AgentHandle> {
  const clock = deps.clock ?? systemClock;
  const logger = deps.logger ?? silentLogger();
  const metrics = createAgentMetrics({ clock }, { processMetrics: !deps.source });
  const gid = config.sdsSocketGroup ? resolveGroup(config.sdsSocketGroup) : undefined;

  // What the agent trusts for the CA's own TLS certificate: the root file at first, then
  // the newest bundle, from the file or pushed by the CA over the verified channel.
  let trustPem = config.caRootPem ?? (config.caRootCertFile ? await readRoot(config.caRootCertFile) : undefined);
  /** the root file as first read: the file watch reports only a change from it */
  const lastFilePem = trustPem;
  let client: CaClient | undefined;
  const makeClient = (): CaClient => {
    if (!trustPem) throw new CastellanError('INVALID_ARGUMENT', 'config.invalid', 'castellan agent: --ca-root-cert is required');
    return createCaClient({ address: config.caAddress, rootPem: trustPem, tokenFile: config.tokenFile, metrics, serverName: config.caServerName, renewWithCertificate: config.renewWithCertificate, logger });
  };
  if (!deps.source) client = makeClient();
  const source: CertificateSource = deps.source ?? { sign: (csr, ttl, current) => client!.sign(csr, ttl, current) };

  const cache = new SecretCache({
    source,
    clock,
    logger,
    ttlMs: config.certTtlMs,
    keyType: config.keyType,
    graceRatio: config.graceRatio,
    trustDomain: config.trustDomain,
    backoff: deps.backoff,
    checkIntervalMs: deps.checkIntervalMs,
    jitter: deps.jitter,
    onIssued: async (c) => {
      if (config.outputDir) await writeOutputDir(config.outputDir, c);
      deps.onIssued?.(c);
    },
    onBundle: async (bundlePem) => {
      if (config.outputDir) await writeOutputBundle(config.outputDir, bundlePem);
    },
  });

  let endpoints: Endpoints;
  try {
    endpoints = await startEndpoints(config, gid, cache, metrics, { client: () => client, clock, logger });
  } catch (e) {
    client?.close();
    throw e;
  }
  const { sds, ops, workload } = endpoints;
  cache.start();

  let closed = false;
  let tainted: string[] = [];

  // CA pushes (castellan.v1.TrustService): tainted issuers re-issue at once, new roots reach Envoy first, federated bundles before the Workload API reads them.
  let stopWatch: (() => void) | undefined;
  let watchTimer: TimerHandle | undefined;
  let watchDelay = 1000;
  const openWatch = async (): Promise<void> => {
    if (closed || !client) return;
    const c = client;
    const retry = (why: string): void => {
      if (closed || client !== c) return;
      logger.debug({ event: 'agent.bundle_watch_retry', why, inMs: watchDelay }, 'bundle watch ended; reconnecting');
      watchTimer = clock.setTimer(() => void openWatch(), watchDelay);
      watchDelay = Math.min(60_000, watchDelay * 2);
    };
    try {
      stopWatch = await c.watchBundle(
        (u) => {
          watchDelay = 1000;
          tainted = u.taintedIds;
          cache.applyFederatedBundles(u.federatedBundles);
          workload?.onBundleUpdate(u);
          void onBundle(u.bundlePem);
        },
        (e) => {
          if (e?.code === 'ca_client.unimplemented') {
            logger.info({ event: 'agent.bundle_watch_unsupported' }, 'the CA does not push bundle updates; relying on its responses and the root file');
            return;
          }
          retry(e?.code ?? 'ended');
        },
      );
    } catch (e) {
      retry((e as CastellanError).code ?? 'error');
    }
  };
  /** A new trust bundle: trust it for the CA's TLS (new connections), and let the cache act on it. */
  const onBundle = async (bundlePem: string): Promise<void> => {
    if (closed) return;
    if (!deps.source && bundlePem !== trustPem) {
      trustPem = bundlePem;
      const old = client;
      // Cancel the old stream first: closing a grpc-js client leaves its open calls (and
      // their connection) running.
      const stopOld = stopWatch;
      stopWatch = undefined;
      watchTimer?.cancel();
      client = makeClient();
      void openWatch();
      stopOld?.();
      old?.close();
    }
    await cache.applyBundleUpdate({ bundlePem, taintedIds: tainted });
  };
  if (!deps.source && config.bundleWatch !== false) void openWatch();

  // Watch the CA root file as well (e.g. the istio-ca-root-cert ConfigMap).
  const rootPath = config.caRootCertFile;
  const stopRootWatch = rootPath && !deps.source ? watchRootFile(rootPath, lastFilePem, config.rootCheckIntervalMs ?? 10_000, clock, logger, onBundle) : undefined;

  return {
    sdsSocket: sds.socketPath,
    httpAddress: ops?.address,
    cache,
    metrics,
    sds,
    workload,
    async close() {
      if (closed) return;
      closed = true;
      stopRootWatch?.();
      watchTimer?.cancel();
      stopWatch?.();
      cache.stop();
      await workload?.close();
      await sds.close();
      await ops?.close();
      client?.close();
    },
  };
}
