/**
 * Fuzzing every parser that runs on untrusted input (security.md C5, C6,
 * T8, T9, S2; issue 8 scope 2), with fast-check and one fixed seed
 * (FC_SEED, see fc-seed.ts): whatever comes in, the only thing that may come
 * out is a result or a CastellanError with a kind, a code and a non-empty
 * message: never another exception, never a hang.
 *
 * And the other direction: whatever valid request comes in (identity, TTL,
 * P-256/P-384/RSA-2048 key, hostile requested extensions), the issued leaf
 * passes the X.509-SVID checks, read back with @peculiar/x509 (an ASN.1
 * parser independent of the fast encoder in src/pki/leaf.ts).
 */
import { generateKeyPairSync, sign as cryptoSign, webcrypto, type KeyObject } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { create } from '@bufbuild/protobuf';
import fc from 'fast-check';
import { createLocalJWKSet, errors as joseErrors, exportJWK, type JSONWebKeySet } from 'jose';
import { stringify as toYaml } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AGENT_FLAGS, resolveAgentConfig } from '../../src/agent/config.ts';
import { AuthzEngine } from '../../src/authz/engine.ts';
import { assertNoErrors, collectPolicyText } from '../../src/authz/loader.ts';
import { issueFromCsr, type IssuerMaterial } from '../../src/ca/issue.ts';
import { parseCommand, parseDuration } from '../../src/config/flags.ts';
import { DeltaDiscoveryRequestSchema, DiscoveryRequestSchema } from '../../src/gen/envoy/service/discovery/v3/discovery_pb.js';
import { bearerToken, MAX_TOKEN_BYTES } from '../../src/identity/bearer.ts';
import { createTokenAuthenticator, type TokenAuthenticator } from '../../src/identity/index.ts';
import { JWT_ALGORITHMS, verifyCompactJws } from '../../src/identity/jws.ts';
import { FakeClock } from '../../src/platform/clock.ts';
import { x509 } from '../../src/platform/x509.ts';
import { csrPemToDer, parseAndVerifyCsr } from '../../src/pki/csr.ts';
import { children, oidString, readTlv, validateTree } from '../../src/pki/der.ts';
import { DeltaSession } from '../../src/sds/delta.ts';
import { SECRET_TYPE_URL } from '../../src/sds/resources.ts';
import { fetchSecrets, SotwSession } from '../../src/sds/sotw.ts';
import { resolveServerConfig, SERVER_FLAGS } from '../../src/server/config.ts';
import { formatSpiffeId, parseSpiffeId, parseWorkloadSpiffeId } from '../../src/spiffe/id.ts';
import { makeCa, type TestCa } from '../pki/helpers.ts';
import { FakeStore } from '../sds/fake-store.ts';
import { tempDir } from '../support/tmp.ts';
import { assertCastellan, check, checkAsync, FC_RUNS, FC_SEED, refusalOf, refusalOfAsync } from './fc-seed.ts';

// created when the tests run, not when the file is collected (vitest list leaves no directory behind)
let tmp: ReturnType<typeof tempDir>;
beforeAll(() => {
  tmp = tempDir('castellan-fuzz-');
});
afterAll(() => tmp?.cleanup());

const pemOf = (der: Uint8Array, label = 'CERTIFICATE REQUEST'): string =>
  `-----BEGIN ${label}-----\n${(Buffer.from(der).toString('base64').match(/.{1,64}/g) ?? []).join('\n')}\n-----END ${label}-----\n`;
const derOf = (pem: string): Buffer => Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');

it('prints the seed in use', () => {
  console.log(`fuzz: FC_SEED=${FC_SEED} FC_RUNS=${FC_RUNS}`);
  expect(Number.isSafeInteger(FC_SEED)).toBe(true);
});

// ---------------------------------------------------------------------------
// CSR, PEM and DER (C5): arbitrary bytes, framing, mutations of valid CSRs
// ---------------------------------------------------------------------------

type KeyKind = 'ec-p256' | 'ec-p384' | 'rsa-2048';
interface PoolKey {
  kind: KeyKind;
  keys: webcrypto.CryptoKeyPair;
  alg: webcrypto.EcdsaParams | webcrypto.RsaHashedImportParams;
}
const pool: PoolKey[] = [];

async function poolKey(kind: KeyKind): Promise<PoolKey> {
  const alg =
    kind === 'rsa-2048'
      ? { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' }
      : { name: 'ECDSA', namedCurve: kind === 'ec-p256' ? 'P-256' : 'P-384', hash: kind === 'ec-p256' ? 'SHA-256' : 'SHA-384' };
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  return { kind, keys, alg: alg as PoolKey['alg'] };
}

/** A DER NameConstraints value (permitted dNSName example.com), for a CSR asking for it (C2). */
const NAME_CONSTRAINTS = Buffer.from('3011a00f300d820b6578616d706c652e636f6d', 'hex');

interface CsrAsk {
  withUri: boolean;
  caTrue: boolean;
  keyCertSign: boolean;
  extraEku: boolean;
  nameConstraints: boolean;
  dnsNames: string[];
  cn: string;
}

async function csrFor(k: PoolKey, spiffeId: string, ask: CsrAsk): Promise<string> {
  const extensions: x509.Extension[] = [];
  const names: { type: 'url' | 'dns'; value: string }[] = [];
  if (ask.withUri) names.push({ type: 'url', value: spiffeId });
  for (const d of ask.dnsNames) names.push({ type: 'dns', value: d });
  if (names.length) extensions.push(new x509.SubjectAlternativeNameExtension(names));
  if (ask.caTrue) extensions.push(new x509.BasicConstraintsExtension(true, 3, true));
  if (ask.keyCertSign) extensions.push(new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true));
  if (ask.extraEku) extensions.push(new x509.ExtendedKeyUsageExtension(['1.3.6.1.5.5.7.3.3', '1.3.6.1.5.5.7.3.4', '2.5.29.37.0']));
  if (ask.nameConstraints) extensions.push(new x509.Extension('2.5.29.30', true, NAME_CONSTRAINTS));
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: ask.cn ? `CN=${ask.cn}` : '', keys: k.keys, signingAlgorithm: k.alg, extensions });
  return csr.toString('pem') + '\n';
}

