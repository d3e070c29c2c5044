/**
 * Two real CA servers of different trust domains federate through their
 * bundle endpoints, one over https_spiffe (A serves an X.509-SVID; B
 * authenticates it with A's bundle, bootstrapped from a file) and one over
 * https_web (B serves a web PKI certificate; A validates it with the given
 * CA): each ends up with the other's bundle, and a rotation in one reaches
 * the other within one refresh, down to the agents' WatchBundle. The served
 * documents are checked by Python (json, cryptography, PyJWT).
 */
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildAuthority, createSelfSignedRoot } from '../../src/ca/authority.ts';
import { issueServingCertificate } from '../../src/ca/serving.ts';
import { defaultServerConfig } from '../../src/server/config.ts';
import { resolveFederationConfig } from '../../src/server/federation-config.ts';
import { parseSpiffeBundle } from '../../src/spiffe/bundle.ts';
import { describeWith, peers } from '../support/peers.ts';
import { tempDir } from '../support/tmp.ts';
import { startFedCa, until, watchBundle, type FedCa } from './harness.ts';

const tmp = tempDir('castellan-fed-');
let a: FedCa;
let b: FedCa;

export async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** A web PKI stand-in: a CA outside every trust domain, and a server certificate for localhost. */
export async function webIdentity(dir: string): Promise<{ caFile: string; certFile: string; keyFile: string }> {
  const now = Date.now();
  const root = await createSelfSignedRoot({ trustDomain: 'web-pki.test', keyType: 'ec-p256', ttlMs: 86_400_000, now });
  const der = Buffer.from(new X509Certificate(root.certPem).raw);
  const auth = buildAuthority({ certDer: der, keyPem: root.keyPem, chainDers: [], rootDers: [der], now, what: 'web CA' });
  const id = await issueServingCertificate(auth, { dnsNames: ['localhost'], trustDomain: 'web-pki.test', ttlMs: 3600_000, now });
  const files = { caFile: join(dir, 'web-ca.pem'), certFile: join(dir, 'web.pem'), keyFile: join(dir, 'web-key.pem') };
  writeFileSync(files.caFile, root.certPem);
  writeFileSync(files.certFile, id.certChainPem);
  writeFileSync(files.keyFile, id.keyPem, { mode: 0o600 });
  return files;
}

const fed = (v: Record<string, unknown>, td: string) =>
  resolveFederationConfig({ ...Object.fromEntries(Object.entries(defaultServerConfigFlags()).map(([k, x]) => [k, x])), ...v } as never, td);

function defaultServerConfigFlags(): Record<string, unknown> {
  return { 'bundle-endpoint-profile': 'https_spiffe', 'bundle-refresh-hint': '1s', 'federate-with': [], 'federation-refresh-min': '200ms', 'federation-refresh-max': '5s' };
}

beforeAll(async () => {
  const [portA, portB] = [await freePort(), await freePort()];
  const web = await webIdentity(tmp.path);
  // A: https_spiffe endpoint; fetches B over https_web with the web CA
  a = await startFedCa(tmp.path, 'a', 'a.example', {
    federation: fed({ 'bundle-endpoint-listen': `127.0.0.1:${portA}`, federation: JSON.stringify([{ trustDomain: 'b.example', bundleEndpointUrl: `https://localhost:${portB}/`, profile: 'https_web', caFile: web.caFile }]) }, 'a.example'),
  });
  writeFileSync(join(tmp.path, 'a-bootstrap.json'), a.server.federation.ownBundleDocument());
  // B: https_web endpoint; fetches A over https_spiffe, bootstrapped from A's bundle file
  b = await startFedCa(tmp.path, 'b', 'b.example', {
    federation: fed(
      {
        'bundle-endpoint-listen': `127.0.0.1:${portB}`,
        'bundle-endpoint-profile': 'https_web',
        'bundle-endpoint-cert': web.certFile,
        'bundle-endpoint-key': web.keyFile,
        federation: JSON.stringify([{ trustDomain: 'a.example', bundleEndpointUrl: `https://127.0.0.1:${portA}/`, endpointSpiffeId: 'spiffe://a.example/castellan/bundle-endpoint', bootstrapBundle: join(tmp.path, 'a-bootstrap.json') }]),
      },
      'b.example',
    ),
  });
}, 90_000);
afterAll(async () => {
  await a?.stop();
  await b?.stop();
  tmp.cleanup();
});

