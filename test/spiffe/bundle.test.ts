import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { createSelfSignedRoot } from '../../src/ca/authority.ts';
import { buildJwtView, newJwtKeyRecord } from '../../src/ca/jwt-keys.ts';
import { CastellanError } from '../../src/platform/errors.ts';
import { bundleFromPem, jwtAuthoritiesOf, looksLikePem, parseSpiffeBundle, serializeSpiffeBundle, type SpiffeBundle } from '../../src/spiffe/bundle.ts';
import { describeWith, peers } from '../support/peers.ts';

const DAY = 86_400_000;
let rootA: X509Certificate;
let rootB: X509Certificate;
let leafPem: string;

function derOf(pem: string): Buffer {
  return Buffer.from(new X509Certificate(pem).raw);
}

/** A bundle with two X.509 authorities (EC and RSA) and two JWT keys. */
function sample(): SpiffeBundle {
  const jwt = buildJwtView([newJwtKeyRecord('ES256', DAY, Date.now(), 'active'), newJwtKeyRecord('RS256', DAY, Date.now(), 'prepared')]);
  return { trustDomain: 'other.example', x509Authorities: [Buffer.from(rootA.raw), Buffer.from(rootB.raw)], jwtAuthorities: jwtAuthoritiesOf(jwt.bundleJson, 'jwt'), sequence: 7, refreshHintSeconds: 300 };
}

function problem(text: string): string {
  try {
    parseSpiffeBundle(text, 'other.example', 'f.json');
  } catch (e) {
    expect(e).toBeInstanceOf(CastellanError);
    expect((e as CastellanError).code).toBe('bundle.invalid');
    return (e as Error).message;
  }
  throw new Error('parsed');
}

