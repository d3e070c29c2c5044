/**
 * The Kubernetes Keystore (`--keystore kubernetes --ca-secret NAMESPACE/NAME`):
 * the keyring document in one Opaque Secret, data key `keyring.json`.
 *
 * - version = the Secret's metadata.resourceVersion;
 * - createIfAbsent = POST (409 AlreadyExists: another replica won; its
 *   document is read back), so replicas cold-starting together end with one;
 * - update = PUT carrying the expected resourceVersion (409 Conflict →
 *   ABORTED keystore.conflict);
 * - watch = a watch of that one Secret (fieldSelector metadata.name=NAME,
 *   which RBAC's resourceNames needs), re-established after drops and
 *   restarted from the current state after 410 Gone.
 *
 * RBAC (deploy/kubernetes/base/rbac.yaml) grants get, update and watch on
 * the Secret and create in its namespace; no list, so (re)syncing is a GET.
 */
import { CoreV1Api, type KubeConfig, type V1Secret } from '@kubernetes/client-node';
import { parseKeyringDoc, serializeKeyringDoc, corruptKeyring, type KeyringDoc } from '../ca/keyring-doc.ts';
import type { Keystore, StoredKeyring } from '../ca/keystore.ts';
import { systemClock, type Clock } from '../platform/clock.ts';
import { CastellanError } from '../platform/errors.ts';
import { silentLogger, type Logger } from '../platform/logger.ts';
import { isStatus, kubeFailure } from './api-errors.ts';
import { listWatch, type ListWatchHandle } from './list-watch.ts';
import { loadKubeConfig } from './kubeconfig.ts';

export const KEYRING_KEY = 'keyring.json';

