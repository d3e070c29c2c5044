/**
 * Composition root of `castellan server`: keyring → signer → authenticators
 * → gRPC (TLS) + health + ops HTTP. `startCaServer` is also what tests and
 * `castellan dev` embed.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { HealthImplementation } from 'grpc-health-check';
import { IstioCertificateRequestSchema, IstioCertificateResponseSchema, IstioCertificateService, type IstioCertificateRequest, type IstioCertificateResponse } from '../gen/istio/v1/auth/ca_pb.js';
import { addService, bindServer, shutdownServer } from '../grpc/service.ts';
import { ERROR_TRAILER, STATUS_OF, toGrpcError } from '../grpc/status.ts';
import { installUnaryFastPath } from '../grpc/unary-fast-path.ts';
import { MemoryCertificateProvider } from '../grpc/tls-provider.ts';
import { systemClock, type Clock, type TimerHandle } from '../platform/clock.ts';
import { asCastellanError, CastellanError } from '../platform/errors.ts';
import { createLogger, type Logger } from '../platform/logger.ts';
import { ensurePrivateDir } from '../platform/files.ts';
import type { SigningAuthority } from '../ca/authority.ts';
import { certInfo } from '../ca/authority.ts';
import type { IssuerMaterial } from '../ca/issue.ts';
import type { KeyringView } from '../ca/keyring.ts';
import { fileKeystore, writeRootCertFile } from '../ca/keystore-file.ts';
import type { Keystore, LeaderElector, TrustBundlePublisher } from '../ca/keystore.ts';
import { alwaysLeader } from '../ca/keystore.ts';
import { CaManager } from '../ca/manager.ts';
import { issueServingCertificate } from '../ca/serving.ts';
import { BatchSigner } from '../ca/signer/index.ts';
import { BundleUpdateSchema, TrustService } from '../gen/castellan/v1/trust_pb.js';
import { createTokenAuthenticator } from '../identity/index.ts';
import type { TokenAuthenticator } from '../identity/types.ts';
import { JwtKeyManager } from '../ca/jwt-manager.ts';
import { startAdminServer, type AdminServer } from './admin.ts';
import { addJwtSvidService, jwtBundleFields } from './jwt-service.ts';
import { authenticate, createCertificate, type CaServiceDeps } from './ca-service.ts';
import type { ServerConfig } from './config.ts';
import { startOpsServer, type OpsServer } from './http.ts';
import { createCaMetrics, type CaMetrics } from './metrics.ts';
import { KeyedRateLimiter, peerAddress } from './ratelimit.ts';

export const CA_SERVICE_NAME = 'istio.v1.auth.IstioCertificateService';
const CREATE_CERTIFICATE_PATH = `/${CA_SERVICE_NAME}/CreateCertificate`;
/** Lifetime of the server's own TLS certificate; re-issued at half-life and on every rotation. */
const SERVING_TTL_MS = 7 * 24 * 3600_000;

export interface CaServerHandle {
  /** host:port (or unix:/path) the CA API is bound to */
  readonly grpcAddress: string;
  readonly httpAddress?: string;
  /** the admin API's Unix socket */
  readonly adminSocket: string;
  /** PEM of every trusted root now (what clients pass as --ca-root-cert) */
  readonly trustBundlePem: string;
  readonly metrics: CaMetrics;
  readonly manager: CaManager;
  /** The JWT-SVID signing keys (absent with --no-jwt-svid). */
  readonly jwtKeys?: JwtKeyManager;
  /** The authority that signs now. */
  authority(): SigningAuthority;
  /** Stops accepting calls, lets in-flight ones finish (up to the shutdown grace), frees everything. */
  close(): Promise<void>;
}

export interface CaServerDeps {
  clock?: Clock;
  logger?: Logger;
  /** Replace the keystore, leader election or bundle publisher (tests, embedding). */
  keystore?: Keystore;
  leader?: LeaderElector;
  publisher?: TrustBundlePublisher;
}

export function issuerMaterial(a: SigningAuthority): IssuerMaterial {
  return { id: a.id, certDer: a.certDer, keyPkcs8Der: a.keyPkcs8Der, notBefore: a.notBefore, notAfter: a.notAfter };
}

