/**
 * Two deliberately simple evaluators, for tests and for the benchmark's
 * honesty line; neither is used to serve decisions.
 *
 * - `referenceEvaluate` interprets the validated policies directly, written
 *   independently of compile.ts (regular expressions built the way istiod
 *   builds them for Envoy, no index, no precompiled checks). Property tests
 *   check the engine against it on random policies and requests.
 * - `walkEvery` uses the engine's compiled rules but walks every policy of
 *   the mesh for every request (scope checked per policy, no index, no
 *   cache): the naive baseline the benchmark compares the index against.
 */
import { compilePolicy, firstMatchingRule, selects, type CompiledPolicy } from './compile.ts';
import { RequestContext } from './request-context.ts';
import type { CustomDecision, EngineOptions } from './engine.ts';
import { cidrContains, parseCidr, parseRequestIp } from './ip.ts';
import type { Action, AuthorizationPolicy, AuthzRequest, Condition, DecisionReason, DecisionValue, Operation, Rule, Source } from './model.ts';
import { normalizePath, splitPath } from './path.ts';
import { compileRequestPrincipal } from './compile.ts';
import { matchPattern } from './patterns.ts';
import { expandTrustDomainAliases, trustDomainList } from './trust-domain.ts';

export interface SimpleDecision {
  readonly decision: DecisionValue;
  readonly policy: string | null;
  readonly rule: number | null;
  readonly reason: DecisionReason;
}

const esc = (s: string): string => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

/** Istio's StringMatcher forms; `presentOk` for header-style `*` (present, maybe empty). */
function str(v: string, s: string | undefined, presentOk = false): boolean {
  if (s === undefined) return false;
  if (v === '*') return presentOk || s.length > 0;
  if (v.startsWith('*')) return s.endsWith(v.slice(1));
  if (v.endsWith('*')) return s.startsWith(v.slice(0, -1));
  return s === v;
}

function lower(s: string): string {
  return s.replace(/[A-Z]/g, (c) => c.toLowerCase());
}

interface Req {
  readonly uri?: string;
  readonly principal?: string;
  readonly http: boolean;
  readonly r: AuthzRequest;
  readonly path?: string | null;
  readonly query: string;
  /** The trust domain, then its aliases. */
  readonly trustDomains: readonly string[];
}

type Tri = boolean | 'http-only';

/** Principal values with the local trust domain's aliases spelled out (Istio's MigrateTrustDomain). */
function ali(v: readonly string[] | undefined, q: Req): readonly string[] | undefined {
  return v === undefined ? undefined : expandTrustDomainAliases(v, q.trustDomains);
}

function field(values: readonly string[] | undefined, notValues: readonly string[] | undefined, m: (v: string) => boolean): boolean {
  if (values && !values.some(m)) return false;
  if (notValues && notValues.some(m)) return false;
  return true;
}

function ipMatch(v: string, ip: string | undefined): boolean {
  if (ip === undefined) return false;
  const a = parseRequestIp(ip);
  const c = parseCidr(v);
  return !!a && !!c && cidrContains(c, a);
}

function saRegex(policyNs: string, v: string): RegExp {
  const i = v.indexOf('/');
  const [ns, sa] = i === -1 ? [policyNs, v] : [v.slice(0, i), v.slice(i + 1)];
  return new RegExp(`^spiffe://.+/ns/${esc(ns)}/(.+/|)sa/${esc(sa)}(/.+)?$`);
}

function tdMatch(v: string, uri: string | undefined): boolean {
  if (uri === undefined) return false;
  if (v === '*') return uri.startsWith('spiffe://');
  if (!v.includes('*')) return uri.startsWith(`spiffe://${v}/`);
  const [a, b] = v.split('*');
  return new RegExp(`^spiffe://${esc(a!)}[^/]*${esc(b!)}/.*$`).test(uri);
}

function nsMatch(v: string, uri: string | undefined): boolean {
  if (uri === undefined) return false;
  return new RegExp(`^.*/ns/${v.split('*').map(esc).join('.*')}/.*$`, 's').test(uri);
}

function reqPrincipal(v: string, q: Req): boolean {
  const a = q.r.request?.auth;
  if (a?.issuer === undefined || a.subject === undefined) return false;
  const c = compileRequestPrincipal(v);
  return matchPattern(c.iss, a.issuer) && matchPattern(c.sub, a.subject);
}

