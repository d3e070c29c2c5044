/**
 * The AuthorizationPolicy watcher (src/kube/policy-watch.ts) through
 * @kubernetes/client-node against the HTTP double of the Kubernetes API
 * (test/kube/apiserver-double.ts): the double's security.istio.io/v1
 * endpoints themselves, then the initial list, changes reaching onChange, a
 * dropped watch resumed from its resourceVersion (no event lost or
 * repeated), a 410 Gone relist dropping what was deleted meanwhile, invalid
 * objects reported and kept out (fail closed or skipped), namespace scoping,
 * and the live engine swapped on every change.
 */
import { ApiException, CustomObjectsApi, Watch } from '@kubernetes/client-node';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { AuthzRequest } from '../../src/authz/model.ts';
import { createAuthzMetrics } from '../../src/authz/metrics.ts';
import { AuthzEngine } from '../../src/authz/engine.ts';
import { KubePolicySource, watchAuthorizationPolicies, type KubePolicySourceOptions, type AuthorizationPolicyWatch, type AuthorizationPolicyWatchOptions, type PolicySnapshot } from '../../src/kube/policy-watch.ts';
import { createLogger } from '../../src/platform/logger.ts';
import type { KubeObject } from './apiserver-double.ts';
import { sleep, startDouble, until, type DoubleEnv } from './helpers.ts';

const G = { group: 'security.istio.io', version: 'v1', plural: 'authorizationpolicies' } as const;
let env: DoubleEnv;
let open: { stop(): void }[] = [];

function ap(namespace: string, name: string, spec: Record<string, unknown>, annotations?: Record<string, string>): KubeObject {
  return { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name, namespace, ...(annotations ? { annotations } : {}) }, spec };
}
const denyPath = (path: string, app?: string): Record<string, unknown> => ({ ...(app ? { selector: { matchLabels: { app } } } : {}), action: 'DENY', rules: [{ to: [{ operation: { paths: [path] } }] }] });
const allowFrom = (ns: string, app?: string): Record<string, unknown> => ({ ...(app ? { selector: { matchLabels: { app } } } : {}), action: 'ALLOW', rules: [{ from: [{ source: { namespaces: [ns] } }] }] });

function put(o: KubeObject): KubeObject {
  return env.api.put('authorizationpolicies', o);
}

/** A request to workload `app` in `namespace` from namespace `from`. */
function req(namespace: string, app: string, path = '/', from = 'client'): AuthzRequest {
  return {
    workload: { namespace, labels: { app } },
    source: { principal: `cluster.local/ns/${from}/sa/default`, ip: '10.0.0.1', remoteIp: '10.0.0.1' },
    destination: { ip: '10.0.0.2', port: 8080 },
    connection: {},
    request: { method: 'GET', host: 'svc', path, headers: {} },
  };
}

interface Run {
  w: AuthorizationPolicyWatch;
  changes: PolicySnapshot[];
  events: { type: string; policy: string; rv?: string }[];
  /** namespace/name of the policies in the last onChange */
  ids: () => string[] | undefined;
}

function start(o: Partial<AuthorizationPolicyWatchOptions> = {}): Run {
  const changes: PolicySnapshot[] = [];
  const events: Run['events'] = [];
  const w = watchAuthorizationPolicies({
    kubeConfig: env.kc(),
    debounceMs: 20,
    minBackoffMs: 20,
    maxBackoffMs: 200,
    onChange: (_, s) => changes.push(s),
    onEvent: (type, policy, rv) => events.push({ type, policy, rv }),
    ...o,
  });
  open.push(w);
  return { w, changes, events, ids: () => changes.at(-1)?.policies.map((p) => `${p.namespace}/${p.name}`) };
}

const lines: Record<string, unknown>[] = [];
const logger = createLogger({ level: 'debug', destination: { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) } });

/** the resourceVersion the last watch request of authorizationpolicies asked for */
const lastWatchRv = (): string | undefined => env.api.requests.filter((r) => r.resource === 'authorizationpolicies' && r.watch).at(-1)?.query.resourceVersion;