/** Every value of the `authorization` metadata key, as text (authentication looks at all of them). */
function authorizationOf(md: grpc.Metadata): string[] {
  return md.get('authorization').map((v) => (typeof v === 'string' ? v : v.toString('latin1')));
}

/** Request ids: unique per process start (random prefix) and cheap (a counter), not secret. */
const BOOT_ID = randomBytes(4).toString('hex');
let requestCounter = 0;
function nextRequestId(): string {
  return `${BOOT_ID}-${(++requestCounter).toString(36)}`;
}

/** Where the keyring lives, whom this replica defers to, and where the bundle is published. */
async function clusterPorts(config: ServerConfig, deps: CaServerDeps, logger: Logger): Promise<{ keystore: Keystore; leader: LeaderElector; publisher?: TrustBundlePublisher }> {
  if (config.keystore.kind === 'file') {
    return { keystore: deps.keystore ?? (await fileKeystore({ dataDir: config.dataDir })), leader: deps.leader ?? alwaysLeader(), publisher: deps.publisher };
  }
  const k = config.keystore;
  const { secretKeystore } = await import('../kube/keystore-secret.ts');
  const { leaseElector } = await import('../kube/lease.ts');
  const identity = process.env.POD_NAME ?? `${(await import('node:os')).hostname()}-${process.pid}`;
  const keystore = deps.keystore ?? secretKeystore({ kubeconfig: k.kubeconfig, namespace: k.secretNamespace, name: k.secretName, logger });
  const leader = deps.leader ?? leaseElector({ kubeconfig: k.kubeconfig, namespace: k.leaseNamespace, name: k.leaseName, identity, logger });
  let publisher = deps.publisher;
  if (!publisher && config.publishTrustBundle) {
    const { configMapBundlePublisher } = await import('../kube/bundle-publisher.ts');
    publisher = configMapBundlePublisher({ kubeconfig: k.kubeconfig, namespaceSelector: config.publishTrustBundle.namespaceSelector, logger, leader });
  }
  return { keystore, leader, publisher };
}

/** PEM the server verifies client certificates against: every trusted root and every signer's chain. */
function clientTrustPem(view: KeyringView): string {
  const parts = new Set<string>([view.trustBundlePem]);
  for (const a of view.authorities.values()) for (const c of a.chainPem) parts.add(c);
  return [...parts].join('');
}

