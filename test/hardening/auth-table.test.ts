/**
 * security.md C8, C7 and D6 against the real CA server on loopback:
 * - C8: a table over every method of every service on the CA port, built
 *   from the generated service descriptors (a method added later without a
 *   row fails the coverage test), each called with no credentials and with
 *   each kind of bad credential: UNAUTHENTICATED, promptly;
 * - D6: the admin API is not on the network port (UNIMPLEMENTED there) but
 *   on an owner-only Unix socket; the ops port has no debug or admin
 *   endpoint; the CA port speaks TLS >= 1.2 only and no plaintext;
 * - C7: identities of client certificates are read from the SAN extension
 *   structurally: SAN text that merely looks like a URI, a SPIFFE ID in the
 *   subject, or two URIs never name a caller.
 */
import { JwtSvidService } from '../../src/gen/castellan/v1/jwt_pb.js';
import { webcrypto } from 'node:crypto';
import { statSync } from 'node:fs';
import { connect as tlsConnect } from 'node:tls';
import { dirname, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { create, type DescMessage } from '@bufbuild/protobuf';
import type { GenService, GenServiceMethods } from '@bufbuild/protobuf/codegenv2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AdminService } from '../../src/gen/castellan/v1/admin_pb.js';
import { TrustService } from '../../src/gen/castellan/v1/trust_pb.js';
import { IstioCertificateService } from '../../src/gen/istio/v1/auth/ca_pb.js';
import { serviceDefinition } from '../../src/grpc/service.ts';
import { DevTokenIssuer } from '../../src/identity/dev-issuer.ts';
import { authenticatePeerCertificate, uriSans } from '../../src/identity/mtls.ts';
import { CastellanError } from '../../src/platform/errors.ts';
import { silentLogger } from '../../src/platform/logger.ts';
import { x509 } from '../../src/platform/x509.ts';
import { startCaServer, type CaServerHandle } from '../../src/server/ca-server.ts';
import { defaultServerConfig } from '../../src/server/config.ts';
import { makeCa, type TestCa } from '../pki/helpers.ts';
import { peculiarCsr } from '../support/csr.ts';
import { tempDir } from '../support/tmp.ts';

// created when the tests run, not when the file is collected (vitest list leaves no directory behind)
let tmp: ReturnType<typeof tempDir>;
beforeAll(() => {
  tmp = tempDir('castellan-c8-');
});
let server: CaServerHandle;
let issuer: DevTokenIssuer;
let stranger: DevTokenIssuer;
let foreignCa: TestCa;
let csrPem: string;

beforeAll(async () => {
  issuer = await DevTokenIssuer.create({ dir: join(tmp.path, 'issuer') });
  stranger = await DevTokenIssuer.create({ dir: join(tmp.path, 'stranger'), issuer: issuer.issuer });
  server = await startCaServer(
    defaultServerConfig({
      dataDir: join(tmp.path, 'data'),
      grpcListen: '127.0.0.1:0',
      httpListen: '127.0.0.1:0',
      auth: { audiences: ['istio-ca'], jwt: { jwksFile: issuer.jwksPath, issuer: issuer.issuer } },
      signer: { workers: 0, maxBatchSize: 16, maxBatchWaitMs: 1, maxQueue: 100 },
      shutdownGraceMs: 200,
    }),
    { logger: silentLogger() },
  );
  foreignCa = await makeCa({ keyType: 'ec-p256' });
  csrPem = (await peculiarCsr('spiffe://cluster.local/ns/default/sa/web')).csrPem;
}, 60_000);

afterAll(async () => {
  await server?.close();
  tmp?.cleanup();
});

// ---- C8: every method, every bad credential ----

type AnyService = GenService<GenServiceMethods>;
/** The services the CA's network port serves, and why each method is (or is not) authenticated. */
const PORT_SERVICES: { service: AnyService; request: (m: { input: DescMessage }) => unknown }[] = [
  { service: IstioCertificateService as unknown as AnyService, request: (m) => create(m.input, { csr: csrPem, validityDuration: 3600n } as never) },
  { service: TrustService as unknown as AnyService, request: (m) => create(m.input, {}) },
  { service: JwtSvidService as unknown as AnyService, request: (m) => create(m.input, { audience: ['spiffe://cluster.local/ns/default/sa/api'] } as never) },
];

/** A client certificate from a CA this server does not know, naming a workload of its trust domain. */
async function foreignClientCert(): Promise<{ key: string; cert: string }> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: '01',
    subject: '',
    issuer: new x509.X509Certificate(foreignCa.certDer).subject,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 3600_000),
    publicKey: keys.publicKey,
    signingKey: foreignCa.keys.privateKey,
    signingAlgorithm: alg,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: 'spiffe://cluster.local/ns/default/sa/web' }], true), new x509.BasicConstraintsExtension(false, undefined, true)],
  });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)).toString('base64');
  return { key: `-----BEGIN PRIVATE KEY-----\n${pkcs8}\n-----END PRIVATE KEY-----\n`, cert: cert.toString('pem') + '\n' };
}

