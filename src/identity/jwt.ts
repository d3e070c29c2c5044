/**
 * Service-account JWTs verified locally (protocols.md §2, security.md
 * T1-T9): keys only from the configured JWKS (file, URL or OIDC discovery,
 * managed by jose), asymmetric algorithms only, `iss` and `aud` checked,
 * `exp` required, ≤ 60 s leeway, `sub` exactly
 * system:serviceaccount:<ns>:<sa> and consistent with the `kubernetes.io`
 * claim. Signature and claims are checked by jws.ts (synchronous
 * node:crypto, the hot path). Fails closed: no JWKS, no acceptance
 * (UNAVAILABLE, which agents retry).
 */
import { errors, type JWTVerifyGetKey } from 'jose';
import { CastellanError } from '../platform/errors.ts';
import type { Clock } from '../platform/clock.ts';
import { silentLogger, type Logger } from '../platform/logger.ts';
import { workloadSpiffeId } from '../spiffe/id.ts';
import { parseServiceAccountUser, unauthenticated } from './bearer.ts';
import { checkClaims, verifyCompactJws } from './jws.ts';
import { fileKeySet, onceReporter, RemoteKeySet, type KeyRejectedEvent } from './jwks.ts';
import type { Caller } from './types.ts';

export { JWT_ALGORITHMS } from './jws.ts';

export interface JwtOptions {
  jwksFile?: string;
  jwksUri?: string;
  oidcIssuer?: string;
  /** required `iss`; defaults to oidcIssuer */
  issuer?: string;
  audiences: string[];
  trustDomain: string;
  /** seconds, at most 60 */
  clockToleranceSec?: number;
  clock: Clock;
  fetchTimeoutMs?: number;
  logger?: Logger;
  /** a JWKS key that will never be used (weak, or not for verifying): called once per key */
  onKeyRejected?: (e: KeyRejectedEvent) => void;
}

export class JwtAuthenticator {
  private readonly keys: JWTVerifyGetKey;
  private readonly remote: RemoteKeySet | undefined;
  private readonly opts: JwtOptions;
  private readonly issuer: string;
  private readonly logger: Logger;

  constructor(opts: JwtOptions) {
    this.opts = opts;
    this.logger = opts.logger ?? silentLogger();
    const timeout = opts.fetchTimeoutMs ?? 5000;
    const issuer = opts.issuer ?? opts.oidcIssuer;
    if (!issuer) throw new CastellanError('INVALID_ARGUMENT', 'config.invalid', 'JWT authentication needs the expected issuer (--jwt-issuer)');
    this.issuer = issuer;
    const onRejected = onceReporter((e) => {
      this.logger.warn({ event: 'auth.jwks_key_rejected', kid: e.kid, reason: e.reason, source: e.source }, 'a JWKS key will never be used to verify tokens');
      opts.onKeyRejected?.(e);
    });
    if (opts.jwksFile) this.keys = fileKeySet(opts.jwksFile, opts.clock, onRejected);
    else if (opts.jwksUri || opts.oidcIssuer) {
      this.remote = new RemoteKeySet({
        jwksUri: opts.jwksUri,
        oidcIssuer: opts.jwksUri ? undefined : opts.oidcIssuer,
        timeoutMs: timeout,
        clock: opts.clock,
        onRejected,
        onStaleRefresh: (e) => this.logger.warn({ event: 'auth.jwks_refresh_failed', code: e.code, err: e.message }, 'JWKS refresh failed: the last good keys stay in force'),
      });
      this.keys = this.remote.getKey;
    } else throw new CastellanError('INVALID_ARGUMENT', 'config.invalid', 'JWT authentication needs --jwks-file, --jwks-uri or --oidc-issuer');
  }

