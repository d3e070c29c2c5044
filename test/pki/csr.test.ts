/**
 * parseAndVerifyCsr: a table of CSRs from independent producers (the openssl
 * CLI, @peculiar/x509) and crafted ones (test/pki/helpers.ts signs exactly the
 * bytes it is given, so each crafted defect is the only defect), plus
 * property tests: nothing but CastellanError ever escapes (security.md C3-C5).
 */
import { createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { CastellanError } from '../../src/platform/errors.ts';
import { checkCsrShape, parseAndVerifyCsr, type CsrInfo } from '../../src/pki/csr.ts';
import { craftCsr, ecKey, ext, extReq, h, oid, opensslCsr, peculiarCsr, pem, publicSpki, seq, t, uriSan, SAN_OID } from './helpers.ts';

const ID = 'spiffe://cluster.local/ns/default/sa/web';
const EC = (curve: string) => ['-algorithm', 'EC', '-pkeyopt', `ec_paramgen_curve:${curve}`];
const RSA = (bits: number) => ['-algorithm', 'RSA', '-pkeyopt', `rsa_keygen_bits:${bits}`];

function derOf(p: string): Buffer {
  return Buffer.from(p.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
}

/** An RSA SubjectPublicKeyInfo with a made-up modulus of `bits` bits and exponent `e` (no private key needed: key policy runs first). */
function fakeRsaSpki(bits: number, e = h('010001')): Buffer {
  const n = randomBytes(bits / 8);
  n[0] = n[0]! | 0x80;
  const rsaKey = seq(t(0x02, Buffer.concat([Buffer.of(0), n])), t(0x02, e));
  return seq(seq(oid('1.2.840.113549.1.1.1'), h('0500')), t(0x03, Buffer.of(0), rsaKey));
}

interface OkCase {
  name: string;
  make: () => Promise<string> | string;
  expect: Partial<CsrInfo>;
}
interface FailCase {
  name: string;
  make: () => Promise<string> | string;
  code: 'csr.malformed' | 'csr.key_policy' | 'csr.bad_signature';
}

const okCases: OkCase[] = [
  { name: 'ok/openssl-p256-no-san', make: () => opensslCsr().csrPem, expect: { keyType: 'ec-p256', keyBits: 256, uriSans: [] } },
  { name: 'ok/openssl-p256-uri-san', make: () => opensslCsr({ uris: [ID] }).csrPem, expect: { keyType: 'ec-p256', uriSans: [ID] } },
  { name: 'ok/openssl-p256-subject-and-two-uris', make: () => opensslCsr({ uris: [ID, 'spiffe://x/y'], subj: '/CN=ignored/O=ignored' }).csrPem, expect: { uriSans: [ID, 'spiffe://x/y'] } },
  { name: 'ok/openssl-p384', make: () => opensslCsr({ keyArgs: EC('P-384') }).csrPem, expect: { keyType: 'ec-p384', keyBits: 384 } },
  { name: 'ok/openssl-rsa2048', make: () => opensslCsr({ keyArgs: RSA(2048), uris: [ID] }).csrPem, expect: { keyType: 'rsa', keyBits: 2048, uriSans: [ID] } },
  { name: 'ok/openssl-rsa3072', make: () => opensslCsr({ keyArgs: RSA(3072) }).csrPem, expect: { keyType: 'rsa', keyBits: 3072 } },
  { name: 'ok/peculiar-p256-uri', make: async () => (await peculiarCsr({ uris: [ID] })).csrPem, expect: { keyType: 'ec-p256', uriSans: [ID] } },
  { name: 'ok/peculiar-p384', make: async () => (await peculiarCsr({ curve: 'P-384' })).csrPem, expect: { keyType: 'ec-p384' } },
  { name: 'ok/peculiar-rsa2048', make: async () => (await peculiarCsr({ rsa: true })).csrPem, expect: { keyType: 'rsa', keyBits: 2048 } },
  { name: 'ok/crafted-p256-sha384-signature', make: () => pem(craftCsr({ key: ecKey(), hash: 'sha384', sigAlg: seq(oid('1.2.840.10045.4.3.3')) })), expect: { keyType: 'ec-p256' } },
  { name: 'ok/crafted-critical-san-and-dns-names', make: () => pem(craftCsr({ key: ecKey(), attrs: extReq(ext(SAN_OID, seq(t(0x82, Buffer.from('a.example')), t(0x86, Buffer.from(ID))), true)) })), expect: { uriSans: [ID] } },
  { name: 'ok/crafted-other-attribute-ignored', make: () => pem(craftCsr({ key: ecKey(), attrs: t(0xa0, seq(oid('1.2.840.113549.1.9.7'), t(0x31, t(0x0c, Buffer.from('pw'))))) })), expect: { uriSans: [] } },
  { name: 'ok/crlf-line-endings', make: () => opensslCsr().csrPem.replace(/\n/g, '\r\n'), expect: { keyType: 'ec-p256' } },
];

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
/** A CSR whose base64 body ends in padding (ECDSA signatures vary in length, so a few tries at most). */
function paddedCsr(): string {
  for (;;) {
    const p = opensslCsr().csrPem;
    if (/=\r?\n-----END/.test(p)) return p;
  }
}
/** The same DER bits but one: the last character before the padding gets a set unused bit. */
function bumpLastDataChar(p: string): string {
  const i = p.search(/=+\r?\n-----END/) - 1;
  return p.slice(0, i) + B64[(B64.indexOf(p[i]!) + 1) % 64]! + p.slice(i + 1);
}

const failCases: FailCase[] = [
  { name: 'fail/empty', make: () => '', code: 'csr.malformed' },
  { name: 'fail/not-pem', make: () => 'hello', code: 'csr.malformed' },
  { name: 'fail/wrong-label', make: () => opensslCsr().csrPem.replace(/CERTIFICATE REQUEST/g, 'CERTIFICATE'), code: 'csr.malformed' },
  { name: 'fail/two-pem-blocks', make: () => { const a = opensslCsr().csrPem; return a + a; }, code: 'csr.malformed' },
  { name: 'fail/text-after-block', make: () => opensslCsr().csrPem + 'junk\n', code: 'csr.malformed' },
  { name: 'fail/bad-base64', make: () => opensslCsr().csrPem.replace(/\n(.)/, '\n!$1'), code: 'csr.malformed' },
  { name: 'fail/base64-padding-missing', make: () => paddedCsr().replace(/=+(\r?\n-----END)/, '$1'), code: 'csr.malformed' },
  { name: 'fail/base64-unused-bits-set', make: () => bumpLastDataChar(paddedCsr()), code: 'csr.malformed' },
  { name: 'fail/base64-stray-character', make: () => opensslCsr().csrPem.replace(/\n(.)/, '\nA$1'), code: 'csr.malformed' },
  { name: 'fail/too-large', make: () => pem(Buffer.alloc(20_000, 0x30)), code: 'csr.malformed' },
  { name: 'fail/trailing-bytes', make: () => pem(Buffer.concat([derOf(opensslCsr().csrPem), Buffer.of(0)])), code: 'csr.malformed' },
  { name: 'fail/truncated', make: () => { const d = derOf(opensslCsr().csrPem); return pem(d.subarray(0, d.length - 1)); }, code: 'csr.malformed' },
  {
    name: 'fail/indefinite-length',
    make: () => { const d = derOf(opensslCsr().csrPem); const body = d.subarray(d[1]! & 0x80 ? 2 + (d[1]! & 0x7f) : 2); return pem(Buffer.concat([h('3080'), body, h('0000')])); },
    code: 'csr.malformed',
  },
  {
    name: 'fail/non-minimal-length',
    make: () => { const d = derOf(opensslCsr().csrPem); const body = d.subarray(d[1]! & 0x80 ? 2 + (d[1]! & 0x7f) : 2); return pem(Buffer.concat([h('3083'), Buffer.of(0, body.length >> 8, body.length & 0xff), body])); },
    code: 'csr.malformed',
  },
  { name: 'fail/huge-oid-arc', make: () => pem(craftCsr({ key: ecKey(), attrs: extReq(ext('1.2.18446744073709551616', h('0500'))) })), code: 'csr.malformed' },
  { name: 'fail/duplicate-extension', make: () => pem(craftCsr({ key: ecKey(), attrs: extReq(uriSan(ID), uriSan(ID)) })), code: 'csr.malformed' },
  { name: 'fail/two-extension-requests', make: () => pem(craftCsr({ key: ecKey(), attrs: t(0xa0, seq(oid('1.2.840.113549.1.9.14'), t(0x31, seq(uriSan(ID)))), seq(oid('1.2.840.113549.1.9.14'), t(0x31, seq()))) })), code: 'csr.malformed' },
  { name: 'fail/critical-false-encoded', make: () => pem(craftCsr({ key: ecKey(), attrs: extReq(seq(oid(SAN_OID), h('010100'), t(0x04, seq(t(0x86, Buffer.from(ID)))))) })), code: 'csr.malformed' },
  { name: 'fail/empty-extension-list', make: () => pem(craftCsr({ key: ecKey(), attrs: extReq() })), code: 'csr.malformed' },
  { name: 'fail/critical-flag-not-der', make: () => pem(craftCsr({ key: ecKey(), attrs: extReq(seq(oid(SAN_OID), h('010101'), t(0x04, seq(t(0x86, Buffer.from(ID)))))) })), code: 'csr.malformed' },
  { name: 'fail/san-trailing-bytes', make: () => pem(craftCsr({ key: ecKey(), attrs: extReq(ext(SAN_OID, Buffer.concat([seq(t(0x86, Buffer.from(ID))), h('00')]))) })), code: 'csr.malformed' },
  { name: 'fail/version-1', make: () => { const k = ecKey(); return pem(craftCsr({ key: k, cri: seq(h('020101'), seq(), publicSpki(k), t(0xa0)) })); }, code: 'csr.malformed' },
  { name: 'fail/high-tag-number', make: () => { const k = ecKey(); return pem(craftCsr({ key: k, cri: seq(h('020100'), seq(), publicSpki(k), t(0xa0), h('1f8101 00')) })); }, code: 'csr.malformed' },
  { name: 'fail/unsupported-signature-algorithm', make: () => pem(craftCsr({ key: ecKey(), sigAlg: seq(oid('1.2.840.10045.4.1')) })), code: 'csr.malformed' },
  { name: 'fail/signature-algorithm-key-mismatch', make: () => pem(craftCsr({ key: ecKey(), sigAlg: seq(oid('1.2.840.113549.1.1.11'), h('0500')) })), code: 'csr.malformed' },
  { name: 'fail/rsa-1024', make: () => opensslCsr({ keyArgs: RSA(1024) }).csrPem, code: 'csr.key_policy' },
  { name: 'fail/rsa-8192', make: () => pem(craftCsr({ key: ecKey(), spki: fakeRsaSpki(8192) })), code: 'csr.key_policy' },
  { name: 'fail/rsa-4104', make: () => pem(craftCsr({ key: ecKey(), spki: fakeRsaSpki(4104) })), code: 'csr.key_policy' },
  { name: 'fail/rsa-exponent-3', make: () => pem(craftCsr({ key: ecKey(), spki: fakeRsaSpki(2048, h('03')) })), code: 'csr.key_policy' },
  { name: 'fail/secp256k1', make: () => opensslCsr({ keyArgs: EC('secp256k1') }).csrPem, code: 'csr.key_policy' },
  { name: 'fail/brainpoolP256r1', make: () => opensslCsr({ keyArgs: EC('brainpoolP256r1') }).csrPem, code: 'csr.key_policy' },
  { name: 'fail/secp521r1', make: () => opensslCsr({ keyArgs: EC('P-521') }).csrPem, code: 'csr.key_policy' },
  { name: 'fail/ed25519', make: () => opensslCsr({ keyArgs: ['-algorithm', 'ED25519'] }).csrPem, code: 'csr.key_policy' },
  { name: 'fail/dsa', make: () => pem(craftCsr({ key: ecKey(), spki: seq(seq(oid('1.2.840.10040.4.1')), t(0x03, h('00 020101'))) })), code: 'csr.key_policy' },
  {
    name: 'fail/compressed-point',
    make: () => { const spki = publicSpki(ecKey()); const pt = spki.subarray(spki.length - 65); const comp = Buffer.concat([Buffer.of(2 | (pt[64]! & 1)), pt.subarray(1, 33)]); return pem(craftCsr({ key: ecKey(), spki: seq(seq(oid('1.2.840.10045.2.1'), oid('1.2.840.10045.3.1.7')), t(0x03, Buffer.of(0), comp)) })); },
    code: 'csr.key_policy',
  },
  {
    name: 'fail/point-not-on-curve',
    make: () => { const spki = Buffer.from(publicSpki(ecKey())); spki[spki.length - 1]! ^= 1; return pem(craftCsr({ key: ecKey(), spki })); },
    code: 'csr.key_policy',
  },
  { name: 'fail/swapped-public-key', make: () => pem(craftCsr({ key: ecKey(), spki: publicSpki(ecKey()) })), code: 'csr.bad_signature' },
  {
    name: 'fail/swapped-public-key-openssl',
    make: () => { const d = derOf(opensslCsr().csrPem); const mine = publicSpki(ecKey()); const theirs = d.indexOf(mine.subarray(0, 27)); mine.copy(d, theirs); return pem(d); },
    code: 'csr.bad_signature',
  },
  { name: 'fail/rsa-swapped-public-key', make: () => { const a = opensslCsr({ keyArgs: RSA(2048) }); const d = derOf(a.csrPem); const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'der' }); const at = d.indexOf(other.subarray(0, 24)); other.copy(d, at); return pem(d); }, code: 'csr.bad_signature' },
  { name: 'fail/tampered-san', make: () => pem(Buffer.from(derOf(opensslCsr({ uris: [ID] }).csrPem).toString('latin1').replace('sa/web', 'sa/wex'), 'latin1')), code: 'csr.bad_signature' },
  { name: 'fail/signature-not-der', make: () => { const d = derOf(opensslCsr().csrPem); d[d.length - 3]! ^= 0xff; return pem(d); }, code: 'csr.bad_signature' },
];

