/**
 * A list-then-watch loop over one Kubernetes collection (client-node's
 * Watch), the way informers keep a view current:
 *
 *   list → watch from the list's resourceVersion (or, when the lister has
 *   none, from "most recent", which replays the current objects as ADDED
 *   events) → on every event and BOOKMARK remember its resourceVersion →
 *   when the connection ends, watch again from there → when the API server
 *   answers 410 Gone (the resourceVersion was compacted away; as an ERROR
 *   event or as the HTTP status), list again.
 *
 * Failures (list errors, refused or dropped connections, ERROR events) back
 * off exponentially with jitter, from `minBackoffMs` to `maxBackoffMs`; a
 * connection that delivered events resets the backoff. A cleanly closed
 * healthy connection (server-side timeout, client-node's 30 s inactivity
 * limit) is re-established at once. Timers run on the Clock port.
 */
import { Watch, type KubeConfig, type KubernetesObject } from '@kubernetes/client-node';
import { systemClock, type Clock, type TimerHandle } from '../platform/clock.ts';
import { silentLogger, type Logger } from '../platform/logger.ts';
import { describeKubeFailure, httpStatusOf } from './api-errors.ts';

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface ListWatchOptions<T extends KubernetesObject> {
  kubeConfig: KubeConfig;
  /** collection path, e.g. `/api/v1/namespaces` or `/api/v1/namespaces/ns/secrets` */
  path: string;
  /** fieldSelector / labelSelector, sent on the watch (the lister applies its own) */
  query?: Record<string, string>;
  /** The current objects, and the resourceVersion to watch from (undefined: "most recent"). */
  list: () => Promise<{ items: T[]; resourceVersion?: string }>;
  /** After every successful (re)list, with the full current state. */
  onList: (items: T[]) => void;
  onEvent: (type: WatchEventType, obj: T) => void;
  /** for logs, e.g. `Secret castellan-system/castellan-ca` */
  what: string;
  clock?: Clock;
  logger?: Logger;
  /** first retry delay after a failure; default 250 ms */
  minBackoffMs?: number;
  /** default 30 s */
  maxBackoffMs?: number;
}

export interface ListWatchHandle {
  /** Resolves after the first successful list (or when stopped first). */
  readonly synced: Promise<void>;
  /** lists done, watch connections opened, relists forced by 410 Gone */
  readonly stats: { lists: number; watches: number; gone: number };
  stop(): void;
}

/** A connection open this long counts as healthy even if it carried no events. */
const HEALTHY_MS = 10_000;

interface Attempt {
  done: boolean;
  gotEvent: boolean;
  startedAt: number;
  controller?: AbortController;
}

