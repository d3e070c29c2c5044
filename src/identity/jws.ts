/**
 * JWT verification on the hot path (every CreateCertificate with a token).
 *
 * jose stays in charge of keys: parsing the JWKS, choosing the key for a
 * header's `kid` and `alg`, fetching and refreshing remote sets. The
 * signature is then checked synchronously with node:crypto, and the claims
 * here: on Node 24 jose's WebCrypto path costs ~2.4x this one's CPU per ES256
 * token and ~3.5x per RS256 token (bench/jwt-verify.ts prints both, side by
 * side with node:crypto's bare signature check).
 * test/identity/jws-differential.test.ts checks that both accept and refuse
 * the same tokens.
 *
 * Refusals are CastellanError UNAUTHENTICATED with codes auth.token_malformed,
 * auth.token_alg, auth.token_header, auth.token_signature, auth.token_claims,
 * auth.token_expired; errors of the key set (unknown kid, JWKS unreachable)
 * propagate as jose threw them, for the caller to map.
 */
import { constants, KeyObject, verify, type webcrypto } from 'node:crypto';
import { errors, type JWTVerifyGetKey } from 'jose';
import { unauthenticated } from './bearer.ts';

interface AlgSpec {
  hash: string | null;
  kind: 'rsa' | 'pss' | 'ec' | 'eddsa';
  /** ES*: the curve and the byte length of r and s */
  curve?: string;
  size?: number;
}

const ALGS: Record<string, AlgSpec> = {
  RS256: { hash: 'sha256', kind: 'rsa' },
  RS384: { hash: 'sha384', kind: 'rsa' },
  RS512: { hash: 'sha512', kind: 'rsa' },
  PS256: { hash: 'sha256', kind: 'pss' },
  PS384: { hash: 'sha384', kind: 'pss' },
  PS512: { hash: 'sha512', kind: 'pss' },
  ES256: { hash: 'sha256', kind: 'ec', curve: 'prime256v1', size: 32 },
  ES384: { hash: 'sha384', kind: 'ec', curve: 'secp384r1', size: 48 },
  ES512: { hash: 'sha512', kind: 'ec', curve: 'secp521r1', size: 66 },
  EdDSA: { hash: null, kind: 'eddsa' },
};

/** Asymmetric algorithms only: never `none`, never HMAC (a public key is no secret). */
export const JWT_ALGORITHMS: readonly string[] = Object.keys(ALGS);

/** Header parameters that would let a token choose its own key, or change how it is read. */
const FORBIDDEN_HEADERS = ['jku', 'x5u', 'jwk', 'x5c', 'crit', 'b64'];

const utf8 = new TextDecoder('utf-8', { fatal: true });
const B64URL = /^[A-Za-z0-9_-]*$/;

function malformed(msg: string, cause?: unknown): never {
  throw unauthenticated('auth.token_malformed', msg, cause);
}

const B64URL_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/**
 * Canonical unpadded base64url only: Buffer's decoder ignores stray trailing
 * characters and bits, which would make a token malleable (a signature with
 * one more character would still verify). Canonical means: only the
 * alphabet, no length of 1 mod 4 (a lone character carries no whole byte),
 * and the unused low bits of the last character zero.
 */
export function isCanonicalBase64url(part: string): boolean {
  const rem = part.length % 4;
  if (rem === 1 || !B64URL.test(part)) return false;
  const last = rem === 0 ? 0 : B64URL_ALPHABET.indexOf(part[part.length - 1]!);
  return rem === 0 || (rem === 2 ? (last & 0x0f) === 0 : (last & 0x03) === 0);
}

function b64url(part: string, what: string): Buffer {
  if (!isCanonicalBase64url(part)) malformed(`token ${what} is not canonical base64url`);
  return Buffer.from(part, 'base64url');
}

/** A decoded part as a JSON object (bytes already checked by b64url). */
function jsonObject(bytes: Buffer, what: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(utf8.decode(bytes));
  } catch (e) {
    malformed(`token ${what} is not UTF-8 JSON`, e);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) malformed(`token ${what} is not a JSON object`);
  return v as Record<string, unknown>;
}

