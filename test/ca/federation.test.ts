import { X509Certificate } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { createSelfSignedRoot } from '../../src/ca/authority.ts';
import { fetchedVerdict, findForeignBundle, withForeignBundle, withoutForeignBundle } from '../../src/ca/federation.ts';
import { bundleSequenceOf, parseKeyringDoc, serializeKeyringDoc, withBundleSequence, type KeyringDoc } from '../../src/ca/keyring-doc.ts';
import type { SpiffeBundle } from '../../src/spiffe/bundle.ts';

const DAY = 86_400_000;
let doc: KeyringDoc;
let r1: Buffer;
let r2: Buffer;
const bundle = (roots: Buffer[], sequence?: number): SpiffeBundle => ({ trustDomain: 'other.example', x509Authorities: roots, jwtAuthorities: [], sequence });

beforeAll(async () => {
  const own = await createSelfSignedRoot({ trustDomain: 'cluster.local', keyType: 'ec-p256', ttlMs: DAY, now: Date.now() });
  const t = new Date().toISOString();
  doc = { version: 2, trustDomain: 'cluster.local', generation: 3, authorities: [{ id: 'ab'.repeat(10), state: 'active', source: 'self-signed', keyType: 'ec-p256', certPem: own.certPem, keyPem: own.keyPem, chainPem: '', rootsPem: own.certPem, createdAt: t, leaves: { issued: 0, lastNotAfter: null } }] };
  r1 = Buffer.from(new X509Certificate((await createSelfSignedRoot({ trustDomain: 'other.example', keyType: 'ec-p256', ttlMs: DAY, now: Date.now() })).certPem).raw);
  r2 = Buffer.from(new X509Certificate((await createSelfSignedRoot({ trustDomain: 'other.example', keyType: 'ec-p256', ttlMs: DAY, now: Date.now() })).certPem).raw);
});

describe('foreign bundles in the keyring document', () => {
  it('ok/stored, read back through the keyring parser, replaced, deleted; each bumps the generation', () => {
    const d1 = withForeignBundle(doc, bundle([r1], 4), { source: 'manual', now: 0 });
    expect(d1.generation).toBe(4);
    const back = parseKeyringDoc(serializeKeyringDoc(d1), 'test');
    expect(findForeignBundle(back, 'other.example')!.bundle.x509Authorities).toEqual([r1]);
    const d2 = withForeignBundle(back, bundle([r1, r2], 5), { source: 'endpoint', endpointUrl: 'https://x/', now: 0 });
    expect(d2.federatedBundles).toHaveLength(1);
    expect(d2.federatedBundles![0]).toMatchObject({ source: 'endpoint', endpointUrl: 'https://x/', sequence: 5 });
    const d3 = withoutForeignBundle(d2, 'other.example');
    expect(d3.federatedBundles).toEqual([]);
    expect(d3.generation).toBe(6);
    expect(() => withoutForeignBundle(d3, 'other.example')).toThrow(/no federated bundle is stored for trust domain "other\.example"/);
  });

  it('fail/this trust domain, a duplicate or a corrupt document are refused', () => {
    expect(() => withForeignBundle(doc, { ...bundle([r1]), trustDomain: 'cluster.local' }, { source: 'manual', now: 0 })).toThrow(/own trust domain/);
    const d1 = withForeignBundle(doc, bundle([r1], 1), { source: 'manual', now: 0 });
    const rec = d1.federatedBundles![0]!;
    expect(() => parseKeyringDoc(serializeKeyringDoc({ ...d1, federatedBundles: [rec, rec] }), 'k')).toThrow(/"other\.example" appears twice/);
    expect(() => parseKeyringDoc(serializeKeyringDoc({ ...d1, federatedBundles: [{ ...rec, trustDomain: 'cluster.local' }] }), 'k')).toThrow(/own trust domain/);
    expect(() => parseKeyringDoc(serializeKeyringDoc({ ...d1, federatedBundles: [{ ...rec, document: '{"keys":7}' }] }), 'k')).toThrow(/keyring k is unusable: federated bundle of other\.example: keys: /);
  });

  it('fetched bundles: lower sequence refused, same sequence with other content refused after a fetch, same content unchanged', () => {
    const stored = (source: 'manual' | 'endpoint', seq: number) => findForeignBundle(withForeignBundle(doc, bundle([r1], seq), { source, now: 0 }), 'other.example');
    expect(fetchedVerdict(undefined, bundle([r2], 0))).toBeUndefined();
    expect(fetchedVerdict(stored('endpoint', 5), bundle([r1, r2], 4))).toMatchObject({ reason: 'lower_sequence' });
    expect(fetchedVerdict(stored('endpoint', 5), bundle([r1, r2], 5))).toMatchObject({ reason: 'same_sequence_changed' });
    expect(fetchedVerdict(stored('endpoint', 5), bundle([r1], 5))).toBe('same');
    expect(fetchedVerdict(stored('endpoint', 5), bundle([r1, r2], 6))).toBeUndefined();
    // a bundle set by hand: replaced by the same content fetched (now from the endpoint), and by other content of its sequence
    expect(fetchedVerdict(stored('manual', 5), bundle([r1], 5))).toBeUndefined();
    expect(fetchedVerdict(stored('manual', 5), bundle([r2], 5))).toBeUndefined();
    expect(fetchedVerdict(stored('manual', 5), bundle([r2], 4))).toMatchObject({ reason: 'lower_sequence' });
  });

  it('the bundle sequence: raised when the bundle\'s content changes, never by leaf accounting or foreign bundles; starts from the generation', () => {
    expect(bundleSequenceOf(doc)).toBe(3);
    const leaves = withBundleSequence(doc, { ...doc, generation: 4, authorities: doc.authorities.map((a) => ({ ...a, leaves: { issued: 9, lastNotAfter: null } })) });
    expect(bundleSequenceOf(leaves)).toBe(3);
    const foreign = withBundleSequence(leaves, withForeignBundle(leaves, bundle([r1], 1), { source: 'manual', now: 0 }));
    expect(bundleSequenceOf(foreign)).toBe(3);
    const extra = { ...doc.authorities[0]!, id: 'cd'.repeat(10), state: 'prepared' as const };
    const prepared = withBundleSequence(foreign, { ...foreign, generation: 6, authorities: [...foreign.authorities, extra] });
    expect(bundleSequenceOf(prepared)).toBe(4);
    const retired = withBundleSequence(prepared, { ...prepared, generation: 7, authorities: [prepared.authorities[0]!, { ...extra, state: 'retired', keyPem: '' }] });
    expect(bundleSequenceOf(retired)).toBe(5);
    expect(bundleSequenceOf(parseKeyringDoc(serializeKeyringDoc(retired), 'k'))).toBe(5);
  });
});

