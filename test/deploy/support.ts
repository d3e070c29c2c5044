/**
 * Shared by the deployment tests: reading manifests, building kustomizations,
 * rendering the Helm chart and validating objects against Kubernetes' schemas.
 *
 * - YAML is read as YAML 1.1, as the API server and Helm read it
 *   (sigs.k8s.io/yaml), so `defaultMode: 0444` is octal here too.
 * - Kustomize: there is no kustomize for JavaScript, so `kustomizeBuild`
 *   emulates the part of `kustomize build` these directories use, and refuses
 *   anything else: `resources` (files and directories), `components`, and
 *   `patches` given as JSON 6902 operation lists with a kind/name target.
 *   Objects come out as written (no name prefixes, labels or hashes are
 *   added, since the kustomizations ask for none).
 * - Helm: see helm-render/main.go for why the chart is rendered by Go's own
 *   text/template with a small set of Helm's functions instead of `helm`.
 * - Schemas: every object is validated twice against Kubernetes' OpenAPI
 *   definitions: by the `kubernetes-models` validators (types, required
 *   fields, formats, enums) and, because those accept unknown fields, by
 *   walking the attribute maps of @kubernetes/client-node's generated models
 *   so that a misspelled field is an error too.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as k8s from '@kubernetes/client-node';
import { ConfigMap, Namespace, Service, ServiceAccount } from 'kubernetes-models/v1';
import { DaemonSet, Deployment } from 'kubernetes-models/apps/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { ClusterRole, ClusterRoleBinding, Role, RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { parseAllDocuments } from 'yaml';
import { z } from 'zod';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const DEPLOY = join(ROOT, 'deploy');
export const CHART = join(DEPLOY, 'helm/castellan');

// Loose on purpose: these are parsed YAML documents being checked.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Obj = Record<string, any>;

/** All documents of a YAML stream (YAML 1.1), empty ones dropped; parse errors throw. */
export function parseDocs(text: string, where: string): Obj[] {
  const out: Obj[] = [];
  for (const doc of parseAllDocuments(text, { version: '1.1', uniqueKeys: true })) {
    if (doc.errors.length) throw new Error(`${where}: ${doc.errors[0]!.message}`);
    const v = doc.toJS({ maxAliasCount: 0 }) as unknown;
    if (v === null || v === undefined) continue;
    if (typeof v !== 'object' || Array.isArray(v)) throw new Error(`${where}: a document is not a mapping`);
    out.push(v as Obj);
  }
  return out;
}

export function readDocs(path: string): Obj[] {
  return parseDocs(readFileSync(path, 'utf8'), path);
}

/** apiVersion/kind/namespace/name: what must be unique in one build. */
export function idOf(o: Obj): string {
  return `${o.apiVersion}/${o.kind}/${o.metadata?.namespace ?? ''}/${o.metadata?.name}`;
}

/** Objects keyed by id; duplicate ids throw. */
export function byId(objs: Obj[]): Map<string, Obj> {
  const m = new Map<string, Obj>();
  for (const o of objs) {
    const id = idOf(o);
    if (m.has(id)) throw new Error(`duplicate object ${id}`);
    m.set(id, o);
  }
  return m;
}

// ---------------------------------------------------------------- kustomize

const KUSTOMIZATION_KEYS = new Set(['apiVersion', 'kind', 'resources', 'components', 'patches']);

function readKustomization(dir: string): Obj {
  const file = ['kustomization.yaml', 'kustomization.yml', 'Kustomization'].map((f) => join(dir, f)).find((f) => existsSync(f));
  if (!file) throw new Error(`${dir}: no kustomization.yaml`);
  const [k] = readDocs(file);
  if (!k) throw new Error(`${file}: empty`);
  for (const key of Object.keys(k)) {
    if (!KUSTOMIZATION_KEYS.has(key)) throw new Error(`${file}: "${key}" is not supported by this emulation of kustomize build; extend test/deploy/support.ts first`);
  }
  return k;
}

