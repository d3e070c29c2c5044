/**
 * PKCS#10 CSR parsing and proof of possession, on the hot path.
 *
 * Order of checks: PEM framing → DER structure → key policy → signature.
 * Only the public key leaves this module as something that will be signed;
 * the URI SANs are returned so the caller can refuse a CSR that asks for an
 * identity other than the authenticated one. Nothing else from the CSR is
 * ever used.
 */
import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import { CastellanError } from '../platform/errors.ts';
import { parsePem, PemSyntaxError, type PemBlock } from '../platform/pem.ts';
import { bytesEqual, children, expectTag, hex, malformed, oidString, readTlv, validateTree, type Tlv } from './der.ts';

export interface CsrInfo {
  /** DER SubjectPublicKeyInfo of the CSR key, verbatim. */
  readonly spki: Uint8Array;
  readonly keyType: 'ec-p256' | 'ec-p384' | 'rsa';
  readonly keyBits: number;
  /** URI SANs requested in the CSR's extensionRequest (informational; never trusted). */
  readonly uriSans: readonly string[];
}

/** Largest CSR PEM accepted (a P-256 CSR is ~500 bytes, RSA-4096 ~1.7 KB). */
export const MAX_CSR_PEM_BYTES = 16 * 1024;

const OID_EC_PUBLIC_KEY = '1.2.840.10045.2.1';
const OID_RSA = '1.2.840.113549.1.1.1';
const OID_P256 = '1.2.840.10045.3.1.7';
const OID_P384 = '1.3.132.0.34';
const OID_EXTENSION_REQUEST = '1.2.840.113549.1.9.14';
const OID_SAN = '2.5.29.17';
const SIG_ALGS: Record<string, { hash: string; key: 'ec' | 'rsa' }> = {
  '1.2.840.10045.4.3.2': { hash: 'sha256', key: 'ec' },
  '1.2.840.10045.4.3.3': { hash: 'sha384', key: 'ec' },
  '1.2.840.10045.4.3.4': { hash: 'sha512', key: 'ec' },
  '1.2.840.113549.1.1.11': { hash: 'sha256', key: 'rsa' },
  '1.2.840.113549.1.1.12': { hash: 'sha384', key: 'rsa' },
  '1.2.840.113549.1.1.13': { hash: 'sha512', key: 'rsa' },
};
const NULL = hex('0500');
const VERSION_0 = hex('020100');
const RSA_E_65537 = hex('0203010001');

function keyPolicy(msg: string): CastellanError {
  return new CastellanError('INVALID_ARGUMENT', 'csr.key_policy', `CSR key refused: ${msg}`);
}

/**
 * Decodes exactly one PEM "CERTIFICATE REQUEST" block to DER, through the
 * one strict PEM parser (src/platform/pem.ts: canonical base64, so one DER
 * has one PEM body; only whitespace around the block).
 */
export function csrPemToDer(pem: string): Buffer {
  if (typeof pem !== 'string') throw malformed('not text');
  if (pem.length > MAX_CSR_PEM_BYTES) throw malformed(`larger than ${MAX_CSR_PEM_BYTES} bytes`);
  let blocks: PemBlock[] | undefined;
  try {
    blocks = parsePem(pem);
  } catch (e) {
    if (!(e instanceof PemSyntaxError)) throw e;
    if (e.problem === 'base64') throw malformed('invalid base64');
  }
  if (blocks?.length !== 1 || blocks[0]!.label !== 'CERTIFICATE REQUEST') {
    const n = (pem.match(/-----BEGIN /g) ?? []).length;
    throw malformed(n > 1 ? 'more than one PEM block' : 'expected one PEM block labelled CERTIFICATE REQUEST');
  }
  return blocks[0]!.der;
}

interface ParsedKey {
  /** undefined when the import was skipped (shape check only) */
  key: KeyObject | undefined;
  keyType: CsrInfo['keyType'];
  keyBits: number;
}