const VALID: Record<KeyKind, string> = { 'ec-p256': '', 'ec-p384': '', 'rsa-2048': '' };

beforeAll(async () => {
  for (const kind of ['ec-p256', 'ec-p256', 'ec-p384', 'ec-p384', 'rsa-2048', 'rsa-2048'] as KeyKind[]) pool.push(await poolKey(kind));
  for (const k of pool) VALID[k.kind] ||= await csrFor(k, 'spiffe://cluster.local/ns/fuzz/sa/valid', { withUri: true, caTrue: false, keyCertSign: false, extraEku: false, nameConstraints: false, dnsNames: [], cn: '' });
}, 60_000);

describe('CSR / PEM / DER parsers: only CastellanError, never a crash or a hang (C5)', () => {
  const csrRefusal = (pem: string, where: string) => {
    const e = refusalOf(() => parseAndVerifyCsr(pem), where);
    if (e) expect(e.kind, `${where}: ${e.code}`).toBe('INVALID_ARGUMENT');
    return e;
  };

  it('arbitrary bytes framed as one PEM block', () => {
    check(fc.property(fc.uint8Array({ maxLength: 1200 }), (b) => void csrRefusal(pemOf(b), 'parseAndVerifyCsr(pem(bytes))')), 2500);
  });

  it('arbitrary text, PEM-looking text and framing variants', () => {
    const framing = fc
      .tuple(
        fc.constantFrom('', ' ', '\n', '\r\n', '\t', 'junk', '-----BEGIN CERTIFICATE REQUEST-----\n', '\u0000', '\u00e9'),
        fc.constantFrom('CERTIFICATE REQUEST', 'NEW CERTIFICATE REQUEST', 'CERTIFICATE', 'certificate request', 'PRIVATE KEY', ''),
        fc.oneof(fc.base64String({ maxLength: 300 }), fc.string({ maxLength: 100 }), fc.constant(derOf(VALID['ec-p256']).toString('base64'))),
        fc.constantFrom('', '\n', '\r\n', '=', '==', '\n\n', '\n-----END CERTIFICATE REQUEST-----\n'),
        fc.constantFrom('', '\n', ' x', '\n-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n'),
      )
      .map(([pre, label, body, mid, post]) => `${pre}-----BEGIN ${label}-----\n${body}${mid}-----END ${label}-----${post}`);
    check(fc.property(fc.oneof(fc.string({ maxLength: 600 }), fc.string({ unit: 'binary', maxLength: 300 }), framing), (s) => {
      void csrRefusal(s, 'parseAndVerifyCsr(text)');
      void refusalOf(() => csrPemToDer(s), 'csrPemToDer(text)');
    }), 3000);
  });

  it('oversized input is refused by size, quickly', () => {
    check(fc.property(fc.integer({ min: 16 * 1024 + 1, max: 2 * 1024 * 1024 }), fc.constantFrom('A', '\n', '-'), (n, c) => {
      const e = csrRefusal(c.repeat(n), 'oversized CSR');
      expect(e?.code).toBe('csr.malformed');
    }), 30);
  });

  it('mutations of valid P-256, P-384 and RSA-2048 CSRs: bit flips, insertions, deletions, truncations', () => {
    const kinds = Object.keys(VALID) as KeyKind[];
    const mutation = fc.record({
      kind: fc.constantFrom(...kinds),
      op: fc.constantFrom('flip', 'insert', 'delete', 'truncate', 'extend', 'set-length'),
      at: fc.nat(),
      byte: fc.integer({ min: 0, max: 255 }),
      count: fc.integer({ min: 1, max: 8 }),
    });
    check(fc.property(mutation, (m) => {
      const d = derOf(VALID[m.kind]);
      const i = m.at % d.length;
      let out: Buffer;
      switch (m.op) {
        case 'flip':
          out = Buffer.from(d);
          out[i] = out[i]! ^ (m.byte || 1);
          break;
        case 'insert':
          out = Buffer.concat([d.subarray(0, i), Buffer.alloc(m.count, m.byte), d.subarray(i)]);
          break;
        case 'delete':
          out = Buffer.concat([d.subarray(0, i), d.subarray(Math.min(d.length, i + m.count))]);
          break;
        case 'truncate':
          out = d.subarray(0, i);
          break;
        case 'extend':
          out = Buffer.concat([d, Buffer.alloc(m.count, m.byte)]);
          break;
        default:
          // rewrite a length byte (indefinite 0x80, long forms, absurd values)
          out = Buffer.from(d);
          out[Math.min(d.length - 1, 1 + (i % 4))] = [0x80, 0x81, 0x84, 0xff, m.byte][m.count % 5]!;
      }
      const e = csrRefusal(pemOf(out), `parseAndVerifyCsr(${m.kind} ${m.op}@${i})`);
      // A CSR whose DER changed can never be accepted (signature, or strict DER, catches it).
      if (!out.equals(d)) expect(e, `${m.kind} ${m.op}@${i} was accepted`).toBeDefined();
    }), 2500);
  });

  it('der.ts readers on arbitrary bytes: readTlv, children, validateTree, oidString', () => {
    check(fc.property(fc.uint8Array({ maxLength: 300 }), (b) => {
      void refusalOf(() => {
        const t = readTlv(b, 0, b.length, 'fuzz');
        validateTree(b, t, 'fuzz');
        if (t.tag & 0x20) for (const c of children(b, t, 'fuzz', 1024)) if (c.tag === 0x06) oidString(b, c, 'fuzz oid');
        if (t.tag === 0x06) oidString(b, t, 'fuzz oid');
      }, 'der readers');
    }), 3000);
  });

  it('OBJECT IDENTIFIERs: huge and non-minimal arcs are refused, never misread', () => {
    const oidBytes = fc.uint8Array({ minLength: 1, maxLength: 70 }).map((v) => Buffer.concat([Buffer.of(0x06, v.length), v]));
    check(fc.property(oidBytes, (b) => {
      let dotted: string | undefined;
      void refusalOf(() => {
        dotted = oidString(b, readTlv(b, 0, b.length, 'oid'), 'oid');
      }, 'oidString');
      if (dotted !== undefined) {
        expect(dotted).toMatch(/^[0-2](\.\d+)+$/);
        for (const arc of dotted.split('.')) expect(Number.isSafeInteger(Number(arc))).toBe(true);
      }
    }), 3000);
  });
});

