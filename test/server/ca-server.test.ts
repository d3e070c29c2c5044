/**
 * The CA server end to end over real gRPC + TLS on loopback: token and mTLS
 * authentication, every bad-input class with its status, health, metrics,
 * logs free of secrets, and a server that keeps serving throughout.
 */
import { Writable } from 'node:stream';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { create, toBinary } from '@bufbuild/protobuf';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { IstioCertificateRequestSchema, IstioCertificateService } from '../../src/gen/istio/v1/auth/ca_pb.js';
import { createClient } from '../../src/grpc/service.ts';
import { createLogger } from '../../src/platform/logger.ts';
import { DevTokenIssuer } from '../../src/identity/dev-issuer.ts';
import { startCaServer, type CaServerHandle } from '../../src/server/ca-server.ts';
import { defaultServerConfig } from '../../src/server/config.ts';
import { uriSans } from '../../src/identity/mtls.ts';
import { parseCertificatesPem } from '../../src/platform/pem.ts';
import { opensslCsr, peculiarCsr } from '../support/csr.ts';
import { opensslVerify } from '../support/verifiers.ts';
import { tempDir } from '../support/tmp.ts';

const tmp = tempDir();
let server: CaServerHandle;
let issuer: DevTokenIssuer;
let client: ReturnType<typeof mkClient>;
const logLines: string[] = [];

function mkClient(creds?: grpc.ChannelCredentials) {
  return createClient(IstioCertificateService, server.grpcAddress, creds ?? grpc.credentials.createSsl(Buffer.from(server.trustBundlePem)), {
    'grpc.ssl_target_name_override': 'localhost',
  });
}

async function call(
  c: ReturnType<typeof mkClient>,
  req: { csr: string; ttl?: bigint; metadata?: Record<string, string> },
  auth?: string | string[],
): Promise<{ chain?: string[]; code?: grpc.status; details?: string }> {
  const md = new grpc.Metadata();
  for (const a of auth === undefined ? [] : Array.isArray(auth) ? auth : [auth]) md.add('authorization', a);
  try {
    const res = await c.createCertificate(create(IstioCertificateRequestSchema, { csr: req.csr, validityDuration: req.ttl ?? 0n, metadata: req.metadata }), {
      metadata: md,
      deadline: Date.now() + 15_000,
    });
    return { chain: res.certChain };
  } catch (e) {
    const err = e as grpc.ServiceError;
    return { code: err.code, details: err.details };
  }
}

const ID = (ns: string, sa: string) => `spiffe://cluster.local/ns/${ns}/sa/${sa}`;

beforeAll(async () => {
  issuer = await DevTokenIssuer.create({ dir: join(tmp.path, 'issuer') });
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      logLines.push(chunk.toString());
      cb();
    },
  });
  server = await startCaServer(
    defaultServerConfig({
      dataDir: join(tmp.path, 'data'),
      grpcListen: '127.0.0.1:0',
      httpListen: '127.0.0.1:0',
      auth: { audiences: ['istio-ca'], jwt: { jwksFile: issuer.jwksPath, issuer: issuer.issuer } },
      signer: { workers: 1, maxBatchSize: 16, maxBatchWaitMs: 1, maxQueue: 1000 },
      shutdownGraceMs: 2000,
    }),
    { logger: createLogger({ level: 'debug', destination: sink }) },
  );
  client = mkClient();
}, 60_000);

afterAll(async () => {
  client?.close();
  await server?.close();
  tmp.cleanup();
});

