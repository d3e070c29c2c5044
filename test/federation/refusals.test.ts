/**
 * A bundle endpoint that misbehaves changes nothing: C federates with
 * f.example over https_spiffe through an endpoint this test controls (real
 * TLS, real certificates from real CAs). Garbage, a lower sequence, a
 * certificate signed by f.example's root for another SPIFFE ID (or none), a
 * certificate of a third trust domain, or one of C's own authority (never
 * trusted for a foreign endpoint) each leave the last good bundle in force,
 * and the metrics and the log say why. The last case serves the same new
 * bundle correctly and it is stored: the fixture can succeed.
 */
import { createServer, type Server } from 'node:https';
import { writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueServingCertificate } from '../../src/ca/serving.ts';
import { resolveFederationConfig } from '../../src/server/federation-config.ts';
import { parseSpiffeBundle, serializeSpiffeBundle } from '../../src/spiffe/bundle.ts';
import { tempDir } from '../support/tmp.ts';
import { recordingLogger, startFedCa, until, type FedCa } from './harness.ts';

const tmp = tempDir('castellan-fed-refuse-');
const ENDPOINT_ID = 'spiffe://f.example/castellan/bundle-endpoint';
let f: FedCa;
let g: FedCa;
let c: FedCa;
let fake: Server;
const log = recordingLogger();
const served: { body: string; requests: number } = { body: '', requests: 0 };

async function svid(ca: FedCa, spiffeId?: string): Promise<{ cert: string; key: string }> {
  const id = await issueServingCertificate(ca.server.authority(), { dnsNames: [], trustDomain: ca.config.trustDomain, ttlMs: 3600_000, now: Date.now(), spiffeId });
  return { cert: id.certChainPem, key: id.keyPem };
}

beforeAll(async () => {
  f = await startFedCa(tmp.path, 'f', 'f.example');
  g = await startFedCa(tmp.path, 'g', 'g.example');
  served.body = f.server.federation.ownBundleDocument();
  fake = createServer(await svid(f, ENDPOINT_ID), (_req, res) => {
    served.requests++;
    res.writeHead(200, { 'content-type': 'application/json' }).end(served.body);
  });
  await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
  const port = (fake.address() as AddressInfo).port;
  writeFileSync(join(tmp.path, 'f.json'), served.body);
  const federation = resolveFederationConfig(
    {
      'bundle-endpoint-profile': 'https_spiffe',
      'bundle-refresh-hint': '5m',
      'federation-refresh-min': '1h', // no timer fires during the test: each case calls refresh() itself
      'federation-refresh-max': '1h',
      federation: JSON.stringify([{ trustDomain: 'f.example', bundleEndpointUrl: `https://127.0.0.1:${port}/`, bootstrapBundle: join(tmp.path, 'f.json') }]),
    },
    'c.example',
  );
  c = await startFedCa(tmp.path, 'c', 'c.example', { federation, logLevel: 'debug' }, { logger: log.logger });
  await until(() => c.server.federation.find('f.example'), 20_000, 'the first, good fetch');
}, 90_000);
afterAll(async () => {
  fake?.close();
  fake?.closeAllConnections();
  await c?.stop();
  await f?.stop();
  await g?.stop();
  tmp.cleanup();
});

async function failures(reason: string): Promise<number> {
  const m = (await c.server.metrics.registry.getSingleMetric('castellan_federation_refresh_failures_total')!.get()).values;
  return m.find((v) => v.labels.reason === reason && v.labels.trust_domain === 'f.example')?.value ?? 0;
}

/** Serves `body` with `identity`, refreshes once, and checks that nothing changed and `reason` was counted and logged. */
async function refused(identity: { cert: string; key: string }, body: string, reason: string, message: RegExp): Promise<void> {
  const before = c.server.federation.find('f.example')!.record;
  const count = await failures(reason);
  fake.setSecureContext(identity);
  served.body = body;
  log.records.length = 0;
  await c.server.federationFetcher!.refresh(c.config.federation.peers[0]!);
  expect(c.server.federation.find('f.example')!.record).toEqual(before);
  expect(await failures(reason)).toBe(count + 1);
  const rec = log.records.find((r) => r.event === 'federation.refresh_failed');
  expect(rec, `no refresh_failed log for ${reason}`).toMatchObject({ level: 'warn', trustDomain: 'f.example', reason });
  expect(String(rec!.err)).toMatch(message);
  expect(c.server.federation.list()[0]!.lastError).toMatch(new RegExp(`^${reason}: `));
}

