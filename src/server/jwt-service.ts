/**
 * JWT-SVIDs on the CA server: the flags, castellan.v1.JwtSvidService
 * (MintJwtSvid, authenticated and rate-limited exactly as CreateCertificate:
 * a token or a client certificate of this CA, the per-peer then
 * per-identity buckets), and the JWT part of TrustService.WatchBundle.
 *
 * Identity comes only from the authenticated caller: the request brings
 * the audiences and a lifetime, both checked; `sub` is the caller's ID.
 */
import * as grpc from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import { Counter } from 'prom-client';
import { JwtSvidService, MintJwtSvidResponseSchema } from '../gen/castellan/v1/jwt_pb.js';
import { TaintedJwtKeySchema, type TaintedJwtKey } from '../gen/castellan/v1/trust_pb.js';
import { addService } from '../grpc/service.ts';
import { STATUS_OF, toGrpcError } from '../grpc/status.ts';
import { parseDuration, type FlagSpec, type FlagValues } from '../config/flags.ts';
import { JWT_ALGS, type JwtAlg } from '../ca/jwt-keys.ts';
import type { JwtKeyManager } from '../ca/jwt-manager.ts';
import { asCastellanError, CastellanError } from '../platform/errors.ts';
import { admitPeer, authenticate, type CaServiceDeps } from './ca-service.ts';
import { callerCredentials, nextRequestId } from './call.ts';

export interface JwtSvidConfig {
  alg: JwtAlg;
  /** ms: planned life of a signing key (automatic rotation replaces it before) */
  keyTtlMs: number;
  /** ms: lifetime when a request asks for 0 */
  defaultTtlMs: number;
  /** ms: longer requests are refused */
  maxTtlMs: number;
}

export const JWT_SERVER_FLAGS: FlagSpec[] = [
  { name: 'no-jwt-svid', type: 'boolean', default: false, help: 'do not mint JWT-SVIDs (no JWT key in the keyring, no JWT bundle)' },
  { name: 'jwt-svid-alg', type: 'string', arg: 'ALG', default: 'ES256', help: `JWS algorithm of new JWT signing keys: ${JWT_ALGS.join('|')}` },
  { name: 'jwt-key-ttl', type: 'string', arg: 'DUR', default: '168h', help: 'planned life of a JWT signing key (rotated automatically: prepared at half of it, activated at a sixth left)' },
  { name: 'jwt-svid-default-ttl', type: 'string', arg: 'DUR', default: '5m', help: 'JWT-SVID lifetime when a request asks for 0' },
  { name: 'jwt-svid-max-ttl', type: 'string', arg: 'DUR', default: '1h', help: 'longest JWT-SVID lifetime; longer requests get INVALID_ARGUMENT' },
];

function invalid(msg: string): CastellanError {
  return new CastellanError('INVALID_ARGUMENT', 'config.invalid', `castellan server: ${msg}`);
}

export function resolveJwtSvidConfig(v: FlagValues): JwtSvidConfig | null {
  if (v['no-jwt-svid'] === true) return null;
  const get = (k: string, d: string): string => (typeof v[k] === 'string' ? (v[k] as string) : d);
  const alg = get('jwt-svid-alg', 'ES256');
  if (!(JWT_ALGS as readonly string[]).includes(alg)) throw invalid(`--jwt-svid-alg must be one of ${JWT_ALGS.join(', ')}, got "${alg}"`);
  const dur = (k: string, d: string): number => {
    try {
      return parseDuration(get(k, d), `--${k}`);
    } catch (e) {
      throw invalid((e as Error).message);
    }
  };
  const cfg = { alg: alg as JwtAlg, keyTtlMs: dur('jwt-key-ttl', '168h'), defaultTtlMs: dur('jwt-svid-default-ttl', '5m'), maxTtlMs: dur('jwt-svid-max-ttl', '1h') };
  if (cfg.defaultTtlMs < 1000 || cfg.maxTtlMs < 1000) throw invalid('--jwt-svid-default-ttl and --jwt-svid-max-ttl must be at least 1s');
  if (cfg.defaultTtlMs > cfg.maxTtlMs) throw invalid('--jwt-svid-default-ttl must not exceed --jwt-svid-max-ttl');
  if (cfg.keyTtlMs < 6 * cfg.maxTtlMs) throw invalid('--jwt-key-ttl must be at least six times --jwt-svid-max-ttl (a key is replaced a sixth of its life before its end)');
  return cfg;
}

export const MAX_AUDIENCES = 10;
export const MAX_AUDIENCE_BYTES = 512;