describe('CreateCertificate with service-account tokens', () => {
  it('ok/token + matching CSR → [leaf, root bundle], strict OpenSSL accepts, 24h default TTL', async () => {
    const token = await issuer.mint({ namespace: 'default', serviceAccount: 'frontend' });
    const csr = opensslCsr({ uris: [ID('default', 'frontend')] });
    const r = await call(client, { csr: csr.csrPem }, `Bearer ${token}`);
    expect(r.code).toBeUndefined();
    expect(r.chain).toHaveLength(2);
    expect(r.chain![1]).toBe(server.trustBundlePem);
    const leaf = parseCertificatesPem(r.chain![0]!, 'leaf')[0]!;
    expect(uriSans(leaf)).toEqual([ID('default', 'frontend')]);
    expect(opensslVerify(server.trustBundlePem, [r.chain![0]!], 'sslclient')).toMatch(/OK/);
    const { X509Certificate } = await import('node:crypto');
    const c = new X509Certificate(leaf);
    const life = Date.parse(c.validTo) - Date.now();
    expect(life).toBeGreaterThan(23.9 * 3600_000);
    expect(life).toBeLessThanOrEqual(24 * 3600_000 + 1000);
  });

  it('ok/every response carries x-request-id, and errors the x-castellan-error trailer', async () => {
    const token = await issuer.mint({ namespace: 'default', serviceAccount: 'frontend' });
    const headersOf = (csr: string, auth: string) =>
      new Promise<{ id?: string; trailer?: string; code: grpc.status }>((resolve) => {
        const md = new grpc.Metadata();
        md.set('authorization', auth);
        let id: string | undefined;
        const c = client.raw.makeUnaryRequest(
          '/istio.v1.auth.IstioCertificateService/CreateCertificate',
          (m: Uint8Array) => Buffer.from(m),
          (b: Buffer) => b,
          Buffer.from(toBinary(IstioCertificateRequestSchema, create(IstioCertificateRequestSchema, { csr }))) as unknown as Uint8Array,
          md,
          (err) => resolve({ id, code: err?.code ?? grpc.status.OK, trailer: err?.metadata?.get('x-castellan-error')[0] as string | undefined }),
        );
        c.on('metadata', (m: grpc.Metadata) => (id = m.get('x-request-id')[0] as string | undefined));
      });
    const ok = await headersOf((await peculiarCsr()).csrPem, `Bearer ${token}`);
    const bad = await headersOf('not a csr', `Bearer ${token}`);
    expect(ok).toMatchObject({ code: grpc.status.OK });
    expect(ok.id).toMatch(/^[0-9a-f]{8}-[0-9a-z]+$/);
    expect(bad).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, trailer: 'csr.malformed' });
    expect(bad.id).toMatch(/^[0-9a-f]{8}-[0-9a-z]+$/);
    expect(bad.id).not.toBe(ok.id);
  });

  it('ok/requested TTL in seconds is honoured', async () => {
    const token = await issuer.mint({ namespace: 'default', serviceAccount: 'frontend' });
    const r = await call(client, { csr: (await peculiarCsr()).csrPem, ttl: 3600n }, `Bearer ${token}`);
    const { X509Certificate } = await import('node:crypto');
    const c = new X509Certificate(parseCertificatesPem(r.chain![0]!, 'leaf')[0]!);
    expect(Date.parse(c.validTo) - Date.now()).toBeGreaterThan(3590_000);
    expect(Date.parse(c.validTo) - Date.now()).toBeLessThanOrEqual(3601_000);
  });

  it('C1/a client cannot obtain any identity but its own', async () => {
    const token = await issuer.mint({ namespace: 'a', serviceAccount: 'b' });
    const r = await call(client, { csr: opensslCsr({ uris: [ID('c', 'd')] }).csrPem }, `Bearer ${token}`);
    expect(r.code).toBe(grpc.status.PERMISSION_DENIED);
    const two = await call(client, { csr: opensslCsr({ uris: [ID('a', 'b'), ID('c', 'd')] }).csrPem }, `Bearer ${token}`);
    expect(two.code).toBe(grpc.status.PERMISSION_DENIED);
    const imp = await call(client, { csr: opensslCsr().csrPem, metadata: { ImpersonatedIdentity: ID('c', 'd') } }, `Bearer ${token}`);
    expect(imp.code).toBe(grpc.status.PERMISSION_DENIED);
  });

  it.each([
    ['no-credentials', undefined, grpc.status.UNAUTHENTICATED],
    ['not-bearer', 'Basic abc', grpc.status.UNAUTHENTICATED],
    ['garbage-token', 'Bearer not.a.jwt', grpc.status.UNAUTHENTICATED],
  ])('fail/%s → UNAUTHENTICATED', async (_n, auth, code) => {
    const r = await call(client, { csr: opensslCsr().csrPem }, auth);
    expect(r.code).toBe(code);
  });

  it('T1/token for another audience is refused', async () => {
    const token = await issuer.mint({ namespace: 'a', serviceAccount: 'b', audiences: ['https://kubernetes.default.svc'] });
    expect((await call(client, { csr: opensslCsr().csrPem }, `Bearer ${token}`)).code).toBe(grpc.status.UNAUTHENTICATED);
  });

  it.each([
    ['joined values', (t: string) => `Bearer ${t}, Bearer ${t}`],
    ['double space', (t: string) => `Bearer  ${t}`],
    ['no scheme', (t: string) => t],
    ['over 16 KiB', (t: string) => `Bearer ${t}${'A'.repeat(17 * 1024)}`],
  ])('T9/%s is refused (grpc-js refuses to send two values; see test/identity for that case)', async (_n, mk) => {
    const token = await issuer.mint({ namespace: 'a', serviceAccount: 'b' });
    expect((await call(client, { csr: opensslCsr().csrPem }, mk(token))).code).toBe(grpc.status.UNAUTHENTICATED);
  });

  it.each([
    ['L1/negative', -1n],
    ['L1/over-max', 90n * 86400n + 1n],
    ['L1/int64-max', 9223372036854775807n],
    ['L1/int64-min', -9223372036854775808n],
  ])('%s TTL → INVALID_ARGUMENT', async (_n, ttl) => {
    const token = await issuer.mint({ namespace: 'a', serviceAccount: 'b' });
    const r = await call(client, { csr: opensslCsr().csrPem, ttl }, `Bearer ${token}`);
    expect(r.code).toBe(grpc.status.INVALID_ARGUMENT);
  });

  it.each([
    ['empty', () => ''],
    ['garbage', () => 'hello'],
    ['two-blocks', () => opensslCsr().csrPem + opensslCsr().csrPem],
    ['rsa-1024', () => opensslCsr({ rsaBits: 1024 }).csrPem],
    ['secp256k1', () => opensslCsr({ curve: 'secp256k1' }).csrPem],
    ['swapped-key (C3)', () => {
      const a = opensslCsr();
      const b = opensslCsr();
      // Keep a's signature, put b's public key in: proof of possession must fail.
      const der = (p: string) => Buffer.from(p.replace(/-----[^-]+-----|\s/g, ''), 'base64');
      const da = der(a.csrPem);
      const db = der(b.csrPem);
      const spkiA = da.indexOf(Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107', 'hex'));
      const spkiB = db.indexOf(Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107', 'hex'));
      db.copy(da, spkiA, spkiB, spkiB + 91);
      return `-----BEGIN CERTIFICATE REQUEST-----\n${da.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    }],
  ])('C3-C5/%s CSR → INVALID_ARGUMENT, server keeps serving', async (_n, mk) => {
    const token = await issuer.mint({ namespace: 'a', serviceAccount: 'b' });
    const r = await call(client, { csr: mk() }, `Bearer ${token}`);
    expect(r.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(r.details).toBeTruthy();
  });

  it('D1/a request over the message limit is refused and the server lives', async () => {
    const token = await issuer.mint({ namespace: 'a', serviceAccount: 'b' });
    const r = await call(client, { csr: 'x'.repeat(200_000) }, `Bearer ${token}`);
    expect(r.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    const ok = await call(client, { csr: opensslCsr().csrPem }, `Bearer ${token}`);
    expect(ok.chain).toHaveLength(2);
  });
});

describe('renewal over mutual TLS', () => {
  it('ok/a certificate from this CA renews its own identity without a token', async () => {
    const token = await issuer.mint({ namespace: 'shop', serviceAccount: 'cart' });
    const first = opensslCsr();
    const r1 = await call(client, { csr: first.csrPem }, `Bearer ${token}`);
    const mtls = mkClient(grpc.credentials.createSsl(Buffer.from(server.trustBundlePem), Buffer.from(first.keyPem), Buffer.from(r1.chain![0]!)));
    try {
      const r2 = await call(mtls, { csr: opensslCsr().csrPem });
      expect(r2.code).toBeUndefined();
      expect(uriSans(parseCertificatesPem(r2.chain![0]!, 'leaf')[0]!)).toEqual([ID('shop', 'cart')]);
      // ...and still cannot ask for someone else.
      const r3 = await call(mtls, { csr: opensslCsr({ uris: [ID('shop', 'admin')] }).csrPem });
      expect(r3.code).toBe(grpc.status.PERMISSION_DENIED);
    } finally {
      mtls.close();
    }
  });

  it('fail/a certificate from another CA is not accepted', async () => {
    const other = tempDir();
    try {
      const { execFileSync } = await import('node:child_process');
      const k = join(other.path, 'k.pem');
      const c = join(other.path, 'c.pem');
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', k, '-out', c, '-subj', '/CN=x', '-days', '1', '-addext', `subjectAltName=URI:${ID('shop', 'cart')}`], { stdio: 'pipe' });
      const { readFileSync } = await import('node:fs');
      const mtls = mkClient(grpc.credentials.createSsl(Buffer.from(server.trustBundlePem), readFileSync(k), readFileSync(c)));
      try {
        expect((await call(mtls, { csr: opensslCsr().csrPem })).code).toBe(grpc.status.UNAUTHENTICATED);
      } finally {
        mtls.close();
      }
    } finally {
      other.cleanup();
    }
  });
});

describe('operations', () => {
  it('gRPC health reports SERVING', async () => {
    const { protoPath } = await import('grpc-health-check');
    const loader = await import('@grpc/proto-loader');
    const def = grpc.loadPackageDefinition(loader.loadSync(protoPath, { enums: String })) as unknown as { grpc: { health: { v1: { Health: new (a: string, c: grpc.ChannelCredentials) => grpc.Client & { check: (r: object, cb: (e: grpc.ServiceError | null, r: { status: string }) => void) => void } } } } };
    const h = new def.grpc.health.v1.Health(server.grpcAddress, grpc.credentials.createSsl(Buffer.from(server.trustBundlePem)));
    const res = await new Promise<{ status: string }>((resolve, reject) => h.check({ service: 'istio.v1.auth.IstioCertificateService' }, (e, r) => (e ? reject(e) : resolve(r))));
    h.close();
    expect(res.status).toBe('SERVING');
  });

  it('/metrics exposes the citadel_server_* counters, /healthz and /readyz answer', async () => {
    const base = `http://${server.httpAddress}`;
    const text = await (await fetch(`${base}/metrics`)).text();
    expect(text).toMatch(/^citadel_server_success_cert_issuance_count [1-9]\d*$/m);
    expect(text).toMatch(/^citadel_server_csr_count [1-9]\d*$/m);
    expect(text).toMatch(/^citadel_server_authentication_failure_count\{method="token"\} [1-9]\d*$/m);
    expect(text).toMatch(/^citadel_server_csr_parsing_err_count [1-9]\d*$/m);
    expect(text).toMatch(/^citadel_server_root_cert_expiry_seconds \d+$/m);
    expect(text).toMatch(/castellan_create_certificate_duration_seconds_bucket/);
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
  });

  it('D5/logs name requests but never carry tokens, CSRs or keys', async () => {
    const token = await issuer.mint({ namespace: 'audit', serviceAccount: 'me' });
    const csr = opensslCsr();
    await call(client, { csr: csr.csrPem }, `Bearer ${token}`);
    await call(client, { csr: 'garbage' }, `Bearer ${token}`);
    // both requests logged (the issuance and the refusal of the garbage CSR), whatever the pace of the log stream
    await vi.waitFor(() => expect(logLines.join('')).toMatch(/"event":"ca\.issued"[\s\S]*csr\.malformed|csr\.malformed[\s\S]*"event":"ca\.issued"/));
    const all = logLines.join('');
    expect(all).toContain('"event":"ca.issued"');
    expect(all).toContain('"requestId"');
    const body = (pem: string) => pem.split('\n')[1]!;
    for (const secret of [token, token.split('.')[1]!, token.split('.')[2]!, body(csr.csrPem), body(csr.keyPem), 'PRIVATE KEY-----']) {
      expect(all).not.toContain(secret);
    }
  });
});
