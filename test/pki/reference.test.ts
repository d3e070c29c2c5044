/**
 * The fast path (src/ca/issue.ts over src/pki/leaf.ts) and the reference path
 * (test/support/reference.ts, @peculiar/x509 only) must write the same
 * certificate: with the same serial, CSR and clock, the TBSCertificate bytes
 * are identical, so the certificates differ only in the signature value.
 * With independent serials they differ only in serial and signature.
 */
import { describe, expect, it } from 'vitest';
import { issueFromCsr, type IssueRequest } from '../../src/ca/issue.ts';
import { issueReference } from '../support/reference.ts';
import { x509 } from '../../src/platform/x509.ts';
import { makeCa, opensslCsr, peculiarCsr, type CaKeyType, type TestCa } from './helpers.ts';

const ID = 'spiffe://cluster.local/ns/default/sa/web';

/** The three top-level parts of a certificate: [tbs, sigAlg, sigValue] as raw DER slices. */
function parts(der: Uint8Array): Buffer[] {
  const b = Buffer.from(der);
  const out: Buffer[] = [];
  const lenAt = (p: number): [number, number] => {
    const l = b[p + 1]!;
    if (l < 0x80) return [l, 2];
    const n = l & 0x7f;
    let v = 0;
    for (let i = 0; i < n; i++) v = v * 256 + b[p + 2 + i]!;
    return [v, 2 + n];
  };
  const [, hdr] = lenAt(0);
  let p = hdr;
  while (p < b.length) {
    const [l, hh] = lenAt(p);
    out.push(b.subarray(p, p + hh + l));
    p += hh + l;
  }
  return out;
}

describe('fast path vs @peculiar/x509 reference path', () => {
  const cases: { name: string; keyType: CaKeyType; intermediate: boolean; csr: 'openssl' | 'peculiar' | 'peculiar-rsa' | 'openssl-p384' }[] = [
    { name: 'ok/p256-root/openssl-csr', keyType: 'ec-p256', intermediate: false, csr: 'openssl' },
    { name: 'ok/p256-intermediate/peculiar-csr', keyType: 'ec-p256', intermediate: true, csr: 'peculiar' },
    { name: 'ok/p384-root/openssl-p384-csr', keyType: 'ec-p384', intermediate: false, csr: 'openssl-p384' },
    { name: 'ok/rsa2048-intermediate/peculiar-rsa-csr', keyType: 'rsa-2048', intermediate: true, csr: 'peculiar-rsa' },
  ];
  const cas = new Map<string, TestCa>();
  async function issuerFor(keyType: CaKeyType, intermediate: boolean): Promise<TestCa> {
    const k = `${keyType}/${intermediate}`;
    let ca = cas.get(k);
    if (!ca) {
      const root = await makeCa({ keyType });
      ca = intermediate ? await makeCa({ keyType, parent: root }) : root;
      cas.set(k, ca);
    }
    return ca;
  }

  for (const c of cases) {
    it(c.name, async () => {
      const ca = await issuerFor(c.keyType, c.intermediate);
      const csr =
        c.csr === 'openssl'
          ? opensslCsr({ uris: [ID] })
          : c.csr === 'openssl-p384'
            ? opensslCsr({ keyArgs: ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384'] })
            : await peculiarCsr({ uris: [ID], rsa: c.csr === 'peculiar-rsa' });
      const req: IssueRequest = { csrPem: csr.csrPem, spiffeId: ID, ttlMs: 3600_000, now: Date.now() };
      const fast = issueFromCsr(ca.material, req);
      const ref = await issueReference(ca.material, req, { serialHex: fast.serialHex });
      const [fTbs, fAlg, fSig] = parts(fast.certDer);
      const [rTbs, rAlg, rSig] = parts(ref.certDer);
      expect(fTbs!.toString('hex')).toBe(rTbs!.toString('hex'));
      expect(fAlg!.toString('hex')).toBe(rAlg!.toString('hex'));
      // Both signatures verify over the same TBS with the issuer key (different values: ECDSA is randomised).
      const issuerCert = new x509.X509Certificate(ca.certDer);
      for (const der of [fast.certDer, ref.certDer]) expect(await new x509.X509Certificate(der).verify({ publicKey: issuerCert.publicKey, signatureOnly: true })).toBe(true);
      if (c.keyType !== 'rsa-2048') expect(fSig!.equals(rSig!)).toBe(false);
      expect([fast.notBefore, fast.notAfter]).toEqual([ref.notBefore, ref.notAfter]);

      // Independent serials: everything but serial and signature equal.
      const ref2 = await issueReference(ca.material, req);
      expect(ref2.serialHex).not.toBe(fast.serialHex);
      const a = new x509.X509Certificate(fast.certDer);
      const b = new x509.X509Certificate(ref2.certDer);
      expect(a.serialNumber).toHaveLength(32);
      expect(b.serialNumber).toHaveLength(32);
      const withoutSerial = (tbs: Buffer) => tbs.toString('hex').replace(/0210[0-9a-f]{32}/, '');
      expect(withoutSerial(parts(fast.certDer)[0]!)).toBe(withoutSerial(parts(ref2.certDer)[0]!));
      expect(a.extensions.map((e) => e.rawData)).toEqual(b.extensions.map((e) => e.rawData));
    });
  }

  it('fail/identity_mismatch: both paths refuse a CSR naming another identity', async () => {
    const ca = await issuerFor('ec-p256', false);
    const csr = await peculiarCsr({ uris: ['spiffe://cluster.local/ns/other/sa/admin'] });
    const req: IssueRequest = { csrPem: csr.csrPem, spiffeId: ID, ttlMs: 3600_000, now: Date.now() };
    expect(() => issueFromCsr(ca.material, req)).toThrow(expect.objectContaining({ kind: 'PERMISSION_DENIED', code: 'csr.identity_mismatch' }));
    await expect(issueReference(ca.material, req)).rejects.toMatchObject({ kind: 'PERMISSION_DENIED', code: 'csr.identity_mismatch' });
  });
});