export async function startCaServer(config: ServerConfig, deps: CaServerDeps = {}): Promise<CaServerHandle> {
  const clock = deps.clock ?? systemClock;
  const logger = deps.logger ?? createLogger({ level: config.logLevel });
  await ensurePrivateDir(config.dataDir);
  const { keystore, leader, publisher } = await clusterPorts(config, deps, logger);
  const manager = await CaManager.start({
    keystore,
    trustDomain: config.trustDomain,
    mode: config.cacertsDir ? { kind: 'plugin', cacertsDir: config.cacertsDir } : { kind: 'self-signed', keyType: config.caKeyType, rootTtlMs: config.rootTtlMs },
    propagationMs: config.propagationMs,
    autoRotate: config.autoRotate,
    maxLeafTtlMs: config.maxTtlMs,
    leader,
    clock,
    logger,
  });
  const jwtKeys = config.jwt
    ? await JwtKeyManager.start({ keyring: manager, alg: config.jwt.alg, keyTtlMs: config.jwt.keyTtlMs, propagationMs: config.propagationMs, autoRotate: config.autoRotate, leader, clock, logger })
    : undefined;
  const first = manager.view();
  logger.info(
    { event: 'ca.loaded', keystore: keystore.where, id: first.active.id, keyType: first.active.keyType, notAfter: new Date(first.active.notAfter).toISOString(), authorities: first.records.length },
    'signing authority loaded',
  );

  const signer = new BatchSigner(config.signer);
  signer.setIssuer(issuerMaterial(first.active));

  let tokenAuth: TokenAuthenticator | undefined;
  if (config.auth.jwt || config.auth.tokenReview) {
    tokenAuth = createTokenAuthenticator({
      trustDomain: config.trustDomain,
      audiences: config.auth.audiences,
      jwt: config.auth.jwt,
      tokenReview: config.auth.tokenReview,
      clock,
      logger,
    });
  } else {
    logger.warn({ event: 'auth.no_token_method' }, 'no token authentication configured (--jwks-file, --jwks-uri, --oidc-issuer or --token-review): only mTLS renewals will be accepted');
  }

  const metrics = createCaMetrics({
    queueDepth: () => signer.stats().queued + signer.stats().inFlight,
    authorities: () => manager.status().map((a) => ({ id: a.id, state: a.state, liveLeaves: a.liveLeaves, notAfterMs: Date.parse(a.notAfter) })),
    rejectedKeyringUpdates: () => manager.rejectedUpdates,
  });
  const setExpiries = (v: KeyringView): void => metrics.setExpiries(Math.min(...v.rootsDer.map((d) => certInfo(d).notAfter)), v.active.notAfter);
  setExpiries(first);

  const serviceDeps: CaServiceDeps = {
    limits: {
      peer: new KeyedRateLimiter({ ratePerSec: config.rateLimits.perPeer, clock }),
      identity: new KeyedRateLimiter({ ratePerSec: config.rateLimits.perIdentity, clock }),
    },
    trustDomain: config.trustDomain,
    defaultTtlMs: config.defaultTtlMs,
    maxTtlMs: config.maxTtlMs,
    view: () => manager.view(),
    onIssued: (id, notAfter) => manager.recordIssued(id, notAfter),
    signer,
    tokenAuth,
    clock,
    logger,
    metrics,
  };

  let credentials: grpc.ServerCredentials;
  let servingTimer: TimerHandle | undefined;
  let provider: MemoryCertificateProvider | undefined;
  const refreshServing = async (): Promise<void> => {
    if (!provider) return;
    servingTimer?.cancel();
    const id = await issueServingCertificate(manager.view().active, { dnsNames: config.serverDns, trustDomain: config.trustDomain, ttlMs: SERVING_TTL_MS, now: clock.now() });
    provider.setIdentity(id.certChainPem, id.keyPem);
    const wait = Math.max(60_000, (id.notAfter - clock.now()) / 2);
    servingTimer = clock.setTimer(() => {
      refreshServing().catch((e: unknown) => logger.error({ err: e, event: 'server.tls_refresh_failed' }, 'could not re-issue the server certificate'));
    }, wait);
  };
  if (config.plaintext) {
    credentials = grpc.ServerCredentials.createInsecure();
    logger.warn({ event: 'server.plaintext', address: config.grpcListen }, 'serving the CA API without TLS (local address only)');
  } else {
    provider = new MemoryCertificateProvider();
    await refreshServing();
    // Client certificates are verified against the roots and every signer's chain,
    // so a leaf presented without its intermediates still verifies.
    provider.setCaCertificates(clientTrustPem(first));
    credentials = grpc.experimental.createCertificateProviderServerCredentials(provider, provider, false);
  }

  // Everything that follows the keyring: signer, TLS identity and client trust, the
  // root file, metrics, publishers and the agents watching the bundle.
  const bundleWatchers = new Set<(v: KeyringView) => void>();
  await writeRootCertFile(config.dataDir, first.trustBundlePem);
  // The leader publishes the bundle: at start if it already leads, and whenever it becomes the leader
  // (an elector learns it leads only after its first round trip to the API).
  const publish = (why: string): void => {
    if (!publisher || !leader.isLeader()) return;
    publisher.publish(manager.view().trustBundlePem).catch((e: unknown) => logger.warn({ event: 'bundle.publish_failed', why, err: e instanceof CastellanError ? e.message : String(e) }, 'could not publish the trust bundle; it is retried'));
  };
  publish('start');
  leader.onChange((l) => {
    if (l) publish('leader');
  });
  const unsubscribe = manager.onChange((view, prev) => {
    signer.setIssuer(issuerMaterial(view.active));
    setExpiries(view);
    provider?.setCaCertificates(clientTrustPem(view));
    if (!prev || prev.active.id !== view.active.id) {
      refreshServing().catch((e: unknown) => logger.error({ err: e, event: 'server.tls_refresh_failed' }, 'could not re-issue the server certificate'));
    }
    if (!prev || prev.trustBundlePem !== view.trustBundlePem) {
      writeRootCertFile(config.dataDir, view.trustBundlePem).catch((e: unknown) => logger.error({ err: e, event: 'bundle.file_failed' }, 'could not write root-cert.pem'));
      publish('bundle_changed');
    }
    for (const w of bundleWatchers) w(view);
    logger.info({ event: 'keyring.applied', generation: view.generation, active: view.active.id, tainted: view.taintedIds, roots: view.rootsDer.length }, 'keyring change applied');
  });

  const server = new grpc.Server({
    'grpc.max_receive_message_length': config.maxRequestBytes,
    'grpc.max_send_message_length': 1024 * 1024,
    'grpc.keepalive_time_ms': 120_000,
    'grpc.keepalive_timeout_ms': 20_000,
    'grpc.max_concurrent_streams': 1000,
  });
  /** CreateCertificate for either transport (grpc-js, or the fast path): answered, logged, measured. */
  type Answer = { ok: true; res: IstioCertificateResponse } | { ok: false; err: CastellanError };
  const answerCreate = async (req: IstioCertificateRequest, authorization: string[], peerCertDer: Uint8Array | undefined, peer: string, requestId: string): Promise<Answer> => {
    const started = process.hrtime.bigint();
    let a: Answer;
    try {
      const res = await createCertificate(serviceDeps, {
        csr: req.csr,
        validityDurationSec: req.validityDuration,
        metadata: req.metadata,
        authorization,
        peerCertDer,
        requestId,
        peer,
      });
      a = { ok: true, res: create(IstioCertificateResponseSchema, { certChain: res.certChain }) };
    } catch (e) {
      const err = asCastellanError(e);
      const level = err.kind === 'INTERNAL' ? 'error' : 'warn';
      logger[level](
        { event: 'ca.request_failed', requestId, peer, code: grpc.status[STATUS_OF[err.kind]], reason: err.code, err: level === 'error' ? e : undefined },
        err.message,
      );
      a = { ok: false, err };
    }
    metrics.latency.observe({ code: grpc.status[a.ok ? grpc.status.OK : STATUS_OF[a.err.kind]] }, Number(process.hrtime.bigint() - started) / 1e9);
    return a;
  };
  addService(server, IstioCertificateService, {
    createCertificate(call, callback) {
      const requestId = nextRequestId();
      // Response headers go out with the answer (one write), not ahead of it.
      const sendHeaders = (): void => {
        const md = new grpc.Metadata();
        md.set('x-request-id', requestId);
        call.sendMetadata(md);
      };
      answerCreate(call.request, authorizationOf(call.metadata), call.getAuthContext()?.sslPeerCertificate?.raw, call.getPeer(), requestId).then(
        (a) => {
          sendHeaders();
          if (a.ok) callback(null, a.res);
          else callback(toGrpcError(a.err));
        },
        (e: unknown) => {
          logger.error({ event: 'ca.handler_crash', requestId, err: e }, 'unexpected error in CreateCertificate');
          sendHeaders();
          callback(toGrpcError(e));
        },
      );
    },
  });
  addService(server, TrustService, {
    watchBundle(call) {
      const authorization = authorizationOf(call.metadata);
      const peerCertDer = call.getAuthContext()?.sslPeerCertificate?.raw;
      const requestId = nextRequestId();
      const send = (v: KeyringView): void => {
        call.write(create(BundleUpdateSchema, { trustBundlePem: v.trustBundlePem, taintedAuthorityIds: [...v.taintedIds], generation: BigInt(v.generation), activeAuthorityId: v.active.id, ...jwtBundleFields(jwtKeys, config.jwt) }));
      };
      let watcher: ((v: KeyringView) => void) | undefined;
      const stop = (): void => {
        if (watcher) bundleWatchers.delete(watcher);
        watcher = undefined;
      };
      call.on('cancelled', stop);
      call.on('close', stop);
      call.on('error', stop);
      // A server-streaming call ends with a status by emitting it as an error (destroy() would
      // leave the stream open without one).
      const refuse = (e: unknown): void => {
        stop();
        call.emit('error', toGrpcError(e));
      };
      if (!serviceDeps.limits!.peer.tryTake(peerAddress(call.getPeer()))) {
        metrics.rateLimited.inc({ scope: 'peer' });
        refuse(new CastellanError('RESOURCE_EXHAUSTED', 'ratelimit.peer', 'too many requests from this address; retry with backoff'));
        return;
      }
      authenticate(serviceDeps, { csr: '', validityDurationSec: 0n, authorization, peerCertDer, requestId }).then(
        (caller) => {
          if (call.cancelled) return;
          logger.debug({ event: 'trust.watch', requestId, spiffeId: caller.spiffeId }, 'bundle watch opened');
          watcher = send;
          bundleWatchers.add(watcher);
          send(manager.view());
        },
        (e: unknown) => {
          metrics.authFailures.inc({ method: peerCertDer ? 'mtls' : 'token' });
          refuse(e);
        },
      );
    },
  });
  if (jwtKeys && config.jwt) addJwtSvidService(server, serviceDeps, jwtKeys, config.jwt, nextRequestId);
  const health = new HealthImplementation({ '': 'SERVING', [CA_SERVICE_NAME]: 'SERVING' });
  health.addToServer(server);

  const port = await bindServer(server, config.grpcListen, credentials);
  // CreateCertificate in the plain form mesh clients send skips grpc-js's per-call machinery
  // (see src/grpc/unary-fast-path.ts); everything else on the port stays grpc-js's.
  const fastPath =
    config.fastPath &&
    installUnaryFastPath(server, {
      path: CREATE_CERTIFICATE_PATH,
      maxRequestBytes: config.maxRequestBytes,
      handle: async (call) => {
        const requestId = nextRequestId();
        let req: IstioCertificateRequest;
        try {
          req = fromBinary(IstioCertificateRequestSchema, call.message);
        } catch {
          return { ok: false, code: grpc.status.INTERNAL, details: 'Error deserializing request' }; // as grpc-js answers it
        }
        const a = await answerCreate(req, call.header('authorization'), call.peerCertDer, call.peer, requestId);
        const headers = { 'x-request-id': requestId };
        if (a.ok) return { ok: true, message: toBinary(IstioCertificateResponseSchema, a.res), headers };
        return { ok: false, code: STATUS_OF[a.err.kind], details: a.err.message, headers, trailers: { [ERROR_TRAILER]: a.err.code } };
      },
    });
  if (config.fastPath && !fastPath) logger.warn({ event: 'server.fast_path_unavailable' }, 'this grpc-js version does not allow the CreateCertificate fast path; grpc-js serves it');
  const grpcAddress = config.grpcListen.startsWith('unix:')
    ? config.grpcListen
    : `${config.grpcListen.slice(0, config.grpcListen.lastIndexOf(':'))}:${port}`;
  let ready = true;
  let ops: OpsServer | undefined;
  if (config.httpListen) ops = await startOpsServer(config.httpListen, { registry: metrics.registry, ready: () => ready, logger });
  let admin: AdminServer;
  try {
    admin = await startAdminServer({
      socketPath: config.adminSocket ?? join(config.dataDir, 'admin.sock'),
      manager,
      jwtKeys,
      keystoreWhere: keystore.where,
      propagationMs: config.propagationMs,
      autoRotate: config.autoRotate,
      isLeader: () => leader.isLeader(),
      logger,
    });
  } catch (e) {
    server.forceShutdown();
    await ops?.close();
    await signer.close();
    await jwtKeys?.close();
    await manager.close();
    throw e;
  }
  logger.info({ event: 'server.listening', grpc: grpcAddress, http: ops?.address, admin: admin.socketPath, tls: !config.plaintext, fastPath }, 'CA server listening');

  let closing: Promise<void> | undefined;
  return {
    grpcAddress,
    httpAddress: ops?.address,
    adminSocket: admin.socketPath,
    get trustBundlePem() {
      return manager.view().trustBundlePem;
    },
    metrics,
    manager,
    jwtKeys,
    authority: () => manager.view().active,
    close() {
      closing ??= (async () => {
        ready = false;
        health.setStatus('', 'NOT_SERVING');
        health.setStatus(CA_SERVICE_NAME, 'NOT_SERVING');
        servingTimer?.cancel();
        unsubscribe();
        bundleWatchers.clear();
        await admin.close();
        await shutdownServer(server, config.shutdownGraceMs);
        await signer.close();
        tokenAuth?.close();
        await ops?.close();
        await jwtKeys?.close();
        await manager.close();
        await publisher?.close();
        logger.info({ event: 'server.stopped' }, 'CA server stopped');
      })();
      return closing;
    },
  };
}