export interface SecretKeystoreOptions {
  /** path of a kubeconfig; default $KUBECONFIG, else the in-cluster service account */
  kubeconfig?: string;
  /** an already loaded KubeConfig (takes precedence over `kubeconfig`) */
  kubeConfig?: KubeConfig;
  namespace: string;
  name: string;
  logger?: Logger;
  /** timers of the watch's retry backoff */
  clock?: Clock;
  /** watch retry backoff; defaults 250 ms → 30 s */
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

/** The Kubernetes Keystore, plus the watch's counters (for tests and diagnostics). */
export interface SecretKeystore extends Keystore {
  readonly watchStats: () => { lists: number; watches: number; gone: number } | undefined;
}

/**
 * resourceVersions are opaque by contract but are etcd revisions (decimal,
 * increasing) on every real API server. When both are decimal, an event
 * older than what this instance has already seen (a watch lagging behind a
 * read) is ignored rather than handed out as a change.
 */
function olderThan(a: string, b: string): boolean {
  if (!/^\d{1,30}$/.test(a) || !/^\d{1,30}$/.test(b)) return false;
  return BigInt(a) < BigInt(b);
}

export function secretKeystore(o: SecretKeystoreOptions): SecretKeystore {
  const kc = o.kubeConfig ?? loadKubeConfig(o.kubeconfig);
  const api = kc.makeApiClient(CoreV1Api);
  const logger = o.logger ?? silentLogger();
  const { namespace, name } = o;
  const where = `Secret ${namespace}/${name}`;

  /** the newest keyring this instance's caller got from read/createIfAbsent/update: watch events for it (or older) are not news */
  let own: string | undefined;
  /** metadata of the newest Secret seen by any means, reused by a PUT at that resourceVersion (labels, annotations, owners) */
  let latestMeta: V1Secret['metadata'];
  /** documents this instance is writing right now: their watch events are not changes */
  const inFlight = new Set<string>();
  const watches = new Set<ListWatchHandle>();
  let lastWatch: ListWatchHandle | undefined;

  function seenMeta(s: V1Secret): void {
    const v = s.metadata?.resourceVersion;
    const cur = latestMeta?.resourceVersion;
    if (v && (cur === undefined || !olderThan(v, cur))) latestMeta = s.metadata;
  }

  function returned(s: V1Secret): void {
    seenMeta(s);
    const v = s.metadata?.resourceVersion;
    if (v && (own === undefined || !olderThan(v, own))) own = v;
  }

  function textOf(s: V1Secret): string {
    const b64 = s.data?.[KEYRING_KEY];
    if (b64 === undefined) throw corruptKeyring(where, `the Secret has no data key ${KEYRING_KEY}`);
    return Buffer.from(b64, 'base64').toString('utf8');
  }

  function stored(s: V1Secret): StoredKeyring {
    const version = s.metadata?.resourceVersion;
    if (!version) throw new CastellanError('UNAVAILABLE', 'keystore.unavailable', `Kubernetes API returned ${where} without a resourceVersion`);
    return { doc: parseKeyringDoc(textOf(s), where), version };
  }

  function body(doc: KeyringDoc, resourceVersion?: string): { obj: V1Secret; text: string } {
    const text = serializeKeyringDoc(doc);
    const meta = resourceVersion !== undefined && latestMeta?.resourceVersion === resourceVersion ? latestMeta : undefined;
    return {
      text,
      obj: {
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: {
          name,
          namespace,
          ...(meta?.labels ? { labels: meta.labels } : {}),
          ...(meta?.annotations ? { annotations: meta.annotations } : {}),
          ...(meta?.ownerReferences ? { ownerReferences: meta.ownerReferences } : {}),
          ...(resourceVersion !== undefined ? { resourceVersion } : {}),
        },
        type: 'Opaque',
        data: { [KEYRING_KEY]: Buffer.from(text, 'utf8').toString('base64') },
      },
    };
  }

  async function get(): Promise<V1Secret | null> {
    try {
      return await api.readNamespacedSecret({ name, namespace });
    } catch (e) {
      if (isStatus(e, 404)) return null;
      throw kubeFailure(e, 'keystore', `get ${where}`);
    }
  }

  async function read(): Promise<StoredKeyring | null> {
    const s = await get();
    if (!s) return null;
    const k = stored(s);
    returned(s);
    return k;
  }

  async function write<T>(text: string, fn: () => Promise<T>): Promise<T> {
    inFlight.add(text);
    try {
      return await fn();
    } finally {
      inFlight.delete(text);
    }
  }

  async function createIfAbsent(doc: KeyringDoc): Promise<{ stored: StoredKeyring; created: boolean }> {
    // a Secret deleted between our failed create and our read: try again, a few times
    for (let attempt = 0; attempt < 3; attempt++) {
      const { obj, text } = body(doc);
      let created: V1Secret | undefined;
      try {
        created = await write(text, () => api.createNamespacedSecret({ namespace, body: obj }));
      } catch (e) {
        if (isStatus(e, 404)) {
          throw new CastellanError('FAILED_PRECONDITION', 'keystore.no_namespace', `cannot create ${where}: namespace ${namespace} does not exist`, { cause: e });
        }
        if (!isStatus(e, 409)) throw kubeFailure(e, 'keystore', `create ${where}`);
      }
      if (created) {
        const version = created.metadata?.resourceVersion;
        if (!version) throw new CastellanError('UNAVAILABLE', 'keystore.unavailable', `Kubernetes API returned ${where} without a resourceVersion`);
        returned(created);
        logger.debug({ event: 'keystore.created', where, version }, 'keyring Secret created');
        return { stored: { doc, version }, created: true };
      }
      const theirs = await read();
      if (theirs) return { stored: theirs, created: false };
    }
    throw new CastellanError('UNAVAILABLE', 'keystore.unavailable', `${where} keeps disappearing while being created`);
  }

  async function update(doc: KeyringDoc, expectedVersion: string): Promise<StoredKeyring> {
    const { obj, text } = body(doc, expectedVersion);
    let s: V1Secret;
    try {
      s = await write(text, () => api.replaceNamespacedSecret({ name, namespace, body: obj }));
    } catch (e) {
      if (isStatus(e, 409)) {
        throw new CastellanError('ABORTED', 'keystore.conflict', `${where} was changed by another replica (expected resourceVersion ${expectedVersion}); re-read and retry`, { cause: e });
      }
      if (isStatus(e, 404)) {
        throw new CastellanError('ABORTED', 'keystore.conflict', `${where} was deleted (expected resourceVersion ${expectedVersion}); re-read and retry`, { cause: e });
      }
      throw kubeFailure(e, 'keystore', `update ${where}`);
    }
    const version = s.metadata?.resourceVersion;
    if (!version) throw new CastellanError('UNAVAILABLE', 'keystore.unavailable', `Kubernetes API returned ${where} without a resourceVersion`);
    returned(s);
    return { doc, version };
  }

  function watch(onChange: (k: StoredKeyring) => void, onError: (e: unknown) => void): () => void {
    /** the last resourceVersion this watcher handed out, or passed over */
    let last: string | undefined;
    const seen = (s: V1Secret): void => {
      const version = s.metadata?.resourceVersion;
      if (!version || version === last || (last !== undefined && olderThan(version, last))) return;
      seenMeta(s);
      last = version;
      // the caller already has it (or something newer) from its own read or write
      if (own !== undefined && (version === own || olderThan(version, own))) return;
      let k: StoredKeyring;
      try {
        const text = textOf(s);
        // this instance's own write, seen before the answer to it arrived: not a change
        if (inFlight.has(text)) return;
        k = stored(s);
      } catch (e) {
        logger.warn({ event: 'keystore.watch_unusable', where, version, why: e instanceof CastellanError ? e.message : String(e) }, 'the stored keyring changed but cannot be used');
        onError(e);
        return;
      }
      onChange(k);
    };
    const gone = (): void => {
      last = undefined;
      own = undefined;
      logger.warn({ event: 'keystore.deleted', where }, `${where} was deleted; keeping the keyring in memory`);
      onError(new CastellanError('FAILED_PRECONDITION', 'keystore.deleted', `${where} was deleted`));
    };
    const h = listWatch<V1Secret>({
      kubeConfig: kc,
      path: `/api/v1/namespaces/${encodeURIComponent(namespace)}/secrets`,
      query: { fieldSelector: `metadata.name=${name}` },
      list: async () => {
        const s = await get();
        return { items: s ? [s] : [] };
      },
      onList: (items) => {
        if (items[0]) seen(items[0]);
        else if (last !== undefined) gone(); // deleted while the watch was down
      },
      onEvent: (type, s) => {
        if (s.metadata?.name !== name) return;
        if (type === 'DELETED') gone();
        else seen(s);
      },
      what: where,
      clock: o.clock ?? systemClock,
      logger,
      minBackoffMs: o.minBackoffMs,
      maxBackoffMs: o.maxBackoffMs,
    });
    watches.add(h);
    lastWatch = h;
    return () => {
      h.stop();
      watches.delete(h);
    };
  }

  return {
    where,
    read,
    createIfAbsent,
    update,
    watch,
    watchStats: () => lastWatch?.stats,
    async close() {
      for (const h of watches) h.stop();
      watches.clear();
    },
  };
}