const rootsOf = (ca: FedCa, td: string): string[] => (ca.server.federation.find(td)?.bundle.x509Authorities ?? []).map((d) => d.toString('base64')).sort();
const ownRoots = (ca: FedCa): string[] => ca.server.manager.view().rootsDer.map((d) => d.toString('base64')).sort();

describe('two trust domains federate', () => {
  it('ok/each ends up with the other\'s bundle (https_spiffe one way, https_web the other)', async () => {
    await until(() => b.server.federation.find('a.example')?.record.source === 'endpoint', 20_000, 'B to fetch A over https_spiffe');
    await until(() => a.server.federation.find('b.example'), 20_000, 'A to fetch B over https_web').catch((e: Error) => {
      throw new Error(`${e.message}: ${a.server.federation.fetchStatus.get('b.example')?.lastError}`);
    });
    expect(rootsOf(b, 'a.example')).toEqual(ownRoots(a));
    expect(rootsOf(a, 'b.example')).toEqual(ownRoots(b));
    expect(b.server.federation.find('a.example')!.bundle.jwtAuthorities.map((k) => k.kid)).toEqual([a.server.jwtKeys!.view().active!.kid]);
    const listed = b.server.federation.list()[0]!;
    expect(listed).toMatchObject({ trustDomain: 'a.example', source: 'endpoint', x509Authorities: 1, jwtAuthorities: 1 });
    expect(listed.lastRefresh).toBeDefined();
    const metrics = await b.server.metrics.registry.metrics();
    expect(metrics).toMatch(new RegExp(`castellan_federation_bundle_sequence\\{trust_domain="a.example"\\} ${b.server.federation.find('a.example')!.record.sequence}`));
    expect(metrics).toMatch(/castellan_federation_last_refresh_timestamp_seconds\{trust_domain="a.example"\} \d{10}/);
  }, 60_000);

  it('ok/a rotation (a new prepared root) in either reaches the other within one refresh, and its agents', async () => {
    const watch = await watchBundle(b);
    try {
      const seqBefore = a.server.federation.ownBundle().sequence!;
      await a.server.manager.prepare();
      const t0 = Date.now();
      await until(() => rootsOf(b, 'a.example').length === 2, 10_000, 'A\'s new root at B');
      // refresh hint 1 s (A serves it), bounded to [200 ms, 5 s]: one refresh, plus a loaded machine's slack
      expect(Date.now() - t0).toBeLessThan(5_000);
      expect(rootsOf(b, 'a.example')).toEqual(ownRoots(a));
      const u = await watch.next((x) => (x.federatedBundles['a.example']?.x509AuthoritiesPem.match(/BEGIN CERTIFICATE/g) ?? []).length === 2);
      // A's spiffe_sequence grew by one with the new root, and B's agents carry it
      expect(u.federatedBundles['a.example']!.sequence).toBe(BigInt(seqBefore + 1));
      expect(a.server.federation.ownBundle().sequence).toBe(seqBefore + 1);
    } finally {
      watch.close();
    }
    await b.server.manager.prepare();
    await until(() => rootsOf(a, 'b.example').length === 2, 10_000, 'B\'s new root at A');
    expect(rootsOf(a, 'b.example')).toEqual(ownRoots(b));
  }, 60_000);

  it('ok/the bundle endpoint serves GET / only', async () => {
    const url = `https://localhost:${b.server.bundleEndpointAddress!.split(':')[1]}`;
    const ca = (await import('node:fs')).readFileSync(join(tmp.path, 'web-ca.pem'));
    const { request } = await import('node:https');
    const status = (path: string, method = 'GET') =>
      new Promise<number>((res, rej) => request(url + path, { method, ca, agent: false }, (r) => (r.resume(), res(r.statusCode!))).on('error', rej).end());
    expect(await status('/')).toBe(200);
    expect(await status('/other')).toBe(404);
    expect(await status('/', 'POST')).toBe(405);
  });
});

