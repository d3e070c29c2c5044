/**
 * The agent's CertificateSource over the Istio CA API: CreateCertificate
 * over TLS, trusting only the given root bundle, with the service-account
 * token re-read from its file on every call (kubelet rotates it) and sent
 * as `authorization: Bearer <token>`. gRPC failures become CastellanErrors
 * whose kind mirrors the status, so the cache can apply the retry policy of
 * protocols.md §1 (CANCELLED arrives as ABORTED: both are retried).
 */
import { readFile } from 'node:fs/promises';
import * as grpc from '@grpc/grpc-js';
import { ERROR_TRAILER } from '../grpc/status.ts';
import { create } from '@bufbuild/protobuf';
import { IstioCertificateRequestSchema, IstioCertificateService, type IstioCertificateRequest } from '../gen/istio/v1/auth/ca_pb.js';
import { TrustService, WatchBundleRequestSchema, type BundleUpdate as BundleUpdateMessage } from '../gen/castellan/v1/trust_pb.js';
import { JwtSvidService, MintJwtSvidRequestSchema } from '../gen/castellan/v1/jwt_pb.js';
import { createClient } from '../grpc/service.ts';
import { CastellanError, isErrorCode, type ErrorKind } from '../platform/errors.ts';
import type { CertificateSource } from './cache.ts';
import type { FederatedBundleInput } from './federation.ts';
import type { AgentMetrics } from './metrics.ts';
import { silentLogger, type Logger } from '../platform/logger.ts';

export interface CaClientOptions {
  /** host:port */
  address: string;
  /** PEM roots trusted for the CA's TLS certificate. */
  rootPem: string;
  /** Path of the service-account token (re-read on every call). */
  tokenFile: string;
  /** Per-call deadline, ms. Default 10 000. */
  timeoutMs?: number;
  /** Sent as `clusterid` metadata when set. */
  clusterId?: string;
  metrics?: AgentMetrics;
  /** Overrides the TLS server name checked (default: the host of `address`). */
  serverName?: string;
  /**
   * Renew over mutual TLS with the certificate being replaced while it is
   * valid, sending no token (SPIRE's way: the API server is not asked again).
   * When the CA refuses that certificate (its authority was tainted, or it is
   * not trusted any more), the same request goes again at once with the
   * token, and the refusal is logged once per certificate.
   */
  renewWithCertificate?: boolean;
  logger?: Logger;
}

const KIND_OF: Partial<Record<grpc.status, ErrorKind>> = {
  [grpc.status.INVALID_ARGUMENT]: 'INVALID_ARGUMENT',
  [grpc.status.UNAUTHENTICATED]: 'UNAUTHENTICATED',
  [grpc.status.PERMISSION_DENIED]: 'PERMISSION_DENIED',
  [grpc.status.RESOURCE_EXHAUSTED]: 'RESOURCE_EXHAUSTED',
  [grpc.status.UNAVAILABLE]: 'UNAVAILABLE',
  [grpc.status.FAILED_PRECONDITION]: 'FAILED_PRECONDITION',
  [grpc.status.NOT_FOUND]: 'NOT_FOUND',
  [grpc.status.DEADLINE_EXCEEDED]: 'DEADLINE_EXCEEDED',
  [grpc.status.ALREADY_EXISTS]: 'ALREADY_EXISTS',
  [grpc.status.ABORTED]: 'ABORTED',
  [grpc.status.CANCELLED]: 'ABORTED',
  [grpc.status.INTERNAL]: 'INTERNAL',
  [grpc.status.UNKNOWN]: 'INTERNAL',
  [grpc.status.UNIMPLEMENTED]: 'FAILED_PRECONDITION',
  [grpc.status.DATA_LOSS]: 'INTERNAL',
  [grpc.status.OUT_OF_RANGE]: 'INVALID_ARGUMENT',
};

/**
 * A gRPC client error as a CastellanError: status name and details kept
 * (details are the server's public message), and the server's stable
 * `x-castellan-error` code when it sent one, so the agent's logs name it.
 */
