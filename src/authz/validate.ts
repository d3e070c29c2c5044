/**
 * Validation of one AuthorizationPolicy document, with Istio's rules
 * (pilot's ValidateAuthorizationPolicy) plus the checks a policy author
 * wants before applying it. Every issue carries the field path it is about,
 * e.g. `spec.rules[0].from[1].source.ipBlocks[2]`.
 *
 * Errors make the document unusable (the CLI exits 2); warnings are Istio's
 * own warnings and the fragile patterns of its security best practices;
 * notes are informational.
 */
import { parseCidr } from './ip.ts';
import {
  ACTIONS, OPERATION_FIELDS, SOURCE_FIELDS, type Action, type AuthorizationPolicy, type Condition, type Operation,
  type OperationField, type Origin, type Rule, type Source, type SourceField,
} from './model.ts';
import { containsPathTemplate, MAX_PATTERN_LENGTH, MAX_VALUES_PER_FIELD } from './patterns.ts';

export type Severity = 'error' | 'warning' | 'note';
export type FieldPath = readonly (string | number)[];

export interface Issue {
  readonly severity: Severity;
  readonly path: FieldPath;
  readonly message: string;
}

export const API_VERSIONS = ['security.istio.io/v1', 'security.istio.io/v1beta1'] as const;

/** `spec.rules[0].from` from ['spec', 'rules', 0, 'from']. */
export function formatPath(path: FieldPath): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out === '' ? p : `.${p}`;
  return out === '' ? '(document)' : out;
}

/** HTTP-only fields and `when` keys: what a TCP connection does not have. */
export const HTTP_ONLY_SOURCE: ReadonlySet<SourceField> = new Set(['requestPrincipals', 'notRequestPrincipals']);
export const HTTP_ONLY_OPERATION: ReadonlySet<OperationField> = new Set(['hosts', 'notHosts', 'methods', 'notMethods', 'paths', 'notPaths']);
export function isHttpOnlyKey(key: string): boolean {
  return key.startsWith('request.');
}

const EXACT_KEYS = new Set([
  'source.ip', 'remote.ip', 'source.namespace', 'source.principal', 'source.serviceAccount', 'source.trustDomain',
  'request.auth.principal', 'request.auth.audiences', 'request.auth.presenter', 'destination.ip', 'destination.port',
  'connection.sni',
]);
export const HEADER_PREFIX = 'request.headers[';
export const CLAIMS_PREFIX = 'request.auth.claims[';
export const EXPERIMENTAL_PREFIX = 'experimental.envoy.filters.';

/** Istio's `a[b]` check: a `[` after the first character, a `]` last, a non-empty name. */
function validMapKey(key: string): boolean {
  const open = key.indexOf('[');
  return key.endsWith(']') && open > 0 && open < key.length - 2;
}

/**
 * Claim names of `request.auth.claims[a][b]` (nested) or `[a]`; like Istio,
 * brackets that do not nest cleanly make the whole inside one name.
 */
export function claimPath(key: string): string[] {
  const s = key.slice(CLAIMS_PREFIX.length - 1);
  const out: string[] = [];
  let i = 0;
  while (i < s.length) {
    if (s[i] !== '[') return [s.slice(1, -1)];
    const close = s.indexOf(']', i + 1);
    const nestedOpen = s.indexOf('[', i + 1);
    if (close === -1 || (nestedOpen !== -1 && nestedOpen < close)) return [s.slice(1, -1)];
    out.push(s.slice(i + 1, close));
    i = close + 1;
  }
  return out;
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return 'a string';
  return `${typeof v} ${String(v)}`;
}