beforeAll(async () => {
  env = await startDouble('castellan-apwatch-');
  for (const ns of ['istio-system', 'foo', 'bar', 'baz']) env.api.createNamespace(ns);
});
afterEach(async () => {
  for (const w of open) w.stop();
  open = [];
  env.api.faults.length = 0;
  env.api.unreachable = false;
  env.api.goneAs = 'event';
  lines.length = 0;
  for (const o of env.api.list('authorizationpolicies')) env.api.delete('authorizationpolicies', o.metadata.namespace, o.metadata.name);
  await until(() => env.api.openWatches('authorizationpolicies') === 0);
});
afterAll(async () => {
  await env.stop();
});

describe('security.istio.io/v1 AuthorizationPolicies in the double (HTTP double of the Kubernetes API)', () => {
  async function failure(p: Promise<unknown>): Promise<{ code: number; status: Record<string, unknown> }> {
    try {
      await p;
    } catch (e) {
      expect(e).toBeInstanceOf(ApiException);
      const x = e as ApiException<unknown>;
      return { code: x.code, status: typeof x.body === 'string' ? (JSON.parse(x.body) as Record<string, unknown>) : (x.body as Record<string, unknown>) };
    }
    throw new Error('expected an API error');
  }

  it('create, get, list (items keep apiVersion and kind), update with resourceVersion, delete with preconditions; Status errors', async () => {
    const api = env.kc().makeApiClient(CustomObjectsApi);
    const created = (await api.createNamespacedCustomObject({ ...G, namespace: 'foo', body: { apiVersion: 'security.istio.io/v1beta1', kind: 'AuthorizationPolicy', metadata: { name: 'p' }, spec: { action: 'ALLOW' } } })) as KubeObject;
    expect(created).toMatchObject({ apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'p', namespace: 'foo', resourceVersion: env.api.resourceVersion } });
    expect(await api.getNamespacedCustomObject({ ...G, namespace: 'foo', name: 'p' })).toMatchObject({ spec: { action: 'ALLOW' } });
    expect(await failure(api.createNamespacedCustomObject({ ...G, namespace: 'foo', body: { metadata: { name: 'p' } } }))).toMatchObject({ code: 409, status: { reason: 'AlreadyExists', message: 'authorizationpolicies.security.istio.io "p" already exists' } });
    expect(await failure(api.createNamespacedCustomObject({ ...G, namespace: 'foo', body: { metadata: { name: 'q' }, spec: [] } }))).toMatchObject({ code: 422, status: { reason: 'Invalid' } });
    expect(await failure(api.createNamespacedCustomObject({ ...G, namespace: 'foo', body: { apiVersion: 'security.istio.io/v2', metadata: { name: 'q' } } }))).toMatchObject({ code: 400 });
    expect(await failure(api.createNamespacedCustomObject({ ...G, namespace: 'nowhere', body: { metadata: { name: 'q' } } }))).toMatchObject({ code: 404 });
    await api.createNamespacedCustomObject({ ...G, namespace: 'bar', body: { metadata: { name: 'r' }, spec: { notAField: true } } });
    const all = (await api.listCustomObjectForAllNamespaces({ group: G.group, version: G.version, resourcePlural: G.plural })) as { kind: string; metadata: { resourceVersion: string }; items: KubeObject[] };
    expect(all.kind).toBe('AuthorizationPolicyList');
    expect(all.metadata.resourceVersion).toBe(env.api.resourceVersion);
    expect(all.items.map((i) => `${i.apiVersion} ${i.kind} ${i.metadata.namespace}/${i.metadata.name}`)).toEqual(['security.istio.io/v1 AuthorizationPolicy bar/r', 'security.istio.io/v1 AuthorizationPolicy foo/p']);
    expect(all.items[0]!.spec).toEqual({ notAField: true }); // kept as given, like a newer CRD would
    const inFoo = (await api.listNamespacedCustomObject({ ...G, namespace: 'foo' })) as { items: KubeObject[] };
    expect(inFoo.items.map((i) => i.metadata.name)).toEqual(['p']);
    const stale = { ...created, spec: { action: 'DENY', rules: [{}] } };
    const updated = (await api.replaceNamespacedCustomObject({ ...G, namespace: 'foo', name: 'p', body: stale })) as KubeObject;
    expect(Number(updated.metadata.resourceVersion)).toBeGreaterThan(Number(created.metadata.resourceVersion));
    expect(await failure(api.replaceNamespacedCustomObject({ ...G, namespace: 'foo', name: 'p', body: stale }))).toMatchObject({ code: 409, status: { reason: 'Conflict' } });
    expect(await failure(api.deleteNamespacedCustomObject({ ...G, namespace: 'foo', name: 'p', body: { preconditions: { resourceVersion: created.metadata.resourceVersion } } }))).toMatchObject({ code: 409 });
    expect(await api.deleteNamespacedCustomObject({ ...G, namespace: 'foo', name: 'p', body: { preconditions: { resourceVersion: updated.metadata.resourceVersion } } })).toMatchObject({ kind: 'Status', status: 'Success', details: { name: 'p', group: 'security.istio.io', kind: 'authorizationpolicies' } });
    expect(await failure(api.deleteNamespacedCustomObject({ ...G, namespace: 'foo', name: 'p' }))).toMatchObject({ code: 404, status: { reason: 'NotFound', message: 'authorizationpolicies.security.istio.io "p" not found' } });
    expect(env.api.writeCount('authorizationpolicies', { verb: 'delete', changed: true })).toBe(1);
    expect(env.api.get('authorizationpolicies', 'foo', 'p')).toBeUndefined();
  });

  it('watch, cluster-wide and namespaced: ADDED, MODIFIED, DELETED with resourceVersions; from N every change after N', async () => {
    const seen = (path: string, query: Record<string, string> = {}) => {
      const events: string[] = [];
      const c = new Watch(env.kc()).watch(path, query, (type, o: KubeObject) => events.push(`${type} ${o.metadata.namespace}/${o.metadata.name} ${o.metadata.resourceVersion}`), () => undefined);
      return { events, stop: () => void c.then((x) => x.abort()) };
    };
    const from = env.api.resourceVersion;
    const all = seen('/apis/security.istio.io/v1/authorizationpolicies', { resourceVersion: from });
    const foo = seen('/apis/security.istio.io/v1/namespaces/foo/authorizationpolicies', { resourceVersion: from });
    await until(() => env.api.openWatches('authorizationpolicies') === 2);
    const a = put(ap('foo', 'a', { action: 'ALLOW' }));
    const b = put(ap('bar', 'b', { action: 'ALLOW' }));
    const a2 = put(ap('foo', 'a', allowFrom('bar')));
    env.api.delete('authorizationpolicies', 'foo', 'a');
    const del = env.api.resourceVersion;
    await until(() => all.events.length === 4 && foo.events.length === 3);
    expect(all.events).toEqual([`ADDED foo/a ${a.metadata.resourceVersion}`, `ADDED bar/b ${b.metadata.resourceVersion}`, `MODIFIED foo/a ${a2.metadata.resourceVersion}`, `DELETED foo/a ${del}`]);
    expect(foo.events).toEqual([all.events[0], all.events[2], all.events[3]]);
    const replay = seen('/apis/security.istio.io/v1/authorizationpolicies', { resourceVersion: b.metadata.resourceVersion! });
    await until(() => replay.events.length === 2);
    expect(replay.events).toEqual(all.events.slice(2));
    for (const w of [all, foo, replay]) w.stop();
  });
});

