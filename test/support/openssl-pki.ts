/**
 * Builds CA material with the openssl CLI: an independent producer, so the
 * plug-in loader is tested on files it did not write itself.
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

export function openssl(args: string[], cwd: string, input?: string): string {
  return execFileSync('openssl', args, { cwd, input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
}

const CA_EXT = 'basicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n';

/** root (self-signed) → intermediate; files named like Istio's cacerts layout plus root-key.pem. */
export function makeOpensslPki(dir: string, o: { curve?: string; rsaBits?: number; intermediateDays?: number } = {}): void {
  const keyArgs = (out: string): string[] =>
    o.rsaBits ? ['genpkey', '-algorithm', 'RSA', '-pkeyopt', `rsa_keygen_bits:${o.rsaBits}`, '-out', out] : ['genpkey', '-algorithm', 'EC', '-pkeyopt', `ec_paramgen_curve:${o.curve ?? 'P-256'}`, '-out', out];
  openssl(keyArgs('root-key.pem'), dir);
  writeFileSync(join(dir, 'root.ext'), CA_EXT.replace('authorityKeyIdentifier=keyid\n', ''));
  openssl(['req', '-x509', '-new', '-key', 'root-key.pem', '-subj', '/O=Example Corp/CN=Example Root CA', '-days', '3650', '-sha256', '-config', '/dev/null', '-addext', 'basicConstraints=critical,CA:true', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-addext', 'subjectKeyIdentifier=hash', '-out', 'root-cert.pem'], dir);
  openssl(keyArgs('ca-key.pem'), dir);
  openssl(['req', '-new', '-key', 'ca-key.pem', '-subj', '/O=Example Corp/CN=Mesh Intermediate CA', '-config', '/dev/null', '-out', 'ca.csr'], dir);
  writeFileSync(join(dir, 'ca.ext'), CA_EXT);
  openssl(['x509', '-req', '-in', 'ca.csr', '-CA', 'root-cert.pem', '-CAkey', 'root-key.pem', '-CAcreateserial', '-days', String(o.intermediateDays ?? 365), '-sha256', '-extfile', 'ca.ext', '-out', 'ca-cert.pem'], dir);
  openssl(['x509', '-in', 'ca-cert.pem', '-out', 'cert-chain.pem'], dir);
  const chain = openssl(['x509', '-in', 'ca-cert.pem'], dir) + openssl(['x509', '-in', 'root-cert.pem'], dir);
  writeFileSync(join(dir, 'cert-chain.pem'), chain);
  execFileSync('chmod', ['600', join(dir, 'ca-key.pem'), join(dir, 'root-key.pem')]);
}
