/**
 * A signing authority: the certificate and key that sign leaves, the
 * certificates to send between leaf and root, and the trust bundle.
 * Built either by self-signed mode (src/ca/keystore-file.ts) or from an
 * Istio "cacerts" directory (src/ca/plugin.ts). Off the hot path: uses
 * @peculiar/x509 for parsing and certificate creation.
 */
import { createPrivateKey, createPublicKey, randomBytes, X509Certificate, type KeyObject } from 'node:crypto';
import { CastellanError } from '../platform/errors.ts';
import { derToPem } from '../platform/pem.ts';
import { CA_KEY_TYPES, generateCaKey, exportPkcs8Pem, signingAlgorithm, x509, type CaKeyType } from './keys.ts';

export interface SigningAuthority {
  /** Hex subject key identifier of the signing certificate. */
  readonly id: string;
  readonly keyType: CaKeyType;
  readonly certDer: Buffer;
  readonly certPem: string;
  /** PKCS#8 DER of the signing key. Never logged, never sent. */
  readonly keyPkcs8Der: Buffer;
  /** ms since epoch */
  readonly notBefore: number;
  readonly notAfter: number;
  /** PEM certificates to send after a leaf, signing certificate first; empty when the signer is a root in the bundle. */
  readonly chainPem: readonly string[];
  /** Every trusted root, concatenated PEM: the last element of every CreateCertificate response. */
  readonly trustBundlePem: string;
  /** DER of every root in the bundle. */
  readonly rootsDer: readonly Buffer[];
}

export function certInfo(der: Buffer): { ski: string | null; notBefore: number; notAfter: number; isCa: boolean; keyCertSign: boolean; selfSigned: boolean } {
  const c = new x509.X509Certificate(der);
  const ski = c.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId ?? null;
  const bc = c.getExtension(x509.BasicConstraintsExtension);
  const ku = c.getExtension(x509.KeyUsagesExtension);
  return {
    ski,
    notBefore: c.notBefore.getTime(),
    notAfter: c.notAfter.getTime(),
    isCa: bc?.ca === true,
    keyCertSign: ku ? (ku.usages & x509.KeyUsageFlags.keyCertSign) !== 0 : false,
    selfSigned: c.subject === c.issuer,
  };
}

/** The CA key type of a private key, or a precise error for unsupported ones. */
export function keyTypeOf(key: KeyObject): CaKeyType {
  const d = key.asymmetricKeyDetails ?? {};
  let t: string | undefined;
  if (key.asymmetricKeyType === 'ec') t = d.namedCurve === 'prime256v1' ? 'ec-p256' : d.namedCurve === 'secp384r1' ? 'ec-p384' : undefined;
  else if (key.asymmetricKeyType === 'rsa') t = `rsa-${d.modulusLength}`;
  if (!t || !(CA_KEY_TYPES as readonly string[]).includes(t)) {
    throw new CastellanError(
      'FAILED_PRECONDITION',
      'ca.key_type',
      `unsupported CA key (${key.asymmetricKeyType} ${d.namedCurve ?? d.modulusLength ?? ''}): use one of ${CA_KEY_TYPES.join(', ')}`,
    );
  }
  return t as CaKeyType;
}

export function randomSerialHex(): string {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x40; // positive and a full 16 octets
  return b.toString('hex');
}

export interface RootOptions {
  trustDomain: string;
  keyType: CaKeyType;
  /** ms */
  ttlMs: number;
  now: number;
}

/** Creates a self-signed root: subject O=<trust domain>, CA:true, keyCertSign+cRLSign, SKI, URI SAN spiffe://<td>. */
export async function createSelfSignedRoot(o: RootOptions): Promise<{ certPem: string; keyPem: string }> {
  const keys = await generateCaKey(o.keyType);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerialHex(),
    name: `O=${o.trustDomain}`,
    notBefore: new Date(Math.floor(o.now / 1000) * 1000),
    notAfter: new Date(Math.floor((o.now + o.ttlMs) / 1000) * 1000),
    keys,
    signingAlgorithm: signingAlgorithm(o.keyType),
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `spiffe://${o.trustDomain}` }]),
    ],
  });
  return { certPem: cert.toString('pem') + '\n', keyPem: await exportPkcs8Pem(keys.privateKey) };
}

