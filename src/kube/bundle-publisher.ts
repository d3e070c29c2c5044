/**
 * The trust bundle in Kubernetes (the TrustBundlePublisher port): ConfigMap
 * `istio-ca-root-cert`, key `root-cert.pem`, in every namespace matching a
 * label selector (default: all), which is where Istio's workloads look for
 * the mesh's roots.
 *
 * `publish(bundle)` lists the namespaces and, in each, creates the ConfigMap
 * or updates its key (other keys and metadata are kept); a namespace whose
 * ConfigMap already holds the bundle costs one GET and no write. A 409 on
 * create (someone else created it) or on update (someone else changed it)
 * is resolved by reading again and retrying. A failure in one namespace is
 * logged and retried later (`retryMs`, and on the next publish); publish
 * rejects only when the namespaces cannot be listed at all (UNAVAILABLE
 * bundle.unavailable, or PERMISSION_DENIED for RBAC), and then the whole
 * publish is retried after `retryMs` too. A publish superseded by a newer
 * bundle before it started resolves without writing (the newer one runs).
 *
 * A watch of the namespaces (list then watch, re-established on drops,
 * relisted on 410 Gone) gives namespaces created later the current bundle.
 * Writes never overlap: publishes and watch-driven fixes run one at a time,
 * in order, so an older bundle cannot land after a newer one.
 */
import { CoreV1Api, type KubeConfig, type V1ConfigMap, type V1Namespace } from '@kubernetes/client-node';
import type { LeaderElector, TrustBundlePublisher } from '../ca/keystore.ts';
import { systemClock, type Clock, type TimerHandle } from '../platform/clock.ts';
import { CastellanError } from '../platform/errors.ts';
import { silentLogger, type Logger } from '../platform/logger.ts';
import { describeKubeFailure, isStatus, kubeFailure } from './api-errors.ts';
import { listWatch, type ListWatchHandle } from './list-watch.ts';
import { loadKubeConfig } from './kubeconfig.ts';

export const DEFAULT_BUNDLE_CONFIGMAP = 'istio-ca-root-cert';
export const DEFAULT_BUNDLE_KEY = 'root-cert.pem';

export interface BundlePublisherOptions {
  /** path of a kubeconfig; default $KUBECONFIG, else the in-cluster service account */
  kubeconfig?: string;
  /** an already loaded KubeConfig (takes precedence over `kubeconfig`) */
  kubeConfig?: KubeConfig;
  /** label selector of the target namespaces; default all */
  namespaceSelector?: string;
  /** default `istio-ca-root-cert` */
  configMapName?: string;
  /** default `root-cert.pem` */
  key?: string;
  logger?: Logger;
  clock?: Clock;
  /**
   * When given, watch-driven writes (new namespaces, retries) happen only
   * while it says this replica leads, so a replica that lost leadership
   * cannot write its older bundle into a namespace created later.
   */
  leader?: Pick<LeaderElector, 'isLeader'>;
  /** namespaces written in parallel; default 8 */
  concurrency?: number;
  /** delay before namespaces that failed are tried again; default 30 s (0: only on the next publish) */
  retryMs?: number;
  /** page size of namespace lists; default 500 */
  pageSize?: number;
  /** namespace watch retry backoff; defaults 250 ms → 30 s */
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

export type NamespaceOutcome = 'created' | 'updated' | 'unchanged' | 'skipped' | 'failed';

export interface ConfigMapBundlePublisher extends TrustBundlePublisher {
  /** Outcome per namespace of the last publish or watch-driven fix. */
  lastOutcomes(): ReadonlyMap<string, NamespaceOutcome>;
  /** Resolves when no write is queued or running. */
  idle(): Promise<void>;
  /** Resolves once the namespace watch has listed the namespaces. */
  readonly watching: Promise<void>;
  readonly watchStats: () => { lists: number; watches: number; gone: number };
}

/** Every namespace matching `selector`, page by page; an expired continue token starts the list again (once). */
async function listAllNamespaces(api: CoreV1Api, selector: string | undefined, pageSize: number, what: string): Promise<{ items: V1Namespace[]; resourceVersion?: string }> {
  for (let restart = 0; ; restart++) {
    const items: V1Namespace[] = [];
    let resourceVersion: string | undefined;
    let cont: string | undefined;
    try {
      do {
        const page = await api.listNamespace({ labelSelector: selector, limit: pageSize, _continue: cont });
        resourceVersion ??= page.metadata?.resourceVersion;
        items.push(...page.items);
        cont = page.metadata?._continue || undefined;
      } while (cont);
      return { items, resourceVersion };
    } catch (e) {
      // a continue token that expired between pages: start the list again (once)
      if (isStatus(e, 410) && restart === 0) continue;
      throw kubeFailure(e, 'bundle', `list ${what}`);
    }
  }
}

async function readMap(api: CoreV1Api, ns: string, cmName: string): Promise<V1ConfigMap | null> {
  try {
    return await api.readNamespacedConfigMap({ name: cmName, namespace: ns });
  } catch (e) {
    if (isStatus(e, 404)) return null;
    throw e;
  }
}

/**
 * Makes ConfigMap `ns/cmName` hold `b` under `key`: created, updated, or
 * already so ('skipped' when the namespace is gone). Conflicts with other
 * writers are resolved by reading again, a few times; other errors throw.
 */
async function writeBundle(api: CoreV1Api, ns: string, cmName: string, key: string, b: string): Promise<Exclude<NamespaceOutcome, 'failed'>> {
  let cm = await readMap(api, ns, cmName);
  for (let attempt = 0; attempt < 4; attempt++) {
    if (cm === null) {
      try {
        await api.createNamespacedConfigMap({
          namespace: ns,
          body: { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: cmName, namespace: ns, labels: { 'istio.io/config': 'true' } }, data: { [key]: b } },
        });
        return 'created';
      } catch (e) {
        if (isStatus(e, 409)) {
          cm = await readMap(api, ns, cmName); // created meanwhile by someone else: look at theirs
          continue;
        }
        if (isStatus(e, 404)) return 'skipped'; // the namespace is gone
        throw e;
      }
    }
    if (cm.data?.[key] === b) return 'unchanged';
    try {
      await api.replaceNamespacedConfigMap({ name: cmName, namespace: ns, body: { ...cm, apiVersion: 'v1', kind: 'ConfigMap', data: { ...cm.data, [key]: b } } });
      return 'updated';
    } catch (e) {
      if (isStatus(e, 409) || isStatus(e, 404)) {
        cm = await readMap(api, ns, cmName); // changed or deleted meanwhile: start from what is there now
        continue;
      }
      throw e;
    }
  }
  throw new CastellanError('ABORTED', 'bundle.conflict', 'the ConfigMap kept changing while being written');
}

