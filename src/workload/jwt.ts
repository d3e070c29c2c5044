/**
 * The agent's JWT-SVID side of the Workload API:
 * - FetchJWTSVID: tokens minted by the CA for the agent's identity
 *   (castellan.v1.JwtSvidService), cached per audience set and re-minted once
 *   half of a token's lifetime has passed, or at once when its key is tainted;
 * - FetchJWTBundles: the CA's JWT bundle (JWK set, every key with `kid` and
 *   `use: jwt-svid`), pushed over TrustService.WatchBundle, keyed by the trust
 *   domain URI, with the JWT bundle of every federated trust domain;
 * - ValidateJWTSVID: JWT-SVID.md's rules. Compact JWS, header only `alg`
 *   (an allowed one), `kid` (required here: keys are chosen by it) and `typ`
 *   (JWT or JOSE); the bundle of the trust domain of `sub` (none: untrusted),
 *   so a federated domain's keys verify only tokens of that trust domain;
 *   the signature with the key `kid` names; `exp` required and not past
 *   (30 s leeway), `aud` required and holding the audience, `sub` a SPIFFE ID.
 *
 * Tainted keys (what is guaranteed): a tainted key stays in the bundle until
 * it is retired, so tokens it signed before the taint keep verifying for
 * the rest of their (short) lives. ValidateJWTSVID refuses a token signed by
 * a tainted key unless its `iat` is before the taint AND its lifetime
 * (exp - iat) is within the CA's maximum: so from taint + max TTL on, no
 * token of that key passes at all, whatever a thief of the key writes in
 * `iat`; before that, a thief must back-date `iat`, which caps `exp` at
 * taint + max TTL. The guarantee holds from the moment the agent receives
 * the bundle update that names the key tainted (one push over WatchBundle).
 */
import { createLocalJWKSet, decodeProtectedHeader, errors as joseErrors, jwtVerify, type JSONWebKeySet, type JWTPayload } from 'jose';
import type { JsonObject } from '@bufbuild/protobuf';
import type { Clock } from '../platform/clock.ts';
import { CastellanError, type CodeSuffix } from '../platform/errors.ts';
import type { Logger } from '../platform/logger.ts';
import { parseSpiffeId } from '../spiffe/id.ts';
import type { WorkloadMetrics } from './metrics.ts';
import type { JwtSide } from './server.ts';

/** What the CA client gives: one freshly minted JWT-SVID. */
export interface MintedJwt {
  token: string;
  spiffeId: string;
  /** ms since epoch */
  expiresAt: number;
  keyId: string;
}

export type JwtMinter = (audiences: readonly string[]) => Promise<MintedJwt>;

/** The JWT part of a bundle update pushed by the CA. */
export interface JwtBundleUpdate {
  /** JWK set JSON; empty when the CA mints no JWT-SVIDs */
  jwtBundleJson: string;
  taintedJwtKeys: readonly { keyId: string; taintedAt: number }[];
  /** ms */
  jwtMaxTtlMs: number;
}

/** JWS algorithms a JWT-SVID may use (JWT-SVID.md §2.1: RFC 7518 §3.3-3.5). */
export const JWT_SVID_ALGS = ['RS256', 'RS384', 'RS512', 'ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512'] as const;
const LEEWAY_S = 30;
const MAX_CACHED = 256;

function invalid(code: CodeSuffix<'jwtsvid'>, msg: string): CastellanError {
  return new CastellanError('INVALID_ARGUMENT', `jwtsvid.${code}`, msg);
}

interface Cached extends MintedJwt {
  /** ms: when it was obtained */
  at: number;
}

export interface AgentJwtOptions {
  mint: JwtMinter;
  trustDomain: string;
  clock: Clock;
  logger: Logger;
  metrics?: WorkloadMetrics;
}

export class AgentJwt implements JwtSide {
  private readonly cache = new Map<string, Cached>();
  private readonly inflight = new Map<string, Promise<Cached>>();
  private readonly bundleMap = new Map<string, string>();
  private jwks = new Map<string, ReturnType<typeof createLocalJWKSet>>();
  private tainted = new Map<string, number>();
  private maxTtlMs = 0;
  private readonly listeners = new Set<() => void>();

  private readonly o: AgentJwtOptions;

  constructor(o: AgentJwtOptions) {
    this.o = o;
  }

