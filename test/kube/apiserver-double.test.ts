/**
 * The HTTP double of the Kubernetes API itself, driven through
 * @kubernetes/client-node: the behaviours the keystore, Lease and publisher
 * tests rely on, checked once here (status codes and Status reasons,
 * resourceVersion rules, selectors, watch semantics).
 */
import { ApiException, CoordinationV1Api, CoreV1Api, KubeConfig, Watch } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseLabelSelector } from './apiserver-double.ts';
import { startDouble, until, type DoubleEnv } from './helpers.ts';

let env: DoubleEnv;
let core: CoreV1Api;
const NS = 'double-tests';

async function failure(p: Promise<unknown>): Promise<{ code: number; status: Record<string, unknown> }> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(ApiException);
    const x = e as ApiException<string>;
    return { code: x.code, status: x.body ? (JSON.parse(x.body) as Record<string, unknown>) : {} };
  }
  throw new Error('expected an API error');
}

interface Seen {
  events: { type: string; name?: string; rv?: string; code?: number; reason?: string }[];
  ended: boolean;
  abort: () => void;
}

async function watch(path: string, query: Record<string, string | boolean>): Promise<Seen> {
  const seen: Seen = { events: [], ended: false, abort: () => undefined };
  const c = await new Watch(env.kc()).watch(
    path,
    query,
    (type, obj: { metadata?: { name?: string; resourceVersion?: string }; code?: number; reason?: string }) => seen.events.push({ type, name: obj.metadata?.name, rv: obj.metadata?.resourceVersion, code: obj.code, reason: obj.reason }),
    () => (seen.ended = true),
  );
  seen.abort = () => c.abort();
  return seen;
}

beforeAll(async () => {
  env = await startDouble('castellan-double-');
  env.api.createNamespace(NS);
  core = env.kc().makeApiClient(CoreV1Api);
});
afterAll(async () => {
  await env.stop();
});

