/**
 * The authorization engine: policies compiled once into an immutable matcher
 * indexed by namespace and by the first label of each selector, evaluated
 * with Istio's decision order (protocols.md §6, security.md A1):
 *
 *   CUSTOM (ask the provider; deny if it denies) → any matching DENY denies →
 *   no ALLOW policy selects the workload: allow → any matching ALLOW allows →
 *   otherwise deny. AUDIT and dry-run policies never change the decision.
 *
 * The deciding policy, when several match, is the first by namespace then
 * name, so the decision never depends on the order policies were loaded in.
 */
import { CastellanError } from '../platform/errors.ts';
import { compilePolicy, explainRule, firstMatchingRule, RequestContext, selects, type CompiledPolicy } from './compile.ts';
import type { Action, AuthorizationPolicy, AuthzRequest, Decision, DecisionReason, PolicyTrace } from './model.ts';
import type { PathNormalization } from './path.ts';
import { PATH_NORMALIZATIONS } from './path.ts';

export type CustomDecision = 'allow' | 'deny';

export interface EngineOptions {
  /** Policies in this namespace apply to every workload of the mesh. Default `istio-system`. */
  readonly rootNamespace?: string;
  /** Default `base`, Istio's default. */
  readonly pathNormalization?: PathNormalization;
}

export interface EvaluateOptions {
  /** Evaluate every policy in scope and report why each did or did not match. */
  readonly explain?: boolean;
  /** What the CUSTOM provider answers when it is asked. Default `deny` (fail closed). */
  readonly customDecision?: CustomDecision;
}

/** The policies that apply to one workload, by action, in canonical order. */
interface WorkloadSet {
  readonly custom: readonly CompiledPolicy[];
  readonly deny: readonly CompiledPolicy[];
  readonly allow: readonly CompiledPolicy[];
  readonly audit: readonly CompiledPolicy[];
  readonly dryRun: readonly CompiledPolicy[];
  readonly providers: number;
  /** In scope by namespace but not selected (for explanations). */
  readonly unselected: readonly CompiledPolicy[];
}

interface Bucket {
  /** Policies without a selector. */
  readonly all: CompiledPolicy[];
  /** Policies with a selector, by their first `key\0value`. */
  readonly byLabel: Map<string, CompiledPolicy[]>;
  readonly every: CompiledPolicy[];
}

const CACHE_MAX = 4096;

function byId(a: CompiledPolicy, b: CompiledPolicy): number {
  const x = a.policy.namespace;
  const y = b.policy.namespace;
  if (x !== y) return x < y ? -1 : 1;
  return a.policy.name < b.policy.name ? -1 : a.policy.name > b.policy.name ? 1 : 0;
}

export class AuthzEngine {
  readonly rootNamespace: string;
  readonly pathNormalization: PathNormalization;
  /** The loaded policies, in canonical (namespace, name) order. */
  readonly policies: readonly AuthorizationPolicy[];
  readonly #compiled: readonly CompiledPolicy[];
  readonly #buckets = new Map<string, Bucket>();
  readonly #cache = new Map<string, WorkloadSet>();

  private constructor(policies: readonly AuthorizationPolicy[], opts: EngineOptions) {
    this.rootNamespace = opts.rootNamespace ?? 'istio-system';
    this.pathNormalization = opts.pathNormalization ?? 'base';
    if (!PATH_NORMALIZATIONS.includes(this.pathNormalization)) {
      throw new CastellanError('INVALID_ARGUMENT', 'authz.invalid_option', `unknown path normalization "${String(this.pathNormalization)}": use ${PATH_NORMALIZATIONS.join(', ')}`);
    }
    const seen = new Map<string, AuthorizationPolicy>();
    for (const p of policies) {
      const id = `${p.namespace}/${p.name}`;
      const prev = seen.get(id);
      if (prev) {
        throw new CastellanError('INVALID_ARGUMENT', 'authz.duplicate_policy', `policy ${id} is defined twice: ${prev.origin.file} document ${prev.origin.document} and ${p.origin.file} document ${p.origin.document}`);
      }
      seen.set(id, p);
    }
    const compiled = policies.map(compilePolicy).sort(byId);
    this.#compiled = Object.freeze(compiled);
    this.policies = Object.freeze(compiled.map((c) => c.policy));
    for (const c of compiled) {
      if (c.policy.targetRef) continue; // gateways and waypoints only
      let b = this.#buckets.get(c.policy.namespace);
      if (!b) {
        b = { all: [], byLabel: new Map(), every: [] };
        this.#buckets.set(c.policy.namespace, b);
      }
      b.every.push(c);
      if (c.selector === null) b.all.push(c);
      else {
        const [k, v] = c.selector[0]!;
        const key = `${k}\u0000${v}`;
        const l = b.byLabel.get(key);
        if (l) l.push(c);
        else b.byLabel.set(key, [c]);
      }
    }
  }