  /**
   * A bundle update from the CA: new JWK set and tainted keys (of our own
   * trust domain), and `federated`: the JWT bundles of the federated trust
   * domains (trust domain name → JWK set JSON, already validated by the
   * agent's cache), the complete set. Each key set verifies only tokens
   * whose `sub` is in its own trust domain.
   */
  apply(u: JwtBundleUpdate, federated: ReadonlyMap<string, string> = new Map()): void {
    const own = `spiffe://${this.o.trustDomain}`;
    this.tainted = new Map(u.taintedJwtKeys.map((k) => [k.keyId, k.taintedAt]));
    this.maxTtlMs = u.jwtMaxTtlMs;
    // A cached token whose key is now tainted is not handed out again.
    for (const [k, c] of this.cache) if (this.tainted.has(c.keyId)) this.cache.delete(k);
    const wanted = new Map<string, string>();
    if (u.jwtBundleJson !== '') wanted.set(own, u.jwtBundleJson);
    for (const [td, json] of federated) if (`spiffe://${td}` !== own && json !== '') wanted.set(`spiffe://${td}`, json);
    const changed: string[] = [];
    for (const key of new Set([...this.bundleMap.keys(), ...wanted.keys()])) {
      if (this.setBundle(key, wanted.get(key))) changed.push(key);
    }
    if (changed.length === 0) return;
    const ownKeys = this.bundleMap.has(own) ? (JSON.parse(this.bundleMap.get(own)!) as JSONWebKeySet).keys.map((k) => k.kid) : [];
    this.o.logger.info({ event: 'workload.jwt_bundle', changed, keys: ownKeys, tainted: [...this.tainted.keys()] }, 'JWT bundle changed');
    for (const l of [...this.listeners]) {
      try {
        l();
      } catch (e) {
        this.o.logger.error({ event: 'workload.listener_failed', err: e }, 'JWT bundle listener failed');
      }
    }
  }

  /** Sets (or, with undefined, removes) the JWK set of trust domain `key`; true when that changed what is served. */
  private setBundle(key: string, json: string | undefined): boolean {
    const before = this.bundleMap.get(key);
    if (json === undefined) {
      if (before === undefined) return false;
      this.bundleMap.delete(key);
      this.jwks.delete(key);
      return true;
    }
    let set: JSONWebKeySet;
    try {
      set = onlyJwtSvidKeys(JSON.parse(json));
    } catch (e) {
      this.o.logger.error({ event: 'workload.jwt_bundle_rejected', trustDomain: key, err: (e as Error).message }, 'a JWT bundle cannot be used; keeping the previous one');
      return false;
    }
    const text = JSON.stringify(set);
    if (text === before) return false;
    this.bundleMap.set(key, text);
    // jose picks keys whose `use` is absent or "sig": the SPIFFE "jwt-svid" is dropped for it (already filtered on).
    this.jwks.set(key, createLocalJWKSet({ keys: set.keys.map(({ use: _use, ...k }) => k) }));
    return true;
  }

  /** Whether the last bundle update named `kid` tainted. */
  isTainted(kid: string): boolean {
    return this.tainted.has(kid);
  }

  bundles(): ReadonlyMap<string, string> {
    return this.bundleMap;
  }

  onBundlesChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => void this.listeners.delete(listener);
  }

  async fetch(audiences: readonly string[]): Promise<{ spiffeId: string; token: string }> {
    const key = JSON.stringify([...new Set(audiences)].sort());
    const now = this.o.clock.now();
    const hit = this.cache.get(key);
    if (hit && now < hit.at + (hit.expiresAt - hit.at) / 2) return hit;
    let p = this.inflight.get(key);
    if (!p) {
      p = this.o.mint(audiences).then(
        (m) => {
          const c = { ...m, at: this.o.clock.now() };
          this.o.metrics?.jwtMinted.inc();
          this.cache.delete(key);
          this.cache.set(key, c);
          if (this.cache.size > MAX_CACHED) this.cache.delete(this.cache.keys().next().value!);
          this.o.logger.debug({ event: 'workload.jwt_minted', audiences, kid: m.keyId, expiresAt: new Date(m.expiresAt).toISOString() }, 'JWT-SVID obtained from the CA');
          return c;
        },
      );
      const done = (): void => void this.inflight.delete(key);
      p.then(done, done);
      this.inflight.set(key, p);
    }
    return p;
  }

  async validate(token: string, audience: string): Promise<{ spiffeId: string; claims: JsonObject }> {
    if (token.length > 16 * 1024) throw invalid('malformed', 'token is longer than 16 KiB');
    const parts = token.split('.');
    if (parts.length !== 3) throw invalid('malformed', 'not a JWS compact serialization (three dot-separated parts)');
    let header;
    let unverified: JWTPayload;
    try {
      header = decodeProtectedHeader(token);
      unverified = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as JWTPayload;
    } catch {
      throw invalid('malformed', 'header or payload is not base64url JSON');
    }
    const extra = Object.keys(header).filter((k) => k !== 'alg' && k !== 'kid' && k !== 'typ');
    if (extra.length > 0) throw invalid('header', `header parameters not allowed in a JWT-SVID: ${extra.slice(0, 5).join(', ')}`);
    if (typeof header.alg !== 'string' || !(JWT_SVID_ALGS as readonly string[]).includes(header.alg)) throw invalid('alg', `alg ${JSON.stringify(header.alg)} is not allowed for JWT-SVIDs`);
    if (header.typ !== undefined && header.typ !== 'JWT' && header.typ !== 'JOSE') throw invalid('header', `typ must be JWT or JOSE, got ${JSON.stringify(header.typ)}`);
    if (typeof header.kid !== 'string' || header.kid === '') throw invalid('header', 'kid is required');
    if (typeof unverified?.sub !== 'string') throw invalid('claims', 'sub is required');
    let td: string;
    try {
      td = `spiffe://${parseSpiffeId(unverified.sub).trustDomain}`;
    } catch (e) {
      throw invalid('claims', `sub is not a SPIFFE ID: ${(e as Error).message}`);
    }
    const keys = this.jwks.get(td);
    if (!keys) throw invalid('untrusted_domain', `no JWT bundle for ${td}: the token is not trusted`);
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, keys, {
        algorithms: [...JWT_SVID_ALGS],
        audience,
        requiredClaims: ['exp', 'aud', 'sub'],
        clockTolerance: LEEWAY_S,
        currentDate: new Date(this.o.clock.now()),
      }));
    } catch (e) {
      throw mapJoseError(e);
    }
    // Taints are the CA's, for keys of our own trust domain; a foreign kid that happens to match means nothing.
    const taintedAt = td === `spiffe://${this.o.trustDomain}` ? this.tainted.get(header.kid) : undefined;
    if (taintedAt !== undefined) {
      const iat = typeof payload.iat === 'number' ? payload.iat * 1000 : undefined;
      const life = iat === undefined ? Infinity : payload.exp! * 1000 - iat;
      if (iat === undefined || iat >= taintedAt || life > this.maxTtlMs) {
        this.o.logger.warn({ event: 'workload.jwt_tainted_refused', kid: header.kid, sub: payload.sub }, 'refused a JWT-SVID signed by a tainted key after its taint');
        throw invalid('tainted', `the token's key ${header.kid} is tainted since ${new Date(taintedAt).toISOString()} and the token was not issued before that`);
      }
    }
    return { spiffeId: payload.sub!, claims: payload as JsonObject };
  }
}

/** The JWT-SVID keys of a JWK set (use "jwt-svid", with a kid); anything else is dropped. */
export function onlyJwtSvidKeys(set: unknown): JSONWebKeySet {
  const keys = (set as { keys?: unknown })?.keys;
  if (!Array.isArray(keys)) throw new Error('not a JWK set');
  return { keys: keys.filter((k: { use?: unknown; kid?: unknown }) => k?.use === 'jwt-svid' && typeof k.kid === 'string' && k.kid !== '') };
}

function mapJoseError(e: unknown): CastellanError {
  if (e instanceof joseErrors.JWTExpired) return invalid('expired', 'token has expired');
  if (e instanceof joseErrors.JWTClaimValidationFailed) {
    if (e.claim === 'aud') return invalid('audience', e.reason === 'missing' ? 'token has no aud claim' : 'the audience is not in the token\'s aud claim');
    return invalid('claims', `claim ${e.claim}: ${e.reason}`);
  }
  if (e instanceof joseErrors.JWKSNoMatchingKey) return invalid('unknown_key', 'no key of the trust domain\'s JWT bundle has this kid');
  if (e instanceof joseErrors.JWSSignatureVerificationFailed) return invalid('signature', 'signature does not verify');
  if (e instanceof joseErrors.JOSEAlgNotAllowed) return invalid('alg', 'alg not allowed');
  if (e instanceof joseErrors.JOSEError) return invalid('malformed', `token cannot be verified (${e.code})`);
  return new CastellanError('INTERNAL', 'jwtsvid.internal', 'internal error', { cause: e });
}
