/**
 * Test material for the issuance core: throwaway CAs made with @peculiar/x509
 * (a root and an intermediate), CSRs from two independent producers (the
 * openssl CLI and @peculiar/x509), and a tiny hand-written DER encoder plus a
 * CSR signer for crafting precisely-wrong CSRs. Nothing here uses the code
 * under test (src/pki/der.ts, src/pki/csr.ts, src/pki/leaf.ts).
 */
import { execFileSync } from 'node:child_process';
import { createHash, createPublicKey, generateKeyPairSync, sign, webcrypto, type KeyObject } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { x509 } from '../../src/platform/x509.ts';
import type { IssuerMaterial } from '../../src/ca/issue.ts';

export type CaKeyType = 'ec-p256' | 'ec-p384' | 'rsa-2048';

export interface TestCa {
  certPem: string;
  certDer: Uint8Array;
  keys: webcrypto.CryptoKeyPair;
  material: IssuerMaterial;
  /** the CA's own chain up to (not including) the root, leaf-most first */
  chainPem: string[];
}

function algFor(t: CaKeyType): { gen: webcrypto.EcKeyGenParams | webcrypto.RsaHashedKeyGenParams; sign: webcrypto.EcdsaParams | webcrypto.Algorithm } {
  if (t === 'ec-p256') return { gen: { name: 'ECDSA', namedCurve: 'P-256' }, sign: { name: 'ECDSA', hash: 'SHA-256' } as webcrypto.EcdsaParams };
  if (t === 'ec-p384') return { gen: { name: 'ECDSA', namedCurve: 'P-384' }, sign: { name: 'ECDSA', hash: 'SHA-384' } as webcrypto.EcdsaParams };
  return {
    gen: { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
    sign: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } as webcrypto.Algorithm,
  };
}