/** The `aud` values a JWT-SVID may carry: 1-10 distinct, non-empty, printable, at most 512 bytes each. */
export function checkAudiences(aud: readonly string[]): string[] {
  const bad = (m: string): CastellanError => new CastellanError('INVALID_ARGUMENT', 'jwt.audience', m);
  if (aud.length === 0) throw bad('audience is required: one or more values');
  if (aud.length > MAX_AUDIENCES) throw bad(`at most ${MAX_AUDIENCES} audiences, got ${aud.length}`);
  for (const a of aud) {
    if (a === '') throw bad('an audience is empty');
    if (Buffer.byteLength(a) > MAX_AUDIENCE_BYTES) throw bad(`an audience is longer than ${MAX_AUDIENCE_BYTES} bytes`);
    // eslint-disable-next-line no-control-regex
    if (/[\u0000-\u001f\u007f]/.test(a)) throw bad('an audience holds a control character');
  }
  return [...new Set(aud)];
}

/** The requested JWT-SVID lifetime (seconds on the wire) in ms. */
export function jwtTtlMs(cfg: JwtSvidConfig, sec: bigint): number {
  if (sec < 0n) throw new CastellanError('INVALID_ARGUMENT', 'ttl.negative', `ttl_seconds must not be negative (got ${sec})`);
  if (sec === 0n) return cfg.defaultTtlMs;
  if (sec * 1000n > BigInt(cfg.maxTtlMs)) throw new CastellanError('INVALID_ARGUMENT', 'ttl.too_long', `requested JWT-SVID lifetime ${sec}s exceeds the maximum ${Math.floor(cfg.maxTtlMs / 1000)}s`);
  return Number(sec) * 1000;
}

/** The JWT fields of a BundleUpdate. */
export function jwtBundleFields(keys: JwtKeyManager | undefined, cfg: JwtSvidConfig | null): { jwtBundleJson: string; taintedJwtKeys: TaintedJwtKey[]; jwtMaxTtlSeconds: bigint } {
  if (!keys || !cfg) return { jwtBundleJson: '', taintedJwtKeys: [], jwtMaxTtlSeconds: 0n };
  const v = keys.view();
  return {
    jwtBundleJson: v.bundleJson,
    taintedJwtKeys: v.tainted.map((t) => create(TaintedJwtKeySchema, { keyId: t.kid, taintedAt: BigInt(Math.floor(t.taintedAt / 1000)) })),
    jwtMaxTtlSeconds: BigInt(Math.round(cfg.maxTtlMs / 1000)),
  };
}

/** Adds castellan.v1.JwtSvidService to the CA's gRPC server. */
export function addJwtSvidService(server: grpc.Server, deps: CaServiceDeps, keys: JwtKeyManager, cfg: JwtSvidConfig): void {
  const { logger, metrics } = deps;
  const minted = new Counter({ name: 'castellan_jwt_svids_issued', help: 'JWT-SVIDs minted', registers: [metrics.registry] });
  const refused = new Counter({ name: 'castellan_jwt_svid_failures', help: 'MintJwtSvid calls refused, by reason', labelNames: ['reason'], registers: [metrics.registry] });
  addService(server, JwtSvidService, {
    mintJwtSvid(call, callback) {
      const requestId = nextRequestId();
      const creds = callerCredentials(call);
      const run = async (): Promise<ReturnType<typeof create<typeof MintJwtSvidResponseSchema>>> => {
        admitPeer(deps, call.getPeer());
        let caller;
        try {
          caller = await authenticate(deps, creds);
        } catch (e) {
          metrics.authFailures.inc({ method: creds.peerCertDer ? 'mtls' : 'token' });
          throw e instanceof CastellanError ? e : new CastellanError('UNAUTHENTICATED', 'auth.failed', 'authentication failed', { cause: e });
        }
        if (deps.limits && !deps.limits.identity.tryTake(caller.spiffeId)) {
          metrics.rateLimited.inc({ scope: 'identity' });
          throw new CastellanError('RESOURCE_EXHAUSTED', 'ratelimit.identity', 'too many requests for this identity; retry with backoff');
        }
        const audiences = checkAudiences(call.request.audience);
        const ttlMs = jwtTtlMs(cfg, call.request.ttlSeconds);
        const m = await keys.mint(caller.spiffeId, audiences, ttlMs);
        minted.inc();
        logger.info({ event: 'ca.jwt_svid_issued', requestId, spiffeId: caller.spiffeId, auth: caller.method, audiences, kid: m.kid, exp: new Date(m.expiresAt).toISOString() }, 'issued JWT-SVID');
        return create(MintJwtSvidResponseSchema, { token: m.token, spiffeId: caller.spiffeId, expiresAt: BigInt(m.expiresAt / 1000), keyId: m.kid });
      };
      run().then(
        (res) => callback(null, res),
        (e: unknown) => {
          const err = asCastellanError(e);
          refused.inc({ reason: err.code });
          logger[err.kind === 'INTERNAL' ? 'error' : 'warn']({ event: 'ca.jwt_svid_refused', requestId, code: grpc.status[STATUS_OF[err.kind]], reason: err.code, err: err.kind === 'INTERNAL' ? e : undefined }, err.message);
          callback(toGrpcError(err));
        },
      );
    },
  });
}
