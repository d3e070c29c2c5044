/**
 * Benchmark fixtures: a throwaway CA (root, P-256/P-384/RSA-2048 key) as
 * IssuerMaterial plus PEM files for other programs, and pools of pre-made
 * CSRs (P-256 keys, the workload key Istio uses) so key generation is never
 * part of a measurement.
 */
import { generateKeyPairSync, webcrypto } from 'node:crypto';
import { x509 } from '../../src/platform/x509.ts';
import type { IssuerMaterial } from '../../src/ca/issue.ts';

export type BenchKeyType = 'ec-p256' | 'ec-p384' | 'rsa-2048';

export interface BenchCa {
  material: IssuerMaterial;
  certPem: string;
  /** PKCS#8 PEM of the signing key */
  keyPem: string;
}

const ALGS: Record<BenchKeyType, { gen: webcrypto.EcKeyGenParams | webcrypto.RsaHashedKeyGenParams; sign: webcrypto.Algorithm }> = {
  'ec-p256': { gen: { name: 'ECDSA', namedCurve: 'P-256' }, sign: { name: 'ECDSA', hash: 'SHA-256' } as webcrypto.Algorithm },
  'ec-p384': { gen: { name: 'ECDSA', namedCurve: 'P-384' }, sign: { name: 'ECDSA', hash: 'SHA-384' } as webcrypto.Algorithm },
  'rsa-2048': {
    gen: { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
    sign: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } as webcrypto.Algorithm,
  },
};

function pemOf(der: Uint8Array, label: string): string {
  return `-----BEGIN ${label}-----\n${(Buffer.from(der).toString('base64').match(/.{1,64}/g) ?? []).join('\n')}\n-----END ${label}-----\n`;
}

/** A self-signed CA valid from an hour ago for ten years, subject O=cluster.local. */
export async function makeBenchCa(keyType: BenchKeyType): Promise<BenchCa> {
  const a = ALGS[keyType];
  const keys = (await webcrypto.subtle.generateKey(a.gen, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const ski = await x509.SubjectKeyIdentifierExtension.create(keys.publicKey);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '4a' + Buffer.from(webcrypto.getRandomValues(new Uint8Array(15))).toString('hex'),
    name: 'O=cluster.local',
    keys,
    signingAlgorithm: a.sign,
    notBefore: new Date(Date.now() - 3600_000),
    notAfter: new Date(Date.now() + 10 * 365 * 86400_000),
    extensions: [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true), ski],
  });
  const keyPkcs8Der = new Uint8Array(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const certDer = new Uint8Array(cert.rawData);
  return {
    material: { id: ski.keyId, certDer, keyPkcs8Der, notBefore: cert.notBefore.getTime(), notAfter: cert.notAfter.getTime() },
    certPem: pemOf(certDer, 'CERTIFICATE'),
    keyPem: pemOf(keyPkcs8Der, 'PRIVATE KEY'),
  };
}

/** `n` distinct P-256 CSRs (each its own key), with the URI SAN `uri` when given. */
export async function makeCsrs(n: number, uri?: string): Promise<string[]> {
  const out: string[] = [];
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  for (let i = 0; i < n; i++) {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const keys = {
      privateKey: await webcrypto.subtle.importKey('pkcs8', privateKey.export({ type: 'pkcs8', format: 'der' }), alg, false, ['sign']),
      publicKey: await webcrypto.subtle.importKey('spki', publicKey.export({ type: 'spki', format: 'der' }), alg, true, ['verify']),
    };
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({
      name: '',
      keys,
      signingAlgorithm: alg,
      extensions: uri ? [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: uri }])] : [],
    });
    out.push(csr.toString('pem') + '\n');
  }
  return out;
}

export const BENCH_ID = 'spiffe://cluster.local/ns/bench/sa/workload';
