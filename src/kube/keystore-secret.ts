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
  watchStats(): { lists: number; watches: number; gone: number } | undefined;
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
  return new SecretKeyringStore(o);
}

/** One watcher of the Secret: its callbacks and the last resourceVersion it handed out, or passed over. */
interface Watcher {
  onChange: (k: StoredKeyring) => void;
  onError: (e: unknown) => void;
  last?: string;
}

class SecretKeyringStore implements SecretKeystore {
  readonly where: string;
  private readonly kc: KubeConfig;
  private readonly api: CoreV1Api;
  private readonly logger: Logger;
  private readonly namespace: string;
  private readonly name: string;
  private readonly o: SecretKeystoreOptions;

  /** the newest keyring this instance's caller got from read/createIfAbsent/update: watch events for it (or older) are not news */
  private own: string | undefined;
  /** metadata of the newest Secret seen by any means, reused by a PUT at that resourceVersion (labels, annotations, owners) */
  private latestMeta: V1Secret['metadata'];
  /** documents this instance is writing right now: their watch events are not changes */
  private readonly inFlight = new Set<string>();
  private readonly watches = new Set<ListWatchHandle>();
  private lastWatch: ListWatchHandle | undefined;

  constructor(o: SecretKeystoreOptions) {
    this.o = o;
    this.kc = o.kubeConfig ?? loadKubeConfig(o.kubeconfig);
    this.api = this.kc.makeApiClient(CoreV1Api);
    this.logger = o.logger ?? silentLogger();
    this.namespace = o.namespace;
    this.name = o.name;
    this.where = `Secret ${o.namespace}/${o.name}`;
  }

  watchStats(): { lists: number; watches: number; gone: number } | undefined {
    return this.lastWatch?.stats;
  }

  async close(): Promise<void> {
    for (const h of this.watches) h.stop();
    this.watches.clear();
  }

  async read(): Promise<StoredKeyring | null> {
    const s = await this.get();
    if (!s) return null;
    const k = this.stored(s);
    this.returned(s);
    return k;
  }

  async createIfAbsent(doc: KeyringDoc): Promise<{ stored: StoredKeyring; created: boolean }> {
    const { where, namespace } = this;
    // a Secret deleted between our failed create and our read: try again, a few times
    for (let attempt = 0; attempt < 3; attempt++) {
      const { obj, text } = this.body(doc);
      let created: V1Secret | undefined;
      try {
        created = await this.write(text, () => this.api.createNamespacedSecret({ namespace, body: obj }));
      } catch (e) {
        if (isStatus(e, 404)) {
          throw new CastellanError('FAILED_PRECONDITION', 'keystore.no_namespace', `cannot create ${where}: namespace ${namespace} does not exist`, { cause: e });
        }
        if (!isStatus(e, 409)) throw kubeFailure(e, 'keystore', `create ${where}`);
      }
      if (created) {
        const version = this.versionOf(created);
        this.returned(created);
        this.logger.debug({ event: 'keystore.created', where, version }, 'keyring Secret created');
        return { stored: { doc, version }, created: true };
      }
      const theirs = await this.read();
      if (theirs) return { stored: theirs, created: false };
    }
    throw new CastellanError('UNAVAILABLE', 'keystore.unavailable', `${where} keeps disappearing while being created`);
  }

  async update(doc: KeyringDoc, expectedVersion: string): Promise<StoredKeyring> {
    const { where, name, namespace } = this;
    const { obj, text } = this.body(doc, expectedVersion);
    let s: V1Secret;
    try {
      s = await this.write(text, () => this.api.replaceNamespacedSecret({ name, namespace, body: obj }));
    } catch (e) {
      if (isStatus(e, 409)) {
        throw new CastellanError('ABORTED', 'keystore.conflict', `${where} was changed by another replica (expected resourceVersion ${expectedVersion}); re-read and retry`, { cause: e });
      }
      if (isStatus(e, 404)) {
        throw new CastellanError('ABORTED', 'keystore.conflict', `${where} was deleted (expected resourceVersion ${expectedVersion}); re-read and retry`, { cause: e });
      }
      throw kubeFailure(e, 'keystore', `update ${where}`);
    }
    const version = this.versionOf(s);
    this.returned(s);
    return { doc, version };
  }