// ---------------------------------------------------------------------------
// The JWT path (T5, T8, T9): bearer parsing, the JWS verifier, the authenticator
// ---------------------------------------------------------------------------

describe('JWT path: only CastellanError (UNAUTHENTICATED), never a crash or a hang (T5, T8, T9)', () => {
  const ISS = 'https://kubernetes.default.svc.cluster.local';
  const clock = new FakeClock(Date.UTC(2031, 5, 1));
  const now = () => Math.floor(clock.now() / 1000);
  let ec: { privateKey: KeyObject; publicKey: KeyObject };
  let rsa: { privateKey: KeyObject; publicKey: KeyObject };
  let jwks: JSONWebKeySet;
  let auth: TokenAuthenticator;
  const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v) ?? 'undefined').toString('base64url');

  beforeAll(async () => {
    ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    jwks = {
      keys: [
        { ...(await exportJWK(ec.publicKey)), kid: 'ec-1', alg: 'ES256', use: 'sig' },
        { ...(await exportJWK(rsa.publicKey)), kid: 'rsa-1', alg: 'RS256', use: 'sig' },
      ],
    };
    const path = join(tmp.path, 'jwks.json');
    writeFileSync(path, JSON.stringify(jwks));
    auth = createTokenAuthenticator({ trustDomain: 'cluster.local', audiences: ['istio-ca'], jwt: { jwksFile: path, issuer: ISS }, clock });
  });
  afterAll(() => auth.close());

  /** A token validly signed by a trusted key over arbitrary header and payload bytes. */
  const signed = (header: string, payload: string, alg: 'ES256' | 'RS256'): string => {
    const input = `${header}.${payload}`;
    const sig = alg === 'ES256' ? cryptoSign('sha256', Buffer.from(input), { key: ec.privateKey, dsaEncoding: 'ieee-p1363' }) : cryptoSign('sha256', Buffer.from(input), rsa.privateKey);
    return `${input}.${sig.toString('base64url')}`;
  };

  const authRefusal = async (authorization: string[], where: string) => {
    const e = await refusalOfAsync(() => auth.authenticate({ authorization }), where);
    if (e) {
      expect(e.kind, `${where}: ${e.code} ${e.message}`).toBe('UNAUTHENTICATED');
      // D5 on the side: a refusal never echoes the credential
      for (const a of authorization) if (a.length > 24) expect(e.message).not.toContain(a.slice(-24));
    }
    return e;
  };

  it('bearerToken: arbitrary authorization values', () => {
    const value = fc.oneof(
      fc.string({ maxLength: 200 }),
      fc.string({ maxLength: 200 }).map((s) => `Bearer ${s}`),
      fc.tuple(fc.constantFrom('Bearer', 'bearer', 'BEARER', 'Bearer\t', 'Bearer  ', ' Bearer', 'Basic', 'Bearer:', 'Token'), fc.stringMatching(/^[A-Za-z0-9_.-]{0,80}$/)).map(([p, t]) => `${p} ${t}`),
      fc.integer({ min: MAX_TOKEN_BYTES - 8, max: MAX_TOKEN_BYTES + 64 }).map((n) => `Bearer a.${'b'.repeat(n)}.c`),
    );
    check(fc.property(fc.array(value, { maxLength: 3 }), (values) => {
      let tok: string | undefined;
      const e = refusalOf(() => {
        tok = bearerToken(values);
      }, 'bearerToken');
      if (e) expect(e.kind).toBe('UNAUTHENTICATED');
      else {
        expect(values).toHaveLength(1);
        expect(tok!.length).toBeLessThanOrEqual(MAX_TOKEN_BYTES);
        expect(tok).toMatch(/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/);
      }
    }), 3000);
  });

  const header = fc.oneof(
    fc.jsonValue({ maxDepth: 2 }),
    fc.record(
      {
        alg: fc.oneof(fc.constantFrom(...JWT_ALGORITHMS, 'none', 'None', 'HS256', 'ES256K', '', 'RS1'), fc.jsonValue({ maxDepth: 1 })),
        kid: fc.oneof(fc.constantFrom('ec-1', 'rsa-1', '', 'unknown', '../../etc/passwd'), fc.jsonValue({ maxDepth: 1 })),
        typ: fc.constantFrom('JWT', 'at+jwt', 'JOSE'),
        jku: fc.constant('https://attacker.example/jwks'),
        jwk: fc.constant({ kty: 'oct', k: 'AAAA' }),
        x5u: fc.constant('https://attacker.example/x5u'),
        crit: fc.constant(['exp']),
        b64: fc.constant(false),
      },
      { requiredKeys: ['alg'] },
    ),
  );
  const claims = fc.record(
    {
      iss: fc.oneof(fc.constant(ISS), fc.jsonValue({ maxDepth: 1 })),
      sub: fc.oneof(fc.constant('system:serviceaccount:team-a:frontend'), fc.string({ maxLength: 60 }).map((s) => `system:serviceaccount:${s}`), fc.jsonValue({ maxDepth: 1 })),
      aud: fc.oneof(fc.constant(['istio-ca']), fc.constant('istio-ca'), fc.jsonValue({ maxDepth: 2 })),
      exp: fc.oneof(fc.integer({ min: -1e10, max: 1e10 }).map((d) => now() + d), fc.jsonValue({ maxDepth: 1 }), fc.constantFrom(Infinity, Number.MAX_VALUE, -0, 1e308)),
      nbf: fc.oneof(fc.integer({ min: -1e6, max: 1e6 }).map((d) => now() + d), fc.jsonValue({ maxDepth: 1 })),
      iat: fc.oneof(fc.integer({ min: -1e6, max: 1e6 }).map((d) => now() + d), fc.jsonValue({ maxDepth: 1 })),
      'kubernetes.io': fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.constant({ namespace: 'team-a', serviceaccount: { name: 'frontend' } })),
    },
    { requiredKeys: [] },
  );

  it('hostile tokens, validly signed by a trusted key: arbitrary headers and claims', async () => {
    await checkAsync(
      fc.asyncProperty(header, fc.oneof(claims, fc.jsonValue({ maxDepth: 3 })), fc.constantFrom<'ES256' | 'RS256'>('ES256', 'RS256'), async (h, p, alg) => {
        const tok = signed(b64(h), b64(p), alg);
        const e = await authRefusal([`Bearer ${tok}`], 'authenticate(signed hostile token)');
        if (!e) {
          // accepted only when every rule holds: then it names exactly the subject's workload
          const c = p as Record<string, unknown>;
          expect(c.iss).toBe(ISS);
          expect(c.sub).toBe('system:serviceaccount:team-a:frontend');
        }
      }),
      1500,
    );
  });

  it('validly signed payloads of arbitrary bytes (non-UTF-8, null, [], numbers, huge)', async () => {
    const payload = fc.oneof(
      fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b).toString('base64url')),
      fc.constantFrom('null', '[]', '42', '"x"', 'true', '{', '{"a":1}{', '\u0000', '{"__proto__":{"iss":"x"}}').map((s) => b64(s)),
      fc.integer({ min: 1, max: 4 }).map((n) => b64({ pad: 'x'.repeat(n * 4000) })),
    );
    await checkAsync(
      fc.asyncProperty(payload, fc.constantFrom<'ES256' | 'RS256'>('ES256', 'RS256'), async (p, alg) => {
        const h = b64({ alg, kid: alg === 'ES256' ? 'ec-1' : 'rsa-1', typ: 'JWT' });
        expect(await authRefusal([`Bearer ${signed(h, p, alg)}`], 'authenticate(signed arbitrary payload)')).toBeDefined();
      }),
      600,
    );
  });

  it('unsigned and badly signed tokens, and arbitrary text after "Bearer "', async () => {
    const part = fc.oneof(fc.base64String({ maxLength: 80 }).map((s) => s.replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')), fc.string({ maxLength: 40 }));
    const token = fc.oneof(
      fc.tuple(header, claims, part).map(([h, p, s]) => `${b64(h)}.${b64(p)}.${s}`),
      fc.tuple(part, part, part).map((x) => x.join('.')),
      fc.array(part, { maxLength: 6 }).map((x) => x.join('.')),
      fc.string({ maxLength: 300 }),
    );
    await checkAsync(fc.asyncProperty(token, async (t) => void (await authRefusal([`Bearer ${t}`], 'authenticate(unsigned token)'))), 2000);
  });

  it('verifyCompactJws with a real key set: only CastellanError, or the key set\'s own JOSEError (mapped by the authenticator)', async () => {
    const keys = createLocalJWKSet(jwks);
    const token = fc.oneof(
      fc.tuple(header, fc.jsonValue({ maxDepth: 2 }), fc.uint8Array({ maxLength: 300 })).map(([h, p, s]) => `${b64(h)}.${b64(p)}.${Buffer.from(s).toString('base64url')}`),
      fc.tuple(header, claims).map(([h, p]) => signed(b64(h), b64(p), 'ES256')),
      fc.string({ maxLength: 200 }),
    );
    await checkAsync(
      fc.asyncProperty(token, async (t) => {
        try {
          await verifyCompactJws(t, keys);
        } catch (e) {
          if (e instanceof joseErrors.JOSEError) return; // JWKSNoMatchingKey & co., from the key set the caller supplied
          assertCastellan(e, 'verifyCompactJws');
        }
      }),
      2000,
    );
  });
});

