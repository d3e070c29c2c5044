/**
 * The Kubernetes Secret keystore through @kubernetes/client-node against an
 * HTTP double of the Kubernetes API (test/kube/apiserver-double.ts): create-
 * if-absent races between replicas, resourceVersion conflicts, the watch
 * (other replicas' writes, dropped connections, 410 Gone, corrupt and
 * deleted documents) and how API failures surface.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { serializeKeyringDoc, type KeyringDoc } from '../../src/ca/keyring-doc.ts';
import type { StoredKeyring } from '../../src/ca/keystore.ts';
import { KEYRING_KEY, secretKeystore, type SecretKeystore } from '../../src/kube/keystore-secret.ts';
import { CastellanError } from '../../src/platform/errors.ts';
import { b64, keyringDoc, startDouble, unb64, until, type DoubleEnv } from './helpers.ts';

const NS = 'castellan-system';
let env: DoubleEnv;
const open: SecretKeystore[] = [];
let n = 0;

/** a replica's keystore on a Secret of its own test (each with its own KubeConfig) */
function replica(name: string, o: Partial<Parameters<typeof secretKeystore>[0]> = {}): SecretKeystore {
  const k = secretKeystore({ kubeConfig: env.kc(), namespace: NS, name, minBackoffMs: 20, maxBackoffMs: 200, ...o });
  open.push(k);
  return k;
}
const fresh = (): string => `castellan-ca-${++n}`;

async function refusal(p: Promise<unknown>): Promise<CastellanError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(CastellanError);
    return e as CastellanError;
  }
  throw new Error('expected a failure');
}

function recorder(): { changes: StoredKeyring[]; errors: unknown[]; onChange: (k: StoredKeyring) => void; onError: (e: unknown) => void } {
  const changes: StoredKeyring[] = [];
  const errors: unknown[] = [];
  return { changes, errors, onChange: (k) => changes.push(k), onError: (e) => errors.push(e) };
}

beforeAll(async () => {
  env = await startDouble('castellan-ks-');
  env.api.createNamespace(NS);
});
afterEach(async () => {
  env.api.faults.length = 0;
  env.api.unreachable = false;
  env.api.goneAs = 'event';
  await Promise.all(open.splice(0).map((k) => k.close()));
});
afterAll(async () => {
  await env.stop();
});

