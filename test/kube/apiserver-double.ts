/**
 * An HTTP double of the Kubernetes API server, limited to the endpoints
 * Castellan's Kubernetes keystore, Lease elector, trust-bundle publisher and
 * AuthorizationPolicy watcher use (no real API server can run here):
 *
 *   core/v1              namespaces       list, watch, get
 *   core/v1, namespaced  secrets          get, list, watch, create, update, delete
 *                        configmaps       get, list, watch, create, update, delete (also cluster-wide list/watch)
 *   coordination.k8s.io/v1, namespaced   leases   get, list, watch, create, update, delete
 *   security.istio.io/v1, namespaced     authorizationpolicies (a custom resource)
 *                                        get, list, watch, create, update, delete (also cluster-wide list/watch)
 *   core/v1, namespaced  pods             get, list, watch, create, update, delete (also cluster-wide list/watch),
 *                                        and the binding subresource (scheduling)
 *   authentication.k8s.io/v1             tokenreviews     create (answers from `reviews`)
 *
 * Behaviour modelled on kube-apiserver (facts, not code):
 * - one resourceVersion counter for the whole store (like etcd's revision),
 *   bumped by every write that changes an object; a PUT that changes nothing
 *   is not a write (same resourceVersion, no watch event), as on the real one;
 * - POST of an existing name → 409 AlreadyExists; PUT carrying a stale
 *   metadata.resourceVersion → 409 Conflict; PUT without one is an
 *   unconditional update; PUT of a missing object → 404; GET of a missing
 *   object → 404 NotFound; creating in a namespace that does not exist → 404
 *   (namespaces "x" not found); all as metav1 Status objects;
 * - a Secret's `stringData` is merged into `data`, `data` must be base64,
 *   `type` defaults to Opaque; data keys must be valid config keys (422);
 *   namespaces get the `kubernetes.io/metadata.name` label and phase Active;
 * - lists carry the store's resourceVersion; `limit`/`continue` paginate;
 * - `?watch=true` streams newline-delimited JSON events: without a
 *   resourceVersion (or "0") the current objects first as ADDED, then
 *   changes; from resourceVersion N every change after N; a compacted N gives
 *   an ERROR event with a 410 Expired Status (or, switched, HTTP 410); with a
 *   label or field selector, an object that starts or stops matching is
 *   ADDED or DELETED; BOOKMARK events when asked for (allowWatchBookmarks);
 *   `timeoutSeconds` ends the stream;
 * - label selectors (=, ==, !=, in, notin, exists, !exists) and field
 *   selectors (metadata.name, metadata.namespace) on lists and watches;
 * - DELETE of a missing object → 404; a DeleteOptions body whose
 *   preconditions.resourceVersion (or uid) is stale → 409 Conflict; success
 *   answers a Success Status naming the object; watchers get DELETED with
 *   the deletion's resourceVersion;
 * - custom resources (AuthorizationPolicy) as apiextensions serves them:
 *   list items keep their apiVersion and kind (core lists drop them); the
 *   body's apiVersion may be v1 or v1beta1 of the group (Istio serves both
 *   versions of one CRD, converting with strategy None) and is stored and
 *   served as v1; `spec` must be an object (the CRD's structural schema),
 *   anything inside it is kept as given, as a newer CRD would accept fields
 *   an older client does not know;
 * - pods: admission defaults spec.serviceAccountName to "default" and
 *   status.phase to Pending; an update may not change spec.nodeName once set
 *   nor spec.serviceAccountName (422, pod spec updates are forbidden);
 *   POST pods/<name>/binding sets spec.nodeName of an unscheduled pod (409
 *   if already bound); field selectors spec.nodeName,
 *   spec.serviceAccountName and status.phase (pods only, like
 *   kube-apiserver's pod field set);
 * - TokenReview: an unknown token or no common audience gives
 *   `authenticated: false` with an error; otherwise the user (username,
 *   groups, extra such as authentication.kubernetes.io/pod-name and pod-uid)
 *   and the common audiences;
 * - bearer-token authentication (401 without an accepted token).
 *
 * Tests can drop or cleanly close watch connections, compact the history,
 * inject HTTP errors (e.g. 503) for matching requests, make the server
 * unreachable (every connection reset) or cut off one client (by its
 * token, a partitioned replica), and count requests and writes.
 * It serves HTTPS with an openssl-made certificate, which the kubeconfig it
 * writes trusts (client-node refuses plain HTTP unless TLS checks are off).
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';
import { writeKubeconfig } from '../support/kubeconfig.ts';
import { openssl } from '../support/openssl-pki.ts';

export type Resource = 'namespaces' | 'secrets' | 'configmaps' | 'leases' | 'authorizationpolicies' | 'pods';

interface ResourceDef {
  group: string;
  apiVersion: string;
  kind: string;
  namespaced: boolean;
  /** a custom resource (served by apiextensions): other apiVersions of the group accepted, list items keep apiVersion/kind */
  custom?: { versions: readonly string[] };
}

const RESOURCES: Record<Resource, ResourceDef> = {
  namespaces: { group: '', apiVersion: 'v1', kind: 'Namespace', namespaced: false },
  secrets: { group: '', apiVersion: 'v1', kind: 'Secret', namespaced: true },
  configmaps: { group: '', apiVersion: 'v1', kind: 'ConfigMap', namespaced: true },
  leases: { group: 'coordination.k8s.io', apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', namespaced: true },
  pods: { group: '', apiVersion: 'v1', kind: 'Pod', namespaced: true },
  authorizationpolicies: { group: 'security.istio.io', apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', namespaced: true, custom: { versions: ['security.istio.io/v1', 'security.istio.io/v1beta1'] } },
};

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    resourceVersion?: string;
    uid?: string;
    creationTimestamp?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    [k: string]: unknown;
  };
  [k: string]: unknown;
}

