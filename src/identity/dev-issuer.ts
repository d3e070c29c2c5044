/**
 * DEVELOPMENT ONLY: a local stand-in for a Kubernetes service-account token
 * issuer, used by `castellan dev`, tests and benchmarks where no cluster
 * exists. It keeps an ES256 key (or, asked for, an RS256 one, what a
 * kube-apiserver signs with by default) in `<dir>` (0700, key file 0600), publishes
 * `<dir>/jwks.json`, and mints tokens shaped like projected service-account
 * tokens. Never point a production CA at it.
 */
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { exportJWK, generateKeyPair, importJWK, SignJWT, calculateJwkThumbprint, type JWK, type CryptoKey } from 'jose';
import { createFileExclusive, ensurePrivateDir, writeFileAtomic } from '../platform/files.ts';

export interface MintOptions {
  namespace: string;
  serviceAccount: string;
  /** default ['istio-ca'] */
  audiences?: string[];
  /** default 43200 (12 h, like Istio's projected tokens) */
  ttlSeconds?: number;
  podName?: string;
  /** ms since epoch; default now */
  now?: number;
}

export type DevTokenAlg = 'ES256' | 'RS256';

export class DevTokenIssuer {
  readonly issuer: string;
  readonly jwksPath: string;
  readonly alg: DevTokenAlg;
  private readonly key: CryptoKey;
  private readonly kid: string;

  private constructor(issuer: string, jwksPath: string, alg: DevTokenAlg, key: CryptoKey, kid: string) {
    this.issuer = issuer;
    this.jwksPath = jwksPath;
    this.alg = alg;
    this.key = key;
    this.kid = kid;
  }

  /** `alg` (default ES256) picks the key kind when the key is created; RS256 keys are RSA-2048. */
  static async create(o: { dir: string; issuer?: string; alg?: DevTokenAlg }): Promise<DevTokenIssuer> {
    const alg = o.alg ?? 'ES256';
    await ensurePrivateDir(o.dir);
    const keyPath = join(o.dir, alg === 'ES256' ? 'dev-issuer-key.json' : 'dev-issuer-key-rs256.json');
    let jwk: JWK;
    try {
      jwk = JSON.parse(await fs.readFile(keyPath, 'utf8')) as JWK;
    } catch {
      const { privateKey } = await generateKeyPair(alg, { extractable: true, modulusLength: 2048 });
      const fresh = await exportJWK(privateKey);
      await createFileExclusive(keyPath, JSON.stringify(fresh), 0o600);
      jwk = JSON.parse(await fs.readFile(keyPath, 'utf8')) as JWK;
    }
    const pub: JWK = alg === 'ES256' ? { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y } : { kty: jwk.kty, n: jwk.n, e: jwk.e };
    const kid = await calculateJwkThumbprint(pub);
    const jwksPath = join(o.dir, 'jwks.json');
    await writeFileAtomic(jwksPath, JSON.stringify({ keys: [{ ...pub, kid, alg, use: 'sig' }] }, null, 2) + '\n', 0o644);
    const key = (await importJWK(jwk, alg)) as CryptoKey;
    return new DevTokenIssuer(o.issuer ?? 'https://castellan.dev.invalid', jwksPath, alg, key, kid);
  }

  /** A projected-service-account-shaped JWT (iss, sub, aud[], exp, iat, nbf, kubernetes.io). */
  async mint(o: MintOptions): Promise<string> {
    const now = Math.floor((o.now ?? Date.now()) / 1000);
    const pod = o.podName ?? `${o.serviceAccount}-dev`;
    return new SignJWT({
      'kubernetes.io': {
        namespace: o.namespace,
        serviceaccount: { name: o.serviceAccount, uid: `dev-${o.namespace}-${o.serviceAccount}` },
        pod: { name: pod, uid: `dev-pod-${pod}` },
      },
    })
      .setProtectedHeader({ alg: this.alg, kid: this.kid, typ: 'JWT' })
      .setIssuer(this.issuer)
      .setSubject(`system:serviceaccount:${o.namespace}:${o.serviceAccount}`)
      .setAudience(o.audiences ?? ['istio-ca'])
      .setIssuedAt(now)
      .setNotBefore(now)
      .setExpirationTime(now + (o.ttlSeconds ?? 43_200))
      .sign(this.key);
  }
}
