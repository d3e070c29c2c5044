/**
 * The workload-certificate encoder on the hot path. A LeafTemplate is built
 * once per issuer: the DER of everything that never changes (version,
 * signature algorithm, issuer name, the fixed extensions) is prepared up
 * front; each certificate only adds serial, validity, public key, SKI and
 * the SPIFFE URI, then one node:crypto signature.
 *
 * Profile (protocols.md §3): empty subject; extensions in this order:
 * keyUsage (critical: digitalSignature, keyEncipherment), extKeyUsage
 * (serverAuth, clientAuth), basicConstraints (critical, CA:false),
 * subjectKeyIdentifier, authorityKeyIdentifier, subjectAltName (critical,
 * one URI). src/pki/reference.ts builds the same profile with @peculiar/x509.
 */
import { createPrivateKey, hash, randomFillSync, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { CastellanError } from '../platform/errors.ts';
import { children, expectTag, hex, readTlv, tlv, oidString } from './der.ts';

const EXT_KEY_USAGE = hex('300e0603551d0f0101ff0404030205a0');
const EXT_EKU = hex('301d0603551d250416301406082b0601050507030106082b06010505070302');
const EXT_BASIC_CONSTRAINTS = hex('300c0603551d130101ff04023000');
const VERSION_V3 = hex('a003020102');
const EMPTY_NAME = hex('3000');
const EXT_ID_SKI = hex('0603551d0e');
const EXT_ID_SAN_CRITICAL = hex('0603551d110101ff');
const OID_SKI = '2.5.29.14';

interface SigAlg {
  algId: Buffer;
  hash: string;
}

function sigAlgFor(key: KeyObject): SigAlg {
  if (key.asymmetricKeyType === 'ec') {
    const c = key.asymmetricKeyDetails?.namedCurve;
    if (c === 'prime256v1') return { algId: hex('300a06082a8648ce3d040302'), hash: 'sha256' };
    if (c === 'secp384r1') return { algId: hex('300a06082a8648ce3d040303'), hash: 'sha384' };
  }
  if (key.asymmetricKeyType === 'rsa') return { algId: hex('300d06092a864886f70d01010b0500'), hash: 'sha256' };
  throw new CastellanError('FAILED_PRECONDITION', 'ca.key_type', 'issuer key must be ECDSA P-256/P-384 or RSA');
}

/** Subject key identifier of a certificate (DER), from its extension. */
export function subjectKeyId(certDer: Uint8Array): Buffer {
  const cert = readTlv(certDer, 0, certDer.length, 'issuer certificate');
  const tbs = children(certDer, cert, 'issuer certificate')[0]!;
  const parts = children(certDer, tbs, 'issuer tbs');
  const exts = parts.find((p) => p.tag === 0xa3);
  if (exts) {
    const list = children(certDer, exts, 'issuer extensions')[0]!;
    for (const ext of children(certDer, list, 'issuer extensions', 64)) {
      const f = children(certDer, ext, 'issuer extension');
      if (oidString(certDer, f[0]!, 'extension id') === OID_SKI) {
        const v = f[f.length - 1]!;
        const inner = readTlv(certDer, v.valueStart, v.end, 'subject key id');
        return Buffer.from(certDer.subarray(inner.valueStart, inner.end));
      }
    }
  }
  throw new CastellanError('FAILED_PRECONDITION', 'ca.no_ski', 'issuer certificate has no subject key identifier');
}

/** Raw subject Name of a certificate (DER bytes, verbatim). */
export function subjectName(certDer: Uint8Array): Buffer {
  const cert = readTlv(certDer, 0, certDer.length, 'issuer certificate');
  const tbs = children(certDer, cert, 'issuer certificate')[0]!;
  const parts = children(certDer, tbs, 'issuer tbs');
  // version [0] is optional; subject is the 6th (with version) or 5th element.
  const i = parts[0]!.tag === 0xa0 ? 5 : 4;
  const subject = expectTag(parts[i]!, 0x30, 'issuer subject');
  return Buffer.from(certDer.subarray(subject.start, subject.end));
}

/** UTCTime before 2050, GeneralizedTime from 2050 on (RFC 5280 §4.1.2.5), seconds precision. */
export function encodeTime(ms: number): Buffer {
  const d = new Date(Math.floor(ms / 1000) * 1000);
  const y = d.getUTCFullYear();
  const p2 = (n: number) => String(n).padStart(2, '0');
  const rest = `${p2(d.getUTCMonth() + 1)}${p2(d.getUTCDate())}${p2(d.getUTCHours())}${p2(d.getUTCMinutes())}${p2(d.getUTCSeconds())}Z`;
  if (y >= 1950 && y < 2050) return tlv(0x17, Buffer.from(`${p2(y % 100)}${rest}`, 'latin1'));
  return tlv(0x18, Buffer.from(`${String(y).padStart(4, '0')}${rest}`, 'latin1'));
}

const SERIAL_POOL_ITEMS = 256;
let serialPool = Buffer.alloc(0);
let serialPos = 0;

/**
 * A fresh certificate serial: 16 bytes from the CSPRNG with the first octet
 * forced into 0x40..0x7f, so the value is positive, its DER INTEGER is always
 * exactly 16 octets (no 0x00 pad, never shorter) and 126 bits are random
 * (security.md P1: positive, unique, <= 20 octets). Random bytes are drawn
 * 4 KiB at a time (one getrandom call per 256 serials) and each byte is used
 * once; the returned Buffer is the caller's own copy.
 */
export function randomSerial(): Buffer {
  if (serialPos >= serialPool.length) {
    serialPool = randomFillSync(Buffer.allocUnsafe(16 * SERIAL_POOL_ITEMS));
    serialPos = 0;
  }
  const b = Buffer.from(serialPool.subarray(serialPos, serialPos + 16));
  serialPool.fill(0, serialPos, serialPos + 16);
  serialPos += 16;
  b[0] = (b[0]! & 0x3f) | 0x40;
  return b;
}

export interface LeafFields {
  serial: Buffer;
  notBefore: number;
  notAfter: number;
  /** DER SubjectPublicKeyInfo */
  spki: Uint8Array;
  spiffeId: string;
}

export class LeafTemplate {
  readonly issuerNotBefore: number;
  readonly issuerNotAfter: number;
  private readonly key: KeyObject;
  private readonly sig: SigAlg;
  private readonly issuerName: Buffer;
  private readonly akiExt: Buffer;

  constructor(issuerCertDer: Uint8Array, issuerKeyPkcs8Der: Uint8Array) {
    this.key = createPrivateKey({ key: Buffer.from(issuerKeyPkcs8Der), format: 'der', type: 'pkcs8' });
    this.sig = sigAlgFor(this.key);
    this.issuerName = subjectName(issuerCertDer);
    const aki = tlv(0x30, tlv(0x80, subjectKeyId(issuerCertDer)));
    this.akiExt = tlv(0x30, hex('0603551d23'), tlv(0x04, aki));
    const c = new X509Certificate(Buffer.from(issuerCertDer));
    this.issuerNotBefore = Date.parse(c.validFrom);
    this.issuerNotAfter = Date.parse(c.validTo);
  }

  /** DER of the TBSCertificate for these fields. */
  tbs(f: LeafFields): Buffer {
    const spkiTlv = readTlv(f.spki, 0, f.spki.length, 'public key');
    const bits = children(f.spki, spkiTlv, 'public key')[1]!;
    const ski = hash('sha1', f.spki.subarray(bits.valueStart + 1, bits.end), 'buffer');
    const skiExt = tlv(0x30, EXT_ID_SKI, tlv(0x04, tlv(0x04, ski)));
    const sanExt = tlv(0x30, EXT_ID_SAN_CRITICAL, tlv(0x04, tlv(0x30, tlv(0x86, Buffer.from(f.spiffeId, 'latin1')))));
    return tlv(
      0x30,
      VERSION_V3,
      tlv(0x02, f.serial),
      this.sig.algId,
      this.issuerName,
      tlv(0x30, encodeTime(f.notBefore), encodeTime(f.notAfter)),
      EMPTY_NAME,
      f.spki,
      tlv(0xa3, tlv(0x30, EXT_KEY_USAGE, EXT_EKU, EXT_BASIC_CONSTRAINTS, skiExt, this.akiExt, sanExt)),
    );
  }

  /** Signs the leaf; returns its DER. */
  sign(f: LeafFields): Buffer {
    const tbs = this.tbs(f);
    // Passing the KeyObject directly (not { key, dsaEncoding: 'der' }, which is the
    // default anyway) saves ~25 µs per signature in Node 24: see importSpki in csr.ts.
    const signature = sign(this.sig.hash, tbs, this.key);
    return tlv(0x30, tbs, this.sig.algId, tlv(0x03, Uint8Array.of(0), signature));
  }
}
