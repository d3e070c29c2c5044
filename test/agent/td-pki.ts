/**
 * Throwaway PKI per trust domain for federation tests (@peculiar/x509): a
 * self-signed root, leaves for any SPIFFE ID signed by it (including IDs of
 * another trust domain, to forge what the scoping tests must refuse), and a
 * non-CA certificate.
 */
import { webcrypto } from 'node:crypto';
import { x509 } from '../../src/platform/x509.ts';

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
type KeyPair = webcrypto.CryptoKeyPair;

export interface TdRoot {
  name: string;
  keys: KeyPair;
  cert: x509.X509Certificate;
  pem: string;
}

export interface Leaf {
  certPem: string;
  /** PKCS#8 PEM */
  keyPem: string;
}

async function keyPair(): Promise<KeyPair> {
  return (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as KeyPair;
}

export async function makeRoot(name: string, o: { ca?: boolean } = {}): Promise<TdRoot> {
  const keys = await keyPair();
  const ca = o.ca ?? true;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '0' + Math.floor(Math.random() * 1e9).toString(16),
    name: `CN=${name}`,
    notBefore: new Date(Date.now() - 3600_000),
    notAfter: new Date(Date.now() + 30 * 24 * 3600_000),
    keys,
    signingAlgorithm: ALG,
    extensions: ca
      ? [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true), await x509.SubjectKeyIdentifierExtension.create(keys.publicKey)]
      : [new x509.BasicConstraintsExtension(false, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true)],
  });
  return { name, keys, cert, pem: cert.toString('pem') + '\n' };
}

/** A leaf for `spiffeId` (and `dns` names) signed by `root`; a fresh key unless `publicKey` is given (then keyPem is ''). */
export async function issueLeaf(root: TdRoot, spiffeId: string | undefined, o: { publicKey?: webcrypto.CryptoKey | x509.PublicKey; ttlMs?: number; dns?: string[] } = {}): Promise<Leaf> {
  const keys = o.publicKey ? undefined : await keyPair();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: '0' + Math.floor(Math.random() * 1e12).toString(16),
    subject: '',
    issuer: root.cert.subject,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + (o.ttlMs ?? 3600_000)),
    publicKey: o.publicKey ?? keys!.publicKey,
    signingKey: root.keys.privateKey,
    signingAlgorithm: ALG,
    extensions: [
      new x509.SubjectAlternativeNameExtension([...(spiffeId ? [{ type: 'url' as const, value: spiffeId }] : []), ...(o.dns ?? []).map((d) => ({ type: 'dns' as const, value: d }))], true),
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      await x509.AuthorityKeyIdentifierExtension.create(root.cert),
    ],
  });
  let keyPem = '';
  if (keys) {
    const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
    keyPem = `-----BEGIN PRIVATE KEY-----\n${der.toString('base64').match(/.{1,64}/g)!.join('\n')}\n-----END PRIVATE KEY-----\n`;
  }
  return { certPem: cert.toString('pem') + '\n', keyPem };
}
