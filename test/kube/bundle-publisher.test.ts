/**
 * The `istio-ca-root-cert` ConfigMap publisher through
 * @kubernetes/client-node against an HTTP double of the Kubernetes API
 * (test/kube/apiserver-double.ts): every selected namespace gets the
 * bundle, unchanged ones cost no write, races and failures in one
 * namespace are handled there, and the namespace watch brings the bundle to
 * namespaces created later, across dropped connections and 410 Gone.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { configMapBundlePublisher, type BundlePublisherOptions, type ConfigMapBundlePublisher } from '../../src/kube/bundle-publisher.ts';
import { CastellanError } from '../../src/platform/errors.ts';
import { sleep, startDouble, until, type DoubleEnv } from './helpers.ts';

const CM = 'istio-ca-root-cert';
const KEY = 'root-cert.pem';
let env: DoubleEnv;
let open: ConfigMapBundlePublisher[] = [];
let n = 0;

const pem = (tag: string): string => `-----BEGIN CERTIFICATE-----\n${Buffer.from(`bundle ${tag}`).toString('base64')}\n-----END CERTIFICATE-----\n`;

/** a fresh label value per test, so each test selects only its own namespaces */
function group(): { label: string; selector: string; ns: (name: string, labels?: Record<string, string>) => string } {
  const g = `g${++n}`;
  return {
    label: g,
    selector: `castellan-test=${g}`,
    ns: (name, labels = {}) => {
      const full = `${g}-${name}`;
      env.api.createNamespace(full, { 'castellan-test': g, ...labels });
      return full;
    },
  };
}

function publisher(o: BundlePublisherOptions): ConfigMapBundlePublisher {
  const p = configMapBundlePublisher({ kubeConfig: env.kc(), minBackoffMs: 20, maxBackoffMs: 200, ...o });
  open.push(p);
  return p;
}

const bundleIn = (ns: string): string | undefined => (env.api.get('configmaps', ns, CM)?.data as Record<string, string> | undefined)?.[KEY];
const cmWrites = (namespaces: string[], verb?: 'create' | 'update'): number => env.api.writes.filter((w) => w.resource === 'configmaps' && namespaces.includes(w.namespace ?? '') && (!verb || w.verb === verb)).length;

beforeAll(async () => {
  env = await startDouble('castellan-pub-');
});
afterEach(async () => {
  env.api.faults.length = 0;
  env.api.unreachable = false;
  env.api.onRequest = undefined;
  env.api.goneAs = 'event';
  await Promise.all(open.map((p) => p.close()));
  open = [];
  await until(() => env.api.openWatches('namespaces') === 0);
});
afterAll(async () => {
  await env.stop();
});