/** `kustomize build DIR`, for the subset described at the top of this file. */
export function kustomizeBuild(dir: string, expectKind: 'Kustomization' | 'Component' = 'Kustomization', acc: Obj[] = []): Obj[] {
  const k = readKustomization(dir);
  if (k.kind !== expectKind) throw new Error(`${dir}: expected kind ${expectKind}, found ${k.kind}`);
  const want = expectKind === 'Component' ? 'kustomize.config.k8s.io/v1alpha1' : 'kustomize.config.k8s.io/v1beta1';
  if (k.apiVersion !== want) throw new Error(`${dir}: apiVersion must be ${want}`);
  const own: Obj[] = [];
  for (const r of (k.resources ?? []) as string[]) {
    const p = resolve(dir, r);
    if (statSync(p).isDirectory()) own.push(...kustomizeBuild(p));
    else own.push(...readDocs(p));
  }
  // A component works on everything accumulated so far, its parent's included.
  const objs = expectKind === 'Component' ? acc : own;
  if (expectKind === 'Component') acc.push(...own);
  for (const c of (k.components ?? []) as string[]) kustomizeBuild(resolve(dir, c), 'Component', objs);
  for (const p of (k.patches ?? []) as Obj[]) {
    const keys = Object.keys(p).sort().join(',');
    if (keys !== 'path,target') throw new Error(`${dir}: only patches with path and target are supported (got ${keys})`);
    const tkeys = Object.keys(p.target as Obj).sort().join(',');
    if (tkeys !== 'kind,name') throw new Error(`${dir}: patch targets must name kind and name only (got ${tkeys})`);
    const targets = objs.filter((o) => o.kind === p.target.kind && o.metadata?.name === p.target.name);
    if (targets.length !== 1) throw new Error(`${dir}: patch target ${p.target.kind}/${p.target.name} matches ${targets.length} objects`);
    applyJsonPatch(targets[0]!, jsonPatchOps(resolve(dir, p.path as string)));
  }
  byId(objs); // refuses duplicates, as kustomize does
  return objs;
}

/** A JSON 6902 patch file: one YAML document holding a list of operations. */
function jsonPatchOps(path: string): Obj[] {
  const docs = parseAllDocuments(readFileSync(path, 'utf8'), { version: '1.1', uniqueKeys: true });
  if (docs.some((d) => d.errors.length)) throw new Error(`${path}: ${docs.find((d) => d.errors.length)!.errors[0]!.message}`);
  const all = docs.map((d) => d.toJS() as unknown);
  if (all.length !== 1 || !Array.isArray(all[0])) throw new Error(`${path}: expected one YAML list of JSON 6902 operations (strategic-merge patches are not emulated)`);
  return all[0] as Obj[];
}

