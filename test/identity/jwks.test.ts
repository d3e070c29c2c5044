/**
 * Where verification keys come from (src/identity/jwks.ts), through the same
 * entry point the CA server uses: security.md T10 (keys weaker than jose
 * allows, or whose `use` / `key_ops` forbid verifying, never verify; each is
 * reported once), T11 (OIDC discovery held to the configured issuer and to
 * https; a refresh that fails keeps the last good keys), and the error split
 * (only an unreachable or unreadable key source is UNAVAILABLE; a bug is
 * INTERNAL). Remote sources are served by a loopback HTTP server here.
 */
import { generateKeyPairSync, sign as cryptoSign, type KeyObject } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { exportJWK, SignJWT, type JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTokenAuthenticator } from '../../src/identity/index.ts';
import { base64urlIntegerBits, checkDiscovery, rejectionOf, type KeyRejectedEvent } from '../../src/identity/jwks.ts';
import { FakeClock } from '../../src/platform/clock.ts';
import { tempDir } from '../support/tmp.ts';

const ISS = 'https://kubernetes.default.svc.cluster.local';
const tmp = tempDir('castellan-jwks-');
const clock = new FakeClock(Date.UTC(2031, 5, 1));

const strong = generateKeyPairSync('rsa', { modulusLength: 2048 });
const weak = generateKeyPairSync('rsa', { modulusLength: 1024 });
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });

async function jwk(k: KeyObject, extra: Partial<JWK>): Promise<JWK> {
  return { ...(await exportJWK(k)), ...extra };
}

async function token(key: KeyObject, alg: string, kid: string, iss = ISS): Promise<string> {
  const now = Math.floor(clock.now() / 1000);
  return new SignJWT({ iss, sub: 'system:serviceaccount:a:b', aud: ['istio-ca'], iat: now, exp: now + 600 }).setProtectedHeader({ alg, kid }).sign(key);
}

const bearer = (t: string) => ({ authorization: [`Bearer ${t}`] });

/** RS256 by hand: jose refuses to sign with a key under 2048 bits, an attacker's tooling does not. */
function rs256Raw(key: KeyObject, kid: string): string {
  const now = Math.floor(clock.now() / 1000);
  const b = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const input = `${b({ alg: 'RS256', kid })}.${b({ iss: ISS, sub: 'system:serviceaccount:a:b', aud: ['istio-ca'], iat: now, exp: now + 600 })}`;
  return `${input}.${cryptoSign('sha256', Buffer.from(input), key).toString('base64url')}`;
}

afterAll(() => tmp.cleanup());

describe('T10: keys that must never verify', () => {
  it('ok/modulus bits are counted without leading zeros', () => {
    expect(base64urlIntegerBits(Buffer.from([0x00, 0x80, 0, 0]).toString('base64url'))).toBe(24);
    expect(base64urlIntegerBits(Buffer.from([0x01, 0xff]).toString('base64url'))).toBe(9);
    expect(base64urlIntegerBits('')).toBe(0);
  });

  it('fail/each kind of forbidden key is named', async () => {
    expect(rejectionOf(await jwk(weak.publicKey, {}))).toBe('rsa_too_short');
    expect(rejectionOf(await jwk(strong.publicKey, {}))).toBeUndefined();
    expect(rejectionOf(await jwk(ec.publicKey, { use: 'enc' }))).toBe('use_not_sig');
    expect(rejectionOf(await jwk(ec.publicKey, { key_ops: [] }))).toBe('key_ops_without_verify');
    expect(rejectionOf(await jwk(ec.publicKey, { key_ops: ['sign'] }))).toBe('key_ops_without_verify');
    expect(rejectionOf(await jwk(ec.publicKey, { key_ops: ['verify'], use: 'sig' }))).toBeUndefined();
    expect(rejectionOf(await jwk(ec.privateKey, {}))).toBe('private_key');
  });

  it('fail/a 1024-bit RSA key in a JWKS file is skipped, reported once with its kid, and its tokens refused', async () => {
    const path = join(tmp.path, 'weak.json');
    writeFileSync(path, JSON.stringify({ keys: [await jwk(weak.publicKey, { kid: 'weak', alg: 'RS256' }), await jwk(strong.publicKey, { kid: 'strong', alg: 'RS256' }), await jwk(ec.publicKey, { kid: 'enc', use: 'enc' })] }));
    const events: KeyRejectedEvent[] = [];
    const a = createTokenAuthenticator({ trustDomain: 'cluster.local', audiences: ['istio-ca'], jwt: { jwksFile: path, issuer: ISS }, clock, onKeyRejected: (e) => events.push(e) });
    await expect(a.authenticate(bearer(rs256Raw(weak.privateKey, 'weak')))).rejects.toMatchObject({ kind: 'UNAUTHENTICATED', code: 'auth.token_unknown_key' });
    await expect(a.authenticate(bearer(await token(ec.privateKey, 'ES256', 'enc')))).rejects.toMatchObject({ kind: 'UNAUTHENTICATED' });
    await expect(a.authenticate(bearer(await token(strong.privateKey, 'RS256', 'strong')))).resolves.toMatchObject({ method: 'jwt' });
    // reloaded (the file changed): the same keys are not reported again
    writeFileSync(path, JSON.stringify({ keys: [await jwk(weak.publicKey, { kid: 'weak', alg: 'RS256' }), await jwk(strong.publicKey, { kid: 'strong', alg: 'RS256' }), await jwk(ec.publicKey, { kid: 'enc', use: 'enc' })], x: 1 }));
    clock.advance(1500);
    await expect(a.authenticate(bearer(await token(strong.privateKey, 'RS256', 'strong')))).resolves.toMatchObject({ method: 'jwt' });
    expect(events.map((e) => [e.kid, e.reason])).toEqual([
      ['weak', 'rsa_too_short'],
      ['enc', 'use_not_sig'],
    ]);
    a.close();
  });
});