describe('a misbehaving bundle endpoint changes nothing', () => {
  let newer: string;
  beforeAll(async () => {
    await f.server.manager.prepare(); // f.example's bundle now holds two roots, a higher sequence
    newer = f.server.federation.ownBundleDocument();
  });

  it('fail/garbage', async () => {
    await refused(await svid(f, ENDPOINT_ID), '{"keys": "nope"}', 'invalid', /keys: /);
  });

  it('fail/a lower sequence', async () => {
    const stored = parseSpiffeBundle(c.server.federation.find('f.example')!.record.document, 'f.example');
    const lower = serializeSpiffeBundle({ ...parseSpiffeBundle(newer, 'f.example'), sequence: stored.sequence! - 1 });
    await refused(await svid(f, ENDPOINT_ID), lower, 'lower_sequence', /spiffe_sequence \d+ is lower than the stored bundle's \d+/);
  });

  it('fail/signed by the right foreign root, for another SPIFFE ID', async () => {
    await refused(await svid(f, 'spiffe://f.example/ns/default/sa/web'), newer, 'identity', /presented spiffe:\/\/f\.example\/ns\/default\/sa\/web, not spiffe:\/\/f\.example\/castellan\/bundle-endpoint/);
  });

  it('fail/signed by the right foreign root, no SPIFFE ID at all', async () => {
    await refused(await svid(f), newer, 'identity', /presented no SPIFFE ID/);
  });

  it('fail/the right SPIFFE ID from a third trust domain\'s CA', async () => {
    await refused(await svid(g, ENDPOINT_ID), newer, 'tls', /self[- ]signed|unable to (get|verify)|UNABLE_TO|SELF_SIGNED/i);
  });

  it('fail/the right SPIFFE ID from this CA\'s own authority (never trusted for a foreign endpoint)', async () => {
    await refused(await svid(c, ENDPOINT_ID), newer, 'tls', /self[- ]signed|unable to (get|verify)|UNABLE_TO|SELF_SIGNED/i);
  });

  it('ok/the same new bundle served correctly is stored', async () => {
    fake.setSecureContext(await svid(f, ENDPOINT_ID));
    served.body = newer;
    await c.server.federationFetcher!.refresh(c.config.federation.peers[0]!);
    const now = c.server.federation.find('f.example')!;
    expect(now.record.source).toBe('endpoint');
    expect(now.bundle.x509Authorities).toHaveLength(2);
    expect(now.record.sequence).toBe(parseSpiffeBundle(newer, 'f.example').sequence);
    expect(c.server.federation.list()[0]!.lastError).toBeUndefined();
  });
});

describe('only the replica that leads fetches', () => {
  it('ok/a follower does not fetch; once it leads, it fetches at once', async () => {
    let leads = false;
    const listeners: ((l: boolean) => void)[] = [];
    const leader = { isLeader: () => leads, onChange: (l: (x: boolean) => void) => void listeners.push(l), close: async () => undefined };
    fake.setSecureContext(await svid(f, ENDPOINT_ID));
    served.body = f.server.federation.ownBundleDocument();
    const federation = { ...c.config.federation, refreshMinMs: 200, refreshMaxMs: 400 };
    const follower = await startFedCa(tmp.path, 'follower', 'c.example', { federation }, { leader });
    try {
      const before = served.requests;
      await new Promise((r) => setTimeout(r, 1500));
      expect(served.requests).toBe(before);
      expect(follower.server.federation.find('f.example')).toBeUndefined();
      leads = true;
      for (const l of listeners) l(true);
      await until(() => follower.server.federation.find('f.example'), 10_000, 'the new leader to fetch');
      expect(served.requests).toBeGreaterThan(before);
    } finally {
      await follower.stop();
    }
  }, 60_000);
});