describe('AuthorizationPolicy watcher (HTTP double of the Kubernetes API)', () => {
  it('initial list: one onChange with every namespace\'s objects, as validated documents, sorted by namespace/name', async () => {
    put(ap('foo', 'z-allow', allowFrom('bar')));
    put(ap('bar', 'deny-admin', denyPath('/admin', 'web')));
    put({ ...ap('istio-system', 'mesh', { action: 'ALLOW' }), apiVersion: 'security.istio.io/v1beta1' });
    const r = start();
    await r.w.synced;
    expect(r.changes).toHaveLength(1);
    expect(r.ids()).toEqual(['bar/deny-admin', 'foo/z-allow', 'istio-system/mesh']);
    const deny = r.changes[0]!.policies[0]!;
    expect(deny).toMatchObject({ namespace: 'bar', name: 'deny-admin', action: 'DENY', selector: { app: 'web' }, origin: { file: 'kubernetes:bar/deny-admin' } });
    expect(deny.rules).toEqual([{ to: [{ operation: { paths: ['/admin'] } }] }]);
    expect(r.changes[0]!.rejected).toEqual([]);
    expect(r.events).toEqual([]); // the list, not watch events
    expect(r.w.stats()).toMatchObject({ lists: 1, watches: 1, gone: 0 });
    expect(env.api.requests.filter((q) => q.resource === 'authorizationpolicies' && !q.watch).at(-1)).toMatchObject({ namespace: undefined, query: { limit: '500' } });
    await until(() => env.api.openWatches('authorizationpolicies') === 1);
    expect(lastWatchRv()).toBe(env.api.resourceVersion);
    // a later change is the second onChange: a repeat of the list's would come before it
    put(ap('foo', 'sentinel', allowFrom('bar')));
    await until(() => r.ids()?.length === 4);
    expect(r.changes).toHaveLength(2);
  });

  it('pages through a long list (limit/continue)', async () => {
    for (let i = 0; i < 7; i++) put(ap('foo', `p${i}`, allowFrom('bar')));
    const r = start({ pageSize: 3 });
    await r.w.synced;
    expect(r.ids()).toHaveLength(7);
    expect(env.api.requests.filter((q) => q.resource === 'authorizationpolicies' && !q.watch && q.query.limit === '3')).toHaveLength(3);
  });

  it('ADDED, MODIFIED and DELETED reach onChange with the whole current set (debounced)', async () => {
    put(ap('foo', 'a', allowFrom('bar')));
    const r = start({ debounceMs: 150 });
    await r.w.synced;
    await until(() => env.api.openWatches('authorizationpolicies') === 1);
    put(ap('bar', 'b', denyPath('/x')));
    await until(() => r.ids()?.length === 2);
    expect(r.ids()).toEqual(['bar/b', 'foo/a']);
    put(ap('foo', 'a', allowFrom('baz')));
    await until(() => r.changes.at(-1)!.policies.find((p) => p.name === 'a')!.rules[0]!.from![0]!.source.namespaces![0] === 'baz');
    env.api.delete('authorizationpolicies', 'bar', 'b');
    await until(() => r.ids()?.length === 1);
    expect(r.ids()).toEqual(['foo/a']);
    expect(r.events.map((e) => `${e.type} ${e.policy}`)).toEqual(['ADDED bar/b', 'MODIFIED foo/a', 'DELETED bar/b']);
    // a burst of writes is one onChange
    const before = r.changes.length;
    for (let i = 0; i < 5; i++) put(ap('baz', `burst${i}`, allowFrom('foo')));
    await until(() => r.ids()?.length === 6);
    // one more write after the burst: its onChange comes after any trailing one of the burst
    put(ap('baz', 'after-burst', allowFrom('foo')));
    await until(() => r.ids()?.length === 7);
    expect(r.changes.length - before).toBeLessThanOrEqual(3);
  });

  it('a dropped watch connection resumes from the last resourceVersion (or bookmark): nothing lost, nothing repeated, no relist', async () => {
    put(ap('foo', 'keep', allowFrom('bar')));
    put(ap('foo', 'change-me', allowFrom('bar')));
    put(ap('foo', 'delete-me', allowFrom('bar')));
    const r = start();
    await r.w.synced;
    await until(() => env.api.openWatches('authorizationpolicies') === 1);
    const added = put(ap('bar', 'before-drop', denyPath('/a')));
    await until(() => r.events.length === 1);

    // the connection breaks and stays down while the cluster changes
    env.api.unreachable = true;
    const missed = [put(ap('foo', 'change-me', allowFrom('baz'))), put(ap('baz', 'new', denyPath('/b')))];
    env.api.delete('authorizationpolicies', 'foo', 'delete-me');
    const deletedAt = env.api.resourceVersion;
    await sleep(150);
    env.api.unreachable = false;
    await until(() => r.events.length === 4);
    expect(r.events).toEqual([
      { type: 'ADDED', policy: 'bar/before-drop', rv: added.metadata.resourceVersion },
      { type: 'MODIFIED', policy: 'foo/change-me', rv: missed[0]!.metadata.resourceVersion },
      { type: 'ADDED', policy: 'baz/new', rv: missed[1]!.metadata.resourceVersion },
      { type: 'DELETED', policy: 'foo/delete-me', rv: deletedAt },
    ]);
    await until(() => r.ids()?.join() === 'bar/before-drop,baz/new,foo/change-me,foo/keep');
    expect(env.api.requests.filter((q) => q.resource === 'authorizationpolicies' && q.watch).some((q) => q.query.resourceVersion === added.metadata.resourceVersion)).toBe(true);

    // a plain reset (no outage), then a BOOKMARK: the next watch starts from the bookmark's resourceVersion
    await until(() => env.api.openWatches('authorizationpolicies') === 1);
    expect(env.api.dropWatches('authorizationpolicies')).toBe(1);
    await until(() => env.api.openWatches('authorizationpolicies') === 1);
    env.api.createNamespace('unrelated'); // moves the store's resourceVersion past the last policy event
    const bookmarked = env.api.resourceVersion;
    // the bookmark, then a clean close (server-side timeout) on the same stream: read in that order, re-established at once
    env.api.sendBookmarks();
    env.api.endWatches('authorizationpolicies');
    await until(() => env.api.openWatches('authorizationpolicies') === 1);
    expect(lastWatchRv()).toBe(bookmarked);
    expect(env.api.requests.filter((q) => q.resource === 'authorizationpolicies' && q.watch).at(-1)?.query.allowWatchBookmarks).toBe('true');
    put(ap('foo', 'after', allowFrom('bar')));
    await until(() => r.events.length === 5);
    expect(r.events.at(-1)).toMatchObject({ type: 'ADDED', policy: 'foo/after' });
    const rvs = r.events.map((e) => Number(e.rv));
    expect([...rvs].sort((a, b) => a - b)).toEqual(rvs);
    expect(new Set(rvs).size).toBe(rvs.length);
    expect(r.w.stats()).toMatchObject({ lists: 1, gone: 0 });
    expect(r.w.stats().watches).toBeGreaterThanOrEqual(4);
  });

  it.each(['event', 'http'] as const)('410 Gone (as %s) relists: the list replaces the set, objects deleted meanwhile disappear', async (goneAs) => {
    env.api.goneAs = goneAs;
    put(ap('foo', 'stays', allowFrom('bar')));
    put(ap('foo', 'deleted-while-away', denyPath('/a')));
    put(ap('bar', 'changed-while-away', allowFrom('bar')));
    const r = start();
    await r.w.synced;
    await until(() => env.api.openWatches('authorizationpolicies') === 1);
    expect(r.ids()).toEqual(['bar/changed-while-away', 'foo/deleted-while-away', 'foo/stays']);

    env.api.unreachable = true;
    env.api.delete('authorizationpolicies', 'foo', 'deleted-while-away');
    put(ap('bar', 'changed-while-away', allowFrom('baz')));
    put(ap('baz', 'created-while-away', denyPath('/c')));
    env.api.compact(); // the watch's resourceVersion is gone from the history
    await sleep(100);
    env.api.unreachable = false;
    await until(() => r.w.stats().gone >= 1 && r.w.stats().lists === 2);
    await until(() => r.ids()?.join() === 'bar/changed-while-away,baz/created-while-away,foo/stays');
    expect(r.changes.at(-1)!.policies.find((p) => p.name === 'changed-while-away')!.rules[0]!.from![0]!.source.namespaces).toEqual(['baz']);
    expect(r.events).toEqual([]); // nothing came as an event: the relist brought it
    // and the watch continues from the new list
    await until(() => env.api.openWatches('authorizationpolicies') === 1);
    put(ap('foo', 'later', allowFrom('bar')));
    await until(() => r.ids()?.includes('foo/later') === true);
    expect(r.events).toEqual([expect.objectContaining({ type: 'ADDED', policy: 'foo/later' })]);
  });

  it('list failures (503, 403) are retried with backoff; the first onChange waits for a successful list', async () => {
    put(ap('foo', 'a', allowFrom('bar')));
    env.api.inject({ method: 'GET', resource: 'authorizationpolicies', watch: false, status: 503, count: 2 });
    env.api.inject({ method: 'GET', resource: 'authorizationpolicies', watch: false, status: 403, count: 1 });
    const r = start({ logger });
    await r.w.synced;
    expect(r.changes).toHaveLength(1);
    expect(r.ids()).toEqual(['foo/a']);
    const failed = lines.filter((l) => l.event === 'kube.list_failed').map((l) => l.why);
    expect(failed).toEqual([expect.stringMatching(/^HTTP 503 ServiceUnavailable/), expect.stringMatching(/^HTTP 503/), expect.stringMatching(/^HTTP 403 Forbidden/)]);
  });

  it('an invalid object (a field this engine does not know) is reported by name, path and reason, and kept out while the others apply', async () => {
    put(ap('foo', 'good-allow', allowFrom('bar', 'web')));
    put(ap('foo', 'newer-field', { selector: { matchLabels: { app: 'db' } }, action: 'DENY', rules: [{ to: [{ operation: { paths: ['/admin'], futureMatcher: ['x'] } }] }] }));
    put(ap('bar', 'bad-allow', { selector: { matchLabels: { app: 'api' } }, rules: [{ from: [{ source: { principals: [42] } }] }] }));
    put(ap('bar', 'bad-audit', { action: 'AUDIT', rules: [{ when: [{ key: 'nope' }] }] }));
    put(ap('baz', 'bad-selector', { selector: { matchLabels: { app: 7 } }, action: 'DENY', rules: [{}] }));
    const r = start({ logger });
    await r.w.synced;
    const s = r.changes.at(-1)!;
    expect(s.objects).toBe(5);
    expect(s.rejected.map((x) => [x.policy, x.replacement, x.scope])).toEqual([
      ['bar/bad-allow', 'allow-nothing', 'selector'],
      ['bar/bad-audit', 'none', undefined],
      ['baz/bad-selector', 'deny-all', 'namespace'],
      ['foo/newer-field', 'deny-all', 'selector'],
    ]);
    const newer = s.rejected.find((x) => x.policy === 'foo/newer-field')!;
    expect(newer.resourceVersion).toBe(env.api.get('authorizationpolicies', 'foo', 'newer-field')!.metadata.resourceVersion);
    expect(newer.errors).toEqual([{ path: 'spec.rules[0].to[0].operation.futureMatcher', message: expect.stringMatching(/^unknown field "futureMatcher"/) }]);
    // what applies: the good one as written, stand-ins that can only deny, nothing for the AUDIT
    expect(s.policies.map((p) => `${p.namespace}/${p.name} ${p.action} ${JSON.stringify(p.selector ?? null)} ${JSON.stringify(p.rules)}`)).toEqual([
      'bar/bad-allow ALLOW {"app":"api"} []',
      'baz/bad-selector DENY null [{}]',
      'foo/good-allow ALLOW {"app":"web"} [{"from":[{"source":{"namespaces":["bar"]}}]}]',
      'foo/newer-field DENY {"app":"db"} [{}]',
    ]);
    expect(s.policies.find((p) => p.name === 'newer-field')!.origin.file).toBe('kubernetes:foo/newer-field (fail-closed stand-in)');
    const reports = lines.filter((l) => l.event === 'authz.policy_invalid');
    expect(reports.map((l) => l.policy)).toEqual(['bar/bad-allow', 'bar/bad-audit', 'baz/bad-selector', 'foo/newer-field']);
    const report = reports.find((l) => l.policy === 'foo/newer-field')!;
    expect(report).toMatchObject({ level: 'error', replacement: 'deny-all', errors: [expect.stringMatching(/^spec\.rules\[0]\.to\[0]\.operation\.futureMatcher: unknown field "futureMatcher"/)] });
    expect(String(report.msg)).toMatch(/^AuthorizationPolicy foo\/newer-field is invalid \(spec\.rules\[0]\.to\[0]\.operation\.futureMatcher: unknown field .*\): failing closed: every request to the workloads it selects is denied/);

    // reported once per resourceVersion, not on every change; fixed, it applies as written
    put(ap('foo', 'other', allowFrom('bar')));
    await until(() => r.ids()?.includes('foo/other') === true);
    expect(lines.filter((l) => l.event === 'authz.policy_invalid')).toHaveLength(4);
    put(ap('foo', 'newer-field', denyPath('/admin', 'db')));
    await until(() => r.changes.at(-1)!.rejected.length === 3);
    expect(r.changes.at(-1)!.policies.find((p) => p.name === 'newer-field')!.rules).toEqual([{ to: [{ operation: { paths: ['/admin'] } }] }]);
    expect(lines.filter((l) => l.event === 'authz.policy_valid').map((l) => l.policy)).toEqual(['foo/newer-field']);
  });

  it('--kubernetes-invalid skip: an invalid object is left out entirely', async () => {
    put(ap('foo', 'good', allowFrom('bar')));
    put(ap('foo', 'bad', { action: 'DENY', rules: [{ to: [{ operation: { futureMatcher: ['x'] } }] }] }));
    const r = start({ invalid: 'skip' });
    await r.w.synced;
    expect(r.ids()).toEqual(['foo/good']);
    expect(r.changes.at(-1)!.rejected).toEqual([expect.objectContaining({ policy: 'foo/bad', replacement: 'none' })]);
  });

  it('namespace scoping: only the named namespaces are listed and watched (namespaced paths), each on its own', async () => {
    put(ap('foo', 'in-foo', allowFrom('bar')));
    put(ap('bar', 'in-bar', allowFrom('bar')));
    put(ap('istio-system', 'in-root', allowFrom('bar')));
    const mark = env.api.requests.length;
    const r = start({ namespaces: ['foo', 'istio-system', 'foo'] });
    await r.w.synced;
    expect(r.ids()).toEqual(['foo/in-foo', 'istio-system/in-root']);
    await until(() => env.api.openWatches('authorizationpolicies') === 2);
    const mine = env.api.requests.slice(mark).filter((q) => q.resource === 'authorizationpolicies');
    expect(new Set(mine.map((q) => q.namespace))).toEqual(new Set(['foo', 'istio-system']));
    put(ap('bar', 'in-bar-2', allowFrom('bar')));
    put(ap('foo', 'in-foo-2', allowFrom('bar')));
    await until(() => r.ids()?.length === 3);
    expect(r.ids()).toEqual(['foo/in-foo', 'foo/in-foo-2', 'istio-system/in-root']);
    expect(r.events.map((e) => e.policy)).toEqual(['foo/in-foo-2']);
    // a 410 in one namespace relists that namespace only
    env.api.unreachable = true;
    env.api.delete('authorizationpolicies', 'foo', 'in-foo');
    env.api.compact();
    await sleep(100);
    env.api.unreachable = false;
    await until(() => r.ids()?.join() === 'foo/in-foo-2,istio-system/in-root');
  });

  it('stop() ends the watches and no onChange follows', async () => {
    const r = start();
    await r.w.synced;
    await until(() => env.api.openWatches('authorizationpolicies') === 1);
    r.w.stop();
    await until(() => env.api.openWatches('authorizationpolicies') === 0);
    const n = r.changes.length;
    put(ap('foo', 'late', allowFrom('bar')));
    await sleep(150);
    expect(r.changes).toHaveLength(n);
  });
});

