/**
 * A fresh workload key and its CSR, one pair per issuance (never reused).
 * The key is made by node:crypto; the PKCS#10 CSR is written with the
 * project's DER writer (src/pki/der.ts, as the CA writes its leaves) and
 * signed by node:crypto. The CSR carries no subject and no SANs: the CA
 * writes the authenticated identity itself and ignores whatever a CSR asks
 * for (protocols.md §2).
 */
import { generateKeyPair, sign, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import { hex, tlv } from '../pki/der.ts';

export const KEY_TYPES = ['ec-p256', 'rsa-2048'] as const;
export type KeyType = (typeof KEY_TYPES)[number];

export interface KeyAndCsr {
  /** PKCS#8 PEM. Secret: never log it. */
  keyPem: string;
  csrPem: string;
}

const genKeyPair = promisify(generateKeyPair);
const signAsync = promisify(sign);

/** AlgorithmIdentifier of the CSR's signature: ecdsa-with-SHA256 (no parameters), sha256WithRSAEncryption (NULL). */
const SIGNATURE_ALG: Record<KeyType, Buffer> = {
  'ec-p256': hex('300a06082a8648ce3d040302'),
  'rsa-2048': hex('300d06092a864886f70d01010b0500'),
};
const VERSION_0 = hex('020100');
const EMPTY_NAME = hex('3000');
/** attributes [0] IMPLICIT SET OF Attribute, empty */
const NO_ATTRIBUTES = hex('a000');

/**
 * PKCS#10 (RFC 2986) DER: CertificationRequestInfo { version 0, empty
 * subject, the key's SubjectPublicKeyInfo, no attributes }, signed with
 * SHA-256 (ECDSA signatures in their DER form, RSA PKCS#1 v1.5).
 */
export async function csrDer(keyType: KeyType, privateKey: KeyObject, publicKey: KeyObject): Promise<Buffer> {
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const info = tlv(0x30, VERSION_0, EMPTY_NAME, spki, NO_ATTRIBUTES);
  const signature = await signAsync('sha256', info, privateKey);
  return tlv(0x30, info, SIGNATURE_ALG[keyType], tlv(0x03, Buffer.of(0), signature));
}

export async function newKeyAndCsr(keyType: KeyType): Promise<KeyAndCsr> {
  const pair: { privateKey: KeyObject; publicKey: KeyObject } =
    keyType === 'ec-p256' ? await genKeyPair('ec', { namedCurve: 'P-256' }) : await genKeyPair('rsa', { modulusLength: 2048 });
  const b64 = (await csrDer(keyType, pair.privateKey, pair.publicKey)).toString('base64');
  return {
    keyPem: pair.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    csrPem: `-----BEGIN CERTIFICATE REQUEST-----\n${b64.replace(/.{64}(?=.)/g, '$&\n')}\n-----END CERTIFICATE REQUEST-----\n`,
  };
}
