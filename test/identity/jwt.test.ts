/**
 * Service-account JWTs verified locally (security.md T1, T3, T5-T9), through
 * the same entry point the CA server uses (bearer parsing + jose verify).
 * Tokens are minted here with jose and, for the hostile ones, assembled by
 * hand so that no library "helpfully" refuses to produce them.
 */
import { createHmac, generateKeyPairSync, sign as cryptoSign, type KeyObject } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { exportJWK, SignJWT, type JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTokenAuthenticator, type TokenAuthenticator } from '../../src/identity/index.ts';
import { FakeClock } from '../../src/platform/clock.ts';
import { CastellanError } from '../../src/platform/errors.ts';
import { tempDir } from '../support/tmp.ts';

const ISS = 'https://kubernetes.default.svc.cluster.local';
const tmp = tempDir('castellan-jwt-');
const clock = new FakeClock(Date.UTC(2031, 5, 1));
const nowSec = () => Math.floor(clock.now() / 1000);

const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const stranger = generateKeyPairSync('ec', { namedCurve: 'P-256' });
let ecJwk: JWK;
let rsaJwk: JWK;
const jwksPath = join(tmp.path, 'jwks.json');
let auth: TokenAuthenticator;

const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

interface Claims {
  [k: string]: unknown;
}
function saClaims(ns = 'team-a', sa = 'frontend', extra: Claims = {}): Claims {
  const now = nowSec();
  return {
    iss: ISS,
    sub: `system:serviceaccount:${ns}:${sa}`,
    aud: ['istio-ca'],
    iat: now,
    nbf: now,
    exp: now + 3600,
    'kubernetes.io': { namespace: ns, serviceaccount: { name: sa, uid: 'u1' }, pod: { name: `${sa}-0`, uid: 'p1' } },
    ...extra,
  };
}

async function sign(claims: Claims, o: { key?: KeyObject; alg?: string; kid?: string; header?: Record<string, unknown> } = {}): Promise<string> {
  const alg = o.alg ?? 'ES256';
  return new SignJWT(claims)
    .setProtectedHeader({ alg, kid: o.kid ?? (alg.startsWith('RS') ? 'rsa-1' : 'ec-1'), typ: 'JWT', ...o.header })
    .sign(o.key ?? (alg.startsWith('RS') ? rsa.privateKey : ec.privateKey));
}

/** A compact JWS assembled by hand. */
function raw(header: unknown, payload: unknown, signature = ''): string {
  return `${b64(header)}.${b64(payload)}.${signature}`;
}

