/**
 * A test CA for one trust domain that federates (issue 17), standing in for
 * the CA server's half until it lands: a real grpc-js server over TLS on
 * loopback serving istio.v1.auth.IstioCertificateService/CreateCertificate
 * (signing any CSR for `spiffe://<td>/ns/default/sa/<token>`: the token file
 * holds the service-account name, test only) and
 * castellan.v1.TrustService/WatchBundle, whose updates carry this trust
 * domain's root, a JWT bundle (one ES256 key) and the `federated_bundles`
 * the test sets, pushed to every open watch on each change.
 */
import type { webcrypto } from 'node:crypto';
import { create } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose';
import { IstioCertificateResponseSchema, IstioCertificateService } from '../../src/gen/istio/v1/auth/ca_pb.js';
import { BundleUpdateSchema, TrustService, type BundleUpdate } from '../../src/gen/castellan/v1/trust_pb.js';
import { addService, bindServer, shutdownServer } from '../../src/grpc/service.ts';
import { x509 } from '../../src/platform/x509.ts';
import { issueLeaf, makeRoot, type TdRoot } from './td-pki.ts';

export interface FederatedInput {
  x509AuthoritiesPem: string;
  jwtBundleJson: string;
  sequence: bigint;
}

export class FederatingCa {
  readonly trustDomain: string;
  root!: TdRoot;
  address = '';
  jwks = '';
  private jwtKey!: webcrypto.CryptoKey;
  private readonly kid: string;
  private server = new grpc.Server();
  private watchers = new Set<grpc.ServerWritableStream<unknown, BundleUpdate>>();
  private federated: Record<string, FederatedInput> = {};
  private generation = 1n;

  private constructor(td: string) {
    this.trustDomain = td;
    this.kid = `${td}-jwt-1`;
  }

  static async start(td: string): Promise<FederatingCa> {
    const ca = new FederatingCa(td);
    ca.root = await makeRoot(`${td} root`);
    const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
    ca.jwtKey = privateKey as webcrypto.CryptoKey;
    const jwk: JWK = { ...(await exportJWK(publicKey)), kid: ca.kid, use: 'jwt-svid', alg: 'ES256' };
    ca.jwks = JSON.stringify({ keys: [jwk] });
    const tls = await issueLeaf(ca.root, undefined, { dns: ['localhost'] });
    addService(ca.server, IstioCertificateService, {
      createCertificate(call, callback) {
        void (async () => {
          const sa = String(call.metadata.get('authorization')[0] ?? '').replace(/^Bearer /, '');
          if (!/^[a-z0-9-]+$/.test(sa)) return callback({ code: grpc.status.UNAUTHENTICATED, details: 'no token' });
          const csr = new x509.Pkcs10CertificateRequest(call.request.csr);
          const leaf = await issueLeaf(ca.root, `spiffe://${td}/ns/default/sa/${sa}`, { publicKey: csr.publicKey, ttlMs: Number(call.request.validityDuration) * 1000 });
          callback(null, create(IstioCertificateResponseSchema, { certChain: [leaf.certPem, ca.root.pem] }));
        })().catch((e: unknown) => callback({ code: grpc.status.INTERNAL, details: String(e) }));
      },
    });
    addService(ca.server, TrustService, {
      watchBundle(call) {
        ca.watchers.add(call);
        const drop = (): void => void ca.watchers.delete(call);
        call.on('cancelled', drop);
        call.on('close', drop);
        call.on('error', drop);
        call.write(ca.update());
      },
    });
    const creds = grpc.ServerCredentials.createSsl(null, [{ private_key: Buffer.from(tls.keyPem), cert_chain: Buffer.from(tls.certPem + ca.root.pem) }], false);
    const port = await bindServer(ca.server, '127.0.0.1:0', creds);
    ca.address = `127.0.0.1:${port}`;
    return ca;
  }

  /** This trust domain's bundle as another CA would send it in federated_bundles. */
  asFederated(sequence = 1n): FederatedInput {
    return { x509AuthoritiesPem: this.root.pem, jwtBundleJson: this.jwks, sequence };
  }

  /** Replaces the federated set (complete) and pushes it to every open watch. */
  setFederated(f: Record<string, FederatedInput>): void {
    this.federated = f;
    this.generation++;
    for (const w of this.watchers) w.write(this.update());
  }

  /** A JWT-SVID signed by this CA's JWT key, claiming any subject (tests forge with it). */
  mintJwt(sub: string, aud: string): Promise<string> {
    return new SignJWT({ sub, aud })
      .setProtectedHeader({ alg: 'ES256', kid: this.kid, typ: 'JWT' })
      .setIssuedAt()
      .setExpirationTime('5m')
      .sign(this.jwtKey);
  }

  get openWatches(): number {
    return this.watchers.size;
  }

  private update(): BundleUpdate {
    return create(BundleUpdateSchema, {
      trustBundlePem: this.root.pem,
      generation: this.generation,
      activeAuthorityId: '',
      jwtBundleJson: this.jwks,
      jwtMaxTtlSeconds: 300n,
      federatedBundles: this.federated,
    });
  }

  async close(): Promise<void> {
    for (const w of this.watchers) w.end();
    await shutdownServer(this.server, 1000);
  }
}