type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

interface StoredEvent {
  rv: number;
  resource: Resource;
  type: EventType;
  obj: KubeObject;
  /** the object before the change (MODIFIED) */
  prev?: KubeObject;
}

interface Watcher {
  resource: Resource;
  namespace?: string;
  matches: (o: KubeObject) => boolean;
  bookmarks: boolean;
  res: ServerResponse;
  closed: boolean;
}

/** One injected failure: the next `count` requests that match get `status`. */
export interface InjectedFault {
  method?: string;
  resource?: Resource;
  /** only watch requests (true), only non-watch requests (false), or both */
  watch?: boolean;
  status: number;
  count: number;
}

export interface RequestRecord {
  method: string;
  resource?: Resource;
  namespace?: string;
  name?: string;
  watch: boolean;
  query: Record<string, string>;
}

export interface WriteRecord {
  verb: 'create' | 'update' | 'delete';
  resource: Resource;
  namespace?: string;
  name: string;
  /** whether the store changed (a no-op update does not) */
  changed: boolean;
  /** HTTP status answered */
  status: number;
}

export const CALLER_TOKEN = 'castellan-sa-token';

/** What the double's TokenReview says of a token it knows. */
export interface ReviewedToken {
  username: string;
  groups?: string[];
  audiences: string[];
  extra?: Record<string, string[]>;
}

const REASONS: Record<number, string> = {
  400: 'BadRequest',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'NotFound',
  405: 'MethodNotAllowed',
  409: 'Conflict',
  410: 'Expired',
  422: 'Invalid',
  429: 'TooManyRequests',
  500: 'InternalError',
  503: 'ServiceUnavailable',
  504: 'Timeout',
};

class HttpError extends Error {
  readonly code: number;
  readonly reason: string;
  readonly details?: Record<string, unknown>;
  constructor(code: number, message: string, reason = REASONS[code] ?? 'Unknown', details?: Record<string, unknown>) {
    super(message);
    this.code = code;
    this.reason = reason;
    this.details = details;
  }
}

export function statusObject(code: number, reason: string, message: string, details?: Record<string, unknown>): Record<string, unknown> {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(details ? { details } : {}), code };
}

/** "secrets" or "leases.coordination.k8s.io", as in the API server's messages */
function qualified(r: Resource): string {
  const g = RESOURCES[r].group;
  return g ? `${r}.${g}` : r;
}

function detailsOf(r: Resource, name: string): Record<string, unknown> {
  const g = RESOURCES[r].group;
  return { name, ...(g ? { group: g } : {}), kind: r };
}

const clone = <T>(v: T): T => structuredClone(v);

// ---- selectors -------------------------------------------------------------

const KEY = '[A-Za-z0-9](?:[-A-Za-z0-9_./]*[A-Za-z0-9])?';
const VALUE = '(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?';

/** Parses a label selector; throws HttpError 400 like the API server for a malformed one. */
export function parseLabelSelector(sel: string): (labels: Record<string, string>) => boolean {
  const parts: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of sel) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      parts.push(cur);
      cur = '';
    } else cur += ch;
  }
  parts.push(cur);
  const reqs: ((l: Record<string, string>) => boolean)[] = [];
  for (const raw of parts) {
    const p = raw.trim();
    if (p === '') {
      if (parts.length === 1) continue;
      throw new HttpError(400, `unable to parse requirement: found '', expected: identifier`);
    }
    let m: RegExpMatchArray | null;
    if ((m = p.match(new RegExp(`^!\\s*(${KEY})$`)))) {
      const k = m[1]!;
      reqs.push((l) => !(k in l));
    } else if ((m = p.match(new RegExp(`^(${KEY})\\s+(in|notin)\\s*\\(([^()]*)\\)$`)))) {
      const k = m[1]!;
      const values = m[3]!.split(',').map((v) => v.trim());
      if (values.some((v) => !new RegExp(`^${VALUE}$`).test(v))) throw new HttpError(400, `unable to parse requirement: invalid label value in "${p}"`);
      const neg = m[2] === 'notin';
      reqs.push((l) => (neg ? !(k in l) || !values.includes(l[k]!) : k in l && values.includes(l[k]!)));
    } else if ((m = p.match(new RegExp(`^(${KEY})\\s*(==|=|!=)\\s*(${VALUE})$`)))) {
      const k = m[1]!;
      const v = m[3]!;
      const neg = m[2] === '!=';
      reqs.push((l) => (neg ? l[k] !== v : l[k] === v));
    } else if ((m = p.match(new RegExp(`^(${KEY})$`)))) {
      const k = m[1]!;
      reqs.push((l) => k in l);
    } else {
      throw new HttpError(400, `unable to parse requirement: "${p}" is not a valid label selector requirement`);
    }
  }
  return (labels) => reqs.every((r) => r(labels));
}

/** The pod fields kube-apiserver accepts in a field selector, beyond metadata.name/namespace (a subset). */
const POD_FIELDS: Record<string, (o: KubeObject) => string> = {
  'spec.nodeName': (o) => String((o.spec as { nodeName?: string } | undefined)?.nodeName ?? ''),
  'spec.serviceAccountName': (o) => String((o.spec as { serviceAccountName?: string } | undefined)?.serviceAccountName ?? ''),
  'status.phase': (o) => String((o.status as { phase?: string } | undefined)?.phase ?? ''),
};

