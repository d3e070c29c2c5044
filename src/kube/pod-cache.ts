/**
 * The pods of the cluster, as much of them as node authorization needs
 * (src/identity/impersonation.ts): kept current by a list-then-watch of
 * `/api/v1/pods` (src/kube/list-watch.ts over client-node's Watch: resume
 * after a dropped connection, relist on 410 Gone, backoff), with field
 * selector `status.phase!=Failed` as Istio's node authorizer uses.
 *
 * Why not client-node's `makeInformer`: its cache keeps every pod object
 * whole (kilobytes each, managedFields included) and it stops for good on
 * any watch error other than 410 (the caller must notice and restart it).
 *
 * Per pod it holds only: the name (as a key under its namespace), the UID,
 * and a reference to a shared slot naming (node, namespace, service account).
 * Slots are shared by every pod with the same triple and count them, so the
 * (node, service account) lookup is one Map get and the strings of node,
 * namespace and service account are stored once per slot, not per pod.
 * Nothing else of the pod object survives the event that brought it.
 *
 * Lists are paginated (`limit` 500, `continue`), so a 100 000-pod cluster is
 * never held as one response; an expired continue token fails the list,
 * which is retried from the start with backoff.
 */
import { CoreV1Api, type KubeConfig, type KubernetesObject } from '@kubernetes/client-node';
import type { Clock } from '../platform/clock.ts';
import { silentLogger, type Logger } from '../platform/logger.ts';
import { listWatch, type ListWatchHandle, type WatchEventType } from './list-watch.ts';

/** What node authorization asks of one pod. */
export interface PodFacts {
  readonly uid: string;
  readonly serviceAccount: string;
  /** spec.nodeName; '' while unscheduled */
  readonly node: string;
}

/** Port of the node authorizer: the cluster's pods, by name and by (node, service account). */
export interface PodDirectory {
  /** true once the first list completed (before that nothing can be answered) */
  readonly synced: boolean;
  pod(namespace: string, name: string): PodFacts | undefined;
  /** Whether at least one pod running as `namespace/serviceAccount` is scheduled on `node`. */
  hasServiceAccountOnNode(node: string, namespace: string, serviceAccount: string): boolean;
}

interface Slot {
  readonly node: string;
  readonly namespace: string;
  readonly serviceAccount: string;
  count: number;
}

interface Entry {
  readonly uid: string;
  readonly slot: Slot;
}

/** The fields read from a pod (list item or watch event object). */
export type PodObject = KubernetesObject & { spec?: { serviceAccountName?: string; nodeName?: string } };

export const POD_FIELD_SELECTOR = 'status.phase!=Failed';
const PAGE = 500;

/** The in-memory index; fed by `watchPods` (or directly, in tests and the benchmark). */
export class PodIndex implements PodDirectory {
  private readonly byNamespace = new Map<string, Map<string, Entry>>();
  private readonly slots = new Map<string, Slot>();
  private pods = 0;
  synced = false;

  get size(): number {
    return this.pods;
  }

  /** Distinct (node, namespace, service account) triples. */
  get slotCount(): number {
    return this.slots.size;
  }

  pod(namespace: string, name: string): PodFacts | undefined {
    const e = this.byNamespace.get(namespace)?.get(name);
    return e && { uid: e.uid, serviceAccount: e.slot.serviceAccount, node: e.slot.node };
  }

  hasServiceAccountOnNode(node: string, namespace: string, serviceAccount: string): boolean {
    if (node === '') return false;
    return (this.slots.get(slotKey(node, namespace, serviceAccount))?.count ?? 0) > 0;
  }

  /** Replaces everything with a full list (objects deleted while disconnected disappear). */
  replace(items: Iterable<PodObject>): void {
    this.byNamespace.clear();
    this.slots.clear();
    this.pods = 0;
    for (const p of items) this.upsert(p);
    this.synced = true;
  }

  apply(type: WatchEventType, p: PodObject): void {
    if (type === 'DELETED') this.remove(p);
    else this.upsert(p);
  }