describe('Secret keystore (HTTP double of the Kubernetes API)', () => {
  it('read: null while absent; after create, the document with the Secret resourceVersion as version; the Secret is minimal', async () => {
    const name = fresh();
    const k = replica(name);
    expect(k.where).toBe(`Secret ${NS}/${name}`);
    expect(await k.read()).toBeNull();
    const doc = keyringDoc(1);
    const r = await k.createIfAbsent(doc);
    expect(r.created).toBe(true);
    expect(r.stored.doc).toEqual(doc);
    const s = env.api.get('secrets', NS, name)!;
    expect(r.stored.version).toBe(s.metadata.resourceVersion);
    expect(s.type).toBe('Opaque');
    expect(Object.keys(s.data as object)).toEqual([KEYRING_KEY]);
    expect(unb64((s.data as Record<string, string>)[KEYRING_KEY]!)).toBe(serializeKeyringDoc(doc));
    expect(await k.read()).toEqual(r.stored);
  });

  it('cold start: two replicas racing createIfAbsent (Promise.all) end with one document, the loser gets the winner\'s', async () => {
    const name = fresh();
    const [a, b] = [replica(name), replica(name)];
    const docA = keyringDoc(1, 'replica-a');
    const docB = keyringDoc(1, 'replica-b');
    const writesBefore = env.api.writes.length;
    const [ra, rb] = await Promise.all([a.createIfAbsent(docA), b.createIfAbsent(docB)]);
    expect([ra.created, rb.created].filter(Boolean)).toHaveLength(1);
    const winner = ra.created ? docA : docB;
    expect(ra.stored.doc).toEqual(winner);
    expect(rb.stored.doc).toEqual(winner);
    expect(ra.stored.version).toBe(rb.stored.version);
    const s = env.api.get('secrets', NS, name)!;
    expect(unb64((s.data as Record<string, string>)[KEYRING_KEY]!)).toBe(serializeKeyringDoc(winner));
    const creates = env.api.writes.slice(writesBefore).filter((w) => w.name === name && w.verb === 'create');
    expect(creates.map((w) => w.status).sort()).toEqual([201, 409]);
  });

  it('cold start: five replicas racing, exactly one creates, all agree on its document and version', async () => {
    const name = fresh();
    const docs = Array.from({ length: 5 }, (_, i) => keyringDoc(1, `replica-${i}`));
    const ks = docs.map(() => replica(name));
    const rs = await Promise.all(ks.map((k, i) => k.createIfAbsent(docs[i]!)));
    expect(rs.filter((r) => r.created)).toHaveLength(1);
    const winner = docs[rs.findIndex((r) => r.created)]!;
    for (const r of rs) expect(r.stored).toEqual({ doc: winner, version: rs[0]!.stored.version });
  });

  it('update: compare-and-swap on resourceVersion; a stale version is ABORTED keystore.conflict and changes nothing', async () => {
    const name = fresh();
    const [a, b] = [replica(name), replica(name)];
    const { stored: v1 } = await a.createIfAbsent(keyringDoc(1));
    const v2 = await a.update(keyringDoc(2), v1.version);
    expect(Number(v2.version)).toBeGreaterThan(Number(v1.version));
    expect(v2.doc.generation).toBe(2);
    const e = await refusal(b.update(keyringDoc(3, 'from-b'), v1.version));
    expect(e).toMatchObject({ kind: 'ABORTED', code: 'keystore.conflict' });
    expect(e.message).toContain(`Secret ${NS}/${name}`);
    expect(await b.read()).toEqual(v2);
    // re-read and retry: succeeds
    const v3 = await b.update(keyringDoc(3, 'from-b'), v2.version);
    expect(await a.read()).toEqual(v3);
    // an update of a Secret that was deleted is a conflict too (re-read finds nothing)
    env.api.delete('secrets', NS, name);
    expect(await refusal(a.update(keyringDoc(4), v3.version))).toMatchObject({ kind: 'ABORTED', code: 'keystore.conflict' });
  });

  it('update keeps labels and annotations others put on the Secret', async () => {
    const name = fresh();
    const a = replica(name);
    await a.createIfAbsent(keyringDoc(1));
    const s = env.api.get('secrets', NS, name)!;
    s.metadata.labels = { team: 'mesh' };
    s.metadata.annotations = { 'example.com/owner': 'platform' };
    env.api.put('secrets', s);
    const cur = (await a.read())!;
    await a.update(keyringDoc(2), cur.version);
    expect(env.api.get('secrets', NS, name)!.metadata).toMatchObject({ labels: { team: 'mesh' }, annotations: { 'example.com/owner': 'platform' } });
  });

  it('watch: sees another replica\'s update, not its own writes', async () => {
    const name = fresh();
    const [a, b] = [replica(name), replica(name)];
    const { stored: v1 } = await a.createIfAbsent(keyringDoc(1));
    await b.read();
    const rb = recorder();
    const ra = recorder();
    const stopB = b.watch(rb.onChange, rb.onError);
    a.watch(ra.onChange, ra.onError);
    await until(() => env.api.openWatches('secrets') >= 2);
    const v2 = await a.update(keyringDoc(2), v1.version);
    await until(() => rb.changes.length === 1);
    expect(rb.changes[0]).toEqual(v2);
    // b writes; then a writes again: a sees b's write, b sees only a's
    const v3 = await b.update(keyringDoc(3, 'b'), v2.version);
    const v4 = await a.update(keyringDoc(4, 'a'), v3.version);
    await until(() => rb.changes.length === 2 && ra.changes.length === 1);
    expect(rb.changes[1]).toEqual(v4);
    expect(ra.changes).toEqual([v3]);
    expect(rb.errors).toEqual([]);
    // the watch is one Secret's: field selector metadata.name, as RBAC's resourceNames needs
    const w = env.api.requests.filter((r) => r.watch && r.resource === 'secrets');
    expect(w.every((r) => r.query.fieldSelector === `metadata.name=${name}` && r.namespace === NS)).toBe(true);
    stopB();
    await until(() => env.api.openWatches('secrets') === 1);
  });

  it('watch: a watcher that has read nothing yet is told the current document once', async () => {
    const name = fresh();
    const [a, b] = [replica(name), replica(name)];
    const { stored } = await a.createIfAbsent(keyringDoc(1));
    const rb = recorder();
    b.watch(rb.onChange, rb.onError);
    await until(() => rb.changes.length === 1);
    expect(rb.changes[0]).toEqual(stored);
    // a later write is the next change: had the first been told twice, it would sit between them
    await a.update(keyringDoc(2), stored.version);
    await until(() => rb.changes.length >= 2);
    expect(rb.changes.map((c) => c.doc.generation)).toEqual([1, 2]);
  });

  it('watch: survives a dropped connection and resumes from its resourceVersion (nothing missed, nothing repeated)', async () => {
    const name = fresh();
    const [a, b] = [replica(name), replica(name)];
    let { stored: cur } = await a.createIfAbsent(keyringDoc(1));
    await b.read();
    const rb = recorder();
    b.watch(rb.onChange, rb.onError);
    await until(() => env.api.openWatches('secrets') === 1);
    const watchesBefore = b.watchStats()!.watches;
    cur = await a.update(keyringDoc(2), cur.version);
    await until(() => rb.changes.length === 1);
    // the connection breaks; a writes while b is away
    env.api.inject({ resource: 'secrets', watch: true, status: 503, count: 2 });
    expect(env.api.dropWatches('secrets')).toBe(1);
    const v3 = await a.update(keyringDoc(3), cur.version);
    await until(() => rb.changes.length === 2);
    expect(rb.changes.map((c) => c.doc.generation)).toEqual([2, 3]);
    expect(rb.changes[1]).toEqual(v3);
    expect(b.watchStats()!.watches).toBeGreaterThanOrEqual(watchesBefore + 3); // two refused with 503, then one that works
    const resumed = env.api.requests.filter((r) => r.watch && r.resource === 'secrets' && r.query.fieldSelector === `metadata.name=${name}`).at(-1)!;
    expect(resumed.query.resourceVersion).toBe(cur.version);
    // a later write is the next change: a repeat of 3 after the resume would sit between them
    await a.update(keyringDoc(4), v3.version);
    await until(() => rb.changes.length >= 3);
    expect(rb.changes.map((c) => c.doc.generation)).toEqual([2, 3, 4]);
    expect(rb.errors).toEqual([]);
  });

  it.each(['event', 'http'] as const)('watch: 410 Gone (%s) after compaction → relist, the change made meanwhile is delivered once', async (goneAs) => {
    env.api.goneAs = goneAs;
    const name = fresh();
    const [a, b] = [replica(name), replica(name)];
    const { stored: v1 } = await a.createIfAbsent(keyringDoc(1));
    await b.read();
    const rb = recorder();
    b.watch(rb.onChange, rb.onError);
    await until(() => env.api.openWatches('secrets') === 1);
    // b is disconnected; the history it would resume from is compacted away
    env.api.inject({ resource: 'secrets', watch: true, status: 503, count: 1 });
    env.api.dropWatches('secrets');
    env.api.put('secrets', { metadata: { name: `unrelated-${name}`, namespace: NS }, stringData: { x: 'y' } });
    const v2 = await a.update(keyringDoc(2), v1.version);
    env.api.compact();
    await until(() => rb.changes.length === 1);
    expect(rb.changes[0]).toEqual(v2);
    expect(b.watchStats()!.gone).toBeGreaterThanOrEqual(1);
    // and it keeps watching afterwards
    const v3 = await a.update(keyringDoc(3), v2.version);
    await until(() => rb.changes.length === 2);
    expect(rb.changes[1]).toEqual(v3);
    expect(rb.errors).toEqual([]);
  });

  it('watch: a corrupt document → onError and no onChange; the next good one → onChange', async () => {
    const name = fresh();
    const [a, b] = [replica(name), replica(name)];
    const { stored: v1 } = await a.createIfAbsent(keyringDoc(1));
    await b.read();
    const rb = recorder();
    b.watch(rb.onChange, rb.onError);
    await until(() => env.api.openWatches('secrets') === 1);
    // an admin edits the Secret by hand and breaks it
    const s = env.api.get('secrets', NS, name)!;
    env.api.put('secrets', { ...s, data: { [KEYRING_KEY]: b64('{"version": 2, "trustDomain": ') } });
    await until(() => rb.errors.length === 1);
    expect(rb.errors[0]).toMatchObject({ kind: 'FAILED_PRECONDITION', code: 'keystore.corrupt' });
    expect((rb.errors[0] as Error).message).toContain(`Secret ${NS}/${name}`);
    expect(rb.changes).toEqual([]);
    // read() reports the same
    expect(await refusal(a.read())).toMatchObject({ code: 'keystore.corrupt' });
    // valid JSON, wrong shape: also refused, with the field named
    const s2 = env.api.get('secrets', NS, name)!;
    env.api.put('secrets', { ...s2, data: { [KEYRING_KEY]: b64(JSON.stringify({ ...keyringDoc(2), authorities: [] })) } });
    await until(() => rb.errors.length === 2);
    expect((rb.errors[1] as Error).message).toMatch(/authorities/);
    // a key missing altogether
    env.api.put('secrets', { ...env.api.get('secrets', NS, name)!, data: { other: b64('x') } });
    await until(() => rb.errors.length === 3);
    expect((rb.errors[2] as Error).message).toContain(KEYRING_KEY);
    expect(rb.changes).toEqual([]);
    // the admin repairs it
    const cur = env.api.get('secrets', NS, name)!;
    env.api.put('secrets', { ...cur, data: { [KEYRING_KEY]: b64(serializeKeyringDoc(keyringDoc(5))) } });
    await until(() => rb.changes.length === 1);
    expect(rb.changes[0]!.doc.generation).toBe(5);
    expect(rb.changes[0]!.version).not.toBe(v1.version);
  });

  it('watch: a deleted Secret is reported (onError keystore.deleted); one re-created is a change', async () => {
    const name = fresh();
    const [a, b] = [replica(name), replica(name)];
    await a.createIfAbsent(keyringDoc(1));
    await b.read();
    const rb = recorder();
    b.watch(rb.onChange, rb.onError);
    await until(() => env.api.openWatches('secrets') === 1);
    env.api.delete('secrets', NS, name);
    await until(() => rb.errors.length === 1);
    expect(rb.errors[0]).toMatchObject({ kind: 'FAILED_PRECONDITION', code: 'keystore.deleted' });
    const again = await a.createIfAbsent(keyringDoc(7));
    expect(again.created).toBe(true);
    await until(() => rb.changes.length === 1);
    expect(rb.changes[0]).toEqual(again.stored);
  });

  it('two watches on one keystore both see a change; close() stops every watch', async () => {
    const name = fresh();
    const [a, b] = [replica(name), replica(name)];
    const { stored } = await a.createIfAbsent(keyringDoc(1));
    const [w1, w2] = [recorder(), recorder()];
    a.watch(w1.onChange, w1.onError);
    a.watch(w2.onChange, w2.onError);
    await until(() => env.api.openWatches('secrets') === 2);
    const v2 = await b.update(keyringDoc(2), stored.version);
    await until(() => w1.changes.length === 1 && w2.changes.length === 1);
    expect([w1.changes, w2.changes]).toEqual([[v2], [v2]]);
    await a.close();
    await until(() => env.api.openWatches('secrets') === 0);
  });

  it('failures: 5xx and an unreachable API are UNAVAILABLE keystore.unavailable; a refused token is PERMISSION_DENIED; no secret in any message', async () => {
    const name = fresh();
    const a = replica(name);
    const doc: KeyringDoc = keyringDoc(1, 'do-not-leak');
    const { stored } = await a.createIfAbsent(doc);
    env.api.inject({ method: 'GET', resource: 'secrets', status: 503 });
    const e1 = await refusal(a.read());
    expect(e1).toMatchObject({ kind: 'UNAVAILABLE', code: 'keystore.unavailable' });
    expect(e1.message).toContain(`Secret ${NS}/${name}`);
    expect(e1.message).toContain('503');
    env.api.inject({ method: 'PUT', resource: 'secrets', status: 500 });
    const e2 = await refusal(a.update(keyringDoc(2, 'do-not-leak'), stored.version));
    expect(e2).toMatchObject({ kind: 'UNAVAILABLE', code: 'keystore.unavailable' });
    env.api.inject({ method: 'POST', resource: 'secrets', status: 503 });
    expect(await refusal(replica(fresh()).createIfAbsent(doc))).toMatchObject({ kind: 'UNAVAILABLE', code: 'keystore.unavailable' });
    env.api.unreachable = true;
    const e3 = await refusal(a.read());
    expect(e3).toMatchObject({ kind: 'UNAVAILABLE', code: 'keystore.unavailable' });
    expect(e3.message).toMatch(/unavailable/i);
    env.api.unreachable = false;
    const denied = replica(name, { kubeConfig: undefined, kubeconfig: env.badKubeconfig });
    const e4 = await refusal(denied.read());
    expect(e4).toMatchObject({ kind: 'PERMISSION_DENIED', code: 'keystore.forbidden' });
    for (const e of [e1, e2, e3, e4]) {
      expect(e.message).not.toContain('do-not-leak');
      expect(e.message).not.toContain(doc.authorities[0]!.keyPem.split('\n')[1]!);
      expect(e.message).not.toContain('castellan-sa-token');
    }
    // a create into a namespace that does not exist says so
    const lost = secretKeystore({ kubeConfig: env.kc(), namespace: 'no-such-ns', name: 'x' });
    expect(await refusal(lost.createIfAbsent(doc))).toMatchObject({ kind: 'FAILED_PRECONDITION', code: 'keystore.no_namespace' });
  });

  it('watch: keeps retrying while the API is unreachable and catches up once it is back', async () => {
    const name = fresh();
    const [a, b] = [replica(name), replica(name)];
    const { stored: v1 } = await a.createIfAbsent(keyringDoc(1));
    await b.read();
    const rb = recorder();
    b.watch(rb.onChange, rb.onError);
    await until(() => env.api.openWatches('secrets') === 1);
    const before = b.watchStats()!.watches;
    env.api.unreachable = true;
    await until(() => b.watchStats()!.watches >= before + 2);
    env.api.unreachable = false;
    const v2 = await a.update(keyringDoc(2), v1.version);
    await until(() => rb.changes.length === 1);
    expect(rb.changes[0]).toEqual(v2);
    expect(rb.errors).toEqual([]);
  });
});