class Ctx {
  readonly issues: Issue[] = [];
  error(path: FieldPath, message: string): void {
    this.issues.push({ severity: 'error', path, message });
  }
  warn(path: FieldPath, message: string): void {
    this.issues.push({ severity: 'warning', path, message });
  }
  note(path: FieldPath, message: string): void {
    this.issues.push({ severity: 'note', path, message });
  }
  get failed(): boolean {
    return this.issues.some((i) => i.severity === 'error');
  }
  /** Reports keys of `obj` outside `allowed`. */
  known(obj: Record<string, unknown>, allowed: readonly string[], path: FieldPath): void {
    for (const k of Object.keys(obj)) {
      if (!allowed.includes(k)) {
        const near = allowed.find((a) => a.toLowerCase() === k.toLowerCase() || a === k + 's' || a + 's' === k);
        this.error([...path, k], `unknown field "${k}"${near ? ` (did you mean "${near}"?)` : ''}; allowed: ${allowed.join(', ')}`);
      }
    }
  }
  /** A list of non-empty strings; null and [] are "not set". */
  strings(v: unknown, path: FieldPath): string[] | undefined {
    if (v === undefined || v === null) return undefined;
    if (!Array.isArray(v)) {
      this.error(path, `must be a list of strings, got ${describe(v)}`);
      return undefined;
    }
    if (v.length > MAX_VALUES_PER_FIELD) {
      this.error(path, `has ${v.length} values; at most ${MAX_VALUES_PER_FIELD} are accepted`);
      return undefined;
    }
    const out: string[] = [];
    v.forEach((x, i) => {
      if (typeof x !== 'string') {
        this.error([...path, i], `must be a string, got ${describe(x)}${typeof x === 'number' ? ` (quote it: "${x}")` : ''}`);
      } else if (x === '') {
        this.error([...path, i], 'empty value not allowed');
      } else if (x.length > MAX_PATTERN_LENGTH) {
        this.error([...path, i], `value is ${x.length} characters long; at most ${MAX_PATTERN_LENGTH} are accepted`);
      } else {
        out.push(x);
      }
    });
    return out.length ? out : undefined;
  }
}

function checkIps(ctx: Ctx, values: readonly string[] | undefined, path: FieldPath): void {
  values?.forEach((v, i) => {
    if (!parseCidr(v)) ctx.error([...path, i], v.includes('/') ? `bad CIDR range "${v}"` : `bad IP address "${v}"`);
  });
}

function checkPorts(ctx: Ctx, values: readonly string[] | undefined, path: FieldPath): void {
  values?.forEach((v, i) => {
    if (!/^\d{1,10}$/.test(v) || Number(v) > 65535) ctx.error([...path, i], `bad port "${v}": must be a number from 0 to 65535`);
  });
}

function checkWildcards(ctx: Ctx, values: readonly string[] | undefined, path: FieldPath, what: string): void {
  values?.forEach((v, i) => {
    const n = v.split('*').length - 1;
    if (n > 1) ctx.error([...path, i], `at most one wildcard is allowed in ${what}, found "${v}"`);
    else if (n === 1 && v !== '*' && !v.startsWith('*') && !v.endsWith('*')) ctx.error([...path, i], `the wildcard may only be at the start or the end in ${what}, found "${v}"`);
  });
}

function checkTrustDomains(ctx: Ctx, values: readonly string[] | undefined, path: FieldPath): void {
  checkWildcards(ctx, values, path, 'trust domains');
  values?.forEach((v, i) => {
    if (v.includes('/')) ctx.error([...path, i], `a trust domain must not contain "/", found "${v}"`);
  });
}

function checkServiceAccounts(ctx: Ctx, values: readonly string[] | undefined, path: FieldPath): void {
  if (!values) return;
  if (values.length > 16) ctx.error(path, `may not have more than 16 values (has ${values.length})`);
  values.forEach((v, i) => {
    const p = [...path, i];
    if (v.includes('*')) ctx.error(p, `wildcards are not allowed in service accounts, found "${v}"`);
    else if (v.length > 320) ctx.error(p, 'a service account may not exceed 320 characters');
    else {
      const slashes = v.split('/').length - 1;
      const [ns, sa] = v.split('/');
      if (slashes > 1 || (slashes === 1 && (!ns || !sa))) ctx.error(p, `expected "<serviceAccount>" or "<namespace>/<serviceAccount>", found "${v}"`);
    }
  });
}

/** Never-matching or surprising value forms that Istio accepts silently. */
function lintLiteralStars(ctx: Ctx, values: readonly string[] | undefined, path: FieldPath): void {
  values?.forEach((v, i) => {
    if (v.length > 1 && v.slice(1, -1).includes('*')) {
      ctx.warn([...path, i], `"*" inside "${v}" is a literal character: only a leading or trailing "*" is a wildcard`);
    }
  });
}

