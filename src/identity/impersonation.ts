/**
 * Node authorization of impersonation (Istio ambient mode): a node agent
 * such as ztunnel, authenticated by its own bound service-account token,
 * asks for the certificate of a workload on its node by sending the
 * workload's SPIFFE ID in the `ImpersonatedIdentity` metadata key of
 * CreateCertificate. The checks, in the order of Istio's node authorizer
 * (security/pkg/server/ca/node_auth.go):
 *
 *   1. the caller's service account is one of the trusted node accounts
 *      (--trusted-node-accounts, Istio's CA_TRUSTED_NODE_ACCOUNTS);
 *   2. the requested identity parses as spiffe://<td>/ns/<ns>/sa/<sa>
 *      (Castellan also requires its own trust domain: it signs no other);
 *   3. the caller's pod, named by its token (the `kubernetes.io.pod` claims,
 *      or TokenReview's user.extra pod-name / pod-uid), exists with the same
 *      UID and service account;
 *   4. at least one pod running as the requested service account is
 *      scheduled on the caller's node (spec.nodeName).
 *
 * After 1 (Castellan's own): impersonation over an mTLS renewal is refused
 * with a clear message (a node agent renews with its token, as ztunnel does),
 * and before 3 a pod cache that has not completed its first list answers
 * UNAVAILABLE (retryable) rather than a refusal it cannot justify.
 *
 * Every other failure is PERMISSION_DENIED `auth.impersonation` with one
 * short message; the reason goes to the log and to the refusal metric only.
 * (Istio answers UNAUTHENTICATED; the caller here *is* authenticated, it
 * lacks the permission, and PERMISSION_DENIED is also what Castellan already
 * answers for an identity other than the caller's own.)
 */
import { Counter, type Registry } from 'prom-client';
import { CastellanError } from '../platform/errors.ts';
import type { Logger } from '../platform/logger.ts';
import { isDns1123Label, isDns1123Subdomain, parseWorkloadSpiffeId, workloadSpiffeId, type WorkloadIdentity } from '../spiffe/id.ts';
import type { PodDirectory } from '../kube/pod-cache.ts';
import type { Caller } from './types.ts';

export type { PodDirectory } from '../kube/pod-cache.ts';

export interface NodeAccount {
  readonly namespace: string;
  readonly serviceAccount: string;
}

export const REFUSAL_REASONS = [
  'mtls_renewal',
  'not_node_account',
  'bad_identity',
  'foreign_trust_domain',
  'no_pod_claim',
  'caller_pod_missing',
  'caller_pod_uid',
  'caller_pod_service_account',
  'caller_pod_unscheduled',
  'not_on_node',
] as const;
export type RefusalReason = (typeof REFUSAL_REASONS)[number] | 'cache_not_synced';

/**
 * Parses `ns/sa[,ns/sa…]` (one or several values, each may hold a comma
 * list; blanks around entries ignored). Throws INVALID_ARGUMENT naming the
 * bad entry: unlike Istio, which skips it with a warning, a typo must not
 * silently turn the feature off.
 */
export function parseTrustedNodeAccounts(values: readonly string[], source = '--trusted-node-accounts'): NodeAccount[] {
  const out = new Map<string, NodeAccount>();
  for (const v of values) {
    for (const raw of v.split(',')) {
      const entry = raw.trim();
      if (entry === '') continue;
      const parts = entry.split('/');
      if (parts.length !== 2 || !isDns1123Label(parts[0]!) || !isDns1123Subdomain(parts[1]!)) {
        throw new CastellanError('INVALID_ARGUMENT', 'config.invalid', `${source}: "${entry}" is not NAMESPACE/SERVICEACCOUNT`);
      }
      out.set(entry, { namespace: parts[0]!, serviceAccount: parts[1]! });
    }
  }
  return [...out.values()];
}

/** The Istio name of the setting, so an Istio operator's environment carries over. */
export const ISTIO_TRUSTED_NODE_ACCOUNTS_ENV = 'CA_TRUSTED_NODE_ACCOUNTS';
const CASTELLAN_ENV = 'CASTELLAN_TRUSTED_NODE_ACCOUNTS';

/**
 * The environment with Istio's CA_TRUSTED_NODE_ACCOUNTS read as
 * CASTELLAN_TRUSTED_NODE_ACCOUNTS (same layer: above the config file, below
 * the flag). Both set to different values is a usage error.
 */
export function withIstioEnvAliases(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const istio = env[ISTIO_TRUSTED_NODE_ACCOUNTS_ENV];
  if (istio === undefined) return env;
  const ours = env[CASTELLAN_ENV];
  if (ours !== undefined && ours !== istio) {
    throw new CastellanError('INVALID_ARGUMENT', 'config.invalid', `castellan server: ${CASTELLAN_ENV} and ${ISTIO_TRUSTED_NODE_ACCOUNTS_ENV} are both set, to different values; set one`);
  }
  return { ...env, [CASTELLAN_ENV]: istio };
}

