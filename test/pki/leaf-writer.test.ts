/**
 * LeafTemplate writes the TBSCertificate and the certificate in one pass, with
 * lengths computed up front. These properties check it byte for byte against
 * an oracle that nests TLVs the plain way (with its own length encoder, not
 * der.ts's, which the writer shares), over what varies per
 * certificate: identities of 1 to 3 000 bytes (every DER length form), times
 * from 1950 to 9999 (UTCTime and GeneralizedTime), serials of 1 to 20 bytes
 * and P-256, P-384 and RSA public keys.
 */
import { createHash, createPublicKey, generateKeyPairSync, verify } from 'node:crypto';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { children, hex, readTlv } from '../../src/pki/der.ts';
import { encodeTime, LeafTemplate, subjectKeyId, subjectName, type LeafFields } from '../../src/pki/leaf.ts';
import { makeCa, type TestCa } from './helpers.ts';

/** DER TLV, written the textbook way: short form below 128, else 0x80 | count, then big-endian bytes. */
function tlv(tag: number, ...parts: Uint8Array[]): Buffer {
  const value = Buffer.concat(parts);
  const n = value.length;
  const len: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) len.unshift(v % 256);
  return Buffer.concat([Buffer.from([tag]), Buffer.from(n < 0x80 ? [n] : [0x80 | len.length, ...len]), value]);
}

const FC = { seed: Number(process.env.FC_SEED ?? 20261201), numRuns: 200 };

function oracleTime(ms: number): Buffer {
  const iso = new Date(Math.floor(ms / 1000) * 1000).toISOString(); // YYYY-MM-DDTHH:MM:SS.000Z
  const digits = iso.slice(0, 19).replace(/[-T:]/g, '');
  const y = Number(iso.slice(0, 4));
  return y >= 1950 && y < 2050 ? tlv(0x17, Buffer.from(`${digits.slice(2)}Z`, 'latin1')) : tlv(0x18, Buffer.from(`${digits}Z`, 'latin1'));
}

/** The profile of leaf.ts's header, nested the plain way. */
function oracleTbs(issuerCertDer: Uint8Array, algId: Buffer, f: LeafFields): Buffer {
  const spki = readTlv(f.spki, 0, f.spki.length, 'spki');
  const bits = children(f.spki, spki, 'spki')[1]!;
  const ski = createHash('sha1').update(f.spki.subarray(bits.valueStart + 1, bits.end)).digest();
  return tlv(
    0x30,
    hex('a003020102'),
    tlv(0x02, f.serial),
    algId,
    subjectName(issuerCertDer),
    tlv(0x30, oracleTime(f.notBefore), oracleTime(f.notAfter)),
    hex('3000'),
    f.spki,
    tlv(
      0xa3,
      tlv(
        0x30,
        hex('300e0603551d0f0101ff0404030205a0'),
        hex('301d0603551d250416301406082b0601050507030106082b06010505070302'),
        hex('300c0603551d130101ff04023000'),
        tlv(0x30, hex('0603551d0e'), tlv(0x04, tlv(0x04, ski))),
        tlv(0x30, hex('0603551d23'), tlv(0x04, tlv(0x30, tlv(0x80, subjectKeyId(issuerCertDer))))),
        tlv(0x30, hex('0603551d110101ff'), tlv(0x04, tlv(0x30, tlv(0x86, Buffer.from(f.spiffeId, 'latin1'))))),
      ),
    ),
  );
}

const spkis = (['P-256', 'P-384'] as const)
  .map((namedCurve) => generateKeyPairSync('ec', { namedCurve }).publicKey.export({ type: 'spki', format: 'der' }))
  .concat([generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'der' })]);

const fields = fc.record({
  serial: fc.uint8Array({ minLength: 1, maxLength: 20 }).map((b) => Buffer.from(b)),
  notBefore: fc.integer({ min: Date.UTC(1950, 0, 1), max: Date.UTC(9999, 11, 31) }),
  lifetime: fc.integer({ min: 0, max: 200 * 365 * 86_400_000 }),
  spki: fc.constantFrom(...spkis),
  spiffeId: fc.oneof(fc.integer({ min: 1, max: 3000 }), fc.constantFrom(0x7f - 28, 0x80 - 28, 0xff - 28, 0x100 - 28)).map((n) => `spiffe://td/${'a'.repeat(n)}`),
});

describe('LeafTemplate one-pass writer', () => {
  let ca: TestCa;
  let t: LeafTemplate;
  beforeAll(async () => {
    ca = await makeCa();
    t = new LeafTemplate(ca.certDer, ca.material.keyPkcs8Der);
  });

  it('ok/tbs-equals-nested-tlv-oracle', () => {
    const algId = hex('300a06082a8648ce3d040302');
    fc.assert(
      fc.property(fields, (r) => {
        const f: LeafFields = { serial: r.serial, notBefore: r.notBefore, notAfter: Math.min(r.notBefore + r.lifetime, Date.UTC(9999, 11, 31, 23, 59, 59)), spki: r.spki, spiffeId: r.spiffeId };
        expect(t.tbs(f).equals(oracleTbs(ca.certDer, algId, f))).toBe(true);
      }),
      FC,
    );
  });

  it('ok/certificate-wraps-tbs-and-verifies', () => {
    const caPub = createPublicKey(ca.certPem);
    fc.assert(
      fc.property(fields, (r) => {
        const f: LeafFields = { serial: r.serial, notBefore: r.notBefore, notAfter: r.notBefore, spki: r.spki, spiffeId: r.spiffeId };
        const der = t.sign(f);
        const cert = readTlv(der, 0, der.length, 'cert');
        expect(cert.end).toBe(der.length);
        const [tbs, alg, sig] = children(der, cert, 'cert');
        expect(Buffer.from(der.subarray(tbs!.start, tbs!.end)).equals(oracleTbs(ca.certDer, hex('300a06082a8648ce3d040302'), f))).toBe(true);
        expect(Buffer.from(der.subarray(alg!.start, alg!.end)).toString('hex')).toBe('300a06082a8648ce3d040302');
        expect(der[sig!.valueStart]).toBe(0);
        expect(verify('sha256', der.subarray(tbs!.start, tbs!.end), caPub, der.subarray(sig!.valueStart + 1, sig!.end))).toBe(true);
      }),
      { ...FC, numRuns: 50 },
    );
  });

  it('ok/encodeTime-matches-oracle', () => {
    const time = fc.integer({ min: Date.UTC(1950, 0, 1), max: Date.UTC(9999, 11, 31, 23, 59, 59) });
    fc.assert(
      // in turns with a second time, so answers come from the cache of the last two seconds too
      fc.property(time, time, fc.integer({ min: 0, max: 999 }), (a, b, jitter) => {
        for (const ms of [a, b, a, a - (a % 1000) + jitter, b, a]) expect(encodeTime(ms).equals(oracleTime(ms))).toBe(true);
      }),
      { ...FC, numRuns: 2000 },
    );
  });
});
