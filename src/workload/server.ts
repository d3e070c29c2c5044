/**
 * The SPIFFE Workload API on the agent's Unix socket (`castellan agent
 * --workload-api-socket PATH`): the same identity the agent serves Envoy over
 * SDS, for any workload that speaks the Workload API (go-spiffe,
 * java-spiffe, py-spiffe, spiffe-helper).
 *
 * - X.509 comes from the agent's SecretCache, the one that feeds SDS: the
 *   streams are told of every change the SDS streams are told of (renewal,
 *   re-issue on taint, bundle push) and send a full response when what they
 *   carry changed.
 * - JWT comes from a JwtSide (src/workload/jwt.ts): minted by the CA for the
 *   agent's identity, validated against the JWT bundles the CA pushes.
 * - Every call must carry `workload.spiffe.io: true` (INVALID_ARGUMENT
 *   otherwise, SPIFFE Workload Endpoint §6); a call before the first
 *   certificate waits for it (streams) or gets UNAVAILABLE (unary).
 * - Access control is the socket's mode, as for SDS (src/sds/socket.ts): one
 *   agent serves one identity, so whoever can connect gets it; owner only by
 *   default, a group with --workload-api-socket-group.
 */
import { createPrivateKey } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { create, type JsonObject } from '@bufbuild/protobuf';
import {
  JWTBundlesResponseSchema,
  JWTSVIDResponseSchema,
  JWTSVIDSchema,
  SpiffeWorkloadAPI,
  ValidateJWTSVIDResponseSchema,
  X509BundlesResponseSchema,
  X509SVIDResponseSchema,
  X509SVIDSchema,
} from '../gen/spiffe/workload/workload_pb.js';
import { addService } from '../grpc/service.ts';
import { toGrpcError } from '../grpc/status.ts';
import { asCastellanError, CastellanError } from '../platform/errors.ts';
import { silentLogger, type Logger } from '../platform/logger.ts';
import { prepareSocketPath, type SocketPolicy } from '../sds/socket.ts';
import { serveOnUnixSocket } from '../sds/server.ts';
import { parseCertificatesPem } from '../platform/pem.ts';
import { parseSpiffeId } from '../spiffe/id.ts';
import type { IssuedCertificate } from '../agent/cache.ts';
import type { FederatedBundle } from '../agent/federation.ts';
import type { WorkloadMetrics } from './metrics.ts';

export const WORKLOAD_HEADER = 'workload.spiffe.io';

/** What the X.509 side reads: the agent's SecretCache fits it. */
export interface X509Side {
  readonly issued: IssuedCertificate | undefined;
  readonly bundlePem: string | undefined;
  /** Validated bundles of the federated trust domains, by trust domain name (none when absent). */
  readonly federatedBundles?: ReadonlyMap<string, Pick<FederatedBundle, 'x509Pem'>>;
  onChange(listener: (name: string) => void): () => void;
  whenReady(): Promise<void>;
}

/** The JWT side (src/workload/jwt.ts). */
export interface JwtSide {
  /** A JWT-SVID for these audiences (cached; renewed before expiry). */
  fetch(audiences: readonly string[]): Promise<{ spiffeId: string; token: string }>;
  /** JWK sets (JSON) keyed by trust domain URI, every one the agent knows. */
  bundles(): ReadonlyMap<string, string>;
  onBundlesChange(listener: () => void): () => void;
  /** Checks a JWT-SVID for `audience`; throws CastellanError INVALID_ARGUMENT with the reason. */
  validate(token: string, audience: string): Promise<{ spiffeId: string; claims: JsonObject }>;
}

export interface WorkloadServerOptions {
  socketPath: string;
  x509: X509Side;
  jwt?: JwtSide;
  policy?: SocketPolicy;
  logger?: Logger;
  metrics?: WorkloadMetrics;
}

export interface WorkloadServer {
  readonly socketPath: string;
  /** Streams open now (all three streaming methods). */
  activeStreams(): number;
  close(): Promise<void>;
}

type Method = 'FetchX509SVID' | 'FetchX509Bundles' | 'FetchJWTSVID' | 'FetchJWTBundles' | 'ValidateJWTSVID';

/** Concatenated DER of every certificate of a PEM text. */
export function pemToDerConcat(pem: string, what: string): Buffer {
  return Buffer.concat(parseCertificatesPem(pem, what));
}

/** The `spiffe://td` key of the trust domain of a SPIFFE ID. */
export function trustDomainKey(spiffeId: string): string {
  return `spiffe://${parseSpiffeId(spiffeId).trustDomain}`;
}

function checkHeader(md: grpc.Metadata): void {
  const v = md.get(WORKLOAD_HEADER);
  if (v.length !== 1 || v[0] !== 'true') {
    throw new CastellanError('INVALID_ARGUMENT', 'workload.header', `security header missing: every Workload API call must carry the metadata "${WORKLOAD_HEADER}: true"`);
  }
}