/** r||s (JWS) to the DER SEQUENCE node:crypto takes by default (cheaper than an options object). */
function ecdsaDer(sig: Buffer, size: number): Buffer {
  const int = (b: Buffer): Buffer => {
    let i = 0;
    while (i < b.length - 1 && b[i] === 0) i++;
    const v = b.subarray(i);
    const pad = v[0]! & 0x80 ? 1 : 0;
    const out = Buffer.allocUnsafe(2 + pad + v.length);
    out[0] = 0x02;
    out[1] = pad + v.length;
    if (pad) out[2] = 0;
    v.copy(out, 2 + pad);
    return out;
  };
  const r = int(sig.subarray(0, size));
  const s = int(sig.subarray(size));
  const len = r.length + s.length;
  const head = len < 0x80 ? Buffer.of(0x30, len) : Buffer.of(0x30, 0x81, len);
  return Buffer.concat([head, r, s]);
}

const keyObjects = new WeakMap<object, KeyObject>();

function toKeyObject(k: unknown): KeyObject {
  if (k instanceof KeyObject) return k;
  if (typeof k === 'object' && k !== null) {
    let ko = keyObjects.get(k);
    if (!ko) {
      ko = KeyObject.from(k as webcrypto.CryptoKey);
      keyObjects.set(k, ko);
    }
    return ko;
  }
  throw unauthenticated('auth.token_unknown_key', 'no usable key for this token');
}

/** RSA keys shorter than this never verify anything (security.md T10). */
export const MIN_RSA_BITS = 2048;

/** Whether a key may verify `spec`'s signatures; remembered per key (reading key details is not free). */
const fits = new WeakMap<KeyObject, Map<AlgSpec, boolean>>();

function keyFits(key: KeyObject, spec: AlgSpec): boolean {
  let m = fits.get(key);
  const known = m?.get(spec);
  if (known !== undefined) return known;
  const t = key.asymmetricKeyType;
  let ok: boolean;
  if (key.type !== 'public') ok = false;
  // PKCS#1 v1.5 only with a plain RSA key, PSS with either; never under 2048 bits (jose's own floor, T10)
  else if (spec.kind === 'rsa') ok = t === 'rsa' && (key.asymmetricKeyDetails?.modulusLength ?? 0) >= MIN_RSA_BITS;
  else if (spec.kind === 'pss') ok = (t === 'rsa' || t === 'rsa-pss') && (key.asymmetricKeyDetails?.modulusLength ?? 0) >= MIN_RSA_BITS;
  else if (spec.kind === 'ec') ok = t === 'ec' && key.asymmetricKeyDetails?.namedCurve === spec.curve;
  else ok = t === 'ed25519' || t === 'ed448';
  if (!m) fits.set(key, (m = new Map()));
  m.set(spec, ok);
  return ok;
}

/**
 * The checked header of an encoded header segment. Every token of one signing
 * key carries the very same header text, so the accepted ones are remembered
 * (a few dozen at most, frozen: a caller cannot change what the next token
 * sees); refusals are never cached, they throw again each time.
 */
const headers = new Map<string, { header: Record<string, unknown>; spec: AlgSpec }>();
const MAX_HEADERS = 64;

function checkedHeader(h: string): { header: Record<string, unknown>; spec: AlgSpec } {
  const hit = headers.get(h);
  if (hit) return hit;
  const header = jsonObject(b64url(h, 'header'), 'header');
  const alg = header.alg;
  const spec = typeof alg === 'string' && Object.hasOwn(ALGS, alg) ? ALGS[alg]! : undefined;
  if (!spec) throw unauthenticated('auth.token_alg', 'token algorithm is not allowed (asymmetric algorithms only)');
  for (const name of FORBIDDEN_HEADERS) {
    if (Object.hasOwn(header, name)) throw unauthenticated('auth.token_header', `token header "${name}" is not accepted: keys come only from the configured JWKS`);
  }
  if (header.kid !== undefined && typeof header.kid !== 'string') malformed('token "kid" is not a string');
  if (headers.size >= MAX_HEADERS) headers.clear();
  const entry = { header: deepFreeze(header), spec };
  headers.set(h, entry);
  return entry;
}

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null) {
    for (const x of Object.values(v)) deepFreeze(x);
    Object.freeze(v);
  }
  return v;
}

