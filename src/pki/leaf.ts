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
import { children, expectTag, hex, lengthSize, oidString, putHeader, readTlv, tlv } from './der.ts';

const EXT_KEY_USAGE = hex('300e0603551d0f0101ff0404030205a0');
const EXT_EKU = hex('301d0603551d250416301406082b0601050507030106082b06010505070302');
const EXT_BASIC_CONSTRAINTS = hex('300c0603551d130101ff04023000');
const VERSION_V3 = hex('a003020102');
const EMPTY_NAME = hex('3000');
/** subjectKeyIdentifier up to its 20-byte value: SEQUENCE { id, OCTET STRING { OCTET STRING (20) } } */
const SKI_EXT_PREFIX = hex('301d 0603551d0e 0416 0414');
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

function put2(out: Buffer, pos: number, n: number): number {
  out[pos] = 0x30 + ((n / 10) | 0);
  out[pos + 1] = 0x30 + (n % 10);
  return pos + 2;
}

const timeCache: [{ sec: number; der: Buffer }, { sec: number; der: Buffer }] = [
  { sec: NaN, der: Buffer.alloc(0) },
  { sec: NaN, der: Buffer.alloc(0) },
];
let timeCacheNext = 0;

/**
 * The DER time for `ms` (seconds precision), shared: never to be modified.
 * Every certificate of the same second has the same notBefore, and those of
 * one TTL the same notAfter, so the last two are kept.
 */
function timeDer(ms: number): Buffer {
  const sec = Math.floor(ms / 1000);
  if (sec === timeCache[0].sec) return timeCache[0].der;
  if (sec === timeCache[1].sec) return timeCache[1].der;
  const d = new Date(sec * 1000);
  const y = d.getUTCFullYear();
  const utc = y >= 1950 && y < 2050;
  const der = Buffer.allocUnsafeSlow(utc ? 15 : 17);
  der[0] = utc ? 0x17 : 0x18;
  der[1] = utc ? 13 : 15;
  let pos = utc ? put2(der, 2, y % 100) : put2(der, put2(der, 2, (y / 100) | 0), y % 100);
  pos = put2(der, pos, d.getUTCMonth() + 1);
  pos = put2(der, pos, d.getUTCDate());
  pos = put2(der, pos, d.getUTCHours());
  pos = put2(der, pos, d.getUTCMinutes());
  pos = put2(der, pos, d.getUTCSeconds());
  der[pos] = 0x5a; // 'Z'
  timeCache[timeCacheNext] = { sec, der };
  timeCacheNext ^= 1;
  return der;
}

