/** Builders for authz tests: policy documents, request documents, engines. */
import { AuthzEngine, type EngineOptions } from '../../src/authz/engine.ts';
import { assertNoErrors, collectPolicyObjects } from '../../src/authz/loader.ts';
import type { AuthzRequest } from '../../src/authz/model.ts';
import { parseRequestDocument } from '../../src/authz/request.ts';

export type Doc = Record<string, unknown>;

/** An AuthorizationPolicy document; `name` may be `ns/name`. */
export function policy(name: string, spec: Doc = {}, extra: { annotations?: Record<string, string>; apiVersion?: string } = {}): Doc {
  const [ns, n] = name.includes('/') ? name.split('/') : ['foo', name];
  return {
    apiVersion: extra.apiVersion ?? 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name: n, namespace: ns, ...(extra.annotations ? { annotations: extra.annotations } : {}) },
    spec,
  };
}

export const allow = (name: string, rules: unknown[] | undefined, selector?: Record<string, string>): Doc =>
  policy(name, { action: 'ALLOW', ...(rules !== undefined ? { rules } : {}), ...(selector ? { selector: { matchLabels: selector } } : {}) });
export const deny = (name: string, rules: unknown[], selector?: Record<string, string>): Doc =>
  policy(name, { action: 'DENY', rules, ...(selector ? { selector: { matchLabels: selector } } : {}) });
export const audit = (name: string, rules: unknown[], selector?: Record<string, string>): Doc =>
  policy(name, { action: 'AUDIT', rules, ...(selector ? { selector: { matchLabels: selector } } : {}) });
export const custom = (name: string, provider: string, rules: unknown[], selector?: Record<string, string>): Doc =>
  policy(name, { action: 'CUSTOM', provider: { name: provider }, rules, ...(selector ? { selector: { matchLabels: selector } } : {}) });

export const from = (source: Doc): Doc => ({ from: [{ source }] });
export const to = (operation: Doc): Doc => ({ to: [{ operation }] });
export const when = (key: string, values?: string[], notValues?: string[]): Doc => ({
  when: [{ key, ...(values ? { values } : {}), ...(notValues ? { notValues } : {}) }],
});

export const BASE_REQUEST: Doc = {
  workload: { namespace: 'foo', labels: { app: 'httpbin', version: 'v1' } },
  source: { principal: 'cluster.local/ns/bar/sa/sleep', ip: '10.1.2.3' },
  destination: { ip: '10.0.0.5', port: 8000 },
  connection: { sni: 'outbound_.8000_._.httpbin.foo.svc.cluster.local' },
  request: { method: 'GET', host: 'httpbin.foo', path: '/status/200', headers: { 'user-agent': 'curl/8' } },
};

function merge(base: unknown, over: unknown): unknown {
  if (over === undefined) return base;
  if (over === null) return undefined;
  if (typeof over !== 'object' || Array.isArray(over) || typeof base !== 'object' || base === null || Array.isArray(base)) return over;
  const out: Doc = { ...(base as Doc) };
  for (const [k, v] of Object.entries(over as Doc)) {
    const m = merge(out[k], v);
    if (m === undefined) delete out[k];
    else out[k] = m;
  }
  return out;
}

/** The base request with `over` merged in; `null` removes a key (`{request: null}` is a TCP connection). */
export function requestDoc(over: Doc = {}): Doc {
  return merge(BASE_REQUEST, over) as Doc;
}

export function req(over: Doc = {}): AuthzRequest {
  return parseRequestDocument(requestDoc(over), 'test request');
}

export const TCP: Doc = { request: null };

export function engineOf(docs: readonly Doc[], opts: EngineOptions = {}): AuthzEngine {
  const r = assertNoErrors(collectPolicyObjects(docs.map((value, i) => ({ value, file: 'test.yaml', document: i + 1 }))));
  return AuthzEngine.compile(r.policies, opts);
}

/** Issues (errors, warnings, notes) for one document. */
export function issuesOf(doc: Doc): { severity: string; path: string; message: string }[] {
  return collectPolicyObjects([{ value: doc, file: 'test.yaml', document: 1 }]).issues.map((i) => ({ severity: i.severity, path: i.path, message: i.message }));
}