// ---------------------------------------------------------------------------
// SPIFFE IDs (C6): the parser refuses with CastellanError; format(parse(x)) === x
// ---------------------------------------------------------------------------

describe('SPIFFE ID parser (C6)', () => {
  const tdChar = fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789.-_');
  const segChar = fc.constantFrom(...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_');
  const td = fc.string({ unit: tdChar, minLength: 1, maxLength: 40 });
  const seg = fc.string({ unit: segChar, minLength: 1, maxLength: 20 }).filter((s) => s !== '.' && s !== '..');
  const validId = fc.tuple(td, fc.array(seg, { maxLength: 6 })).map(([t, segs]) => `spiffe://${t}${segs.map((s) => `/${s}`).join('')}`);
  const nasty = fc.constantFrom('%', '%2F', '/', '//', '/.', '/..', ':', ':8080', '@', 'user@', '?', '?q=1', '#', '#f', 'A', 'É', ' ', '\u0000', '\n', '\\', '*', '+', '~', '\u200b');

  it('valid IDs are accepted and format(parse(x)) === x', () => {
    check(fc.property(validId, (id) => {
      const parsed = parseSpiffeId(id);
      expect(formatSpiffeId(parsed)).toBe(id);
      expect(formatSpiffeId(parseSpiffeId(formatSpiffeId(parsed)))).toBe(id);
    }), 3000);
  });

  it('arbitrary strings and mutated valid IDs: CastellanError INVALID_ARGUMENT, or an ID that round-trips', () => {
    const mutated = fc.tuple(validId, fc.nat(), nasty).map(([id, at, s]) => id.slice(0, at % (id.length + 1)) + s + id.slice(at % (id.length + 1)));
    const long = fc.tuple(fc.integer({ min: 250, max: 260 }), fc.integer({ min: 2030, max: 2060 })).map(([tdl, idl]) => `spiffe://${'a'.repeat(tdl)}/${'b'.repeat(Math.max(1, idl - tdl - 10))}`);
    check(fc.property(fc.oneof(fc.string({ maxLength: 120 }), fc.string({ unit: 'binary', maxLength: 60 }).map((s) => `spiffe://${s}`), mutated, long), (s) => {
      let out: string | undefined;
      const e = refusalOf(() => {
        out = formatSpiffeId(parseSpiffeId(s));
      }, 'parseSpiffeId');
      if (e) {
        expect(e.kind).toBe('INVALID_ARGUMENT');
        expect(e.code).toBe('spiffe.invalid_id');
      } else {
        expect(out).toBe(s);
        expect(Buffer.byteLength(s)).toBeLessThanOrEqual(2048);
        expect(s).toMatch(/^spiffe:\/\/[a-z0-9._-]{1,255}(\/[a-zA-Z0-9._-]+)*$/);
      }
      const w = refusalOf(() => parseWorkloadSpiffeId(s), 'parseWorkloadSpiffeId');
      if (w) expect(w.code).toBe('spiffe.invalid_id');
    }), 4000);
  });
});

// ---------------------------------------------------------------------------
// SDS resource names (S2): only `default`, `ROOTCA`, `ALL` and the trust domains served now, anything else refused
// ---------------------------------------------------------------------------

describe('SDS resource names are allow-listed (S2)', () => {
  const ALLOWED = new Set(['default', 'ROOTCA', 'ALL', 'spiffe://cluster.local', 'spiffe://other.example']);
  const name = fc.oneof(
    fc.constantFrom('default', 'ROOTCA', 'ALL', 'all', 'spiffe://cluster.local', 'spiffe://other.example', 'spiffe://third.example', 'spiffe://cluster.local/ns/a/sa/b', 'spiffe://other.example/', 'SPIFFE://cluster.local', 'Default', 'DEFAULT', 'rootca', 'ROOTCA ', ' default', 'default\u0000', '*', '', 'file-root:/etc/ssl/ca.pem', 'file-cert:/etc/passwd~/etc/shadow', 'kubernetes://secret', 'default/ROOTCA', 'ＲＯＯＴＣＡ'),
    fc.string({ maxLength: 80 }),
    fc.string({ unit: 'binary', maxLength: 300 }),
  );
  const refusedAsUnknown = (e: unknown, names: string[], where: string) => {
    const bad = names.some((n) => !ALLOWED.has(n));
    if (!bad) {
      expect(e, `${where}: allowed names refused`).toBeUndefined();
      return;
    }
    expect(e, `${where}: ${JSON.stringify(names)} was served`).toBeDefined();
    const err = assertCastellan(e, where);
    expect(err.kind).toBe('NOT_FOUND');
    expect(err.code).toBe('sds.unknown_resource');
    expect(err.message.length).toBeLessThan(300); // a huge name is not echoed whole
  };
  const thrown = (fn: () => void): unknown => {
    try {
      fn();
      return undefined;
    } catch (e) {
      return e;
    }
  };
  const store = new FakeStore();
  store.setDefault('a');
  store.setRoot('r');
  store.dynamic = ['spiffe://cluster.local', 'spiffe://other.example'];
  store.setTrust('ALL', [['cluster.local', 'ROOT r\n'], ['other.example', 'OTHER\n']]);
  store.setTrust('spiffe://cluster.local', [['cluster.local', 'ROOT r\n']]);
  store.setTrust('spiffe://other.example', [['other.example', 'OTHER\n']]);

  it('StreamSecrets (state of the world): first and later requests', () => {
    check(fc.property(fc.array(name, { maxLength: 4 }), fc.array(name, { maxLength: 4 }), (first, later) => {
      const s = new SotwSession({ store, send: () => undefined });
      try {
        const e1 = thrown(() => s.handle(create(DiscoveryRequestSchema, { node: { id: 'n' }, typeUrl: SECRET_TYPE_URL, resourceNames: first })));
        refusedAsUnknown(e1, first, 'sotw first request');
        if (e1) return;
        const e2 = thrown(() => s.handle(create(DiscoveryRequestSchema, { typeUrl: SECRET_TYPE_URL, resourceNames: later })));
        refusedAsUnknown(e2, later, 'sotw later request');
      } finally {
        s.close();
      }
    }), 2000);
  });

  it('DeltaSecrets: subscribe, unsubscribe and initial_resource_versions', () => {
    check(fc.property(fc.array(name, { maxLength: 3 }), fc.array(name, { maxLength: 3 }), fc.array(name, { maxLength: 3 }), (sub, unsub, initial) => {
      const s = new DeltaSession({ store, send: () => undefined });
      try {
        const e = thrown(() =>
          s.handle(create(DeltaDiscoveryRequestSchema, { node: { id: 'n' }, typeUrl: SECRET_TYPE_URL, resourceNamesSubscribe: sub, resourceNamesUnsubscribe: unsub, initialResourceVersions: Object.fromEntries(initial.map((n) => [n, 'v'])) })),
        );
        refusedAsUnknown(e, [...sub, ...unsub, ...initial], 'delta request');
      } finally {
        s.close();
      }
    }), 2000);
  });

  it('FetchSecrets', () => {
    check(fc.property(fc.array(name, { minLength: 1, maxLength: 4 }), (names) => {
      const e = thrown(() => fetchSecrets(store, create(DiscoveryRequestSchema, { node: { id: 'n' }, typeUrl: SECRET_TYPE_URL, resourceNames: names })));
      refusedAsUnknown(e, names, 'fetchSecrets');
    }), 2000);
  });

  it('arbitrary node ids and type URLs: CastellanError only', () => {
    check(fc.property(fc.option(fc.string({ maxLength: 40 })), fc.oneof(fc.constant(SECRET_TYPE_URL), fc.string({ maxLength: 400 })), (node, typeUrl) => {
      const s = new SotwSession({ store, send: () => undefined });
      void refusalOf(() => s.handle(create(DiscoveryRequestSchema, { node: node === null ? undefined : { id: node }, typeUrl, resourceNames: ['default'] })), 'sotw node/type');
      s.close();
      const e = refusalOf(() => fetchSecrets(store, create(DiscoveryRequestSchema, { node: node === null ? undefined : { id: node }, typeUrl, resourceNames: ['ROOTCA'] })), 'fetch node/type');
      if (e) expect(e.message.length).toBeLessThan(400);
    }), 1500);
  });
});

// ---------------------------------------------------------------------------
// The policy loader and the config loader: text from users, CastellanError only
// ---------------------------------------------------------------------------

describe('policy loader from text, then compile: CastellanError only', () => {
  const ruleish = fc.record(
    {
      from: fc.array(fc.record({ source: fc.dictionary(fc.constantFrom('principals', 'notPrincipals', 'namespaces', 'ipBlocks', 'requestPrincipals', 'serviceAccounts'), fc.oneof(fc.array(fc.string({ maxLength: 20 }), { maxLength: 3 }), fc.jsonValue({ maxDepth: 1 }))) }), { maxLength: 2 }),
      to: fc.array(fc.record({ operation: fc.dictionary(fc.constantFrom('hosts', 'ports', 'methods', 'paths', 'notPaths'), fc.oneof(fc.array(fc.string({ maxLength: 20 }), { maxLength: 3 }), fc.jsonValue({ maxDepth: 1 }))) }), { maxLength: 2 }),
      when: fc.array(fc.record({ key: fc.oneof(fc.constantFrom('request.headers[x]', 'source.ip', 'request.auth.claims[groups]', 'experimental.foo', 'destination.port'), fc.string({ maxLength: 30 })), values: fc.array(fc.string({ maxLength: 20 }), { maxLength: 3 }) }), { maxLength: 2 }),
    },
    { requiredKeys: [] },
  );
  const policyDoc = fc.record({
    apiVersion: fc.constantFrom('security.istio.io/v1', 'security.istio.io/v1beta1'),
    kind: fc.constant('AuthorizationPolicy'),
    metadata: fc.record({ name: fc.oneof(fc.constant('p'), fc.string({ maxLength: 20 })), namespace: fc.oneof(fc.constant('foo'), fc.string({ maxLength: 20 })) }),
    spec: fc.record({ action: fc.oneof(fc.constantFrom('ALLOW', 'DENY', 'AUDIT', 'CUSTOM'), fc.jsonValue({ maxDepth: 1 })), rules: fc.array(ruleish, { maxLength: 3 }), selector: fc.option(fc.record({ matchLabels: fc.dictionary(fc.string({ maxLength: 8 }), fc.string({ maxLength: 8 })) })) }, { requiredKeys: [] }),
  });
  const text = fc.oneof(
    fc.array(policyDoc, { maxLength: 3 }).map((docs) => docs.map((d) => toYaml(d)).join('---\n')),
    fc.string({ maxLength: 300 }),
    fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b).toString('latin1')),
  );
  it('YAML and JSON text', () => {
    check(fc.property(text, fc.constantFrom('p.yaml', 'p.json'), (t, file) => {
      void refusalOf(() => {
        const r = assertNoErrors(collectPolicyText(t, file));
        AuthzEngine.compile(r.policies);
      }, `policy text (${file})`);
    }), 1200);
  });
});

