/**
 * Compiles validated policies into checks that run against a prepared
 * request. Each policy is compiled twice, for HTTP requests and for TCP
 * connections, because Istio treats HTTP-only fields differently on TCP
 * (pilot's authz model generator):
 *
 * - ALLOW: a rule that uses any HTTP-only field or key cannot match a TCP
 *   connection (the generator drops the whole rule, so the allow shrinks);
 * - DENY, AUDIT, CUSTOM: the HTTP-only fields are dropped and the rest of
 *   the rule still applies (the rule widens; a rule left with nothing
 *   matches every connection).
 *
 * The same fail-safe direction is used for conditions Castellan cannot
 * evaluate (`experimental.envoy.filters.*`) and for repeated headers: in an
 * ALLOW policy a condition must hold for every reading of the request, in
 * the other actions for at least one (security.md A2).
 */
import { cidrContains, parseCidr, type Cidr, type IpAddr } from './ip.ts';
import type { Action, AuthorizationPolicy, Condition, Operation, OperationField, RequestAuth, Rule, Source, SourceField } from './model.ts';
import {
  compileGlob, compilePathTemplate, compilePattern, compilePatternSet, containsPathTemplate, globMatch,
  Kind, matchPathTemplate, matchPattern, matchSet, type Glob, type PathTemplate, type PatternSet, type StringPattern,
} from './patterns.ts';
import type { RequestContext } from './request-context.ts';
import { CLAIMS_PREFIX, claimPath, EXPERIMENTAL_PREFIX, formatPath, HEADER_PREFIX, HTTP_ONLY_OPERATION, HTTP_ONLY_SOURCE, isHttpOnlyKey, type FieldPath } from './validate.ts';
import { DEFAULT_TRUST_DOMAIN, expandTrustDomainAliases } from './trust-domain.ts';

// ---------------------------------------------------------------------------
// Checks.

export interface Check {
  /** Field path in the policy, e.g. `spec.rules[0].from[0].source.principals`. */
  readonly path: string;
  test(c: RequestContext): boolean;
  /** Why `test` failed, in a sentence. */
  explain(c: RequestContext): string;
}

const q = (s: string): string => JSON.stringify(s.length > 200 ? s.slice(0, 200) + '…' : s);
const list = (v: readonly string[]): string => `[${v.map((x) => q(x)).join(', ')}]`;

interface FieldSpec<A, M> {
  readonly label: string;
  readonly attr: (c: RequestContext) => A | undefined;
  readonly compile: (v: string) => M;
  readonly match: (m: M, a: A) => boolean;
  readonly show: (a: A, c: RequestContext) => string;
}

class ValuesCheck<A, M> implements Check {
  readonly pos: readonly M[];
  readonly neg: readonly M[];
  readonly path: string;
  readonly spec: FieldSpec<A, M>;
  readonly values: readonly string[];
  readonly notValues: readonly string[];
  readonly posName: string;
  readonly negName: string;
  constructor(path: string, spec: FieldSpec<A, M>, values: readonly string[], notValues: readonly string[], posName: string, negName: string) {
    this.path = path;
    this.spec = spec;
    this.values = values;
    this.notValues = notValues;
    this.posName = posName;
    this.negName = negName;
    this.pos = values.map(spec.compile);
    this.neg = notValues.map(spec.compile);
  }
  test(c: RequestContext): boolean {
    const a = this.spec.attr(c);
    const pos = this.pos;
    if (pos.length > 0) {
      if (a === undefined) return false;
      let hit = false;
      for (let i = 0; i < pos.length; i++) if (this.spec.match(pos[i]!, a)) { hit = true; break; }
      if (!hit) return false;
    }
    const neg = this.neg;
    if (neg.length > 0 && a !== undefined) {
      for (let i = 0; i < neg.length; i++) if (this.spec.match(neg[i]!, a)) return false;
    }
    return true;
  }
  explain(c: RequestContext): string {
    const a = this.spec.attr(c);
    if (a === undefined) return `${this.spec.label} is absent, so ${this.posName} ${list(this.values)} cannot match`;
    const shown = this.spec.show(a, c);
    const hitNeg = this.notValues.find((_, i) => this.spec.match(this.neg[i]!, a));
    if (this.pos.length > 0 && !this.pos.some((m) => this.spec.match(m, a))) return `${this.spec.label} ${shown} matches none of ${this.posName} ${list(this.values)}`;
    return `${this.spec.label} ${shown} matches ${this.negName} ${q(hitNeg ?? '')}`;
  }
}

