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
import { listWatch, type ListWatchHandle, type WatchEventType } from './list-watch.ts';
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
  watchStats(): { lists: number; watches: number; gone: number };
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

/** A namespace that can hold a ConfigMap (named, not being deleted). */
const usable = (ns: V1Namespace): boolean => !!ns.metadata?.name && ns.status?.phase !== 'Terminating';

export function configMapBundlePublisher(o: BundlePublisherOptions = {}): ConfigMapBundlePublisher {
  return new BundlePublisher(o);
}

/** The publisher's state: what each namespace holds, and one queue of writes. */
class BundlePublisher implements ConfigMapBundlePublisher {
  readonly watching: Promise<void>;
  private readonly api: CoreV1Api;
  private readonly logger: Logger;
  private readonly clock: Clock;
  private readonly cmName: string;
  private readonly key: string;
  private readonly selector: string | undefined;
  private readonly concurrency: number;
  private readonly retryMs: number;
  private readonly pageSize: number;
  private readonly what: string;
  private readonly leader: Pick<LeaderElector, 'isLeader'> | undefined;
  private readonly watch: ListWatchHandle;

  /** the bundle to publish (the last one asked for) */
  private bundle: string | undefined;
  /** namespaces known to hold `bundle` (by what was read or written) */
  private readonly holds = new Map<string, string>();
  /** namespaces whose last attempt failed */
  private readonly failed = new Set<string>();
  /** namespaces the watch found that still need a look */
  private readonly pending = new Set<string>();
  /** namespaces the watch lists now */
  private readonly known = new Set<string>();
  private readonly outcomes = new Map<string, NamespaceOutcome>();
  private queue: Promise<void> = Promise.resolve();
  private closed = false;
  private retryTimer: TimerHandle | undefined;
  /** the last full publish failed to list the namespaces */
  private listFailed = false;

  constructor(o: BundlePublisherOptions) {
    const kc = o.kubeConfig ?? loadKubeConfig(o.kubeconfig);
    this.api = kc.makeApiClient(CoreV1Api);
    this.logger = o.logger ?? silentLogger();
    this.clock = o.clock ?? systemClock;
    this.cmName = o.configMapName ?? DEFAULT_BUNDLE_CONFIGMAP;
    this.key = o.key ?? DEFAULT_BUNDLE_KEY;
    this.selector = o.namespaceSelector || undefined;
    this.concurrency = Math.max(1, o.concurrency ?? 8);
    this.retryMs = o.retryMs ?? 30_000;
    this.pageSize = o.pageSize ?? 500;
    this.what = this.selector ? `namespaces matching "${this.selector}"` : 'all namespaces';
    this.leader = o.leader;
    this.watch = listWatch<V1Namespace>({
      kubeConfig: kc,
      path: '/api/v1/namespaces',
      query: this.selector ? { labelSelector: this.selector } : {},
      list: () => this.listNamespaces(),
      onList: (items) => this.onList(items),
      onEvent: (type, n) => this.onEvent(type, n),
      what: `namespaces (${this.what})`,
      clock: this.clock,
      logger: this.logger,
      minBackoffMs: o.minBackoffMs,
      maxBackoffMs: o.maxBackoffMs,
    });
    this.watching = this.watch.synced;
  }

  publish(bundlePem: string): Promise<void> {
    this.bundle = bundlePem;
    return this.publishJob(bundlePem);
  }

  lastOutcomes(): ReadonlyMap<string, NamespaceOutcome> {
    return this.outcomes;
  }

  async idle(): Promise<void> {
    for (;;) {
      const q = this.queue;
      await q;
      if (q === this.queue) return;
    }
  }

  watchStats(): { lists: number; watches: number; gone: number } {
    return this.watch.stats;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.watch.stop();
    this.retryTimer?.cancel();
    this.retryTimer = undefined;
    await this.queue;
  }

  private mayAct(): boolean {
    return !this.closed && this.bundle !== undefined && (this.leader?.isLeader() ?? true);
  }