interface Credential {
  name: string;
  authorization?: () => Promise<string>;
  clientCert?: () => Promise<{ key: string; cert: string }>;
}
const CREDENTIALS: Credential[] = [
  { name: 'no credentials' },
  { name: 'garbage bearer token', authorization: async () => 'Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln' },
  { name: 'not a bearer token', authorization: async () => 'Basic dXNlcjpwYXNz' },
  { name: 'expired token', authorization: async () => `Bearer ${await issuer.mint({ namespace: 'default', serviceAccount: 'web', now: Date.now() - 7200_000, ttlSeconds: 60 })}` },
  { name: 'token for another audience', authorization: async () => `Bearer ${await issuer.mint({ namespace: 'default', serviceAccount: 'web', audiences: ['https://kubernetes.default.svc'] })}` },
  { name: 'token signed by a key outside the JWKS', authorization: async () => `Bearer ${await stranger.mint({ namespace: 'default', serviceAccount: 'web' })}` },
  { name: 'client certificate from another CA', clientCert: foreignClientCert },
];

/** Calls one method of `service` as `cred`; resolves with the status it ends with, or 'DATA' if it answered. */
async function callAs(service: AnyService, method: AnyService['methods'][number], request: unknown, cred: Credential): Promise<{ status: string; details: string; ms: number }> {
  const Ctor = grpc.makeGenericClientConstructor(serviceDefinition(service), service.typeName);
  const cc = cred.clientCert ? await cred.clientCert() : undefined;
  const creds = grpc.credentials.createSsl(Buffer.from(server.trustBundlePem), cc ? Buffer.from(cc.key) : null, cc ? Buffer.from(cc.cert) : null);
  const client = new Ctor(server.grpcAddress, creds, { 'grpc.ssl_target_name_override': 'localhost' }) as grpc.Client & Record<string, (...a: unknown[]) => unknown>;
  const md = new grpc.Metadata();
  if (cred.authorization) md.set('authorization', await cred.authorization());
  const t0 = performance.now();
  try {
    return await new Promise((resolve) => {
      const settle = (status: string, details: string) => resolve({ status, details, ms: performance.now() - t0 });
      const opts = { deadline: Date.now() + 1500 };
      if (method.methodKind === 'unary') {
        client[method.localName]!(request, md, opts, (e: grpc.ServiceError | null) => (e ? settle(grpc.status[e.code]!, e.details) : settle('DATA', '')));
      } else if (method.methodKind === 'server_streaming') {
        const s = client[method.localName]!(request, md, opts) as NodeJS.EventEmitter;
        s.on('data', () => settle('DATA', ''));
        s.on('error', (e: grpc.ServiceError) => settle(grpc.status[e.code]!, e.details));
        s.on('status', (st: grpc.StatusObject) => st.code === grpc.status.OK && settle('OK', st.details));
      } else throw new Error(`no table entry for ${method.methodKind} methods`);
    });
  } finally {
    client.close();
  }
}

describe('C8: every method on the CA port refuses every bad credential with UNAUTHENTICATED', () => {
  it('C8/the table covers every method of every service on the port', () => {
    const rows = PORT_SERVICES.flatMap((s) => s.service.methods.map((m) => `${s.service.typeName}/${m.name}`));
    expect(rows.sort()).toEqual(['castellan.v1.JwtSvidService/MintJwtSvid', 'castellan.v1.TrustService/WatchBundle', 'istio.v1.auth.IstioCertificateService/CreateCertificate']);
    // gRPC health (grpc.health.v1.Health/Check, Watch) is public on purpose, like the kubelet's probes,
    // and says only SERVING / NOT_SERVING.
  });

  const cases = PORT_SERVICES.flatMap((s) =>
    s.service.methods.flatMap((m) => CREDENTIALS.map((c) => ({ id: `${s.service.typeName}/${m.name}`, s, m, c }))),
  );
  const refusedAtOnce = async (x: (typeof cases)[number]) => {
    const r = await callAs(x.s.service, x.m, x.s.request(x.m as never), x.c);
    expect(r.status, `${x.id} as ${x.c.name}: ${r.details}`).toBe('UNAUTHENTICATED');
    expect(r.ms, `${x.id} as ${x.c.name}: refused at once, not at the deadline`).toBeLessThan(1000);
  };
  // WatchBundle once refused with call.destroy(error), which on a grpc-js server-streaming call
  // never sends the status (the stream stayed open until the caller's deadline); found by this
  // table, fixed in src/server/ca-server.ts.
  for (const x of cases) it(`C8/${x.id} as ${x.c.name} → UNAUTHENTICATED at once`, () => refusedAtOnce(x));

  it('C8/the same methods work with a valid token (the table is not vacuous)', async () => {
    const ok: Credential = { name: 'valid token', authorization: async () => `Bearer ${await issuer.mint({ namespace: 'default', serviceAccount: 'web' })}` };
    for (const s of PORT_SERVICES) {
      for (const m of s.service.methods) expect((await callAs(s.service, m, s.request(m as never), ok)).status, `${s.service.typeName}/${m.name}`).toBe('DATA');
    }
  });
});

