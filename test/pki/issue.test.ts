/**
 * issueFromCsr: the leaf profile (protocols.md §3), lifetimes (L2, L3), the
 * identity rule (C1), ignored CSR requests (C2), and acceptance by strict
 * third-party verifiers (C9) for root- and intermediate-signed leaves.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueFromCsr, type IssueRequest } from '../../src/ca/issue.ts';
import { CastellanError } from '../../src/platform/errors.ts';
import { x509 } from '../../src/platform/x509.ts';
import { craftCsr, ecKey, expectedSki, ext, extReq, h, makeCa, oid, opensslCsr, peculiarCsr, pem, seq, t, uriSan, type TestCa } from './helpers.ts';
import { cleanupVerifiers, goVerify, opensslVerify, pyVerify } from './verifiers.ts';
import { describeWith, peers } from '../support/peers.ts';

const ID = 'spiffe://cluster.local/ns/default/sa/web';
const HOUR = 3600_000;

let root: TestCa;
let inter: TestCa;
let rootP384: TestCa;
let rootRsa: TestCa;
let interRsaUnderP384: TestCa;

beforeAll(async () => {
  root = await makeCa();
  inter = await makeCa({ parent: root });
  rootP384 = await makeCa({ keyType: 'ec-p384' });
  rootRsa = await makeCa({ keyType: 'rsa-2048' });
  interRsaUnderP384 = await makeCa({ keyType: 'rsa-2048', parent: rootP384 });
}, 60_000);
afterAll(() => cleanupVerifiers());

function req(csrPem: string, o: Partial<IssueRequest> = {}): IssueRequest {
  return { csrPem, spiffeId: ID, ttlMs: HOUR, now: Date.now(), ...o };
}

function errorOf(fn: () => unknown): CastellanError {
  try {
    fn();
  } catch (e) {
    if (e instanceof CastellanError) return e;
    throw e;
  }
  throw new Error('expected a CastellanError');
}

describeWith([peers.openssl, peers.go, peers.pyCryptography], 'third-party verifiers accept issued leaves (C9)', () => {
  const cases = [
    { name: 'ok/p256-root-signed', ca: () => root, roots: () => root.certPem },
    { name: 'ok/p256-intermediate-signed', ca: () => inter, roots: () => root.certPem },
    { name: 'ok/p384-root-signed', ca: () => rootP384, roots: () => rootP384.certPem },
    { name: 'ok/rsa2048-root-signed', ca: () => rootRsa, roots: () => rootRsa.certPem },
    { name: 'ok/rsa2048-intermediate-under-p384-root', ca: () => interRsaUnderP384, roots: () => rootP384.certPem },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      for (const csr of [opensslCsr({ uris: [ID] }).csrPem, (await peculiarCsr()).csrPem, opensslCsr({ keyArgs: ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'] }).csrPem]) {
        const leaf = issueFromCsr(c.ca().material, req(csr));
        const chain = [leaf.certPem, ...c.ca().chainPem];
        expect(opensslVerify(c.roots(), chain, 'sslclient')).toMatch(/: OK/);
        expect(opensslVerify(c.roots(), chain, 'sslserver')).toMatch(/: OK/);
        expect(goVerify(c.roots(), chain, ID)).toBe('ok\n');
        const py = pyVerify(c.roots(), chain);
        expect(Number(py.version.split('.')[0])).toBeGreaterThanOrEqual(42);
        expect(py.client).toBe('ok');
        expect(py.client_sans).toEqual([ID]);
        expect(py.client_chain_len).toBe(chain.length + 1);
        // The server verifier needs a DNS/IP name to match; an SVID holds only its URI,
        // so the name is the one (and only) thing it may complain about.
        expect(py.server).toMatch(/subjectAltName|SAN|name/i);
        expect(py.server).not.toMatch(/extension|key usage|basicConstraints|signature|expired|issuer/i);
      }
    }, 60_000);
  }

  it('fail/verifiers-reject-a-leaf-from-another-root (the checks can fail)', async () => {
    const other = await makeCa();
    const leaf = issueFromCsr(other.material, req(opensslCsr().csrPem));
    expect(() => opensslVerify(root.certPem, [leaf.certPem], 'sslclient')).toThrow(/openssl failed/);
    expect(() => goVerify(root.certPem, [leaf.certPem], ID)).toThrow(/go-verify failed|certificate signed by unknown authority/);
    expect(pyVerify(root.certPem, [leaf.certPem]).client).not.toBe('ok');
    expect(() => goVerify(other.certPem, [leaf.certPem], 'spiffe://cluster.local/ns/default/sa/other')).toThrow(/URI SAN/);
  });
});

describe('leaf profile (protocols.md §3)', () => {
  it('ok/exact-fields', async () => {
    const csr = opensslCsr({ uris: [ID], subj: '/CN=evil/O=evil' });
    const now = Math.floor(Date.now() / 1000) * 1000 + 750;
    const iso = (ms: number) => new Date(ms).toISOString();
    const r = issueFromCsr(inter.material, req(csr.csrPem, { now, ttlMs: 2 * HOUR }));
    const leaf = new x509.X509Certificate(r.certDer);
    const issuerCert = new x509.X509Certificate(inter.certDer);
    expect(Buffer.from(leaf.rawData).equals(Buffer.from(r.certDer))).toBe(true);
    expect(r.certPem).toBe(leaf.toString('pem') + '\n');
    expect(leaf.subject).toBe('');
    expect(Buffer.from(leaf.subjectName.toArrayBuffer()).toString('hex')).toBe('3000');
    expect(Buffer.from(leaf.issuerName.toArrayBuffer()).equals(Buffer.from(issuerCert.subjectName.toArrayBuffer()))).toBe(true);
    expect(leaf.serialNumber).toBe(r.serialHex);
    expect(r.serialHex).toMatch(/^[4-7][0-9a-f]{31}$/);
    expect(leaf.signatureAlgorithm).toMatchObject({ name: 'ECDSA', hash: { name: 'SHA-256' } });
    expect(leaf.notBefore.toISOString()).toBe(iso(now - 750 - 60_000));
    expect(leaf.notAfter.toISOString()).toBe(iso(now - 750 + 2 * HOUR));
    expect([r.notBefore, r.notAfter]).toEqual([leaf.notBefore.getTime(), leaf.notAfter.getTime()]);
    expect(r.issuerId).toBe(inter.material.id);
    // Extensions: exactly these, in this order, with this criticality.
    expect(leaf.extensions.map((e) => [e.type, e.critical])).toEqual([
      ['2.5.29.15', true],
      ['2.5.29.37', false],
      ['2.5.29.19', true],
      ['2.5.29.14', false],
      ['2.5.29.35', false],
      ['2.5.29.17', true],
    ]);
    const [ku, eku, bc, ski, aki, san] = leaf.extensions as [x509.KeyUsagesExtension, x509.ExtendedKeyUsageExtension, x509.BasicConstraintsExtension, x509.SubjectKeyIdentifierExtension, x509.AuthorityKeyIdentifierExtension, x509.SubjectAlternativeNameExtension];
    expect(Buffer.from(ku.value).toString('hex')).toBe('030205a0'); // digitalSignature + keyEncipherment
    expect(Buffer.from(eku.value).toString('hex')).toBe('301406082b0601050507030106082b06010505070302'); // serverAuth, clientAuth
    expect(Buffer.from(bc.value).toString('hex')).toBe('3000'); // cA absent = FALSE, no pathLen
    const spki = Buffer.from(leaf.publicKey.rawData);
    expect(ski.keyId).toBe(expectedSki(spki));
    expect(aki.keyId).toBe(inter.material.id);
    expect(Buffer.from(san.value).toString('hex')).toBe(Buffer.from(seq(t(0x86, Buffer.from(ID)))).toString('hex'));
    // The SPKI is the CSR's, verbatim.
    const csrObj = new x509.Pkcs10CertificateRequest(csr.csrPem);
    expect(spki.equals(Buffer.from(csrObj.publicKey.rawData))).toBe(true);
    expect(await leaf.verify({ publicKey: issuerCert.publicKey, signatureOnly: true })).toBe(true);
  });

  it('ok/signature-algorithm-follows-issuer-key', () => {
    const csr = opensslCsr().csrPem;
    const alg = (ca: TestCa) => new x509.X509Certificate(issueFromCsr(ca.material, req(csr)).certDer).signatureAlgorithm as { name: string; hash: { name: string } };
    expect(alg(root)).toMatchObject({ name: 'ECDSA', hash: { name: 'SHA-256' } });
    expect(alg(rootP384)).toMatchObject({ name: 'ECDSA', hash: { name: 'SHA-384' } });
    expect(alg(rootRsa)).toMatchObject({ name: 'RSASSA-PKCS1-v1_5', hash: { name: 'SHA-256' } });
  });

  it('ok/csr-requests-are-ignored (C2: CA:true, keyCertSign, nameConstraints, extra EKUs, DNS SANs, subject)', () => {
    const key = ecKey();
    const attrs = extReq(
      ext('2.5.29.19', seq(h('0101ff')), true), // basicConstraints CA:true
      ext('2.5.29.15', h('03020186'), true), // keyUsage digitalSignature, keyCertSign, cRLSign
      ext('2.5.29.30', seq(t(0xa0, seq(t(0x82, Buffer.from('example.com'))))), true), // nameConstraints
      ext('2.5.29.37', seq(oid('1.3.6.1.5.5.7.3.3'), oid('2.5.29.37.0'))), // codeSigning, anyExtendedKeyUsage
      ext('2.5.29.17', seq(t(0x82, Buffer.from('admin.example.com')), t(0x86, Buffer.from(ID)))),
      ext('1.2.3.4.5', h('0500'), true), // unknown critical extension
    );
    const csrPem = pem(craftCsr({ key, attrs }));
    const leaf = new x509.X509Certificate(issueFromCsr(root.material, req(csrPem)).certDer);
    expect(leaf.extensions.map((e) => e.type)).toEqual(['2.5.29.15', '2.5.29.37', '2.5.29.19', '2.5.29.14', '2.5.29.35', '2.5.29.17']);
    expect(Buffer.from(leaf.extensions[0]!.value).toString('hex')).toBe('030205a0');
    expect(Buffer.from(leaf.extensions[1]!.value).toString('hex')).toBe('301406082b0601050507030106082b06010505070302');
    expect(Buffer.from(leaf.extensions[2]!.value).toString('hex')).toBe('3000');
    expect(Buffer.from(leaf.extensions[5]!.value).toString('hex')).toBe(Buffer.from(seq(t(0x86, Buffer.from(ID)))).toString('hex'));
    expect(leaf.subject).toBe('');
  });

  it('ok/generalized-time-from-2050', async () => {
    const farRoot = await makeCa({ notBefore: new Date('2049-01-01T00:00:00Z'), notAfter: new Date('2060-01-01T00:00:00Z') });
    const now = Date.parse('2049-12-31T23:30:00Z');
    const r = issueFromCsr(farRoot.material, req(opensslCsr().csrPem, { now, ttlMs: HOUR }));
    const der = Buffer.from(r.certDer).toString('hex');
    expect(der).toContain(`170d${Buffer.from('491231232900Z').toString('hex')}`); // notBefore: UTCTime
    expect(der).toContain(`180f${Buffer.from('20500101003000Z').toString('hex')}`); // notAfter: GeneralizedTime
    expect(new x509.X509Certificate(r.certDer).notAfter.toISOString()).toBe('2050-01-01T00:30:00.000Z');
  });
});

describe('lifetimes (L2, L3)', () => {
  it('ok/backdated-60s-never-in-the-future', () => {
    const now = Date.now();
    const r = issueFromCsr(root.material, req(opensslCsr().csrPem, { now }));
    expect(r.notBefore).toBe(Math.floor((now - 60_000) / 1000) * 1000);
    expect(r.notBefore).toBeLessThanOrEqual(now);
    expect(r.notAfter).toBe(Math.floor((now + HOUR) / 1000) * 1000);
  });
  it('ok/notBefore-never-before-issuer-notBefore', async () => {
    const fresh = await makeCa({ notBefore: new Date(Math.floor(Date.now() / 1000) * 1000 - 10_000) });
    const r = issueFromCsr(fresh.material, req(opensslCsr().csrPem));
    expect(r.notBefore).toBe(fresh.material.notBefore);
    expect(opensslVerify(fresh.certPem, [r.certPem], 'sslclient')).toMatch(/OK/);
  });
  it('ok/notAfter-capped-at-issuer-notAfter', async () => {
    const short = await makeCa({ notAfter: new Date(Math.floor(Date.now() / 1000) * 1000 + 30 * 60_000) });
    const r = issueFromCsr(short.material, req(opensslCsr().csrPem, { ttlMs: 24 * HOUR }));
    expect(r.notAfter).toBe(short.material.notAfter);
    expect(new x509.X509Certificate(r.certDer).notAfter.getTime()).toBeLessThanOrEqual(short.material.notAfter);
  });
  it('fail/issuer-expired', () => {
    const e = errorOf(() => issueFromCsr(root.material, req(opensslCsr().csrPem, { now: root.material.notAfter })));
    expect([e.kind, e.code]).toEqual(['UNAVAILABLE', 'issuer.expired']);
  });
  it('fail/issuer-not-yet-valid', () => {
    const e = errorOf(() => issueFromCsr(root.material, req(opensslCsr().csrPem, { now: root.material.notBefore - 1 })));
    expect([e.kind, e.code]).toEqual(['UNAVAILABLE', 'issuer.expired']);
  });
});

describe('identity (C1): the CSR may ask for nothing but the caller\'s identity', () => {
  const cases: { name: string; uris: string[]; kind?: string }[] = [
    { name: 'ok/no-uri-san', uris: [] },
    { name: 'ok/own-identity', uris: [ID] },
    { name: 'fail/identity_mismatch-other-sa', uris: ['spiffe://cluster.local/ns/default/sa/admin'], kind: 'PERMISSION_DENIED' },
    { name: 'fail/identity_mismatch-other-namespace', uris: ['spiffe://cluster.local/ns/kube-system/sa/web'], kind: 'PERMISSION_DENIED' },
    { name: 'fail/identity_mismatch-case', uris: ['spiffe://cluster.local/ns/default/sa/Web'], kind: 'PERMISSION_DENIED' },
    { name: 'fail/identity_mismatch-two-uris', uris: [ID, 'spiffe://cluster.local/ns/default/sa/admin'], kind: 'PERMISSION_DENIED' },
    { name: 'fail/identity_mismatch-two-equal-uris', uris: [ID, ID], kind: 'PERMISSION_DENIED' },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const csrPem = pem(craftCsr({ key: ecKey(), attrs: c.uris.length ? extReq(uriSan(...c.uris)) : undefined }));
      if (!c.kind) {
        const leaf = new x509.X509Certificate(issueFromCsr(root.material, req(csrPem)).certDer);
        const san = leaf.extensions.find((e) => e.type === '2.5.29.17') as x509.SubjectAlternativeNameExtension;
        expect(san.names.items.map((n) => [n.type, n.value])).toEqual([['url', ID]]);
        return;
      }
      const e = errorOf(() => issueFromCsr(root.material, req(csrPem)));
      expect([e.kind, e.code]).toEqual([c.kind, 'csr.identity_mismatch']);
      expect(e.message).not.toContain('sa/admin');
    });
  }
  it('fail/invalid-spiffe-id-from-caller', () => {
    for (const bad of ['spiffe://cluster.local', 'https://cluster.local/ns/a/sa/b', 'spiffe://Cluster.local/ns/a/sa/b', 'spiffe://cluster.local/ns/a/sa/b/', 'spiffe://cluster.local/ns/a/sa/é']) {
      const e = errorOf(() => issueFromCsr(root.material, req(opensslCsr().csrPem, { spiffeId: bad })));
      expect([e.kind, e.code]).toEqual(['INVALID_ARGUMENT', 'spiffe.invalid_id']);
    }
  });
});

describe('issuer template cache', () => {
  it('ok/same-key-reissued-ca-cert-is-not-served-from-a-stale-template', async () => {
    // Same key (so same SKI/id), new subject: the leaf must name the new subject.
    const a = root;
    const renamed = await x509.X509CertificateGenerator.createSelfSigned({
      name: 'O=cluster.local, CN=Renamed Root',
      keys: a.keys,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
      notBefore: new Date(Date.now() - HOUR),
      notAfter: new Date(Date.now() + 100 * 24 * HOUR),
      extensions: [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true), await x509.SubjectKeyIdentifierExtension.create(a.keys.publicKey)],
    });
    const material = { ...a.material, certDer: new Uint8Array(renamed.rawData) };
    expect(material.id).toBe(a.material.id);
    const csr = opensslCsr().csrPem;
    const first = new x509.X509Certificate(issueFromCsr(a.material, req(csr)).certDer);
    const second = new x509.X509Certificate(issueFromCsr(material, req(csr)).certDer);
    expect(first.issuer).toContain('Castellan Test Root');
    expect(second.issuer).toContain('Renamed Root');
    expect(opensslVerify(renamed.toString('pem') + '\n', [second.toString('pem') + '\n'], 'sslclient')).toMatch(/OK/);
  });
});
