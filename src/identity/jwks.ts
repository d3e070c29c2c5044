/**
 * Where service-account verification keys come from: a JWKS file, a JWKS
 * URL, or an OIDC issuer's discovery document. jose chooses the key for a
 * token's `kid` and `alg` (and already skips keys whose `use`, `key_ops` or
 * curve do not fit); before a set reaches jose, every key weaker than what
 * jose itself would verify with (RSA under 2048 bits), and every key whose
 * `use` or `key_ops` forbid verifying, is dropped, reported once through
 * `onKeyRejected`. So no such key is ever used, whatever jose's selection
 * does (security.md T10).
 *
 * Failures are split in two: the keys cannot be had (file unreadable,
 * network, HTTP status, body not JSON or not a key set) is UNAVAILABLE,
 * retryable, and keeps the last good keys of a remote source; anything else
 * is a bug and propagates as it is, for the caller to report as INTERNAL.
 * OIDC discovery is held to the configured issuer (T11): the document's
 * `issuer` must equal it exactly and its `jwks_uri` must be https (plain
 * http only to a loopback address, for tests).
 */
import { readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { createLocalJWKSet, errors, type JSONWebKeySet, type JWK, type JWTVerifyGetKey } from 'jose';
import { CastellanError } from '../platform/errors.ts';
import type { Clock } from '../platform/clock.ts';
import { MIN_RSA_BITS } from './jws.ts';

/** Why a JWK was dropped from a key set. */
export type KeyRejection = 'rsa_too_short' | 'use_not_sig' | 'key_ops_without_verify' | 'private_key';

export interface KeyRejectedEvent {
  kid: string | undefined;
  reason: KeyRejection;
  /** where the set came from (file path or URL) */
  source: string;
}


export function jwksUnavailable(msg: string, cause?: unknown): CastellanError {
  return new CastellanError('UNAVAILABLE', 'auth.jwks_unavailable', msg, { cause });
}

/** Bits of an unsigned big-endian integer given as base64url (leading zero bits not counted). */
export function base64urlIntegerBits(v: string): number {
  const b = Buffer.from(v, 'base64url');
  let i = 0;
  while (i < b.length && b[i] === 0) i++;
  if (i === b.length) return 0;
  return (b.length - i) * 8 - Math.clz32(b[i]!) + 24;
}

/** Why this JWK must never verify anything, or undefined when it may. */
export function rejectionOf(jwk: JWK): KeyRejection | undefined {
  if (jwk.d !== undefined) return 'private_key';
  if (jwk.use !== undefined && jwk.use !== 'sig') return 'use_not_sig';
  if (jwk.key_ops !== undefined && !(Array.isArray(jwk.key_ops) && jwk.key_ops.includes('verify'))) return 'key_ops_without_verify';
  if (jwk.kty === 'RSA' && (typeof jwk.n !== 'string' || base64urlIntegerBits(jwk.n) < MIN_RSA_BITS)) return 'rsa_too_short';
  return undefined;
}

/**
 * The usable part of a parsed JWKS document. Throws UNAVAILABLE when the
 * document is not a key set at all (the source is broken, not the token).
 */
export function usableKeys(doc: unknown, source: string, onRejected: (e: KeyRejectedEvent) => void): JSONWebKeySet {
  const keys = (doc as { keys?: unknown } | null)?.keys;
  if (typeof doc !== 'object' || doc === null || !Array.isArray(keys)) throw jwksUnavailable(`JWKS from ${source} is not a JSON Web Key Set`);
  const kept: JWK[] = [];
  for (const k of keys) {
    if (typeof k !== 'object' || k === null || Array.isArray(k)) throw jwksUnavailable(`JWKS from ${source} has a member that is not an object`);
    const jwk = k as JWK;
    const reason = rejectionOf(jwk);
    if (reason) onRejected({ kid: typeof jwk.kid === 'string' ? jwk.kid : undefined, reason, source });
    else kept.push(jwk);
  }
  return { keys: kept };
}

/** Reports each (source, kid, reason) once, however often the set is reloaded. */
export function onceReporter(report: (e: KeyRejectedEvent) => void): (e: KeyRejectedEvent) => void {
  const seen = new Set<string>();
  return (e) => {
    const k = `${e.source}\u0000${e.kid ?? ''}\u0000${e.reason}`;
    if (seen.has(k)) return;
    if (seen.size > 1024) seen.clear();
    seen.add(k);
    report(e);
  };
}

/** A JWKS file, re-read when it changes on disk (checked at most once a second). */
export function fileKeySet(path: string, clock: Clock, onRejected: (e: KeyRejectedEvent) => void): JWTVerifyGetKey {
  let checkedAt = -Infinity;
  let mtime = -1;
  let keys: JWTVerifyGetKey | undefined;
  return (header, token) => {
    if (clock.now() - checkedAt > 1000) {
      checkedAt = clock.now();
      try {
        const st = statSync(path);
        if (st.mtimeMs !== mtime || !keys) {
          keys = undefined;
          keys = createLocalJWKSet(usableKeys(JSON.parse(readFileSync(path, 'utf8')) as unknown, path, onRejected));
          mtime = st.mtimeMs;
        }
      } catch (e) {
        keys = undefined;
        throw e instanceof CastellanError ? e : jwksUnavailable(`JWKS file ${path} cannot be read`, e);
      }
    }
    if (!keys) throw jwksUnavailable(`JWKS file ${path} cannot be read`);
    return keys(header, token);
  };
}

/** GET a JSON document; every failure of the exchange itself is UNAVAILABLE. */
async function fetchJson(url: string, timeoutMs: number, what: string): Promise<unknown> {
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), redirect: 'error', headers: { accept: 'application/json' } });
  } catch (e) {
    throw jwksUnavailable(`${what} ${url} cannot be fetched`, e);
  }
  if (!res.ok) throw jwksUnavailable(`${what} ${url} answered HTTP ${res.status}`);
  try {
    return (await res.json()) as unknown;
  } catch (e) {
    throw jwksUnavailable(`${what} ${url} is not JSON`, e);
  }
}

