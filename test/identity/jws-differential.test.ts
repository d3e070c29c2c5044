/**
 * The hot-path JWT verifier (src/identity/jws.ts: node:crypto signature
 * check, own claim checks) against jose's own jwtVerify on the same key
 * set: for generated tokens (every allowed algorithm, wrong algorithms,
 * header and claim variations, corrupted, truncated or stretched
 * signatures) both must accept or both refuse. The documented differences
 * are applied to the jose side explicitly (see `joseReference`), so any
 * other disagreement fails the property.
 */
import { constants, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import fc from 'fast-check';
import { createLocalJWKSet, errors as joseErrors, exportJWK, jwtVerify, SignJWT, type JWK, type JWTVerifyGetKey } from 'jose';

import { beforeAll, describe, expect, it } from 'vitest';
import { checkClaims, JWT_ALGORITHMS, verifyCompactJws } from '../../src/identity/jws.ts';
import { usableKeys } from '../../src/identity/jwks.ts';

const ISS = 'https://kubernetes.default.svc.cluster.local';
const NOW = 1_900_000_000; // seconds
const SEED = Number(process.env.FC_SEED ?? 20261201);

interface K {
  alg: string;
  kid: string;
  priv: KeyObject;
}
const keys: K[] = [];
/** jose's view: the published set as it is */
let jwks: JWTVerifyGetKey;
/** Castellan's view: the same set through its key source (jwks.ts drops what must never verify) */
let castellanJwks: JWTVerifyGetKey;
/** kids of keys that must never verify anything (T10): weak RSA, use/key_ops forbidding it, a curve other than the alg's */
const NEVER = ['rsa1024', 'pss1024', 'ops-empty', 'ops-sign', 'use-enc', 'p384-as-es256'];

beforeAll(async () => {
  const make = (alg: string, kid: string, kp: { privateKey: KeyObject; publicKey: KeyObject }) => ({ alg, kid, kp });
  const specs = [
    make('ES256', 'p256', generateKeyPairSync('ec', { namedCurve: 'P-256' })),
    make('ES384', 'p384', generateKeyPairSync('ec', { namedCurve: 'P-384' })),
    make('ES512', 'p521', generateKeyPairSync('ec', { namedCurve: 'P-521' })),
    make('RS256', 'rsa', generateKeyPairSync('rsa', { modulusLength: 2048 })),
    make('PS256', 'pss', generateKeyPairSync('rsa', { modulusLength: 2048 })),
    make('EdDSA', 'ed', generateKeyPairSync('ed25519')),
    // security.md T10: keys no token may be verified with
    make('RS256', 'rsa1024', generateKeyPairSync('rsa', { modulusLength: 1024 })),
    make('PS256', 'pss1024', generateKeyPairSync('rsa', { modulusLength: 1024 })),
    make('ES256', 'ops-empty', generateKeyPairSync('ec', { namedCurve: 'P-256' })),
    make('ES256', 'ops-sign', generateKeyPairSync('ec', { namedCurve: 'P-256' })),
    make('ES256', 'use-enc', generateKeyPairSync('ec', { namedCurve: 'P-256' })),
    make('ES256', 'p384-as-es256', generateKeyPairSync('ec', { namedCurve: 'P-384' })),
  ];
  const pub: JWK[] = [];
  for (const s of specs) {
    keys.push({ alg: s.alg, kid: s.kid, priv: s.kp.privateKey });
    const jwk: JWK = { ...(await exportJWK(s.kp.publicKey)), kid: s.kid, alg: s.alg, use: 'sig' };
    if (s.kid === 'ops-empty') jwk.key_ops = [];
    if (s.kid === 'ops-sign') jwk.key_ops = ['sign'];
    if (s.kid === 'use-enc') jwk.use = 'enc';
    if (s.kid === 'p384-as-es256') delete jwk.alg; // chosen by curve: P-384 must not serve ES256
    pub.push(jwk);
  }
  jwks = createLocalJWKSet({ keys: pub });
  castellanJwks = createLocalJWKSet(usableKeys({ keys: pub }, 'test', () => {}));
});

async function fast(token: string): Promise<boolean> {
  try {
    const { payload } = await verifyCompactJws(token, castellanJwks);
    checkClaims(payload, { issuer: ISS, audiences: ['istio-ca'], now: NOW, toleranceSec: 60 });
    return true;
  } catch {
    return false;
  }
}

/**
 * jwtVerify over the published set, handling several matching keys the way
 * jose documents (try each candidate): a kid-less token matches a weak key
 * and a strong one alike, and jose itself then refuses the weak one.
 */
async function joseVerify(token: string, options: Parameters<typeof jwtVerify>[2]) {
  try {
    return await jwtVerify(token, jwks, options);
  } catch (e) {
    if (!(e instanceof joseErrors.JWKSMultipleMatchingKeys)) throw e;
    for await (const key of e as unknown as AsyncIterable<Parameters<typeof jwtVerify>[1]>) {
      try {
        return await jwtVerify(token, key, options);
      } catch {
        // the next candidate
      }
    }
    throw e;
  }
}

/** jose's verdict, with Castellan's deliberate extra rules on top. */
async function joseReference(token: string): Promise<boolean> {
  try {
    const { payload, protectedHeader } = await joseVerify(token, {
      issuer: ISS,
      audience: 'istio-ca',
      algorithms: [...JWT_ALGORITHMS],
      requiredClaims: ['exp', 'aud', 'iss', 'sub'],
      clockTolerance: 60,
      currentDate: new Date(NOW * 1000),
    });
    // Castellan is stricter than jose on these, by design:
    const canonical = token.split('.').every((part) => Buffer.from(part, 'base64url').toString('base64url') === part);
    if (!canonical) return false; // jose ignores unused trailing bits: same bytes, but a malleable token
    if (['jku', 'x5u', 'jwk', 'x5c', 'crit', 'b64'].some((h) => h in protectedHeader)) return false; // keys only from the JWKS
    if (typeof payload.iat === 'number' && payload.iat > NOW + 60) return false; // not issued in the future
    if (typeof payload.sub !== 'string') return false;
    if (Array.isArray(payload.aud) && !payload.aud.every((a) => typeof a === 'string')) return false;
    return true;
  } catch {
    return false;
  }
}

/** Compact JWS signed by hand (jose's SignJWT refuses headers such as crit, which we want to send). */
function rawSign(k: K, hdr: Record<string, unknown>, payload: unknown): string {
  const input = `${b64(hdr)}.${b64(payload)}`;
  const hash = { ES256: 'sha256', ES384: 'sha384', ES512: 'sha512', RS256: 'sha256', PS256: 'sha256', EdDSA: null }[k.alg]!;
  const sig =
    k.alg.startsWith('ES') ? sign(hash, Buffer.from(input), { key: k.priv, dsaEncoding: 'ieee-p1363' })
    : k.alg === 'PS256' ? sign(hash, Buffer.from(input), { key: k.priv, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST })
    : sign(hash, Buffer.from(input), k.priv);
  return `${input}.${sig.toString('base64url')}`;
}

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
const time = fc.oneof(fc.constantFrom(NOW - 3600, NOW - 61, NOW - 60, NOW - 59, NOW, NOW + 59, NOW + 60, NOW + 61, NOW + 3600), fc.integer({ min: NOW - 100_000, max: NOW + 100_000 }));

/** Mostly the valid value, sometimes a hostile one, sometimes absent. */
const field = <T,>(valid: T, ...bad: unknown[]) =>
  fc.oneof({ weight: 6, arbitrary: fc.constant<unknown>(valid) }, { weight: 2, arbitrary: fc.constantFrom<unknown>(...bad) }, { weight: 1, arbitrary: fc.constant<unknown>(undefined) });

const claims = fc
  .record({
    iss: field(ISS, ISS + '/', 'https://evil.example', 7),
    sub: field('system:serviceaccount:a:b', 42, ''),
    aud: field(['istio-ca'], 'istio-ca', ['x', 'istio-ca'], ['x'], [], 5, [5], { a: 'istio-ca' }),
    exp: fc.oneof({ weight: 6, arbitrary: fc.constant(NOW + 3600) }, { weight: 3, arbitrary: time }, { weight: 1, arbitrary: fc.constantFrom<unknown>('soon', undefined) }),
    nbf: fc.oneof({ weight: 6, arbitrary: fc.constant(NOW) }, { weight: 3, arbitrary: time }, { weight: 1, arbitrary: fc.constantFrom<unknown>('x', undefined) }),
    iat: fc.oneof({ weight: 6, arbitrary: fc.constant(NOW) }, { weight: 3, arbitrary: time }, { weight: 1, arbitrary: fc.constantFrom<unknown>('then', undefined) }),
  })
  .map((c) => Object.fromEntries(Object.entries(c).filter(([, v]) => v !== undefined)));

const header = fc.record({
  keyIndex: fc.nat({ max: 11 }),
  algOverride: fc.oneof({ weight: 8, arbitrary: fc.constant(undefined) }, { weight: 2, arbitrary: fc.constantFrom('ES256', 'ES384', 'RS256', 'PS256', 'EdDSA', 'HS256', 'none', 'RS1', 'es256') }),
  kid: fc.oneof({ weight: 8, arbitrary: fc.constant('right') }, { weight: 2, arbitrary: fc.constantFrom('wrong', 'missing') }),
  extra: fc.oneof(
    { weight: 8, arbitrary: fc.constant(undefined) },
    { weight: 2, arbitrary: fc.constantFrom<Record<string, unknown>>({ typ: 'JWT' }, { crit: ['exp'] }, { b64: false }, { jku: 'https://x' }, { cty: 'JWT' }, { x5c: [] }, { kid: 5 }) },
  ),
});

const tamper = fc.oneof(
  { weight: 8, arbitrary: fc.constant('none') },
  { weight: 3, arbitrary: fc.constantFrom('flip-sig', 'truncate-sig', 'append-sig', 'append-payload', 'swap-payload', 'empty-sig', 'strip-padding-bit') },
);

async function build(h: { keyIndex: number; algOverride: string | undefined; kid: string; extra: Record<string, unknown> | undefined }, c: Record<string, unknown>, t: string): Promise<string> {
  const k = keys[h.keyIndex % keys.length]!;
  const hdr: Record<string, unknown> = { alg: k.alg, ...h.extra };
  if (h.kid === 'right') hdr.kid = k.kid;
  if (h.kid === 'wrong') hdr.kid = 'nope';
  // Sign with the real algorithm, then possibly lie about it in the header.
  let token = rawSign(k, hdr, c);
  if (h.algOverride) {
    const [, p, s] = token.split('.');
    token = `${b64({ ...hdr, alg: h.algOverride })}.${p}.${s}`;
  }
  const [hh, p, s] = token.split('.') as [string, string, string];
  switch (t) {
    case 'flip-sig': {
      const sig = Buffer.from(s, 'base64url');
      sig[sig.length >> 1]! ^= 1;
      return `${hh}.${p}.${sig.toString('base64url')}`;
    }
    case 'truncate-sig':
      return `${hh}.${p}.${s.slice(0, -4)}`;
    case 'append-sig':
      return `${hh}.${p}.${s}A`;
    case 'append-payload':
      return `${hh}.${p}A.${s}`;
    case 'swap-payload':
      return `${hh}.${b64({ ...c, sub: 'system:serviceaccount:kube-system:admin' })}.${s}`;
    case 'empty-sig':
      return `${hh}.${p}.`;
    case 'strip-padding-bit': {
      // same bytes, non-canonical last character (differs only in unused bits)
      const last = s.at(-1)!;
      const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
      const i = alphabet.indexOf(last);
      return `${hh}.${p}.${s.slice(0, -1)}${alphabet[(i & ~3) | ((i + 1) & 3)]}`;
    }
    default:
      return token;
  }
}

describe('hot-path JWT verification agrees with jose', () => {
  it('property: same verdict for generated tokens', async () => {
    let accepted = 0;
    await fc.assert(
      fc.asyncProperty(header, claims, tamper, async (h, c, t) => {
        const token = await build(h, c, t);
        const [a, b] = [await fast(token), await joseReference(token)];
        if (a) accepted++;
        expect({ token, t, fast: a }).toEqual({ token, t, fast: b });
      }),
      { seed: SEED, numRuns: 2500, verbose: 1 },
    );
    // the generator really reaches both verdicts
    expect(accepted).toBeGreaterThan(100);
  }, 120_000);

  it.each(['ES256', 'ES384', 'ES512', 'RS256', 'PS256', 'EdDSA'])('ok/%s token verifies on both paths', async (alg) => {
    const k = keys.find((x) => x.alg === alg)!;
    const token = await new SignJWT({ iss: ISS, sub: 'system:serviceaccount:a:b', aud: ['istio-ca'], exp: NOW + 600, iat: NOW, nbf: NOW })
      .setProtectedHeader({ alg, kid: k.kid })
      .sign(k.priv);
    expect(await fast(token)).toBe(true);
    expect(await joseReference(token)).toBe(true);
  });

  it.each(NEVER)('fail/T10 a valid token under key %s is refused on both paths', async (kid) => {
    const k = keys.find((x) => x.kid === kid)!;
    const token = rawSign(k, { alg: k.alg, kid: k.kid }, { iss: ISS, sub: 'system:serviceaccount:a:b', aud: ['istio-ca'], exp: NOW + 600, iat: NOW, nbf: NOW });
    expect(await fast(token)).toBe(false);
    expect(await joseReference(token)).toBe(false);
  });

  it('fail/T10 a weak RSA key is refused by the signature check itself, not only by the key source', async () => {
    // jose's own set hands the 1024-bit key over; verifyCompactJws must still refuse it
    const k = keys.find((x) => x.kid === 'rsa1024')!;
    const token = rawSign(k, { alg: 'RS256', kid: k.kid }, { iss: ISS, sub: 'system:serviceaccount:a:b', aud: ['istio-ca'], exp: NOW + 600 });
    await expect(verifyCompactJws(token, jwks)).rejects.toMatchObject({ code: 'auth.token_unknown_key' });
  });
});