/** What every stream of the server shares. */
interface StreamContext {
  logger: Logger;
  metrics?: WorkloadMetrics;
  /** a closer per open stream */
  open: Set<() => void>;
  x509: X509Side;
  count: (method: Method, code: grpc.status) => void;
}

/**
 * A server stream: checks the header, then sends `build()` now (or once the
 * first certificate is there) and again whenever `subscribe` fires and what
 * `build` returns changed. Ends cleanly when the client goes away.
 */
function streamResponses<T>(
  ctx: StreamContext,
  method: Method,
  call: grpc.ServerWritableStream<unknown, T>,
  build: () => { key: string; msg: T } | undefined,
  subscribe: (fire: () => void) => () => void,
): void {
  const { logger, metrics, open, x509, count } = ctx;
  try {
    checkHeader(call.metadata);
  } catch (e) {
    count(method, grpc.status.INVALID_ARGUMENT);
    logger.warn({ event: 'workload.refused', method, reason: 'workload.header' }, (e as Error).message);
    call.emit('error', toGrpcError(e));
    return;
  }
  let last: string | undefined;
  let done = false;
  const send = (): void => {
    if (done) return;
    let next;
    try {
      next = build();
    } catch (e) {
      const err = asCastellanError(e);
      logger.error({ event: 'workload.stream_failed', method, err: e }, 'cannot build a Workload API response');
      finish();
      call.emit('error', toGrpcError(err));
      return;
    }
    if (!next || next.key === last) return;
    last = next.key;
    call.write(next.msg);
    metrics?.updates.inc({ method });
  };
  const unsubscribe = subscribe(send);
  const finish = (): void => {
    if (done) return;
    done = true;
    unsubscribe();
    open.delete(endNow);
    metrics?.streams.dec({ method });
    logger.debug({ event: 'workload.stream_closed', method }, 'Workload API stream closed');
  };
  const endNow = (): void => {
    finish();
    call.end();
  };
  open.add(endNow);
  metrics?.streams.inc({ method });
  count(method, grpc.status.OK);
  call.on('cancelled', finish);
  call.on('close', finish);
  call.on('error', finish);
  logger.debug({ event: 'workload.stream_opened', method }, 'Workload API stream opened');
  if (x509.issued) send();
  else void x509.whenReady().then(send);
}