export function fromGrpcError(e: unknown): CastellanError {
  const se = e as Partial<grpc.ServiceError>;
  if (typeof se?.code !== 'number') return new CastellanError('INTERNAL', 'ca_client.failed', 'certificate request failed', { cause: e });
  const kind = KIND_OF[se.code as grpc.status] ?? 'INTERNAL';
  const name = grpc.status[se.code] ?? String(se.code);
  const trailer = se.metadata?.get(ERROR_TRAILER)[0];
  const serverCode = typeof trailer === 'string' && /^[a-z0-9_.-]{1,64}$/.test(trailer) ? ` (${trailer})` : '';
  const code = `ca_client.${name.toLowerCase()}`;
  return new CastellanError(kind, isErrorCode(code) ? code : 'ca_client.failed', `CA answered ${name}${serverCode}: ${String(se.details ?? '').slice(0, 300)}`, { cause: e });
}

export interface BundleUpdate {
  bundlePem: string;
  taintedIds: string[];
  generation: bigint;
  activeId: string;
  /** JWK set JSON of the CA's JWT keys; empty when it mints no JWT-SVIDs */
  jwtBundleJson: string;
  /** taintedAt in ms */
  taintedJwtKeys: { keyId: string; taintedAt: number }[];
  /** ms */
  jwtMaxTtlMs: number;
  /**
   * Bundles of the federated trust domains, by trust domain name: the
   * complete set (a trust domain missing is no longer federated). Not yet
   * validated: the cache does that (src/agent/federation.ts).
   */
  federatedBundles: Map<string, FederatedBundleInput>;
}

export interface CaClient extends CertificateSource {
  /**
   * Opens castellan.v1.TrustService/WatchBundle: `onUpdate` for every update,
   * `onEnd` once when the stream ends (with the error, if any). Returns a
   * function that cancels the stream.
   */
  watchBundle(onUpdate: (u: BundleUpdate) => void, onEnd: (e?: CastellanError) => void): Promise<() => void>;
  /** castellan.v1.JwtSvidService/MintJwtSvid for the agent's identity. */
  mintJwtSvid(audiences: readonly string[], ttlSeconds?: number): Promise<{ token: string; spiffeId: string; expiresAt: number; keyId: string }>;
  close(): void;
}

