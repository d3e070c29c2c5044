/**
 * The CA server's own TLS identity, issued by its signing authority (as
 * istiod does), covering localhost, 127.0.0.1, ::1 and --server-dns names.
 * Off the hot path: built with @peculiar/x509.
 */
import { generateKeyPairSync } from 'node:crypto';
import type { SigningAuthority } from './authority.ts';
import { randomSerialHex } from './authority.ts';
import { importPkcs8, signingAlgorithm, x509 } from './keys.ts';

export interface ServingIdentity {
  certChainPem: string;
  keyPem: string;
  notAfter: number;
}

export async function issueServingCertificate(
  authority: SigningAuthority,
  o: { dnsNames: readonly string[]; trustDomain: string; ttlMs: number; now: number; /** a SPIFFE ID: the certificate is then an X.509-SVID of it */ spiffeId?: string },
): Promise<ServingIdentity> {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const issuerKey = await importPkcs8(authority.keyPkcs8Der, authority.keyType);
  const issuerCert = new x509.X509Certificate(authority.certDer);
  const notBefore = Math.floor((o.now - 60_000) / 1000) * 1000;
  const notAfter = Math.min(Math.floor((o.now + o.ttlMs) / 1000) * 1000, authority.notAfter);
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const leafPublic = await crypto.subtle.importKey('spki', spki, { name: 'ECDSA', namedCurve: 'P-256' }, true, ['verify']);
  const names = [...new Set(['localhost', ...o.dnsNames])];
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerialHex(),
    subject: `O=${o.trustDomain}, CN=castellan`,
    issuer: issuerCert.subjectName,
    notBefore: new Date(notBefore),
    notAfter: new Date(notAfter),
    publicKey: leafPublic,
    signingKey: issuerKey,
    signingAlgorithm: signingAlgorithm(authority.keyType),
    extensions: [
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.BasicConstraintsExtension(false, undefined, true),
      await x509.SubjectKeyIdentifierExtension.create(leafPublic),
      await x509.AuthorityKeyIdentifierExtension.create(issuerCert),
      new x509.SubjectAlternativeNameExtension([
        ...names.map((value) => ({ type: 'dns' as const, value })),
        { type: 'ip', value: '127.0.0.1' },
        { type: 'ip', value: '::1' },
        ...(o.spiffeId ? [{ type: 'url' as const, value: o.spiffeId }] : []),
      ]),
    ],
  });
  return {
    certChainPem: cert.toString('pem') + '\n' + authority.chainPem.join(''),
    keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    notAfter,
  };
}
