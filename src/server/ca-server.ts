/**
 * Composition root of `castellan server`, to be read as a table of contents:
 * cluster ports → keyring (CaManager) → signer → authenticators → the
 * server's TLS identity → keyring fan-out → gRPC services + health → ops
 * HTTP and admin socket. `startCaServer` is also what tests and
 * `castellan dev` embed.
 *
 * Where things plug in: a new RPC is a module like istio-ca-rpc.ts or
 * trust-rpc.ts (handlers over CaServiceDeps) plus one addService line below;
 * a new check on CreateCertificate goes into ca-service.ts; a new follower of
 * keyring changes into keyring-fanout.ts.
 */
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import { IstioCertificateService } from '../gen/istio/v1/auth/ca_pb.js';
import { TrustService } from '../gen/castellan/v1/trust_pb.js';
import { addService, bindServer, shutdownServer } from '../grpc/service.ts';
import { systemClock, type Clock } from '../platform/clock.ts';
import { createLogger, type Logger } from '../platform/logger.ts';
import { ensurePrivateDir } from '../platform/files.ts';
import type { SigningAuthority } from '../ca/authority.ts';
import { certInfo } from '../ca/authority.ts';
import type { KeyringView } from '../ca/keyring.ts';
import type { Keystore, LeaderElector, TrustBundlePublisher } from '../ca/keystore.ts';
import { CaManager } from '../ca/manager.ts';
import { BatchSigner } from '../ca/signer/index.ts';
import { createTokenAuthenticator } from '../identity/index.ts';
import type { TokenAuthenticator } from '../identity/types.ts';
import { JwtKeyManager } from '../ca/jwt-manager.ts';
import { startNodeAuthorization } from './node-auth.ts';
import { startAdminServer, type AdminServer } from './admin.ts';
import { addJwtSvidService, jwtBundleFields } from './jwt-service.ts';
import type { CaServiceDeps } from './ca-service.ts';
import { clusterPorts } from './cluster-ports.ts';
import type { ServerConfig } from './config.ts';
import { startOpsServer, type OpsServer } from '../platform/http.ts';
import { istioCertificateService } from './istio-ca-rpc.ts';
import { startBundleEndpoint, type BundleEndpoint } from './bundle-endpoint.ts';
import { Federation } from './federation.ts';
import { federationMetrics, FederationFetcher } from './federation-fetch.ts';
import { followKeyring, issuerMaterial } from './keyring-fanout.ts';
import { createCaMetrics, type CaMetrics } from './metrics.ts';
import { KeyedRateLimiter } from './ratelimit.ts';
import { ServingIdentity } from './serving-identity.ts';
import { trustService, type BundleWatchers } from './trust-rpc.ts';

export const CA_SERVICE_NAME = 'istio.v1.auth.IstioCertificateService';

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
  /** This trust domain's bundle and the foreign ones (docs/federation.md). */
  readonly federation: Federation;
  /** Fetches foreign bundles (present when trust domains are federated with). */
  readonly federationFetcher?: FederationFetcher;
  /** host:port of the SPIFFE bundle endpoint (--bundle-endpoint-listen) */
  readonly bundleEndpointAddress?: string;
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

function startManager(config: ServerConfig, ports: { keystore: Keystore; leader: LeaderElector }, clock: Clock, logger: Logger): Promise<CaManager> {
  return CaManager.start({
    keystore: ports.keystore,
    trustDomain: config.trustDomain,
    mode: config.cacertsDir ? { kind: 'plugin', cacertsDir: config.cacertsDir } : { kind: 'self-signed', keyType: config.caKeyType, rootTtlMs: config.rootTtlMs },
    propagationMs: config.propagationMs,
    autoRotate: config.autoRotate,
    maxLeafTtlMs: config.maxTtlMs,
    leader: ports.leader,
    clock,
    logger,
  });
}

/** The bearer-token authenticator, ready to verify (keys loaded, OIDC discovery done); undefined when none is configured. */
async function tokenAuthenticator(config: ServerConfig, metrics: CaMetrics, clock: Clock, logger: Logger): Promise<TokenAuthenticator | undefined> {
  if (!config.auth.jwt && !config.auth.tokenReview) {
    logger.warn({ event: 'auth.no_token_method' }, 'no token authentication configured (--jwks-file, --jwks-uri, --oidc-issuer or --token-review): only mTLS renewals will be accepted');
    return undefined;
  }
  // The TokenReviewer port joined to its Kubernetes implementation (client-node loaded only when configured).
  const tokenReview = config.auth.tokenReview && { reviewer: (await import('../kube/tokenreview.ts')).kubeTokenReviewer(config.auth.tokenReview.kubeconfig) };
  const tokenAuth = createTokenAuthenticator({
    trustDomain: config.trustDomain,
    audiences: config.auth.audiences,
    jwt: config.auth.jwt,
    tokenReview,
    clock,
    logger,
    onKeyRejected: (e) => metrics.jwksKeysRejected.inc({ reason: e.reason }),
  });
  try {
    await tokenAuth.prepare?.();
  } catch (e) {
    tokenAuth.close();
    throw e;
  }
  return tokenAuth;
}

function grpcServer(config: ServerConfig): grpc.Server {
  return new grpc.Server({
    'grpc.max_receive_message_length': config.maxRequestBytes,
    'grpc.max_send_message_length': 1024 * 1024,
    'grpc.keepalive_time_ms': 120_000,
    'grpc.keepalive_timeout_ms': 20_000,
    // A connection that opens thousands of calls at once (a burst through few connections) would
    // otherwise have every one of them buffered here at once: measured in docs/performance.md.
    'grpc.max_concurrent_streams': config.maxConcurrentStreams,
  });
}

