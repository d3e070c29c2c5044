/**
 * jwt-verify: CPU per service-account token, Castellan's hot-path verifier
 * (src/identity/jws.ts: node:crypto, synchronous) vs jose's jwtVerify
 * (WebCrypto), same tokens, same key set, same run; and the raw signature
 * verify of node:crypto as the floor. ES256 (P-256) and RS256 (RSA-2048:
 * what kubeadm, EKS and GKE sign service-account tokens with).
 *
 *   node_modules/.bin/node bench/jwt-verify.ts      (JWT_N=5000 per row)
 */
import { createPublicKey, generateKeyPairSync, verify, type KeyObject } from 'node:crypto';
import { createLocalJWKSet, jwtVerify, SignJWT, type JWK } from 'jose';
import { checkClaims, verifyCompactJws } from '../src/identity/jws.ts';
import { measureAsync, measureSync, table } from './lib/measure.ts';

const N = Number(process.env.JWT_N ?? 5000);
const ISS = 'https://kubernetes.default.svc.cluster.local';

async function row(alg: 'ES256' | 'RS256'): Promise<{ alg: string; castellanUs: number; joseUs: number; rawUs: number }> {
  const { privateKey, publicKey } = alg === 'ES256' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...(publicKey.export({ format: 'jwk' }) as JWK), kid: 'k1', alg, use: 'sig' };
  const keys = createLocalJWKSet({ keys: [jwk] });
  const now = Math.floor(Date.now() / 1000);
  const tokens: string[] = [];
  for (let i = 0; i < 200; i++) {
    tokens.push(
      await new SignJWT({ 'kubernetes.io': { namespace: 'bench', serviceaccount: { name: `sa-${i}` } } })
        .setProtectedHeader({ alg, kid: 'k1', typ: 'JWT' })
        .setIssuer(ISS)
        .setSubject(`system:serviceaccount:bench:sa-${i}`)
        .setAudience(['istio-ca'])
        .setIssuedAt(now)
        .setNotBefore(now)
        .setExpirationTime(now + 3600)
        .sign(privateKey),
    );
  }
  const rules = { issuer: ISS, audiences: ['istio-ca'], now, toleranceSec: 60 };
  const ours = await measureAsync(N, async () => {
    for (let i = 0; i < N; i++) checkClaims((await verifyCompactJws(tokens[i % tokens.length]!, keys)).payload, rules);
  });
  const jose = await measureAsync(N, async () => {
    for (let i = 0; i < N; i++) await jwtVerify(tokens[i % tokens.length]!, keys, { issuer: ISS, audience: 'istio-ca' });
  });
  // The floor: node:crypto's verify of one signature over the same signing input.
  const pub: KeyObject = createPublicKey(publicKey.export({ format: 'pem', type: 'spki' }));
  const t = tokens[0]!;
  const input = Buffer.from(t.slice(0, t.lastIndexOf('.')));
  const sig = Buffer.from(t.slice(t.lastIndexOf('.') + 1), 'base64url');
  const raw = measureSync(N, () => {
    if (!verify('sha256', input, alg === 'ES256' ? { key: pub, dsaEncoding: 'ieee-p1363' } : pub, sig)) throw new Error('floor: signature did not verify');
  });
  return { alg, castellanUs: 1e6 / ours.perCpuSec, joseUs: 1e6 / jose.perCpuSec, rawUs: 1e6 / raw.perCpuSec };
}

const rows = [await row('ES256'), await row('RS256')];
console.log('jwt-verify: CPU µs per token (signature + claims), one thread');
table([
  ['alg', 'Castellan µs', 'jose µs', 'raw verify µs', 'jose / Castellan', 'Castellan / raw'],
  ...rows.map((r) => [r.alg, r.castellanUs, r.joseUs, r.rawUs, `${(r.joseUs / r.castellanUs).toFixed(2)}x`, `${(r.castellanUs / r.rawUs).toFixed(2)}x`]),
]);
console.log(`RESULT ${JSON.stringify({ rows })}`);