export function listWatch<T extends KubernetesObject>(o: ListWatchOptions<T>): ListWatchHandle {
  const clock = o.clock ?? systemClock;
  const logger = o.logger ?? silentLogger();
  const minMs = o.minBackoffMs ?? 250;
  const maxMs = o.maxBackoffMs ?? 30_000;
  const watcher = new Watch(o.kubeConfig);
  const stats = { lists: 0, watches: 0, gone: 0 };
  let stopped = false;
  let rv: string | undefined;
  let failures = 0;
  let timer: TimerHandle | undefined;
  let current: Attempt | undefined;
  let markSynced!: () => void;
  const synced = new Promise<void>((r) => (markSynced = r));

  const backoff = (): number => {
    if (failures === 0) return 0;
    const base = Math.min(maxMs, minMs * 2 ** Math.min(failures - 1, 30));
    return Math.round(base * (0.8 + 0.4 * Math.random()));
  };

  const later = (fn: () => void): void => {
    const ms = backoff();
    timer = clock.setTimer(() => {
      timer = undefined;
      if (!stopped) fn();
    }, ms);
  };

  const relist = async (): Promise<void> => {
    let r: { items: T[]; resourceVersion?: string };
    try {
      r = await o.list();
    } catch (e) {
      if (stopped) return;
      failures++;
      logger.warn({ event: 'kube.list_failed', what: o.what, why: describeKubeFailure(e), retryInMs: backoff() }, `cannot list ${o.what}; retrying`);
      later(() => void relist());
      return;
    }
    if (stopped) return;
    stats.lists++;
    rv = r.resourceVersion;
    try {
      o.onList(r.items);
    } catch (e) {
      logger.error({ event: 'kube.handler_failed', what: o.what, err: e }, 'a list handler failed');
    }
    markSynced();
    startWatch();
  };

  const finish = (a: Attempt, gone: boolean, err: unknown): void => {
    if (a.done) return;
    a.done = true;
    if (current === a) current = undefined;
    a.controller?.abort();
    if (stopped) return;
    if (gone || httpStatusOf(err) === 410) {
      stats.gone++;
      failures++;
      rv = undefined;
      logger.info({ event: 'kube.watch_expired', what: o.what }, `watch of ${o.what}: resourceVersion too old (410 Gone); listing again`);
      later(() => void relist());
      return;
    }
    const healthy = a.gotEvent || performance.now() - a.startedAt >= HEALTHY_MS;
    const idleTimeout = err instanceof Error && err.name === 'TimeoutError';
    if (err && !(idleTimeout && healthy)) {
      failures = healthy ? 1 : failures + 1;
      const level = failures > 1 ? 'warn' : 'info';
      logger[level]({ event: 'kube.watch_dropped', what: o.what, why: describeKubeFailure(err), retryInMs: backoff() }, `watch of ${o.what} ended; re-establishing`);
    } else {
      // closed by the server (its watch timeout) or idle past client-node's inactivity limit
      failures = healthy ? 0 : failures + 1;
      logger.debug({ event: 'kube.watch_closed', what: o.what }, `watch of ${o.what} closed; re-establishing`);
    }
    later(startWatch);
  };

  const onWatchEvent = (a: Attempt, type: string, obj: unknown): void => {
    if (a.done || stopped) return;
    if (type === 'ERROR') {
      const s = (obj ?? {}) as { code?: number; reason?: string; message?: string };
      if (s.code === 410) finish(a, true, undefined);
      else finish(a, false, Object.assign(new Error(`watch ERROR event ${s.code ?? ''} ${s.reason ?? ''}`.trim()), { statusCode: s.code }));
      return;
    }
    const v = (obj as KubernetesObject | undefined)?.metadata?.resourceVersion;
    if (type === 'BOOKMARK') {
      if (v) rv = v;
      a.gotEvent = true;
      failures = 0;
      return;
    }
    if (type !== 'ADDED' && type !== 'MODIFIED' && type !== 'DELETED') return;
    if (v) rv = v;
    a.gotEvent = true;
    failures = 0;
    try {
      o.onEvent(type, obj as T);
    } catch (e) {
      logger.error({ event: 'kube.handler_failed', what: o.what, err: e }, 'a watch handler failed');
    }
  };

  function startWatch(): void {
    if (stopped) return;
    const a: Attempt = { done: false, gotEvent: false, startedAt: performance.now() };
    current = a;
    stats.watches++;
    const query: Record<string, string | boolean> = { ...o.query, allowWatchBookmarks: true };
    if (rv !== undefined) query.resourceVersion = rv;
    watcher.watch(o.path, query, (type, obj) => onWatchEvent(a, type, obj), (err: unknown) => finish(a, false, err)).then(
      (c) => {
        if (a.done || stopped) c.abort();
        else a.controller = c;
      },
      (err: unknown) => finish(a, false, err),
    );
  }

  void relist();
  return {
    synced,
    stats,
    stop() {
      if (stopped) return;
      stopped = true;
      timer?.cancel();
      timer = undefined;
      const a = current;
      current = undefined;
      if (a) {
        a.done = true;
        a.controller?.abort();
      }
      markSynced();
    },
  };
}
