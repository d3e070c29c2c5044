/**
 * Composition root of `castellan server`: keyring → signer → authenticators
 * → gRPC (TLS) + health + ops HTTP. `startCaServer` is also what tests and
 * `castellan dev` embed.
 */
import { randomBytes } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import { HealthImplementation } from 'grpc-health-check';
import { IstioCertificateResponseSchema, IstioCertificateService } from '../gen/istio/v1/auth/ca_pb.js';
import { addService } from '../grpc/service.ts';
import { toGrpcError } from '../grpc/status.ts';
import { MemoryCertificateProvider } from '../grpc/tls-provider.ts';
import { systemClock, type Clock, type TimerHandle } from '../platform/clock.ts';
import { CastellanError } from '../platform/errors.ts';
import { createLogger, type Logger } from '../platform/logger.ts';
import type { SigningAuthority } from '../ca/authority.ts';
import { certInfo } from '../ca/authority.ts';
import type { IssuerMaterial } from '../ca/issue.ts';
import { loadOrCreateSelfSigned } from '../ca/keystore-file.ts';
import { loadPluginCa } from '../ca/plugin.ts';
import { issueServingCertificate } from '../ca/serving.ts';
import { BatchSigner } from '../ca/signer/index.ts';
import { createTokenAuthenticator } from '../identity/index.ts';
import type { TokenAuthenticator } from '../identity/types.ts';
import { createCertificate, type CaServiceDeps } from './ca-service.ts';
import type { ServerConfig } from './config.ts';
import { startOpsServer, type OpsServer } from './http.ts';
import { createCaMetrics, type CaMetrics } from './metrics.ts';

export const CA_SERVICE_NAME = 'istio.v1.auth.IstioCertificateService';
/** Lifetime of the server's own TLS certificate; re-issued at half-life. */
const SERVING_TTL_MS = 7 * 24 * 3600_000;

export interface CaServerHandle {
  /** host:port (or unix:/path) the CA API is bound to */
  readonly grpcAddress: string;
  readonly httpAddress?: string;
  /** PEM of every trusted root (what clients pass as --ca-root-cert) */
  readonly trustBundlePem: string;
  readonly metrics: CaMetrics;
  authority(): SigningAuthority;
  /** Stops accepting calls, lets in-flight ones finish (up to the shutdown grace), frees everything. */
  close(): Promise<void>;
}

export interface CaServerDeps {
  clock?: Clock;
  logger?: Logger;
}

export function issuerMaterial(a: SigningAuthority): IssuerMaterial {
  return { id: a.id, certDer: a.certDer, keyPkcs8Der: a.keyPkcs8Der, notBefore: a.notBefore, notAfter: a.notAfter };
}

export async function loadAuthority(config: ServerConfig, now: number, logger: Logger): Promise<SigningAuthority> {
  if (config.cacertsDir) return loadPluginCa(config.cacertsDir, now);
  return loadOrCreateSelfSigned({
    dataDir: config.dataDir,
    trustDomain: config.trustDomain,
    keyType: config.caKeyType,
    rootTtlMs: config.rootTtlMs,
    now,
    logger,
  });
}

function bindAsync(server: grpc.Server, address: string, creds: grpc.ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) => server.bindAsync(address, creds, (err, port) => (err ? reject(err) : resolve(port))));
}