export async function startWorkloadServer(o: WorkloadServerOptions): Promise<WorkloadServer> {
  const logger = o.logger ?? silentLogger();
  const policy = o.policy ?? {};
  const { x509, jwt, metrics } = o;
  const path = await prepareSocketPath(o.socketPath, policy);
  const server = new grpc.Server({ 'grpc.max_receive_message_length': 64 * 1024, 'grpc.max_send_message_length': 4 * 1024 * 1024 });
  const open = new Set<() => void>();
  const count = (method: Method, code: grpc.status): void => metrics?.calls.inc({ method, code: grpc.status[code] });

  const ctx: StreamContext = { logger, metrics, open, x509, count };
  const serveStream = <T>(method: Method, call: grpc.ServerWritableStream<unknown, T>, build: () => { key: string; msg: T } | undefined, subscribe: (fire: () => void) => () => void): void =>
    streamResponses(ctx, method, call, build, subscribe);

  const unary = <Req, Res>(method: Method, fn: (req: Req) => Promise<Res>): grpc.handleUnaryCall<Req, Res> => (call, callback) => {
    Promise.resolve()
      .then(() => {
        checkHeader(call.metadata);
        return fn(call.request);
      })
      .then(
        (res) => {
          count(method, grpc.status.OK);
          callback(null, res);
        },
        (e: unknown) => {
          const g = toGrpcError(e);
          count(method, g.code);
          const err = asCastellanError(e);
          logger[g.code === grpc.status.INTERNAL ? 'error' : 'info']({ event: 'workload.refused', method, code: grpc.status[g.code], reason: err.code, err: g.code === grpc.status.INTERNAL ? e : undefined }, err.message);
          callback(g);
        },
      );
  };

  const x509Response = (): { key: string; msg: ReturnType<typeof create<typeof X509SVIDResponseSchema>> } | undefined => {
    const c = x509.issued;
    const bundle = x509.bundlePem ?? c?.bundlePem;
    if (!c || !bundle) return undefined;
    const svid = create(X509SVIDSchema, {
      spiffeId: c.spiffeId,
      x509Svid: pemToDerConcat(c.chainPem, 'certificate chain'),
      x509SvidKey: pemKeyToPkcs8Der(c.keyPem),
      bundle: pemToDerConcat(bundle, 'trust bundle'),
    });
    // Every response is complete: a trust domain missing from federated_bundles is no longer trusted.
    const fed = federatedX509(trustDomainKey(c.spiffeId));
    return { key: `${c.serial}|${bundle}|${fed.key}`, msg: create(X509SVIDResponseSchema, { svids: [svid], federatedBundles: fed.map }) };
  };
  const x509Bundles = (): { key: string; msg: ReturnType<typeof create<typeof X509BundlesResponseSchema>> } | undefined => {
    const c = x509.issued;
    const bundle = x509.bundlePem ?? c?.bundlePem;
    if (!c || !bundle) return undefined;
    const own = trustDomainKey(c.spiffeId);
    const fed = federatedX509(own);
    return { key: `${bundle}|${fed.key}`, msg: create(X509BundlesResponseSchema, { bundles: { ...fed.map, [own]: pemToDerConcat(bundle, 'trust bundle') } }) };
  };
  /** The federated X.509 bundles, keyed `spiffe://<td>` (never our own), DER concatenated. */
  const federatedX509 = (ownKey: string): { key: string; map: Record<string, Uint8Array> } => {
    const entries = [...(x509.federatedBundles ?? new Map<string, { x509Pem: string }>())]
      .filter(([td, b]) => b.x509Pem !== '' && `spiffe://${td}` !== ownKey)
      .sort(([a], [z]) => (a < z ? -1 : 1));
    return {
      key: entries.map(([td, b]) => `${td}=${b.x509Pem}`).join('|'),
      map: Object.fromEntries(entries.map(([td, b]) => [`spiffe://${td}`, pemToDerConcat(b.x509Pem, `bundle of ${td}`)])),
    };
  };
  const jwtBundles = (): { key: string; msg: ReturnType<typeof create<typeof JWTBundlesResponseSchema>> } | undefined => {
    const b = jwt!.bundles();
    if (b.size === 0) return undefined;
    const entries = [...b].sort(([a], [z]) => a.localeCompare(z));
    return { key: JSON.stringify(entries), msg: create(JWTBundlesResponseSchema, { bundles: Object.fromEntries(entries.map(([k, v]) => [k, Buffer.from(v)])) }) };
  };
  const noJwt = (): CastellanError => new CastellanError('UNAVAILABLE', 'workload.jwt_unavailable', 'this agent has no JWT-SVID support: its CA publishes no JWT keys');

  addService(server, SpiffeWorkloadAPI, {
    fetchX509SVID(call) {
      serveStream('FetchX509SVID', call, x509Response, (fire) => x509.onChange(fire));
    },
    fetchX509Bundles(call) {
      serveStream('FetchX509Bundles', call, x509Bundles, (fire) => x509.onChange(fire));
    },
    fetchJWTBundles(call) {
      if (!jwt) {
        count('FetchJWTBundles', grpc.status.UNAVAILABLE);
        call.emit('error', toGrpcError(noJwt()));
        return;
      }
      serveStream('FetchJWTBundles', call, jwtBundles, (fire) => jwt.onBundlesChange(fire));
    },
    fetchJWTSVID: unary('FetchJWTSVID', async (req) => {
      if (!jwt) throw noJwt();
      const audiences = req.audience;
      if (audiences.length === 0 || audiences.some((a) => a === '')) {
        throw new CastellanError('INVALID_ARGUMENT', 'workload.audience', 'audience is required: one or more non-empty values');
      }
      // Refused before anything is minted, when the identity is already known.
      const own = x509.issued?.spiffeId;
      const notEntitled = (id: string): CastellanError => new CastellanError('PERMISSION_DENIED', 'workload.not_entitled', `this workload is not entitled to ${req.spiffeId.slice(0, 256)}; it is ${id}`);
      if (req.spiffeId !== '' && own !== undefined && req.spiffeId !== own) throw notEntitled(own);
      const svid = await jwt.fetch(audiences);
      if (req.spiffeId !== '' && req.spiffeId !== svid.spiffeId) throw notEntitled(svid.spiffeId);
      metrics?.jwtFetched.inc();
      return create(JWTSVIDResponseSchema, { svids: [create(JWTSVIDSchema, { spiffeId: svid.spiffeId, svid: svid.token })] });
    }),
    validateJWTSVID: unary('ValidateJWTSVID', async (req) => {
      if (!jwt) throw noJwt();
      if (req.audience === '') throw new CastellanError('INVALID_ARGUMENT', 'workload.audience', 'audience is required');
      if (req.svid === '') throw new CastellanError('INVALID_ARGUMENT', 'jwtsvid.missing', 'svid is required');
      const r = await jwt.validate(req.svid, req.audience);
      return create(ValidateJWTSVIDResponseSchema, { spiffeId: r.spiffeId, claims: r.claims });
    }),
  });
  const served = await serveOnUnixSocket(server, path, policy, open);
  logger.info({ event: 'workload.listening', socket: path, jwt: jwt !== undefined }, 'SPIFFE Workload API listening');
  return served;
}

/** The unencrypted PKCS#8 DER of the served key (the spec's x509_svid_key). */
export function pemKeyToPkcs8Der(keyPem: string): Buffer {
  return createPrivateKey(keyPem).export({ type: 'pkcs8', format: 'der' });
}