export function createCaClient(o: CaClientOptions): CaClient {
  const creds = grpc.credentials.createSsl(Buffer.from(o.rootPem));
  // The cache runs its own backoff; keep the channel's reconnect delay short so a CA
  // that comes back is reached on the next attempt, not minutes later.
  const options: grpc.ClientOptions = { 'grpc.initial_reconnect_backoff_ms': 500, 'grpc.max_reconnect_backoff_ms': 5000 };
  if (o.serverName) options['grpc.ssl_target_name_override'] = o.serverName;
  const client = createClient(IstioCertificateService, o.address, creds, options);
  const trust = createClient(TrustService, o.address, creds, options);
  const jwt = createClient(JwtSvidService, o.address, creds, options);
  const timeoutMs = o.timeoutMs ?? 10_000;
  const metadata = async (): Promise<grpc.Metadata> => {
    let token: string;
    try {
      token = (await readFile(o.tokenFile, 'utf8')).trim();
    } catch (e) {
      // Retryable: kubelet may not have written the projected token yet.
      throw new CastellanError('UNAVAILABLE', 'ca_client.token_file', `cannot read token file ${o.tokenFile}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`, { cause: e });
    }
    if (token === '') throw new CastellanError('UNAVAILABLE', 'ca_client.token_file', `token file ${o.tokenFile} is empty`);
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${token}`);
    if (o.clusterId) md.set('clusterid', o.clusterId);
    return md;
  };
  const createCertificate = async (c: typeof client, request: IstioCertificateRequest, md: grpc.Metadata): Promise<string[]> => {
    const started = performance.now();
    o.metrics?.outgoingRequests.inc({ request_type: 'csr' });
    try {
      return (await c.createCertificate(request, { metadata: md, deadline: Date.now() + timeoutMs })).certChain;
    } catch (e) {
      o.metrics?.failedOutgoingRequests.inc({ request_type: 'csr' });
      throw fromGrpcError(e);
    } finally {
      o.metrics?.outgoingLatency.inc({ request_type: 'csr' }, performance.now() - started);
    }
  };
  const renewal = mtlsRenewal(o, options, o.logger ?? silentLogger());
  return {
    async watchBundle(onUpdate, onEnd) {
      const md = await metadata();
      const call = trust.watchBundle(create(WatchBundleRequestSchema, {}), { metadata: md });
      let ended = false;
      const end = (e?: CastellanError): void => {
        if (ended) return;
        ended = true;
        onEnd(e);
      };
      call.on('data', (u: BundleUpdateMessage) =>
        onUpdate({
          bundlePem: u.trustBundlePem,
          taintedIds: [...u.taintedAuthorityIds],
          generation: u.generation,
          activeId: u.activeAuthorityId,
          jwtBundleJson: u.jwtBundleJson,
          taintedJwtKeys: u.taintedJwtKeys.map((k) => ({ keyId: k.keyId, taintedAt: Number(k.taintedAt) * 1000 })),
          jwtMaxTtlMs: Number(u.jwtMaxTtlSeconds) * 1000,
          federatedBundles: new Map(
            Object.entries(u.federatedBundles).map(([td, b]) => [td, { x509AuthoritiesPem: b.x509AuthoritiesPem, jwtBundleJson: b.jwtBundleJson, sequence: b.sequence }]),
          ),
        }),
      );
      call.on('error', (e: unknown) => end(fromGrpcError(e)));
      call.on('end', () => end());
      return () => {
        ended = true;
        call.cancel();
      };
    },
    async sign(csrPem, ttlSeconds, current) {
      const request = create(IstioCertificateRequestSchema, { csr: csrPem, validityDuration: BigInt(ttlSeconds) });
      if (o.renewWithCertificate && current) {
        try {
          return await createCertificate(renewal.clientFor(current), request, new grpc.Metadata());
        } catch (e) {
          if (!(e instanceof CastellanError) || e.kind !== 'UNAUTHENTICATED') throw e;
          renewal.refused(current.serial, e);
        }
      }
      return createCertificate(client, request, await metadata());
    },
    async mintJwtSvid(audiences, ttlSeconds = 0) {
      const md = await metadata();
      const started = performance.now();
      o.metrics?.outgoingRequests.inc({ request_type: 'jwt' });
      try {
        const r = await jwt.mintJwtSvid(create(MintJwtSvidRequestSchema, { audience: [...audiences], ttlSeconds: BigInt(ttlSeconds) }), { metadata: md, deadline: Date.now() + timeoutMs });
        return { token: r.token, spiffeId: r.spiffeId, expiresAt: Number(r.expiresAt) * 1000, keyId: r.keyId };
      } catch (e) {
        o.metrics?.failedOutgoingRequests.inc({ request_type: 'jwt' });
        throw fromGrpcError(e);
      } finally {
        o.metrics?.outgoingLatency.inc({ request_type: 'jwt' }, performance.now() - started);
      }
    },
    close: () => {
      client.close();
      trust.close();
      jwt.close();
      renewal.close();
    },
  };
}

/**
 * The mTLS renewal channel: one client per served certificate (its key and
 * chain are the channel's TLS identity), replaced when the certificate is.
 */
function mtlsRenewal(o: CaClientOptions, options: grpc.ClientOptions, logger: Logger) {
  let held: { serial: string; client: ReturnType<typeof createClient<typeof IstioCertificateService.method>> } | undefined;
  let lastRefused: string | undefined;
  return {
    clientFor(cur: { chainPem: string; keyPem: string; serial: string }) {
      if (held?.serial !== cur.serial) {
        held?.client.close();
        const creds = grpc.credentials.createSsl(Buffer.from(o.rootPem), Buffer.from(cur.keyPem), Buffer.from(cur.chainPem));
        held = { serial: cur.serial, client: createClient(IstioCertificateService, o.address, creds, options) };
      }
      return held.client;
    },
    refused(serial: string, e: CastellanError) {
      if (lastRefused === serial) return;
      lastRefused = serial;
      logger.warn({ event: 'agent.mtls_renewal_refused', serial, code: e.code, reason: e.message }, 'the CA no longer accepts our certificate as proof of identity: re-issuing with the service-account token');
    },
    close() {
      held?.client.close();
      held = undefined;
    },
  };
}