  private upsert(p: PodObject): void {
    const ns = p.metadata?.namespace;
    const name = p.metadata?.name;
    const uid = p.metadata?.uid;
    if (!ns || !name || !uid) return;
    // The API server's admission sets "default" when a pod names none.
    const slot = this.slotFor(p.spec?.nodeName ?? '', ns, p.spec?.serviceAccountName || 'default');
    let names = this.byNamespace.get(ns);
    if (!names) {
      names = new Map();
      this.byNamespace.set(slot.namespace, names);
    }
    const old = names.get(name);
    slot.count++; // before releasing the old slot, which may be the same one
    if (old) this.release(old.slot);
    else this.pods++;
    names.set(name, { uid, slot });
  }

  private remove(p: PodObject): void {
    const ns = p.metadata?.namespace;
    const name = p.metadata?.name;
    if (!ns || !name) return;
    const names = this.byNamespace.get(ns);
    const old = names?.get(name);
    if (!names || !old) return;
    names.delete(name);
    if (names.size === 0) this.byNamespace.delete(ns);
    this.release(old.slot);
    this.pods--;
  }

  private slotFor(node: string, namespace: string, serviceAccount: string): Slot {
    const k = slotKey(node, namespace, serviceAccount);
    let s = this.slots.get(k);
    if (!s) {
      s = { node, namespace, serviceAccount, count: 0 };
      this.slots.set(k, s);
    }
    return s;
  }

  private release(s: Slot): void {
    if (--s.count === 0) this.slots.delete(slotKey(s.node, s.namespace, s.serviceAccount));
  }
}

function slotKey(node: string, namespace: string, serviceAccount: string): string {
  // '/' cannot occur in a node, namespace or service-account name
  return `${node}/${namespace}/${serviceAccount}`;
}

/** Only the fields the index reads, so a page of full pods can be dropped at once. */
function slim(p: PodObject): PodObject {
  return {
    metadata: { namespace: p.metadata?.namespace, name: p.metadata?.name, uid: p.metadata?.uid },
    spec: { serviceAccountName: p.spec?.serviceAccountName, nodeName: p.spec?.nodeName },
  };
}

export interface PodCache extends PodDirectory {
  readonly index: PodIndex;
  /** Resolves after the first list. */
  readonly ready: Promise<void>;
  readonly stats: ListWatchHandle['stats'];
  stop(): void;
}

export interface PodCacheOptions {
  kubeConfig: KubeConfig;
  clock?: Clock;
  logger?: Logger;
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

export function watchPods(o: PodCacheOptions): PodCache {
  const api = o.kubeConfig.makeApiClient(CoreV1Api);
  const index = new PodIndex();
  const logger = o.logger ?? silentLogger();
  const lw = listWatch<PodObject>({
    kubeConfig: o.kubeConfig,
    path: '/api/v1/pods',
    query: { fieldSelector: POD_FIELD_SELECTOR },
    what: 'pods (all namespaces)',
    clock: o.clock,
    logger,
    minBackoffMs: o.minBackoffMs,
    maxBackoffMs: o.maxBackoffMs,
    list: async () => {
      const items: PodObject[] = [];
      let cont: string | undefined;
      let resourceVersion: string | undefined;
      do {
        const page = await api.listPodForAllNamespaces({ fieldSelector: POD_FIELD_SELECTOR, limit: PAGE, _continue: cont });
        for (const p of page.items) items.push(slim(p as PodObject));
        resourceVersion = page.metadata?.resourceVersion;
        cont = page.metadata?._continue || undefined;
      } while (cont);
      return { items, resourceVersion };
    },
    onList: (items) => {
      index.replace(items);
      logger.info({ event: 'pods.listed', pods: index.size, slots: index.slotCount }, 'pod cache (re)listed');
    },
    onEvent: (type, p) => index.apply(type, p),
  });
  return {
    index,
    ready: lw.synced,
    stats: lw.stats,
    get synced() {
      return index.synced;
    },
    pod: (ns, name) => index.pod(ns, name),
    hasServiceAccountOnNode: (node, ns, sa) => index.hasServiceAccountOnNode(node, ns, sa),
    stop: () => lw.stop(),
  };
}