class ConstCheck implements Check {
  readonly path: string;
  readonly value: boolean;
  readonly why: string;
  constructor(path: string, value: boolean, why: string) {
    this.path = path;
    this.value = value;
    this.why = why;
  }
  test(): boolean {
    return this.value;
  }
  explain(): string {
    return this.why;
  }
}

/**
 * A header condition. A header sent several times can be read as its values
 * joined with "," (what Envoy matches) or as any single copy (what some
 * backends use). In ALLOW policies the condition must hold for every reading,
 * in DENY/AUDIT/CUSTOM policies for at least one (security.md A4).
 */
class HeaderCheck implements Check {
  readonly pos: PatternSet;
  readonly neg: PatternSet;
  readonly path: string;
  readonly name: string;
  readonly values: readonly string[];
  readonly notValues: readonly string[];
  readonly strict: boolean;
  constructor(path: string, name: string, values: readonly string[], notValues: readonly string[], strict: boolean) {
    this.path = path;
    this.name = name;
    this.values = values;
    this.notValues = notValues;
    this.strict = strict;
    this.pos = compilePatternSet(values, Kind.Present);
    this.neg = compilePatternSet(notValues, Kind.Present);
  }
  private readings(v: readonly string[]): readonly string[] {
    return v.length === 1 ? v : [v.join(','), ...v];
  }
  test(c: RequestContext): boolean {
    const v = c.header(this.name);
    const hasPos = this.values.length > 0;
    const hasNeg = this.notValues.length > 0;
    if (v === undefined) return !hasPos;
    const r = this.readings(v);
    if (this.strict) {
      for (const s of r) {
        if (hasPos && !matchSet(this.pos, s)) return false;
        if (hasNeg && matchSet(this.neg, s)) return false;
      }
      return true;
    }
    const posOk = !hasPos || r.some((s) => matchSet(this.pos, s));
    const negOk = !hasNeg || r.some((s) => !matchSet(this.neg, s));
    return posOk && negOk;
  }
  explain(c: RequestContext): string {
    const v = c.header(this.name);
    const label = `header ${q(this.name)}`;
    if (v === undefined) return `${label} is absent, so values ${list(this.values)} cannot match`;
    const shown = v.length === 1 ? q(v[0]!) : `${list(v)} (sent ${v.length} times; ${this.strict ? 'every reading must match in an ALLOW policy' : 'no reading matched'})`;
    if (this.values.length && !this.readings(v).every((s) => matchSet(this.pos, s))) return `${label} ${shown} does not match values ${list(this.values)}`;
    return `${label} ${shown} matches notValues ${list(this.notValues)}`;
  }
}

// Field specifications -------------------------------------------------------

const principalSpec: FieldSpec<string, StringPattern> = {
  label: 'source.principal',
  attr: (c) => c.principal,
  compile: (v) => compilePattern(v),
  match: matchPattern,
  show: (a) => q(a),
};

// Istio: every "*" of the value becomes ".*" inside the regex ".*\/ns\/<value>\/.*", matched on the URI SAN.
const namespaceSpec: FieldSpec<string, Glob> = {
  label: 'source namespace (from the principal)',
  attr: (c) => c.uri,
  compile: (v) => compileGlob(`*/ns/${v}/*`),
  match: globMatch,
  show: (a) => `of ${q(a)}`,
};

interface SaMatcher {
  readonly ns: string;
  readonly sa: string;
}

/**
 * Istio's `spiffe://.+/ns/<ns>/(.+/|)sa/<sa>(/.+)?` (full match), decided
 * with plain searches.
 */
