/**
 * Unit tests for policies (`castellan authz test`). A suite is one YAML or
 * JSON document:
 *
 *   policies:                       # files/directories (relative to the suite) or inline documents
 *     - ./policies.yaml
 *     - {apiVersion: security.istio.io/v1, kind: AuthorizationPolicy, ...}
 *   rootNamespace: istio-system     # optional; default: the command's flag
 *   pathNormalization: base         # optional; default: the command's flag
 *   customDecision: deny            # optional; default: the command's flag
 *   cases:
 *     - name: sleep may read
 *       request: {workload: ..., source: ..., request: ...}   # a request document
 *       expect: ALLOW                # or DENY
 *       policy: foo/allow-read       # optional: the deciding policy (null: a default decision)
 *       rule: 0                      # optional: the deciding rule
 *       customDecision: allow        # optional, for this case
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { CastellanError } from '../platform/errors.ts';
import { AuthzEngine, type CustomDecision } from './engine.ts';
import { assertNoErrors, collectPolicies, collectPolicyObjects, type FileIssue, type LoadResult } from './loader.ts';
import type { AuthorizationPolicy, Decision, DecisionValue } from './model.ts';
import { PATH_NORMALIZATIONS, type PathNormalization } from './path.ts';
import { isTrustDomainName } from './trust-domain.ts';
import { parseRequestDocument, parseSingleDocument } from './request.ts';

export interface SuiteDefaults {
  readonly rootNamespace: string;
  readonly pathNormalization: PathNormalization;
  readonly customDecision: CustomDecision;
  readonly trustDomain?: string;
  readonly trustDomainAliases?: readonly string[];
}

export interface CaseResult {
  readonly suite: string;
  readonly name: string;
  readonly passed: boolean;
  readonly expect: DecisionValue;
  readonly expectPolicy?: string | null;
  readonly expectRule?: number;
  readonly decision: Decision;
  /** Why it failed, or a one-line summary when it passed. */
  readonly message: string;
}

