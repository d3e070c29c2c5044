/**
 * The reference issuance path, built with @peculiar/x509 only (no code shared
 * with the fast path in src/pki/csr.ts, src/pki/leaf.ts and src/ca/issue.ts
 * beyond the IssuerMaterial/IssueRequest/IssueResult shapes). It is slow
 * (~100x) and asynchronous; it exists so tests can prove that the fast path
 * writes exactly the profile of protocols.md §3, and as readable
 * documentation of that profile. Never used on the hot path.
 *
 * Given the same serial, CSR and times, `issueReference` produces a
 * TBSCertificate byte-for-byte identical to `issueFromCsr`'s (test/pki).
 */
import { webcrypto } from 'node:crypto';
import { CastellanError } from '../../src/platform/errors.ts';
import { x509 } from '../../src/platform/x509.ts';
import type { IssueRequest, IssueResult, IssuerMaterial } from '../../src/ca/issue.ts';

const OID_SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const OID_CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

function signingParams(issuerCert: x509.X509Certificate): { importAlg: webcrypto.EcKeyImportParams | webcrypto.RsaHashedImportParams; signAlg: webcrypto.EcdsaParams | webcrypto.Algorithm } {
  const alg = issuerCert.publicKey.algorithm as { name: string; namedCurve?: string };
  if (alg.name === 'ECDSA' && alg.namedCurve === 'P-256') return { importAlg: { name: 'ECDSA', namedCurve: 'P-256' }, signAlg: { name: 'ECDSA', hash: 'SHA-256' } as webcrypto.EcdsaParams };
  if (alg.name === 'ECDSA' && alg.namedCurve === 'P-384') return { importAlg: { name: 'ECDSA', namedCurve: 'P-384' }, signAlg: { name: 'ECDSA', hash: 'SHA-384' } as webcrypto.EcdsaParams };
  if (alg.name === 'RSASSA-PKCS1-v1_5' || alg.name === 'RSA-PSS' || alg.name === 'RSA-OAEP') {
    return { importAlg: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }, signAlg: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } as webcrypto.Algorithm };
  }
  throw new CastellanError('FAILED_PRECONDITION', 'ca.key_type', 'issuer key must be ECDSA P-256/P-384 or RSA');
}

/** Options for tests: a fixed serial (hex, positive) instead of a random one. */
export interface ReferenceOptions {
  serialHex?: string;
}

/**
 * Same contract as issueFromCsr (src/ca/issue.ts), same errors, but every
 * step through @peculiar/x509 and WebCrypto.
 */
export async function issueReference(issuer: IssuerMaterial, req: IssueRequest, opts: ReferenceOptions = {}): Promise<IssueResult> {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(req.csrPem);
  } catch (e) {
    throw new CastellanError('INVALID_ARGUMENT', 'csr.malformed', 'malformed CSR', { cause: e });
  }
  if (!(await csr.verify())) throw new CastellanError('INVALID_ARGUMENT', 'csr.bad_signature', 'CSR signature does not verify with its public key');
  // Look extensions up by OID: the class-based lookup misses extensions of a parsed CSR.
  const sans = csr.extensions.filter((e) => e.type === '2.5.29.17') as x509.SubjectAlternativeNameExtension[];
  if (sans.length > 1) throw new CastellanError('INVALID_ARGUMENT', 'csr.malformed', 'malformed CSR: duplicate extension 2.5.29.17');
  const uris = sans[0] ? sans[0].names.items.filter((n) => n.type === 'url').map((n) => n.value) : [];
  if (uris.length > 1 || (uris.length === 1 && uris[0] !== req.spiffeId)) {
    throw new CastellanError('PERMISSION_DENIED', 'csr.identity_mismatch', 'CSR asks for an identity other than the caller\'s');
  }
  if (req.now < issuer.notBefore || req.now >= issuer.notAfter) {
    throw new CastellanError('UNAVAILABLE', 'issuer.expired', 'the signing certificate is expired or not yet valid');
  }

  const issuerCert = new x509.X509Certificate(issuer.certDer);
  const issuerSki = issuerCert.extensions.find((e) => e.type === '2.5.29.14') as x509.SubjectKeyIdentifierExtension | undefined;
  if (!issuerSki) throw new CastellanError('FAILED_PRECONDITION', 'ca.no_ski', 'issuer certificate has no subject key identifier');
  const { importAlg, signAlg } = signingParams(issuerCert);
  const signingKey = await webcrypto.subtle.importKey('pkcs8', issuer.keyPkcs8Der, importAlg, false, ['sign']);

  const seconds = (ms: number) => new Date(Math.floor(ms / 1000) * 1000);
  const notBefore = seconds(Math.max(req.now - 60_000, issuer.notBefore));
  const notAfter = seconds(Math.min(req.now + req.ttlMs, issuer.notAfter));
  const serialHex = opts.serialHex ?? randomPositiveSerialHex();
  const leafSki = await x509.SubjectKeyIdentifierExtension.create(csr.publicKey);

  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serialHex,
    issuer: new x509.Name(issuerCert.subjectName.toArrayBuffer()),
    notBefore,
    notAfter,
    publicKey: csr.publicKey,
    signingKey,
    signingAlgorithm: signAlg,
    extensions: [
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([OID_SERVER_AUTH, OID_CLIENT_AUTH], false),
      new x509.BasicConstraintsExtension(false, undefined, true),
      leafSki,
      new x509.AuthorityKeyIdentifierExtension(issuerSki.keyId, false),
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: req.spiffeId }], true),
    ],
  });
  const der = new Uint8Array(cert.rawData);
  return {
    certPem: cert.toString('pem') + '\n',
    certDer: der,
    serialHex: cert.serialNumber,
    notBefore: notBefore.getTime(),
    notAfter: notAfter.getTime(),
    issuerId: issuer.id,
  };
}

function randomPositiveSerialHex(): string {
  const b = webcrypto.getRandomValues(new Uint8Array(16));
  b[0] = (b[0]! & 0x3f) | 0x40;
  return Buffer.from(b).toString('hex');
}
