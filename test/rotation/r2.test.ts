/**
 * security.md R2 and R3 at the CA API, over a real server on loopback.
 *
 * R2: a long-lived connection authenticated by a client certificate is
 * re-validated on every call against the trust of the moment.
 *
 * R3: taint means "this key may be stolen". From that moment no certificate
 * the tainted authority issued authenticates a caller to the CA (renewal,
 * bundle watch), although the trust bundle keeps the authority until it is
 * retired (the data plane goes on working while workloads re-issue). The
 * test forges, with the tainted authority's own key, a leaf for an identity
 * nobody proved, and presents it over mutual TLS: the TLS handshake accepts
 * it (the root is still in the bundle), the CA refuses it. The negative
 * control makes the same forgery while the authority is merely old: it is
 * accepted, so the refusal comes from the taint and nothing else. An honest
 * agent that renews over mTLS re-issues through its token, without operator
 * action, ends on the new authority and says so once in its log.
 */
import { Writable } from 'node:stream';
import { join } from 'node:path';
import { webcrypto } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent } from '../../src/agent/agent.ts';
import { authorityKeyIdOf } from '../../src/agent/cert-info.ts';
import { IstioCertificateRequestSchema, IstioCertificateService } from '../../src/gen/istio/v1/auth/ca_pb.js';
import { TrustService, WatchBundleRequestSchema } from '../../src/gen/castellan/v1/trust_pb.js';
import { createClient } from '../../src/grpc/service.ts';
import { DevTokenIssuer } from '../../src/identity/dev-issuer.ts';
import { TAINTED_ISSUER_MESSAGE } from '../../src/identity/mtls.ts';
import { writeFileAtomic } from '../../src/platform/files.ts';
import { createLogger, silentLogger } from '../../src/platform/logger.ts';
import { x509 } from '../../src/platform/x509.ts';
import { startCaServer, type CaServerHandle } from '../../src/server/ca-server.ts';
import { defaultServerConfig } from '../../src/server/config.ts';
import { peculiarCsr } from '../support/csr.ts';
import { tempDir } from '../support/tmp.ts';

const tmp = tempDir('castellan-r2-');
let server: CaServerHandle;
let issuer: DevTokenIssuer;
const WEB = 'spiffe://cluster.local/ns/default/sa/web';
const ADMIN = 'spiffe://cluster.local/ns/kube-system/sa/admin';

beforeAll(async () => {
  issuer = await DevTokenIssuer.create({ dir: join(tmp.path, 'issuer') });
  server = await startCaServer(
    defaultServerConfig({
      dataDir: join(tmp.path, 'data'),
      grpcListen: '127.0.0.1:0',
      httpListen: null,
      auth: { audiences: ['istio-ca'], jwt: { jwksFile: issuer.jwksPath, issuer: issuer.issuer } },
      signer: { workers: 0, maxBatchSize: 8, maxBatchWaitMs: 0, maxQueue: 100 },
      propagationMs: 0,
      autoRotate: false,
    }),
    { logger: silentLogger() },
  );
}, 60_000);
afterAll(async () => {
  await server?.close();
  tmp.cleanup();
});

type CaClient = ReturnType<typeof createClient<typeof IstioCertificateService.method>>;

function mtlsClient(keyPem: string, chainPem: string): CaClient {
  return createClient(IstioCertificateService, server.grpcAddress, grpc.credentials.createSsl(Buffer.from(server.trustBundlePem), Buffer.from(keyPem), Buffer.from(chainPem)), {
    'grpc.ssl_target_name_override': 'localhost',
  });
}

/** 'OK:<uri of the issued leaf>' or the status name with its details. */
async function renew(c: CaClient, id: string, auth?: string): Promise<string> {
  const md = new grpc.Metadata();
  if (auth) md.set('authorization', auth);
  try {
    const res = await c.createCertificate(create(IstioCertificateRequestSchema, { csr: (await peculiarCsr(id)).csrPem }), { metadata: md, deadline: Date.now() + 10_000 });
    const leaf = new x509.X509Certificate(res.certChain[0]!);
    return `OK:${leaf.getExtension(x509.SubjectAlternativeNameExtension)!.names.items[0]!.value}`;
  } catch (e) {
    const se = e as grpc.ServiceError;
    return `${grpc.status[se.code]}: ${se.details}`;
  }
}