function signatureHolds(spec: AlgSpec, input: Buffer, key: KeyObject, sig: Buffer): boolean {
  try {
    if (spec.kind === 'ec') return sig.length === 2 * spec.size! && verify(spec.hash, input, key, ecdsaDer(sig, spec.size!));
    if (spec.kind === 'pss') return verify(spec.hash, input, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST }, sig);
    return sig.length > 0 && verify(spec.hash, input, key, sig);
  } catch {
    return false;
  }
}

export interface VerifiedJws {
  readonly header: Record<string, unknown>;
  readonly payload: Record<string, unknown>;
}

/**
 * Verifies a compact JWS: strict framing, an allowed asymmetric `alg`, no
 * header that picks or embeds keys, the key chosen by `keys` (a jose key
 * set), then the signature; only then is the payload parsed (a JSON object).
 */
export async function verifyCompactJws(token: string, keys: JWTVerifyGetKey): Promise<VerifiedJws> {
  const parts = token.split('.');
  if (parts.length !== 3) malformed('token must have three parts');
  const [h, p, s] = parts as [string, string, string];
  const { header, spec } = checkedHeader(h);
  const sig = b64url(s, 'signature');
  const payloadBytes = b64url(p, 'payload'); // framing checked now, parsed only once the signature holds
  const input = Buffer.from(`${h}.${p}`, 'latin1');
  let candidates: KeyObject[];
  try {
    candidates = [toKeyObject(await keys(header as Parameters<JWTVerifyGetKey>[0], { payload: p, signature: s }))];
  } catch (e) {
    // A kid-less token that fits several keys of the set: try each, as jose documents.
    if (!(e instanceof errors.JWKSMultipleMatchingKeys)) throw e;
    candidates = [];
    for await (const k of e as unknown as AsyncIterable<unknown>) candidates.push(toKeyObject(k));
  }
  const fitting = candidates.filter((k) => keyFits(k, spec));
  if (fitting.length === 0) throw unauthenticated('auth.token_unknown_key', `the key chosen for this token does not fit "${header.alg as string}"`);
  if (!fitting.some((key) => signatureHolds(spec, input, key, sig))) throw unauthenticated('auth.token_signature', 'token signature does not verify');
  return { header, payload: jsonObject(payloadBytes, 'payload') };
}

export interface ClaimRules {
  issuer: string;
  /** the token's `aud` must contain one of these */
  audiences: readonly string[];
  /** seconds since epoch */
  now: number;
  /** seconds of leeway for exp, nbf and iat */
  toleranceSec: number;
}

const claimErr = (claim: string, reason: string) => unauthenticated('auth.token_claims', `token claim "${claim}" not accepted: ${reason}`);

/**
 * The registered claims of a service-account token: `iss` equal, `aud`
 * (string or array of strings) naming one of ours, `exp` required, `nbf`
 * and `iat` not in the future, all within the leeway; `sub` a string.
 */
export function checkClaims(payload: Record<string, unknown>, r: ClaimRules): void {
  const { iss, aud, exp, nbf, iat, sub } = payload;
  if (iss === undefined) throw claimErr('iss', 'missing');
  if (iss !== r.issuer) throw claimErr('iss', 'unexpected issuer');
  if (aud === undefined) throw claimErr('aud', 'missing');
  const auds = typeof aud === 'string' ? [aud] : Array.isArray(aud) && aud.every((a) => typeof a === 'string') ? (aud as string[]) : undefined;
  if (!auds) throw claimErr('aud', 'must be a string or an array of strings');
  if (!auds.some((a) => r.audiences.includes(a))) throw claimErr('aud', 'does not name this CA');
  if (exp === undefined) throw claimErr('exp', 'missing');
  if (typeof exp !== 'number' || !Number.isFinite(exp)) throw claimErr('exp', 'must be a number');
  if (exp <= r.now - r.toleranceSec) throw unauthenticated('auth.token_expired', 'token has expired');
  if (nbf !== undefined && (typeof nbf !== 'number' || !Number.isFinite(nbf))) throw claimErr('nbf', 'must be a number');
  if (typeof nbf === 'number' && nbf > r.now + r.toleranceSec) throw claimErr('nbf', 'token is not yet valid');
  if (iat !== undefined && (typeof iat !== 'number' || !Number.isFinite(iat))) throw claimErr('iat', 'must be a number');
  if (typeof iat === 'number' && iat > r.now + r.toleranceSec) throw claimErr('iat', 'token issued in the future');
  if (typeof sub !== 'string') throw claimErr('sub', 'missing');
}
