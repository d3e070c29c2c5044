/**
 * Federated bundles in the agent (issue 17): validation one trust domain at a
 * time (the last good one kept), and how the cache serves them over SDS:
 * `ALL` and `spiffe://<td>` in Envoy's SPIFFE validator, ROOTCA unchanged,
 * pushes on every change (state of the world and delta), the allow-list.
 */
import { create, fromBinary } from '@bufbuild/protobuf';
import { anyUnpack } from '@bufbuild/protobuf/wkt';
import { beforeAll, describe, expect, it } from 'vitest';
import { SecretCache } from '../../src/agent/cache.ts';
import { FederatedBundles, validateFederatedBundle, type FederatedBundleInput } from '../../src/agent/federation.ts';
import { SecretSchema, type Secret } from '../../src/gen/envoy/extensions/transport_sockets/tls/v3/secret_pb.js';
import { SPIFFECertValidatorConfigSchema } from '../../src/gen/envoy/extensions/transport_sockets/tls/v3/tls_spiffe_validator_config_pb.js';
import { DeltaDiscoveryRequestSchema, DiscoveryRequestSchema, type DeltaDiscoveryResponse, type DiscoveryResponse } from '../../src/gen/envoy/service/discovery/v3/discovery_pb.js';
import { FakeClock } from '../../src/platform/clock.ts';
import { silentLogger } from '../../src/platform/logger.ts';
import { DeltaSession } from '../../src/sds/delta.ts';
import { SECRET_TYPE_URL, SPIFFE_VALIDATOR_NAME, type SecretSnapshot } from '../../src/sds/resources.ts';
import { fetchSecrets, SotwSession } from '../../src/sds/sotw.ts';
import { FakeCa } from './fake-ca.ts';
import { makeRoot, type TdRoot } from './td-pki.ts';

let other: TdRoot;
let other2: TdRoot;
let third: TdRoot;
let notCa: TdRoot;
beforeAll(async () => {
  [other, other2, third, notCa] = await Promise.all([makeRoot('other root'), makeRoot('other root 2'), makeRoot('third root'), makeRoot('not a CA', { ca: false })]);
});

const fb = (pem: string, sequence = 1n, jwt = ''): FederatedBundleInput => ({ x509AuthoritiesPem: pem, jwtBundleJson: jwt, sequence });

/** Decodes a served validation-context secret: its SPIFFE validator domains, or its plain trusted_ca. */
function decode(s: SecretSnapshot | undefined): { name: string; trustedCa?: string; domains?: [string, string][]; validator?: string } {
  expect(s).toBeDefined();
  const secret = anyUnpack(s!.resource, SecretSchema) as Secret;
  expect(secret.type.case).toBe('validationContext');
  const vc = secret.type.value as Extract<Secret['type'], { case: 'validationContext' }>['value'];
  if (vc.trustedCa) return { name: secret.name, trustedCa: Buffer.from((vc.trustedCa.specifier as { value: Uint8Array }).value).toString() };
  const tc = vc.customValidatorConfig!.typedConfig!;
  expect(tc.typeUrl).toBe('type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig');
  const cfg = fromBinary(SPIFFECertValidatorConfigSchema, tc.value);
  return {
    name: secret.name,
    validator: vc.customValidatorConfig!.name,
    domains: cfg.trustDomains.map((d) => [d.name, Buffer.from((d.trustBundle!.specifier as { value: Uint8Array }).value).toString()]),
  };
}

async function readyCache() {
  const clock = new FakeClock();
  const ca = await FakeCa.create(clock, 'spiffe://a.example/ns/default/sa/frontend');
  const cache = new SecretCache({ source: ca, clock, ttlMs: 3600_000, trustDomain: 'a.example', jitter: 0, random: () => 0.5 });
  const changes: string[] = [];
  cache.onChange((n) => changes.push(n));
  cache.start();
  await cache.whenReady();
  changes.length = 0;
  return { ca, cache, changes };
}