export interface ImpersonationMetrics {
  readonly issued: Counter<'caller'>;
  readonly refused: Counter<'reason'>;
}

export function createImpersonationMetrics(registry: Registry): ImpersonationMetrics {
  return {
    issued: new Counter({
      name: 'castellan_impersonated_issued',
      help: 'certificates issued to a trusted node account for a workload on its node, by node account (namespace/serviceaccount)',
      labelNames: ['caller'],
      registers: [registry],
    }),
    refused: new Counter({
      name: 'castellan_impersonation_refused',
      help: 'CreateCertificate calls carrying ImpersonatedIdentity that were refused, by reason',
      labelNames: ['reason'],
      registers: [registry],
    }),
  };
}

export interface NodeAuthorizerOptions {
  trustDomain: string;
  accounts: readonly NodeAccount[];
  /** required when `accounts` is not empty */
  pods?: PodDirectory;
  logger: Logger;
  metrics: ImpersonationMetrics;
}

/** An impersonation that passed every check. */
export interface Impersonation {
  readonly spiffeId: string;
  readonly identity: WorkloadIdentity;
  /** the caller's node */
  readonly node: string;
  /** `namespace/serviceaccount` of the node account */
  readonly nodeAccount: string;
}

const DENIED_MESSAGE = 'ImpersonatedIdentity is not permitted for this caller';

export class NodeAuthorizer {
  private readonly o: NodeAuthorizerOptions;
  private readonly accounts: Set<string>;

  constructor(o: NodeAuthorizerOptions) {
    if (o.accounts.length > 0 && !o.pods) throw new Error('NodeAuthorizer: trusted node accounts need a pod directory');
    this.o = o;
    this.accounts = new Set(o.accounts.map((a) => `${a.namespace}/${a.serviceAccount}`));
  }

  get enabled(): boolean {
    return this.accounts.size > 0;
  }

  /** Checks that `caller` may have a certificate for `requested` (the raw metadata value). Throws otherwise. */
  authorize(caller: Caller, requested: unknown, requestId: string): Impersonation {
    const nodeAccount = `${caller.identity.namespace}/${caller.identity.serviceAccount}`;
    const refuse = (reason: RefusalReason, detail: Record<string, unknown> = {}): CastellanError => {
      this.o.metrics.refused.inc({ reason });
      this.o.logger.warn(
        { event: 'ca.impersonation_refused', requestId, reason, caller: caller.spiffeId, auth: caller.method, pod: caller.pod, requested: typeof requested === 'string' ? requested.slice(0, 300) : typeof requested, ...detail },
        `impersonation refused: ${reason}`,
      );
      if (reason === 'mtls_renewal') {
        return new CastellanError('PERMISSION_DENIED', 'auth.impersonation_mtls', 'ImpersonatedIdentity cannot be used with a client certificate (mTLS renewal); a node agent authenticates with its service-account token');
      }
      if (reason === 'cache_not_synced') return new CastellanError('UNAVAILABLE', 'auth.impersonation_unavailable', 'node authorization is not ready yet (pod list pending); retry');
      return new CastellanError('PERMISSION_DENIED', 'auth.impersonation', DENIED_MESSAGE);
    };
    if (!this.accounts.has(nodeAccount)) throw refuse('not_node_account');
    if (caller.method === 'mtls') throw refuse('mtls_renewal');
    let identity: WorkloadIdentity;
    try {
      if (typeof requested !== 'string') throw new Error('not a string');
      identity = parseWorkloadSpiffeId(requested);
    } catch {
      throw refuse('bad_identity');
    }
    if (identity.trustDomain !== this.o.trustDomain) throw refuse('foreign_trust_domain');
    const pods = this.o.pods!;
    if (!pods.synced) throw refuse('cache_not_synced');
    const claim = caller.pod;
    if (!claim?.name || !claim.uid) throw refuse('no_pod_claim');
    const pod = pods.pod(caller.identity.namespace, claim.name);
    if (!pod) throw refuse('caller_pod_missing');
    if (pod.uid !== claim.uid) throw refuse('caller_pod_uid', { cachedUid: pod.uid });
    if (pod.serviceAccount !== caller.identity.serviceAccount) throw refuse('caller_pod_service_account', { podServiceAccount: pod.serviceAccount });
    if (pod.node === '') throw refuse('caller_pod_unscheduled');
    if (!pods.hasServiceAccountOnNode(pod.node, identity.namespace, identity.serviceAccount)) throw refuse('not_on_node', { node: pod.node });
    return { spiffeId: workloadSpiffeId(identity), identity, node: pod.node, nodeAccount };
  }
}
