/**
 * A hand-written CertificateSource for agent unit tests: a throwaway EC root
 * made with @peculiar/x509 that signs whatever key a CSR carries for a fixed
 * SPIFFE ID. Tests can make it fail with a chosen error kind, rotate its
 * root, and read what it was asked.
 */
import { webcrypto } from 'node:crypto';

type CryptoKeyPair = webcrypto.CryptoKeyPair;
import type { CertificateSource } from '../../src/agent/cache.ts';
import type { Clock } from '../../src/platform/clock.ts';
import { CastellanError, type ErrorKind } from '../../src/platform/errors.ts';
import { x509 } from '../../src/platform/x509.ts';

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };

interface Root {
  keys: CryptoKeyPair;
  cert: x509.X509Certificate;
}

async function makeRoot(name: string, now: number): Promise<Root> {
  const keys = (await webcrypto.subtle.generateKey(ALG, false, ['sign', 'verify'])) as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: `CN=${name}`,
    notBefore: new Date(now - 3600_000),
    notAfter: new Date(now + 365 * 24 * 3600_000),
    keys,
    signingAlgorithm: ALG,
    extensions: [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true)],
  });
  return { keys, cert };
}

export class FakeCa implements CertificateSource {
  private root!: Root;
  private extraRoots: Root[] = [];
  private serial = 1;
  readonly clock: Clock;
  readonly spiffeId: string;
  /** When set, sign() rejects with this kind. */
  failWith: ErrorKind | undefined;
  /** Caps the issued lifetime, seconds (like a CA whose max TTL is short). */
  maxTtlSeconds = Infinity;
  calls: { csrPem: string; ttlSeconds: number; at: number }[] = [];
  /** Issued leaves, in order. */
  issued: { serial: string; notBefore: number; notAfter: number }[] = [];

  private constructor(clock: Clock, spiffeId: string) {
    this.clock = clock;
    this.spiffeId = spiffeId;
  }

  static async create(clock: Clock, spiffeId = 'spiffe://cluster.local/ns/default/sa/frontend'): Promise<FakeCa> {
    const ca = new FakeCa(clock, spiffeId);
    ca.root = await makeRoot('fake root 1', clock.now());
    return ca;
  }

  get bundlePem(): string {
    return [this.root, ...this.extraRoots].map((r) => r.cert.toString('pem') + '\n').join('');
  }

  /** Adds a new root to the bundle and signs with it from now on (old root kept in the bundle). */
  async rotate(): Promise<void> {
    this.extraRoots.push(this.root);
    this.root = await makeRoot(`fake root ${this.extraRoots.length + 1}`, this.clock.now());
  }

  async sign(csrPem: string, ttlSeconds: number): Promise<string[]> {
    const at = this.clock.now();
    this.calls.push({ csrPem, ttlSeconds, at });
    if (this.failWith) throw new CastellanError(this.failWith, 'fake.fail', `fake CA failing with ${this.failWith}`);
    const csr = new x509.Pkcs10CertificateRequest(csrPem);
    if (!(await csr.verify())) throw new CastellanError('INVALID_ARGUMENT', 'csr.bad_signature', 'bad CSR');
    const ttl = Math.min(ttlSeconds, this.maxTtlSeconds);
    const serial = (this.serial++).toString(16).padStart(4, '0');
    const notBefore = Math.floor(at / 1000) * 1000;
    const notAfter = notBefore + ttl * 1000;
    const leaf = await x509.X509CertificateGenerator.create({
      serialNumber: serial,
      subject: '',
      issuer: this.root.cert.subject,
      notBefore: new Date(notBefore),
      notAfter: new Date(notAfter),
      publicKey: csr.publicKey,
      signingKey: this.root.keys.privateKey,
      signingAlgorithm: ALG,
      extensions: [
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: this.spiffeId }], true),
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
        await x509.AuthorityKeyIdentifierExtension.create(this.root.cert),
      ],
    });
    this.issued.push({ serial: leaf.serialNumber, notBefore, notAfter });
    return [leaf.toString('pem') + '\n', this.bundlePem];
  }
}