/** Every case's CSR, made once for the describes below. */
const made = new Map<string, string>();
beforeAll(async () => {
  for (const c of [...okCases, ...failCases]) made.set(c.name, await c.make());
}, 120_000);

describe('parseAndVerifyCsr', () => {

  for (const c of okCases) {
    it(c.name, () => {
      const pemText = made.get(c.name)!;
      const info = parseAndVerifyCsr(pemText);
      expect(info).toMatchObject(c.expect);
      // The SPKI handed on is the CSR's key, verbatim: it imports to the same key.
      const k = createPublicKey({ key: Buffer.from(info.spki), format: 'der', type: 'spki' });
      expect(Buffer.from(info.spki).equals(k.export({ type: 'spki', format: 'der' }))).toBe(true);
      expect(derOf(pemText).includes(Buffer.from(info.spki))).toBe(true);
    });
  }

  for (const c of failCases) {
    it(c.name, () => {
      const pemText = made.get(c.name)!;
      let err: unknown;
      try {
        parseAndVerifyCsr(pemText);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(CastellanError);
      expect(err).toMatchObject({ kind: 'INVALID_ARGUMENT', code: c.code });
      // Messages are safe to return: never the CSR itself.
      if (pemText.length > 80) expect((err as Error).message).not.toContain(pemText.slice(40, 80));
    });
  }
});

describe('checkCsrShape: parseAndVerifyCsr without the public-key operations (the refusal path of a full queue)', () => {
  // what only importing the key or verifying the signature can tell
  const onlyKeyOps = (c: { name: string; code: string }): boolean => c.code === 'csr.bad_signature' || c.name === 'fail/point-not-on-curve';

  it('accepts every valid CSR, with the URI SANs parseAndVerifyCsr reads', () => {
    for (const c of okCases) expect(checkCsrShape(made.get(c.name)!).uriSans, c.name).toEqual(parseAndVerifyCsr(made.get(c.name)!).uriSans);
  });

  it('refuses every bad CSR with parseAndVerifyCsr\'s error, but those only a key operation can tell', () => {
    for (const c of failCases) {
      const p = made.get(c.name)!;
      if (onlyKeyOps(c)) expect(() => checkCsrShape(p), c.name).not.toThrow();
      else expect(() => checkCsrShape(p), c.name).toThrow(expect.objectContaining({ kind: 'INVALID_ARGUMENT', code: c.code }));
    }
  });

  it('fail/mutated-valid-csr: whatever it refuses, parseAndVerifyCsr refuses the same way', () => {
    const valid = derOf(opensslCsr({ uris: [ID] }).csrPem);
    fc.assert(
      fc.property(fc.nat(valid.length - 1), fc.integer({ min: 1, max: 255 }), (i, x) => {
        const d = Buffer.from(valid);
        d[i]! ^= x;
        let shape: unknown;
        try {
          checkCsrShape(pem(d));
        } catch (e) {
          shape = e;
        }
        if (shape === undefined) return true;
        let full: unknown;
        try {
          parseAndVerifyCsr(pem(d));
        } catch (e) {
          full = e;
        }
        return shape instanceof CastellanError && full instanceof CastellanError && shape.code === full.code && shape.message === full.message;
      }),
      { seed: 1337, numRuns: 1500 },
    );
  });
});

describe('parseAndVerifyCsr: only CastellanError escapes (fast-check, fixed seed)', () => {
  const onlyCastellan = (input: string) => {
    try {
      parseAndVerifyCsr(input);
      return true;
    } catch (e) {
      return e instanceof CastellanError && e.kind === 'INVALID_ARGUMENT';
    }
  };
  const valid = derOf(opensslCsr({ uris: [ID] }).csrPem);

  it('fail/arbitrary-bytes-as-pem', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 600 }), (b) => onlyCastellan(pem(b))), { seed: 1337, numRuns: 3000 });
  });
  it('fail/arbitrary-text', () => {
    fc.assert(fc.property(fc.string({ maxLength: 400 }), (s) => onlyCastellan(s)), { seed: 1337, numRuns: 2000 });
  });
  it('fail/arbitrary-der-trees', () => {
    // Random well-framed TLV trees get past the framing checks and exercise the deeper ones.
    const leaf = fc.tuple(fc.constantFrom(0x02, 0x03, 0x04, 0x05, 0x06, 0x0c, 0x86), fc.uint8Array({ maxLength: 20 })).map(([tag, v]) => t(tag, v));
    const tree = fc.letrec<{ node: Buffer }>((tie) => ({
      node: fc.oneof({ depthSize: 'small' }, leaf, fc.tuple(fc.constantFrom(0x30, 0x31, 0xa0, 0xa3), fc.array(tie('node'), { maxLength: 4 })).map(([tag, kids]) => t(tag, ...kids))),
    })).node;
    fc.assert(fc.property(tree, (der) => onlyCastellan(pem(seq(der, der, t(0x03, Buffer.of(0, 1)))))), { seed: 1337, numRuns: 2000 });
  });
  it('fail/mutated-valid-csr', () => {
    fc.assert(
      fc.property(fc.nat(valid.length - 1), fc.integer({ min: 1, max: 255 }), (i, x) => {
        const d = Buffer.from(valid);
        d[i]! ^= x;
        let accepted = false;
        try {
          parseAndVerifyCsr(pem(d));
          accepted = true;
        } catch (e) {
          if (!(e instanceof CastellanError)) return false;
        }
        // A changed byte inside the signed part or the signature can never be accepted.
        return !accepted;
      }),
      { seed: 1337, numRuns: 1500 },
    );
  });
  it('fail/truncated-valid-csr', () => {
    fc.assert(fc.property(fc.nat(valid.length - 1), (n) => onlyCastellan(pem(valid.subarray(0, n))) && !(() => { try { parseAndVerifyCsr(pem(valid.subarray(0, n))); return true; } catch { return false; } })()), { seed: 1337, numRuns: 500 });
  });
});
