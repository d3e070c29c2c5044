/** CSRs for tests, made by openssl (an independent producer) or by @peculiar/x509. */
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, webcrypto } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { x509 } from '../../src/platform/x509.ts';

export interface TestCsr {
  csrPem: string;
  keyPem: string;
}

/** openssl req with an EC P-256 (default) or RSA key and optional URI SANs. */
export function opensslCsr(o: { uris?: string[]; rsaBits?: number; curve?: string } = {}): TestCsr {
  const dir = mkdtempSync(join(tmpdir(), 'castellan-csr-'));
  try {
    const key = join(dir, 'k.pem');
    execFileSync('openssl', o.rsaBits ? ['genpkey', '-algorithm', 'RSA', '-pkeyopt', `rsa_keygen_bits:${o.rsaBits}`, '-out', key] : ['genpkey', '-algorithm', 'EC', '-pkeyopt', `ec_paramgen_curve:${o.curve ?? 'P-256'}`, '-out', key], { stdio: 'pipe' });
    const args = ['req', '-new', '-key', key, '-subj', '/O=ignored', '-config', '/dev/null', '-out', join(dir, 'r.csr')];
    if (o.uris?.length) args.push('-addext', `subjectAltName=${o.uris.map((u) => `URI:${u}`).join(',')}`);
    execFileSync('openssl', args, { stdio: 'pipe' });
    return { csrPem: readFileSync(join(dir, 'r.csr'), 'utf8'), keyPem: readFileSync(key, 'utf8') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A P-256 CSR built in-process (fast; for many requests). */
export async function peculiarCsr(uri?: string): Promise<TestCsr> {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const pkcs8 = privateKey.export({ type: 'pkcs8', format: 'der' });
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const priv = await webcrypto.subtle.importKey('pkcs8', pkcs8, alg, true, ['sign']);
  const jwk = privateKey.export({ format: 'jwk' });
  const pub = await webcrypto.subtle.importKey('jwk', { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y }, alg, true, ['verify']);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: '',
    keys: { privateKey: priv, publicKey: pub } as unknown as Parameters<typeof x509.Pkcs10CertificateRequestGenerator.create>[0]['keys'],
    signingAlgorithm: alg,
    extensions: uri ? [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: uri }])] : [],
  });
  return { csrPem: csr.toString('pem') + '\n', keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string };
}
