/**
 * The data model of the authorization engine: validated AuthorizationPolicy
 * documents (security.istio.io/v1 and v1beta1), the request an evaluation
 * is about, and the decision it produces. Everything here is plain data.
 */

export const ACTIONS = ['ALLOW', 'DENY', 'AUDIT', 'CUSTOM'] as const;
export type Action = (typeof ACTIONS)[number];

export const SOURCE_FIELDS = [
  'principals', 'notPrincipals', 'requestPrincipals', 'notRequestPrincipals', 'namespaces', 'notNamespaces',
  'serviceAccounts', 'notServiceAccounts', 'ipBlocks', 'notIpBlocks', 'remoteIpBlocks', 'notRemoteIpBlocks',
  'trustDomains', 'notTrustDomains',
] as const;
export type SourceField = (typeof SOURCE_FIELDS)[number];
export type Source = Partial<Record<SourceField, readonly string[]>>;

export const OPERATION_FIELDS = ['hosts', 'notHosts', 'ports', 'notPorts', 'methods', 'notMethods', 'paths', 'notPaths'] as const;
export type OperationField = (typeof OPERATION_FIELDS)[number];
export type Operation = Partial<Record<OperationField, readonly string[]>>;

export interface Condition {
  readonly key: string;
  readonly values?: readonly string[];
  readonly notValues?: readonly string[];
}

export interface Rule {
  /** undefined: any source. */
  readonly from?: readonly { readonly source: Source }[];
  /** undefined: any operation. */
  readonly to?: readonly { readonly operation: Operation }[];
  readonly when?: readonly Condition[];
}

/** Where a policy came from, for messages. `document` is 1-based. */
export interface Origin {
  readonly file: string;
  readonly document: number;
}

export interface AuthorizationPolicy {
  readonly namespace: string;
  readonly name: string;
  readonly action: Action;
  /** CUSTOM only: the extension provider that is asked. */
  readonly provider?: string;
  /** undefined: every workload of the namespace (or of the mesh, in the root namespace). */
  readonly selector?: Readonly<Record<string, string>>;
  /** Empty for `spec: {}` and the like: an ALLOW that allows nothing, an AUDIT that audits nothing. */
  readonly rules: readonly Rule[];
  /** `istio.io/dry-run: "true"`: evaluated and reported, never enforced. */
  readonly dryRun: boolean;
  /** `targetRef`/`targetRefs`: attached to a gateway or waypoint, not to workloads; never selected. */
  readonly targetRef: boolean;
  readonly origin: Origin;
}

export function policyId(p: { namespace: string; name: string }): string {
  return `${p.namespace}/${p.name}`;
}

/**
 * One request (HTTP) or connection (TCP, when `request` is absent), after
 * the request document has been validated.
 */
export interface AuthzRequest {
  /** The destination workload, which decides which policies apply. */
  readonly workload: { readonly namespace: string; readonly labels: Readonly<Record<string, string>> };
  readonly source: {
    /** The peer's certificate identity (`<td>/ns/<ns>/sa/<sa>`, with or without `spiffe://`); absent for plaintext. */
    readonly principal?: string;
    /** The direct peer address. */
    readonly ip?: string;
    /** The original client address (X-Forwarded-For / proxy protocol); defaults to `ip`. */
    readonly remoteIp?: string;
  };
  readonly destination: { readonly ip?: string; readonly port?: number };
  readonly connection: { readonly sni?: string };
  readonly request?: HttpAttributes;
}

export interface HttpAttributes {
  readonly method?: string;
  /** The `:authority` / Host. */
  readonly host?: string;
  /** The request target as received: path, optional query and fragment. */
  readonly path?: string;
  /** Lowercase names; a header sent several times has several values, in order. */
  readonly headers: Readonly<Record<string, readonly string[]>>;
  readonly auth?: RequestAuth;
}

/** The validated request JWT (absent: no token). */
export interface RequestAuth {
  readonly issuer?: string;
  readonly subject?: string;
  readonly audiences?: readonly string[];
  readonly presenter?: string;
  readonly claims: Readonly<Record<string, unknown>>;
}

export type DecisionValue = 'ALLOW' | 'DENY';

export type DecisionReason =
  | 'custom-denied'
  | 'custom-multiple-providers'
  | 'deny-matched'
  | 'no-allow-policies'
  | 'allow-matched'
  | 'no-allow-matched'
  | 'path-rejected';

export const REASON_TEXT: Record<DecisionReason, string> = {
  'custom-denied': 'a CUSTOM policy matched and its provider denied the request',
  'custom-multiple-providers': 'a CUSTOM policy matched but the workload has CUSTOM policies for several providers (Istio denies these requests)',
  'deny-matched': 'a DENY policy matched',
  'no-allow-policies': 'no ALLOW policy applies to the workload',
  'allow-matched': 'an ALLOW policy matched',
  'no-allow-matched': 'ALLOW policies apply to the workload but none matched',
  'path-rejected': 'the path cannot be normalised (Envoy rejects the request with 400 before authorization)',
};

/** What one policy did for one request (in `trace`). */
export interface PolicyTrace {
  readonly policy: string;
  readonly action: Action;
  readonly dryRun?: boolean;
  /** False for a policy in scope (namespace) whose selector does not match the workload. */
  readonly selected: boolean;
  readonly matched: boolean;
  /** Index of the first matching rule. */
  readonly rule?: number;
  /** Why each rule did not match: the first failing condition, with its field path. */
  readonly rules?: readonly { readonly index: number; readonly failed: string }[];
  readonly note?: string;
}

export interface Decision {
  readonly decision: DecisionValue;
  /** `namespace/name` of the deciding policy; null for a default decision. */
  readonly policy: string | null;
  /** Action of the deciding policy; null for a default decision. */
  readonly action: Action | null;
  /** Index of the matching rule of the deciding policy. */
  readonly rule: number | null;
  readonly reason: DecisionReason;
  /** The CUSTOM provider that was (or would have been) asked. */
  readonly customProvider?: string;
  /** AUDIT policies that matched (the request would be audited). */
  readonly audit: readonly string[];
  /** Dry-run policies that matched (not enforced). */
  readonly dryRunMatched: readonly string[];
  /** The path the policies were matched against, for HTTP requests. */
  readonly normalizedPath?: string;
  /** Every policy considered, in evaluation order (`--explain`); the deciding steps otherwise. */
  readonly trace: readonly PolicyTrace[];
}