  /** Compiles `policies` (validated). Throws CastellanError for duplicates. */
  static compile(policies: readonly AuthorizationPolicy[], opts: EngineOptions = {}): AuthzEngine {
    return new AuthzEngine(policies, opts);
  }

  get size(): number {
    return this.#compiled.length;
  }

  #workloadSet(namespace: string, labels: Readonly<Record<string, string>>): WorkloadSet {
    const keys = Object.keys(labels);
    let key = namespace;
    if (keys.length === 1) key += `\u0000${keys[0]}\u0000${labels[keys[0]!]}`;
    else if (keys.length > 1) for (const k of keys.sort()) key += `\u0000${k}\u0000${labels[k]}`;
    const hit = this.#cache.get(key);
    if (hit) return hit;
    const set = this.#computeSet(namespace, labels);
    if (this.#cache.size >= CACHE_MAX) this.#cache.clear();
    this.#cache.set(key, set);
    return set;
  }

  #computeSet(namespace: string, labels: Readonly<Record<string, string>>): WorkloadSet {
    const found: CompiledPolicy[] = [];
    const namespaces = namespace === this.rootNamespace ? [namespace] : [namespace, this.rootNamespace];
    for (const ns of namespaces) {
      const b = this.#buckets.get(ns);
      if (!b) continue;
      found.push(...b.all);
      for (const k of Object.keys(labels)) {
        const l = b.byLabel.get(`${k}\u0000${labels[k]}`);
        if (l) for (const c of l) if (selects(c, labels)) found.push(c);
      }
    }
    const uniq = [...new Set(found)].sort(byId);
    const pick = (a: Action): CompiledPolicy[] => uniq.filter((c) => c.policy.action === a && !c.policy.dryRun);
    const custom = pick('CUSTOM');
    const inScope = namespaces.flatMap((ns) => this.#buckets.get(ns)?.every ?? []);
    const selected = new Set(uniq);
    return Object.freeze({
      custom,
      deny: pick('DENY'),
      allow: pick('ALLOW'),
      audit: pick('AUDIT'),
      dryRun: uniq.filter((c) => c.policy.dryRun),
      providers: new Set(custom.map((c) => c.policy.provider)).size,
      unselected: inScope.filter((c) => !selected.has(c)).sort(byId),
    });
  }

  /** Policies (ns/name) that apply to a workload, for reports. */
  applicable(namespace: string, labels: Readonly<Record<string, string>>): string[] {
    const s = this.#workloadSet(namespace, labels);
    return [...s.custom, ...s.deny, ...s.allow, ...s.audit, ...s.dryRun].sort(byId).map((c) => c.id);
  }