describe('KubePolicySource: the live engine (HTTP double of the Kubernetes API)', () => {
  function source(o: Partial<KubePolicySourceOptions> = {}) {
    const metrics = createAuthzMetrics({ defaultMetrics: false });
    const reloads: { ok: boolean; policies: number; invalid: number }[] = [];
    const s = new KubePolicySource({ kubeConfig: env.kc(), engine: { rootNamespace: 'istio-system' }, metrics, logger, debounceMs: 20, minBackoffMs: 20, maxBackoffMs: 200, onReload: (r) => reloads.push(r), ...o });
    open.push({ stop: () => s.close() });
    return { s, metrics, reloads, metric: async (name: string) => (await metrics.registry.getSingleMetricAsString(name)).split('\n').filter((l) => !l.startsWith('#')).join('\n') };
  }

  it('denies everything until the first list, then swaps in a new engine on every change; metrics and logs as for file reloads', async () => {
    env.api.unreachable = true;
    const { s, reloads, metric } = source();
    await sleep(100);
    expect(s.ready).toBe(false);
    expect(s.engine.evaluate(req('foo', 'web')).decision).toBe('DENY');
    put(ap('foo', 'web-from-bar', allowFrom('bar', 'web')));
    env.api.unreachable = false;
    await s.synced;
    expect(s.ready).toBe(true);
    const e1 = s.engine;
    expect(e1.size).toBe(1);
    expect(e1.evaluate(req('foo', 'web', '/', 'bar')).decision).toBe('ALLOW');
    expect(e1.evaluate(req('foo', 'web', '/', 'baz')).decision).toBe('DENY');
    expect(lines.find((l) => l.event === 'authz.kubernetes_synced')).toMatchObject({ policies: 1, invalid: 0 });

    put(ap('foo', 'no-admin', denyPath('/admin', 'web')));
    await until(() => s.engine !== e1);
    expect(s.engine.evaluate(req('foo', 'web', '/admin', 'bar'))).toMatchObject({ decision: 'DENY', policy: 'foo/no-admin' });
    expect(e1.evaluate(req('foo', 'web', '/admin', 'bar')).decision).toBe('ALLOW'); // a call in flight keeps its engine
    put(ap('foo', 'no-admin', { action: 'DENY', rules: [{ to: [{ operation: { paths: ['/admin'], futureMatcher: ['x'] } }] }] }));
    await until(() => s.snapshot?.rejected.length === 1);
    await until(() => s.engine.evaluate(req('foo', 'web', '/', 'bar')).decision === 'DENY'); // fail closed: deny-all stand-in
    expect(await metric('castellan_authz_invalid_policies')).toBe('castellan_authz_invalid_policies 1');
    env.api.delete('authorizationpolicies', 'foo', 'no-admin');
    await until(() => s.engine.evaluate(req('foo', 'web', '/admin', 'bar')).decision === 'ALLOW');
    expect(await metric('castellan_authz_invalid_policies')).toBe('castellan_authz_invalid_policies 0');
    expect(await metric('castellan_authz_policies')).toBe('castellan_authz_policies 1');
    expect(await metric('castellan_authz_policy_reloads_total')).toBe(`castellan_authz_policy_reloads_total{result="ok"} ${reloads.length}`);
    expect(reloads.every((r) => r.ok)).toBe(true);
    expect(lines.filter((l) => l.event === 'authz.reload').length).toBe(reloads.length - 1);
    expect(s.reload()).toBe(true);
  });

  it('a set that does not compile keeps the last good engine (logged once, counted as an error)', async () => {
    let poison = false;
    const compile = (p: Parameters<typeof AuthzEngine.compile>[0], o: Parameters<typeof AuthzEngine.compile>[1]): AuthzEngine => {
      if (poison) throw new Error('compiler says no');
      return AuthzEngine.compile(p, o);
    };
    put(ap('foo', 'a', allowFrom('bar', 'web')));
    const { s, reloads, metric } = source({ compile });
    await s.synced;
    const good = s.engine;
    poison = true;
    put(ap('foo', 'b', denyPath('/x', 'web')));
    await until(() => reloads.some((r) => !r.ok));
    put(ap('foo', 'c', denyPath('/y', 'web')));
    await until(() => reloads.filter((r) => !r.ok).length === 2);
    expect(s.engine).toBe(good);
    expect(s.lastError).toBe('compiler says no');
    expect(lines.filter((l) => l.event === 'authz.reload_failed')).toEqual([expect.objectContaining({ level: 'error', policies: 1, error: 'compiler says no', msg: 'policy reload failed: keeping the last good policy set' })]);
    expect(await metric('castellan_authz_policy_reloads_total')).toContain('castellan_authz_policy_reloads_total{result="error"} 2');
    poison = false;
    expect(s.reload()).toBe(true);
    expect(s.engine.size).toBe(3);
  });
});
