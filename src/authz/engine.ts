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
import { compilePolicy, explainRule, firstMatchingRule, selects, type CompiledPolicy } from './compile.ts';
import { RequestContext } from './request-context.ts';
import type { Action, AuthorizationPolicy, AuthzRequest, Decision, DecisionReason, DecisionValue, PolicyTrace } from './model.ts';
import type { PathNormalization } from './path.ts';
import { trustDomainList } from './trust-domain.ts';
import { PATH_NORMALIZATIONS } from './path.ts';

export type CustomDecision = 'allow' | 'deny';

export interface EngineOptions {
  /** Policies in this namespace apply to every workload of the mesh. Default `istio-system`. */
  readonly rootNamespace?: string;
  /** Default `base`, Istio's default. */
  readonly pathNormalization?: PathNormalization;
  /**
   * The mesh's trust domain (meshConfig.trustDomain). Default `cluster.local`.
   * Principals of it, of an alias, or written `cluster.local/…` match every
   * one of them (src/authz/trust-domain.ts); principals of any other trust
   * domain (a federated one) match only that trust domain.
   */
  readonly trustDomain?: string;
  /** meshConfig.trustDomainAliases: trust domains treated as the local one. Default none. */
  readonly trustDomainAliases?: readonly string[];
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

interface Trie {
  set?: WorkloadSet;
  next?: Map<string, Map<string, Trie>>;
}

function byId(a: CompiledPolicy, b: CompiledPolicy): number {
  const x = a.policy.namespace;
  const y = b.policy.namespace;
  if (x !== y) return x < y ? -1 : 1;
  return a.policy.name < b.policy.name ? -1 : a.policy.name > b.policy.name ? 1 : 0;
}

export class AuthzEngine {
  readonly rootNamespace: string;
  readonly pathNormalization: PathNormalization;
  /** The trust domain, then its aliases. */
  readonly trustDomains: readonly string[];
  /** The loaded policies, in canonical (namespace, name) order. */
  readonly policies: readonly AuthorizationPolicy[];
  readonly #compiled: readonly CompiledPolicy[];
  readonly #buckets = new Map<string, Bucket>();
  readonly #cache = new Map<string, Trie>();
  #cached = 0;

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
    this.trustDomains = Object.freeze([...trustDomainList(opts)]);
    const compiled = policies.map((p) => compilePolicy(p, this.trustDomains)).sort(byId);
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
    // A trie over namespace, then each label (key, value) in the order given:
    // no allocation on a hit. The same labels in another order cost one more
    // entry, never a wrong answer.
    let node: Trie | undefined = this.#cache.get(namespace);
    if (!node) {
      node = {};
      this.#cache.set(namespace, node);
    }
    for (const k in labels) {
      const v = labels[k]!;
      let byKey: Map<string, Trie> | undefined = node.next?.get(k);
      if (!byKey) {
        byKey = new Map();
        (node.next ??= new Map()).set(k, byKey);
      }
      let child: Trie | undefined = byKey.get(v);
      if (!child) {
        child = {};
        byKey.set(v, child);
      }
      node = child;
    }
    if (node.set) return node.set;
    if (++this.#cached > CACHE_MAX) {
      // Bounded memory for adversarial label sets: start over.
      this.#cache.clear();
      this.#cached = 0;
      return this.#workloadSet(namespace, labels);
    }
    node.set = this.#computeSet(namespace, labels);
    return node.set;
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
    const set = this.#workloadSet(request.workload.namespace, request.workload.labels);
    const customDecision = opts.customDecision ?? 'deny';
    if (opts.explain === true) return this.#explained(c, set, customDecision);
    if (c.http && c.path === null) return decision('DENY', null, -1, 'path-rejected', undefined, EMPTY, EMPTY, undefined, EMPTY_TRACE);

    let by: CompiledPolicy | null = null;
    let rule = -1;
    let reason: DecisionReason | undefined;
    let value: DecisionValue = 'DENY';
    let provider: string | undefined;
    for (const p of set.custom) {
      const r = firstMatchingRule(p, c);
      if (r < 0) continue;
      provider = p.policy.provider;
      if (set.providers > 1) [by, rule, reason] = [p, r, 'custom-multiple-providers'];
      else if (customDecision === 'deny') [by, rule, reason] = [p, r, 'custom-denied'];
      break;
    }
    if (reason === undefined) {
      for (const p of set.deny) {
        const r = firstMatchingRule(p, c);
        if (r >= 0) {
          [by, rule, reason] = [p, r, 'deny-matched'];
          break;
        }
      }
    }
    if (reason === undefined) {
      if (set.allow.length === 0) {
        value = 'ALLOW';
        reason = 'no-allow-policies';
      } else {
        for (const p of set.allow) {
          const r = firstMatchingRule(p, c);
          if (r >= 0) {
            [by, rule, reason, value] = [p, r, 'allow-matched', 'ALLOW'];
            break;
          }
        }
        reason ??= 'no-allow-matched';
      }
    }
    const audit = set.audit.length === 0 ? EMPTY : set.audit.filter((p) => firstMatchingRule(p, c) >= 0).map((p) => p.id);
    const dry = set.dryRun.length === 0 ? EMPTY : set.dryRun.filter((p) => firstMatchingRule(p, c) >= 0).map((p) => p.id);
    const trace = by ? [{ policy: by.id, action: by.policy.action, selected: true, matched: true, rule }] : EMPTY_TRACE;
    return decision(value, by, rule, reason, provider, audit, dry, c.path ?? undefined, trace);
  }

