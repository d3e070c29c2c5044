/**
 * castellan.v1.JwtSvidService/MintJwtSvid on the real CA server: the
 * identity is the authenticated caller's (token, or a client certificate of
 * this CA, as for CreateCertificate), the claims are exactly JWT-SVID.md's,
 * the token verifies (jose) against the JWT bundle the CA pushes over
 * WatchBundle, and audiences and lifetimes are checked.
 */
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type AgentHandle } from '../../src/agent/agent.ts';
import { JwtSvidService, MintJwtSvidRequestSchema } from '../../src/gen/castellan/v1/jwt_pb.js';
import { TrustService, WatchBundleRequestSchema, type BundleUpdate } from '../../src/gen/castellan/v1/trust_pb.js';
import { createClient } from '../../src/grpc/service.ts';
import { startRealCa, type RealCa } from '../agent/real-ca.ts';
import { tempDir } from '../support/tmp.ts';

const tmp = tempDir('castellan-wl-mint-');
let ca: RealCa;
let agent: AgentHandle;
let token: string;

const creds = () => grpc.credentials.createSsl(Buffer.from(ca.server.trustBundlePem));
const opts = { 'grpc.ssl_target_name_override': 'localhost' };

beforeAll(async () => {
  ca = await startRealCa(tmp.path);
  token = await (await import('node:fs/promises')).readFile(await ca.tokenFile('web'), 'utf8');
  agent = await startAgent(await ca.agentConfig('api', join(tmp.path, 'sds.sock')));
  await agent.cache.whenReady();
}, 60_000);

afterAll(async () => {
  await agent?.close();
  await ca?.stop();
  tmp.cleanup();
});

async function mint(req: { audience: string[]; ttlSeconds?: bigint }, md?: grpc.Metadata, c = creds()) {
  const client = createClient(JwtSvidService, ca.server.grpcAddress, c, opts);
  try {
    if (!md) {
      md = new grpc.Metadata();
      md.set('authorization', `Bearer ${token}`);
    }
    return await client.mintJwtSvid(create(MintJwtSvidRequestSchema, req), { metadata: md, deadline: Date.now() + 10_000 });
  } finally {
    client.close();
  }
}

async function firstBundleUpdate(): Promise<BundleUpdate> {
  const client = createClient(TrustService, ca.server.grpcAddress, creds(), opts);
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${token}`);
  const call = client.watchBundle(create(WatchBundleRequestSchema, {}), { metadata: md });
  try {
    return await new Promise((res, rej) => {
      call.once('data', res);
      call.once('error', rej);
    });
  } finally {
    call.cancel();
    client.close();
  }
}

describe('MintJwtSvid', () => {
  it('ok/a token for the caller: ES256, kid, typ JWT; sub, aud, iat, exp (5 min by default); verifies against the pushed JWT bundle', async () => {
    const r = await mint({ audience: ['spiffe://cluster.local/ns/default/sa/api', 'spiffe://cluster.local/ns/default/sa/api'] });
    expect(r.spiffeId).toBe('spiffe://cluster.local/ns/default/sa/web');
    expect(decodeProtectedHeader(r.token)).toEqual({ alg: 'ES256', kid: r.keyId, typ: 'JWT' });
    const u = await firstBundleUpdate();
    expect(u.jwtMaxTtlSeconds).toBe(3600n);
    expect(u.taintedJwtKeys).toEqual([]);
    const set = JSON.parse(u.jwtBundleJson) as { keys: { kid: string; use: string }[] };
    expect(set.keys.map((k) => [k.kid, k.use])).toEqual([[r.keyId, 'jwt-svid']]);
    const { payload } = await jwtVerify(r.token, createLocalJWKSet({ keys: set.keys.map(({ use: _u, ...k }) => k) }), { audience: 'spiffe://cluster.local/ns/default/sa/api' });
    expect(Object.keys(payload).sort()).toEqual(['aud', 'exp', 'iat', 'sub']);
    expect(payload.aud).toEqual(['spiffe://cluster.local/ns/default/sa/api']); // duplicates dropped
    expect(payload.exp! - payload.iat!).toBe(300);
    expect(BigInt(payload.exp!)).toBe(r.expiresAt);
    expect((await mint({ audience: ['x'], ttlSeconds: 60n })).expiresAt - BigInt(Math.floor(Date.now() / 1000))).toBeLessThanOrEqual(60n);
  });

  it('ok/over mTLS with a certificate of this CA: the certificate\'s identity, no token', async () => {
    const c = agent.cache.issued!;
    const r = await mint({ audience: ['x'] }, new grpc.Metadata(), grpc.credentials.createSsl(Buffer.from(ca.server.trustBundlePem), Buffer.from(c.keyPem), Buffer.from(c.chainPem)));
    expect(r.spiffeId).toBe('spiffe://cluster.local/ns/default/sa/api');
  });

  const refused: [string, { audience: string[]; ttlSeconds?: bigint }, string][] = [
    ['no audience', { audience: [] }, 'jwt.audience'],
    ['an empty audience', { audience: ['a', ''] }, 'jwt.audience'],
    ['eleven audiences', { audience: Array.from({ length: 11 }, (_, i) => `a${i}`) }, 'jwt.audience'],
    ['an audience over 512 bytes', { audience: ['a'.repeat(513)] }, 'jwt.audience'],
    ['a control character', { audience: ['a\nb'] }, 'jwt.audience'],
    ['a lifetime over the maximum', { audience: ['a'], ttlSeconds: 3601n }, 'ttl.too_long'],
    ['a negative lifetime', { audience: ['a'], ttlSeconds: -1n }, 'ttl.negative'],
  ];
  for (const [name, req, code] of refused) {
    it(`fail/${name} → INVALID_ARGUMENT ${code}`, async () => {
      const e = (await mint(req).then(
        () => undefined,
        (x: unknown) => x,
      )) as grpc.ServiceError;
      expect(grpc.status[e.code]).toBe('INVALID_ARGUMENT');
      expect(e.metadata.get('x-castellan-error')).toEqual([code]);
    });
  }
});