describe('ConfigMap trust-bundle publisher (HTTP double of the Kubernetes API)', () => {
  it('writes istio-ca-root-cert/root-cert.pem into every selected namespace and nowhere else', async () => {
    const g = group();
    const targets = ['shop', 'payments', 'web'].map((x) => g.ns(x));
    const outside = `${g.label}-outside`;
    env.api.createNamespace(outside, { 'castellan-test': 'other' });
    const p = publisher({ namespaceSelector: g.selector });
    await p.publish(pem('one'));
    for (const ns of targets) {
      expect(bundleIn(ns)).toBe(pem('one'));
      expect(env.api.get('configmaps', ns, CM)!.metadata.labels).toEqual({ 'istio.io/config': 'true' });
    }
    expect(env.api.get('configmaps', outside, CM)).toBeUndefined();
    expect(cmWrites(targets, 'create')).toBe(3);
    const lists = env.api.requests.filter((r) => r.resource === 'namespaces' && !r.watch);
    expect(lists.at(-1)!.query.labelSelector).toBe(g.selector);
  });

  it('set-based selectors work too (in, notin, exists)', async () => {
    const g = group();
    const on = g.ns('on', { 'istio-injection': 'enabled' });
    const off = g.ns('off', { 'istio-injection': 'disabled' });
    const none = g.ns('none');
    const p = publisher({ namespaceSelector: `${g.selector},istio-injection in (enabled)` });
    await p.publish(pem('sel'));
    expect([bundleIn(on), bundleIn(off), bundleIn(none)]).toEqual([pem('sel'), undefined, undefined]);
    const q = publisher({ namespaceSelector: `${g.selector},istio-injection,istio-injection notin (enabled)` });
    await q.publish(pem('sel2'));
    expect([bundleIn(on), bundleIn(off), bundleIn(none)]).toEqual([pem('sel'), pem('sel2'), undefined]);
  });

  it('a new bundle updates every namespace; an unchanged one costs no write; other keys and labels are kept', async () => {
    const g = group();
    const targets = ['a', 'b', 'c', 'd'].map((x) => g.ns(x));
    const p = publisher({ namespaceSelector: g.selector });
    await p.publish(pem('v1'));
    const afterFirst = cmWrites(targets);
    expect(afterFirst).toBe(4);
    await p.publish(pem('v1'));
    expect(cmWrites(targets)).toBe(afterFirst); // nothing to do: reads only
    // someone added a key and a label to one of them; another already holds the next bundle
    const cmA = env.api.get('configmaps', targets[0]!, CM)!;
    env.api.put('configmaps', { ...cmA, metadata: { ...cmA.metadata, labels: { ...cmA.metadata.labels, team: 'x' } }, data: { ...(cmA.data as object), 'extra.pem': 'keep me' } });
    const cmD = env.api.get('configmaps', targets[3]!, CM)!;
    env.api.put('configmaps', { ...cmD, data: { [KEY]: pem('v2') } });
    await p.publish(pem('v2'));
    for (const ns of targets) expect(bundleIn(ns)).toBe(pem('v2'));
    expect(cmWrites(targets, 'update')).toBe(3); // d already had it
    const a = env.api.get('configmaps', targets[0]!, CM)!;
    expect(a.data).toEqual({ [KEY]: pem('v2'), 'extra.pem': 'keep me' });
    expect(a.metadata.labels).toMatchObject({ team: 'x' });
    expect([...p.lastOutcomes()].filter(([ns]) => targets.includes(ns)).map(([, o]) => o).sort()).toEqual(['unchanged', 'updated', 'updated', 'updated']);
  });

  it('409 on create (created meanwhile by someone else) → read and update; 409 on update (changed meanwhile) → read again and update', async () => {
    const g = group();
    const racyCreate = g.ns('racy-create');
    const racyUpdate = g.ns('racy-update');
    env.api.put('configmaps', { metadata: { name: CM, namespace: racyUpdate }, data: { [KEY]: pem('old') } });
    env.api.onRequest = (r) => {
      if (r.resource !== 'configmaps') return;
      if (r.method === 'POST' && r.namespace === racyCreate && !env.api.get('configmaps', racyCreate, CM)) {
        env.api.put('configmaps', { metadata: { name: CM, namespace: racyCreate }, data: { [KEY]: pem('someone-else') } });
      }
      if (r.method === 'PUT' && r.namespace === racyUpdate && bundleIn(racyUpdate) === pem('old')) {
        env.api.put('configmaps', { ...env.api.get('configmaps', racyUpdate, CM)!, data: { [KEY]: pem('edited') } });
      }
    };
    const p = publisher({ namespaceSelector: g.selector });
    await p.publish(pem('ours'));
    expect(bundleIn(racyCreate)).toBe(pem('ours'));
    expect(bundleIn(racyUpdate)).toBe(pem('ours'));
    const statuses = (ns: string) => env.api.writes.filter((w) => w.resource === 'configmaps' && w.namespace === ns).map((w) => `${w.verb} ${w.status}`);
    expect(statuses(racyCreate)).toEqual(['create 409', 'update 200']);
    expect(statuses(racyUpdate)).toEqual(['update 409', 'update 200']);
  });

  it('a failure in one namespace is logged, not thrown; that namespace is retried (timer, and the next publish)', async () => {
    const g = group();
    const [a, b, c] = ['a', 'b', 'c'].map((x) => g.ns(x)) as [string, string, string];
    const p = publisher({ namespaceSelector: g.selector, retryMs: 150, concurrency: 1 });
    // the second create fails with a 500, once
    let creates = 0;
    env.api.onRequest = (r) => {
      if (r.method === 'POST' && r.resource === 'configmaps' && [a, b, c].includes(r.namespace!) && ++creates === 2) env.api.inject({ method: 'POST', resource: 'configmaps', status: 500 });
    };
    await p.publish(pem('x'));
    expect([a, b, c].map(bundleIn).filter((v) => v === pem('x'))).toHaveLength(2);
    expect([...p.lastOutcomes().values()]).toContain('failed');
    await until(() => [a, b, c].every((ns) => bundleIn(ns) === pem('x')), 5000);
    // and without the timer, the next publish picks it up
    const q = publisher({ namespaceSelector: g.selector, retryMs: 0 });
    env.api.inject({ method: 'PUT', resource: 'configmaps', status: 503, count: 1 });
    await q.publish(pem('y'));
    expect([a, b, c].map(bundleIn).filter((v) => v === pem('y'))).toHaveLength(2);
    await q.publish(pem('y'));
    expect([a, b, c].every((ns) => bundleIn(ns) === pem('y'))).toBe(true);
  });

  it('an API that cannot be reached at all: publish rejects with UNAVAILABLE bundle.unavailable; works again once it is back', async () => {
    const g = group();
    const ns = g.ns('only');
    const p = publisher({ namespaceSelector: g.selector });
    await p.watching;
    env.api.unreachable = true;
    const e = await p.publish(pem('down')).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(e).toBeInstanceOf(CastellanError);
    expect(e).toMatchObject({ kind: 'UNAVAILABLE', code: 'bundle.unavailable' });
    env.api.inject({ method: 'GET', resource: 'namespaces', watch: false, status: 503 });
    env.api.unreachable = false;
    await expect(p.publish(pem('down'))).rejects.toMatchObject({ kind: 'UNAVAILABLE', code: 'bundle.unavailable', message: expect.stringContaining('503') });
    await p.publish(pem('up'));
    expect(bundleIn(ns)).toBe(pem('up'));
  });

  it('a publish that could not list the namespaces is retried on its own once the API is back', async () => {
    const g = group();
    const [a, b] = ['a', 'b'].map((x) => g.ns(x)) as [string, string];
    const p = publisher({ namespaceSelector: g.selector, retryMs: 100 });
    await p.watching;
    env.api.inject({ method: 'GET', resource: 'namespaces', watch: false, status: 503, count: 2 });
    await expect(p.publish(pem('later'))).rejects.toMatchObject({ code: 'bundle.unavailable' });
    await until(() => bundleIn(a) === pem('later') && bundleIn(b) === pem('later'), 5000);
  });

  it('publishes asked for in quick succession end with the newest bundle everywhere', async () => {
    const g = group();
    const targets = ['a', 'b', 'c'].map((x) => g.ns(x));
    const p = publisher({ namespaceSelector: g.selector });
    await Promise.all([p.publish(pem('r1')), p.publish(pem('r2')), p.publish(pem('r3'))]);
    for (const ns of targets) expect(bundleIn(ns)).toBe(pem('r3'));
  });

  it('a namespace created later gets the current bundle through the watch; so does one relabelled into the selector', async () => {
    const g = group();
    g.ns('first');
    const p = publisher({ namespaceSelector: g.selector });
    await p.publish(pem('current'));
    await until(() => env.api.openWatches('namespaces') >= 1);
    const late = g.ns('late');
    await until(() => bundleIn(late) === pem('current'));
    const outsider = `${g.label}-outsider`;
    env.api.createNamespace(outsider, { 'castellan-test': 'nope' });
    // events arrive in order: once a namespace created after it has the bundle, the watch is past the outsider
    const sentinel = g.ns('sentinel');
    await until(() => bundleIn(sentinel) === pem('current'));
    expect(bundleIn(outsider)).toBeUndefined();
    const ns = env.api.get('namespaces', undefined, outsider)!;
    env.api.put('namespaces', { ...ns, metadata: { ...ns.metadata, labels: { 'castellan-test': g.label } } });
    await until(() => bundleIn(outsider) === pem('current'));
    // a new bundle is what later namespaces get from then on
    await p.publish(pem('next'));
    const later = g.ns('later');
    await until(() => bundleIn(later) === pem('next'));
  });

  it('nothing is written by the watch before the first publish, nor into a namespace being deleted', async () => {
    const g = group();
    const p = publisher({ namespaceSelector: g.selector });
    await p.watching;
    const early = g.ns('early');
    const dying = `${g.label}-dying`;
    env.api.put('namespaces', { metadata: { name: dying, labels: { 'castellan-test': g.label } }, status: { phase: 'Terminating' } });
    await sleep(150);
    expect(bundleIn(early)).toBeUndefined();
    await p.publish(pem('b'));
    expect(bundleIn(early)).toBe(pem('b'));
    expect(bundleIn(dying)).toBeUndefined();
  });

  it('survives a dropped namespace watch and a 410 Gone (relist), still publishing into new namespaces', async () => {
    const g = group();
    g.ns('base');
    const p = publisher({ namespaceSelector: g.selector });
    await p.publish(pem('w'));
    await until(() => env.api.openWatches('namespaces') >= 1);
    const mine = (): number => p.watchStats().watches;
    const before = mine();
    // a broken connection: a namespace created while the watch is down is caught up from the resourceVersion
    env.api.inject({ resource: 'namespaces', watch: true, status: 503, count: 1 });
    env.api.dropWatches('namespaces');
    const whileDown = g.ns('while-down');
    await until(() => bundleIn(whileDown) === pem('w'));
    expect(mine()).toBeGreaterThanOrEqual(before + 2);
    // a dropped connection whose resourceVersion is compacted away: relist
    const gone = p.watchStats().gone;
    env.api.inject({ resource: 'namespaces', watch: true, status: 503, count: 1 });
    env.api.dropWatches('namespaces');
    const whileCompacted = g.ns('while-compacted');
    env.api.compact();
    await until(() => bundleIn(whileCompacted) === pem('w'));
    expect(p.watchStats().gone).toBeGreaterThan(gone);
    // a clean close by the server (its watch timeout)
    env.api.endWatches('namespaces');
    const afterEnd = g.ns('after-end');
    await until(() => bundleIn(afterEnd) === pem('w'));
  });

  it('lists namespaces page by page (limit/continue)', async () => {
    const g = group();
    const targets = ['1', '2', '3', '4', '5'].map((x) => g.ns(x));
    const p = publisher({ namespaceSelector: g.selector, pageSize: 2 });
    await p.publish(pem('paged'));
    for (const ns of targets) expect(bundleIn(ns)).toBe(pem('paged'));
    const pages = env.api.requests.filter((r) => r.resource === 'namespaces' && !r.watch && r.query.labelSelector === g.selector);
    expect(pages.some((r) => r.query.continue)).toBe(true);
    expect(pages.every((r) => r.query.limit === '2')).toBe(true);
  });

  it('with a leader elector: watch-driven writes only while this replica leads', async () => {
    const g = group();
    g.ns('x');
    let leading = true;
    const p = publisher({ namespaceSelector: g.selector, leader: { isLeader: () => leading } });
    await p.publish(pem('l'));
    await until(() => env.api.openWatches('namespaces') >= 1);
    leading = false;
    const whileFollower = g.ns('follower-time');
    await sleep(200);
    expect(bundleIn(whileFollower)).toBeUndefined();
    leading = true;
    await p.publish(pem('l'));
    expect(bundleIn(whileFollower)).toBe(pem('l'));
  });

  it('close() stops the namespace watch', async () => {
    const g = group();
    g.ns('c');
    const before = 0;
    const p = publisher({ namespaceSelector: g.selector });
    await p.publish(pem('c'));
    await until(() => env.api.openWatches('namespaces') === before + 1);
    await p.close();
    await until(() => env.api.openWatches('namespaces') === before);
  });
});