/**
 * Checks that a signing certificate and key belong together and can sign,
 * and assembles the authority. `chainDers` are certificates between the
 * signer and a root (any order; self-signed ones are dropped from the chain
 * sent to clients), `rootDers` the trust bundle.
 */
export function buildAuthority(opts: {
  certDer: Buffer;
  keyPem: string;
  chainDers: readonly Buffer[];
  rootDers: readonly Buffer[];
  now: number;
  what: string;
  /** false for an authority kept only for trust (old, tainted): its validity is not required */
  requireValid?: boolean;
}): SigningAuthority {
  const { certDer, what } = opts;
  let key: KeyObject;
  try {
    key = createPrivateKey(opts.keyPem);
  } catch (e) {
    throw new CastellanError('FAILED_PRECONDITION', 'ca.bad_key', `${what}: private key cannot be parsed`, { cause: e });
  }
  const keyType = keyTypeOf(key);
  const cert = new X509Certificate(certDer);
  const pubFromKey = createPublicKey(key).export({ type: 'spki', format: 'der' });
  const pubFromCert = cert.publicKey.export({ type: 'spki', format: 'der' });
  if (!pubFromKey.equals(pubFromCert)) {
    throw new CastellanError('FAILED_PRECONDITION', 'ca.key_mismatch', `${what}: the private key does not match the signing certificate`);
  }
  const info = certInfo(certDer);
  if (!info.isCa || !info.keyCertSign) {
    throw new CastellanError('FAILED_PRECONDITION', 'ca.not_ca', `${what}: the signing certificate is not a CA (needs basicConstraints CA:true and keyUsage keyCertSign)`);
  }
  if (!info.ski) {
    throw new CastellanError('FAILED_PRECONDITION', 'ca.no_ski', `${what}: the signing certificate has no subject key identifier`);
  }
  if (opts.requireValid !== false && info.notAfter <= opts.now) {
    throw new CastellanError('FAILED_PRECONDITION', 'ca.expired', `${what}: the signing certificate expired at ${new Date(info.notAfter).toISOString()}`);
  }
  if (opts.requireValid !== false && info.notBefore > opts.now + 5 * 60_000) {
    throw new CastellanError('FAILED_PRECONDITION', 'ca.not_yet_valid', `${what}: the signing certificate is not valid before ${new Date(info.notBefore).toISOString()}`);
  }
  if (opts.rootDers.length === 0) throw new CastellanError('FAILED_PRECONDITION', 'ca.no_roots', `${what}: the trust bundle is empty`);
  // Walk from the signer to a root of the bundle, verifying each signature.
  const roots = opts.rootDers.map((d) => new X509Certificate(d));
  const pool = opts.chainDers.map((d) => new X509Certificate(d));
  const chain: X509Certificate[] = [];
  let cur = cert;
  for (let depth = 0; ; depth++) {
    if (depth > 8) throw new CastellanError('FAILED_PRECONDITION', 'ca.chain', `${what}: certificate chain is longer than 8`);
    const root = roots.find((r) => cur.checkIssued(r) && cur.verify(r.publicKey));
    if (root) break;
    const next = pool.find((p) => p !== cur && cur.checkIssued(p) && cur.verify(p.publicKey));
    if (!next || chain.includes(next)) {
      throw new CastellanError(
        'FAILED_PRECONDITION',
        'ca.chain',
        `${what}: the signing certificate does not chain to a root in the trust bundle (stuck at "${cur.subject.replace(/\n/g, ', ')}")`,
      );
    }
    chain.push(next);
    cur = next;
  }
  const signerIsRoot = roots.some((r) => r.raw.equals(certDer));
  const chainPem = signerIsRoot ? [] : [derToPem(certDer), ...chain.filter((c) => c.issuer !== c.subject).map((c) => derToPem(c.raw))];
  return {
    id: info.ski,
    keyType,
    certDer,
    certPem: derToPem(certDer),
    keyPkcs8Der: key.export({ type: 'pkcs8', format: 'der' }),
    notBefore: info.notBefore,
    notAfter: info.notAfter,
    chainPem,
    trustBundlePem: opts.rootDers.map((d) => derToPem(d)).join(''),
    rootsDer: opts.rootDers,
  };
}
