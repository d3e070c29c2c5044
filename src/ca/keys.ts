/**
 * CA key types and generation (off the hot path; WebCrypto keys for
 * @peculiar/x509, exported as PKCS#8 for storage and node:crypto signing).
 */
import { webcrypto } from 'node:crypto';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
import { x509 } from '../platform/x509.ts';

export const CA_KEY_TYPES = ['ec-p256', 'ec-p384', 'rsa-2048', 'rsa-3072', 'rsa-4096'] as const;
export type CaKeyType = (typeof CA_KEY_TYPES)[number];

export function keyAlgorithm(t: CaKeyType): webcrypto.RsaHashedKeyGenParams | webcrypto.EcKeyGenParams {
  switch (t) {
    case 'ec-p256':
      return { name: 'ECDSA', namedCurve: 'P-256' };
    case 'ec-p384':
      return { name: 'ECDSA', namedCurve: 'P-384' };
    default:
      return {
        name: 'RSASSA-PKCS1-v1_5',
        modulusLength: Number(t.slice(4)),
        publicExponent: new Uint8Array([1, 0, 1]),
        hash: 'SHA-256',
      };
  }
}

/** The signature algorithm a certificate signed by a key of this type uses. */
export function signingAlgorithm(t: CaKeyType): webcrypto.EcdsaParams | webcrypto.Algorithm {
  if (t === 'ec-p256') return { name: 'ECDSA', hash: 'SHA-256' };
  if (t === 'ec-p384') return { name: 'ECDSA', hash: 'SHA-384' };
  return { name: 'RSASSA-PKCS1-v1_5' };
}

export async function generateCaKey(t: CaKeyType): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(keyAlgorithm(t), true, ['sign', 'verify'])) as CryptoKeyPair;
}

export async function exportPkcs8Pem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key));
  return x509.PemConverter.encode(der, 'PRIVATE KEY') + '\n';
}

/** Imports a PKCS#8 key for @peculiar/x509 given the key type it was made as. */
export async function importPkcs8(der: Uint8Array, t: CaKeyType): Promise<CryptoKey> {
  return webcrypto.subtle.importKey('pkcs8', der, keyAlgorithm(t), false, ['sign']) as Promise<CryptoKey>;
}

export { x509 };