/** A CA certificate: self-signed root when `parent` is absent, else an intermediate signed by `parent`. */
export async function makeCa(o: { keyType?: CaKeyType; parent?: TestCa; subject?: string; notBefore?: Date; notAfter?: Date } = {}): Promise<TestCa> {
  const a = algFor(o.keyType ?? 'ec-p256');
  const keys = (await webcrypto.subtle.generateKey(a.gen, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const notBefore = o.notBefore ?? new Date(Date.now() - 3600_000);
  const notAfter = o.notAfter ?? new Date(Date.now() + 10 * 365 * 86400_000);
  const subject = o.subject ?? (o.parent ? 'O=cluster.local, CN=Castellan Test Intermediate' : 'O=cluster.local, CN=Castellan Test Root');
  const ski = await x509.SubjectKeyIdentifierExtension.create(keys.publicKey);
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(true, o.parent ? 0 : undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    ski,
  ];
  let issuerName = subject;
  let signingKey = keys.privateKey;
  let signAlg = a.sign;
  if (o.parent) {
    const parentCert = new x509.X509Certificate(o.parent.certDer);
    extensions.push(new x509.AuthorityKeyIdentifierExtension(parentCert.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId));
    issuerName = parentCert.subject;
    signingKey = o.parent.keys.privateKey;
    const pAlg = o.parent.keys.privateKey.algorithm as { name: string; namedCurve?: string };
    signAlg = algFor(pAlg.name === 'ECDSA' ? (pAlg.namedCurve === 'P-384' ? 'ec-p384' : 'ec-p256') : 'rsa-2048').sign;
  }
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: Buffer.from(webcrypto.getRandomValues(new Uint8Array(8))).toString('hex').replace(/^./, '4'),
    subject,
    issuer: issuerName,
    notBefore,
    notAfter,
    publicKey: keys.publicKey,
    signingKey,
    signingAlgorithm: signAlg,
    extensions,
  });
  const certDer = new Uint8Array(cert.rawData);
  const keyPkcs8Der = new Uint8Array(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const certPem = cert.toString('pem') + '\n';
  return {
    certPem,
    certDer,
    keys,
    material: { id: ski.keyId, certDer, keyPkcs8Der, notBefore: cert.notBefore.getTime(), notAfter: cert.notAfter.getTime() },
    chainPem: o.parent ? [certPem, ...o.parent.chainPem] : [],
  };
}

// ---- CSR producers ----

export interface TestCsr {
  csrPem: string;
  keyPem: string;
}

/** A CSR made by the openssl CLI (independent producer). `keyArgs` are genpkey arguments. */
export function opensslCsr(o: { keyArgs?: string[]; uris?: string[]; subj?: string } = {}): TestCsr {
  const dir = mkdtempSync(join(tmpdir(), 'castellan-pki-'));
  try {
    const key = join(dir, 'k.pem');
    execFileSync('openssl', ['genpkey', ...(o.keyArgs ?? ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256']), '-out', key], { stdio: 'pipe' });
    const args = ['req', '-new', '-key', key, '-subj', o.subj ?? '/', '-config', '/dev/null', '-out', join(dir, 'r.csr')];
    if (o.uris?.length) args.push('-addext', `subjectAltName=${o.uris.map((u) => `URI:${u}`).join(',')}`);
    execFileSync('openssl', args, { stdio: 'pipe' });
    return { csrPem: readFileSync(join(dir, 'r.csr'), 'utf8'), keyPem: readFileSync(key, 'utf8') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A CSR made by @peculiar/x509 + WebCrypto (independent producer). */
export async function peculiarCsr(o: { uris?: string[]; curve?: 'P-256' | 'P-384'; rsa?: boolean; extensions?: x509.Extension[] } = {}): Promise<TestCsr> {
  const alg = o.rsa
    ? { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' }
    : { name: 'ECDSA', namedCurve: o.curve ?? 'P-256', hash: o.curve === 'P-384' ? 'SHA-384' : 'SHA-256' };
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const extensions = [...(o.extensions ?? [])];
  if (o.uris?.length) extensions.push(new x509.SubjectAlternativeNameExtension(o.uris.map((value) => ({ type: 'url' as const, value }))));
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: 'CN=ignored', keys, signingAlgorithm: alg, extensions });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  return { csrPem: csr.toString('pem') + '\n', keyPem: `-----BEGIN PRIVATE KEY-----\n${pkcs8.toString('base64')}\n-----END PRIVATE KEY-----\n` };
}

// ---- a tiny independent DER encoder for crafted inputs ----

function len(n: number): Buffer {
  if (n < 0x80) return Buffer.of(n);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}
export const t = (tag: number, ...parts: Uint8Array[]): Buffer => {
  const body = Buffer.concat(parts);
  return Buffer.concat([Buffer.of(tag), len(body.length), body]);
};
export const seq = (...p: Uint8Array[]): Buffer => t(0x30, ...p);
export const h = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

/** OID from dotted text, arcs as bigint so absurd arcs can be written. */
export function oid(dotted: string): Buffer {
  const arcs = dotted.split('.').map((a) => BigInt(a));
  const out: number[] = [];
  const enc = (v: bigint) => {
    const b: number[] = [Number(v & 0x7fn)];
    for (v >>= 7n; v > 0n; v >>= 7n) b.unshift(Number(v & 0x7fn) | 0x80);
    out.push(...b);
  };
  enc(arcs[0]! * 40n + arcs[1]!);
  for (const a of arcs.slice(2)) enc(a);
  return t(0x06, Buffer.from(out));
}

export const pem = (der: Uint8Array, label = 'CERTIFICATE REQUEST'): string =>
  `-----BEGIN ${label}-----\n${(Buffer.from(der).toString('base64').match(/.{1,64}/g) ?? []).join('\n')}\n-----END ${label}-----\n`;

export const SAN_OID = '2.5.29.17';
export const EXT_REQ_OID = '1.2.840.113549.1.9.14';

/** An extension: SEQUENCE { id, [critical], OCTET STRING value }. */
export function ext(id: string, value: Uint8Array, critical = false): Buffer {
  return critical ? seq(oid(id), h('0101ff'), t(0x04, value)) : seq(oid(id), t(0x04, value));
}
export const uriSan = (...uris: string[]): Buffer => ext(SAN_OID, seq(...uris.map((u) => t(0x86, Buffer.from(u, 'latin1')))));

/** Attributes [0] holding one extensionRequest with these extensions. */
export const extReq = (...exts: Uint8Array[]): Buffer => t(0xa0, seq(oid(EXT_REQ_OID), t(0x31, seq(...exts))));

/**
 * A CSR signed with `key` over exactly the CertificationRequestInfo given
 * (or built from `spki` + `attrs`), so a crafted defect is the only defect.
 */
export function craftCsr(o: { key: KeyObject; spki?: Uint8Array; attrs?: Uint8Array; cri?: Uint8Array; sigAlg?: Uint8Array; hash?: string }): Buffer {
  const spki = o.spki ?? publicSpki(o.key);
  const cri = o.cri ?? seq(h('020100'), seq(), spki, o.attrs ?? t(0xa0));
  const isRsa = o.key.asymmetricKeyType === 'rsa';
  const sigAlg = o.sigAlg ?? (isRsa ? seq(oid('1.2.840.113549.1.1.11'), h('0500')) : seq(oid('1.2.840.10045.4.3.2')));
  const sig = sign(o.hash ?? 'sha256', cri, { key: o.key, dsaEncoding: 'der' });
  return seq(cri, sigAlg, t(0x03, Buffer.of(0), sig));
}

export function publicSpki(privateKey: KeyObject): Buffer {
  return createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
}

export function ecKey(curve = 'P-256'): KeyObject {
  return generateKeyPairSync('ec', { namedCurve: curve }).privateKey;
}

/** SHA-1 of the subjectPublicKey BIT STRING contents (RFC 5280 §4.2.1.2 method 1), computed independently. */
export function expectedSki(spkiDer: Uint8Array): string {
  const key = createPublicKey({ key: Buffer.from(spkiDer), format: 'der', type: 'spki' });
  if (key.asymmetricKeyType === 'rsa') return createHash('sha1').update(key.export({ type: 'pkcs1', format: 'der' })).digest('hex');
  const jwk = key.export({ format: 'jwk' });
  const pt = Buffer.concat([Buffer.of(4), Buffer.from(jwk.x!, 'base64url'), Buffer.from(jwk.y!, 'base64url')]);
  return createHash('sha1').update(pt).digest('hex');
}