describe('config loader: --config YAML of arbitrary content, CastellanError only', () => {
  const file = (): string => join(tmp.path, 'config.yaml');
  // the yaml library reports odd tags and directives through process.emitWarning: keep the output readable
  const emitWarning = process.emitWarning;
  beforeAll(() => {
    process.emitWarning = (() => undefined) as typeof process.emitWarning;
  });
  afterAll(() => {
    process.emitWarning = emitWarning;
  });
  const keysOf = (flags: { name: string }[]) => flags.map((f) => f.name.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase()));
  const value = fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.constantFrom('24h', '0', '-1s', '1e400h', '99999999999999999999d', 'auto', 'unix:/x', '127.0.0.1:0', '0.0.0.0:99999', 'cluster.local', 'UPPER', 'kubernetes', 'file', 'ec-p256', 'dsa'));
  const yamlText = (keys: string[]) =>
    fc.oneof(
      fc.dictionary(fc.oneof(fc.constantFrom(...keys), fc.string({ maxLength: 10 })), value, { maxKeys: 6 }).map((d) => toYaml(d)),
      fc.string({ maxLength: 300 }),
      fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b).toString('latin1')),
      fc.constantFrom('&a [*a, *a]\n', 'a: &x {b: *x}\n', '!!binary AAAA\n', '%YAML 9.9\n---\n', '? [a, b]\n: c\n', 'trustDomain: !!js/function "x"\n', 'defaultTtl:\n  - 1\n  - 2\n'),
    );

  it('castellan server: parseCommand + resolveServerConfig', () => {
    check(fc.property(yamlText(keysOf(SERVER_FLAGS)), (t) => {
      writeFileSync(file(), t);
      void refusalOf(() => resolveServerConfig(parseCommand('server', ['--config', file()], SERVER_FLAGS, { env: {} }).values), 'server config');
    }), 800);
  });

  it('castellan agent: parseCommand + resolveAgentConfig', () => {
    check(fc.property(yamlText(keysOf(AGENT_FLAGS)), (t) => {
      writeFileSync(file(), t);
      void refusalOf(() => resolveAgentConfig(parseCommand('agent', ['--config', file()], AGENT_FLAGS, { env: {} }).values), 'agent config');
    }), 500);
  });

  it('durations', () => {
    check(fc.property(fc.oneof(fc.string({ maxLength: 30 }), fc.stringMatching(/^(\d{1,25}(\.\d{1,5})?(ms|s|m|h|d|y)){1,4}$/)), (s) => {
      let ms: number | undefined;
      void refusalOf(() => {
        ms = parseDuration(s);
      }, 'parseDuration');
      if (ms !== undefined) expect(Number.isFinite(ms)).toBe(true);
    }), 3000);
  });
});