// ---- D6: admin off the network, no debug endpoints, TLS >= 1.2 only ----

describe('D6: admin and debug surfaces, TLS versions, no plaintext', () => {
  it('D6/the admin API is not served on the CA port (UNIMPLEMENTED for every method)', async () => {
    const svc = AdminService as unknown as AnyService;
    const token: Credential = { name: 'valid token', authorization: async () => `Bearer ${await issuer.mint({ namespace: 'default', serviceAccount: 'web' })}` };
    for (const m of svc.methods) {
      const r = await callAs(svc, m, create(m.input, {}), token);
      expect(r.status, `castellan.v1.AdminService/${m.name} on the network port`).toBe('UNIMPLEMENTED');
    }
  });

  it('D6/the admin socket is owner-only (socket 0600 or tighter, in a directory closed to group and others)', () => {
    const st = statSync(server.adminSocket);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o077, `socket mode ${(st.mode & 0o777).toString(8)}`).toBe(0);
    expect(st.uid).toBe(process.getuid!());
    expect(statSync(dirname(server.adminSocket)).mode & 0o077).toBe(0);
  });

  it('D6/the ops port serves /metrics /healthz /readyz only: no debug, pprof, config or admin endpoint; GET and HEAD only', async () => {
    const base = `http://${server.httpAddress}`;
    for (const p of ['/debug', '/debug/pprof/', '/debug/vars', '/admin', '/config_dump', '/quitquitquit', '/keyring', '/metrics/../admin', '/%2e%2e/admin']) {
      expect((await fetch(base + p)).status, p).toBe(404);
    }
    for (const method of ['POST', 'PUT', 'DELETE']) expect((await fetch(`${base}/metrics`, { method })).status, method).toBe(405);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).not.toMatch(/PRIVATE KEY|BEGIN CERTIFICATE REQUEST/);
  });

  const handshake = (o: { minVersion?: 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3'; maxVersion?: 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3'; ciphers?: string }): Promise<string> =>
    new Promise((resolve) => {
      const [host, port] = [server.grpcAddress.slice(0, server.grpcAddress.lastIndexOf(':')), Number(server.grpcAddress.slice(server.grpcAddress.lastIndexOf(':') + 1))];
      const s = tlsConnect({ host, port, servername: 'localhost', ca: server.trustBundlePem, ALPNProtocols: ['h2'], ...o });
      s.once('secureConnect', () => {
        resolve(`ok ${s.getProtocol()} ${s.alpnProtocol}`);
        s.destroy();
      });
      s.once('error', (e: NodeJS.ErrnoException) => resolve(`error ${e.code ?? ''} ${e.message}`));
    });

  it('D6/TLS 1.2 and 1.3 are accepted (h2); TLS 1.0 and 1.1 are refused by the server', async () => {
    expect(await handshake({ minVersion: 'TLSv1.3' })).toBe('ok TLSv1.3 h2');
    expect(await handshake({ maxVersion: 'TLSv1.2' })).toBe('ok TLSv1.2 h2');
    for (const v of ['TLSv1', 'TLSv1.1'] as const) {
      // the client offers only the old version (security level 0 so that it can); the server must say no
      const r = await handshake({ minVersion: v, maxVersion: v, ciphers: 'DEFAULT:@SECLEVEL=0' });
      console.log(`D6: ${v} client → ${r}`);
      expect(r, v).toMatch(/^error /);
      expect(r, `${v}: refused by the server (a protocol alert), not by our own client`).toMatch(/alert|protocol version|unsupported protocol|wrong version/i);
      expect(r).not.toMatch(/no protocols available/i);
    }
  });

  it('D6/no plaintext fallback: a plaintext gRPC client gets nothing', async () => {
    const Ctor = grpc.makeGenericClientConstructor(serviceDefinition(IstioCertificateService as unknown as AnyService), 'x');
    const c = new Ctor(server.grpcAddress, grpc.credentials.createInsecure()) as grpc.Client & Record<string, (...a: unknown[]) => unknown>;
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${await issuer.mint({ namespace: 'default', serviceAccount: 'web' })}`);
    const r = await new Promise<string>((resolve) =>
      c.createCertificate!(create(IstioCertificateService.method.createCertificate.input, { csr: csrPem, validityDuration: 3600n }), md, { deadline: Date.now() + 3000 }, (e: grpc.ServiceError | null) =>
        resolve(e ? grpc.status[e.code]! : 'OK'),
      ),
    );
    c.close();
    expect(['UNAVAILABLE', 'DEADLINE_EXCEEDED', 'INTERNAL']).toContain(r);
  });
});

// ---- C7: identity from the SAN extension, structurally ----

describe('C7: a client certificate names a caller only through exactly one structural URI SAN', () => {
  let ca: TestCa;
  beforeAll(async () => {
    ca = await makeCa({ keyType: 'ec-p256' });
  });
  const leaf = async (subject: string, names: { type: 'url' | 'dns' | 'email'; value: string }[]): Promise<Uint8Array> => {
    const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
    const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    const caCert = new x509.X509Certificate(ca.certDer);
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: '0a',
      subject,
      issuer: caCert.subject,
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 3600_000),
      publicKey: keys.publicKey,
      signingKey: ca.keys.privateKey,
      signingAlgorithm: alg,
      extensions: [
        ...(names.length ? [new x509.SubjectAlternativeNameExtension(names, subject === '')] : []),
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.AuthorityKeyIdentifierExtension(caCert.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId),
      ],
    });
    return new Uint8Array(cert.rawData);
  };
  const trust = () => ({ trustDomain: 'cluster.local', vouchingSignersDer: [ca.certDer] });
  const refused = (der: Uint8Array): CastellanError => {
    try {
      authenticatePeerCertificate(der, trust(), Date.now());
    } catch (e) {
      expect(e).toBeInstanceOf(CastellanError);
      expect((e as CastellanError).kind).toBe('UNAUTHENTICATED');
      return e as CastellanError;
    }
    throw new Error('accepted');
  };

  it('ok/one URI SAN names the workload', async () => {
    const der = await leaf('', [{ type: 'url', value: 'spiffe://cluster.local/ns/shop/sa/cart' }]);
    expect(authenticatePeerCertificate(der, trust(), Date.now()).spiffeId).toBe('spiffe://cluster.local/ns/shop/sa/cart');
  });

  it('C7/a DNS SAN whose text reads "URI:spiffe://…" names nobody', async () => {
    const der = await leaf('', [{ type: 'dns', value: 'x, URI:spiffe://cluster.local/ns/kube-system/sa/admin' }]);
    expect(uriSans(der)).toEqual([]);
    expect(refused(der).message).toMatch(/exactly one URI SAN, found 0/);
  });

  it('C7/an e-mail SAN that smuggles a URI, and a SPIFFE ID in the subject, name nobody', async () => {
    const der = await leaf('CN=spiffe://cluster.local/ns/kube-system/sa/admin', [{ type: 'email', value: 'a@b, URI:spiffe://cluster.local/ns/kube-system/sa/admin' }]);
    expect(uriSans(der)).toEqual([]);
    refused(der);
  });

  it('C7/a URI SAN value with a comma and a second "URI:" inside is one URI, and not a SPIFFE workload ID', async () => {
    const der = await leaf('', [{ type: 'url', value: 'spiffe://cluster.local/ns/shop/sa/cart, URI:spiffe://cluster.local/ns/kube-system/sa/admin' }]);
    expect(uriSans(der)).toHaveLength(1);
    expect(refused(der).message).toMatch(/not a workload SPIFFE ID/);
  });

  it('C7/two URI SANs: refused, whichever comes first', async () => {
    const der = await leaf('', [
      { type: 'url', value: 'spiffe://cluster.local/ns/shop/sa/cart' },
      { type: 'url', value: 'spiffe://cluster.local/ns/kube-system/sa/admin' },
    ]);
    expect(refused(der).message).toMatch(/exactly one URI SAN, found 2/);
  });
});