async function issueByToken(id: string, sa: string, ns = 'default'): Promise<{ keyPem: string; chainPem: string }> {
  const c = createClient(IstioCertificateService, server.grpcAddress, grpc.credentials.createSsl(Buffer.from(server.trustBundlePem)), { 'grpc.ssl_target_name_override': 'localhost' });
  const csr = await peculiarCsr(id);
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${await issuer.mint({ namespace: ns, serviceAccount: sa })}`);
  const res = await c.createCertificate(create(IstioCertificateRequestSchema, { csr: csr.csrPem }), { metadata: md });
  c.close();
  return { keyPem: csr.keyPem, chainPem: res.certChain.slice(0, -1).join('') };
}

/**
 * What a thief holding authority `id`'s key can do: mint a leaf for any
 * identity, with the SVID profile the CA itself uses.
 */
async function forgeLeaf(id: string, spiffeId: string): Promise<{ keyPem: string; chainPem: string }> {
  const authority = server.manager.view().authorities.get(id)!;
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const caKey = await webcrypto.subtle.importKey('pkcs8', authority.keyPkcs8Der, alg, false, ['sign']);
  const caCert = new x509.X509Certificate(authority.certDer);
  const leafKeys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
  const now = Date.now();
  const leaf = await x509.X509CertificateGenerator.create({
    serialNumber: '0badc0de01',
    subject: '',
    issuer: caCert.subject,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 3600_000),
    publicKey: leafKeys.publicKey,
    signingKey: caKey,
    signingAlgorithm: alg,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: spiffeId }], true),
      await x509.AuthorityKeyIdentifierExtension.create(caCert),
    ],
  });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', leafKeys.privateKey)).toString('base64');
  return { keyPem: `-----BEGIN PRIVATE KEY-----\n${pkcs8.match(/.{1,64}/g)!.join('\n')}\n-----END PRIVATE KEY-----\n`, chainPem: leaf.toString('pem') + '\n' };
}

async function watchOnce(keyPem: string, chainPem: string): Promise<string> {
  const c = createClient(TrustService, server.grpcAddress, grpc.credentials.createSsl(Buffer.from(server.trustBundlePem), Buffer.from(keyPem), Buffer.from(chainPem)), {
    'grpc.ssl_target_name_override': 'localhost',
  });
  try {
    return await new Promise<string>((resolve) => {
      const call = c.watchBundle(create(WatchBundleRequestSchema, {}));
      call.on('data', () => {
        call.cancel();
        resolve('OK');
      });
      call.on('error', (e: grpc.ServiceError) => resolve(e.code === grpc.status.CANCELLED ? 'OK' : `${grpc.status[e.code]}: ${e.details}`));
    });
  } finally {
    c.close();
  }
}

describe('R2/R3: client certificates are believed only while their authority vouches', () => {
  it('ok/R2 renewal over one mTLS connection: accepted while active and old; refused once tainted and once retired', async () => {
    const leaf = await issueByToken(WEB, 'web');
    const mtls = mtlsClient(leaf.keyPem, leaf.chainPem);
    expect(await renew(mtls, WEB)).toBe(`OK:${WEB}`);
    const a = server.authority().id;
    await server.manager.prepare();
    await server.manager.activate(undefined);
    expect(await renew(mtls, WEB)).toBe(`OK:${WEB}`); // A is old: still vouches
    await server.manager.taint(a);
    expect(await renew(mtls, WEB)).toBe(`UNAUTHENTICATED: ${TAINTED_ISSUER_MESSAGE}`); // same connection, new answer
    const r = await server.manager.retire(a, true);
    expect(r.forcedRisk).toBeDefined();
    expect(await renew(mtls, WEB)).toMatch(/^UNAUTHENTICATED/);
    mtls.close();
  }, 60_000);

  it('fail/R3 a leaf forged with a tainted key for another identity gets nothing, though TLS still trusts it (control: the same forgery before the taint is accepted)', async () => {
    const a = server.authority().id;
    await server.manager.prepare();
    await server.manager.activate(undefined); // a is old now

    // Negative control: the forgery machinery works, and an old authority vouches.
    const early = await forgeLeaf(a, ADMIN);
    const control = mtlsClient(early.keyPem, early.chainPem);
    expect(await renew(control, ADMIN)).toBe(`OK:${ADMIN}`);
    expect(await watchOnce(early.keyPem, early.chainPem)).toBe('OK');
    control.close();

    await server.manager.taint(a);
    // The tainted root is still in every bundle the server hands out (the data plane keeps working)...
    const taintedRootPem = server.manager.view().authorities.get(a)!.certPem;
    expect(server.trustBundlePem.replace(/\s/g, '')).toContain(taintedRootPem.replace(/\s/g, ''));
    // ...but neither a new forgery nor the earlier one convinces the CA, on either service.
    for (const forged of [await forgeLeaf(a, ADMIN), early]) {
      const c = mtlsClient(forged.keyPem, forged.chainPem);
      expect(await renew(c, ADMIN)).toBe(`UNAUTHENTICATED: ${TAINTED_ISSUER_MESSAGE}`);
      // a token for another identity does not help the forgery: the token names its own holder
      expect(await renew(c, ADMIN, `Bearer ${await issuer.mint({ namespace: 'default', serviceAccount: 'web' })}`)).toMatch(/^PERMISSION_DENIED/);
      c.close();
      expect(await watchOnce(forged.keyPem, forged.chainPem)).toBe(`UNAUTHENTICATED: ${TAINTED_ISSUER_MESSAGE}`);
    }
  }, 60_000);

  it('ok/R3 an honest agent renewing over mTLS re-issues through its token when its authority is tainted, ends on the new authority, and logs it once', async () => {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString().split('\n')) if (l.trim()) lines.push(JSON.parse(l) as Record<string, unknown>);
        done();
      },
    });
    const tokenFile = join(tmp.path, 'agent-token');
    const goodToken = await issuer.mint({ namespace: 'default', serviceAccount: 'web' });
    await writeFileAtomic(tokenFile, goodToken, 0o600);
    const agent = await startAgent(
      {
        caAddress: server.grpcAddress,
        caRootPem: server.trustBundlePem,
        caServerName: 'localhost',
        tokenFile,
        trustDomain: 'cluster.local',
        sdsSocket: join(tmp.path, 'agent', 'sds.sock'),
        certTtlMs: 3600_000,
        keyType: 'ec-p256',
        graceRatio: 0.5,
        httpListen: null,
        renewWithCertificate: true,
      },
      { logger: createLogger({ level: 'info', destination: sink }) },
    );
    try {
      await agent.cache.whenReady();
      // Renewal goes over mTLS: it works with a token file the CA would refuse.
      await writeFileAtomic(tokenFile, 'not-a-token', 0o600);
      const first = agent.cache.issued!.serial;
      await agent.cache.reissueNow('test');
      expect(agent.cache.issued!.serial).not.toBe(first);

      await writeFileAtomic(tokenFile, goodToken, 0o600);
      const a = server.authority().id;
      expect(authorityKeyIdOf(agent.cache.issued!.chainPem)).toBe(a);
      await server.manager.prepare();
      await server.manager.activate(undefined);
      const b = server.authority().id;
      await server.manager.taint(a); // pushed to the agent, which re-issues at once
      await expect.poll(() => authorityKeyIdOf(agent.cache.issued!.chainPem), { timeout: 10_000 }).toBe(b);
      const refused = lines.filter((l) => l.event === 'agent.mtls_renewal_refused');
      expect(refused).toHaveLength(1);
      expect(String(refused[0]!.reason)).toContain('tainted authority');

      // Back on mTLS with the new authority's leaf: no token needed, nothing more logged.
      await writeFileAtomic(tokenFile, 'not-a-token', 0o600);
      await agent.cache.reissueNow('test');
      expect(authorityKeyIdOf(agent.cache.issued!.chainPem)).toBe(b);
      expect(lines.filter((l) => l.event === 'agent.mtls_renewal_refused')).toHaveLength(1);
    } finally {
      await agent.close();
    }
  }, 60_000);
});
