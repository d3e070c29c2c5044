/**
 * Istio AuthorizationPolicies (security.istio.io) read from the Kubernetes
 * API through @kubernetes/client-node: CustomObjectsApi lists, then a watch
 * from the list's resourceVersion (src/kube/list-watch.ts: resume after a
 * dropped connection with backoff, relist on 410 Gone), cluster-wide or per
 * namespace. Version v1 is read; Istio serves v1beta1 objects of the same
 * CRD under v1 as well.
 *
 * `watchAuthorizationPolicies` keeps the current objects by namespace/name
 * (ADDED/MODIFIED replace, DELETED removes, BOOKMARK only moves the
 * resourceVersion; a relist replaces the whole set of its scope, so objects
 * deleted while disconnected disappear) and, a little debounced, calls
 * `onChange` with the whole current set after the first list and after
 * every change. Each object goes through the same validation as a policy
 * file (collectPolicyObjects: the API's JSON is the same in-memory document
 * a YAML file parses to). An invalid object is reported by name, field path
 * and reason, once per resourceVersion, and does not apply; what stands in
 * for it is the `invalid` mode:
 *
 * - `fail-closed` (default): a stand-in with the same namespace, name and
 *   selector that can only deny (src/authz/stand-in.ts: an invalid ALLOW
 *   allows nothing, an invalid DENY, CUSTOM or unknown action denies
 *   everything to the workloads it selects; AUDIT, dry-run and targetRef
 *   objects are simply left out).
 * - `skip`: the object is left out, as if it did not exist (an invalid DENY
 *   then denies nothing: fail open).
 *
 * `KubePolicySource` turns that into a live engine for ext_authz like the
 * file-based PolicyWatcher, through the same EngineHolder: every change
 * compiles a new engine aside and swaps one reference; a compile failure
 * keeps the last good engine; the
 * same metrics and log events as file reloads. Until the first successful
 * compile its engine denies everything (fail closed) and `ready` is false.
 */
import { CustomObjectsApi, type KubeConfig, type KubernetesObject } from '@kubernetes/client-node';
import { Gauge } from 'prom-client';
import { AuthzEngine, type EngineOptions } from '../authz/engine.ts';
import { EngineHolder } from '../authz/engine-holder.ts';
import { denyEverything, failClosedStandIn, type Replacement } from '../authz/stand-in.ts';
import { collectPolicyObjects } from '../authz/loader.ts';
import type { AuthzMetrics } from '../authz/metrics.ts';
import type { AuthorizationPolicy } from '../authz/model.ts';
import { systemClock, type Clock, type TimerHandle } from '../platform/clock.ts';
import { silentLogger, type Logger } from '../platform/logger.ts';
import { isStatus } from './api-errors.ts';
import { listWatch, type ListWatchHandle, type WatchEventType } from './list-watch.ts';

export const POLICY_GROUP = 'security.istio.io';
export const POLICY_VERSION = 'v1';
export const POLICY_PLURAL = 'authorizationpolicies';
const POLICY_API_VERSION = `${POLICY_GROUP}/${POLICY_VERSION}`;

export const INVALID_POLICY_MODES = ['fail-closed', 'skip'] as const;
export type InvalidPolicyMode = (typeof INVALID_POLICY_MODES)[number];

export type { Replacement };

export interface RejectedPolicy {
  /** `namespace/name` */
  readonly policy: string;
  readonly resourceVersion?: string;
  /** every validation error: field path (`spec.rules[0].to[0].operation.foo`) and reason */
  readonly errors: readonly { readonly path: string; readonly message: string }[];
  readonly replacement: Replacement;
  /** for a stand-in: whether it kept the object's selector (else it covers the whole namespace) */
  readonly scope?: 'selector' | 'namespace';
}

export interface PolicySnapshot {
  /** the documents in force: valid objects and fail-closed stand-ins, by namespace/name */
  readonly policies: readonly AuthorizationPolicy[];
  /** the invalid objects, by namespace/name */
  readonly rejected: readonly RejectedPolicy[];
  /** objects seen (valid and invalid) */
  readonly objects: number;
}