function parseFieldSelector(sel: string, resource?: Resource): (o: KubeObject) => boolean {
  const reqs: ((o: KubeObject) => boolean)[] = [];
  for (const raw of sel.split(',')) {
    const p = raw.trim();
    if (p === '') continue;
    const m = p.match(/^([a-zA-Z.]+)\s*(==|=|!=)\s*(.*)$/);
    if (!m) throw new HttpError(400, `invalid selector: '${p}'; can't understand '${p}'`);
    const field = m[1]!;
    const v = m[3]!;
    const neg = m[2] === '!=';
    let get: (o: KubeObject) => string;
    if (field === 'metadata.name') get = (o) => o.metadata.name;
    else if (field === 'metadata.namespace') get = (o) => o.metadata.namespace ?? '';
    else if (resource === 'pods' && POD_FIELDS[field]) get = POD_FIELDS[field];
    else throw new HttpError(400, `"${field}" is not a known field selector: only "metadata.name", "metadata.namespace"`);
    reqs.push((o) => (neg ? get(o) !== v : get(o) === v));
  }
  return (o) => reqs.every((r) => r(o));
}

// ---- the double ------------------------------------------------------------

export class KubeApiDouble {
  private server!: Server;
  private caPem = '';
  url = '';
  private rv = 100;
  private compactedRv = 0;
  private readonly objects = new Map<string, KubeObject>();
  private history: StoredEvent[] = [];
  private readonly watchers = new Set<Watcher>();
  private readonly sockets = new Set<Socket>();
  private bookmarkTimer: NodeJS.Timeout | undefined;

  readonly requests: RequestRecord[] = [];
  readonly writes: WriteRecord[] = [];
  readonly faults: InjectedFault[] = [];
  private down = false;
  /** bearer tokens the double accepts (each replica in a test may have its own) */
  readonly tokens = new Set<string>([CALLER_TOKEN]);
  /** tokens the TokenReview endpoint authenticates (workload tokens, not credentials to this API) */
  readonly reviews = new Map<string, ReviewedToken>();
  /** clients (by token) whose connections are reset: a network partition of one replica */
  readonly partitioned = new Set<string>();
  /** called for every authenticated request before it is served (a test can change the store at that moment, e.g. to lose a race) */
  onRequest: ((r: RequestRecord) => void) | undefined;
  /** how a compacted watch resourceVersion is answered: ERROR event (what kube-apiserver's watch cache does) or HTTP 410 */
  goneAs: 'event' | 'http' = 'event';

