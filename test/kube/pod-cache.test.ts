/**
 * The pod cache of node authorization (src/kube/pod-cache.ts) through
 * @kubernetes/client-node against the HTTP double of the Kubernetes API
 * (test/kube/apiserver-double.ts, now serving pods): the double's pod
 * endpoints themselves, the first list (paginated) before readiness, adds,
 * deletes, scheduling and node moves followed, Failed pods dropped (field
 * selector status.phase!=Failed), a dropped watch resumed from its
 * resourceVersion, and a relist when that resourceVersion is gone (410).
 */
import { CoreV1Api } from '@kubernetes/client-node';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { POD_FIELD_SELECTOR, watchPods, type PodCache } from '../../src/kube/pod-cache.ts';
import { sleep, startDouble, until, type DoubleEnv } from './helpers.ts';

let env: DoubleEnv;
let open: PodCache[] = [];

function start(): PodCache {
  const c = watchPods({ kubeConfig: env.kc(), minBackoffMs: 20, maxBackoffMs: 200 });
  open.push(c);
  return c;
}

const where = (c: PodCache, ns: string, name: string): string | undefined => c.pod(ns, name)?.node;
const podRequests = (watch: boolean, from = 0) => env.api.requests.slice(from).filter((r) => r.resource === 'pods' && r.watch === watch);

beforeAll(async () => {
  env = await startDouble('castellan-pods-');
});
afterEach(() => {
  for (const c of open) c.stop();
  open = [];
  for (const p of env.api.list('pods')) env.api.delete('pods', p.metadata.namespace, p.metadata.name);
  env.api.faults.length = 0;
});
afterAll(async () => env.stop());

describe('API-server double: pods (HTTP double of the Kubernetes API)', () => {
  it('serves pods like kube-apiserver: admission defaults, field selectors on pod fields, immutable nodeName, binding', async () => {
    const api = env.kc().makeApiClient(CoreV1Api);
    env.api.createPod('shop', 'a', { node: 'n1' });
    env.api.createPod('shop', 'b', { serviceAccount: 'cart' });
    expect(env.api.get('pods', 'shop', 'a')).toMatchObject({ spec: { serviceAccountName: 'default', nodeName: 'n1' }, status: { phase: 'Running' } });
    const onN1 = await api.listPodForAllNamespaces({ fieldSelector: 'spec.nodeName=n1' });
    expect(onN1.items.map((p) => p.metadata?.name)).toEqual(['a']);
    const pending = await api.listNamespacedPod({ namespace: 'shop', fieldSelector: 'status.phase=Pending,spec.serviceAccountName=cart' });
    expect(pending.items.map((p) => p.metadata?.name)).toEqual(['b']);
    await expect(api.listNamespacedSecret({ namespace: 'shop', fieldSelector: 'spec.nodeName=n1' })).rejects.toMatchObject({ code: 400 });
    const a = env.api.get('pods', 'shop', 'a')!;
    expect(() => env.api.put('pods', { ...a, spec: { ...(a.spec as object), nodeName: 'n2' } })).toThrow(/Forbidden/);
    env.api.bind('shop', 'b', 'n2');
    expect(() => env.api.bind('shop', 'b', 'n3')).toThrow(/already assigned/);
    expect((await api.readNamespacedPod({ namespace: 'shop', name: 'b' })).spec?.nodeName).toBe('n2');
  });
});