describe('validateFederatedBundle', () => {
  it('ok/CA certificates and a JWK set; normalised PEM', () => {
    const b = validateFederatedBundle('other.example', fb(`\n${other.pem}${other2.pem}\n`, 7n, JSON.stringify({ keys: [{ kty: 'EC', kid: 'k1', use: 'jwt-svid' }] })));
    expect(b.x509Pem).toBe(other.pem + other2.pem);
    expect(b.sequence).toBe(7n);
  });
  it.each([
    ['fail/not a trust domain name', 'Other.Example', () => fb(other.pem), /trust domain/],
    ['fail/a certificate that is not a CA', 'other.example', () => fb(notCa.pem), /not a CA certificate/],
    ['fail/garbage PEM', 'other.example', () => fb('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'), /does not parse/],
    ['fail/text outside the blocks', 'other.example', () => fb(`${other.pem}junk`), /outside CERTIFICATE/],
    ['fail/no certificate at all', 'other.example', () => fb('hello'), /outside CERTIFICATE|no certificate/],
    ['fail/JWT bundle not JSON', 'other.example', () => fb(other.pem, 1n, '{'), /not JSON/],
    ['fail/JWT bundle without keys', 'other.example', () => fb(other.pem, 1n, '{"x":1}'), /JWK set/],
    ['fail/JWT key without kid', 'other.example', () => fb(other.pem, 1n, '{"keys":[{"kty":"EC"}]}'), /kty or kid/],
  ])('%s', (_n, td, input, re) => {
    expect(() => validateFederatedBundle(td, input())).toThrow(re);
  });
});

describe('FederatedBundles', () => {
  it('ok/complete sets: add, change, keep the last good one on a bad update, drop what is missing; own trust domain ignored', () => {
    const f = new FederatedBundles('a.example', silentLogger());
    expect(f.apply({ 'b.example': fb(other.pem, 1n), 'a.example': fb(third.pem) })).toEqual(['b.example']);
    expect([...f.bundles.keys()]).toEqual(['b.example']);
    expect(f.apply({ 'b.example': fb(other.pem, 1n) })).toEqual([]);
    expect(f.apply({ 'b.example': fb(notCa.pem, 2n), 'c.example': fb('junk') })).toEqual([]);
    expect(f.bundles.get('b.example')!.x509Pem).toBe(other.pem);
    expect(f.bundles.has('c.example')).toBe(false);
    expect(f.apply({ 'b.example': fb(other.pem + other2.pem, 3n), 'c.example': fb(third.pem) })).toEqual(['b.example', 'c.example']);
    expect(f.apply({ 'c.example': fb(third.pem) })).toEqual(['b.example']);
    expect([...f.bundles.keys()]).toEqual(['c.example']);
  });
});