beforeAll(async () => {
  rootA = new X509Certificate((await createSelfSignedRoot({ trustDomain: 'other.example', keyType: 'ec-p256', ttlMs: DAY, now: Date.now() })).certPem);
  rootB = new X509Certificate((await createSelfSignedRoot({ trustDomain: 'other.example', keyType: 'rsa-2048', ttlMs: DAY, now: Date.now() })).certPem);
  // a certificate that is not a CA: openssl-free, made with the same helper's key but cA false is
  // not reachable there, so use Node's own: a self-signed leaf from @peculiar/x509
  const { x509 } = await import('../../src/ca/keys.ts');
  const keys = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const leaf = await x509.X509CertificateGenerator.createSelfSigned({ serialNumber: '01', name: 'CN=leaf', notBefore: new Date(), notAfter: new Date(Date.now() + DAY), keys, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' }, extensions: [new x509.BasicConstraintsExtension(false)] });
  leafPem = leaf.toString('pem');
});

describe('SPIFFE bundle document', () => {
  it('round-trips: authorities, JWT keys, sequence and refresh hint', () => {
    const b = sample();
    const text = serializeSpiffeBundle(b);
    const back = parseSpiffeBundle(text, 'other.example');
    expect(back.x509Authorities.map((d) => d.toString('base64'))).toEqual(b.x509Authorities.map((d) => d.toString('base64')));
    expect(back.jwtAuthorities.map((a) => a.kid)).toEqual(b.jwtAuthorities.map((a) => a.kid));
    expect(back.sequence).toBe(7);
    expect(back.refreshHintSeconds).toBe(300);
    expect(serializeSpiffeBundle(back)).toBe(text);
  });

  it('ignores keys of an unknown use, keeps the others', () => {
    const doc = JSON.parse(serializeSpiffeBundle(sample())) as { keys: Record<string, unknown>[] };
    doc.keys.push({ kty: 'oct', use: 'future-svid', whatever: 1 });
    const back = parseSpiffeBundle(JSON.stringify(doc), 'other.example');
    expect(back.x509Authorities).toHaveLength(2);
    expect(back.jwtAuthorities).toHaveLength(2);
  });

  it('sequence and refresh hint are optional', () => {
    const b = parseSpiffeBundle(JSON.stringify({ keys: [] }), 'other.example');
    expect(b.sequence).toBeUndefined();
    expect(b.refreshHintSeconds).toBeUndefined();
  });

  it('refuses garbage with a precise message', () => {
    const good = JSON.parse(serializeSpiffeBundle(sample())) as { keys: Record<string, unknown>[] };
    const x = good.keys[0]!;
    const j = good.keys[2]!;
    const withKey = (k: unknown): string => JSON.stringify({ keys: [k] });
    expect(problem('{nope')).toMatch(/^f\.json: not JSON/);
    expect(problem('[]')).toMatch(/f\.json: \(document\): /);
    expect(problem('{"keys":{}}')).toMatch(/keys: /);
    expect(problem(JSON.stringify({ keys: [], spiffe_sequence: -1 }))).toMatch(/spiffe_sequence/);
    expect(problem(JSON.stringify({ keys: [], spiffe_refresh_hint: 'soon' }))).toMatch(/spiffe_refresh_hint/);
    expect(problem(withKey({ ...x, use: undefined }))).toMatch(/keys\[0\]: use: /);
    expect(problem(withKey({ ...x, x5c: [] }))).toMatch(/keys\[0\]: "x5c" must hold exactly one/);
    expect(problem(withKey({ ...x, x5c: [x.x5c as string, x.x5c as string].flat() }))).toMatch(/exactly one/);
    expect(problem(withKey({ ...x, x5c: ['%%%'] }))).toMatch(/not standard base64/);
    expect(problem(withKey({ ...x, x5c: [Buffer.from('hello').toString('base64')] }))).toMatch(/not an X\.509 certificate/);
    expect(problem(withKey({ ...x, x5c: [derOf(leafPem).toString('base64')] }))).toMatch(/is not a CA/);
    expect(problem(withKey({ ...good.keys[1]!, x5c: x.x5c }))).toMatch(/not the public key of its "x5c"/);
    expect(problem(withKey({ ...j, kid: '' }))).toMatch(/needs a non-empty "kid"/);
    const ecJwt = good.keys.find((k) => k.use === 'jwt-svid' && k.kty === 'EC')!;
    expect(problem(withKey({ ...ecJwt, x: 'AAAA' }))).toMatch(/not a usable public key/);
    const d = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
    expect(problem(withKey({ ...d, kid: 'k', use: 'jwt-svid' }))).toMatch(/private key material \(d\)/);
    expect(problem(JSON.stringify({ keys: [j, j] }))).toMatch(/appears twice/);
  });

  it('PEM: CA certificates only, nothing else around them', () => {
    const pem = rootA.toString() + rootB.toString();
    expect(looksLikePem(pem)).toBe(true);
    expect(bundleFromPem(pem, 'other.example').x509Authorities).toHaveLength(2);
    const bad = (t: string): string => {
      try {
        bundleFromPem(t, 'other.example', 'f.pem');
      } catch (e) {
        return (e as Error).message;
      }
      throw new Error('parsed');
    };
    expect(bad('')).toBe('f.pem: no certificate found');
    expect(bad('junk\n' + pem)).toBe('f.pem: unexpected text outside PEM blocks');
    expect(bad(leafPem)).toMatch(/is not a CA/);
    expect(bad('-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n')).toMatch(/expected CERTIFICATE blocks/);
  });
});

describeWith([peers.python, peers.pyjwt, peers.systemPyCryptography], 'SPIFFE bundle document read by Python (json, cryptography, PyJWT)', () => {
  it('every x5c loads as a CA with the JWK key, every JWT key loads in PyJWKSet', () => {
    const b = sample();
    const out = execFileSync('/usr/bin/python3', [join(import.meta.dirname, 'py', 'check_bundle.py')], { input: serializeSpiffeBundle(b) }).toString();
    const r = JSON.parse(out) as { sequence: number; refresh_hint: number; x509: string[]; jwt: string[] };
    expect(r).toEqual({ sequence: 7, refresh_hint: 300, x509: ['O=other.example', 'O=other.example'], jwt: b.jwtAuthorities.map((a) => a.kid) });
  });

  it('the checker itself refuses a non-CA x5c (it can fail)', () => {
    const doc = JSON.parse(serializeSpiffeBundle(sample())) as { keys: Record<string, unknown>[] };
    doc.keys[0]!.x5c = [derOf(leafPem).toString('base64')];
    expect(() => execFileSync('/usr/bin/python3', [join(import.meta.dirname, 'py', 'check_bundle.py')], { input: JSON.stringify(doc), stdio: 'pipe' })).toThrow(/not a CA|JWK parameters differ/);
  });
});