function matchServiceAccount(m: SaMatcher, uri: string): boolean {
  if (!uri.startsWith('spiffe://')) return false;
  const needle = `/ns/${m.ns}/`;
  const at = uri.indexOf(needle, 'spiffe://'.length + 1);
  if (at === -1) return false;
  const from = at + needle.length;
  const saNeedle = `sa/${m.sa}`;
  for (let j = uri.indexOf(saNeedle, from); j !== -1; j = uri.indexOf(saNeedle, j + 1)) {
    if (j !== from && uri.charCodeAt(j - 1) !== 0x2f) continue;
    if (j !== from && j - 1 <= from) continue; // "(.+/)" needs one character before its "/"
    const end = j + saNeedle.length;
    if (end === uri.length || (uri.charCodeAt(end) === 0x2f && end + 1 < uri.length)) return true;
  }
  return false;
}

function serviceAccountSpec(policyNamespace: string): FieldSpec<string, SaMatcher> {
  return {
    label: 'source service account (from the principal)',
    attr: (c) => c.uri,
    compile: (v) => {
      const i = v.indexOf('/');
      return i === -1 ? { ns: policyNamespace, sa: v } : { ns: v.slice(0, i), sa: v.slice(i + 1) };
    },
    match: matchServiceAccount,
    show: (a) => `of ${q(a)}`,
  };
}

interface TdMatcher {
  readonly kind: 'any' | 'exact' | 'glob';
  readonly a: string;
  readonly b: string;
}

/**
 * Istio: `*` = URI starts with `spiffe://`; `td` = starts with
 * `spiffe://td/`; `a*b` (one star, at an end) = `spiffe://a[^/]*b/.*`.
 */
function matchTrustDomain(m: TdMatcher, uri: string): boolean {
  if (!uri.startsWith('spiffe://')) return false;
  if (m.kind === 'any') return true;
  if (m.kind === 'exact') return uri.startsWith(`spiffe://${m.a}/`);
  const rest = uri.slice('spiffe://'.length);
  const slash = rest.indexOf('/');
  if (slash === -1) return false;
  const td = rest.slice(0, slash);
  return td.length >= m.a.length + m.b.length && td.startsWith(m.a) && td.endsWith(m.b);
}

const trustDomainSpec: FieldSpec<string, TdMatcher> = {
  label: 'source trust domain (from the principal)',
  attr: (c) => c.uri,
  compile: (v) => {
    if (v === '*') return { kind: 'any', a: '', b: '' };
    const star = v.indexOf('*');
    if (star === -1) return { kind: 'exact', a: v, b: '' };
    return { kind: 'glob', a: v.slice(0, star), b: v.slice(star + 1) };
  },
  match: matchTrustDomain,
  show: (a) => `of ${q(a)}`,
};

function ipSpec(label: string, attr: (c: RequestContext) => IpAddr | undefined, raw: (c: RequestContext) => string | undefined): FieldSpec<IpAddr, Cidr> {
  return {
    label,
    attr,
    compile: (v) => parseCidr(v)!,
    match: cidrContains,
    show: (_a, c) => q(raw(c) ?? ''),
  };
}

const srcIpSpec = ipSpec('source.ip', (c) => c.srcIp, (c) => c.request.source.ip);
const remoteIpSpec = ipSpec('remote.ip', (c) => c.remoteIp, (c) => c.request.source.remoteIp ?? c.request.source.ip);
const dstIpSpec = ipSpec('destination.ip', (c) => c.dstIp, (c) => c.request.destination.ip);

const portSpec: FieldSpec<number, number> = {
  label: 'destination.port',
  attr: (c) => c.dstPort,
  compile: (v) => Number(v),
  match: (m, a) => m === a,
  show: (a) => String(a),
};

const sniSpec: FieldSpec<string, StringPattern> = {
  label: 'connection.sni',
  attr: (c) => c.sni,
  compile: (v) => compilePattern(v),
  match: matchPattern,
  show: (a) => q(a),
};

const methodSpec: FieldSpec<string, StringPattern> = {
  label: 'request method',
  attr: (c) => c.method,
  compile: (v) => compilePattern(v, Kind.Present),
  match: matchPattern,
  show: (a) => q(a),
};