function claimAt(q: Req, path: readonly string[]): unknown {
  let v: unknown = q.r.request?.auth?.claims;
  if (v === undefined) return undefined;
  for (const p of path) {
    if (typeof v !== 'object' || v === null || Array.isArray(v) || !Object.hasOwn(v, p)) return undefined;
    v = (v as Record<string, unknown>)[p];
  }
  return v;
}

function listOrString(v: unknown, pattern: string): boolean {
  if (typeof v === 'string') return str(pattern, v);
  return Array.isArray(v) && v.some((x) => typeof x === 'string' && str(pattern, x));
}

function hostMatch(v: string, host: string | undefined): boolean {
  if (host === undefined) return false;
  const h = lower(host);
  const p = lower(v);
  const m = /^(.*):(\d{1,5})$/.exec(h);
  const noPort = m && (!m[1]!.includes(':') || (m[1]!.startsWith('[') && m[1]!.endsWith(']'))) ? m[1]! : h;
  return str(p, h, true) || str(p, noPort, true);
}

function pathMatch(v: string, path: string | null | undefined): boolean {
  if (path === undefined || path === null) return false;
  if (v.includes('{*}') || v.includes('{**}')) {
    const pchar = "[a-zA-Z0-9\\-._~%!$&'()+,;:@]";
    const segs = v.slice(1).split('/').map((s) => (s === '{*}' ? `${pchar}+` : s === '{**}' ? `(?:${pchar}|/)*` : esc(s)));
    return new RegExp(`^/${segs.join('/')}$`).test(path);
  }
  return str(v, path);
}

function headerValues(q: Req, name: string): readonly string[] | undefined {
  const h = q.r.request;
  const v = h?.headers[name];
  if (v) return v;
  if (name === ':authority' && h?.host !== undefined) return [h.host];
  if (name === ':method' && h?.method !== undefined) return [h.method];
  if (name === ':path' && q.path != null) return [q.path + q.query];
  return undefined;
}

function headerCond(c: Condition, q: Req, action: Action): boolean {
  const name = lower(c.key.slice('request.headers['.length, -1));
  const v = headerValues(q, name);
  if (v === undefined) return !c.values;
  const readings = v.length === 1 ? [v[0]!] : [v.join(','), ...v];
  const posOk = (s: string): boolean => !c.values || c.values.some((p) => str(p, s, true));
  const negOk = (s: string): boolean => !c.notValues || !c.notValues.some((p) => str(p, s, true));
  if (action === 'ALLOW') return readings.every((s) => posOk(s) && negOk(s));
  return readings.some(posOk) && readings.some(negOk);
}

function condition(c: Condition, q: Req, p: AuthorizationPolicy): Tri {
  const k = c.key;
  const f = (m: (v: string) => boolean): boolean => field(c.values, c.notValues, m);
  if (k.startsWith('request.') && !q.http) return 'http-only';
  if (k.startsWith('request.headers[')) return headerCond(c, q, p.action);
  if (k.startsWith('request.auth.claims[')) {
    const inner = k.slice('request.auth.claims'.length);
    const names = /^(\[[^[\]]+\])+$/.test(inner) ? [...inner.matchAll(/\[([^[\]]+)\]/g)].map((m) => m[1]!) : [inner.slice(1, -1)];
    const v = claimAt(q, names);
    return f((x) => listOrString(v, x));
  }
  if (k.startsWith('experimental.')) return p.action !== 'ALLOW';
  const r = q.r;
  switch (k) {
    case 'source.ip':
      return f((v) => ipMatch(v, r.source.ip));
    case 'remote.ip':
      return f((v) => ipMatch(v, r.source.remoteIp ?? r.source.ip));
    case 'source.namespace':
      return f((v) => nsMatch(v, q.uri));
    case 'source.principal':
      return field(ali(c.values, q), ali(c.notValues, q), (v) => str(v, q.principal));
    case 'source.serviceAccount':
      return f((v) => q.uri !== undefined && saRegex(p.namespace, v).test(q.uri));
    case 'source.trustDomain':
      return f((v) => tdMatch(v, q.uri));
    case 'request.auth.principal':
      return f((v) => reqPrincipal(v, q));
    case 'request.auth.audiences':
      return f((v) => listOrString(r.request?.auth?.audiences, v));
    case 'request.auth.presenter':
      return f((v) => str(v, r.request?.auth?.presenter));
    case 'destination.ip':
      return f((v) => ipMatch(v, r.destination.ip));
    case 'destination.port':
      return f((v) => r.destination.port !== undefined && Number(v) === r.destination.port);
    case 'connection.sni':
      return f((v) => str(v, r.connection.sni));
  }
  return p.action !== 'ALLOW';
}

