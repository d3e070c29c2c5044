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
import { readFileSync, statSync } from 'node:fs';
import { createLocalJWKSet, createRemoteJWKSet, errors, type JWTVerifyGetKey, type JSONWebKeySet } from 'jose';
import { CastellanError } from '../platform/errors.ts';
import type { Clock } from '../platform/clock.ts';
import { workloadSpiffeId } from '../spiffe/id.ts';
import { parseServiceAccountUser, unauthenticated } from './bearer.ts';
import { checkClaims, verifyCompactJws } from './jws.ts';
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
}

function unavailable(msg: string, cause?: unknown): CastellanError {
  return new CastellanError('UNAVAILABLE', 'auth.jwks_unavailable', msg, { cause });
}

/** A JWKS file, re-read when it changes on disk (checked at most once a second). */
function fileKeySet(path: string, clock: Clock): JWTVerifyGetKey {
  let checkedAt = -Infinity;
  let mtime = -1;
  let keys: JWTVerifyGetKey | undefined;
  return (header, token) => {
    if (clock.now() - checkedAt > 1000) {
      checkedAt = clock.now();
      try {
        const st = statSync(path);
        if (st.mtimeMs !== mtime || !keys) {
          keys = createLocalJWKSet(JSON.parse(readFileSync(path, 'utf8')) as JSONWebKeySet);
          mtime = st.mtimeMs;
        }
      } catch (e) {
        keys = undefined;
        throw unavailable(`JWKS file ${path} cannot be read`, e);
      }
    }
    if (!keys) throw unavailable(`JWKS file ${path} cannot be read`);
    return keys(header, token);
  };
}

/** Keys of an OIDC issuer: discovery document → jwks_uri, retried on failure. */
function oidcKeySet(issuer: string, timeoutMs: number): JWTVerifyGetKey {
  let remote: JWTVerifyGetKey | undefined;
  return async (header, token) => {
    if (!remote) {
      const url = issuer.replace(/\/$/, '') + '/.well-known/openid-configuration';
      let doc: { jwks_uri?: unknown };
      try {
        const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), redirect: 'error' });
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        doc = (await res.json()) as { jwks_uri?: unknown };
      } catch (e) {
        throw unavailable(`OIDC discovery at ${url} failed`, e);
      }
      if (typeof doc.jwks_uri !== 'string') throw unavailable(`OIDC discovery at ${url} has no jwks_uri`);
      remote = createRemoteJWKSet(new URL(doc.jwks_uri), { timeoutDuration: timeoutMs });
    }
    return remote(header, token);
  };
}

export class JwtAuthenticator {
  private readonly keys: JWTVerifyGetKey;
  private readonly opts: JwtOptions;
  private readonly issuer: string;

  constructor(opts: JwtOptions) {
    this.opts = opts;
    const timeout = opts.fetchTimeoutMs ?? 5000;
    const issuer = opts.issuer ?? opts.oidcIssuer;
    if (!issuer) throw new CastellanError('INVALID_ARGUMENT', 'config.invalid', 'JWT authentication needs the expected issuer (--jwt-issuer)');
    this.issuer = issuer;
    if (opts.jwksFile) this.keys = fileKeySet(opts.jwksFile, opts.clock);
    else if (opts.jwksUri) this.keys = createRemoteJWKSet(new URL(opts.jwksUri), { timeoutDuration: timeout });
    else if (opts.oidcIssuer) this.keys = oidcKeySet(opts.oidcIssuer, timeout);
    else throw new CastellanError('INVALID_ARGUMENT', 'config.invalid', 'JWT authentication needs --jwks-file, --jwks-uri or --oidc-issuer');
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
      throw mapJoseError(e);
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
  if (e instanceof errors.JWKSTimeout) return unavailable('JWKS fetch timed out', e);
  if (e instanceof errors.JWKSInvalid) return unavailable('JWKS is invalid', e);
  if (e instanceof errors.JOSEError) return unauthenticated('auth.token_malformed', 'token is not a valid JWT', e);
  // fetch failures (ECONNREFUSED, DNS) from the remote key set
  if (e instanceof TypeError || (e as { name?: string }).name === 'AbortError') return unavailable('JWKS cannot be fetched', e);
  return unauthenticated('auth.token_invalid', 'token not accepted', e);
}