interface HostPair {
  readonly full: string;
  readonly noPort: string;
}

const hostSpec: FieldSpec<HostPair, StringPattern> = {
  label: 'request host',
  attr: (c) => (c.authority === undefined ? undefined : { full: c.authority, noPort: c.authorityNoPort! }),
  compile: (v) => compilePattern(v, Kind.Present, true),
  // Case-insensitive; `host:port` also matches a pattern written without the port (security.md A4).
  match: (m, a) => matchPattern(m, a.full) || (a.noPort !== a.full && matchPattern(m, a.noPort)),
  show: (a) => q(a.full),
};

type PathMatcher = { readonly t: PathTemplate } | { readonly p: StringPattern };

const pathSpec: FieldSpec<string, PathMatcher> = {
  label: 'normalised path',
  attr: (c) => c.path ?? undefined,
  compile: (v) => (containsPathTemplate(v) ? { t: compilePathTemplate(v) } : { p: compilePattern(v) }),
  match: (m, a) => ('t' in m ? matchPathTemplate(m.t, a) : matchPattern(m.p, a)),
  show: (a) => q(a),
};

interface IssSub {
  readonly iss: StringPattern;
  readonly sub: StringPattern;
}

const ANY = compilePattern('*');

/**
 * `requestPrincipals` / `request.auth.principal`: Istio splits the value at
 * its last `/` into issuer and subject and matches the `iss` and `sub`
 * claims separately (`*` alone: both present; `*x` / `x*`: the wildcard
 * applies to the part on its side).
 */
export function compileRequestPrincipal(v: string): IssSub {
  const idx = v.lastIndexOf('/');
  const found = idx >= 0;
  const iss = found ? v.slice(0, idx) : v;
  const sub = found ? v.slice(idx + 1) : '';
  const exact = (s: string): StringPattern => ({ kind: Kind.Exact, lit: s, text: s });
  if (v === '*') return { iss: ANY, sub: ANY };
  if (v.startsWith('*')) {
    if (found) return { iss: iss === '*' ? ANY : { kind: Kind.Suffix, lit: iss.slice(1), text: iss }, sub: exact(sub) };
    return { iss: ANY, sub: { kind: Kind.Suffix, lit: v.slice(1), text: v } };
  }
  if (v.endsWith('*')) {
    if (found) return { iss: exact(iss), sub: sub === '*' ? ANY : { kind: Kind.Prefix, lit: sub.slice(0, -1), text: sub } };
    return { iss: { kind: Kind.Prefix, lit: v.slice(0, -1), text: v }, sub: ANY };
  }
  return { iss: exact(iss), sub: exact(sub) };
}

const requestPrincipalSpec: FieldSpec<RequestAuth, IssSub> = {
  label: 'request principal (JWT iss/sub)',
  attr: (c) => c.auth,
  compile: compileRequestPrincipal,
  match: (m, a) => a.issuer !== undefined && a.subject !== undefined && matchPattern(m.iss, a.issuer) && matchPattern(m.sub, a.subject),
  show: (a) => (a.issuer === undefined ? '(no iss/sub)' : q(`${a.issuer}/${a.subject ?? ''}`)),
};

/** A claim value: a string, or a list in which any string element may match. */
function matchClaim(m: StringPattern, v: unknown): boolean {
  if (typeof v === 'string') return matchPattern(m, v);
  if (Array.isArray(v)) {
    for (const x of v) if (typeof x === 'string' && matchPattern(m, x)) return true;
  }
  return false;
}

function showClaim(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 200 ? s.slice(0, 200) + '…' : s;
}

const audiencesSpec: FieldSpec<readonly string[], StringPattern> = {
  label: 'request audiences (JWT aud)',
  attr: (c) => c.auth?.audiences,
  compile: (v) => compilePattern(v),
  match: matchClaim,
  show: showClaim,
};

