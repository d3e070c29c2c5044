/**
 * A fresh workload key and its CSR, one pair per issuance (never reused).
 * The key is made by node:crypto; the CSR is signed with it through
 * WebCrypto by @peculiar/x509 (off the hot path: one CSR per renewal).
 * The CSR carries no subject and no SANs: the CA writes the authenticated
 * identity itself and ignores whatever a CSR asks for (protocols.md §2).
 */
import { generateKeyPair, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import { x509 } from '../platform/x509.ts';

export const KEY_TYPES = ['ec-p256', 'rsa-2048'] as const;
export type KeyType = (typeof KEY_TYPES)[number];

export interface KeyAndCsr {
  /** PKCS#8 PEM. Secret: never log it. */
  keyPem: string;
  csrPem: string;
}

const genKeyPair = promisify(generateKeyPair);

export async function newKeyAndCsr(keyType: KeyType): Promise<KeyAndCsr> {
  let pair: { privateKey: KeyObject; publicKey: KeyObject };
  let alg: { name: string; namedCurve?: string; hash: string };
  if (keyType === 'ec-p256') {
    pair = await genKeyPair('ec', { namedCurve: 'P-256' });
    alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  } else {
    pair = await genKeyPair('rsa', { modulusLength: 2048 });
    alg = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  }
  const keys = {
    privateKey: pair.privateKey.toCryptoKey(alg, false, ['sign']),
    publicKey: pair.publicKey.toCryptoKey(alg, true, ['verify']),
  };
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys: keys as unknown as Parameters<typeof x509.Pkcs10CertificateRequestGenerator.create>[0]['keys'],
    signingAlgorithm: alg,
  });
  return {
    keyPem: pair.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    csrPem: csr.toString('pem') + '\n',
  };
}