export async function startCaServer(config: ServerConfig, deps: CaServerDeps = {}): Promise<CaServerHandle> {
  const clock = deps.clock ?? systemClock;
  const logger = deps.logger ?? createLogger({ level: config.logLevel });
  await ensurePrivateDir(config.dataDir);
  const { keystore, leader, publisher } = await clusterPorts(config, deps, logger);
  const manager = await startManager(config, { keystore, leader }, clock, logger);
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
  const metrics = createCaMetrics({
    queueDepth: () => signer.stats().queued + signer.stats().inFlight,
    authorities: () => manager.status().map((a) => ({ id: a.id, state: a.state, liveLeaves: a.liveLeaves, notAfterMs: Date.parse(a.notAfter) })),
    rejectedKeyringUpdates: () => manager.rejectedUpdates,
  });
  let tokenAuth: TokenAuthenticator | undefined;
  try {
    tokenAuth = await tokenAuthenticator(config, metrics, clock, logger);
  } catch (e) {
    // a configuration error (OIDC discovery naming another issuer): nothing started stays behind
    await signer.close();
    await jwtKeys?.close();
    await manager.close();
    throw e;
  }
  const setExpiries = (v: KeyringView): void => metrics.setExpiries(Math.min(...v.rootsDer.map((d) => certInfo(d).notAfter)), v.active.notAfter);
  setExpiries(first);

  const nodeAuth = await startNodeAuthorization(config, { registry: metrics.registry, clock, logger });

  const serviceDeps: CaServiceDeps = {
    nodeAuth,
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

  const federation = new Federation({ manager, jwtKeys, refreshHintSeconds: config.federation.refreshHintSeconds, clock, logger });
  const fetcher = config.federation.peers.length > 0 ? new FederationFetcher({ config: config.federation, federation, manager, leader, metrics: federationMetrics(metrics.registry), clock, logger }) : undefined;
  const serving = await ServingIdentity.start({ plaintext: config.plaintext, listen: config.grpcListen, dnsNames: config.serverDns, trustDomain: config.trustDomain, view: () => manager.view(), clock, logger });
  const bundleWatchers: BundleWatchers = new Set();
  const unsubscribe = await followKeyring({ manager, signer, setExpiries, serving, dataDir: config.dataDir, leader, publisher, bundleWatchers, logger });

  const server = grpcServer(config);
  addService(server, IstioCertificateService, istioCertificateService(serviceDeps));
  addService(server, TrustService, trustService(serviceDeps, bundleWatchers, () => ({ ...jwtBundleFields(jwtKeys, config.jwt), ...federation.bundleUpdateFields() })));
  if (jwtKeys && config.jwt) addJwtSvidService(server, serviceDeps, jwtKeys, config.jwt);
  const health = new HealthImplementation({ '': 'SERVING', [CA_SERVICE_NAME]: 'SERVING' });
  health.addToServer(server);

  const port = await bindServer(server, config.grpcListen, serving.credentials);
  const grpcAddress = config.grpcListen.startsWith('unix:')
    ? config.grpcListen
    : `${config.grpcListen.slice(0, config.grpcListen.lastIndexOf(':'))}:${port}`;
  let ready = true;
  let ops: OpsServer | undefined;
  if (config.httpListen) ops = await startOpsServer(config.httpListen, { registry: metrics.registry, ready: () => ready && (nodeAuth.pods?.synced ?? true), logger });
  let admin: AdminServer;
  let endpoint: BundleEndpoint | undefined;
  let unfollowEndpoint: (() => void) | undefined;
  try {
    if (config.federation.endpoint) {
      endpoint = await startBundleEndpoint({ config: config.federation.endpoint, trustDomain: config.trustDomain, dnsNames: config.serverDns, document: () => federation.ownBundleDocument(), view: () => manager.view(), clock, logger });
      const e = endpoint;
      unfollowEndpoint = manager.onChange((v, prev) => e.follow(v, prev));
    }
    admin = await startAdminServer({
      socketPath: config.adminSocket ?? join(config.dataDir, 'admin.sock'),
      manager,
      jwtKeys,
      federation,
      keystoreWhere: keystore.where,
      propagationMs: config.propagationMs,
      autoRotate: config.autoRotate,
      isLeader: () => leader.isLeader(),
      logger,
    });
  } catch (e) {
    unfollowEndpoint?.();
    await endpoint?.close();
    server.forceShutdown();
    nodeAuth.pods?.stop();
    await ops?.close();
    await signer.close();
    await jwtKeys?.close();
    await manager.close();
    throw e;
  }
  fetcher?.start();
  logger.info({ event: 'server.listening', grpc: grpcAddress, http: ops?.address, admin: admin.socketPath, tls: !config.plaintext }, 'CA server listening');

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
    federation,
    bundleEndpointAddress: endpoint?.address,
    federationFetcher: fetcher,
    authority: () => manager.view().active,
    close() {
      closing ??= (async () => {
        ready = false;
        health.setStatus('', 'NOT_SERVING');
        health.setStatus(CA_SERVICE_NAME, 'NOT_SERVING');
        serving.close();
        unsubscribe();
        bundleWatchers.clear();
        await fetcher?.close();
        unfollowEndpoint?.();
        await endpoint?.close();
        await admin.close();
        await shutdownServer(server, config.shutdownGraceMs);
        await signer.close();
        tokenAuth?.close();
        nodeAuth.pods?.stop();
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