  /** Every policy in scope evaluated, each with the reason it did or did not match. */
  #explained(c: RequestContext, set: WorkloadSet, customDecision: CustomDecision): Decision {
    const trace: PolicyTrace[] = [];
    if (c.http && c.path === null) return decision('DENY', null, -1, 'path-rejected', undefined, EMPTY, EMPTY, undefined, trace);
    const record = (p: CompiledPolicy, rule: number, note?: string): void => {
      const rules = c.http ? p.http : p.tcp;
      trace.push({
        policy: p.id,
        action: p.policy.action,
        ...(p.policy.dryRun ? { dryRun: true } : {}),
        selected: true,
        matched: rule >= 0,
        ...(rule >= 0 ? { rule } : {}),
        ...(rule < 0
          ? { rules: rules.length === 0 ? [{ index: -1, failed: 'the policy has no rules, so it matches nothing' }] : rules.map((r) => ({ index: r.index, failed: explainRule(r, c) ?? 'matched' })) }
          : {}),
        ...(note ? { note } : {}),
      });
    };
    let result: { value: DecisionValue; by: CompiledPolicy | null; rule: number; reason: DecisionReason } | undefined;
    let provider: string | undefined;
    for (const p of set.custom) {
      const r = firstMatchingRule(p, c);
      record(p, r, r >= 0 ? `provider "${p.policy.provider}" ${set.providers > 1 ? 'is not asked: the workload has CUSTOM policies for several providers' : `is asked and answers ${customDecision}`}` : undefined);
      if (r >= 0 && provider === undefined && !result) {
        provider = p.policy.provider;
        if (set.providers > 1) result = { value: 'DENY', by: p, rule: r, reason: 'custom-multiple-providers' };
        else if (customDecision === 'deny') result = { value: 'DENY', by: p, rule: r, reason: 'custom-denied' };
      }
    }
    for (const p of set.deny) {
      const r = firstMatchingRule(p, c);
      record(p, r);
      if (r >= 0 && !result) result = { value: 'DENY', by: p, rule: r, reason: 'deny-matched' };
    }
    if (set.allow.length === 0) result ??= { value: 'ALLOW', by: null, rule: -1, reason: 'no-allow-policies' };
    for (const p of set.allow) {
      const r = firstMatchingRule(p, c);
      record(p, r);
      if (r >= 0 && !result) result = { value: 'ALLOW', by: p, rule: r, reason: 'allow-matched' };
    }
    result ??= { value: 'DENY', by: null, rule: -1, reason: 'no-allow-matched' };
    const audit: string[] = [];
    for (const p of set.audit) {
      const r = firstMatchingRule(p, c);
      if (r >= 0) audit.push(p.id);
      record(p, r, 'AUDIT never changes the decision');
    }
    const dry: string[] = [];
    for (const p of set.dryRun) {
      const r = firstMatchingRule(p, c);
      if (r >= 0) dry.push(p.id);
      record(p, r, 'dry-run: reported, never enforced');
    }
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
    return decision(result.value, result.by, result.rule, result.reason, provider, audit, dry, c.path ?? undefined, trace);
  }
}

const EMPTY: readonly string[] = Object.freeze([]);
const EMPTY_TRACE: readonly PolicyTrace[] = Object.freeze([]);

function decision(
  value: DecisionValue,
  by: CompiledPolicy | null,
  rule: number,
  reason: DecisionReason,
  customProvider: string | undefined,
  audit: readonly string[],
  dryRunMatched: readonly string[],
  normalizedPath: string | undefined,
  trace: readonly PolicyTrace[],
): Decision {
  const d: { -readonly [K in keyof Decision]: Decision[K] } = {
    decision: value,
    policy: by ? by.id : null,
    action: by ? by.policy.action : null,
    rule: by ? rule : null,
    reason,
    audit,
    dryRunMatched,
    trace,
  };
  if (customProvider !== undefined) d.customProvider = customProvider;
  if (normalizedPath !== undefined) d.normalizedPath = normalizedPath;
  return Object.freeze(d);
}