const presenterSpec: FieldSpec<string, StringPattern> = {
  label: 'request presenter (JWT azp)',
  attr: (c) => c.auth?.presenter,
  compile: (v) => compilePattern(v),
  match: matchPattern,
  show: (a) => q(a),
};

function claimSpec(path: readonly string[]): FieldSpec<unknown, StringPattern> {
  return {
    label: `JWT claim ${path.map((p) => `[${p}]`).join('')}`,
    attr: (c) => {
      if (!c.auth) return undefined;
      let v: unknown = c.auth.claims;
      for (const p of path) {
        if (typeof v !== 'object' || v === null || Array.isArray(v) || !Object.hasOwn(v, p)) return undefined;
        v = (v as Record<string, unknown>)[p];
      }
      return v;
    },
    compile: (v) => compilePattern(v),
    match: matchClaim,
    show: showClaim,
  };
}

// Compilation ----------------------------------------------------------------

const SOURCE_PAIRS: readonly (readonly [SourceField, SourceField])[] = [
  ['principals', 'notPrincipals'],
  ['requestPrincipals', 'notRequestPrincipals'],
  ['namespaces', 'notNamespaces'],
  ['serviceAccounts', 'notServiceAccounts'],
  ['trustDomains', 'notTrustDomains'],
  ['ipBlocks', 'notIpBlocks'],
  ['remoteIpBlocks', 'notRemoteIpBlocks'],
];

const OPERATION_PAIRS: readonly (readonly [OperationField, OperationField])[] = [
  ['hosts', 'notHosts'],
  ['ports', 'notPorts'],
  ['methods', 'notMethods'],
  ['paths', 'notPaths'],
];

/**
 * A field spec with its attribute and matcher types sealed in: all the rule
 * compiler needs of it is to make a check from a field's values. `field`
 * is the one place a FieldSpec<A, M> becomes one, so the switches below
 * need no casts.
 */
interface AnyField {
  check(path: string, values: readonly string[], notValues: readonly string[], posName: string, negName: string): Check;
}

function field<A, M>(spec: FieldSpec<A, M>): AnyField {
  return { check: (path, values, notValues, posName, negName) => new ValuesCheck(path, spec, values, notValues, posName, negName) };
}

function sourceSpec(f: SourceField, policy: AuthorizationPolicy): AnyField {
  switch (f) {
    case 'principals':
      return field(principalSpec);
    case 'requestPrincipals':
      return field(requestPrincipalSpec);
    case 'namespaces':
      return field(namespaceSpec);
    case 'serviceAccounts':
      return field(serviceAccountSpec(policy.namespace));
    case 'trustDomains':
      return field(trustDomainSpec);
    case 'ipBlocks':
      return field(srcIpSpec);
    case 'remoteIpBlocks':
      return field(remoteIpSpec);
    default:
      throw new Error(`not a positive source field: ${f}`);
  }
}

function operationSpec(f: OperationField): AnyField {
  switch (f) {
    case 'hosts':
      return field(hostSpec);
    case 'ports':
      return field(portSpec);
    case 'methods':
      return field(methodSpec);
    case 'paths':
      return field(pathSpec);
    default:
      throw new Error(`not a positive operation field: ${f}`);
  }
}

function conditionSpec(key: string, policy: AuthorizationPolicy): AnyField | undefined {
  switch (key) {
    case 'source.ip':
      return field(srcIpSpec);
    case 'remote.ip':
      return field(remoteIpSpec);
    case 'source.namespace':
      return field(namespaceSpec);
    case 'source.principal':
      return field(principalSpec);
    case 'source.serviceAccount':
      return field(serviceAccountSpec(policy.namespace));
    case 'source.trustDomain':
      return field(trustDomainSpec);
    case 'request.auth.principal':
      return field(requestPrincipalSpec);
    case 'request.auth.audiences':
      return field(audiencesSpec);
    case 'request.auth.presenter':
      return field(presenterSpec);
    case 'destination.ip':
      return field(dstIpSpec);
    case 'destination.port':
      return field(portSpec);
    case 'connection.sni':
      return field(sniSpec);
  }
  if (key.startsWith(CLAIMS_PREFIX)) return field(claimSpec(claimPath(key)));
  return undefined;
}