function source(s: Source, q: Req, p: AuthorizationPolicy): Tri[] {
  const out: Tri[] = [];
  const add = (vals: readonly string[] | undefined, nots: readonly string[] | undefined, m: (v: string) => boolean, httpOnly = false): void => {
    if (!vals && !nots) return;
    out.push(httpOnly && !q.http ? 'http-only' : field(vals, nots, m));
  };
  add(ali(s.principals, q), ali(s.notPrincipals, q), (v) => str(v, q.principal));
  add(s.requestPrincipals, s.notRequestPrincipals, (v) => reqPrincipal(v, q), true);
  add(s.namespaces, s.notNamespaces, (v) => nsMatch(v, q.uri));
  add(s.serviceAccounts, s.notServiceAccounts, (v) => q.uri !== undefined && saRegex(p.namespace, v).test(q.uri));
  add(s.trustDomains, s.notTrustDomains, (v) => tdMatch(v, q.uri));
  add(s.ipBlocks, s.notIpBlocks, (v) => ipMatch(v, q.r.source.ip));
  add(s.remoteIpBlocks, s.notRemoteIpBlocks, (v) => ipMatch(v, q.r.source.remoteIp ?? q.r.source.ip));
  return out;
}

function operation(o: Operation, q: Req): Tri[] {
  const out: Tri[] = [];
  const h = q.r.request;
  const add = (vals: readonly string[] | undefined, nots: readonly string[] | undefined, m: (v: string) => boolean, httpOnly: boolean): void => {
    if (!vals && !nots) return;
    out.push(httpOnly && !q.http ? 'http-only' : field(vals, nots, m));
  };
  add(o.hosts, o.notHosts, (v) => hostMatch(v, h?.host), true);
  add(o.ports, o.notPorts, (v) => q.r.destination.port !== undefined && Number(v) === q.r.destination.port, false);
  add(o.methods, o.notMethods, (v) => str(v, h?.method, true), true);
  add(o.paths, o.notPaths, (v) => pathMatch(v, q.path), true);
  return out;
}

/** AND of parts; on TCP, an HTTP-only part makes an ALLOW rule unusable and is dropped otherwise. */
function all(parts: Tri[], action: Action): boolean | 'unusable' {
  let ok = true;
  for (const t of parts) {
    if (t === 'http-only') {
      if (action === 'ALLOW') return 'unusable';
      continue;
    }
    if (!t) ok = false;
  }
  return ok;
}

function ruleMatches(rule: Rule, q: Req, p: AuthorizationPolicy): boolean {
  const a = p.action;
  let unusable = false;
  const anyOf = (entries: Tri[][] | undefined): boolean => {
    if (!entries) return true;
    let hit = false;
    for (const e of entries) {
      const r = all(e, a);
      if (r === 'unusable') unusable = true;
      else if (r) hit = true;
    }
    return hit;
  };
  const f = anyOf(rule.from?.map((x) => source(x.source, q, p)));
  const t = anyOf(rule.to?.map((x) => operation(x.operation, q)));
  const w = all((rule.when ?? []).map((c) => condition(c, q, p)), a);
  if (w === 'unusable') unusable = true;
  if (unusable) return false;
  return f && t && w === true;
}

function inScope(p: AuthorizationPolicy, r: AuthzRequest, root: string): boolean {
  if (p.targetRef) return false;
  if (p.namespace !== r.workload.namespace && p.namespace !== root) return false;
  for (const [k, v] of Object.entries(p.selector ?? {})) if (r.workload.labels[k] !== v) return false;
  return true;
}

function firstRule(p: AuthorizationPolicy, q: Req): number {
  return p.rules.findIndex((rule) => ruleMatches(rule, q, p));
}