function parseSpki(buf: Uint8Array, spki: Tlv, importKey: boolean): ParsedKey {
  const [alg, bits, ...rest] = children(buf, expectTag(spki, 0x30, 'public key info'), 'public key info');
  if (!alg || !bits || rest.length) throw malformed('public key info must have two elements');
  const algParts = children(buf, expectTag(alg, 0x30, 'public key algorithm'), 'public key algorithm');
  const oid = oidString(buf, algParts[0] ?? malformedTlv('public key algorithm'), 'public key algorithm');
  expectTag(bits, 0x03, 'public key');
  if (bits.end - bits.valueStart < 2 || buf[bits.valueStart] !== 0) throw malformed('public key bit string is empty or has unused bits');
  const point = buf.subarray(bits.valueStart + 1, bits.end);
  if (oid === OID_EC_PUBLIC_KEY) {
    const curveTlv = algParts[1];
    if (!curveTlv || algParts.length !== 2 || curveTlv.tag !== 0x06) throw keyPolicy('EC key without a named curve');
    const curve = oidString(buf, curveTlv, 'EC curve');
    const size = curve === OID_P256 ? 32 : curve === OID_P384 ? 48 : 0;
    if (!size) throw keyPolicy(`EC curve ${curve} is not allowed (use P-256 or P-384)`);
    if (point.length !== 1 + 2 * size || point[0] !== 0x04) throw keyPolicy('EC public key must be an uncompressed point');
    let key: KeyObject | undefined;
    try {
      if (importKey) key = importSpki(buf, spki);
    } catch {
      throw keyPolicy('EC public key is not a point on the curve');
    }
    return { key, keyType: size === 32 ? 'ec-p256' : 'ec-p384', keyBits: size * 8 };
  }
  if (oid === OID_RSA) {
    if (algParts.length !== 2 || !bytesEqual(buf, algParts[1]!, NULL)) throw malformed('RSA key algorithm parameters must be NULL');
    const rsa = readTlv(buf, bits.valueStart + 1, bits.end, 'RSA public key');
    if (rsa.end !== bits.end) throw malformed('RSA public key has trailing bytes');
    const [n, e, ...more] = children(buf, expectTag(rsa, 0x30, 'RSA public key'), 'RSA public key');
    if (!n || !e || more.length) throw malformed('RSA public key must have a modulus and an exponent');
    expectTag(n, 0x02, 'RSA modulus');
    expectTag(e, 0x02, 'RSA exponent');
    if (n.end - n.valueStart < 2 || buf[n.valueStart]! >= 0x80) throw malformed('RSA modulus must be a positive integer');
    if (buf[n.valueStart] === 0 && buf[n.valueStart + 1]! < 0x80) throw malformed('RSA modulus not minimally encoded');
    let nStart = n.valueStart;
    if (buf[nStart] === 0) nStart++;
    const nBytes = n.end - nStart;
    const keyBits = nBytes * 8 - Math.clz32(buf[nStart]!) + 24;
    if (keyBits < 2048 || keyBits > 4096) throw keyPolicy(`RSA key of ${keyBits} bits (allowed: 2048 to 4096)`);
    if (!bytesEqual(buf, e, RSA_E_65537)) throw keyPolicy('RSA public exponent must be 65537');
    let key: KeyObject | undefined;
    try {
      if (importKey) key = importSpki(buf, spki);
    } catch {
      throw keyPolicy('RSA public key cannot be imported');
    }
    return { key, keyType: 'rsa', keyBits };
  }
  throw keyPolicy(`key algorithm ${oid} is not allowed (use ECDSA P-256/P-384 or RSA 2048-4096)`);
}

