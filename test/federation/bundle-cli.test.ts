/**
 * Federation by hand: `castellan bundle show|set|delete|list` (the real CLI
 * process) against running CA servers of two trust domains; what is set
 * reaches agents in BundleUpdate.federated_bundles (and leaves it on delete),
 * survives a restart and is seen by a second replica on the same keystore.
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleSequenceOf } from '../../src/ca/keyring-doc.ts';
import { parseSpiffeBundle, serializeSpiffeBundle } from '../../src/spiffe/bundle.ts';
import { tempDir } from '../support/tmp.ts';
import { castellan, startFedCa, until, watchBundle, type FedCa } from './harness.ts';

const tmp = tempDir('castellan-fed-cli-');
let a: FedCa;
let b: FedCa;
const sock = (ca: FedCa): string[] => ['--admin-socket', ca.server.adminSocket];

beforeAll(async () => {
  a = await startFedCa(tmp.path, 'a', 'a.example');
  b = await startFedCa(tmp.path, 'b', 'b.example');
}, 60_000);
afterAll(async () => {
  await a?.stop();
  await b?.stop();
  tmp.cleanup();
});

describe('castellan bundle', () => {
  it('ok/show: the SPIFFE bundle document (roots, JWT keys, the keyring\'s bundle sequence) and PEM', async () => {
    const r = await castellan(['bundle', 'show', ...sock(a)], tmp.path);
    expect(r.code, r.stderr).toBe(0);
    const doc = parseSpiffeBundle(r.stdout, 'a.example');
    expect(doc.x509Authorities.map((d) => new X509Certificate(d).toString())).toEqual([a.server.trustBundlePem]);
    expect(doc.jwtAuthorities.map((k) => k.kid)).toEqual([a.server.jwtKeys!.view().active!.kid]);
    expect(doc.sequence).toBe(bundleSequenceOf(a.server.manager.document()));
    expect(doc.sequence).toBeGreaterThan(0);
    expect(doc.refreshHintSeconds).toBe(300);
    const pem = await castellan(['bundle', 'show', '--format', 'pem', ...sock(a)], tmp.path);
    expect(pem.stdout).toBe(a.server.trustBundlePem);
  }, 60_000);

  it('ok/set (SPIFFE and PEM), list, then delete: each change reaches WatchBundle', async () => {
    const watch = await watchBundle(b);
    try {
      await watch.next((u) => Object.keys(u.federatedBundles).length === 0);
      writeFileSync(join(tmp.path, 'a.json'), (await castellan(['bundle', 'show', ...sock(a)], tmp.path)).stdout);
      const set = await castellan(['bundle', 'set', '--trust-domain', 'a.example', '--file', 'a.json', ...sock(b)], tmp.path);
      expect(set.code, set.stderr).toBe(0);
      expect(set.stdout).toMatch(/stored the bundle of a\.example: sequence \d+, 1 X\.509 and 1 JWT authorities/);
      const u = await watch.next((x) => 'a.example' in x.federatedBundles);
      const fb = u.federatedBundles['a.example']!;
      expect(fb.x509AuthoritiesPem).toBe(a.server.trustBundlePem);
      expect((JSON.parse(fb.jwtBundleJson) as { keys: { kid: string }[] }).keys.map((k) => k.kid)).toEqual([a.server.jwtKeys!.view().active!.kid]);
      expect(fb.sequence).toBe(BigInt(parseSpiffeBundle(readFileSync(join(tmp.path, 'a.json'), 'utf8'), 'a.example').sequence!));

      // PEM, detected
      const caPem = (await castellan(['bundle', 'show', '--format', 'pem', ...sock(a)], tmp.path)).stdout;
      writeFileSync(join(tmp.path, 'c.pem'), caPem);
      expect((await castellan(['bundle', 'set', '--trust-domain', 'c.example', '--file', 'c.pem', ...sock(b)], tmp.path)).code).toBe(0);
      const u2 = await watch.next((x) => 'c.example' in x.federatedBundles && 'a.example' in x.federatedBundles);
      expect(u2.federatedBundles['c.example']).toMatchObject({ x509AuthoritiesPem: caPem, jwtBundleJson: '', sequence: 0n });

      const list = await castellan(['bundle', 'list', ...sock(b)], tmp.path);
      expect(list.code).toBe(0);
      expect(list.stdout).toMatch(/^TRUST DOMAIN\s+SOURCE\s+SEQUENCE/);
      expect(list.stdout).toMatch(/a\.example\s+manual\s+\d+\s+\S+Z\s+-\s+1\s+1\s+-/);
      expect(list.stdout).toMatch(/c\.example\s+manual\s+0\s+\S+Z\s+-\s+1\s+0\s+-/);
      const json = JSON.parse((await castellan(['bundle', 'list', '--output', 'json', ...sock(b)], tmp.path)).stdout) as { trustDomain: string }[];
      expect(json.map((x) => x.trustDomain)).toEqual(['a.example', 'c.example']);

      expect((await castellan(['bundle', 'delete', '--trust-domain', 'c.example', ...sock(b)], tmp.path)).code).toBe(0);
      const u3 = await watch.next((x) => !('c.example' in x.federatedBundles) && 'a.example' in x.federatedBundles && x.generation > u2.generation);
      expect(Object.keys(u3.federatedBundles)).toEqual(['a.example']);
    } finally {
      watch.close();
    }
  }, 120_000);

  it('fail/bad input: precise message, exit 2, nothing stored', async () => {
    const before = b.server.manager.document();
    writeFileSync(join(tmp.path, 'a.json'), a.server.federation.ownBundleDocument());
    const cases: [string, string[], string | undefined, RegExp][] = [
      ['garbage JSON', ['--trust-domain', 'x.example', '--file', 'g.json'], '{"keys": [', /castellan bundle set: g\.json: not JSON/],
      ['not a CA', ['--trust-domain', 'x.example', '--file', 'g.json'], serializeSpiffeBundle({ trustDomain: 'x', x509Authorities: [], jwtAuthorities: [] }).replace('[]', '[{"kty":"EC","use":"x509-svid","x5c":[]}]'), /keys\[0\]: "x5c" must hold exactly one/],
      ['PEM that is a key', ['--trust-domain', 'x.example', '--file', 'g.json'], '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n', /expected CERTIFICATE blocks/],
      ['PEM forced on JSON', ['--trust-domain', 'x.example', '--file', 'a.json', '--format', 'pem'], undefined, /a\.json: unexpected text outside PEM blocks/],
      ['bad trust domain', ['--trust-domain', 'X.Example', '--file', 'a.json'], undefined, /trust domain may only contain/],
      ['missing file', ['--trust-domain', 'x.example', '--file', 'nope.json'], undefined, /ENOENT/],
      ['no --trust-domain', ['--file', 'a.json'], undefined, /--trust-domain TD is required/],
      ['bad format', ['--trust-domain', 'x.example', '--file', 'a.json', '--format', 'der'], undefined, /--format must be spiffe or pem/],
    ];
    for (const [name, args, content, msg] of cases) {
      if (content !== undefined) writeFileSync(join(tmp.path, 'g.json'), content);
      const r = await castellan(['bundle', 'set', ...args, ...sock(b)], tmp.path);
      expect(r.code, name).toBe(2);
      expect(r.stderr, name).toMatch(msg);
      expect(r.stderr, name).not.toMatch(/at .*\.ts:\d+/);
    }
    // the server's own refusals: its own trust domain (2, a usage error), an unknown one to delete (1)
    const own = await castellan(['bundle', 'set', '--trust-domain', 'b.example', '--file', 'a.json', ...sock(b)], tmp.path);
    expect(own.code).toBe(2);
    expect(own.stderr).toMatch(/"b\.example" is this server's own trust domain/);
    const del = await castellan(['bundle', 'delete', '--trust-domain', 'nobody.example', ...sock(b)], tmp.path);
    expect(del.code).toBe(1);
    expect(del.stderr).toMatch(/no federated bundle is stored for trust domain "nobody\.example"/);
    const gone = await castellan(['bundle', 'list', '--admin-socket', join(tmp.path, 'none.sock')], tmp.path);
    expect(gone.code).toBe(3);
    expect(b.server.manager.document().federatedBundles).toEqual(before.federatedBundles);
  }, 180_000);

  it('ok/persistence: a restart keeps the foreign bundles; a second replica on the same keystore sees them', async () => {
    const before = b.server.federation.list().map((x) => x.trustDomain);
    expect(before).toContain('a.example');
    const seq = b.server.federation.ownBundle().sequence!;
    await b.stop();
    await b.restart();
    expect(b.server.federation.list().map((x) => x.trustDomain)).toEqual(before);
    // the served spiffe_sequence (stored in the keyring) does not go back after a restart
    expect(b.server.federation.ownBundle().sequence!).toBeGreaterThanOrEqual(seq);
    const replica = await startFedCa(tmp.path, 'b2', 'b.example', { dataDir: b.dataDir, adminSocket: join(tmp.path, 'b2.sock') });
    try {
      expect(replica.server.federation.list().map((x) => x.trustDomain)).toEqual(before);
      // a change through one replica reaches the other (the file keystore is polled)
      writeFileSync(join(tmp.path, 'd.pem'), a.server.trustBundlePem);
      expect((await castellan(['bundle', 'set', '--trust-domain', 'd.example', '--file', 'd.pem', ...sock(replica)], tmp.path)).code).toBe(0);
      await until(() => b.server.federation.find('d.example'), 15_000, 'the other replica to see d.example');
      // both replicas serve the same spiffe_sequence for the same keyring
      expect(replica.server.federation.ownBundle().sequence).toBe(b.server.federation.ownBundle().sequence);
    } finally {
      await replica.stop();
    }
  }, 60_000);
});