describe('secret cache with federation (SDS resources)', () => {
  it('ok/ALL and spiffe://<td> in the SPIFFE validator, one entry per trust domain; ROOTCA stays plain and own', async () => {
    const { ca, cache, changes } = await readyCache();
    const ownOnly = decode(cache.get('ALL'));
    expect(ownOnly).toEqual({ name: 'ALL', validator: SPIFFE_VALIDATOR_NAME, domains: [['a.example', ca.bundlePem]] });
    expect(cache.applyFederatedBundles(new Map([['b.example', fb(other.pem)], ['c.example', fb(third.pem)]]))).toEqual(['b.example', 'c.example']);
    expect(changes).toEqual(['spiffe://b.example', 'spiffe://c.example', 'ALL']);
    const all = decode(cache.get('ALL'));
    expect(all.domains).toEqual([['a.example', ca.bundlePem], ['b.example', other.pem], ['c.example', third.pem]]);
    expect(decode(cache.get('spiffe://b.example'))).toEqual({ name: 'spiffe://b.example', validator: SPIFFE_VALIDATOR_NAME, domains: [['b.example', other.pem]] });
    expect(decode(cache.get('spiffe://a.example')).domains).toEqual([['a.example', ca.bundlePem]]);
    expect(decode(cache.get('ROOTCA'))).toEqual({ name: 'ROOTCA', trustedCa: ca.bundlePem });
    expect(cache.dynamicNames()).toEqual(['spiffe://a.example', 'spiffe://b.example', 'spiffe://c.example']);
  });

  it('ok/a JWT-only foreign bundle is not offered to TLS; an own-domain entry is ignored', async () => {
    const { cache } = await readyCache();
    cache.applyFederatedBundles({ 'b.example': fb('', 1n, '{"keys":[]}'), 'a.example': fb(other.pem) });
    expect(decode(cache.get('ALL')).domains!.map(([td]) => td)).toEqual(['a.example']);
    expect(cache.get('spiffe://b.example')).toBeUndefined();
    expect(cache.federatedBundles.has('b.example')).toBe(true);
    expect(cache.dynamicNames()).toEqual(['spiffe://a.example']);
  });

  it('ok/root rotation of our own trust domain changes ALL and spiffe://own with ROOTCA', async () => {
    const { ca, cache, changes } = await readyCache();
    cache.applyFederatedBundles({ 'b.example': fb(other.pem) });
    await ca.rotate();
    changes.length = 0;
    await cache.applyBundleUpdate({ bundlePem: ca.bundlePem, taintedIds: [] });
    expect(changes).toEqual(['ROOTCA', 'spiffe://a.example', 'ALL']);
    expect(decode(cache.get('ALL')).domains).toEqual([['a.example', ca.bundlePem], ['b.example', other.pem]]);
  });

  const sotwReq = (names: string[], nonce = '') => create(DiscoveryRequestSchema, { node: { id: 'n' }, typeUrl: SECRET_TYPE_URL, resourceNames: names, responseNonce: nonce });

  it('ok/StreamSecrets: a watched ALL is pushed on every federation change; a trust domain that goes away is dropped without ending the stream', async () => {
    const { cache } = await readyCache();
    cache.applyFederatedBundles({ 'b.example': fb(other.pem) });
    const sent: DiscoveryResponse[] = [];
    const s = new SotwSession({ store: cache, send: (r) => sent.push(r) });
    s.handle(sotwReq(['ALL', 'spiffe://b.example']));
    expect(sent).toHaveLength(1);
    s.handle(sotwReq(['ALL', 'spiffe://b.example'], sent[0]!.nonce));
    cache.applyFederatedBundles({ 'b.example': fb(other.pem + other2.pem, 2n) });
    expect(sent).toHaveLength(2);
    expect(sent[1]!.resources.map((r) => anyUnpack(r, SecretSchema)!.name).sort()).toEqual(['ALL', 'spiffe://b.example']);
    expect(decode({ name: 'x', version: '', resource: sent[1]!.resources.find((r) => anyUnpack(r, SecretSchema)!.name === 'ALL')! }).domains!.map(([td]) => td)).toEqual(['a.example', 'b.example']);
    // Federation with b.example ends: ALL is pushed without it; the ACK naming b.example is fine.
    cache.applyFederatedBundles({});
    expect(sent).toHaveLength(3);
    expect(sent[2]!.resources.map((r) => anyUnpack(r, SecretSchema)!.name)).toEqual(['ALL']);
    expect(() => s.handle(sotwReq(['ALL', 'spiffe://b.example'], sent[2]!.nonce))).not.toThrow();
    s.close();
  });

  it('fail/StreamSecrets and FetchSecrets: a trust domain not federated (now) is an unknown name', async () => {
    const { cache } = await readyCache();
    const s = new SotwSession({ store: cache, send: () => undefined });
    expect(() => s.handle(sotwReq(['spiffe://b.example']))).toThrow(expect.objectContaining({ code: 'sds.unknown_resource' }));
    expect(() => fetchSecrets(cache, sotwReq(['spiffe://b.example']))).toThrow(expect.objectContaining({ code: 'sds.unknown_resource' }));
    expect(() => fetchSecrets(cache, sotwReq(['spiffe://a.example/ns/default/sa/frontend']))).toThrow(expect.objectContaining({ code: 'sds.unknown_resource' }));
    cache.applyFederatedBundles({ 'b.example': fb(other.pem) });
    expect(fetchSecrets(cache, sotwReq(['spiffe://b.example', 'ALL'])).resources).toHaveLength(2);
  });

  it('ok/DeltaSecrets: subscribe ALL and a trust domain; a change sends only what changed; an end of federation is a removal', async () => {
    const { cache } = await readyCache();
    cache.applyFederatedBundles({ 'b.example': fb(other.pem), 'c.example': fb(third.pem) });
    const sent: DeltaDiscoveryResponse[] = [];
    const s = new DeltaSession({ store: cache, send: (r) => sent.push(r) });
    s.handle(create(DeltaDiscoveryRequestSchema, { node: { id: 'n' }, typeUrl: SECRET_TYPE_URL, resourceNamesSubscribe: ['ALL', 'spiffe://b.example', 'spiffe://c.example'] }));
    expect(sent[0]!.resources.map((r) => r.name)).toEqual(['ALL', 'spiffe://b.example', 'spiffe://c.example']);
    cache.applyFederatedBundles({ 'b.example': fb(other2.pem, 2n), 'c.example': fb(third.pem) });
    expect(sent.slice(1).flatMap((r) => r.resources.map((x) => x.name)).sort()).toEqual(['ALL', 'spiffe://b.example']);
    const n = sent.length;
    cache.applyFederatedBundles({ 'b.example': fb(other2.pem, 2n) });
    const after = sent.slice(n);
    expect(after.flatMap((r) => r.removedResources)).toEqual(['spiffe://c.example']);
    expect(after.flatMap((r) => r.resources.map((x) => x.name))).toEqual(['ALL']);
    // Unsubscribing a name that is no longer served is fine.
    expect(() => s.handle(create(DeltaDiscoveryRequestSchema, { typeUrl: SECRET_TYPE_URL, resourceNamesUnsubscribe: ['spiffe://c.example'] }))).not.toThrow();
    s.close();
  });
});