function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '');
  if (h === 'localhost') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  return h === '::1';
}

/** The discovery document's verdict: the jwks_uri to use, or a precise refusal. */
export function checkDiscovery(doc: unknown, configuredIssuer: string, url: string): URL {
  const d = doc as { issuer?: unknown; jwks_uri?: unknown } | null;
  const refuse = (why: string) => new CastellanError('UNAVAILABLE', 'auth.oidc_discovery', `OIDC discovery at ${url} refused: ${why}`);
  if (typeof d !== 'object' || d === null) throw refuse('the document is not a JSON object');
  if (d.issuer !== configuredIssuer) throw refuse(`its "issuer" is ${JSON.stringify(d.issuer)}, not the configured ${JSON.stringify(configuredIssuer)}`);
  if (typeof d.jwks_uri !== 'string') throw refuse('it has no "jwks_uri"');
  let u: URL;
  try {
    u = new URL(d.jwks_uri);
  } catch {
    throw refuse(`its "jwks_uri" ${JSON.stringify(d.jwks_uri)} is not a URL`);
  }
  if (u.protocol !== 'https:' && !(u.protocol === 'http:' && isLoopbackHost(u.hostname))) {
    throw refuse(`its "jwks_uri" ${u.href} is not https (plain http is accepted only to a loopback address)`);
  }
  return u;
}

export interface RemoteKeySetOptions {
  /** the JWKS URL, or the issuer whose discovery document names it */
  jwksUri?: string;
  oidcIssuer?: string;
  timeoutMs: number;
  clock: Clock;
  onRejected: (e: KeyRejectedEvent) => void;
  /** a failed refresh that keeps the last good keys (logged by the caller) */
  onStaleRefresh?: (e: CastellanError) => void;
  /** keys are refreshed after this long (ms); default 10 min */
  maxAgeMs?: number;
  /** an unknown kid refreshes at most this often (ms); default 30 s */
  cooldownMs?: number;
}

/**
 * Keys from a URL (directly, or through OIDC discovery), fetched on first
 * use, refreshed after `maxAgeMs` or when a token names an unknown kid (at
 * most once per `cooldownMs`). A refresh that fails, or whose discovery
 * document no longer names the configured issuer, keeps the last good keys.
 */
export class RemoteKeySet {
  private keys: JWTVerifyGetKey | undefined;
  private loadedAt = -Infinity;
  private lastAttempt = -Infinity;
  private loading: Promise<void> | undefined;
  readonly getKey: JWTVerifyGetKey;
  private readonly o: RemoteKeySetOptions;

  constructor(o: RemoteKeySetOptions) {
    this.o = o;
    if (!o.jwksUri === !o.oidcIssuer) throw new CastellanError('INVALID_ARGUMENT', 'config.invalid', 'a remote key set needs exactly one of jwksUri and oidcIssuer');
    this.getKey = (header, token) => this.select(header, token);
  }

  /** Fetches now; throws what went wrong (a discovery document that does not fit: code auth.oidc_discovery). */
  async load(): Promise<void> {
    this.loading ??= this.fetchKeys().finally(() => (this.loading = undefined));
    return this.loading;
  }

  private async fetchKeys(): Promise<void> {
    this.lastAttempt = this.o.clock.now();
    let url: string;
    if (this.o.oidcIssuer) {
      const discovery = this.o.oidcIssuer.replace(/\/$/, '') + '/.well-known/openid-configuration';
      url = checkDiscovery(await fetchJson(discovery, this.o.timeoutMs, 'OIDC discovery document'), this.o.oidcIssuer, discovery).href;
    } else {
      url = this.o.jwksUri!;
    }
    const set = usableKeys(await fetchJson(url, this.o.timeoutMs, 'JWKS'), url, this.o.onRejected);
    try {
      this.keys = createLocalJWKSet(set);
    } catch (e) {
      throw jwksUnavailable(`JWKS from ${url} is malformed`, e);
    }
    this.loadedAt = this.o.clock.now();
  }

  private async refresh(): Promise<void> {
    try {
      await this.load();
    } catch (e) {
      if (!this.keys || !(e instanceof CastellanError)) throw e;
      this.o.onStaleRefresh?.(e);
    }
  }

  private async select(...args: Parameters<JWTVerifyGetKey>): Promise<Awaited<ReturnType<JWTVerifyGetKey>>> {
    const now = this.o.clock.now();
    if (!this.keys || now - this.loadedAt > (this.o.maxAgeMs ?? 600_000)) await this.refresh();
    try {
      return await this.keys!(...args);
    } catch (e) {
      if (!(e instanceof errors.JWKSNoMatchingKey) || this.o.clock.now() - this.lastAttempt < (this.o.cooldownMs ?? 30_000)) throw e;
      await this.refresh();
      return this.keys!(...args);
    }
  }
}