const LITERAL = /^[a-zA-Z0-9\-._~%!$&'()+,;:@=]+$/;

function checkPathTemplates(ctx: Ctx, values: readonly string[] | undefined, path: FieldPath): void {
  values?.forEach((v, i) => {
    const p = [...path, i];
    const template = containsPathTemplate(v);
    if (template && !v.startsWith('/')) {
      ctx.error(p, `invalid path template "${v}": it must start with "/"`);
      return;
    }
    let sawAny = false;
    for (const seg of v.replace(/^\/+|\/+$/g, '').split('/')) {
      if ((seg === '{*}' || seg === '{**}') && sawAny) {
        ctx.error(p, `invalid path template "${v}": {**} must be the last operator`);
        return;
      }
      if (seg === '{*}') continue;
      if (seg === '{**}') {
        sawAny = true;
        continue;
      }
      if (/[{}]/.test(seg)) {
        ctx.error(p, `invalid path "${v}": "{" or "}" outside a {*} or {**} operator (an operator must be a whole segment)`);
        return;
      }
      if (template && seg !== '' && !LITERAL.test(seg)) {
        ctx.error(p, `invalid path template "${v}": segment "${seg}" has characters a template may not contain (such as "*")`);
        return;
      }
    }
  });
}

function validateSource(ctx: Ctx, raw: Record<string, unknown>, path: FieldPath, action: Action): Source | undefined {
  ctx.known(raw, SOURCE_FIELDS, path);
  const src: Partial<Record<SourceField, string[]>> = {};
  for (const f of SOURCE_FIELDS) {
    const v = ctx.strings(raw[f], [...path, f]);
    if (v) src[f] = v;
  }
  if (Object.keys(src).length === 0) {
    ctx.error(path, 'a source must not be empty: set at least one field (a missing "from" already means any source)');
    return undefined;
  }
  for (const f of ['ipBlocks', 'notIpBlocks', 'remoteIpBlocks', 'notRemoteIpBlocks'] as const) checkIps(ctx, src[f], [...path, f]);
  checkServiceAccounts(ctx, src.serviceAccounts, [...path, 'serviceAccounts']);
  checkServiceAccounts(ctx, src.notServiceAccounts, [...path, 'notServiceAccounts']);
  checkTrustDomains(ctx, src.trustDomains, [...path, 'trustDomains']);
  checkTrustDomains(ctx, src.notTrustDomains, [...path, 'notTrustDomains']);
  if ((src.serviceAccounts || src.notServiceAccounts) && (src.principals || src.notPrincipals || src.namespaces || src.notNamespaces)) {
    ctx.error(path, 'serviceAccounts (or notServiceAccounts) cannot be set together with principals, notPrincipals, namespaces or notNamespaces');
  }
  if (action === 'CUSTOM') {
    for (const f of ['namespaces', 'notNamespaces', 'serviceAccounts', 'notServiceAccounts', 'trustDomains', 'notTrustDomains', 'principals', 'notPrincipals', 'requestPrincipals', 'notRequestPrincipals'] as const) {
      if (src[f]) ctx.error([...path, f], `${f} is not supported with the CUSTOM action`);
    }
  }
  for (const f of ['principals', 'notPrincipals'] as const) {
    src[f]?.forEach((v, i) => {
      if (v.startsWith('spiffe://')) ctx.warn([...path, f, i], `"${v}" never matches: principals are written without "spiffe://" (e.g. "cluster.local/ns/default/sa/sleep")`);
    });
    lintLiteralStars(ctx, src[f], [...path, f]);
  }
  for (const f of ['requestPrincipals', 'notRequestPrincipals'] as const) {
    src[f]?.forEach((v, i) => {
      const idx = v.lastIndexOf('/');
      if (v !== '*' && idx > 0 && /[:/]$/.test(v.slice(0, idx)) && !v.startsWith('*')) {
        ctx.warn([...path, f, i], `"${v}" is split at its last "/" into issuer "${v.slice(0, idx)}" and subject "${v.slice(idx + 1)}" (Istio matches them separately): this is probably not what you meant`);
      }
    });
    lintLiteralStars(ctx, src[f], [...path, f]);
  }
  for (const f of ['namespaces', 'notNamespaces'] as const) {
    src[f]?.forEach((v, i) => {
      if (v.length > 1 && v.slice(1, -1).includes('*')) ctx.note([...path, f, i], `every "*" in a namespace value matches any characters (Istio builds a regular expression), so "${v}" is a glob`);
    });
  }
  return src;
}

function validateOperation(ctx: Ctx, raw: Record<string, unknown>, path: FieldPath): Operation | undefined {
  ctx.known(raw, OPERATION_FIELDS, path);
  const op: Partial<Record<OperationField, string[]>> = {};
  for (const f of OPERATION_FIELDS) {
    const v = ctx.strings(raw[f], [...path, f]);
    if (v) op[f] = v;
  }
  if (Object.keys(op).length === 0) {
    ctx.error(path, 'an operation must not be empty: set at least one field (a missing "to" already means any operation)');
    return undefined;
  }
  checkPorts(ctx, op.ports, [...path, 'ports']);
  checkPorts(ctx, op.notPorts, [...path, 'notPorts']);
  checkPathTemplates(ctx, op.paths, [...path, 'paths']);
  checkPathTemplates(ctx, op.notPaths, [...path, 'notPaths']);
  for (const f of ['hosts', 'notHosts', 'methods', 'notMethods', 'paths', 'notPaths'] as const) {
    lintLiteralStars(ctx, f === 'paths' || f === 'notPaths' ? op[f]?.filter((v) => !containsPathTemplate(v)) : op[f], [...path, f]);
  }
  return op;
}

function validateCondition(ctx: Ctx, raw: unknown, path: FieldPath, action: Action): Condition | undefined {
  if (!isObj(raw)) {
    ctx.error(path, `a condition must be a mapping with key, values and/or notValues, got ${describe(raw)}`);
    return undefined;
  }
  ctx.known(raw, ['key', 'values', 'notValues'], path);
  const key = raw.key;
  if (typeof key !== 'string' || key === '') {
    ctx.error([...path, 'key'], key === undefined || key === '' ? '"key" must not be empty' : `"key" must be a string, got ${describe(key)}`);
    return undefined;
  }
  const values = ctx.strings(raw.values, [...path, 'values']);
  const notValues = ctx.strings(raw.notValues, [...path, 'notValues']);
  const unset = (v: unknown): boolean => v === undefined || v === null || (Array.isArray(v) && v.length === 0);
  if (unset(raw.values) && unset(raw.notValues)) {
    ctx.error(path, `at least one of "values" or "notValues" must be set for key ${key}`);
    return undefined;
  }
  if (!values && !notValues) return undefined; // already reported
  const kp = [...path, 'key'];
  const each = (check: (vals: readonly string[], p: FieldPath) => void): void => {
    if (values) check(values, [...path, 'values']);
    if (notValues) check(notValues, [...path, 'notValues']);
  };
  if (EXACT_KEYS.has(key)) {
    if (key === 'source.ip' || key === 'remote.ip' || key === 'destination.ip') each((v, p) => checkIps(ctx, v, p));
    if (key === 'destination.port') each((v, p) => checkPorts(ctx, v, p));
    if (key === 'source.serviceAccount') each((v, p) => checkServiceAccounts(ctx, v, p));
    if (key === 'source.trustDomain') each((v, p) => checkWildcards(ctx, v, p, 'trust domains'));
  } else if (key.startsWith('request.headers')) {
    if (!key.startsWith(HEADER_PREFIX) || !validMapKey(key) || key.indexOf(']') !== key.length - 1) ctx.error(kp, `bad key "${key}": expected request.headers[<header-name>]`);
  } else if (key.startsWith('request.auth.claims')) {
    if (!key.startsWith(CLAIMS_PREFIX) || !validMapKey(key)) ctx.error(kp, `bad key "${key}": expected request.auth.claims[<claim>] or request.auth.claims[<claim>][<nested>]`);
    else if (claimPath(key).some((c) => c === '')) ctx.error(kp, `bad key "${key}": empty claim name`);
  } else if (key.startsWith(EXPERIMENTAL_PREFIX)) {
    if (!validMapKey(key)) ctx.error(kp, `bad key "${key}": expected ${EXPERIMENTAL_PREFIX}<filter>[<key>]`);
    else ctx.warn(kp, `"${key}" reads Envoy filter metadata, which Castellan cannot see: the condition is treated as not matching in ALLOW policies and as matching in DENY, AUDIT and CUSTOM policies (fail safe)`);
  } else if (key === 'destination.namespace') {
    ctx.error(kp, `unknown key "${key}": it is replaced by the policy's metadata.namespace`);
  } else if (key.startsWith('destination.labels')) {
    ctx.error(kp, `unknown key "${key}": it is replaced by the workload selector`);
  } else if (key === 'destination.name' || key === 'destination.user') {
    ctx.error(kp, `unknown key "${key}": deprecated, only supported by the v1alpha1 API`);
  } else {
    ctx.error(kp, `unknown key "${key}"; supported: ${[...EXACT_KEYS].join(', ')}, request.headers[<name>], request.auth.claims[<name>], ${EXPERIMENTAL_PREFIX}<filter>[<key>]`);
  }
  if (action === 'CUSTOM' && (key === 'source.namespace' || key === 'source.serviceAccount' || key === 'source.trustDomain' || key === 'source.principal' || key.startsWith('request.auth.'))) {
    ctx.error(kp, `${key} is not supported with the CUSTOM action`);
  }
  return { key, ...(values ? { values } : {}), ...(notValues ? { notValues } : {}) };
}

function validateRule(ctx: Ctx, raw: unknown, path: FieldPath, action: Action): Rule | undefined {
  if (raw === null || raw === undefined) {
    ctx.error(path, 'a rule must not be null (use {} for a rule that matches everything)');
    return undefined;
  }
  if (!isObj(raw)) {
    ctx.error(path, `a rule must be a mapping with from, to and/or when, got ${describe(raw)}`);
    return undefined;
  }
  ctx.known(raw, ['from', 'to', 'when'], path);
  const rule: { from?: { source: Source }[]; to?: { operation: Operation }[]; when?: Condition[] } = {};
  if (raw.from !== undefined && raw.from !== null) {
    const fp = [...path, 'from'];
    if (!Array.isArray(raw.from)) ctx.error(fp, `must be a list of {source: ...}, got ${describe(raw.from)}`);
    else if (raw.from.length === 0) ctx.error(fp, '"from" must not be empty (omit it to match any source)');
    else {
      rule.from = [];
      raw.from.forEach((f: unknown, j) => {
        const p = [...fp, j];
        if (!isObj(f)) return ctx.error(p, `must be a mapping {source: ...}, got ${describe(f)}`);
        ctx.known(f, ['source'], p);
        if (!isObj(f.source)) return ctx.error([...p, 'source'], f.source == null ? '"source" must be set' : `"source" must be a mapping, got ${describe(f.source)}`);
        const s = validateSource(ctx, f.source, [...p, 'source'], action);
        if (s) rule.from!.push({ source: s });
      });
    }
  }
  if (raw.to !== undefined && raw.to !== null) {
    const tp = [...path, 'to'];
    if (!Array.isArray(raw.to)) ctx.error(tp, `must be a list of {operation: ...}, got ${describe(raw.to)}`);
    else if (raw.to.length === 0) ctx.error(tp, '"to" must not be empty (omit it to match any operation)');
    else {
      rule.to = [];
      raw.to.forEach((t: unknown, j) => {
        const p = [...tp, j];
        if (!isObj(t)) return ctx.error(p, `must be a mapping {operation: ...}, got ${describe(t)}`);
        ctx.known(t, ['operation'], p);
        if (!isObj(t.operation)) return ctx.error([...p, 'operation'], t.operation == null ? '"operation" must be set' : `"operation" must be a mapping, got ${describe(t.operation)}`);
        const o = validateOperation(ctx, t.operation, [...p, 'operation']);
        if (o) rule.to!.push({ operation: o });
      });
    }
  }
  if (raw.when !== undefined && raw.when !== null) {
    const wp = [...path, 'when'];
    if (!Array.isArray(raw.when)) ctx.error(wp, `must be a list of conditions, got ${describe(raw.when)}`);
    else if (raw.when.length > 0) {
      rule.when = [];
      raw.when.forEach((c: unknown, j) => {
        const v = validateCondition(ctx, c, [...wp, j], action);
        if (v) rule.when!.push(v);
      });
    }
  }
  return rule;
}

/** Warnings about how a rule behaves on TCP and under path normalisation. */
function lintRule(ctx: Ctx, rule: Rule, path: FieldPath, action: Action): void {
  const httpFields = new Set<string>();
  let fromAnyOnTcp = rule.from === undefined;
  let tcpInFrom = false;
  rule.from?.forEach((f) => {
    const keys = Object.keys(f.source) as SourceField[];
    keys.filter((k) => HTTP_ONLY_SOURCE.has(k)).forEach((k) => httpFields.add(`from.source.${k}`));
    if (keys.every((k) => HTTP_ONLY_SOURCE.has(k))) fromAnyOnTcp = true;
    else tcpInFrom = true;
  });
  let toAnyOnTcp = rule.to === undefined;
  let tcpInTo = false;
  rule.to?.forEach((t) => {
    const keys = Object.keys(t.operation) as OperationField[];
    keys.filter((k) => HTTP_ONLY_OPERATION.has(k)).forEach((k) => httpFields.add(`to.operation.${k}`));
    if (keys.every((k) => HTTP_ONLY_OPERATION.has(k))) toAnyOnTcp = true;
    if (t.operation.ports || t.operation.notPorts) tcpInTo = true;
  });
  rule.when?.forEach((c) => {
    if (isHttpOnlyKey(c.key)) httpFields.add(`when ${c.key}`);
  });
  const whenAnyOnTcp = (rule.when ?? []).every((c) => isHttpOnlyKey(c.key));
  if ((action === 'DENY' || action === 'CUSTOM') && httpFields.size > 0) {
    // Istio's own warning, plus a rule left with nothing at all on TCP.
    const fromExists = rule.from !== undefined;
    const toExists = rule.to !== undefined;
    const istio = (fromExists && !toExists && !tcpInFrom) || (toExists && !tcpInTo);
    const matchAll = fromAnyOnTcp && toAnyOnTcp && whenAnyOnTcp;
    const verb = action === 'DENY' ? 'denies' : 'sends to the provider';
    const fields = [...httpFields].join(', ');
    if (matchAll) {
      ctx.warn(path, `this ${action} rule ${verb} ALL TCP traffic to the workloads it selects: on TCP connections its HTTP-only fields (${fields}) are ignored and nothing else is left; specify ports explicitly`);
    } else if (istio) {
      ctx.warn(path, `on TCP connections this ${action} rule ignores its HTTP-only fields (${fields}) and ${verb} every TCP connection its other fields match; specify ports explicitly`);
    }
  }
  rule.to?.forEach((t, j) => {
    if (action === 'ALLOW' && t.operation.notPaths) {
      ctx.warn([...path, 'to', j, 'operation', 'notPaths'], 'ALLOW with notPaths is fragile: a path spelled differently (//x, /x/, %2F, ;params, case) that the backend treats as the excluded path is allowed; prefer ALLOW with paths');
    }
    if (action === 'DENY' && t.operation.paths) {
      ctx.warn([...path, 'to', j, 'operation', 'paths'], 'DENY with paths is fragile: a path spelled differently (//x, %2F, ;params, case) that the backend treats as the denied path is not denied; prefer DENY with notPaths, or ALLOW with paths, and check --path-normalization');
    }
  });
}

export interface ValidatedDocument {
  readonly policy?: AuthorizationPolicy;
  readonly issues: readonly Issue[];
}

/** metadata: name, namespace (default "default") and the istio.io/dry-run annotation. */
function validateMetadata(ctx: Ctx, metadata: unknown): { name: string; namespace: string; dryRun: boolean } {
  const out = { name: '', namespace: 'default', dryRun: false };
  if (!isObj(metadata)) {
    ctx.error(['metadata'], metadata === undefined ? 'metadata.name is required' : `metadata must be a mapping, got ${describe(metadata)}`);
    return out;
  }
  const md = metadata;
  if (typeof md.name !== 'string' || md.name === '') ctx.error(['metadata', 'name'], 'metadata.name is required (a non-empty string)');
  else if (md.name.length > 253 || !/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(md.name)) ctx.error(['metadata', 'name'], `metadata.name "${md.name.slice(0, 64)}" is not a valid Kubernetes name (lowercase letters, digits, "-" and ".")`);
  else out.name = md.name;
  if (md.namespace === undefined || md.namespace === null) {
    ctx.note(['metadata', 'namespace'], 'no metadata.namespace: assuming "default" (as kubectl would with the default context)');
  } else if (typeof md.namespace !== 'string' || !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(md.namespace) || md.namespace.length > 63) {
    ctx.error(['metadata', 'namespace'], `metadata.namespace must be a DNS-1123 label, got ${JSON.stringify(md.namespace)}`);
  } else out.namespace = md.namespace;
  if (md.annotations !== undefined && md.annotations !== null) {
    if (!isObj(md.annotations)) ctx.error(['metadata', 'annotations'], 'annotations must be a mapping of strings');
    else {
      const dr = md.annotations['istio.io/dry-run'];
      if (dr !== undefined) {
        if (dr === 'true' || dr === true) out.dryRun = true;
        else if (dr !== 'false' && dr !== false) ctx.error(['metadata', 'annotations', 'istio.io/dry-run'], `must be "true" or "false", got ${JSON.stringify(dr)}`);
      }
    }
  }
  return out;
}

/** spec.action; default ALLOW. */
function validateAction(ctx: Ctx, raw: unknown): Action {
  if (raw === undefined || raw === null) return 'ALLOW';
  if (typeof raw === 'string' && (ACTIONS as readonly string[]).includes(raw)) return raw as Action;
  ctx.error(['spec', 'action'], `action must be one of ${ACTIONS.join(', ')}, got ${JSON.stringify(raw)}`);
  return 'ALLOW';
}

/** spec.selector.matchLabels: exact labels only. */
function validateSelector(ctx: Ctx, raw: unknown): Record<string, string> | undefined {
  if (raw === undefined || raw === null) return undefined;
  const sp = ['spec', 'selector'];
  if (!isObj(raw)) {
    ctx.error(sp, `selector must be a mapping {matchLabels: ...}, got ${describe(raw)}`);
    return undefined;
  }
  ctx.known(raw, ['matchLabels'], sp);
  const ml = raw.matchLabels ?? {};
  const selector: Record<string, string> = {};
  if (!isObj(ml)) {
    ctx.error([...sp, 'matchLabels'], `matchLabels must be a mapping of strings, got ${describe(ml)}`);
    return selector;
  }
  for (const [k, v] of Object.entries(ml)) {
    const lp = [...sp, 'matchLabels', k];
    if (typeof v !== 'string') ctx.error(lp, `label values must be strings, got ${describe(v)}`);
    else if (k === '') ctx.error(lp, 'an empty label key is not supported in a selector');
    else if (k.includes('*') || v.includes('*')) ctx.error(lp, `wildcards are not supported in a selector: "${k}=${v}"`);
    else if (k.length > 317 || v.length > 63) ctx.error(lp, 'label key or value too long');
    else selector[k] = v;
  }
  if (Object.keys(ml).length === 0) ctx.warn(sp, 'workload selector specified without labels: it selects every workload in scope');
  return selector;
}

/** spec.targetRef / spec.targetRefs (at most one of them and selector). Returns how many references there are. */
function validateTargetRefs(ctx: Ctx, spec: Record<string, unknown>): number {
  const hasTargetRef = spec.targetRef !== undefined && spec.targetRef !== null;
  const hasTargetRefs = Array.isArray(spec.targetRefs) && spec.targetRefs.length > 0;
  if ([spec.selector != null, hasTargetRef, hasTargetRefs].filter(Boolean).length > 1) {
    ctx.error(['spec'], 'only one of selector, targetRef or targetRefs can be set');
  }
  const refs = [...(hasTargetRef ? [[['spec', 'targetRef'], spec.targetRef] as const] : []), ...(hasTargetRefs ? (spec.targetRefs as unknown[]).map((r, i) => [['spec', 'targetRefs', i], r] as const) : [])];
  for (const [p, r] of refs) {
    if (!isObj(r)) ctx.error(p, 'targetRef must be a mapping {group, kind, name}');
    else {
      ctx.known(r, ['group', 'kind', 'name', 'namespace'], p);
      if (typeof r.name !== 'string' || r.name === '') ctx.error([...p, 'name'], 'targetRef name must be set');
      if (r.namespace !== undefined && r.namespace !== '') ctx.error([...p, 'namespace'], 'targetRef namespace must not be set: cross-namespace references are not supported');
      const group = (r.group ?? '') as string;
      const kind = r.kind as string;
      const ok = (group === '' && kind === 'Service') || (group === 'networking.istio.io' && kind === 'ServiceEntry') || (group === 'gateway.networking.k8s.io' && (kind === 'Gateway' || kind === 'GatewayClass'));
      if (!ok) ctx.error(p, `targetRef must refer to a Service, ServiceEntry, Gateway or GatewayClass, got ${String(group)}/${String(kind)}`);
    }
  }
  if (refs.length > 0) ctx.note(['spec', hasTargetRef ? 'targetRef' : 'targetRefs'], 'this policy attaches to a gateway, waypoint or service (targetRef), not to sidecar workloads: Castellan loads it but never selects it for a workload');
  return refs.length;
}

/** spec.provider: only with CUSTOM. */
function validateProvider(ctx: Ctx, raw: unknown, action: Action): string | undefined {
  if (raw === undefined || raw === null) return undefined;
  let provider: string | undefined;
  if (!isObj(raw)) ctx.error(['spec', 'provider'], `provider must be a mapping {name: ...}, got ${describe(raw)}`);
  else {
    ctx.known(raw, ['name'], ['spec', 'provider']);
    if (typeof raw.name === 'string' && raw.name !== '') provider = raw.name;
  }
  if (action !== 'CUSTOM') ctx.error(['spec', 'provider'], `provider must not be set with the ${action} action (only with CUSTOM)`);
  return provider;
}

/** spec.rules, each validated then (while the document has no error) linted, with what an absent rules list means for the action. */
function validateRules(ctx: Ctx, rulesRaw: unknown, action: Action, provider: string | undefined, targetRefs: number): Rule[] {
  const rulesAbsent = rulesRaw === undefined || rulesRaw === null || (Array.isArray(rulesRaw) && rulesRaw.length === 0);
  if (action === 'CUSTOM') {
    if (rulesAbsent) ctx.error(['spec', 'rules'], 'a CUSTOM policy without rules is never triggered; add an empty rule {} to apply it to every request');
    else if (!provider) ctx.error(['spec', 'provider', 'name'], 'provider.name must be set for the CUSTOM action');
  }
  if (action === 'DENY' && rulesAbsent) {
    ctx.error(['spec', 'rules'], 'a DENY policy without rules never denies anything; add an empty rule {} to deny every request');
  }
  const rules: Rule[] = [];
  if (rulesRaw !== undefined && rulesRaw !== null) {
    if (!Array.isArray(rulesRaw)) ctx.error(['spec', 'rules'], `rules must be a list, got ${describe(rulesRaw)}`);
    else {
      rulesRaw.forEach((r: unknown, i) => {
        const rule = validateRule(ctx, r, ['spec', 'rules', i], action);
        if (rule) {
          rules.push(rule);
          if (!ctx.failed) lintRule(ctx, rule, ['spec', 'rules', i], action);
        }
      });
    }
  }
  if ((action === 'ALLOW' || action === 'AUDIT') && rulesAbsent && targetRefs === 0) {
    ctx.note(['spec'], action === 'ALLOW' ? 'an ALLOW policy without rules allows nothing: it denies every request to the workloads it selects' : 'an AUDIT policy without rules audits nothing');
  }
  return rules;
}

/**
 * Validates one parsed document that claims to be an AuthorizationPolicy
 * (`kind` already checked by the caller), section by section.
 */
export function validatePolicyDocument(doc: Record<string, unknown>, origin: Origin): ValidatedDocument {
  const ctx = new Ctx();
  ctx.known(doc, ['apiVersion', 'kind', 'metadata', 'spec', 'status'], []);
  if (!API_VERSIONS.includes(doc.apiVersion as (typeof API_VERSIONS)[number])) {
    ctx.error(['apiVersion'], `unsupported apiVersion ${JSON.stringify(doc.apiVersion)} for AuthorizationPolicy: expected ${API_VERSIONS.join(' or ')}`);
  }
  const { name, namespace, dryRun } = validateMetadata(ctx, doc.metadata);
  const spec = doc.spec ?? {};
  if (!isObj(spec)) {
    ctx.error(['spec'], `spec must be a mapping, got ${describe(spec)}`);
    return { issues: ctx.issues };
  }
  ctx.known(spec, ['selector', 'targetRef', 'targetRefs', 'action', 'provider', 'rules'], ['spec']);
  const action = validateAction(ctx, spec.action);
  const selector = validateSelector(ctx, spec.selector);
  const targetRefs = validateTargetRefs(ctx, spec);
  const provider = validateProvider(ctx, spec.provider, action);
  const rules = validateRules(ctx, spec.rules, action, provider, targetRefs);
  if (ctx.failed) return { issues: ctx.issues };
  const policy: AuthorizationPolicy = {
    namespace,
    name,
    action,
    ...(provider ? { provider } : {}),
    ...(selector ? { selector } : {}),
    rules,
    dryRun,
    targetRef: targetRefs > 0,
    origin,
  };
  return { policy, issues: ctx.issues };
}
