/**
 * What serves in place of policies that cannot be used, so that ext_authz
 * fails closed:
 *
 * - `failClosedStandIn`: for one invalid AuthorizationPolicy document, a
 *   policy with the same namespace, name and selector that can only deny.
 *   An invalid ALLOW becomes "allow nothing" (its workloads are allowed only
 *   by their other ALLOW policies); an invalid DENY, CUSTOM or unknown action
 *   becomes "deny everything" to the workloads it selects. A selector that is
 *   itself invalid widens it to the whole namespace (the mesh, in the root
 *   namespace). AUDIT, dry-run and targetRef documents never decide for a
 *   sidecar workload, so nothing stands in for them.
 * - `denyEverything`: an engine that denies every request (before any set of
 *   policies is in force).
 */
import { AuthzEngine, type EngineOptions } from './engine.ts';
import { collectPolicyObjects } from './loader.ts';
import type { AuthorizationPolicy } from './model.ts';

const API_VERSION = 'security.istio.io/v1';

/** What applies in place of an invalid object. */
export type Replacement = 'deny-all' | 'allow-nothing' | 'none';

export interface StandIn {
  policy?: AuthorizationPolicy;
  replacement: Replacement;
  /** whether it kept the document's selector (else it covers the whole namespace) */
  scope?: 'selector' | 'namespace';
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The stand-in for the invalid document `doc` of `namespace/name` `id`; `origin` names it in reports. */
export function failClosedStandIn(id: string, doc: Record<string, unknown>, origin: string): StandIn {
  const slash = id.indexOf('/');
  const namespace = id.slice(0, slash);
  const name = id.slice(slash + 1);
  const spec = isObj(doc.spec) ? doc.spec : {};
  const md = isObj(doc.metadata) ? doc.metadata : {};
  const dryRun = isObj(md.annotations) ? md.annotations['istio.io/dry-run'] : undefined;
  const targeted = (spec.targetRef !== undefined && spec.targetRef !== null) || (Array.isArray(spec.targetRefs) && spec.targetRefs.length > 0);
  if (dryRun === 'true' || dryRun === true || targeted || spec.action === 'AUDIT') return { replacement: 'none' };
  const allow = spec.action === undefined || spec.action === null || spec.action === 'ALLOW';
  const body = allow ? { action: 'ALLOW' } : { action: 'DENY', rules: [{}] };
  const selectors = spec.selector !== undefined && spec.selector !== null ? [spec.selector, undefined] : [undefined];
  for (const selector of selectors) {
    const r = collectPolicyObjects([
      {
        value: { apiVersion: API_VERSION, kind: 'AuthorizationPolicy', metadata: { name, namespace }, spec: { ...body, ...(selector !== undefined ? { selector } : {}) } },
        file: `${origin} (fail-closed stand-in)`,
        document: 1,
      },
    ]);
    if (r.policies.length === 1 && !r.issues.some((i) => i.severity === 'error')) {
      return { policy: r.policies[0], replacement: allow ? 'allow-nothing' : 'deny-all', scope: selector !== undefined ? 'selector' : 'namespace' };
    }
  }
  return { replacement: 'none' };
}

/** An engine that denies every request: what serves before any set of policies is in force. */
export function denyEverything(engine: EngineOptions): AuthzEngine {
  const ns = engine.rootNamespace ?? 'istio-system';
  const r = collectPolicyObjects([
    { value: { apiVersion: API_VERSION, kind: 'AuthorizationPolicy', metadata: { name: 'castellan-policies-not-loaded', namespace: ns }, spec: { action: 'DENY', rules: [{}] } }, file: 'castellan (no policies loaded yet)', document: 1 },
  ]);
  return AuthzEngine.compile(r.policies, engine);
}