/** The interpreter: Istio's decision order over every policy, straight from the documents. */
export function referenceEvaluate(policies: readonly AuthorizationPolicy[], r: AuthzRequest, opts: EngineOptions & { customDecision?: CustomDecision } = {}): SimpleDecision {
  const root = opts.rootNamespace ?? 'istio-system';
  let path: string | null | undefined;
  let query = '';
  if (r.request?.path !== undefined) {
    const sp = splitPath(r.request.path);
    path = normalizePath(sp.path, opts.pathNormalization ?? 'base');
    query = sp.query;
  }
  const q: Req = { http: r.request !== undefined, r, path, query, trustDomains: trustDomainList(opts), ...(r.source.principal !== undefined ? { principal: r.source.principal, uri: `spiffe://${r.source.principal}` } : {}) };
  if (q.http && path === null) return { decision: 'DENY', policy: null, rule: null, reason: 'path-rejected' };
  const sorted = [...policies].filter((p) => inScope(p, r, root) && !p.dryRun).sort((a, b) => (a.namespace + '/' + a.name < b.namespace + '/' + b.name ? -1 : 1));
  const id = (p: AuthorizationPolicy): string => `${p.namespace}/${p.name}`;
  const customs = sorted.filter((p) => p.action === 'CUSTOM');
  const providers = new Set(customs.map((p) => p.provider));
  for (const p of customs) {
    const i = firstRule(p, q);
    if (i < 0) continue;
    if (providers.size > 1) return { decision: 'DENY', policy: id(p), rule: i, reason: 'custom-multiple-providers' };
    if ((opts.customDecision ?? 'deny') === 'deny') return { decision: 'DENY', policy: id(p), rule: i, reason: 'custom-denied' };
    break;
  }
  for (const p of sorted.filter((x) => x.action === 'DENY')) {
    const i = firstRule(p, q);
    if (i >= 0) return { decision: 'DENY', policy: id(p), rule: i, reason: 'deny-matched' };
  }
  const allows = sorted.filter((x) => x.action === 'ALLOW');
  if (allows.length === 0) return { decision: 'ALLOW', policy: null, rule: null, reason: 'no-allow-policies' };
  for (const p of allows) {
    const i = firstRule(p, q);
    if (i >= 0) return { decision: 'ALLOW', policy: id(p), rule: i, reason: 'allow-matched' };
  }
  return { decision: 'DENY', policy: null, rule: null, reason: 'no-allow-matched' };
}

/** Compiled rules, but every policy walked for every request (no index, no cache). */
export class WalkEveryPolicy {
  readonly #policies: readonly CompiledPolicy[];
  readonly #root: string;
  readonly #mode;
  constructor(policies: readonly AuthorizationPolicy[], opts: EngineOptions = {}) {
    this.#policies = policies.map((p) => compilePolicy(p, trustDomainList(opts))).sort((a, b) => (a.id < b.id ? -1 : 1));
    this.#root = opts.rootNamespace ?? 'istio-system';
    this.#mode = opts.pathNormalization ?? 'base';
  }
  evaluate(r: AuthzRequest, customDecision: CustomDecision = 'deny'): SimpleDecision {
    const c = new RequestContext(r, this.#mode);
    if (c.http && c.path === null) return { decision: 'DENY', policy: null, rule: null, reason: 'path-rejected' };
    const ns = r.workload.namespace;
    const scoped = (p: CompiledPolicy): boolean => !p.policy.targetRef && !p.policy.dryRun && (p.policy.namespace === ns || p.policy.namespace === this.#root) && selects(p, r.workload.labels);
    let hasAllow = false;
    let providers: Set<string | undefined> | undefined;
    for (const p of this.#policies) {
      if (p.policy.action !== 'CUSTOM' || !scoped(p)) continue;
      const i = firstMatchingRule(p, c);
      if (i < 0) continue;
      providers ??= new Set(this.#policies.filter((x) => x.policy.action === 'CUSTOM' && scoped(x)).map((x) => x.policy.provider));
      if (providers.size > 1) return { decision: 'DENY', policy: p.id, rule: i, reason: 'custom-multiple-providers' };
      if (customDecision === 'deny') return { decision: 'DENY', policy: p.id, rule: i, reason: 'custom-denied' };
      break;
    }
    for (const p of this.#policies) {
      if (p.policy.action !== 'DENY' || !scoped(p)) continue;
      const i = firstMatchingRule(p, c);
      if (i >= 0) return { decision: 'DENY', policy: p.id, rule: i, reason: 'deny-matched' };
    }
    for (const p of this.#policies) {
      if (p.policy.action !== 'ALLOW' || !scoped(p)) continue;
      hasAllow = true;
      const i = firstMatchingRule(p, c);
      if (i >= 0) return { decision: 'ALLOW', policy: p.id, rule: i, reason: 'allow-matched' };
    }
    return hasAllow ? { decision: 'DENY', policy: null, rule: null, reason: 'no-allow-matched' } : { decision: 'ALLOW', policy: null, rule: null, reason: 'no-allow-policies' };
  }
}