export async function startCaServer(config: ServerConfig, deps: CaServerDeps = {}): Promise<CaServerHandle> {
  const clock = deps.clock ?? systemClock;
  const logger = deps.logger ?? createLogger({ level: config.logLevel });
  const authority = await loadAuthority(config, clock.now(), logger);
  const authorities = new Map([[authority.id, authority]]);
  logger.info(
    { event: 'ca.loaded', mode: config.cacertsDir ? 'plugin' : 'self-signed', id: authority.id, keyType: authority.keyType, notAfter: new Date(authority.notAfter).toISOString() },
    'signing authority loaded',
  );

  const signer = new BatchSigner(config.signer);
  signer.setIssuer(issuerMaterial(authority));

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

  const metrics = createCaMetrics({ queueDepth: () => signer.stats().queued + signer.stats().inFlight });
  const rootsNotAfter = Math.min(...authority.rootsDer.map((d) => certInfo(d).notAfter));
  metrics.setExpiries(rootsNotAfter, authority.notAfter);

  const serviceDeps: CaServiceDeps = {
    trustDomain: config.trustDomain,
    defaultTtlMs: config.defaultTtlMs,
    maxTtlMs: config.maxTtlMs,
    authority: () => authority,
    authorityById: (id) => authorities.get(id),
    signer,
    tokenAuth,
    clock,
    logger,
    metrics,
  };

  let credentials: grpc.ServerCredentials;
  let servingTimer: TimerHandle | undefined;
  if (config.plaintext) {
    credentials = grpc.ServerCredentials.createInsecure();
    logger.warn({ event: 'server.plaintext', address: config.grpcListen }, 'serving the CA API without TLS (local address only)');
  } else {
    const provider = new MemoryCertificateProvider();
    const refresh = async (): Promise<void> => {
      const id = await issueServingCertificate(authority, { dnsNames: config.serverDns, trustDomain: config.trustDomain, ttlMs: SERVING_TTL_MS, now: clock.now() });
      provider.setIdentity(id.certChainPem, id.keyPem);
      const wait = Math.max(60_000, (id.notAfter - clock.now()) / 2);
      servingTimer = clock.setTimer(() => {
        refresh().catch((e: unknown) => logger.error({ err: e, event: 'server.tls_refresh_failed' }, 'could not re-issue the server certificate'));
      }, wait);
    };
    await refresh();
    // Client certificates are verified against the roots and our own signing chain,
    // so a leaf presented without its intermediates still verifies.
    provider.setCaCertificates(authority.trustBundlePem + authority.chainPem.join(''));
    credentials = grpc.experimental.createCertificateProviderServerCredentials(provider, provider, false);
  }

  const server = new grpc.Server({
    'grpc.max_receive_message_length': config.maxRequestBytes,
    'grpc.max_send_message_length': 1024 * 1024,
    'grpc.keepalive_time_ms': 120_000,
    'grpc.keepalive_timeout_ms': 20_000,
    'grpc.max_concurrent_streams': 1000,
  });
  addService(server, IstioCertificateService, {
    createCertificate(call, callback) {
      const started = process.hrtime.bigint();
      const requestId = randomBytes(8).toString('hex');
      const finish = (code: grpc.status): void => {
        metrics.latency.observe({ code: grpc.status[code] ?? String(code) }, Number(process.hrtime.bigint() - started) / 1e9);
      };
      try {
        const md = new grpc.Metadata();
        md.set('x-request-id', requestId);
        call.sendMetadata(md);
        const authorization = call.metadata.get('authorization').map((v) => (typeof v === 'string' ? v : v.toString('latin1')));
        const peerCertDer = call.getAuthContext()?.sslPeerCertificate?.raw;
        const req = call.request;
        createCertificate(serviceDeps, {
          csr: req.csr,
          validityDurationSec: req.validityDuration,
          metadata: req.metadata,
          authorization,
          peerCertDer,
          requestId,
          peer: call.getPeer(),
        }).then(
          (res) => {
            callback(null, create(IstioCertificateResponseSchema, { certChain: res.certChain }));
            finish(grpc.status.OK);
          },
          (e: unknown) => {
            const g = toGrpcError(e);
            const level = g.code === grpc.status.INTERNAL ? 'error' : 'warn';
            logger[level](
              { event: 'ca.request_failed', requestId, peer: call.getPeer(), code: grpc.status[g.code], reason: e instanceof CastellanError ? e.code : 'internal', err: level === 'error' ? e : undefined },
              g.details,
            );
            callback(g);
            finish(g.code);
          },
        );
      } catch (e) {
        logger.error({ event: 'ca.handler_crash', requestId, err: e }, 'unexpected error in CreateCertificate');
        callback(toGrpcError(e));
        finish(grpc.status.INTERNAL);
      }
    },
  });
  const health = new HealthImplementation({ '': 'SERVING', [CA_SERVICE_NAME]: 'SERVING' });
  health.addToServer(server);

  const port = await bindAsync(server, config.grpcListen, credentials);
  const grpcAddress = config.grpcListen.startsWith('unix:')
    ? config.grpcListen
    : `${config.grpcListen.slice(0, config.grpcListen.lastIndexOf(':'))}:${port}`;
  let ready = true;
  let ops: OpsServer | undefined;
  if (config.httpListen) ops = await startOpsServer(config.httpListen, { registry: metrics.registry, ready: () => ready, logger });
  logger.info({ event: 'server.listening', grpc: grpcAddress, http: ops?.address, tls: !config.plaintext }, 'CA server listening');

  let closing: Promise<void> | undefined;
  return {
    grpcAddress,
    httpAddress: ops?.address,
    trustBundlePem: authority.trustBundlePem,
    metrics,
    authority: () => authority,
    close() {
      closing ??= (async () => {
        ready = false;
        health.setStatus('', 'NOT_SERVING');
        health.setStatus(CA_SERVICE_NAME, 'NOT_SERVING');
        servingTimer?.cancel();
        await new Promise<void>((resolve) => {
          const force = setTimeout(() => {
            server.forceShutdown();
            resolve();
          }, config.shutdownGraceMs);
          server.tryShutdown(() => {
            clearTimeout(force);
            resolve();
          });
        });
        await signer.close();
        tokenAuth?.close();
        await ops?.close();
        logger.info({ event: 'server.stopped' }, 'CA server stopped');
      })();
      return closing;
    },
  };
}