describeWith([peers.python, peers.pyjwt, peers.systemPyCryptography, peers.openssl], 'the served bundle, read by independent parsers', () => {
  it('ok/A\'s endpoint presents an X.509-SVID openssl verifies with A\'s roots; Python json + cryptography + PyJWT accept its document', async () => {
    const { request } = await import('node:https');
    const { body, leafPem } = await new Promise<{ body: string; leafPem: string }>((res, rej) => {
      const req = request(`https://${a.server.bundleEndpointAddress!}/`, { ca: a.server.trustBundlePem, agent: false, checkServerIdentity: () => undefined }, (r) => {
        const leaf = new X509Certificate((r.socket as TLSSocket).getPeerCertificate().raw).toString();
        let t = '';
        r.on('data', (c: Buffer) => (t += c.toString()));
        r.on('end', () => res({ body: t, leafPem: leaf }));
      });
      req.on('error', rej).end();
    });
    writeFileSync(join(tmp.path, 'a-roots.pem'), a.server.trustBundlePem);
    writeFileSync(join(tmp.path, 'a-leaf.pem'), leafPem);
    expect(execFileSync('openssl', ['verify', '-CAfile', join(tmp.path, 'a-roots.pem'), join(tmp.path, 'a-leaf.pem')]).toString()).toMatch(/: OK/);
    expect(new X509Certificate(leafPem).subjectAltName).toContain('URI:spiffe://a.example/castellan/bundle-endpoint');
    const py = JSON.parse(execFileSync('/usr/bin/python3', [join(import.meta.dirname, '../spiffe/py/check_bundle.py')], { input: body }).toString()) as { sequence: number; refresh_hint: number; x509: string[]; jwt: string[] };
    const ours = parseSpiffeBundle(body, 'a.example');
    expect(py.sequence).toBe(ours.sequence);
    expect(py.refresh_hint).toBe(1);
    expect(py.x509).toHaveLength(ours.x509Authorities.length);
    expect(py.jwt).toEqual(ours.jwtAuthorities.map((k) => k.kid));
  });
});

describe('federation configuration', () => {
  it('fail/precise messages', () => {
    const bad = (v: Record<string, unknown>, re: RegExp): void => {
      expect(() => fed(v, 'a.example')).toThrow(re);
    };
    bad({ 'federate-with': ['b.example'] }, /--federate-with must be TD=URL/);
    bad({ 'federate-with': ['b.example=http://x/'] }, /must be https:\/\//);
    bad({ 'federate-with': ['a.example=https://x/'] }, /own trust domain/);
    bad({ 'federate-with': ['b.example=https://x/', 'b.example=https://y/'] }, /federated twice/);
    bad({ federation: '[{"trustDomain":"b.example"}]' }, /federation: 0\.bundleEndpointUrl/);
    bad({ federation: '[{"trustDomain":"b.example","bundleEndpointUrl":"https://x/","profile":"https_web","endpointSpiffeId":"spiffe://b.example/x"}]' }, /go with profile https_spiffe/);
    bad({ federation: '[{"trustDomain":"b.example","bundleEndpointUrl":"https://x/","caFile":"/x"}]' }, /caFile goes with profile https_web/);
    bad({ 'bundle-endpoint-listen': '127.0.0.1:1', 'bundle-endpoint-profile': 'https_web' }, /needs --bundle-endpoint-cert/);
    bad({ 'bundle-endpoint-profile': 'http' }, /https_spiffe or https_web/);
    bad({ 'federation-refresh-min': '10s', 'federation-refresh-max': '1s' }, /must not be below/);
    expect(fed({ 'federate-with': ['b.example=https://b.example:8443/'] }, 'a.example').peers).toEqual([
      { trustDomain: 'b.example', url: 'https://b.example:8443/', profile: 'https_spiffe', endpointSpiffeId: 'spiffe://b.example/castellan/bundle-endpoint', bootstrapBundle: undefined },
    ]);
    expect(defaultServerConfig().federation).toMatchObject({ endpoint: null, refreshHintSeconds: 300, peers: [], refreshMinMs: 30_000, refreshMaxMs: 3_600_000 });
  });
});