/** UTCTime before 2050, GeneralizedTime from 2050 on (RFC 5280 §4.1.2.5), seconds precision. */
export function encodeTime(ms: number): Buffer {
  return Buffer.from(timeDer(ms));
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
  /** the signature algorithm and the issuer name, which follow the serial */
  private readonly algAndIssuer: Buffer;
  /** keyUsage, extKeyUsage, basicConstraints, then the SKI extension up to its value */
  private readonly extsToSki = Buffer.concat([EXT_KEY_USAGE, EXT_EKU, EXT_BASIC_CONSTRAINTS, SKI_EXT_PREFIX]);
  private readonly akiExt: Buffer;

  constructor(issuerCertDer: Uint8Array, issuerKeyPkcs8Der: Uint8Array) {
    this.key = createPrivateKey({ key: Buffer.from(issuerKeyPkcs8Der), format: 'der', type: 'pkcs8' });
    this.sig = sigAlgFor(this.key);
    this.algAndIssuer = Buffer.concat([this.sig.algId, subjectName(issuerCertDer)]);
    const aki = tlv(0x30, tlv(0x80, subjectKeyId(issuerCertDer)));
    this.akiExt = tlv(0x30, hex('0603551d23'), tlv(0x04, aki));
    const c = new X509Certificate(Buffer.from(issuerCertDer));
    this.issuerNotBefore = Date.parse(c.validFrom);
    this.issuerNotAfter = Date.parse(c.validTo);
  }

  /**
   * DER of the TBSCertificate for these fields, written in one pass into one
   * buffer: the lengths are computed first, then every part is copied or
   * written in place (no intermediate buffers: on the hot path the memory an
   * issuance touches costs more than its instructions, since it evicts
   * OpenSSL's tables from the cache).
   */
  tbs(f: LeafFields): Buffer {
    // SubjectPublicKeyInfo: SEQUENCE { algorithm, BIT STRING }; the SKI hashes the key bits (RFC 5280 §4.2.1.2 (1))
    const spkiTlv = readTlv(f.spki, 0, f.spki.length, 'public key');
    const alg = readTlv(f.spki, spkiTlv.valueStart, spkiTlv.end, 'public key algorithm');
    const bits = expectTag(readTlv(f.spki, alg.end, spkiTlv.end, 'public key bits'), 0x03, 'public key bits');
    const ski = hash('sha1', f.spki.subarray(bits.valueStart + 1, bits.end), 'buffer');
    const uriLen = Buffer.byteLength(f.spiffeId, 'latin1');
    // subjectAltName: SEQUENCE { id, critical, OCTET STRING { SEQUENCE { [6] uri } } }
    const gnLen = 1 + lengthSize(uriLen) + uriLen;
    const namesLen = 1 + lengthSize(gnLen) + gnLen;
    const sanBody = EXT_ID_SAN_CRITICAL.length + 1 + lengthSize(namesLen) + namesLen;
    const extsBody = this.extsToSki.length + ski.length + this.akiExt.length + 1 + lengthSize(sanBody) + sanBody;
    const extsSeq = 1 + lengthSize(extsBody) + extsBody;
    const serialLen = f.serial.length;
    const notBefore = timeDer(f.notBefore);
    const notAfter = timeDer(f.notAfter);
    const validityBody = notBefore.length + notAfter.length;
    const body =
      VERSION_V3.length + 1 + lengthSize(serialLen) + serialLen + this.algAndIssuer.length +
      1 + lengthSize(validityBody) + validityBody + EMPTY_NAME.length + f.spki.length +
      1 + lengthSize(extsSeq) + extsSeq;
    const out = Buffer.allocUnsafe(1 + lengthSize(body) + body);
    let pos = putHeader(out, 0, 0x30, body);
    pos += VERSION_V3.copy(out, pos);
    pos = putHeader(out, pos, 0x02, serialLen);
    pos += f.serial.copy(out, pos);
    pos += this.algAndIssuer.copy(out, pos);
    pos = putHeader(out, pos, 0x30, validityBody);
    pos += notBefore.copy(out, pos);
    pos += notAfter.copy(out, pos);
    pos += EMPTY_NAME.copy(out, pos);
    out.set(f.spki, pos);
    pos += f.spki.length;
    pos = putHeader(out, pos, 0xa3, extsSeq);
    pos = putHeader(out, pos, 0x30, extsBody);
    pos += this.extsToSki.copy(out, pos);
    pos += ski.copy(out, pos);
    pos += this.akiExt.copy(out, pos);
    pos = putHeader(out, pos, 0x30, sanBody);
    pos += EXT_ID_SAN_CRITICAL.copy(out, pos);
    pos = putHeader(out, pos, 0x04, namesLen);
    pos = putHeader(out, pos, 0x30, gnLen);
    pos = putHeader(out, pos, 0x86, uriLen);
    pos += out.write(f.spiffeId, pos, 'latin1');
    if (pos !== out.length) throw new CastellanError('INTERNAL', 'leaf.encoding', `leaf encoder wrote ${pos} of ${out.length} bytes`);
    return out;
  }

  /** Signs the leaf; returns its DER. */
  sign(f: LeafFields): Buffer {
    const tbs = this.tbs(f);
    // Passing the KeyObject directly (not { key, dsaEncoding: 'der' }, which is the
    // default anyway) is measurably cheaper per signature in Node 24: see importSpki in csr.ts.
    const signature = sign(this.sig.hash, tbs, this.key);
    // Certificate: SEQUENCE { tbs, algorithm, BIT STRING { 0 unused bits, signature } }
    const bitsLen = 1 + signature.length;
    const body = tbs.length + this.sig.algId.length + 1 + lengthSize(bitsLen) + bitsLen;
    const out = Buffer.allocUnsafe(1 + lengthSize(body) + body);
    let pos = putHeader(out, 0, 0x30, body);
    pos += tbs.copy(out, pos);
    pos += this.sig.algId.copy(out, pos);
    pos = putHeader(out, pos, 0x03, bitsLen);
    out[pos++] = 0;
    signature.copy(out, pos);
    return out;
  }
}