export interface CompiledRule {
  readonly index: number;
  /** Set when the rule can never match (an ALLOW rule with HTTP-only fields, on TCP). */
  readonly never?: string;
  /** null: any source. Each entry is an AND of checks; entries are ORed. */
  readonly from: readonly (readonly Check[])[] | null;
  readonly to: readonly (readonly Check[])[] | null;
  readonly when: readonly Check[];
}

export function ruleMatches(r: CompiledRule, c: RequestContext): boolean {
  if (r.never !== undefined) return false;
  if (r.from !== null && !anyEntry(r.from, c)) return false;
  if (r.to !== null && !anyEntry(r.to, c)) return false;
  const w = r.when;
  for (let i = 0; i < w.length; i++) if (!w[i]!.test(c)) return false;
  return true;
}

function anyEntry(entries: readonly (readonly Check[])[], c: RequestContext): boolean {
  outer: for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    for (let j = 0; j < e.length; j++) if (!e[j]!.test(c)) continue outer;
    return true;
  }
  return false;
}

/** The first reason a rule does not match, with its field path. */
export function explainRule(r: CompiledRule, c: RequestContext): string | undefined {
  if (r.never !== undefined) return r.never;
  const entryFailures = (entries: readonly (readonly Check[])[], what: string): string | undefined => {
    const fails: string[] = [];
    for (const e of entries) {
      const bad = e.find((ch) => !ch.test(c));
      if (!bad) return undefined;
      fails.push(`${bad.path}: ${bad.explain(c)}`);
    }
    return fails.length === 1 ? fails[0] : `no ${what} matched: ${fails.join('; ')}`;
  };
  if (r.from !== null) {
    const f = entryFailures(r.from, 'source');
    if (f) return f;
  }
  if (r.to !== null) {
    const f = entryFailures(r.to, 'operation');
    if (f) return f;
  }
  const bad = r.when.find((ch) => !ch.test(c));
  return bad ? `${bad.path}: ${bad.explain(c)}` : undefined;
}

function compileValues(
  path: FieldPath,
  spec: AnyField,
  values: readonly string[] | undefined,
  notValues: readonly string[] | undefined,
  posName: string,
  negName: string,
): Check {
  return spec.check(formatPath(path), values ?? [], notValues ?? [], posName, negName);
}

function compileCondition(cond: Condition, path: FieldPath, policy: AuthorizationPolicy, action: Action): Check {
  const p = formatPath(path);
  if (cond.key.startsWith(HEADER_PREFIX)) {
    const name = cond.key.slice(HEADER_PREFIX.length, -1).toLowerCase();
    return new HeaderCheck(p, name, cond.values ?? [], cond.notValues ?? [], action === 'ALLOW');
  }
  if (cond.key.startsWith(EXPERIMENTAL_PREFIX)) {
    return action === 'ALLOW'
      ? new ConstCheck(p, false, `${cond.key} cannot be evaluated by Castellan; in an ALLOW policy it never matches (fail safe)`)
      : new ConstCheck(p, true, `${cond.key} cannot be evaluated by Castellan; in a ${action} policy it always matches (fail safe)`);
  }
  const spec = conditionSpec(cond.key, policy);
  if (!spec) return new ConstCheck(p, action !== 'ALLOW', `unsupported key ${cond.key} (fail safe)`);
  return compileValues(path, spec, cond.values, cond.notValues, 'values', 'notValues');
}

/** Principal values with the trust domain's aliases spelled out (src/authz/trust-domain.ts). */
function aliased(v: readonly string[] | undefined, trustDomains: readonly string[]): readonly string[] | undefined {
  return v === undefined ? undefined : expandTrustDomainAliases(v, trustDomains);
}