describe('pod cache (HTTP double of the Kubernetes API)', () => {
  it('is not synced before its first list, and lists every page of a large cluster', async () => {
    for (let i = 0; i < 1100; i++) env.api.createPod(`ns${i % 7}`, `p${i}`, { node: `node-${i % 13}`, serviceAccount: `sa${i % 5}` });
    env.api.inject({ resource: 'pods', watch: false, status: 503, count: 2 });
    const mark = env.api.requests.length;
    const c = start();
    expect(c.synced).toBe(false);
    await c.ready;
    expect(c.synced).toBe(true);
    expect(c.index.size).toBe(1100);
    expect(where(c, 'ns3', 'p3')).toBe('node-3');
    expect(c.hasServiceAccountOnNode('node-3', 'ns3', 'sa3')).toBe(true);
    expect(c.hasServiceAccountOnNode('node-99', 'ns3', 'sa3')).toBe(false);
    expect(c.hasServiceAccountOnNode('node-3', 'ns3', 'sa9')).toBe(false);
    const lists = podRequests(false, mark);
    expect(lists.some((r) => r.query.continue)).toBe(true);
    expect(lists.every((r) => r.query.fieldSelector === POD_FIELD_SELECTOR && r.query.limit === '500')).toBe(true);
    await until(() => podRequests(true).length > 0);
    expect(podRequests(true).at(-1)!.query).toMatchObject({ fieldSelector: POD_FIELD_SELECTOR, resourceVersion: expect.any(String) });
  }, 30_000);

  it('a continue token that expires in the middle of a paginated list starts the list again', async () => {
    for (let i = 0; i < 1200; i++) env.api.createPod('big', `p${i}`, { node: `node-${i % 3}` });
    let expired = false;
    env.api.onRequest = (r) => {
      if (!expired && r.resource === 'pods' && r.query.continue) {
        expired = true;
        env.api.createPod('big', 'late', { node: 'node-0' });
        env.api.compact(); // the continue token now points before the compacted revision: 410 Expired
      }
    };
    try {
      const mark = env.api.requests.length;
      const c = start();
      await c.ready;
      expect(expired).toBe(true);
      expect(c.index.size).toBe(1201);
      expect(c.stats.lists).toBe(1);
      // the first list stopped at its second page; the second went through all three pages
      expect(podRequests(false, mark).map((r) => (r.query.continue ? 'page' : 'start'))).toEqual(['start', 'page', 'start', 'page', 'page']);
    } finally {
      env.api.onRequest = undefined;
    }
  }, 30_000);

  it('follows adds, deletes, scheduling, node moves (re-created elsewhere) and pods that fail', async () => {
    const c = start();
    await c.ready;
    const p = env.api.createPod('shop', 'cart-0', { serviceAccount: 'cart' });
    await until(() => c.pod('shop', 'cart-0'));
    expect(c.pod('shop', 'cart-0')).toEqual({ uid: p.metadata.uid, serviceAccount: 'cart', node: '' });
    expect(c.hasServiceAccountOnNode('', 'shop', 'cart')).toBe(false);
    env.api.bind('shop', 'cart-0', 'n1');
    await until(() => where(c, 'shop', 'cart-0') === 'n1');
    expect(c.hasServiceAccountOnNode('n1', 'shop', 'cart')).toBe(true);
    // A StatefulSet pod moving node: deleted, then created again with the same name and a new UID.
    env.api.delete('pods', 'shop', 'cart-0');
    await until(() => !c.pod('shop', 'cart-0'));
    expect(c.hasServiceAccountOnNode('n1', 'shop', 'cart')).toBe(false);
    const moved = env.api.createPod('shop', 'cart-0', { serviceAccount: 'cart', node: 'n2' });
    await until(() => where(c, 'shop', 'cart-0') === 'n2');
    expect(c.pod('shop', 'cart-0')!.uid).toBe(moved.metadata.uid);
    expect(c.hasServiceAccountOnNode('n2', 'shop', 'cart')).toBe(true);
    expect(c.hasServiceAccountOnNode('n1', 'shop', 'cart')).toBe(false);
    // Two pods of one service account on a node: the index counts them.
    env.api.createPod('shop', 'cart-1', { serviceAccount: 'cart', node: 'n2' });
    await until(() => c.pod('shop', 'cart-1'));
    env.api.setPodPhase('shop', 'cart-0', 'Failed');
    await until(() => !c.pod('shop', 'cart-0'));
    expect(c.hasServiceAccountOnNode('n2', 'shop', 'cart')).toBe(true);
    env.api.delete('pods', 'shop', 'cart-1');
    await until(() => !c.hasServiceAccountOnNode('n2', 'shop', 'cart'));
    expect(c.index.size).toBe(0);
    expect(c.index.slotCount).toBe(0);
  });

  it('a dropped watch resumes from its resourceVersion: what changed meanwhile arrives, nothing is listed again', async () => {
    env.api.createPod('shop', 'a', { node: 'n1' });
    const c = start();
    await c.ready;
    await until(() => env.api.openWatches('pods') === 1);
    const lists = c.stats.lists;
    const watchRv = env.api.resourceVersion;
    env.api.unreachable = true;
    await sleep(50);
    env.api.unreachable = false;
    env.api.delete('pods', 'shop', 'a');
    env.api.createPod('shop', 'b', { node: 'n2' });
    await until(() => c.pod('shop', 'b') && !c.pod('shop', 'a'));
    expect(c.stats.lists).toBe(lists);
    expect(podRequests(true).at(-1)!.query.resourceVersion).not.toBe(undefined);
    expect(Number(podRequests(true).at(-1)!.query.resourceVersion)).toBeGreaterThanOrEqual(Number(watchRv));
  });

  it.each(['event', 'http'] as const)('a dropped watch whose resourceVersion was compacted relists (410 Gone as %s), dropping pods deleted meanwhile', async (goneAs) => {
    env.api.goneAs = goneAs;
    env.api.createPod('shop', 'a', { node: 'n1' });
    env.api.createPod('shop', 'b', { node: 'n1' });
    const c = start();
    await c.ready;
    await until(() => env.api.openWatches('pods') === 1);
    const lists = c.stats.lists;
    env.api.unreachable = true;
    env.api.delete('pods', 'shop', 'a');
    env.api.createPod('shop', 'c', { node: 'n3' });
    env.api.compact();
    env.api.unreachable = false;
    await until(() => c.stats.lists > lists);
    await until(() => c.pod('shop', 'c') !== undefined);
    expect(c.pod('shop', 'a')).toBeUndefined();
    expect(where(c, 'shop', 'b')).toBe('n1');
    expect(c.stats.gone).toBeGreaterThanOrEqual(1);
    env.api.goneAs = 'event';
  });
});