  /**
   * Fetches remote keys once at start. An OIDC discovery document that names
   * another issuer, or a jwks_uri that is not https, is a configuration error
   * (thrown, code auth.oidc_discovery); keys that cannot be fetched yet are
   * only logged: tokens get UNAVAILABLE until they can.
   */
  async prepare(): Promise<void> {
    if (!this.remote) return;
    try {
      await this.remote.load();
    } catch (e) {
      if (e instanceof CastellanError && e.code === 'auth.oidc_discovery') throw e;
      this.logger.warn({ event: 'auth.jwks_unavailable', err: (e as Error).message }, 'JWKS cannot be fetched yet: tokens are refused as UNAVAILABLE until it can');
    }
  }

  async authenticate(token: string): Promise<Caller> {
    let payload: Record<string, unknown>;
    try {
      ({ payload } = await verifyCompactJws(token, this.keys));
      checkClaims(payload, {
        issuer: this.issuer,
        audiences: this.opts.audiences,
        now: Math.floor(this.opts.clock.now() / 1000),
        toleranceSec: Math.min(60, this.opts.clockToleranceSec ?? 60),
      });
    } catch (e) {
      const err = mapJoseError(e);
      if (err.kind === 'INTERNAL') this.logger.error({ event: 'auth.bug', err: e instanceof Error ? e.stack : String(e) }, 'token verification failed unexpectedly (a bug)');
      throw err;
    }
    const sa = parseServiceAccountUser(payload.sub);
    if (!sa) throw unauthenticated('auth.token_subject', 'token subject is not system:serviceaccount:<namespace>:<name>');
    const k8s = payload['kubernetes.io'] as { namespace?: unknown; serviceaccount?: { name?: unknown }; pod?: { name?: unknown; uid?: unknown } } | undefined;
    if (k8s !== undefined) {
      if (typeof k8s !== 'object' || k8s === null || k8s.namespace !== sa.namespace || k8s.serviceaccount?.name !== sa.serviceAccount) {
        throw unauthenticated('auth.token_subject', 'token "kubernetes.io" claim disagrees with its subject');
      }
    }
    const identity = { trustDomain: this.opts.trustDomain, ...sa };
    return {
      spiffeId: workloadSpiffeId(identity),
      identity,
      method: 'jwt',
      expiresAt: (payload.exp as number) * 1000,
      pod: k8s?.pod ? { name: typeof k8s.pod.name === 'string' ? k8s.pod.name : undefined, uid: typeof k8s.pod.uid === 'string' ? k8s.pod.uid : undefined } : undefined,
    };
  }
}

function mapJoseError(e: unknown): CastellanError {
  if (e instanceof CastellanError) return e;
  if (e instanceof errors.JWTExpired) return unauthenticated('auth.token_expired', 'token has expired', e);
  if (e instanceof errors.JWTClaimValidationFailed) return unauthenticated('auth.token_claims', `token claim "${e.claim}" not accepted: ${e.reason}`, e);
  if (e instanceof errors.JWSSignatureVerificationFailed) return unauthenticated('auth.token_signature', 'token signature does not verify', e);
  if (e instanceof errors.JWKSNoMatchingKey) return unauthenticated('auth.token_unknown_key', 'token key is not in the JWKS', e);
  if (e instanceof errors.JWKSMultipleMatchingKeys) return unauthenticated('auth.token_unknown_key', 'token key is ambiguous in the JWKS', e);
  if (e instanceof errors.JOSEAlgNotAllowed) return unauthenticated('auth.token_alg', 'token algorithm is not allowed (asymmetric algorithms only)', e);
  if (e instanceof errors.JWKSInvalid) return new CastellanError('UNAVAILABLE', 'auth.jwks_unavailable', 'JWKS is invalid', { cause: e });
  if (e instanceof errors.JOSEError) return unauthenticated('auth.token_malformed', 'token is not a valid JWT', e);
  // The key sources turn every network, HTTP and JSON failure into UNAVAILABLE
  // themselves (jwks.ts): whatever else reaches here is a bug, not an outage.
  return new CastellanError('INTERNAL', 'auth.internal', 'token verification failed unexpectedly', { cause: e });
}