  watch(onChange: (k: StoredKeyring) => void, onError: (e: unknown) => void): () => void {
    const w: Watcher = { onChange, onError };
    const h = listWatch<V1Secret>({
      kubeConfig: this.kc,
      path: `/api/v1/namespaces/${encodeURIComponent(this.namespace)}/secrets`,
      query: { fieldSelector: `metadata.name=${this.name}` },
      list: async () => {
        const s = await this.get();
        return { items: s ? [s] : [] };
      },
      onList: (items) => {
        if (items[0]) this.seen(w, items[0]);
        else if (w.last !== undefined) this.gone(w); // deleted while the watch was down
      },
      onEvent: (type, s) => {
        if (s.metadata?.name !== this.name) return;
        if (type === 'DELETED') this.gone(w);
        else this.seen(w, s);
      },
      what: this.where,
      clock: this.o.clock ?? systemClock,
      logger: this.logger,
      minBackoffMs: this.o.minBackoffMs,
      maxBackoffMs: this.o.maxBackoffMs,
    });
    this.watches.add(h);
    this.lastWatch = h;
    return () => {
      h.stop();
      this.watches.delete(h);
    };
  }

  /** A watcher saw the Secret: hand it out if it is news (newer than the watcher's last and the caller's own). */
  private seen(w: Watcher, s: V1Secret): void {
    const version = s.metadata?.resourceVersion;
    if (!version || version === w.last || (w.last !== undefined && olderThan(version, w.last))) return;
    this.seenMeta(s);
    w.last = version;
    // the caller already has it (or something newer) from its own read or write
    if (this.own !== undefined && (version === this.own || olderThan(version, this.own))) return;
    let k: StoredKeyring;
    try {
      const text = this.textOf(s);
      // this instance's own write, seen before the answer to it arrived: not a change
      if (this.inFlight.has(text)) return;
      k = this.stored(s);
    } catch (e) {
      this.logger.warn({ event: 'keystore.watch_unusable', where: this.where, version, why: e instanceof CastellanError ? e.message : String(e) }, 'the stored keyring changed but cannot be used');
      w.onError(e);
      return;
    }
    w.onChange(k);
  }

  private gone(w: Watcher): void {
    w.last = undefined;
    this.own = undefined;
    this.logger.warn({ event: 'keystore.deleted', where: this.where }, `${this.where} was deleted; keeping the keyring in memory`);
    w.onError(new CastellanError('FAILED_PRECONDITION', 'keystore.deleted', `${this.where} was deleted`));
  }

  private seenMeta(s: V1Secret): void {
    const v = s.metadata?.resourceVersion;
    const cur = this.latestMeta?.resourceVersion;
    if (v && (cur === undefined || !olderThan(v, cur))) this.latestMeta = s.metadata;
  }

  private returned(s: V1Secret): void {
    this.seenMeta(s);
    const v = s.metadata?.resourceVersion;
    if (v && (this.own === undefined || !olderThan(v, this.own))) this.own = v;
  }

  private versionOf(s: V1Secret): string {
    const version = s.metadata?.resourceVersion;
    if (!version) throw new CastellanError('UNAVAILABLE', 'keystore.unavailable', `Kubernetes API returned ${this.where} without a resourceVersion`);
    return version;
  }

  private textOf(s: V1Secret): string {
    const b64 = s.data?.[KEYRING_KEY];
    if (b64 === undefined) throw corruptKeyring(this.where, `the Secret has no data key ${KEYRING_KEY}`);
    return Buffer.from(b64, 'base64').toString('utf8');
  }

  private stored(s: V1Secret): StoredKeyring {
    const version = this.versionOf(s);
    return { doc: parseKeyringDoc(this.textOf(s), this.where), version };
  }

  private body(doc: KeyringDoc, resourceVersion?: string): { obj: V1Secret; text: string } {
    const text = serializeKeyringDoc(doc);
    const meta = resourceVersion !== undefined && this.latestMeta?.resourceVersion === resourceVersion ? this.latestMeta : undefined;
    return {
      text,
      obj: {
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: {
          name: this.name,
          namespace: this.namespace,
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

  private async get(): Promise<V1Secret | null> {
    try {
      return await this.api.readNamespacedSecret({ name: this.name, namespace: this.namespace });
    } catch (e) {
      if (isStatus(e, 404)) return null;
      throw kubeFailure(e, 'keystore', `get ${this.where}`);
    }
  }

  private async write<T>(text: string, fn: () => Promise<T>): Promise<T> {
    this.inFlight.add(text);
    try {
      return await fn();
    } finally {
      this.inFlight.delete(text);
    }
  }
}