/**
 * Imports the CSR's public key from the SubjectPublicKeyInfo we already parsed.
 * Hot path, measured on Node 24 (bench/issue-core.ts prints the variants):
 * createPublicKey(PEM string) costs ~22 µs, while every options-object form
 * ({ key, format: 'der', type: 'spki' }: ~51 µs; JWK from the raw point: ~50 µs;
 * 'raw-public': ~64 µs) pays for Node's exception-based KeyObject/CryptoKey
 * brand checks on the options object. The PEM body is exactly the DER we
 * validated, so nothing else can be smuggled in. OpenSSL still checks that an
 * EC point lies on its curve.
 */
function importSpki(buf: Uint8Array, spki: Tlv): KeyObject {
  const b64 = Buffer.from(buf.buffer, buf.byteOffset + spki.start, spki.end - spki.start).toString('base64');
  return createPublicKey(`-----BEGIN PUBLIC KEY-----\n${b64}\n-----END PUBLIC KEY-----\n`);
}

function malformedTlv(what: string): never {
  throw malformed(`${what}: missing`);
}

/** URI SANs of the extensionRequest attribute; duplicate extensions or attributes are refused. */
function requestedUris(buf: Uint8Array, attrs: Tlv | undefined): string[] {
  if (!attrs) return [];
  const uris: string[] = [];
  let sawExtReq = false;
  for (const attr of children(buf, attrs, 'attributes', 32)) {
    const [type, values, ...more] = children(buf, expectTag(attr, 0x30, 'attribute'), 'attribute');
    if (!type || !values || more.length) throw malformed('attribute must have a type and a value set');
    if (oidString(buf, type, 'attribute type') !== OID_EXTENSION_REQUEST) continue;
    if (sawExtReq) throw malformed('more than one extensionRequest attribute');
    sawExtReq = true;
    const vals = children(buf, expectTag(values, 0x31, 'extensionRequest values'), 'extensionRequest values');
    if (vals.length !== 1) throw malformed('extensionRequest must hold exactly one extension list');
    const seen = new Set<string>();
    const exts = children(buf, expectTag(vals[0]!, 0x30, 'extensions'), 'extensions', 64);
    if (exts.length === 0) throw malformed('extensionRequest holds no extension (Extensions is SIZE (1..MAX))');
    for (const ext of exts) {
      const parts = children(buf, expectTag(ext, 0x30, 'extension'), 'extension');
      const id = oidString(buf, parts[0] ?? malformedTlv('extension id'), 'extension id');
      if (seen.has(id)) throw malformed(`duplicate extension ${id}`);
      seen.add(id);
      const value = parts[parts.length - 1]!;
      expectTag(value, 0x04, 'extension value');
      if (parts.length === 3) {
        const crit = expectTag(parts[1]!, 0x01, 'extension critical flag');
        if (crit.end - crit.valueStart !== 1 || (buf[crit.valueStart] !== 0 && buf[crit.valueStart] !== 0xff)) throw malformed('extension critical flag is not a DER BOOLEAN');
        // critical is BOOLEAN DEFAULT FALSE, and DER never encodes a default value
        if (buf[crit.valueStart] === 0) throw malformed('extension critical flag FALSE is encoded (DER omits a DEFAULT value)');
      }
      else if (parts.length !== 2) throw malformed('extension has the wrong number of elements');
      if (id !== OID_SAN) continue;
      const names = readTlv(buf, value.valueStart, value.end, 'subjectAltName');
      if (names.end !== value.end) throw malformed('subjectAltName has trailing bytes');
      for (const gn of children(buf, expectTag(names, 0x30, 'subjectAltName'), 'subjectAltName', 32)) {
        if (gn.tag !== 0x86) continue;
        const bytes = buf.subarray(gn.valueStart, gn.end);
        for (const b of bytes) if (b < 0x21 || b > 0x7e) throw malformed('URI SAN has characters outside printable ASCII');
        uris.push(Buffer.from(bytes).toString('latin1'));
      }
    }
  }
  return uris;
}

interface ParsedCsr {
  der: Buffer;
  cri: Tlv;
  sig: Tlv;
  alg: (typeof SIG_ALGS)[string];
  spki: Tlv;
  key: ParsedKey;
  uriSans: string[];
}

