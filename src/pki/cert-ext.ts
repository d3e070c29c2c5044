/**
 * Reading a certificate's extensions structurally, with the strict DER
 * reader of src/pki/der.ts: the URI SANs (security.md C7: from the ASN.1,
 * never from Node's `subjectAltName` string) and the authority key
 * identifier. Node's X509Certificate parses the rest; it does not expose
 * these two as structures.
 *
 * A defect is a CastellanError('INVALID_ARGUMENT', 'cert.malformed').
 */
import { CastellanError, isCastellanError } from '../platform/errors.ts';
import { children, expectTag, oidString, readTlv, type Tlv } from './der.ts';

const OID_SAN = '2.5.29.17';
const OID_AKI = '2.5.29.35';

function malformedCert(what: string, cause?: unknown): CastellanError {
  return new CastellanError('INVALID_ARGUMENT', 'cert.malformed', `malformed certificate: ${what}`, cause === undefined ? undefined : { cause });
}

/** der.ts names its defects as a CSR's: the same defect, named as a certificate's. */
function asCertificate<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (isCastellanError(e) && e.code === 'csr.malformed') throw malformedCert(e.message.replace(/^malformed CSR: /, ''), e);
    throw e;
  }
}

/** The content of an extension's extnValue OCTET STRING, or undefined without the extension; a repeated extension is refused (RFC 5280 §4.2). */
function extensionValue(der: Uint8Array, oid: string): Tlv | undefined {
  const cert = expectTag(readTlv(der, 0, der.length, 'certificate'), 0x30, 'certificate');
  if (cert.end !== der.length) throw malformedCert('trailing bytes after the certificate');
  const tbs = expectTag(children(der, cert, 'certificate')[0]!, 0x30, 'tbsCertificate');
  const exts = children(der, tbs, 'tbsCertificate').find((p) => p.tag === 0xa3);
  if (!exts) return undefined;
  const list = children(der, exts, 'extensions');
  if (list.length !== 1) throw malformedCert('extensions: expected one SEQUENCE');
  let found: Tlv | undefined;
  for (const ext of children(der, expectTag(list[0]!, 0x30, 'extensions'), 'extensions', 64)) {
    const f = children(der, expectTag(ext, 0x30, 'extension'), 'extension');
    if (f.length < 2 || f.length > 3) throw malformedCert('extension: expected 2 or 3 elements');
    if (oidString(der, f[0]!, 'extension id') !== oid) continue;
    if (found) throw malformedCert(`extension ${oid} appears twice`);
    found = expectTag(f[f.length - 1]!, 0x04, 'extension value');
  }
  if (!found) return undefined;
  const inner = readTlv(der, found.valueStart, found.end, `extension ${oid}`);
  if (inner.end !== found.end) throw malformedCert(`extension ${oid}: trailing bytes`);
  return inner;
}

/** URI SANs of a DER certificate, in order ([] without a SAN extension). */
export function certUriSans(der: Uint8Array): string[] {
  return asCertificate(() => {
    const names = extensionValue(der, OID_SAN);
    if (!names) return [];
    const uris: string[] = [];
    for (const gn of children(der, expectTag(names, 0x30, 'subjectAltName'), 'subjectAltName', 256)) {
      if (gn.tag !== 0x86) continue; // uniformResourceIdentifier [6] IMPLICIT IA5String
      const bytes = der.subarray(gn.valueStart, gn.end);
      if (bytes.some((b) => b > 0x7f)) throw malformedCert('subjectAltName: URI is not IA5 (ASCII)');
      uris.push(Buffer.from(bytes).toString('latin1'));
    }
    return uris;
  });
}

/** keyIdentifier of the authority key identifier extension, lower-case hex, or undefined without one. */
export function certAuthorityKeyId(der: Uint8Array): string | undefined {
  return asCertificate(() => {
    const aki = extensionValue(der, OID_AKI);
    if (!aki) return undefined;
    const keyId = children(der, expectTag(aki, 0x30, 'authorityKeyIdentifier'), 'authorityKeyIdentifier').find((p) => p.tag === 0x80);
    return keyId ? Buffer.from(der.subarray(keyId.valueStart, keyId.end)).toString('hex') : undefined;
  });
}