export function configMapBundlePublisher(o: BundlePublisherOptions = {}): ConfigMapBundlePublisher {
  const kc = o.kubeConfig ?? loadKubeConfig(o.kubeconfig);
  const api = kc.makeApiClient(CoreV1Api);
  const logger = o.logger ?? silentLogger();
  const clock = o.clock ?? systemClock;
  const cmName = o.configMapName ?? DEFAULT_BUNDLE_CONFIGMAP;
  const key = o.key ?? DEFAULT_BUNDLE_KEY;
  const selector = o.namespaceSelector || undefined;
  const concurrency = Math.max(1, o.concurrency ?? 8);
  const retryMs = o.retryMs ?? 30_000;
  const pageSize = o.pageSize ?? 500;
  const what = selector ? `namespaces matching "${selector}"` : 'all namespaces';

  /** the bundle to publish (the last one asked for) */
  let bundle: string | undefined;
  /** namespaces known to hold `bundle` (by what was read or written) */
  const holds = new Map<string, string>();
  /** namespaces whose last attempt failed */
  const failed = new Set<string>();
  /** namespaces the watch found that still need a look */
  const pending = new Set<string>();
  const outcomes = new Map<string, NamespaceOutcome>();
  let queue: Promise<void> = Promise.resolve();
  let closed = false;
  let retryTimer: TimerHandle | undefined;
  /** the last full publish failed to list the namespaces */
  let listFailed = false;

  const mayAct = (): boolean => !closed && bundle !== undefined && (o.leader?.isLeader() ?? true);

  const enqueue = <T>(fn: () => Promise<T>): Promise<T> => {
    const run = queue.then(fn);
    queue = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  };

  const listNamespaces = (): Promise<{ items: V1Namespace[]; resourceVersion?: string }> => listAllNamespaces(api, selector, pageSize, what);

  const usable = (ns: V1Namespace): boolean => !!ns.metadata?.name && ns.status?.phase !== 'Terminating';

  /** Makes one namespace's ConfigMap hold `b`. Never throws. */
  async function ensure(ns: string, b: string): Promise<NamespaceOutcome> {
    try {
      const outcome = await writeBundle(api, ns, cmName, key, b);
      return done(ns, outcome === 'skipped' ? undefined : b, outcome);
    } catch (e) {
      failed.add(ns);
      holds.delete(ns);
      outcomes.set(ns, 'failed');
      logger.warn({ event: 'bundle.namespace_failed', namespace: ns, configMap: cmName, why: e instanceof CastellanError ? e.message : describeKubeFailure(e) }, `could not publish the trust bundle into ${ns}/${cmName}; will retry`);
      return 'failed';
    }
  }

  function done(ns: string, b: string | undefined, outcome: NamespaceOutcome): NamespaceOutcome {
    failed.delete(ns);
    if (b === undefined) holds.delete(ns);
    else holds.set(ns, b);
    outcomes.set(ns, outcome);
    return outcome;
  }

  async function ensureAll(namespaces: string[], b: string): Promise<Record<NamespaceOutcome, number>> {
    const counts: Record<NamespaceOutcome, number> = { created: 0, updated: 0, unchanged: 0, skipped: 0, failed: 0 };
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < namespaces.length && !closed) {
        const ns = namespaces[next++]!;
        counts[await ensure(ns, b)]++;
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, namespaces.length) }, worker));
    if (counts.failed > 0) scheduleRetry();
    return counts;
  }

  function scheduleRetry(): void {
    if (retryMs <= 0 || retryTimer || closed) return;
    retryTimer = clock.setTimer(() => {
      retryTimer = undefined;
      if (!mayAct()) return;
      if (listFailed) {
        // the last publish could not even list the namespaces: do it all again
        publishJob(bundle!).catch(() => undefined);
        return;
      }
      for (const ns of failed) pending.add(ns);
      flushPending();
    }, retryMs);
  }

  /** A whole publish, queued behind whatever is running. */
  function publishJob(b: string): Promise<void> {
    return enqueue(async () => {
      if (closed || b !== bundle) return; // closed, or a newer bundle was asked for meanwhile (its own job follows)
      let items: V1Namespace[];
      try {
        ({ items } = await listNamespaces());
      } catch (e) {
        listFailed = true;
        scheduleRetry();
        throw e;
      }
      listFailed = false;
      const namespaces = items.filter(usable).map((n) => n.metadata!.name!);
      const counts = await ensureAll(namespaces, b);
      logger.info({ event: 'bundle.published', configMap: cmName, key, namespaces: namespaces.length, ...counts }, `trust bundle published to ${what}`);
    });
  }

  /** Queues a look at every namespace the watch flagged. */
  function flushPending(): void {
    if (pending.size === 0 || !mayAct()) return;
    void enqueue(async () => {
      const b = bundle;
      if (!mayAct() || b === undefined) return;
      const todo = [...pending].filter((ns) => holds.get(ns) !== b);
      pending.clear();
      if (todo.length === 0) return;
      const counts = await ensureAll(todo, b);
      logger.info({ event: 'bundle.namespaces_fixed', configMap: cmName, ...counts }, `trust bundle published into ${todo.length} namespace(s) found by the watch`);
    });
  }

  const known = new Set<string>();
  const watch: ListWatchHandle = listWatch<V1Namespace>({
    kubeConfig: kc,
    path: '/api/v1/namespaces',
    query: selector ? { labelSelector: selector } : {},
    list: listNamespaces,
    onList: (items) => {
      const now = new Set(items.filter(usable).map((n) => n.metadata!.name!));
      for (const ns of known) {
        if (!now.has(ns)) forget(ns);
      }
      for (const ns of now) {
        known.add(ns);
        if (holds.get(ns) !== bundle) pending.add(ns);
      }
      flushPending();
    },
    onEvent: (type, n) => {
      const ns = n.metadata?.name;
      if (!ns) return;
      if (type === 'DELETED' || !usable(n)) {
        forget(ns);
        return;
      }
      known.add(ns);
      if (holds.get(ns) !== bundle) {
        pending.add(ns);
        flushPending();
      }
    },
    what: `namespaces (${what})`,
    clock,
    logger,
    minBackoffMs: o.minBackoffMs,
    maxBackoffMs: o.maxBackoffMs,
  });

  function forget(ns: string): void {
    known.delete(ns);
    holds.delete(ns);
    failed.delete(ns);
    pending.delete(ns);
    outcomes.delete(ns);
  }

  return {
    publish(bundlePem: string): Promise<void> {
      bundle = bundlePem;
      return publishJob(bundlePem);
    },
    lastOutcomes: () => outcomes,
    idle: async () => {
      for (;;) {
        const q = queue;
        await q;
        if (q === queue) return;
      }
    },
    watching: watch.synced,
    watchStats: () => watch.stats,
    async close() {
      if (closed) return;
      closed = true;
      watch.stop();
      retryTimer?.cancel();
      retryTimer = undefined;
      await queue;
    },
  };
}