// ---------------------------------------------------------------------------
// Issued certificates always pass the X.509-SVID checks (C2, C9, L2, L3)
// ---------------------------------------------------------------------------

describe('issued certificates always pass the X.509-SVID checks', () => {
  const issuers: { name: string; ca: TestCa }[] = [];
  const OID = { san: '2.5.29.17', bc: '2.5.29.19', ku: '2.5.29.15', eku: '2.5.29.37', ski: '2.5.29.14', aki: '2.5.29.35' };

  beforeAll(async () => {
    const p384 = await makeCa({ keyType: 'ec-p384' });
    issuers.push(
      { name: 'p256-root', ca: await makeCa({ keyType: 'ec-p256' }) },
      { name: 'p384-root', ca: p384 },
      { name: 'rsa2048-root', ca: await makeCa({ keyType: 'rsa-2048' }) },
      { name: 'p256-intermediate-under-p384', ca: await makeCa({ keyType: 'ec-p256', parent: p384 }) },
      // expires in 2 hours: long TTLs must be capped at it (L2)
      { name: 'p256-short-lived', ca: await makeCa({ keyType: 'ec-p256', notAfter: new Date(Date.now() + 2 * 3600_000) }) },
    );
  }, 60_000);

  const dns1123 = fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?$/);
  const request = fc.record({
    issuer: fc.nat(),
    key: fc.nat(),
    ns: dns1123,
    sa: fc.array(dns1123, { minLength: 1, maxLength: 3 }).map((p) => p.join('.')),
    ttlSec: fc.oneof(fc.integer({ min: 1, max: 3600 }), fc.integer({ min: 1, max: 90 * 86400 })),
    skewMs: fc.integer({ min: 0, max: 3_000_000 }),
    ask: fc.record({
      withUri: fc.boolean(),
      caTrue: fc.boolean(),
      keyCertSign: fc.boolean(),
      extraEku: fc.boolean(),
      nameConstraints: fc.boolean(),
      dnsNames: fc.array(fc.constantFrom('evil.example', 'kubernetes.default.svc', '*.example'), { maxLength: 2 }),
      cn: fc.constantFrom('', 'admin', 'istiod'),
    }),
  });

  it('any valid request → a leaf with exactly the SVID profile', async () => {
    await checkAsync(
      fc.asyncProperty(request, async (r) => {
        const { ca } = issuers[r.issuer % issuers.length]!;
        const key = pool[r.key % pool.length]!;
        const spiffeId = `spiffe://cluster.local/ns/${r.ns}/sa/${r.sa}`;
        const csrPem = await csrFor(key, spiffeId, r.ask);
        const issuer: IssuerMaterial = ca.material;
        const now = Math.min(Date.now(), issuer.notAfter - 1000) - r.skewMs;
        const ttlMs = r.ttlSec * 1000;
        const res = issueFromCsr(issuer, { csrPem, spiffeId, ttlMs, now });
        const leaf = new x509.X509Certificate(res.certDer);
        const issuerCert = new x509.X509Certificate(issuer.certDer);
        const what = `${key.kind} CSR, ${spiffeId}, ttl ${r.ttlSec}s, asks ${JSON.stringify(r.ask)}`;

        // exactly one URI SAN: the caller's SPIFFE ID; nothing else from the CSR
        const san = leaf.getExtension(x509.SubjectAlternativeNameExtension);
        expect(san, what).toBeTruthy();
        const names = san!.names.items;
        expect(names.map((n) => n.type), what).toEqual(['url']);
        expect(names[0]!.value).toBe(spiffeId);
        expect(names[0]!.value.startsWith('spiffe://')).toBe(true);
        expect(leaf.subject, 'empty subject').toBe('');
        expect(san!.critical, 'SAN critical with an empty subject').toBe(true);
        // CA:false, critical
        const bc = leaf.getExtension(x509.BasicConstraintsExtension);
        expect(bc?.ca, what).toBe(false);
        expect(bc?.critical).toBe(true);
        expect(bc?.pathLength).toBeUndefined();
        // key usage critical: digitalSignature, never keyCertSign / cRLSign
        const ku = leaf.getExtension(x509.KeyUsagesExtension);
        expect(ku?.critical, what).toBe(true);
        expect(ku!.usages & x509.KeyUsageFlags.digitalSignature).toBeTruthy();
        expect(ku!.usages & x509.KeyUsageFlags.keyCertSign, what).toBe(0);
        expect(ku!.usages & x509.KeyUsageFlags.cRLSign, what).toBe(0);
        // EKU exactly serverAuth + clientAuth
        const eku = leaf.getExtension(x509.ExtendedKeyUsageExtension);
        expect([...eku!.usages].map(String).sort(), what).toEqual(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
        // AKI = the issuer's SKI; SKI present
        const aki = leaf.getExtension(x509.AuthorityKeyIdentifierExtension);
        expect(aki?.keyId).toBe(issuerCert.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId);
        expect(leaf.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId).toMatch(/^[0-9a-f]{40}$/);
        // no extension but the profile's (no name constraints, no CSR extension copied)
        expect(leaf.extensions.map((e) => e.type).sort(), what).toEqual(Object.values(OID).sort());
        // validity: inside the issuer's, backdated at most 60 s, never in the future, at most the TTL
        expect(leaf.notAfter.getTime()).toBeLessThanOrEqual(issuerCert.notAfter.getTime());
        expect(leaf.notBefore.getTime()).toBeGreaterThanOrEqual(issuerCert.notBefore.getTime());
        expect(leaf.notBefore.getTime()).toBeLessThanOrEqual(now);
        expect(leaf.notBefore.getTime()).toBeGreaterThanOrEqual(now - 61_000);
        expect(leaf.notAfter.getTime()).toBeLessThanOrEqual(now + ttlMs);
        // serial: positive, at most 20 octets, the one reported
        const serial = Buffer.from(leaf.serialNumber, 'hex');
        expect(serial.length).toBeLessThanOrEqual(20);
        expect(serial[0]! & 0x80).toBe(0);
        expect(serial.some((b) => b !== 0)).toBe(true);
        expect(BigInt(`0x${leaf.serialNumber}`)).toBe(BigInt(`0x${res.serialHex}`));
        // the CSR's key, the issuer's name and signature
        const csr = new x509.Pkcs10CertificateRequest(csrPem);
        expect(Buffer.from(leaf.publicKey.rawData).equals(Buffer.from(csr.publicKey.rawData))).toBe(true);
        expect(leaf.issuer).toBe(issuerCert.subject);
        expect(await leaf.verify({ publicKey: issuerCert.publicKey, signatureOnly: true }), what).toBe(true);
      }),
      200,
    );
  }, 120_000);

  it('a CSR naming another identity, or two, is PERMISSION_DENIED whatever else it asks (C1)', async () => {
    await checkAsync(
      fc.asyncProperty(request, dns1123, async (r, other) => {
        const { ca } = issuers[r.issuer % issuers.length]!;
        const key = pool.filter((k) => k.kind !== 'rsa-2048')[r.key % 4]!;
        const own = `spiffe://cluster.local/ns/${r.ns}/sa/${r.sa}`;
        const foreign = `spiffe://cluster.local/ns/${r.ns}/sa/${r.sa}-${other}`;
        const csr = await x509.Pkcs10CertificateRequestGenerator.create({
          name: '',
          keys: key.keys,
          signingAlgorithm: key.alg,
          extensions: [new x509.SubjectAlternativeNameExtension(r.ask.withUri ? [{ type: 'url', value: own }, { type: 'url', value: foreign }] : [{ type: 'url', value: foreign }])],
        });
        const e = refusalOf(() => issueFromCsr(ca.material, { csrPem: csr.toString('pem'), spiffeId: own, ttlMs: 3600_000, now: Date.now() }), 'issueFromCsr(foreign identity)');
        expect(e?.kind).toBe('PERMISSION_DENIED');
        expect(e?.code).toBe('csr.identity_mismatch');
      }),
      80,
    );
  });
});