/** Every check of parseAndVerifyCsr but the signature (and, without `importKey`, the key import). */
function parseCsr(pem: string, importKey: boolean): ParsedCsr {
  const der = csrPemToDer(pem);
  const outer = readTlv(der, 0, der.length, 'CSR');
  if (outer.end !== der.length) throw malformed('trailing bytes after the CSR');
  expectTag(outer, 0x30, 'CSR');
  const [cri, sigAlg, sig, ...extra] = children(der, outer, 'CSR');
  if (!cri || !sigAlg || !sig || extra.length) throw malformed('CSR must have three elements');
  validateTree(der, cri, 'certification request info');
  const [version, subject, spki, attrs, ...more] = children(der, expectTag(cri, 0x30, 'certification request info'), 'certification request info');
  if (!version || !subject || !spki || more.length) throw malformed('certification request info has the wrong number of elements');
  if (!bytesEqual(der, version, VERSION_0)) throw malformed('version must be 0');
  expectTag(subject, 0x30, 'subject');
  if (attrs && attrs.tag !== 0xa0) throw malformed('attributes must be tagged [0]');
  const key = parseSpki(der, spki, importKey);
  const uriSans = requestedUris(der, attrs);

  const algParts = children(der, expectTag(sigAlg, 0x30, 'signature algorithm'), 'signature algorithm');
  const algOid = oidString(der, algParts[0] ?? malformedTlv('signature algorithm'), 'signature algorithm');
  const alg = SIG_ALGS[algOid];
  if (!alg) throw malformed(`signature algorithm ${algOid} is not supported`);
  if (alg.key === 'ec' ? algParts.length !== 1 : !(algParts.length === 1 || (algParts.length === 2 && bytesEqual(der, algParts[1]!, NULL)))) {
    throw malformed('signature algorithm has unexpected parameters');
  }
  if ((alg.key === 'ec') !== key.keyType.startsWith('ec')) throw malformed('signature algorithm does not match the key type');
  expectTag(sig, 0x03, 'signature');
  if (sig.end - sig.valueStart < 2 || der[sig.valueStart] !== 0) throw malformed('signature bit string is empty or has unused bits');
  return { der, cri, sig, alg, spki, key, uriSans };
}

/**
 * The CSR's shape without any public-key operation: every check of
 * parseAndVerifyCsr but importing the key and verifying the signature, with
 * the same errors (these checks come first there too); returns the URI SANs
 * it asks for. For refusals that must stay cheap (a full signing queue) yet
 * name a malformed CSR as such.
 */
export function checkCsrShape(pem: string): { uriSans: readonly string[] } {
  return { uriSans: parseCsr(pem, false).uriSans };
}

/**
 * Parses exactly one PEM CSR, enforces the key policy (EC P-256/P-384;
 * RSA 2048-4096 with e=65537) and verifies the self-signature.
 * Throws CastellanError INVALID_ARGUMENT with code csr.malformed,
 * csr.key_policy or csr.bad_signature.
 */
export function parseAndVerifyCsr(pem: string): CsrInfo {
  const { der, cri, sig, alg, spki, key, uriSans } = parseCsr(pem, true);
  let ok = false;
  try {
    // The KeyObject itself, not an options object (which costs ~20 µs more in Node 24);
    // the defaults are what we want: DER-encoded ECDSA signatures, PKCS#1 v1.5 for RSA.
    ok = verify(alg.hash, der.subarray(cri.start, cri.end), key.key!, der.subarray(sig.valueStart + 1, sig.end));
  } catch {
    ok = false;
  }
  if (!ok) throw new CastellanError('INVALID_ARGUMENT', 'csr.bad_signature', 'CSR signature does not verify with its public key (no proof of possession)');
  return { spki: der.subarray(spki.start, spki.end), keyType: key.keyType, keyBits: key.keyBits, uriSans };
}