  /**
   * Decides one request. Never throws for a validated request. The returned
   * object is frozen.
   */
  evaluate(request: AuthzRequest, opts: EvaluateOptions = {}): Decision {
    const c = new RequestContext(request, this.pathNormalization);
    const explain = opts.explain === true;
    const customDecision = opts.customDecision ?? 'deny';
    const set = this.#workloadSet(request.workload.namespace, request.workload.labels);
    const trace: PolicyTrace[] = [];
    const normalizedPath = c.path ?? undefined;
    const base = { ...(normalizedPath !== undefined ? { normalizedPath } : {}) };

    if (c.http && c.path === null) {
      return Object.freeze({ decision: 'DENY', policy: null, action: null, rule: null, reason: 'path-rejected', audit: [], dryRunMatched: [], trace, ...base });
    }

    // Explanations evaluate everything; decisions stop at the first match.
    const record = (p: CompiledPolicy, rule: number, note?: string): void => {
      const rules = c.http ? p.http : p.tcp;
      trace.push({
        policy: p.id,
        action: p.policy.action,
        ...(p.policy.dryRun ? { dryRun: true } : {}),
        selected: true,
        matched: rule >= 0,
        ...(rule >= 0 ? { rule } : {}),
        ...(rule < 0 && explain
          ? { rules: rules.length === 0 ? [{ index: -1, failed: 'the policy has no rules, so it matches nothing' }] : rules.map((r) => ({ index: r.index, failed: explainRule(r, c) ?? 'matched' })) }
          : {}),
        ...(note ? { note } : {}),
      });
    };

    const audit: string[] = [];
    const auditRules = set.audit.map((p) => firstMatchingRule(p, c));
    set.audit.forEach((p, i) => auditRules[i]! >= 0 && audit.push(p.id));
    const dryRunMatched: string[] = [];
    const dryRules = set.dryRun.map((p) => firstMatchingRule(p, c));
    set.dryRun.forEach((p, i) => dryRules[i]! >= 0 && dryRunMatched.push(p.id));

    let result: { decision: 'ALLOW' | 'DENY'; policy: CompiledPolicy | null; rule: number; reason: DecisionReason } | undefined;
    let customProvider: string | undefined;

    // 1. CUSTOM
    for (const p of set.custom) {
      const r = firstMatchingRule(p, c);
      if (explain) record(p, r, r >= 0 ? `provider "${p.policy.provider}" is asked (answer: ${set.providers > 1 ? 'not asked: several providers' : customDecision})` : undefined);
      if (r >= 0 && customProvider === undefined && !result) {
        customProvider = p.policy.provider;
        if (set.providers > 1) result = { decision: 'DENY', policy: p, rule: r, reason: 'custom-multiple-providers' };
        else if (customDecision === 'deny') result = { decision: 'DENY', policy: p, rule: r, reason: 'custom-denied' };
        if (!explain) break;
      }
    }
    // 2. DENY
    for (const p of set.deny) {
      if (result && !explain) break;
      const r = firstMatchingRule(p, c);
      if (explain) record(p, r);
      if (r >= 0 && !result) result = { decision: 'DENY', policy: p, rule: r, reason: 'deny-matched' };
    }
    // 3. ALLOW
    if (set.allow.length === 0) {
      result ??= { decision: 'ALLOW', policy: null, rule: -1, reason: 'no-allow-policies' };
    } else {
      for (const p of set.allow) {
        if (result && !explain) break;
        const r = firstMatchingRule(p, c);
        if (explain) record(p, r);
        if (r >= 0 && !result) result = { decision: 'ALLOW', policy: p, rule: r, reason: 'allow-matched' };
      }
      result ??= { decision: 'DENY', policy: null, rule: -1, reason: 'no-allow-matched' };
    }
    if (explain) {
      set.audit.forEach((p, i) => record(p, auditRules[i]!, 'AUDIT never changes the decision'));
      set.dryRun.forEach((p, i) => record(p, dryRules[i]!, 'dry-run: reported, never enforced'));
      for (const p of set.unselected) {
        trace.push({
          policy: p.id,
          action: p.policy.action,
          ...(p.policy.dryRun ? { dryRun: true } : {}),
          selected: false,
          matched: false,
          note: `selector ${Object.entries(p.policy.selector ?? {}).map(([k, v]) => `${k}=${v}`).join(',')} does not match the workload labels`,
        });
      }
    } else if (result.policy) {
      trace.push({ policy: result.policy.id, action: result.policy.policy.action, selected: true, matched: true, rule: result.rule });
    }
    return Object.freeze({
      decision: result.decision,
      policy: result.policy?.id ?? null,
      action: result.policy?.policy.action ?? null,
      rule: result.policy ? result.rule : null,
      reason: result.reason,
      ...(customProvider !== undefined ? { customProvider } : {}),
      audit,
      dryRunMatched,
      trace,
      ...base,
    });
  }
}
