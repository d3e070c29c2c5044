/**
 * security.md R2 at the CA API: a long-lived connection authenticated by a
 * client certificate is re-validated on every call against the trust of the
 * moment. Renewal over mTLS works while the certificate's authority is
 * trusted (active, old, tainted) and stops, on the very same connection,
 * once that authority is retired.
 */
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IstioCertificateRequestSchema, IstioCertificateService } from '../../src/gen/istio/v1/auth/ca_pb.js';
import { createClient } from '../../src/grpc/service.ts';
import { DevTokenIssuer } from '../../src/identity/dev-issuer.ts';
import { silentLogger } from '../../src/platform/logger.ts';
import { startCaServer, type CaServerHandle } from '../../src/server/ca-server.ts';
import { defaultServerConfig } from '../../src/server/config.ts';
import { peculiarCsr } from '../support/csr.ts';
import { tempDir } from '../support/tmp.ts';

const tmp = tempDir('castellan-r2-');
let server: CaServerHandle;
let issuer: DevTokenIssuer;
const ID = 'spiffe://cluster.local/ns/default/sa/web';

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

async function renew(c: ReturnType<typeof createClient<typeof IstioCertificateService.method>>, auth?: string): Promise<string> {
  const md = new grpc.Metadata();
  if (auth) md.set('authorization', auth);
  try {
    await c.createCertificate(create(IstioCertificateRequestSchema, { csr: (await peculiarCsr(ID)).csrPem }), { metadata: md, deadline: Date.now() + 10_000 });
    return 'OK';
  } catch (e) {
    return grpc.status[(e as grpc.ServiceError).code]!;
  }
}

describe('R2: mTLS renewals are re-validated against the current trust', () => {
  it('ok/renewal works while the issuer is trusted and stops on the same connection once it is retired', async () => {
    const bundle = Buffer.from(server.trustBundlePem);
    const tokenClient = createClient(IstioCertificateService, server.grpcAddress, grpc.credentials.createSsl(bundle), { 'grpc.ssl_target_name_override': 'localhost' });
    const csr = await peculiarCsr(ID);
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${await issuer.mint({ namespace: 'default', serviceAccount: 'web' })}`);
    const res = await tokenClient.createCertificate(create(IstioCertificateRequestSchema, { csr: csr.csrPem }), { metadata: md });
    tokenClient.close();

    // One channel, one TLS connection, authenticated by the leaf of authority A; the server
    // trust for its own certificate is the union of old and new roots throughout.
    const mtls = createClient(IstioCertificateService, server.grpcAddress, grpc.credentials.createSsl(bundle, Buffer.from(csr.keyPem), Buffer.from(res.certChain.slice(0, -1).join(''))), {
      'grpc.ssl_target_name_override': 'localhost',
    });
    expect(await renew(mtls)).toBe('OK');
    const a = server.authority().id;
    await server.manager.prepare();
    await server.manager.activate(undefined);
    expect(await renew(mtls)).toBe('OK'); // A is old: still trusted
    await server.manager.taint(a);
    expect(await renew(mtls)).toBe('OK'); // tainted: still trusted, renewing is exactly what it should do
    const r = await server.manager.retire(a, true);
    expect(r.forcedRisk).toBeDefined(); // the leaf above is alive: retiring needed --force
    expect(await renew(mtls)).toBe('UNAUTHENTICATED');
    mtls.close();
  }, 60_000);
});