export interface AuthorizationPolicyWatchOptions {
  kubeConfig: KubeConfig;
  /** namespaces to watch, each with its own list + watch; undefined or empty: all namespaces (one cluster-wide watch) */
  namespaces?: readonly string[];
  /** After the first list (of every namespace) and after every change, debounced: the whole current set. */
  onChange: (policies: readonly AuthorizationPolicy[], snapshot: PolicySnapshot) => void;
  /** default `fail-closed` */
  invalid?: InvalidPolicyMode;
  /** quiet time before onChange; default 50 ms */
  debounceMs?: number;
  /** page size of lists; default 500 */
  pageSize?: number;
  /** every watch event as it is applied (diagnostics, tests) */
  onEvent?: (type: WatchEventType, policy: string, resourceVersion: string | undefined) => void;
  logger?: Logger;
  clock?: Clock;
  /** watch retry backoff; defaults 250 ms → 30 s */
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

export interface AuthorizationPolicyWatch {
  /** Resolves after the first onChange (or when stopped first). */
  readonly synced: Promise<void>;
  /** The set last given to onChange. */
  snapshot(): PolicySnapshot | undefined;
  /** lists, watch connections and 410 relists, summed over the namespaces */
  stats(): { lists: number; watches: number; gone: number };
  stop(): void;
}

type Obj = KubernetesObject & Record<string, unknown>;

interface Entry {
  readonly policy?: AuthorizationPolicy;
  readonly rejected?: RejectedPolicy;
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The object as a policy document, as a YAML file of it would parse (the list may omit apiVersion and kind). */
function toDocument(o: Obj): Record<string, unknown> {
  return { ...o, apiVersion: o.apiVersion ?? POLICY_API_VERSION, kind: o.kind ?? 'AuthorizationPolicy' };
}

function origin(id: string): string {
  return `kubernetes:${id}`;
}

function describeReplacement(r: RejectedPolicy, namespace: string): string {
  const scope = r.scope === 'selector' ? 'the workloads it selects' : `every workload of namespace ${namespace} (its selector is invalid too, or it has none)`;
  if (r.replacement === 'deny-all') return `failing closed: every request to ${scope} is denied until it is fixed`;
  if (r.replacement === 'allow-nothing') return `failing closed: it allows nothing; requests to ${scope} are allowed only by other ALLOW policies`;
  return 'left out';
}

/** Every policy of one scope (a namespace, or all), page by page; an expired continue token starts the list again (once). */
async function listPolicies(api: CustomObjectsApi, ns: string | undefined, pageSize: number): Promise<{ items: Obj[]; resourceVersion?: string }> {
  for (let restart = 0; ; restart++) {
    const items: Obj[] = [];
    let resourceVersion: string | undefined;
    let cont: string | undefined;
    try {
      do {
        const page = (ns === undefined
          ? await api.listCustomObjectForAllNamespaces({ group: POLICY_GROUP, version: POLICY_VERSION, resourcePlural: POLICY_PLURAL, limit: pageSize, _continue: cont })
          : await api.listNamespacedCustomObject({ group: POLICY_GROUP, version: POLICY_VERSION, namespace: ns, plural: POLICY_PLURAL, limit: pageSize, _continue: cont })) as {
          metadata?: { resourceVersion?: string; continue?: string };
          items?: Obj[];
        };
        resourceVersion ??= page.metadata?.resourceVersion;
        items.push(...(page.items ?? []).filter(isObj));
        cont = page.metadata?.continue || undefined;
      } while (cont);
      return { items, resourceVersion };
    } catch (e) {
      // a continue token that expired between pages: list again from the start (once)
      if (isStatus(e, 410) && cont !== undefined && restart === 0) continue;
      throw e; // raw, so that list-watch logs the HTTP status and reason
    }
  }
}

/** One object through the policy file validation: the policy, or (invalid) what stands in for it under `mode`. */
function checkPolicy(id: string, obj: Obj, mode: InvalidPolicyMode): Entry {
  const doc = toDocument(obj);
  const r = collectPolicyObjects([{ value: doc, file: origin(id), document: 1 }]);
  const errors = r.issues.filter((i) => i.severity === 'error');
  if (errors.length === 0 && r.policies.length === 1) return { policy: r.policies[0] };
  const reported = errors.length > 0 ? errors.map((i) => ({ path: i.path, message: i.message })) : [{ path: '(document)', message: r.issues[0]?.message ?? 'not an AuthorizationPolicy' }];
  const s = mode === 'skip' ? { replacement: 'none' as const } : failClosedStandIn(id, doc, origin(id));
  const rejected: RejectedPolicy = {
    policy: id,
    ...(obj.metadata?.resourceVersion ? { resourceVersion: obj.metadata.resourceVersion } : {}),
    errors: reported,
    replacement: s.replacement,
    ...(s.scope ? { scope: s.scope } : {}),
  };
  return { ...(s.policy ? { policy: s.policy } : {}), rejected };
}

export function watchAuthorizationPolicies(o: AuthorizationPolicyWatchOptions): AuthorizationPolicyWatch {
  const logger = o.logger ?? silentLogger();
  const clock = o.clock ?? systemClock;
  const mode = o.invalid ?? 'fail-closed';
  const debounceMs = o.debounceMs ?? 50;
  const pageSize = o.pageSize ?? 500;
  const api = o.kubeConfig.makeApiClient(CustomObjectsApi);
  const namespaces = [...new Set(o.namespaces ?? [])];
  const scopes: (string | undefined)[] = namespaces.length > 0 ? namespaces : [undefined];

  /** current objects per scope, by namespace/name */
  const objects = new Map<string | undefined, Map<string, Obj>>(scopes.map((s) => [s, new Map()]));
  const listed = new Set<string | undefined>();
  /** validation results by namespace/name, valid while the resourceVersion is the same */
  const checked = new Map<string, { rv: string | undefined; entry: Entry }>();
  let snapshot: PolicySnapshot | undefined;
  let timer: TimerHandle | undefined;
  let stopped = false;
  let markSynced!: () => void;
  const synced = new Promise<void>((r) => (markSynced = r));

  const idOf = (obj: Obj): string | undefined => {
    const name = obj.metadata?.name;
    return name ? `${obj.metadata?.namespace ?? ''}/${name}` : undefined;
  };

  function entryOf(id: string, obj: Obj): Entry {
    const rv = obj.metadata?.resourceVersion;
    const prev = checked.get(id);
    if (prev && rv !== undefined && prev.rv === rv) return prev.entry;
    const entry = checkPolicy(id, obj, mode);
    checked.set(id, { rv, entry });
    const r = entry.rejected;
    if (r) {
      const first = r.errors[0]!;
      logger.error(
        { event: 'authz.policy_invalid', policy: id, resourceVersion: rv, errors: r.errors.map((e) => `${e.path}: ${e.message}`), replacement: r.replacement },
        `AuthorizationPolicy ${id} is invalid (${first.path}: ${first.message}${r.errors.length > 1 ? `; and ${r.errors.length - 1} more` : ''}): ${describeReplacement(r, id.slice(0, id.indexOf('/')))}`,
      );
    } else if (prev?.entry.rejected) {
      logger.info({ event: 'authz.policy_valid', policy: id, resourceVersion: rv }, `AuthorizationPolicy ${id} is valid again`);
    }
    return entry;
  }

  function emit(): void {
    timer = undefined;
    if (stopped) return;
    const entries: [string, Entry][] = [];
    for (const m of objects.values()) for (const [id, obj] of m) entries.push([id, entryOf(id, obj)]);
    const present = new Set(entries.map(([id]) => id));
    for (const id of checked.keys()) if (!present.has(id)) checked.delete(id);
    entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    snapshot = {
      policies: entries.flatMap(([, e]) => (e.policy ? [e.policy] : [])),
      rejected: entries.flatMap(([, e]) => (e.rejected ? [e.rejected] : [])),
      objects: entries.length,
    };
    try {
      o.onChange(snapshot.policies, snapshot);
    } catch (e) {
      logger.error({ event: 'kube.handler_failed', what: 'AuthorizationPolicies', err: e }, 'the policy change handler failed');
    }
    markSynced();
  }

  function changed(): void {
    if (stopped || listed.size < scopes.length) return; // the first onChange waits for every namespace's first list
    timer?.cancel();
    timer = clock.setTimer(emit, debounceMs);
  }

  const handles: ListWatchHandle[] = scopes.map((ns) => {
    const mine = objects.get(ns)!;
    const path = ns === undefined ? `/apis/${POLICY_API_VERSION}/${POLICY_PLURAL}` : `/apis/${POLICY_API_VERSION}/namespaces/${encodeURIComponent(ns)}/${POLICY_PLURAL}`;
    return listWatch<Obj>({
      kubeConfig: o.kubeConfig,
      path,
      list: () => listPolicies(api, ns, pageSize),
      onList: (items) => {
        mine.clear();
        for (const it of items) {
          const id = idOf(it);
          if (id) mine.set(id, it);
        }
        listed.add(ns);
        changed();
      },
      onEvent: (type, obj) => {
        const id = idOf(obj);
        if (!id) return;
        if (type === 'DELETED') mine.delete(id);
        else mine.set(id, obj);
        o.onEvent?.(type, id, obj.metadata?.resourceVersion);
        changed();
      },
      what: `AuthorizationPolicies (${POLICY_API_VERSION}) in ${ns === undefined ? 'all namespaces' : `namespace ${ns}`}`,
      clock,
      logger,
      minBackoffMs: o.minBackoffMs,
      maxBackoffMs: o.maxBackoffMs,
    });
  });

  return {
    synced,
    snapshot: () => snapshot,
    stats: () => handles.reduce((s, h) => ({ lists: s.lists + h.stats.lists, watches: s.watches + h.stats.watches, gone: s.gone + h.stats.gone }), { lists: 0, watches: 0, gone: 0 }),
    stop() {
      if (stopped) return;
      stopped = true;
      timer?.cancel();
      timer = undefined;
      for (const h of handles) h.stop();
      markSynced();
    },
  };
}

export interface KubePolicySourceOptions extends Omit<AuthorizationPolicyWatchOptions, 'onChange'> {
  engine: EngineOptions;
  metrics?: AuthzMetrics;
  /** default AuthzEngine.compile (a port, so tests can make a compile fail) */
  compile?: (policies: readonly AuthorizationPolicy[], opts: EngineOptions) => AuthzEngine;
  /** after every compile attempt (tests) */
  onReload?: (r: { ok: boolean; policies: number; invalid: number; error?: string }) => void;
}

const INVALID_GAUGE = 'castellan_authz_invalid_policies';

/** A live engine over the cluster's AuthorizationPolicies. The caller must `close()` it. */
export class KubePolicySource {
  readonly #o: KubePolicySourceOptions;
  readonly #holder: EngineHolder;
  #last: { policies: readonly AuthorizationPolicy[]; snapshot: PolicySnapshot } | undefined;
  readonly #invalidGauge: Gauge | undefined;
  readonly #watch: AuthorizationPolicyWatch;
  #markSynced!: () => void;
  /** Resolves once the first list has compiled (or on close). */
  readonly synced = new Promise<void>((r) => (this.#markSynced = r));

  constructor(o: KubePolicySourceOptions) {
    this.#o = o;
    this.#holder = new EngineHolder(denyEverything(o.engine), { ready: false, metrics: o.metrics });
    const reg = o.metrics?.registry;
    if (reg) {
      const existing = reg.getSingleMetric(INVALID_GAUGE);
      this.#invalidGauge = existing instanceof Gauge ? existing : new Gauge({ name: INVALID_GAUGE, help: 'AuthorizationPolicy objects from the Kubernetes API that failed validation (replaced by fail-closed stand-ins, or left out)', registers: [reg] });
    }
    this.#watch = watchAuthorizationPolicies({ ...o, onChange: (policies, snapshot) => this.#apply(policies, snapshot) });
  }

  /** The active engine. Capture it once per request. */
  get engine(): AuthzEngine {
    return this.#holder.engine;
  }

  /** Whether a set from the API server is in force. */
  get ready(): boolean {
    return this.#holder.ready;
  }

  /** The set last received from the API server. */
  get snapshot(): PolicySnapshot | undefined {
    return this.#last?.snapshot;
  }

  /** The error of the last failed compile, if the active set is older than the cluster's. */
  get lastError(): string | undefined {
    return this.#holder.lastError;
  }

  get watchStats(): { lists: number; watches: number; gone: number } {
    return this.#watch.stats();
  }

  /** Compiles the last received set again (SIGHUP). Returns whether a set from the API server is active. */
  reload(): boolean {
    return this.#last ? this.#apply(this.#last.policies, this.#last.snapshot) : false;
  }

  #apply(policies: readonly AuthorizationPolicy[], snapshot: PolicySnapshot): boolean {
    const log = this.#o.logger ?? silentLogger();
    this.#last = { policies, snapshot };
    this.#invalidGauge?.set(snapshot.rejected.length);
    const invalid = snapshot.rejected.length;
    const r = this.#holder.install(() => (this.#o.compile ?? AuthzEngine.compile)(policies, this.#o.engine));
    if (r.ok) {
      const size = r.engine.size;
      if (r.first) log.info({ event: 'authz.kubernetes_synced', policies: size, invalid }, 'AuthorizationPolicies listed from the Kubernetes API');
      else log.info({ event: 'authz.reload', source: 'kubernetes', policies: size, invalid }, 'policies reloaded');
      this.#o.onReload?.({ ok: true, policies: size, invalid });
      this.#markSynced();
      return true;
    }
    const size = this.#holder.engine.size;
    if (!r.repeated) {
      log.error({ event: 'authz.reload_failed', source: 'kubernetes', policies: size, error: r.error }, this.#holder.ready ? 'policy reload failed: keeping the last good policy set' : 'policies from the Kubernetes API do not compile: still denying every request');
    }
    this.#o.onReload?.({ ok: false, policies: size, invalid, error: r.error });
    return false;
  }

  close(): void {
    this.#watch.stop();
    this.#markSynced();
  }
}
