/**
 * What the agent reads from certificates: serial, validity and the SPIFFE ID,
 * the latter parsed structurally from the SAN extension (security.md C7:
 * never from Node's `subjectAltName` string).
 */
import { X509Certificate } from 'node:crypto';
import { certAuthorityKeyId, certUriSans } from '../pki/cert-ext.ts';
import { derToPem, parsePem } from '../platform/pem.ts';

export interface LeafInfo {
  /** Hex, uppercase, as Node prints it. */
  serial: string;
  /** ms since epoch */
  notBefore: number;
  notAfter: number;
  /** URI SANs, in order (a SPIFFE leaf has exactly one). */
  uris: string[];
}

/**
 * Every CERTIFICATE block of a PEM text, each as its own PEM (64-column
 * lines, ending with a newline). Read with the one strict block parser
 * (src/platform/pem.ts); text between blocks (a bundle file's comments) and
 * blocks of other labels are skipped. A block that is not canonical base64
 * throws PemSyntaxError.
 */
export function splitPemCertificates(pem: string): string[] {
  return parsePem(pem, { outside: 'ignore' })
    .filter((b) => b.label === 'CERTIFICATE')
    .map((b) => derToPem(b.der));
}

/** URI SANs of a DER certificate, read from the extension's ASN.1. */
export function uriSansOf(der: Uint8Array): string[] {
  return certUriSans(der);
}

export function leafInfo(pemOrDer: string | Uint8Array): LeafInfo {
  const c = new X509Certificate(typeof pemOrDer === 'string' ? pemOrDer : Buffer.from(pemOrDer));
  return {
    serial: c.serialNumber,
    notBefore: Date.parse(c.validFrom),
    notAfter: Date.parse(c.validTo),
    uris: uriSansOf(c.raw),
  };
}

/** Earliest notAfter (ms) among the certificates of a bundle, or undefined if it holds none. */
export function bundleEarliestExpiry(bundlePem: string): number | undefined {
  let min: number | undefined;
  for (const b of splitPemCertificates(bundlePem)) {
    const t = Date.parse(new X509Certificate(b).validTo);
    if (min === undefined || t < min) min = t;
  }
  return min;
}

/** Hex authority key identifier of a certificate (lower case), or undefined without one. */
export function authorityKeyIdOf(pem: string): string | undefined {
  return certAuthorityKeyId(new X509Certificate(pem).raw);
}

/**
 * Whether `chainPem` (leaf first, then intermediates) verifies up to a root
 * of `bundlePem`: each certificate issued and signed by the next, the last
 * by a bundle root. Validity periods are not checked here.
 */
export function chainsTo(chainPem: string, bundlePem: string): boolean {
  const chain = splitPemCertificates(chainPem).map((p) => new X509Certificate(p));
  const roots = splitPemCertificates(bundlePem).map((p) => new X509Certificate(p));
  if (chain.length === 0) return false;
  for (let i = 0; i < chain.length; i++) {
    const cur = chain[i]!;
    if (roots.some((r) => cur.checkIssued(r) && cur.verify(r.publicKey))) return true;
    const next = chain[i + 1];
    if (!next || !(cur.checkIssued(next) && cur.verify(next.publicKey))) return false;
  }
  return false;
}