  private enqueue<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn);
    this.queue = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  private listNamespaces(): Promise<{ items: V1Namespace[]; resourceVersion?: string }> {
    return listAllNamespaces(this.api, this.selector, this.pageSize, this.what);
  }

  /** Makes one namespace's ConfigMap hold `b`. Never throws. */
  private async ensure(ns: string, b: string): Promise<NamespaceOutcome> {
    try {
      const outcome = await writeBundle(this.api, ns, this.cmName, this.key, b);
      return this.done(ns, outcome === 'skipped' ? undefined : b, outcome);
    } catch (e) {
      this.failed.add(ns);
      this.holds.delete(ns);
      this.outcomes.set(ns, 'failed');
      const why = e instanceof CastellanError ? e.message : describeKubeFailure(e);
      this.logger.warn({ event: 'bundle.namespace_failed', namespace: ns, configMap: this.cmName, why }, `could not publish the trust bundle into ${ns}/${this.cmName}; will retry`);
      return 'failed';
    }
  }

  private done(ns: string, b: string | undefined, outcome: NamespaceOutcome): NamespaceOutcome {
    this.failed.delete(ns);
    if (b === undefined) this.holds.delete(ns);
    else this.holds.set(ns, b);
    this.outcomes.set(ns, outcome);
    return outcome;
  }

  private async ensureAll(namespaces: string[], b: string): Promise<Record<NamespaceOutcome, number>> {
    const counts: Record<NamespaceOutcome, number> = { created: 0, updated: 0, unchanged: 0, skipped: 0, failed: 0 };
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < namespaces.length && !this.closed) {
        const ns = namespaces[next++]!;
        counts[await this.ensure(ns, b)]++;
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.concurrency, namespaces.length) }, worker));
    if (counts.failed > 0) this.scheduleRetry();
    return counts;
  }

  private scheduleRetry(): void {
    if (this.retryMs <= 0 || this.retryTimer || this.closed) return;
    this.retryTimer = this.clock.setTimer(() => {
      this.retryTimer = undefined;
      if (!this.mayAct()) return;
      if (this.listFailed) {
        // the last publish could not even list the namespaces: do it all again
        this.publishJob(this.bundle!).catch(() => undefined);
        return;
      }
      for (const ns of this.failed) this.pending.add(ns);
      this.flushPending();
    }, this.retryMs);
  }

  /** A whole publish, queued behind whatever is running. */
  private publishJob(b: string): Promise<void> {
    return this.enqueue(async () => {
      if (this.closed || b !== this.bundle) return; // closed, or a newer bundle was asked for meanwhile (its own job follows)
      let items: V1Namespace[];
      try {
        ({ items } = await this.listNamespaces());
      } catch (e) {
        this.listFailed = true;
        this.scheduleRetry();
        throw e;
      }
      this.listFailed = false;
      const namespaces = items.filter(usable).map((n) => n.metadata!.name!);
      const counts = await this.ensureAll(namespaces, b);
      this.logger.info({ event: 'bundle.published', configMap: this.cmName, key: this.key, namespaces: namespaces.length, ...counts }, `trust bundle published to ${this.what}`);
    });
  }

  /** Queues a look at every namespace the watch flagged. */
  private flushPending(): void {
    if (this.pending.size === 0 || !this.mayAct()) return;
    void this.enqueue(async () => {
      const b = this.bundle;
      if (!this.mayAct() || b === undefined) return;
      const todo = [...this.pending].filter((ns) => this.holds.get(ns) !== b);
      this.pending.clear();
      if (todo.length === 0) return;
      const counts = await this.ensureAll(todo, b);
      this.logger.info({ event: 'bundle.namespaces_fixed', configMap: this.cmName, ...counts }, `trust bundle published into ${todo.length} namespace(s) found by the watch`);
    });
  }

  /** The watch (re)listed the namespaces: forget the gone, flag the ones not holding the bundle. */
  private onList(items: V1Namespace[]): void {
    const now = new Set(items.filter(usable).map((n) => n.metadata!.name!));
    for (const ns of this.known) {
      if (!now.has(ns)) this.forget(ns);
    }
    for (const ns of now) {
      this.known.add(ns);
      if (this.holds.get(ns) !== this.bundle) this.pending.add(ns);
    }
    this.flushPending();
  }

  private onEvent(type: WatchEventType, n: V1Namespace): void {
    const ns = n.metadata?.name;
    if (!ns) return;
    if (type === 'DELETED' || !usable(n)) {
      this.forget(ns);
      return;
    }
    this.known.add(ns);
    if (this.holds.get(ns) !== this.bundle) {
      this.pending.add(ns);
      this.flushPending();
    }
  }

  private forget(ns: string): void {
    this.known.delete(ns);
    this.holds.delete(ns);
    this.failed.delete(ns);
    this.pending.delete(ns);
    this.outcomes.delete(ns);
  }
}
