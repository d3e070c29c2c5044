/**
 * The authorization engine's public surface: Istio AuthorizationPolicy
 * (security.istio.io/v1, v1beta1) loading, validation, evaluation with
 * explanations, policy test suites, and the transport-free ext_authz adapter.
 * Nothing here imports grpc-js; src/grpc/ext-authz.ts serves it.
 */

/**
 * `AuthzEngine.compile(policies, {rootNamespace, pathNormalization})` builds an
 * immutable matcher (indexed by namespace and selector label, workload sets
 * cached up to 4096 entries); `evaluate(request, {explain, customDecision})`
 * returns a frozen Decision and never throws for a validated request.
 */
export { AuthzEngine, type CustomDecision, type EngineOptions, type EvaluateOptions } from './engine.ts';

/**
 * Policy files and directories (multi-document YAML, JSON, kind: List).
 * `collect*` return every issue; `loadPolicies`/`assertNoErrors` throw one
 * CastellanError (INVALID_ARGUMENT, `authz.invalid_policy` or
 * `authz.duplicate_policy`) naming file, line, document, field and reason.
 * Files are capped at 16 MiB, patterns at 1024 characters.
 */
export {
  assertNoErrors, collectPolicies, collectPolicyObjects, collectPolicyText, formatIssue, loadPolicies, policyFingerprint,
  type FileIssue, type LoadResult,
} from './loader.ts';

/** One policy document against Istio's validation rules, issues with field paths. */
export { formatPath, validatePolicyDocument, type Issue, type Severity } from './validate.ts';

/** Request documents; CastellanError(INVALID_ARGUMENT, `authz.invalid_request`) naming each bad field. */
export { parseRequestDocument, parseRequestText } from './request.ts';

/** `castellan authz test` suites. */
export { describeDecision, runSuite, runSuiteFile, type CaseResult, type SuiteDefaults, type SuiteResult } from './suite.ts';

/** Text rendering of decisions and explanations. */
export { formatDecision } from './explain.ts';

/** Envoy ext_authz without a transport: CheckRequest → request → Decision → CheckResponse. */
export { checkRequestToAuthz, decisionToCheckResponse, deniedResponse, POLICY_HEADER, REASON_HEADER, UnmappableCheck, type ExtAuthzDefaults } from './ext-authz.ts';

/** A live policy set reloaded on file change; the caller must `close()` it. */
export { PolicyWatcher, type PolicyWatcherOptions } from './watch.ts';

/** prom-client metrics of the ext_authz server (own registry). */
export { createAuthzMetrics, type AuthzMetrics } from './metrics.ts';

export { normalizePath, PATH_NORMALIZATIONS, type PathNormalization } from './path.ts';

export type { Action, AuthorizationPolicy, AuthzRequest, Decision, DecisionReason, DecisionValue, PolicyTrace } from './model.ts';
