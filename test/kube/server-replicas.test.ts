/**
 * Two CA server replicas with `--keystore kubernetes --publish-trust-bundle`
 * against the HTTPS double of the Kubernetes API (no real API server can run
 * here): cold-starting together they end with one root in the Secret; one
 * of them holds the Lease and publishes `istio-ca-root-cert` into every
 * namespace; a rotation made through one replica reaches the other through
 * the Secret watch, and the new bundle reaches every ConfigMap.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { startCaServer, type CaServerHandle } from '../../src/server/ca-server.ts';
import { defaultServerConfig } from '../../src/server/config.ts';
import { silentLogger } from '../../src/platform/logger.ts';
import { parseKeyringDoc } from '../../src/ca/keyring-doc.ts';
import { tempDir } from '../support/tmp.ts';
import { startDouble, unb64, until, type DoubleEnv } from './helpers.ts';

let env: DoubleEnv;
const tmp = tempDir('castellan-replicas-');
const servers: CaServerHandle[] = [];

beforeAll(async () => {
  env = await startDouble();
  for (const ns of ['castellan-system', 'default', 'shop', 'kube-system']) env.api.createNamespace(ns, ns === 'kube-system' ? { mesh: 'off' } : { mesh: 'on' });
});
afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
  await env.stop();
  tmp.cleanup();
});

function config(name: string) {
  const dataDir = join(tmp.path, name);
  mkdirSync(dataDir, { mode: 0o700 });
  return defaultServerConfig({
    dataDir,
    grpcListen: '127.0.0.1:0',
    httpListen: null,
    plaintext: true,
    propagationMs: 0,
    autoRotate: false,
    keystore: { kind: 'kubernetes', secretNamespace: 'castellan-system', secretName: 'castellan-ca', leaseNamespace: 'castellan-system', leaseName: 'castellan-leader', kubeconfig: env.kubeconfig },
    publishTrustBundle: { namespaceSelector: 'mesh=on' },
  });
}

const bundleIn = (ns: string): string | undefined => (env.api.get('configmaps', ns, 'istio-ca-root-cert')?.data as Record<string, string> | undefined)?.['root-cert.pem'];

describe('CA replicas on the Kubernetes keystore (HTTP double of the Kubernetes API)', () => {
  it('ok/cold start together: one root, one leader, the bundle in every selected namespace', async () => {
    const [a, b] = await Promise.all([startCaServer(config('a'), { logger: silentLogger() }), startCaServer(config('b'), { logger: silentLogger() })]);
    servers.push(a, b);
    expect(a.authority().id).toBe(b.authority().id);
    const secret = env.api.get('secrets', 'castellan-system', 'castellan-ca')!;
    const doc = parseKeyringDoc(unb64((secret.data as Record<string, string>)['keyring.json']!), 'secret');
    expect(doc.authorities).toHaveLength(1);
    expect(doc.authorities[0]!.id).toBe(a.authority().id);
    await until(() => ['castellan-system', 'default', 'shop'].every((ns) => bundleIn(ns) === a.trustBundlePem));
    expect(bundleIn('kube-system')).toBeUndefined();
    const lease = env.api.get('leases', 'castellan-system', 'castellan-leader')!;
    expect((lease.spec as { holderIdentity?: string }).holderIdentity).toBeTruthy();
  });

  it('ok/a rotation through one replica reaches the other and every ConfigMap', async () => {
    const [a, b] = servers as [CaServerHandle, CaServerHandle];
    const p = await a.manager.prepare();
    await until(() => b.manager.view().rootsDer.length === 2);
    await until(() => ['castellan-system', 'default', 'shop'].every((ns) => (bundleIn(ns)?.match(/BEGIN CERTIFICATE/g) ?? []).length === 2));
    await b.manager.activate(undefined);
    await until(() => a.authority().id === p.authority.id);
    expect(b.authority().id).toBe(p.authority.id);
    // the signer of the replica that did not make the change follows too
    expect(a.manager.view().active.id).toBe(p.authority.id);
    // a namespace created later gets the current bundle
    env.api.createNamespace('payments', { mesh: 'on' });
    await until(() => bundleIn('payments') === a.trustBundlePem);
  });

  it('ok/a foreign bundle set through one replica is stored in the Secret and reaches the other (issue 17)', async () => {
    const [a, b] = servers as [CaServerHandle, CaServerHandle];
    const foreignPem = (await import('../../src/ca/authority.ts')).createSelfSignedRoot({ trustDomain: 'other.example', keyType: 'ec-p256', ttlMs: 86_400_000, now: Date.now() });
    await b.federation.setManual('other.example', (await foreignPem).certPem, '');
    await until(() => a.federation.find('other.example'));
    expect(a.federation.find('other.example')!.bundle.x509Authorities).toHaveLength(1);
    const secret = env.api.get('secrets', 'castellan-system', 'castellan-ca')!;
    const doc = parseKeyringDoc(unb64((secret.data as Record<string, string>)['keyring.json']!), 'secret');
    expect(doc.federatedBundles?.map((r) => [r.trustDomain, r.source])).toEqual([['other.example', 'manual']]);
  });
});