export interface SuiteResult {
  readonly suite: string;
  readonly policies: number;
  readonly issues: readonly FileIssue[];
  readonly cases: readonly CaseResult[];
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function bad(file: string, msg: string): CastellanError {
  return new CastellanError('INVALID_ARGUMENT', 'authz.invalid_suite', `${file}: ${msg}`);
}

export function describeDecision(d: Decision): string {
  const by = d.policy ? `by ${d.policy} (${d.action}, rule ${d.rule})` : `by default (${d.reason})`;
  return `${d.decision} ${by}`;
}

interface ParsedCase {
  readonly name: string;
  readonly request: ReturnType<typeof parseRequestDocument>;
  readonly expect: DecisionValue;
  readonly policy?: string | null;
  readonly rule?: number;
  readonly customDecision?: CustomDecision;
}

/** Loads, validates and runs one suite file. Throws CastellanError for invalid suites or policies. */
export function runSuiteFile(file: string, defaults: SuiteDefaults): SuiteResult {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw bad(file, `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return runSuite(parseSingleDocument(text, file, 'authz.invalid_suite'), file, defaults);
}

export function runSuite(doc: unknown, file: string, defaults: SuiteDefaults): SuiteResult {
  if (!isObj(doc)) throw bad(file, 'a suite must be a mapping with policies and cases');
  const allowed = ['policies', 'cases', 'rootNamespace', 'pathNormalization', 'customDecision', 'name', 'trustDomain', 'trustDomainAliases'];
  for (const k of Object.keys(doc)) if (!allowed.includes(k)) throw bad(file, `unknown field "${k}"; allowed: ${allowed.join(', ')}`);
  const suiteName = typeof doc.name === 'string' ? doc.name : file;
  const rootNamespace = doc.rootNamespace === undefined ? defaults.rootNamespace : doc.rootNamespace;
  if (typeof rootNamespace !== 'string' || rootNamespace === '') throw bad(file, 'rootNamespace must be a non-empty string');
  const pathNormalization = doc.pathNormalization ?? defaults.pathNormalization;
  if (!PATH_NORMALIZATIONS.includes(pathNormalization as PathNormalization)) throw bad(file, `pathNormalization must be one of ${PATH_NORMALIZATIONS.join(', ')}`);
  const suiteCustom = parseCustom(file, 'customDecision', doc.customDecision) ?? defaults.customDecision;
  const trustDomain = doc.trustDomain ?? defaults.trustDomain;
  if (trustDomain !== undefined && (typeof trustDomain !== 'string' || !isTrustDomainName(trustDomain))) throw bad(file, 'trustDomain must be a trust domain name (lowercase letters, digits, ".", "-", "_")');
  const trustDomainAliases = doc.trustDomainAliases ?? defaults.trustDomainAliases;
  if (trustDomainAliases !== undefined && !(Array.isArray(trustDomainAliases) && trustDomainAliases.every((a) => typeof a === 'string' && a !== ''))) throw bad(file, 'trustDomainAliases must be a list of trust domain names');

  if (!Array.isArray(doc.policies)) throw bad(file, 'policies must be a list of paths (relative to the suite) or inline AuthorizationPolicy documents');
  const base = dirname(file);
  const paths: string[] = [];
  const inline: { value: unknown; file: string; document: number; prefix: (string | number)[] }[] = [];
  doc.policies.forEach((p: unknown, i) => {
    if (typeof p === 'string') paths.push(isAbsolute(p) ? p : resolve(base, p));
    else if (isObj(p)) inline.push({ value: p, file, document: 1, prefix: ['policies', i] });
    else throw bad(file, `policies[${i}] must be a path or an inline document`);
  });
  const fromFiles = collectPolicies(paths);
  const fromInline = collectPolicyObjects(inline);
  const merged: LoadResult = {
    policies: [...fromFiles.policies, ...fromInline.policies],
    issues: [...fromFiles.issues, ...fromInline.issues],
    files: fromFiles.files,
  };
  assertNoErrors(merged);
  const engine = AuthzEngine.compile(merged.policies, { rootNamespace, pathNormalization: pathNormalization as PathNormalization, trustDomain, trustDomainAliases: trustDomainAliases as string[] | undefined });

  if (!Array.isArray(doc.cases) || doc.cases.length === 0) throw bad(file, 'cases must be a non-empty list of {name, request, expect}');
  const cases = doc.cases.map((c: unknown, i): ParsedCase => parseCase(file, c, i, engine.policies));
  const results = cases.map((c): CaseResult => {
    const d = engine.evaluate(c.request, { explain: true, customDecision: c.customDecision ?? suiteCustom });
    const problems: string[] = [];
    if (d.decision !== c.expect) problems.push(`expected ${c.expect}`);
    if (c.policy !== undefined && d.policy !== c.policy) problems.push(`expected the decision by ${c.policy ?? 'default (no policy)'}`);
    if (c.rule !== undefined && d.rule !== c.rule) problems.push(`expected rule ${c.rule}`);
    const passed = problems.length === 0;
    return {
      suite: suiteName,
      name: c.name,
      passed,
      expect: c.expect,
      ...(c.policy !== undefined ? { expectPolicy: c.policy } : {}),
      ...(c.rule !== undefined ? { expectRule: c.rule } : {}),
      decision: d,
      message: passed ? describeDecision(d) : `${problems.join(', ')}; got ${describeDecision(d)}`,
    };
  });
  return { suite: suiteName, policies: engine.size, issues: merged.issues, cases: results };
}

function parseCustom(file: string, where: string, v: unknown): CustomDecision | undefined {
  if (v === undefined || v === null) return undefined;
  const s = typeof v === 'string' ? v.toLowerCase() : v;
  if (s !== 'allow' && s !== 'deny') throw bad(file, `${where} must be allow or deny`);
  return s;
}

function parseCase(file: string, c: unknown, i: number, policies: readonly AuthorizationPolicy[]): ParsedCase {
  const where = `cases[${i}]`;
  if (!isObj(c)) throw bad(file, `${where} must be a mapping {name, request, expect}`);
  const allowed = ['name', 'request', 'expect', 'policy', 'rule', 'customDecision'];
  for (const k of Object.keys(c)) if (!allowed.includes(k)) throw bad(file, `${where}: unknown field "${k}"; allowed: ${allowed.join(', ')}`);
  const name = typeof c.name === 'string' && c.name !== '' ? c.name : `case ${i + 1}`;
  const expect = typeof c.expect === 'string' ? c.expect.toUpperCase() : c.expect;
  if (expect !== 'ALLOW' && expect !== 'DENY') throw bad(file, `${where} (${name}): expect must be ALLOW or DENY`);
  if (c.policy !== undefined && c.policy !== null && typeof c.policy !== 'string') throw bad(file, `${where} (${name}): policy must be "namespace/name" or null`);
  if (typeof c.policy === 'string' && !policies.some((p) => `${p.namespace}/${p.name}` === c.policy)) {
    throw bad(file, `${where} (${name}): policy ${c.policy} is not among the suite's policies`);
  }
  if (c.rule !== undefined && (typeof c.rule !== 'number' || !Number.isInteger(c.rule) || c.rule < 0)) throw bad(file, `${where} (${name}): rule must be a rule index`);
  let request;
  try {
    request = parseRequestDocument(c.request, `${file}: ${where} (${name}).request`);
  } catch (e) {
    if (e instanceof CastellanError) throw new CastellanError('INVALID_ARGUMENT', 'authz.invalid_suite', e.message);
    throw e;
  }
  const customDecision = parseCustom(file, `${where}.customDecision`, c.customDecision);
  return {
    name,
    request,
    expect,
    ...(c.policy !== undefined ? { policy: c.policy as string | null } : {}),
    ...(c.rule !== undefined ? { rule: c.rule as number } : {}),
    ...(customDecision ? { customDecision } : {}),
  };
}