function compileRule(rule: Rule, index: number, policy: AuthorizationPolicy, tcp: boolean, trustDomains: readonly string[]): CompiledRule {
  const action = policy.action;
  const base: FieldPath = ['spec', 'rules', index];
  const httpOnly: string[] = [];
  const dropOnTcp = (field: string): boolean => {
    if (!tcp) return false;
    httpOnly.push(field);
    return true;
  };
  const from = rule.from?.map((f, j) => {
    const checks: Check[] = [];
    for (const [pos, neg] of SOURCE_PAIRS) {
      const src: Source = f.source;
      if (!src[pos] && !src[neg]) continue;
      if (HTTP_ONLY_SOURCE.has(pos) && dropOnTcp(`from[${j}].source.${src[pos] ? pos : neg}`)) continue;
      const [vals, nots] = pos === 'principals' ? [aliased(src[pos], trustDomains), aliased(src[neg], trustDomains)] : [src[pos], src[neg]];
      checks.push(compileValues([...base, 'from', j, 'source', src[pos] ? pos : neg], sourceSpec(pos, policy), vals, nots, pos, neg));
    }
    return checks;
  });
  const to = rule.to?.map((t, j) => {
    const checks: Check[] = [];
    for (const [pos, neg] of OPERATION_PAIRS) {
      const op: Operation = t.operation;
      if (!op[pos] && !op[neg]) continue;
      if (HTTP_ONLY_OPERATION.has(pos) && dropOnTcp(`to[${j}].operation.${op[pos] ? pos : neg}`)) continue;
      checks.push(compileValues([...base, 'to', j, 'operation', op[pos] ? pos : neg], operationSpec(pos), op[pos], op[neg], pos, neg));
    }
    return checks;
  });
  const when: Check[] = [];
  rule.when?.forEach((c, j) => {
    if (isHttpOnlyKey(c.key) && dropOnTcp(`when[${j}] ${c.key}`)) return;
    const cond = c.key === 'source.principal' ? { ...c, values: aliased(c.values, trustDomains), notValues: aliased(c.notValues, trustDomains) } : c;
    when.push(compileCondition(cond, [...base, 'when', j], policy, action));
  });
  if (tcp && httpOnly.length > 0 && action === 'ALLOW') {
    return {
      index,
      never: `on a TCP connection this ALLOW rule cannot match: it uses HTTP-only fields (${httpOnly.join(', ')})`,
      from: null,
      to: null,
      when: [],
    };
  }
  return { index, from: from ?? null, to: to ?? null, when };
}

/** A policy ready to be evaluated. Immutable. */
export interface CompiledPolicy {
  readonly id: string;
  readonly policy: AuthorizationPolicy;
  readonly selector: readonly (readonly [string, string])[] | null;
  readonly http: readonly CompiledRule[];
  readonly tcp: readonly CompiledRule[];
}

/**
 * `trustDomains`: the mesh's trust domain and its aliases, trust domain first
 * (Istio's principal aliasing, src/authz/trust-domain.ts). Default: cluster.local alone.
 */
export function compilePolicy(policy: AuthorizationPolicy, trustDomains: readonly string[] = [DEFAULT_TRUST_DOMAIN]): CompiledPolicy {
  const sel = policy.selector ? Object.entries(policy.selector).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)) : null;
  return deepFreeze({
    id: `${policy.namespace}/${policy.name}`,
    policy,
    selector: sel && sel.length > 0 ? sel : null,
    http: policy.rules.map((r, i) => compileRule(r, i, policy, false, trustDomains)),
    tcp: policy.rules.map((r, i) => compileRule(r, i, policy, true, trustDomains)),
  });
}

export function selects(p: CompiledPolicy, labels: Readonly<Record<string, string>>): boolean {
  const s = p.selector;
  if (s === null) return true;
  for (let i = 0; i < s.length; i++) {
    const [k, v] = s[i]!;
    if (!Object.hasOwn(labels, k) || labels[k] !== v) return false;
  }
  return true;
}

/** The index of the first matching rule, or -1. */
export function firstMatchingRule(p: CompiledPolicy, c: RequestContext): number {
  const rules = c.http ? p.http : p.tcp;
  for (let i = 0; i < rules.length; i++) if (ruleMatches(rules[i]!, c)) return i;
  return -1;
}

function deepFreeze<T>(o: T): T {
  if (typeof o === 'object' && o !== null && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}