/** ES256-signs arbitrary header and payload bytes with the trusted key (a validly signed hostile token). */
function es256(header: unknown, payload: Buffer | unknown): string {
  const p = Buffer.isBuffer(payload) ? payload.toString('base64url') : b64(payload);
  const input = `${b64(header)}.${p}`;
  return `${input}.${cryptoSign('sha256', Buffer.from(input), { key: ec.privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
}

function hs256(header: Record<string, unknown>, payload: unknown, secret: Buffer | string): string {
  const input = `${b64(header)}.${b64(payload)}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

async function refusal(token: string | string[]): Promise<CastellanError> {
  const authorization = Array.isArray(token) ? token : [`Bearer ${token}`];
  try {
    await auth.authenticate({ authorization });
  } catch (e) {
    expect(e).toBeInstanceOf(CastellanError);
    return e as CastellanError;
  }
  throw new Error('token was accepted');
}

beforeAll(async () => {
  ecJwk = { ...(await exportJWK(ec.publicKey)), kid: 'ec-1', alg: 'ES256', use: 'sig' };
  rsaJwk = { ...(await exportJWK(rsa.publicKey)), kid: 'rsa-1', alg: 'RS256', use: 'sig' };
  writeFileSync(jwksPath, JSON.stringify({ keys: [ecJwk, rsaJwk] }));
  auth = createTokenAuthenticator({ trustDomain: 'cluster.local', audiences: ['istio-ca'], jwt: { jwksFile: jwksPath, issuer: ISS }, clock });
});
afterAll(() => {
  auth.close();
  tmp.cleanup();
});

describe('JWT: accepted tokens', () => {
  it('ok/ES256 projected service-account token names the workload', async () => {
    const c = await auth.authenticate({ authorization: [`Bearer ${await sign(saClaims())}`] });
    expect(c).toMatchObject({ spiffeId: 'spiffe://cluster.local/ns/team-a/sa/frontend', method: 'jwt', pod: { name: 'frontend-0', uid: 'p1' } });
    expect(c.expiresAt).toBe((nowSec() + 3600) * 1000);
  });
  it('ok/RS256, lower-case "bearer" scheme, no kubernetes.io claim', async () => {
    const { 'kubernetes.io': _k, ...claims } = saClaims('b', 'backend');
    const c = await auth.authenticate({ authorization: [`bearer ${await sign(claims, { alg: 'RS256' })}`] });
    expect(c.spiffeId).toBe('spiffe://cluster.local/ns/b/sa/backend');
  });
  it('ok/nbf and iat 30 s in the future are within the 60 s leeway; exp 30 s ago too', async () => {
    const now = nowSec();
    await expect(auth.authenticate({ authorization: [`Bearer ${await sign(saClaims('a', 'b', { nbf: now + 30, iat: now + 30 }))}`] })).resolves.toBeDefined();
    await expect(auth.authenticate({ authorization: [`Bearer ${await sign(saClaims('a', 'b', { exp: now - 30 }))}`] })).resolves.toBeDefined();
  });
});

describe('JWT: refused tokens (all UNAUTHENTICATED)', () => {
  const cases: [string, () => Promise<string> | string, string][] = [
    // T1
    ['T1/audience of the API server', () => sign(saClaims('a', 'b', { aud: ['https://kubernetes.default.svc.cluster.local'] })), 'auth.token_claims'],
    ['T1/no aud claim', () => sign(saClaims('a', 'b', { aud: undefined })), 'auth.token_claims'],
    ['T1/aud as an empty array', () => sign(saClaims('a', 'b', { aud: [] })), 'auth.token_claims'],
    // T3: legacy secret-based token
    [
      'T3/legacy secret token (no exp, no aud)',
      () =>
        sign({
          iss: 'kubernetes/serviceaccount',
          sub: 'system:serviceaccount:a:b',
          'kubernetes.io/serviceaccount/namespace': 'a',
          'kubernetes.io/serviceaccount/service-account.name': 'b',
        }),
      'auth.token_claims',
    ],
    ['T3/legacy token with our issuer but no exp', () => sign(saClaims('a', 'b', { exp: undefined })), 'auth.token_claims'],
    // T5
    ['T5/alg none, no signature', () => raw({ alg: 'none', typ: 'JWT' }, saClaims()), 'auth.token_alg'],
    ['T5/alg none with a kid', () => raw({ alg: 'none', kid: 'ec-1' }, saClaims()), 'auth.token_alg'],
    ['T5/ES256 with an empty signature', () => raw({ alg: 'ES256', kid: 'ec-1' }, saClaims()), 'auth.token_signature'],
    ['T5/ES256 with a signature of zeros', () => raw({ alg: 'ES256', kid: 'ec-1' }, saClaims(), Buffer.alloc(64).toString('base64url')), 'auth.token_signature'],
    ['T5/signed by a key outside the JWKS under a known kid', () => sign(saClaims(), { key: stranger.privateKey }), 'auth.token_signature'],
    ['T5/unknown kid', () => sign(saClaims(), { kid: 'nope' }), 'auth.token_unknown_key'],
    ['T5/payload altered after signing', async () => {
      const [h, , s] = (await sign(saClaims('a', 'b'))).split('.');
      return `${h}.${b64(saClaims('kube-system', 'admin'))}.${s}`;
    }, 'auth.token_signature'],
    ['T5/jku header', () => sign(saClaims(), { header: { jku: 'https://evil.example/jwks' } }), 'auth.token_header'],
    ['T5/x5u header', () => sign(saClaims(), { header: { x5u: 'https://evil.example/cert' } }), 'auth.token_header'],
    ['T5/embedded jwk header', () => sign(saClaims(), { key: stranger.privateKey, header: { jwk: { kty: 'EC', crv: 'P-256', x: 'AA', y: 'AA' } } }), 'auth.token_header'],
    ['T5/x5c header', () => sign(saClaims(), { header: { x5c: ['MIIB'] } }), 'auth.token_header'],
    ['T5/HS256 keyed with the PEM public key', () => hs256({ alg: 'HS256', kid: 'ec-1' }, saClaims(), ec.publicKey.export({ type: 'spki', format: 'pem' }) as string), 'auth.token_alg'],
    ['T5/HS256 keyed with the DER public key', () => hs256({ alg: 'HS256', kid: 'ec-1' }, saClaims(), ec.publicKey.export({ type: 'spki', format: 'der' })), 'auth.token_alg'],
    ['T5/HS256 keyed with the JWK JSON', () => hs256({ alg: 'HS256', kid: 'ec-1' }, saClaims(), JSON.stringify(ecJwk)), 'auth.token_alg'],
    ['T5/HS256 keyed with the RSA PEM, no kid', () => hs256({ alg: 'HS256' }, saClaims(), rsa.publicKey.export({ type: 'pkcs1', format: 'pem' }) as string), 'auth.token_alg'],
    ['T5/HS256 keyed with the RSA modulus', () => hs256({ alg: 'HS256', kid: 'rsa-1' }, saClaims(), Buffer.from(rsaJwk.n!, 'base64url')), 'auth.token_alg'],
    // T6
    ['T6/wrong iss', () => sign(saClaims('a', 'b', { iss: 'https://other.example' })), 'auth.token_claims'],
    ['T6/wrong aud', () => sign(saClaims('a', 'b', { aud: ['vault'] })), 'auth.token_claims'],
    ['T6/expired beyond the leeway', () => sign(saClaims('a', 'b', { exp: nowSec() - 61 })), 'auth.token_expired'],
    ['T6/nbf 2 minutes in the future', () => sign(saClaims('a', 'b', { nbf: nowSec() + 120 })), 'auth.token_claims'],
    ['T6/iat 2 minutes in the future', () => sign(saClaims('a', 'b', { iat: nowSec() + 120 })), 'auth.token_claims'],
    ['T6/exp as a string', () => sign(saClaims('a', 'b', { exp: String(nowSec() + 3600) })), 'auth.token_claims'],
    // subject rules
    ['fail/subject is a user, not a service account', () => sign(saClaims('a', 'b', { sub: 'alice' })), 'auth.token_subject'],
    ['fail/subject with an upper-case namespace', () => sign(saClaims('a', 'b', { sub: 'system:serviceaccount:Team:b' })), 'auth.token_subject'],
    ['fail/subject with an extra segment', () => sign(saClaims('a', 'b', { sub: 'system:serviceaccount:a:b:c' })), 'auth.token_subject'],
    ['fail/kubernetes.io claim names another namespace', () => sign(saClaims('a', 'b', { 'kubernetes.io': { namespace: 'kube-system', serviceaccount: { name: 'b' } } })), 'auth.token_subject'],
    ['fail/kubernetes.io claim is a string', () => sign(saClaims('a', 'b', { 'kubernetes.io': 'a' })), 'auth.token_subject'],
    // T8: hostile payloads
    ['T8/payload null, badly signed', () => raw({ alg: 'ES256', kid: 'ec-1' }, null, 'AAAA'), 'auth.token_signature'],
    ['T8/payload null, validly signed', () => es256({ alg: 'ES256', kid: 'ec-1' }, null), 'auth.token_malformed'],
    ['T8/payload [], validly signed', () => es256({ alg: 'ES256', kid: 'ec-1' }, []), 'auth.token_malformed'],
    ['T8/payload a number, validly signed', () => es256({ alg: 'ES256', kid: 'ec-1' }, 42), 'auth.token_malformed'],
    ['T8/payload a string, validly signed', () => es256({ alg: 'ES256', kid: 'ec-1' }, 'system:serviceaccount:a:b'), 'auth.token_malformed'],
    ['T8/payload not UTF-8, validly signed', () => es256({ alg: 'ES256', kid: 'ec-1' }, Buffer.from([0xff, 0xfe, 0xc0, 0x80])), 'auth.token_malformed'],
    ['T8/claims of the wrong types, validly signed', () => es256({ alg: 'ES256', kid: 'ec-1' }, { ...saClaims(), sub: 7, aud: { a: 1 } }), 'auth.token_claims'],
    ['T8/header not JSON', () => `${b64('not json')}.${b64(saClaims())}.AAAA`, 'auth.token_malformed'],
    ['T8/header null', () => `${b64('null')}.${b64(saClaims())}.AAAA`, 'auth.token_malformed'],
    ['T8/two segments only', () => `${b64({ alg: 'ES256' })}.${b64(saClaims())}`, 'auth.bad_header'],
  ];
  it.each(cases)('%s', async (_name, make, code) => {
    const e = await refusal(await make());
    expect(e.kind).toBe('UNAUTHENTICATED');
    expect(e.code).toBe(code);
    expect(e.message).not.toMatch(/eyJ/); // never echoes the token
  });

  it('T8/a 1 MB token is refused by size before any parsing', async () => {
    const big = raw({ alg: 'ES256', kid: 'ec-1' }, { pad: 'x'.repeat(1024 * 1024) }, 'AAAA');
    const e = await refusal(big);
    expect(e).toMatchObject({ kind: 'UNAUTHENTICATED', code: 'auth.bad_header' });
    expect(e.message).toMatch(/larger than 16384 bytes/);
  });

  const headers: [string, string[]][] = [
    ['T9/no authorization value', []],
    ['T9/two authorization values', ['Bearer a.b.c', 'Bearer a.b.c']],
    ['T9/Basic scheme', ['Basic dXNlcjpwYXNz']],
    ['T9/two spaces after Bearer', ['Bearer  a.b.c']],
    ['T9/no space after Bearer', ['Bearera.b.c']],
    ['T9/trailing whitespace', ['Bearer a.b.c ']],
    ['T9/Bearer alone', ['Bearer']],
    ['T9/token over 16 KiB', [`Bearer ${'a'.repeat(16 * 1024 + 1)}.b.c`]],
  ];
  it.each(headers)('%s', async (_name, authorization) => {
    const e = await refusal(authorization);
    expect(e.kind).toBe('UNAUTHENTICATED');
    expect(['auth.no_credentials', 'auth.bad_header']).toContain(e.code);
  });

  it('T9/the same input always gets the same answer', async () => {
    const t = await sign(saClaims('a', 'b', { aud: ['vault'] }));
    const codes = new Set<string>();
    for (let i = 0; i < 5; i++) codes.add((await refusal(t)).code);
    expect([...codes]).toEqual(['auth.token_claims']);
  });
});

describe('JWT: key sources fail closed (T7)', () => {
  it('T7/JWKS file gone: every token is UNAVAILABLE; accepted again once it is back', async () => {
    const path = join(tmp.path, 'rotating-jwks.json');
    writeFileSync(path, JSON.stringify({ keys: [ecJwk] }));
    const a = createTokenAuthenticator({ trustDomain: 'cluster.local', audiences: ['istio-ca'], jwt: { jwksFile: path, issuer: ISS }, clock });
    const token = `Bearer ${await sign(saClaims())}`;
    await expect(a.authenticate({ authorization: [token] })).resolves.toMatchObject({ method: 'jwt' });
    rmSync(path);
    clock.advance(1500); // the file is re-checked at most once a second
    await expect(a.authenticate({ authorization: [token] })).rejects.toMatchObject({ kind: 'UNAVAILABLE', code: 'auth.jwks_unavailable' });
    writeFileSync(path, '{ not json');
    clock.advance(1500);
    await expect(a.authenticate({ authorization: [token] })).rejects.toMatchObject({ kind: 'UNAVAILABLE' });
    writeFileSync(path, JSON.stringify({ keys: [ecJwk] }));
    clock.advance(1500);
    await expect(a.authenticate({ authorization: [token] })).resolves.toMatchObject({ method: 'jwt' });
    a.close();
  });

  describe('remote JWKS and OIDC discovery', () => {
    let server: Server;
    let base = '';
    let up = true;
    let served = 0;
    beforeAll(async () => {
      server = createServer((req, res) => {
        if (!up) {
          res.writeHead(503).end();
          return;
        }
        served++;
        if (req.url === '/.well-known/openid-configuration') {
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ issuer: base, jwks_uri: `${base}/openid/v1/jwks` }));
        } else if (req.url === '/openid/v1/jwks') {
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [ecJwk, rsaJwk] }));
        } else res.writeHead(404).end();
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    });
    afterAll(async () => {
      await new Promise((r) => server.close(r));
    });

    it('T7/OIDC discovery: backend down is UNAVAILABLE, accepted once it is back', async () => {
      up = false;
      const a = createTokenAuthenticator({ trustDomain: 'cluster.local', audiences: ['istio-ca'], jwt: { oidcIssuer: base }, clock });
      const token = `Bearer ${await sign(saClaims('a', 'b', { iss: base }))}`;
      await expect(a.authenticate({ authorization: [token] })).rejects.toMatchObject({ kind: 'UNAVAILABLE' });
      up = true;
      await expect(a.authenticate({ authorization: [token] })).resolves.toMatchObject({ spiffeId: 'spiffe://cluster.local/ns/a/sa/b' });
      a.close();
    });

    it('T7/jwks_uri unreachable (nothing listening) is UNAVAILABLE, not UNAUTHENTICATED', async () => {
      const a = createTokenAuthenticator({ trustDomain: 'cluster.local', audiences: ['istio-ca'], jwt: { jwksUri: 'http://127.0.0.1:1/jwks', issuer: ISS }, clock });
      await expect(a.authenticate({ authorization: [`Bearer ${await sign(saClaims())}`] })).rejects.toMatchObject({ kind: 'UNAVAILABLE' });
      a.close();
    });

    it('ok/jwks_uri keys are fetched once and reused', async () => {
      const a = createTokenAuthenticator({ trustDomain: 'cluster.local', audiences: ['istio-ca'], jwt: { jwksUri: `${base}/openid/v1/jwks`, issuer: ISS }, clock });
      const before = served;
      for (let i = 0; i < 5; i++) await a.authenticate({ authorization: [`Bearer ${await sign(saClaims())}`] });
      expect(served - before).toBe(1);
      a.close();
    });
  });
});