describe('T11: OIDC discovery and remote keys', () => {
  let server: Server;
  let base = '';
  let discovery: () => unknown;
  let keys: () => unknown;
  let status = 200;
  let fetches = 0;
  beforeAll(async () => {
    server = createServer((req, res) => {
      fetches++;
      if (status !== 200) return void res.writeHead(status).end();
      const body = req.url === '/.well-known/openid-configuration' ? discovery() : req.url === '/keys' ? keys() : undefined;
      if (body === undefined) return void res.writeHead(404).end();
      res.writeHead(200, { 'content-type': 'application/json' }).end(typeof body === 'string' ? body : JSON.stringify(body));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise((r) => server.close(r));
  });

  it('fail/the discovery document names another issuer: a start-up error that says so', async () => {
    discovery = () => ({ issuer: `${base}/other`, jwks_uri: `${base}/keys` });
    const a = createTokenAuthenticator({ trustDomain: 'cluster.local', audiences: ['istio-ca'], jwt: { oidcIssuer: base }, clock });
    await expect(a.prepare!()).rejects.toMatchObject({ code: 'auth.oidc_discovery', message: expect.stringContaining(`not the configured "${base}"`) });
    a.close();
  });

  it('fail/a trailing slash is another issuer (exact match, as OIDC requires)', () => {
    expect(() => checkDiscovery({ issuer: 'https://a.example/', jwks_uri: 'https://a.example/keys' }, 'https://a.example', 'u')).toThrow(/not the configured/);
    expect(checkDiscovery({ issuer: 'https://a.example', jwks_uri: 'https://a.example/keys' }, 'https://a.example', 'u').href).toBe('https://a.example/keys');
  });

  it('fail/a jwks_uri that is not https is refused, except to a loopback address', () => {
    for (const uri of ['http://keys.example/jwks', 'http://10.0.0.1/jwks', 'ftp://keys.example/jwks', 'not a url']) {
      expect(() => checkDiscovery({ issuer: 'https://a.example', jwks_uri: uri }, 'https://a.example', 'u')).toThrow(/auth|jwks_uri/);
    }
    for (const uri of ['http://127.0.0.1:8080/keys', 'http://localhost/keys', 'http://[::1]/keys']) {
      expect(checkDiscovery({ issuer: 'https://a.example', jwks_uri: uri }, 'https://a.example', 'u').href).toBe(new URL(uri).href);
    }
  });

  it('ok/a refresh that fails, or whose discovery turns to another issuer, keeps the last good keys', async () => {
    discovery = () => ({ issuer: base, jwks_uri: `${base}/keys` });
    keys = async () => undefined;
    const ecJwk = await jwk(ec.publicKey, { kid: 'k1', alg: 'ES256' });
    keys = () => ({ keys: [ecJwk] });
    const a = createTokenAuthenticator({ trustDomain: 'cluster.local', audiences: ['istio-ca'], jwt: { oidcIssuer: base }, clock });
    await a.prepare!();
    const t = await token(ec.privateKey, 'ES256', 'k1', base);
    await expect(a.authenticate(bearer(t))).resolves.toMatchObject({ method: 'jwt' });
    // the discovery document now names another issuer, and later the server is down: old keys stay
    discovery = () => ({ issuer: 'https://attacker.example', jwks_uri: `${base}/keys` });
    clock.advance(11 * 60_000);
    await expect(a.authenticate(bearer(await token(ec.privateKey, 'ES256', 'k1', base)))).resolves.toMatchObject({ method: 'jwt' });
    status = 503;
    clock.advance(11 * 60_000);
    await expect(a.authenticate(bearer(await token(ec.privateKey, 'ES256', 'k1', base)))).resolves.toMatchObject({ method: 'jwt' });
    // garbage keys do not replace good ones either
    status = 200;
    discovery = () => ({ issuer: base, jwks_uri: `${base}/keys` });
    keys = () => '{ not json';
    clock.advance(11 * 60_000);
    await expect(a.authenticate(bearer(await token(ec.privateKey, 'ES256', 'k1', base)))).resolves.toMatchObject({ method: 'jwt' });
    a.close();
  });

  it('ok/an unknown kid refreshes the keys (at most once per cooldown); a rotated key is then accepted', async () => {
    discovery = () => ({ issuer: base, jwks_uri: `${base}/keys` });
    const k1 = await jwk(ec.publicKey, { kid: 'k1', alg: 'ES256' });
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    keys = () => ({ keys: [k1] });
    const a = createTokenAuthenticator({ trustDomain: 'cluster.local', audiences: ['istio-ca'], jwt: { jwksUri: `${base}/keys`, issuer: ISS }, clock });
    await a.prepare!();
    const t2 = await token(other.privateKey, 'ES256', 'k2');
    await expect(a.authenticate(bearer(t2))).rejects.toMatchObject({ code: 'auth.token_unknown_key' });
    keys = async () => undefined;
    const k2 = await jwk(other.publicKey, { kid: 'k2', alg: 'ES256' });
    keys = () => ({ keys: [k1, k2] });
    const before = fetches;
    await expect(a.authenticate(bearer(t2))).rejects.toMatchObject({ code: 'auth.token_unknown_key' }); // within the cooldown: no fetch
    expect(fetches).toBe(before);
    clock.advance(31_000);
    await expect(a.authenticate(bearer(t2))).resolves.toMatchObject({ method: 'jwt' });
    expect(fetches).toBe(before + 1);
    a.close();
  });

  it('fail/a JWKS server answering 500 or garbage before any good keys is UNAVAILABLE (retryable), not UNAUTHENTICATED', async () => {
    const a = createTokenAuthenticator({ trustDomain: 'cluster.local', audiences: ['istio-ca'], jwt: { jwksUri: `${base}/keys`, issuer: ISS }, clock });
    status = 500;
    const t = await token(ec.privateKey, 'ES256', 'k1');
    await expect(a.authenticate(bearer(t))).rejects.toMatchObject({ kind: 'UNAVAILABLE', code: 'auth.jwks_unavailable' });
    status = 200;
    keys = () => '[1, 2';
    await expect(a.authenticate(bearer(t))).rejects.toMatchObject({ kind: 'UNAVAILABLE', code: 'auth.jwks_unavailable' });
    keys = () => ({ keys: 'nope' });
    await expect(a.authenticate(bearer(t))).rejects.toMatchObject({ kind: 'UNAVAILABLE', code: 'auth.jwks_unavailable' });
    a.close();
  });
});

describe('error split: only a key source that cannot be had is UNAVAILABLE', () => {
  it('fail/a TypeError from a broken key file is UNAVAILABLE (cannot be read), but a bug inside verification is INTERNAL', async () => {
    const path = join(tmp.path, 'keys-null.json');
    writeFileSync(path, 'null');
    const a = createTokenAuthenticator({ trustDomain: 'cluster.local', audiences: ['istio-ca'], jwt: { jwksFile: path, issuer: ISS }, clock });
    const t = await token(ec.privateKey, 'ES256', 'k1');
    await expect(a.authenticate(bearer(t))).rejects.toMatchObject({ kind: 'UNAVAILABLE', code: 'auth.jwks_unavailable' });
    a.close();
    // A JWK that jose cannot import (an EC key with no coordinates) is the token's problem at
    // worst, never an outage: it must not be reported as UNAVAILABLE.
    writeFileSync(path, JSON.stringify({ keys: [{ kty: 'EC', crv: 'P-256', kid: 'k1', alg: 'ES256' }] }));
    clock.advance(1500);
    const b = createTokenAuthenticator({ trustDomain: 'cluster.local', audiences: ['istio-ca'], jwt: { jwksFile: path, issuer: ISS }, clock });
    const err = await b.authenticate(bearer(t)).then(
      () => undefined,
      (e: unknown) => e as { kind: string },
    );
    expect(err?.kind).toBeDefined();
    expect(err?.kind).not.toBe('UNAVAILABLE');
    b.close();
  });
});