function pointer(path: string): string[] {
  if (path === '') return [];
  if (!path.startsWith('/')) throw new Error(`bad JSON pointer ${path}`);
  return path.slice(1).split('/').map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

/** RFC 6902 add / remove / replace / test, in place. */
export function applyJsonPatch(doc: Obj, ops: Obj[]): void {
  for (const op of ops) {
    const parts = pointer(op.path as string);
    const last = parts.pop();
    if (last === undefined) throw new Error('patching the whole document is not supported');
    let parent: Obj = doc;
    for (const p of parts) {
      const next = Array.isArray(parent) ? parent[Number(p)] : parent[p];
      if (next === undefined || next === null || typeof next !== 'object') throw new Error(`${op.op} ${op.path}: ${p} does not exist`);
      parent = next as Obj;
    }
    const value = structuredClone(op.value) as unknown;
    if (Array.isArray(parent)) {
      const i = last === '-' ? parent.length : Number(last);
      if (!Number.isInteger(i) || i < 0 || i > parent.length - (op.op === 'add' ? 0 : 1)) throw new Error(`${op.op} ${op.path}: index out of range`);
      if (op.op === 'add') parent.splice(i, 0, value);
      else if (op.op === 'remove') parent.splice(i, 1);
      else if (op.op === 'replace') parent[i] = value;
      else if (op.op === 'test') {
        if (JSON.stringify(parent[i]) !== JSON.stringify(value)) throw new Error(`test ${op.path} failed`);
      } else throw new Error(`unsupported op ${op.op}`);
    } else {
      if (op.op !== 'add' && !(last in parent)) throw new Error(`${op.op} ${op.path}: does not exist`);
      if (op.op === 'add' || op.op === 'replace') parent[last] = value;
      else if (op.op === 'remove') delete parent[last];
      else if (op.op === 'test') {
        if (JSON.stringify(parent[last]) !== JSON.stringify(value)) throw new Error(`test ${op.path} failed`);
      } else throw new Error(`unsupported op ${op.op}`);
    }
  }
}

// --------------------------------------------------------------------- helm

let renderer: string | undefined;

/**
 * Builds test/deploy/helm-render (Go from Debian's golang-go) into the system
 * temp directory, once per version of its source; later runs reuse it.
 */
function helmRenderer(): string {
  if (renderer && existsSync(renderer)) return renderer;
  const src = fileURLToPath(new URL('./helm-render/main.go', import.meta.url));
  const hash = createHash('sha256').update(readFileSync(src)).digest('hex').slice(0, 16);
  const dir = join(tmpdir(), 'castellan-helm-render');
  const bin = join(dir, `helm-render-${hash}`);
  if (!existsSync(bin)) {
    mkdirSync(dir, { recursive: true });
    const gocache = process.env.GOCACHE ?? join(tmpdir(), 'castellan-gocache');
    mkdirSync(gocache, { recursive: true });
    // Built beside, then renamed: test files running in parallel may race here.
    const tmp = `${bin}.${process.pid}.tmp`;
    execFileSync('go', ['build', '-o', tmp, src], {
      env: { ...process.env, GO111MODULE: 'off', GOCACHE: gocache, GOPATH: join(dir, 'gopath'), GOFLAGS: '', GOTOOLCHAIN: 'local' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    renameSync(tmp, bin);
  }
  renderer = bin;
  return bin;
}

function isMap(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Helm's coalescing of user values onto the chart's: maps merge, anything else replaces, null deletes. */
export function coalesce(base: Obj, over: Obj): Obj {
  const out: Obj = structuredClone(base);
  for (const [k, v] of Object.entries(over)) {
    if (v === null) delete out[k];
    else if (isMap(v) && isMap(out[k])) out[k] = coalesce(out[k] as Obj, v);
    else out[k] = structuredClone(v);
  }
  return out;
}

export function chartValues(over: Obj = {}, chartDir = CHART): Obj {
  const [values] = readDocs(join(chartDir, 'values.yaml'));
  return coalesce(values ?? {}, over);
}

/** Rendered template files of the chart: file name -> text. */
export function renderChartFiles(
  over: Obj = {},
  { chartDir = CHART, release = { name: 'castellan', namespace: 'castellan-system' } } = {},
): Record<string, string> {
  const [meta] = readDocs(join(chartDir, 'Chart.yaml'));
  const chart: Obj = {};
  // Helm exposes Chart.yaml as .Chart with Go field names.
  const fieldNames: Record<string, string> = { apiVersion: 'APIVersion', appVersion: 'AppVersion', kubeVersion: 'KubeVersion' };
  for (const [k, v] of Object.entries(meta ?? {})) chart[fieldNames[k] ?? k[0]!.toUpperCase() + k.slice(1)] = v;
  const input = {
    chartDir,
    values: chartValues(over, chartDir),
    release: { Name: release.name, Namespace: release.namespace, Service: 'Helm', IsInstall: true, IsUpgrade: false, Revision: 1 },
    chart,
  };
  let out: string;
  try {
    out = execFileSync(helmRenderer(), [], { input: JSON.stringify(input), encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (e) {
    throw new Error(`chart did not render: ${(e as { stderr?: string }).stderr ?? (e as Error).message}`);
  }
  return JSON.parse(out) as Record<string, string>;
}

/** `helm template castellan deploy/helm/castellan -n castellan-system [--set ...]` as objects. */
export function renderChart(over: Obj = {}): Obj[] {
  const files = renderChartFiles(over);
  const objs: Obj[] = [];
  for (const [name, text] of Object.entries(files)) objs.push(...parseDocs(text, name));
  byId(objs);
  return objs;
}

// ------------------------------------------------------------------ schemas

interface Validatable {
  validate(): void;
}
type Model = new (data: never) => Validatable;

/** The kinds deploy/ uses. Another kind fails validation until it is added here. */
const MODELS: Record<string, Model> = {
  'v1/Namespace': Namespace as unknown as Model,
  'v1/ServiceAccount': ServiceAccount as unknown as Model,
  'v1/ConfigMap': ConfigMap as unknown as Model,
  'v1/Service': Service as unknown as Model,
  'apps/v1/Deployment': Deployment as unknown as Model,
  'apps/v1/DaemonSet': DaemonSet as unknown as Model,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget as unknown as Model,
  'rbac.authorization.k8s.io/v1/Role': Role as unknown as Model,
  'rbac.authorization.k8s.io/v1/RoleBinding': RoleBinding as unknown as Model,
  'rbac.authorization.k8s.io/v1/ClusterRole': ClusterRole as unknown as Model,
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': ClusterRoleBinding as unknown as Model,
};

interface Attr {
  baseName: string;
  type: string;
}
const models = k8s as unknown as Record<string, { getAttributeTypeMap?: () => Attr[] } | undefined>;

/** Unknown fields, found by walking client-node's generated model of each type. */
function unknownFields(v: unknown, type: string, path: string, out: string[]): void {
  if (v === null || v === undefined) return;
  const arr = /^Array<(.+)>$/.exec(type);
  if (arr) {
    if (Array.isArray(v)) v.forEach((x, i) => unknownFields(x, arr[1]!, `${path}[${i}]`, out));
    return;
  }
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) {
    if (isMap(v)) for (const [k, x] of Object.entries(v)) unknownFields(x, map[1]!, `${path}.${k}`, out);
    return;
  }
  const attrs = models[type]?.getAttributeTypeMap?.();
  if (!attrs || !isMap(v)) return;
  for (const [k, x] of Object.entries(v)) {
    const a = attrs.find((t) => t.baseName === k);
    if (!a) out.push(`${path}.${k}: unknown field (not in ${type})`);
    else unknownFields(x, a.type, `${path}.${k}`, out);
  }
}

/**
 * The Prometheus Operator's PrometheusRule (monitoring.coreos.com/v1), as its
 * CRD's OpenAPI schema has it for the fields deploy/ uses: no model of it
 * exists in kubernetes-models or client-node. Unknown fields are refused.
 */
const duration = z.string().regex(/^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$/, 'must be a Prometheus duration');
const stringMap = z.record(z.string(), z.string());
const PrometheusRule = z.strictObject({
  apiVersion: z.literal('monitoring.coreos.com/v1'),
  kind: z.literal('PrometheusRule'),
  metadata: z.strictObject({ name: z.string().min(1), namespace: z.string().min(1).optional(), labels: stringMap.optional(), annotations: stringMap.optional() }),
  spec: z.strictObject({
    groups: z.array(
      z.strictObject({
        name: z.string().min(1),
        interval: duration.optional(),
        rules: z.array(
          z
            .strictObject({ alert: z.string().min(1).optional(), record: z.string().min(1).optional(), expr: z.string().min(1), for: duration.optional(), labels: stringMap.optional(), annotations: stringMap.optional() })
            .refine((r) => (r.alert === undefined) !== (r.record === undefined), 'a rule has alert or record, not both'),
        ),
      }),
    ),
  }),
});

/** Problems of one object against the Kubernetes schemas; empty when valid. */
export function schemaProblems(o: Obj): string[] {
  const key = `${o.apiVersion}/${o.kind}`;
  if (key === 'monitoring.coreos.com/v1/PrometheusRule') {
    const r = PrometheusRule.safeParse(o);
    return r.success ? [] : r.error.issues.map((i) => `${idOf(o)}: ${i.path.join('.')}: ${i.message}`);
  }
  const M = MODELS[key];
  if (!M) return [`${key}: no schema registered in test/deploy/support.ts`];
  const problems: string[] = [];
  try {
    new M(structuredClone(o) as never).validate();
  } catch (e) {
    problems.push(`${idOf(o)}: ${(e as Error).message}`);
  }
  const type = `V1${o.kind as string}`;
  if (!models[type]?.getAttributeTypeMap) problems.push(`${key}: @kubernetes/client-node has no model ${type}`);
  unknownFields(o, type, idOf(o), problems);
  return problems;
}

/** YAML files under a directory, recursively, sorted. */
export function yamlFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...yamlFiles(p));
    else if (/\.ya?ml$/.test(e.name)) out.push(p);
  }
  return out.sort();
}

/** Every pod spec in a set of objects, with where it came from. */
export function podSpecs(objs: Obj[]): { id: string; spec: Obj; meta: Obj }[] {
  return objs
    .filter((o) => o.spec?.template?.spec)
    .map((o) => ({ id: idOf(o), spec: o.spec.template.spec as Obj, meta: (o.spec.template.metadata ?? {}) as Obj }));
}