  async start(dir: string): Promise<this> {
    openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'kube-api-key.pem', '-out', 'kube-api-cert.pem', '-days', '2', '-subj', '/CN=kube-apiserver', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], dir);
    this.caPem = readFileSync(join(dir, 'kube-api-cert.pem'), 'utf8');
    this.server = createServer({ key: readFileSync(join(dir, 'kube-api-key.pem')), cert: this.caPem }, (req, res) => void this.handle(req, res));
    this.server.on('connection', (s: Socket) => {
      if (this.down) {
        s.destroy();
        return;
      }
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `https://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  /** Writes a kubeconfig pointing client-node at this double. */
  writeKubeconfig(path: string, token = CALLER_TOKEN): void {
    writeKubeconfig(path, { url: this.url, caPem: this.caPem, token });
  }

  async stop(): Promise<void> {
    if (this.bookmarkTimer) clearInterval(this.bookmarkTimer);
    for (const w of this.watchers) w.res.destroy();
    this.watchers.clear();
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }

  // ---- test controls -------------------------------------------------------

  /** While true, every connection (open or new) is reset: the API server is unreachable. */
  get unreachable(): boolean {
    return this.down;
  }
  set unreachable(v: boolean) {
    this.down = v;
    if (v) {
      for (const w of [...this.watchers]) this.closeWatcher(w);
      for (const s of this.sockets) s.destroy();
    }
  }

  /** The store's current resourceVersion. */
  get resourceVersion(): string {
    return String(this.rv);
  }

  /** Open watch connections, optionally of one resource. */
  openWatches(resource?: Resource): number {
    return [...this.watchers].filter((w) => !w.closed && (!resource || w.resource === resource)).length;
  }

  /** Resets open watch connections (as a broken network or a restarting API server would). */
  dropWatches(resource?: Resource): number {
    let n = 0;
    for (const w of [...this.watchers]) {
      if (resource && w.resource !== resource) continue;
      this.closeWatcher(w);
      w.res.destroy();
      n++;
    }
    return n;
  }

  /** Ends open watch connections cleanly (as the API server's own watch timeout does). */
  endWatches(resource?: Resource): number {
    let n = 0;
    for (const w of [...this.watchers]) {
      if (resource && w.resource !== resource) continue;
      this.closeWatcher(w);
      w.res.end();
      n++;
    }
    return n;
  }

  /** Forgets the history: watches from any resourceVersion before now get 410 Gone. */
  compact(): void {
    this.compactedRv = this.rv;
    this.history = [];
  }

  /** Sends a BOOKMARK (current resourceVersion) to every watch that asked for bookmarks. */
  sendBookmarks(): void {
    for (const w of this.watchers) {
      if (w.closed || !w.bookmarks) continue;
      const d = RESOURCES[w.resource];
      this.send(w, 'BOOKMARK', { kind: d.kind, apiVersion: d.apiVersion, metadata: { resourceVersion: String(this.rv) } });
    }
  }

  /** Sends bookmarks every `ms` (0 stops). */
  bookmarkEvery(ms: number): void {
    if (this.bookmarkTimer) clearInterval(this.bookmarkTimer);
    this.bookmarkTimer = ms > 0 ? setInterval(() => this.sendBookmarks(), ms) : undefined;
    this.bookmarkTimer?.unref();
  }

  /** The next `count` requests matching get HTTP `status` (a Status object). */
  inject(f: Omit<InjectedFault, 'count'> & { count?: number }): void {
    this.faults.push({ count: 1, ...f });
  }

  /** A stored object (a copy), or undefined. */
  get(resource: Resource, namespace: string | undefined, name: string): KubeObject | undefined {
    const o = this.objects.get(this.key(resource, namespace, name));
    return o ? clone(o) : undefined;
  }

  list(resource: Resource, namespace?: string): KubeObject[] {
    return [...this.objects.values()].filter((o) => this.kindOf(o) === resource && (namespace === undefined || o.metadata.namespace === namespace)).map(clone);
  }

  /** Creates or replaces an object directly (as another client would), with the same validation and events. */
  put(resource: Resource, obj: KubeObject): KubeObject {
    const ns = RESOURCES[resource].namespaced ? obj.metadata.namespace : undefined;
    const existing = this.objects.get(this.key(resource, ns, obj.metadata.name));
    const body = clone(obj);
    delete body.metadata.resourceVersion;
    return existing ? this.update(resource, ns, obj.metadata.name, body) : this.create(resource, ns, body);
  }

  /** Creates a pod as a controller would (namespace created if missing); `node` binds it at once. */
  createPod(namespace: string, name: string, o: { serviceAccount?: string; node?: string; phase?: string } = {}): KubeObject {
    if (!this.objects.has(this.key('namespaces', undefined, namespace))) this.createNamespace(namespace);
    return this.put('pods', {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace, labels: { app: name } },
      spec: { serviceAccountName: o.serviceAccount, nodeName: o.node, containers: [{ name: 'app', image: 'registry.example/app:1' }] },
      status: { phase: o.phase ?? (o.node ? 'Running' : 'Pending') },
    });
  }

  /** The pods/binding subresource: schedules an unscheduled pod on `node` (409 if already bound, as the scheduler would see). */
  bind(namespace: string, name: string, node: string): KubeObject {
    const o = this.objects.get(this.key('pods', namespace, name));
    if (!o) throw new Error(`no pod ${namespace}/${name}`);
    const spec = o.spec as { nodeName?: string };
    if (spec.nodeName) throw new Error(`pod ${namespace}/${name} is already assigned to node "${spec.nodeName}"`);
    const next = clone(o);
    (next.spec as { nodeName?: string }).nodeName = node;
    next.status = { ...(next.status as object), phase: 'Running' };
    next.metadata.resourceVersion = String(++this.rv);
    this.objects.set(this.key('pods', namespace, name), next);
    this.commit({ rv: this.rv, resource: 'pods', type: 'MODIFIED', obj: clone(next), prev: clone(o) });
    return clone(next);
  }

  /** Sets status.phase (as the kubelet does), e.g. Failed: a field-selected watch then sees the pod DELETED. */
  setPodPhase(namespace: string, name: string, phase: string): KubeObject {
    const o = this.get('pods', namespace, name);
    if (!o) throw new Error(`no pod ${namespace}/${name}`);
    return this.update('pods', namespace, name, { ...o, status: { ...(o.status as object), phase } });
  }

  createNamespace(name: string, labels: Record<string, string> = {}): KubeObject {
    return this.put('namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } });
  }

  /** Deletes an object (watchers get DELETED carrying the deletion's resourceVersion). */
  delete(resource: Resource, namespace: string | undefined, name: string): void {
    if (!this.objects.has(this.key(resource, namespace, name))) throw new Error(`no ${resource} ${namespace ?? ''}/${name}`);
    this.remove(resource, namespace, name, undefined);
  }

  /** Number of create/update requests received for a resource (including no-op updates and refused ones). */
  writeCount(resource: Resource, filter: Partial<Pick<WriteRecord, 'verb' | 'namespace' | 'name' | 'changed'>> = {}): number {
    return this.writes.filter((w) => w.resource === resource && Object.entries(filter).every(([k, v]) => w[k as keyof WriteRecord] === v)).length;
  }

  // ---- store ---------------------------------------------------------------

  private key(resource: Resource, namespace: string | undefined, name: string): string {
    return `${resource}/${namespace ?? ''}/${name}`;
  }

  private kindOf(o: KubeObject): Resource {
    return (Object.keys(RESOURCES) as Resource[]).find((r) => RESOURCES[r].kind === o.kind)!;
  }

  private validate(resource: Resource, namespace: string | undefined, body: KubeObject): KubeObject {
    const d = RESOURCES[resource];
    if (!body || typeof body !== 'object' || typeof body.metadata !== 'object' || body.metadata === null) throw new HttpError(400, 'the body of the request was in an unknown format');
    if (body.kind !== undefined && body.kind !== d.kind) throw new HttpError(400, `${d.kind} in version "v1" cannot be handled as a ${body.kind}`);
    const name = body.metadata.name;
    if (typeof name !== 'string' || !/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(name) || name.length > 253) {
      throw new HttpError(422, `${d.kind} "${String(name ?? '')}" is invalid: metadata.name: Invalid value`, 'Invalid', { name, kind: d.kind });
    }
    if (d.namespaced && body.metadata.namespace !== undefined && body.metadata.namespace !== namespace) {
      throw new HttpError(400, 'the namespace of the provided object does not match the namespace sent on the request');
    }
    if (d.custom) {
      if (body.apiVersion !== undefined && !d.custom.versions.includes(String(body.apiVersion))) {
        throw new HttpError(400, `the API version in the data (${String(body.apiVersion)}) does not match the expected API version (${d.apiVersion})`);
      }
      if (body.spec !== undefined && (typeof body.spec !== 'object' || body.spec === null || Array.isArray(body.spec))) {
        throw new HttpError(422, `${d.kind}.${d.group} "${name}" is invalid: spec: Invalid value: "${Array.isArray(body.spec) ? 'array' : typeof body.spec}": spec in body must be of type object`, 'Invalid', { name, group: d.group, kind: d.kind });
      }
    }
    const o = clone(body);
    o.apiVersion = d.apiVersion;
    o.kind = d.kind;
    if (d.namespaced) o.metadata.namespace = namespace;
    else delete o.metadata.namespace;
    for (const k of ['labels', 'annotations'] as const) {
      const m = o.metadata[k];
      if (m !== undefined && (typeof m !== 'object' || m === null || Object.values(m).some((v) => typeof v !== 'string'))) throw new HttpError(400, `metadata.${k} must map strings to strings`);
    }
    const dataKeys = (m: unknown, field: string): void => {
      if (m === undefined || m === null) return;
      if (typeof m !== 'object') throw new HttpError(400, `${field} must be an object`);
      for (const [k, v] of Object.entries(m)) {
        if (!/^[-._a-zA-Z0-9]+$/.test(k) || k.length > 253) throw new HttpError(422, `${d.kind} "${name}" is invalid: ${field}[${k}]: Invalid value: "${k}": a valid config key must consist of alphanumeric characters, '-', '_' or '.'`, 'Invalid', { name, kind: d.kind });
        if (typeof v !== 'string') throw new HttpError(400, `${field}[${k}] must be a string`);
      }
    };
    if (resource === 'secrets') {
      dataKeys(o.data, 'data');
      dataKeys(o.stringData, 'stringData');
      const data: Record<string, string> = {};
      for (const [k, v] of Object.entries((o.data ?? {}) as Record<string, string>)) {
        if (!/^[A-Za-z0-9+/]*={0,2}$/.test(v) || v.length % 4 !== 0) throw new HttpError(400, `illegal base64 data in data[${k}]`);
        data[k] = v;
      }
      for (const [k, v] of Object.entries((o.stringData ?? {}) as Record<string, string>)) data[k] = Buffer.from(v, 'utf8').toString('base64');
      delete o.stringData;
      if (Object.keys(data).length > 0) o.data = data;
      else delete o.data;
      o.type ??= 'Opaque';
      const size = Object.values(data).reduce((n, v) => n + Buffer.from(v, 'base64').length, 0);
      if (size > 1_048_576) throw new HttpError(422, `Secret "${name}" is invalid: data: Too long: must have at most 1048576 bytes`, 'Invalid', { name, kind: d.kind });
    }
    if (resource === 'configmaps') {
      dataKeys(o.data, 'data');
      dataKeys(o.binaryData, 'binaryData');
    }
    if (resource === 'namespaces') {
      o.metadata.labels = { ...o.metadata.labels, 'kubernetes.io/metadata.name': name };
      o.spec = { finalizers: ['kubernetes'] };
      o.status ??= { phase: 'Active' };
    }
    if (resource === 'pods') {
      const spec = (o.spec ?? {}) as Record<string, unknown>;
      if (typeof spec !== 'object' || Array.isArray(spec)) throw new HttpError(400, 'spec must be an object');
      spec.serviceAccountName ||= 'default';
      o.spec = spec;
      o.status = { phase: 'Pending', ...(o.status as Record<string, unknown> | undefined) };
    }
    if (resource === 'leases') {
      const spec = (o.spec ?? {}) as Record<string, unknown>;
      if (spec.leaseDurationSeconds !== undefined && (!Number.isInteger(spec.leaseDurationSeconds) || (spec.leaseDurationSeconds as number) <= 0)) {
        throw new HttpError(422, `Lease.coordination.k8s.io "${name}" is invalid: spec.leaseDurationSeconds: Invalid value: must be greater than 0`, 'Invalid', { name, group: d.group, kind: 'Lease' });
      }
      for (const t of ['acquireTime', 'renewTime'] as const) {
        const v = spec[t];
        if (v !== undefined && v !== null && (typeof v !== 'string' || !/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$/.test(v))) {
          throw new HttpError(400, `Lease in version "v1" cannot be handled as a Lease: spec.${t}: invalid MicroTime ${JSON.stringify(v)}`);
        }
      }
      o.spec = spec;
    }
    return o;
  }

  /** DELETE: `preconditions` as in a DeleteOptions body. */
  private remove(resource: Resource, namespace: string | undefined, name: string, preconditions: { resourceVersion?: unknown; uid?: unknown } | undefined): KubeObject {
    const k = this.key(resource, namespace, name);
    const o = this.objects.get(k);
    if (!o) throw new HttpError(404, `${qualified(resource)} "${name}" not found`, 'NotFound', detailsOf(resource, name));
    const stale = (want: unknown, have: unknown): boolean => typeof want === 'string' && want !== '' && want !== have;
    if (stale(preconditions?.resourceVersion, o.metadata.resourceVersion) || stale(preconditions?.uid, o.metadata.uid)) {
      throw new HttpError(409, `Operation cannot be fulfilled on ${qualified(resource)} "${name}": the precondition was not met`, 'Conflict', detailsOf(resource, name));
    }
    this.objects.delete(k);
    const gone = clone(o);
    gone.metadata.resourceVersion = String(++this.rv);
    this.commit({ rv: this.rv, resource, type: 'DELETED', obj: gone });
    return gone;
  }

  private create(resource: Resource, namespace: string | undefined, body: KubeObject): KubeObject {
    const o = this.validate(resource, namespace, body);
    if (RESOURCES[resource].namespaced && !this.objects.has(this.key('namespaces', undefined, namespace!))) {
      throw new HttpError(404, `namespaces "${namespace}" not found`, 'NotFound', { name: namespace, kind: 'namespaces' });
    }
    const k = this.key(resource, namespace, o.metadata.name);
    if (this.objects.has(k)) throw new HttpError(409, `${qualified(resource)} "${o.metadata.name}" already exists`, 'AlreadyExists', detailsOf(resource, o.metadata.name));
    o.metadata.uid = randomUUID();
    o.metadata.creationTimestamp = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    o.metadata.resourceVersion = String(++this.rv);
    this.objects.set(k, o);
    this.commit({ rv: this.rv, resource, type: 'ADDED', obj: clone(o) });
    return clone(o);
  }

  private update(resource: Resource, namespace: string | undefined, name: string, body: KubeObject): KubeObject {
    if (body?.metadata?.name !== undefined && body.metadata.name !== name) {
      throw new HttpError(400, `the name of the object (${String(body.metadata.name)}) does not match the name on the URL (${name})`);
    }
    const k = this.key(resource, namespace, name);
    const existing = this.objects.get(k);
    if (!existing) throw new HttpError(404, `${qualified(resource)} "${name}" not found`, 'NotFound', detailsOf(resource, name));
    const wanted = body.metadata.resourceVersion;
    if (wanted !== undefined && wanted !== '' && wanted !== existing.metadata.resourceVersion) {
      throw new HttpError(409, `Operation cannot be fulfilled on ${qualified(resource)} "${name}": the object has been modified; please apply your changes to the latest version and try again`, 'Conflict', detailsOf(resource, name));
    }
    const o = this.validate(resource, namespace, { ...body, metadata: { ...body.metadata, name } });
    if (resource === 'pods') {
      const was = existing.spec as { nodeName?: string; serviceAccountName?: string };
      const now = o.spec as { nodeName?: string; serviceAccountName?: string };
      if ((was.nodeName && now.nodeName !== was.nodeName) || now.serviceAccountName !== was.serviceAccountName) {
        throw new HttpError(422, `Pod "${name}" is invalid: spec: Forbidden: pod updates may not change fields other than \`spec.containers[*].image\`, ...`, 'Invalid', { name, kind: 'Pod' });
      }
      if (!was.nodeName && now.nodeName) throw new HttpError(422, `Pod "${name}" is invalid: spec.nodeName: Forbidden: set through the binding subresource`, 'Invalid', { name, kind: 'Pod' });
    }
    o.metadata.uid = existing.metadata.uid;
    o.metadata.creationTimestamp = existing.metadata.creationTimestamp;
    if (resource === 'namespaces') o.status = existing.status;
    o.metadata.resourceVersion = existing.metadata.resourceVersion;
    if (JSON.stringify(sortKeys(o)) === JSON.stringify(sortKeys(existing))) return clone(existing); // no-op: not a write
    o.metadata.resourceVersion = String(++this.rv);
    this.objects.set(k, o);
    this.commit({ rv: this.rv, resource, type: 'MODIFIED', obj: clone(o), prev: clone(existing) });
    return clone(o);
  }

  private commit(e: StoredEvent): void {
    this.history.push(e);
    if (this.history.length > 10_000) {
      const dropped = this.history.splice(0, 1000);
      this.compactedRv = dropped.at(-1)!.rv;
    }
    for (const w of this.watchers) this.deliver(w, e);
  }

  private deliver(w: Watcher, e: StoredEvent): void {
    if (w.closed || w.resource !== e.resource) return;
    if (w.namespace !== undefined && e.obj.metadata.namespace !== w.namespace) return;
    const now = w.matches(e.obj);
    if (e.type === 'MODIFIED') {
      const before = e.prev ? w.matches(e.prev) : now;
      if (now && before) this.send(w, 'MODIFIED', e.obj);
      else if (now) this.send(w, 'ADDED', e.obj);
      else if (before) this.send(w, 'DELETED', e.obj);
    } else if (now) this.send(w, e.type, e.obj);
  }

  private send(w: Watcher, type: string, obj: unknown): void {
    if (w.closed) return;
    w.res.write(JSON.stringify({ type, object: obj }) + '\n');
  }

  private closeWatcher(w: Watcher): void {
    w.closed = true;
    this.watchers.delete(w);
  }

  // ---- HTTP ----------------------------------------------------------------

  private route(path: string): { resource?: Resource; namespace?: string; name?: string } | undefined {
    let m = path.match(/^\/api\/v1\/namespaces(?:\/([^/]+))?$/);
    if (m) return { resource: 'namespaces', name: m[1] && decodeURIComponent(m[1]) };
    m = path.match(/^\/api\/v1\/namespaces\/([^/]+)\/(secrets|configmaps)(?:\/([^/]+))?$/);
    if (m) return { resource: m[2] as Resource, namespace: decodeURIComponent(m[1]!), name: m[3] && decodeURIComponent(m[3]) };
    m = path.match(/^\/api\/v1\/namespaces\/([^/]+)\/pods(?:\/([^/]+))?$/);
    if (m) return { resource: 'pods', namespace: decodeURIComponent(m[1]!), name: m[2] && decodeURIComponent(m[2]) };
    m = path.match(/^\/api\/v1\/(secrets|configmaps|pods)$/);
    if (m) return { resource: m[1] as Resource };
    m = path.match(/^\/apis\/coordination\.k8s\.io\/v1\/namespaces\/([^/]+)\/leases(?:\/([^/]+))?$/);
    if (m) return { resource: 'leases', namespace: decodeURIComponent(m[1]!), name: m[2] && decodeURIComponent(m[2]) };
    m = path.match(/^\/apis\/coordination\.k8s\.io\/v1\/leases$/);
    if (m) return { resource: 'leases' };
    m = path.match(/^\/apis\/security\.istio\.io\/v1\/namespaces\/([^/]+)\/authorizationpolicies(?:\/([^/]+))?$/);
    if (m) return { resource: 'authorizationpolicies', namespace: decodeURIComponent(m[1]!), name: m[2] && decodeURIComponent(m[2]) };
    m = path.match(/^\/apis\/security\.istio\.io\/v1\/authorizationpolicies$/);
    if (m) return { resource: 'authorizationpolicies' };
    return undefined;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const token = req.headers.authorization?.replace(/^Bearer /, '');
    if (token !== undefined && this.partitioned.has(token)) {
      req.socket.destroy();
      return;
    }
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const url = new URL(req.url ?? '/', 'https://double');
    const query = Object.fromEntries(url.searchParams);
    const r = this.route(url.pathname);
    const watch = query.watch === 'true' || query.watch === '1';
    const method = req.method ?? 'GET';
    this.requests.push({ method, resource: r?.resource, namespace: r?.namespace, name: r?.name, watch, query });
    const json = (code: number, body: unknown): void => {
      res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    };
    const fail = (e: HttpError): void => json(e.code, statusObject(e.code, e.reason, e.message, e.details));
    let verb: WriteRecord['verb'] | undefined;
    let writeName = r?.name ?? '';
    let before = this.rv;
    try {
      if (token === undefined || !this.tokens.has(token)) throw new HttpError(401, 'Unauthorized');
      this.onRequest?.(this.requests.at(-1)!);
      const fi = this.faults.findIndex((f) => (!f.method || f.method === method) && (!f.resource || f.resource === r?.resource) && (f.watch === undefined || f.watch === watch));
      if (fi >= 0) {
        const f = this.faults[fi]!;
        if (--f.count <= 0) this.faults.splice(fi, 1);
        throw new HttpError(f.status, `injected failure (${f.status})`);
      }
      if (method === 'POST' && url.pathname === '/apis/authentication.k8s.io/v1/tokenreviews') {
        json(201, this.tokenReview(Buffer.concat(chunks).toString('utf8')));
        return;
      }
      if (!r?.resource) throw new HttpError(404, 'the server could not find the requested resource');
      const { resource, namespace, name } = r;
      if (method === 'GET') {
        if (watch) {
          if (name !== undefined) throw new HttpError(405, 'watch of a single object by name: use a list watch with fieldSelector metadata.name');
          this.startWatch(resource, namespace, query, res);
          return;
        }
        if (name !== undefined) {
          const o = this.objects.get(this.key(resource, namespace, name));
          if (!o) throw new HttpError(404, `${qualified(resource)} "${name}" not found`, 'NotFound', detailsOf(resource, name));
          json(200, o);
          return;
        }
        json(200, this.listBody(resource, namespace, query));
        return;
      }
      if (method === 'DELETE') {
        if (name === undefined || namespace === undefined) throw new HttpError(405, 'the server does not allow this method on the requested resource');
        verb = 'delete';
        let opts: { preconditions?: { resourceVersion?: unknown; uid?: unknown } } = {};
        const text = Buffer.concat(chunks).toString('utf8').trim();
        if (text !== '') {
          try {
            opts = JSON.parse(text) as typeof opts;
          } catch {
            throw new HttpError(400, 'the body of the request was in an unknown format');
          }
        }
        const gone = this.remove(resource, namespace, name, opts?.preconditions);
        const g = RESOURCES[resource].group;
        json(200, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', details: { name, ...(g ? { group: g } : {}), kind: resource, uid: gone.metadata.uid } });
        this.writes.push({ verb, resource, namespace, name, changed: true, status: 200 });
        return;
      }
      let body: KubeObject;
      if (method === 'POST' || method === 'PUT') {
        try {
          body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as KubeObject;
        } catch {
          throw new HttpError(400, 'the body of the request was in an unknown format');
        }
      } else throw new HttpError(405, `the server does not allow this method on the requested resource`);
      if (method === 'POST') {
        if (name !== undefined) throw new HttpError(405, 'the server does not allow this method on the requested resource');
        if (resource === 'namespaces' || namespace === undefined) throw new HttpError(405, 'the double does not create cluster-scoped objects over HTTP');
        verb = 'create';
        writeName = typeof body?.metadata?.name === 'string' ? body.metadata.name : '';
        before = this.rv;
        json(201, this.create(resource, namespace, body));
        this.writes.push({ verb, resource, namespace, name: writeName, changed: true, status: 201 });
        return;
      }
      if (name === undefined || namespace === undefined) throw new HttpError(405, 'the server does not allow this method on the requested resource');
      verb = 'update';
      before = this.rv;
      json(200, this.update(resource, namespace, name, body));
      this.writes.push({ verb, resource, namespace, name, changed: this.rv !== before, status: 200 });
    } catch (err) {
      const e = err instanceof HttpError ? err : new HttpError(500, `internal error in the double: ${String(err)}`);
      if (verb && r?.resource) this.writes.push({ verb, resource: r.resource, namespace: r.namespace, name: writeName, changed: false, status: e.code });
      fail(e);
    }
  }

  /** POST tokenreviews: the review echoed back with its status, as kube-apiserver answers (201). */
  private tokenReview(text: string): Record<string, unknown> {
    let review: { apiVersion?: string; kind?: string; spec?: { token?: unknown; audiences?: string[] } };
    try {
      review = JSON.parse(text) as typeof review;
    } catch {
      throw new HttpError(400, 'the body of the request was in an unknown format');
    }
    if (review.kind !== 'TokenReview' || typeof review.spec?.token !== 'string') throw new HttpError(400, 'spec.token: Required value');
    const t = this.reviews.get(review.spec.token);
    const wanted = review.spec.audiences?.length ? review.spec.audiences : ['https://kubernetes.default.svc.cluster.local'];
    const audiences = t ? t.audiences.filter((a) => wanted.includes(a)) : [];
    const status = !t
      ? { user: {}, error: '[invalid bearer token, square/go-jose: error in cryptographic primitive]' }
      : audiences.length === 0
        ? { user: {}, error: `[invalid bearer token, token audiences ${JSON.stringify(t.audiences)} is invalid for the target audiences ${JSON.stringify(wanted)}]` }
        : { authenticated: true, user: { username: t.username, uid: randomUUID(), groups: t.groups ?? ['system:serviceaccounts', 'system:authenticated'], extra: t.extra }, audiences };
    return { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', metadata: { creationTimestamp: null }, spec: review.spec, status };
  }

  private listBody(resource: Resource, namespace: string | undefined, query: Record<string, string>): Record<string, unknown> {
    const matches = this.selectors(query, resource);
    let items = [...this.objects.values()].filter((o) => this.kindOf(o) === resource && (namespace === undefined || o.metadata.namespace === namespace) && matches(o));
    items.sort((a, b) => `${a.metadata.namespace ?? ''}/${a.metadata.name}`.localeCompare(`${b.metadata.namespace ?? ''}/${b.metadata.name}`));
    const meta: Record<string, unknown> = { resourceVersion: String(this.rv) };
    if (query.continue) {
      let token: { after: string; rv: number };
      try {
        token = JSON.parse(Buffer.from(query.continue, 'base64url').toString('utf8')) as typeof token;
      } catch {
        throw new HttpError(400, 'continue key is not valid');
      }
      if (token.rv < this.compactedRv) throw new HttpError(410, 'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.', 'Expired');
      items = items.filter((o) => `${o.metadata.namespace ?? ''}/${o.metadata.name}` > token.after);
    }
    const limit = query.limit ? Number(query.limit) : 0;
    if (limit > 0 && items.length > limit) {
      items = items.slice(0, limit);
      const last = items.at(-1)!;
      meta.continue = Buffer.from(JSON.stringify({ after: `${last.metadata.namespace ?? ''}/${last.metadata.name}`, rv: this.rv })).toString('base64url');
    }
    const d = RESOURCES[resource];
    // core lists drop each item's apiVersion/kind; apiextensions keeps them on custom resources
    return { kind: `${d.kind}List`, apiVersion: d.apiVersion, metadata: meta, items: items.map((o) => (d.custom ? clone(o) : { ...clone(o), apiVersion: undefined, kind: undefined })) };
  }

  private selectors(query: Record<string, string>, resource: Resource): (o: KubeObject) => boolean {
    const labels = query.labelSelector ? parseLabelSelector(query.labelSelector) : () => true;
    const fields = query.fieldSelector ? parseFieldSelector(query.fieldSelector, resource) : () => true;
    return (o) => labels(o.metadata.labels ?? {}) && fields(o);
  }

  private startWatch(resource: Resource, namespace: string | undefined, query: Record<string, string>, res: ServerResponse): void {
    const matches = this.selectors(query, resource);
    const rvParam = query.resourceVersion;
    const from = rvParam === undefined || rvParam === '' || rvParam === '0' ? undefined : Number(rvParam);
    if (from !== undefined && !Number.isInteger(from)) throw new HttpError(400, `invalid resource version: ${rvParam}`);
    const tooOld = from !== undefined && from < this.compactedRv;
    const tooOldMessage = `too old resource version: ${rvParam} (${this.compactedRv})`;
    if (tooOld && this.goneAs === 'http') throw new HttpError(410, tooOldMessage, 'Expired');
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    const w: Watcher = { resource, namespace, matches, bookmarks: query.allowWatchBookmarks === 'true', res, closed: false };
    if (tooOld) {
      this.send(w, 'ERROR', statusObject(410, 'Expired', tooOldMessage));
      res.end();
      return;
    }
    this.watchers.add(w);
    res.on('close', () => this.closeWatcher(w));
    if (from === undefined) {
      for (const o of this.objects.values()) {
        if (this.kindOf(o) === resource && (namespace === undefined || o.metadata.namespace === namespace) && matches(o)) this.send(w, 'ADDED', o);
      }
    } else {
      for (const e of this.history) if (e.rv > from) this.deliver(w, e);
    }
    const t = Number(query.timeoutSeconds);
    if (t > 0) {
      const timer = setTimeout(() => {
        this.closeWatcher(w);
        res.end();
      }, t * 1000);
      timer.unref();
      res.on('close', () => clearTimeout(timer));
    }
  }
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).filter(([, x]) => x !== undefined).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([k, x]) => [k, sortKeys(x)]));
  return v;
}
