/**
 * The keyring's pure logic: transitions and their guard rails, the
 * invariants --force cannot override, automatic-rotation thresholds, and
 * the manager's persistence behaviour (conflicts, other replicas' writes,
 * a corrupted store keeping the last good keyring: security.md P4).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { createSelfSignedRoot } from '../../src/ca/authority.ts';
import { activate, addLeaves, addPrepared, autoThresholds, buildView, nextAutoStep, retire, taint } from '../../src/ca/keyring.ts';
import { emptyLeaves, parseKeyringDoc, type AuthorityRecord, type KeyringDoc } from '../../src/ca/keyring-doc.ts';
import { CaManager } from '../../src/ca/manager.ts';
import { certInfo } from '../../src/ca/authority.ts';
import { parseCertificatesPem } from '../../src/platform/pem.ts';
import { FakeClock } from '../../src/platform/clock.ts';
import { CastellanError } from '../../src/platform/errors.ts';
import { silentLogger } from '../../src/platform/logger.ts';
import { MemoryKeystore } from '../support/memory-keystore.ts';

const DAY = 86_400_000;
const T0 = Date.UTC(2030, 0, 1);

async function rootRecord(state: AuthorityRecord['state'], now: number, ttlMs = 100 * DAY): Promise<AuthorityRecord> {
  const r = await createSelfSignedRoot({ trustDomain: 'cluster.local', keyType: 'ec-p256', ttlMs, now });
  const id = certInfo(parseCertificatesPem(r.certPem, 'x')[0]!).ski!;
  return { id, state, source: 'self-signed', keyType: 'ec-p256', certPem: r.certPem, keyPem: r.keyPem, chainPem: '', rootsPem: r.certPem, createdAt: new Date(now).toISOString(), leaves: emptyLeaves() };
}

let A: AuthorityRecord;
let B: AuthorityRecord;
let base: KeyringDoc;
beforeAll(async () => {
  A = { ...(await rootRecord('active', T0)), activatedAt: new Date(T0).toISOString() };
  B = await rootRecord('prepared', T0 + DAY, 200 * DAY);
  base = { version: 2, trustDomain: 'cluster.local', generation: 1, authorities: [A] };
});

const opts = (now: number, force = false) => ({ now, force, propagationMs: DAY });
const code = (fn: () => unknown): string => {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(CastellanError);
    return (e as CastellanError).code;
  }
  return 'ok';
};

describe('keyring transitions', () => {
  it('ok/prepare → activate → taint → retire, with the view following', () => {
    const now = T0 + DAY;
    const p = addPrepared(base, B, opts(now));
    let v = buildView(p.doc, now, 't');
    expect(v.active.id).toBe(A.id);
    expect(v.rootsDer).toHaveLength(2); // B is trusted before it signs
    expect(v.vouchingSignersDer).toHaveLength(1); // ...and vouches for nobody yet
    const a = activate(p.doc, undefined, opts(now + DAY));
    const bundleBefore = v.trustBundlePem;
    v = buildView(a.doc, now + DAY, 't');
    expect(v.active.id).toBe(B.id);
    expect(v.trustBundlePem).toBe(bundleBefore); // activation changes who signs, not what is trusted
    expect(v.records.find((r) => r.id === A.id)!.state).toBe('old');
    expect(v.vouchingSignersDer).toHaveLength(2); // A's leaves still renew over mTLS
    const t = taint(a.doc, undefined, opts(now + DAY));
    const tv = buildView(t.doc, now + DAY, 't');
    expect(tv.taintedIds).toEqual([A.id]);
    // R3: tainted, A stays in the bundle (the data plane) but vouches for nobody (the CA)
    expect(tv.rootsDer).toHaveLength(2);
    expect(tv.vouchingSignersDer.map((d) => d.toString('base64'))).toEqual([tv.active.certDer.toString('base64')]);
    expect(tv.taintedSignersDer.map((d) => d.toString('base64'))).toEqual([tv.authorities.get(A.id)!.certDer.toString('base64')]);
    const r = retire(t.doc, undefined, opts(now + DAY));
    v = buildView(r.doc, now + DAY, 't');
    expect(v.rootsDer).toHaveLength(1);
    expect(r.authority.keyPem).toBe('');
    expect(r.doc.generation).toBe(base.generation + 4);
    // the stored document round-trips through its schema
    expect(parseKeyringDoc(JSON.stringify(r.doc), 't').authorities.map((x) => x.state)).toEqual(['retired', 'active']);
  });

  it('fail/activate before the propagation time is a guard; --force passes and names the risk', () => {
    const p = addPrepared(base, B, opts(T0 + DAY));
    expect(code(() => activate(p.doc, undefined, opts(T0 + DAY + 1000)))).toBe('rotation.guard');
    const forced = activate(p.doc, undefined, opts(T0 + DAY + 1000, true));
    expect(forced.forcedRisk).toMatch(/reject every certificate/);
  });

  it('fail/retire while live leaves exist is a guard; forced it says what breaks; after the last leaf expires it passes', () => {
    const p = addPrepared(base, B, opts(T0 + DAY));
    const withLeaves = addLeaves(p.doc, new Map([[A.id, { issued: 5, lastNotAfter: T0 + 3 * DAY }]]));
    const a = activate(withLeaves, undefined, opts(T0 + 2 * DAY));
    expect(code(() => retire(a.doc, undefined, opts(T0 + 2 * DAY)))).toBe('rotation.guard');
    expect(retire(a.doc, undefined, opts(T0 + 2 * DAY, true)).forcedRisk).toMatch(/stop verifying/);
    expect(retire(a.doc, undefined, opts(T0 + 3 * DAY)).authority.state).toBe('retired');
  });

  it.each([
    ['activate with nothing prepared', (d: KeyringDoc) => activate(d, undefined, opts(T0, true)), 'rotation.nothing_prepared'],
    ['taint the active one, even forced', (d: KeyringDoc) => taint(d, A.id, opts(T0, true)), 'rotation.active'],
    ['retire the active one, even forced', (d: KeyringDoc) => retire(d, A.id, opts(T0, true)), 'rotation.active'],
    ['taint with no previous authority', (d: KeyringDoc) => taint(d, undefined, opts(T0, true)), 'rotation.nothing_to_taint'],
    ['an unknown id', (d: KeyringDoc) => retire(d, 'deadbeefdeadbeef', opts(T0, true)), 'rotation.unknown_authority'],
  ])('fail/%s', (_n, fn, expected) => {
    expect(code(() => fn(base))).toBe(expected);
  });

  it('fail/a second prepared authority, and the same authority twice', async () => {
    const p = addPrepared(base, B, opts(T0));
    const C = await rootRecord('prepared', T0);
    expect(code(() => addPrepared(p.doc, C, opts(T0)))).toBe('rotation.already_prepared');
    expect(code(() => addPrepared(base, A, opts(T0)))).toBe('rotation.exists');
  });

  it('fail/R3 an authority with the same key as a tainted one never signs again, even forced', () => {
    const a = activate(addPrepared(base, B, opts(T0)).doc, undefined, opts(T0 + 2 * DAY)); // A old, B active
    const t = taint(a.doc, A.id, opts(T0 + 2 * DAY));
    // A re-certified with the same key (as a plug-in admin might): prepared under another id
    const twin: AuthorityRecord = { ...A, id: 'a-twin-with-the-same-key', state: 'prepared', activatedAt: undefined };
    const p = addPrepared(t.doc, twin, opts(T0 + 2 * DAY));
    expect(code(() => activate(p.doc, twin.id, opts(T0 + 9 * DAY, true)))).toBe('rotation.tainted_key');
  });

  it('fail/R3 tainting an old authority whose key the active one shares is refused (the suspect key would go on signing)', () => {
    const twin: AuthorityRecord = { ...A, id: 'a-twin-with-the-same-key', state: 'prepared', activatedAt: undefined };
    const a = activate(addPrepared(base, twin, opts(T0)).doc, twin.id, opts(T0 + 2 * DAY)); // A old, twin active
    expect(code(() => taint(a.doc, A.id, opts(T0 + 2 * DAY, true)))).toBe('rotation.shared_key');
  });

  it('ok/R3 an old authority sharing a tainted one\'s key stops vouching with it', () => {
    const twin: AuthorityRecord = { ...A, id: 'a-twin-with-the-same-key', state: 'prepared', activatedAt: undefined };
    const d1 = activate(addPrepared(base, twin, opts(T0)).doc, twin.id, opts(T0 + 2 * DAY)).doc; // A old, twin active
    const d2 = activate(addPrepared(d1, B, opts(T0 + 2 * DAY)).doc, B.id, opts(T0 + 4 * DAY)).doc; // A, twin old; B active
    const v = buildView(taint(d2, A.id, opts(T0 + 4 * DAY)).doc, T0 + 4 * DAY, 't');
    expect(v.vouchingSignersDer.map((d) => d.toString('base64'))).toEqual([v.active.certDer.toString('base64')]);
    expect(v.taintedSignersDer).toHaveLength(2);
  });

  it('ok/ids may be given as a unique prefix of at least 8 hex digits', () => {
    const p = addPrepared(base, B, opts(T0 + DAY));
    expect(activate(p.doc, B.id.slice(0, 8), opts(T0 + 3 * DAY)).authority.id).toBe(B.id);
  });

  it('ok/leaf accounting merges: counts add, lastNotAfter is a max', () => {
    const d1 = addLeaves(base, new Map([[A.id, { issued: 2, lastNotAfter: T0 + 5 * DAY }]]));
    const d2 = addLeaves(d1, new Map([[A.id, { issued: 3, lastNotAfter: T0 + 2 * DAY }]]));
    expect(d2.authorities[0]!.leaves).toEqual({ issued: 5, lastNotAfter: new Date(T0 + 5 * DAY).toISOString() });
  });
});

describe('automatic rotation thresholds (SPIRE: prepare at min(½ life, 30 d) left, activate at min(⅙ life, 7 d) left)', () => {
  it.each([
    [10 * 365 * DAY, 30 * DAY, 7 * DAY],
    [100 * DAY, 30 * DAY, 7 * DAY],
    [24 * DAY, 12 * DAY, 4 * DAY],
  ])('life %d ms: prepare at %d left, activate at %d left', (life, prep, act) => {
    expect(autoThresholds(0, life)).toEqual({ prepareAt: prep, activateAt: act });
  });

  it('ok/steps in order: nothing → prepare → (propagation) → activate → retire when its last leaf expired', () => {
    const life = 100 * DAY;
    expect(nextAutoStep(base, T0 + 69 * DAY, DAY).step).toBeUndefined();
    expect(nextAutoStep(base, T0 + 69 * DAY, DAY).recheckAt).toBeLessThanOrEqual(T0 + 70 * DAY);
    expect(nextAutoStep(base, T0 + 70 * DAY, DAY).step).toEqual({ kind: 'prepare' });
    const p = addPrepared(base, { ...B, preparedAt: undefined }, opts(T0 + 70 * DAY));
    expect(nextAutoStep(p.doc, T0 + 92 * DAY, DAY).step).toBeUndefined();
    expect(nextAutoStep(p.doc, T0 + life - 7 * DAY, DAY).step).toEqual({ kind: 'activate', id: B.id });
    // prepared late (after a restart past the threshold): activation still waits for propagation
    const late = addPrepared(base, { ...B, preparedAt: undefined }, opts(T0 + 95 * DAY));
    expect(nextAutoStep(late.doc, T0 + 95 * DAY + 1000, DAY).step).toBeUndefined();
    expect(nextAutoStep(late.doc, T0 + 96 * DAY, DAY).step).toEqual({ kind: 'activate', id: B.id });
    const a = activate(addLeaves(p.doc, new Map([[A.id, { issued: 1, lastNotAfter: T0 + 94 * DAY }]])), undefined, opts(T0 + 93 * DAY));
    expect(nextAutoStep(a.doc, T0 + 93 * DAY + 1, DAY).step).toBeUndefined();
    expect(nextAutoStep(a.doc, T0 + 94 * DAY, DAY).step).toEqual({ kind: 'retire', id: A.id });
  });
});

describe('CaManager persistence', () => {
  async function start(ks: MemoryKeystore, clock: FakeClock) {
    return CaManager.start({ keystore: ks, trustDomain: 'cluster.local', mode: { kind: 'self-signed', keyType: 'ec-p256', rootTtlMs: 100 * DAY }, propagationMs: 0, autoRotate: false, maxLeafTtlMs: DAY, clock, logger: silentLogger() });
  }

  it('ok/two replicas on one store: one root; a write by one is seen by the other; conflicts are retried', async () => {
    const clock = new FakeClock(T0);
    const ks = new MemoryKeystore();
    const [r1, r2] = await Promise.all([start(ks, clock), start(ks, clock)]);
    expect(r1.view().active.id).toBe(r2.view().active.id);
    // r2 writes (notify r1 as a real watch would)
    const stop = ks.watch(() => undefined, () => undefined);
    await r2.prepare();
    ks.writeExternal(JSON.parse(ks.text!) as KeyringDoc);
    expect(r1.view().rootsDer).toHaveLength(2);
    // r1 acts on a stale version: the first write conflicts, the retry succeeds
    (r1 as unknown as { stored: { version: string } }).stored.version = 'stale';
    const before = ks.conflicts;
    await r1.activate(undefined);
    expect(ks.conflicts).toBe(before + 1);
    expect(r1.view().active.id).not.toBe(r2.view().records[0]!.id);
    stop();
    await r1.close();
    await r2.close();
  });

  it('P4/a corrupted store never replaces the last good keyring; the rejection is counted', async () => {
    const clock = new FakeClock(T0);
    const ks = new MemoryKeystore();
    const m = await start(ks, clock);
    const good = m.view();
    ks.corrupt();
    ks.corrupt('not json at all');
    expect(m.view()).toBe(good);
    expect(m.view().active.id).toBe(good.active.id);
    expect(m.rejectedUpdates).toBe(2);
    // a well-formed document that cannot be used (its active key does not match) is refused too
    const doc = JSON.parse(JSON.stringify(good.records)) as AuthorityRecord[];
    doc[0]!.keyPem = (await rootRecord('active', T0)).keyPem;
    ks.writeExternal({ version: 2, trustDomain: 'cluster.local', generation: 99, authorities: doc });
    expect(m.view()).toBe(good);
    expect(m.rejectedUpdates).toBe(3);
    await m.close();
  });
});