describe('HTTP double of the Kubernetes API', () => {
  it('GET of a missing object: 404 NotFound Status naming it', async () => {
    const f = await failure(core.readNamespacedSecret({ name: 'nope', namespace: NS }));
    expect(f.code).toBe(404);
    expect(f.status).toMatchObject({ kind: 'Status', status: 'Failure', reason: 'NotFound', code: 404, message: 'secrets "nope" not found', details: { name: 'nope', kind: 'secrets' } });
    const lease = await failure(env.kc().makeApiClient(CoordinationV1Api).readNamespacedLease({ name: 'l', namespace: NS }));
    expect(lease.status).toMatchObject({ message: 'leases.coordination.k8s.io "l" not found', details: { group: 'coordination.k8s.io' } });
  });

  it('create: resourceVersion assigned; a second create of the name is 409 AlreadyExists; a missing namespace is 404', async () => {
    const s = await core.createNamespacedSecret({ namespace: NS, body: { metadata: { name: 'one' }, stringData: { a: 'hello' } } });
    expect(s.metadata?.resourceVersion).toBe(env.api.resourceVersion);
    expect(s.type).toBe('Opaque');
    expect(s.data).toEqual({ a: Buffer.from('hello').toString('base64') });
    expect((s as { stringData?: unknown }).stringData).toBeUndefined();
    const f = await failure(core.createNamespacedSecret({ namespace: NS, body: { metadata: { name: 'one' } } }));
    expect(f).toMatchObject({ code: 409, status: { reason: 'AlreadyExists', message: 'secrets "one" already exists' } });
    const g = await failure(core.createNamespacedSecret({ namespace: 'missing', body: { metadata: { name: 'x' } } }));
    expect(g).toMatchObject({ code: 404, status: { reason: 'NotFound', message: 'namespaces "missing" not found' } });
    const bad = await failure(core.createNamespacedSecret({ namespace: NS, body: { metadata: { name: 'bad' }, data: { k: 'not base64!' } } }));
    expect(bad.code).toBe(400);
    const badKey = await failure(core.createNamespacedConfigMap({ namespace: NS, body: { metadata: { name: 'bad' }, data: { 'no/slash': 'x' } } }));
    expect(badKey).toMatchObject({ code: 422, status: { reason: 'Invalid' } });
  });

  it('update: every change bumps resourceVersion; a stale one is 409 Conflict; a no-op is not a write; a missing object is 404', async () => {
    const c1 = await core.createNamespacedConfigMap({ namespace: NS, body: { metadata: { name: 'cm' }, data: { k: '1' } } });
    const c2 = await core.replaceNamespacedConfigMap({ name: 'cm', namespace: NS, body: { metadata: { name: 'cm', resourceVersion: c1.metadata!.resourceVersion }, data: { k: '2' } } });
    expect(Number(c2.metadata!.resourceVersion)).toBeGreaterThan(Number(c1.metadata!.resourceVersion));
    const stale = await failure(core.replaceNamespacedConfigMap({ name: 'cm', namespace: NS, body: { metadata: { name: 'cm', resourceVersion: c1.metadata!.resourceVersion }, data: { k: '3' } } }));
    expect(stale).toMatchObject({ code: 409, status: { reason: 'Conflict', message: expect.stringContaining('the object has been modified') } });
    const same = await core.replaceNamespacedConfigMap({ name: 'cm', namespace: NS, body: { metadata: { name: 'cm', resourceVersion: c2.metadata!.resourceVersion }, data: { k: '2' } } });
    expect(same.metadata!.resourceVersion).toBe(c2.metadata!.resourceVersion);
    const uncond = await core.replaceNamespacedConfigMap({ name: 'cm', namespace: NS, body: { metadata: { name: 'cm' }, data: { k: '4' } } });
    expect(Number(uncond.metadata!.resourceVersion)).toBeGreaterThan(Number(c2.metadata!.resourceVersion));
    expect(uncond.metadata!.uid).toBe(c1.metadata!.uid);
    expect(await failure(core.replaceNamespacedConfigMap({ name: 'gone', namespace: NS, body: { metadata: { name: 'gone' } } }))).toMatchObject({ code: 404 });
    expect(await failure(core.replaceNamespacedConfigMap({ name: 'cm', namespace: NS, body: { metadata: { name: 'other' } } }))).toMatchObject({ code: 400 });
  });

  it('namespace lists: label selectors, the metadata.name label, list resourceVersion, pagination', async () => {
    env.api.createNamespace('sel-a', { tier: 'web', env: 'prod' });
    env.api.createNamespace('sel-b', { tier: 'db', env: 'prod' });
    env.api.createNamespace('sel-c', { tier: 'web' });
    const names = async (labelSelector: string) => (await core.listNamespace({ labelSelector })).items.map((n) => n.metadata!.name).filter((x) => x!.startsWith('sel-'));
    expect(await names('tier=web')).toEqual(['sel-a', 'sel-c']);
    expect(await names('tier!=web,env')).toEqual(['sel-b']);
    expect(await names('env in (prod),tier notin (db)')).toEqual(['sel-a']);
    expect(await names('!env,tier==web')).toEqual(['sel-c']);
    expect(await names('kubernetes.io/metadata.name=sel-b')).toEqual(['sel-b']);
    await expect(core.listNamespace({ labelSelector: 'tier in web' })).rejects.toMatchObject({ code: 400 });
    const list = await core.listNamespace({});
    expect(list.metadata!.resourceVersion).toBe(env.api.resourceVersion);
    const p1 = await core.listNamespace({ labelSelector: 'env=prod', limit: 1 });
    expect(p1.items).toHaveLength(1);
    const p2 = await core.listNamespace({ labelSelector: 'env=prod', limit: 1, _continue: p1.metadata!._continue });
    expect([p1.items[0]!.metadata!.name, p2.items[0]!.metadata!.name]).toEqual(['sel-a', 'sel-b']);
    expect(p2.metadata!._continue).toBeUndefined();
    expect(parseLabelSelector('')({})).toBe(true);
  });

  it('watch: without resourceVersion the current objects as ADDED, then changes; from N every change after N; with a selector, objects entering and leaving it', async () => {
    await core.createNamespacedSecret({ namespace: NS, body: { metadata: { name: 'w1', labels: { app: 'x' } } } });
    const fromNow = await watch(`/api/v1/namespaces/${NS}/secrets`, { labelSelector: 'app=x' });
    await until(() => fromNow.events.length === 1);
    expect(fromNow.events[0]).toMatchObject({ type: 'ADDED', name: 'w1' });
    const rvBefore = env.api.resourceVersion;
    const w2 = await core.createNamespacedSecret({ namespace: NS, body: { metadata: { name: 'w2', labels: { app: 'y' } } } });
    await core.replaceNamespacedSecret({ name: 'w2', namespace: NS, body: { metadata: { name: 'w2', labels: { app: 'x' } } } }); // enters the selector
    await core.replaceNamespacedSecret({ name: 'w1', namespace: NS, body: { metadata: { name: 'w1', labels: { app: 'z' } } } }); // leaves it
    await until(() => fromNow.events.length === 3);
    expect(fromNow.events.slice(1).map((e) => `${e.type} ${e.name}`)).toEqual(['ADDED w2', 'DELETED w1']);
    const replay = await watch(`/api/v1/namespaces/${NS}/secrets`, { resourceVersion: rvBefore, fieldSelector: 'metadata.name=w2' });
    await until(() => replay.events.length === 2);
    expect(replay.events.map((e) => `${e.type} ${e.name}`)).toEqual(['ADDED w2', 'MODIFIED w2']);
    expect(replay.events[0]!.rv).toBe(w2.metadata!.resourceVersion);
    env.api.delete('secrets', NS, 'w2');
    await until(() => replay.events.length === 3);
    expect(replay.events[2]).toMatchObject({ type: 'DELETED', name: 'w2', rv: env.api.resourceVersion });
    fromNow.abort();
    replay.abort();
  });

  it('watch: a compacted resourceVersion is an ERROR event with a 410 Expired Status (or HTTP 410); bookmarks on request; drops', async () => {
    const old = env.api.resourceVersion;
    env.api.createNamespace('compact-me');
    env.api.compact();
    const w = await watch('/api/v1/namespaces', { resourceVersion: old });
    await until(() => w.ended);
    expect(w.events).toEqual([{ type: 'ERROR', code: 410, reason: 'Expired', name: undefined, rv: undefined }]);
    env.api.goneAs = 'http';
    let err: unknown;
    await new Watch(env.kc()).watch('/api/v1/namespaces', { resourceVersion: old }, () => undefined, (e: unknown) => (err = e));
    await until(() => err !== undefined);
    expect((err as { statusCode?: number }).statusCode).toBe(410);
    env.api.goneAs = 'event';
    const b = await watch('/api/v1/namespaces', { resourceVersion: env.api.resourceVersion, allowWatchBookmarks: true });
    const plain = await watch('/api/v1/namespaces', { resourceVersion: env.api.resourceVersion });
    await until(() => env.api.openWatches('namespaces') === 2);
    env.api.sendBookmarks();
    await until(() => b.events.length === 1);
    expect(b.events[0]).toMatchObject({ type: 'BOOKMARK', rv: env.api.resourceVersion });
    expect(plain.events).toEqual([]);
    expect(env.api.dropWatches('namespaces')).toBe(2);
    await until(() => b.ended && plain.ended);
  });

  it('authentication: a request without an accepted token is 401; injected faults answer with a Status', async () => {
    const kc = new KubeConfig();
    kc.loadFromFile(env.badKubeconfig);
    const f = await failure(kc.makeApiClient(CoreV1Api).listNamespace({}));
    expect(f.code).toBe(401);
    env.api.inject({ method: 'GET', resource: 'namespaces', status: 503 });
    const g = await failure(core.listNamespace({}));
    expect(g).toMatchObject({ code: 503, status: { reason: 'ServiceUnavailable' } });
    await core.listNamespace({});
  });
});
