/**
 * CreateCertificate, transport-free: admit the peer → authenticate → check
 * the request → sign (batched, off-thread) → assemble the chain. The gRPC
 * adapter (istio-ca-rpc.ts) only moves bytes and statuses; a new check on
 * CreateCertificate plugs in here, between authentication and signing.
 *
 * Identity comes only from the authenticated caller; the CSR contributes its
 * public key (after its self-signature verifies) and nothing else.
 */
import type { JsonObject } from '@bufbuild/protobuf';
import { CastellanError } from '../platform/errors.ts';
import type { Clock } from '../platform/clock.ts';
import type { Logger } from '../platform/logger.ts';
import type { IssueRequest, IssueResult } from '../ca/issue.ts';
import { checkCsrShape } from '../pki/csr.ts';
import type { KeyringView } from '../ca/keyring.ts';
import { authenticatePeerCertificate } from '../identity/mtls.ts';
import type { Caller, TokenAuthenticator } from '../identity/types.ts';
import type { Impersonation, ImpersonationMetrics, NodeAuthorizer } from '../identity/impersonation.ts';
import type { CaMetrics } from './metrics.ts';
import { peerAddress, type KeyedRateLimiter } from './ratelimit.ts';

export interface CaServiceDeps {
  trustDomain: string;
  /** ms */
  defaultTtlMs: number;
  /** ms */
  maxTtlMs: number;
  /** The keyring now: who signs, what is trusted (changes with rotation). */
  view(): KeyringView;
  /** Told of every certificate issued (leaf accounting per authority). */
  onIssued?(issuerId: string, notAfter: number): void;
  signer: { issue(req: Omit<IssueRequest, 'now'> & { now?: number; signal?: AbortSignal }): Promise<IssueResult> };
  /** per-peer (before authentication) and per-identity (after) issuance limits */
  limits?: { peer: KeyedRateLimiter; identity: KeyedRateLimiter };
  tokenAuth?: TokenAuthenticator;
  /** ImpersonatedIdentity for trusted node accounts (src/identity/impersonation.ts); absent: refused */
  nodeAuth?: { authorizer: NodeAuthorizer; metrics: ImpersonationMetrics };
  clock: Clock;
  logger: Logger;
  metrics: CaMetrics;
}

/** What a call presents to prove who it is. */
export interface CallerCredentials {
  /** every value of the `authorization` metadata key */
  authorization: string[];
  /** DER of the TLS peer certificate, when the transport verified one */
  peerCertDer?: Uint8Array;
}

export interface CertificateRequestInput extends CallerCredentials {
  csr: string;
  /** seconds, as sent on the wire (int64) */
  validityDurationSec: bigint;
  metadata?: JsonObject;
  requestId: string;
  peer?: string;
  /** aborted when the caller goes away (cancelled, deadline passed): a queued request is then dropped unsigned */
  signal?: AbortSignal;
}

export interface CertificateResponse {
  certChain: string[];
  caller: Caller;
  serialHex: string;
  notAfter: number;
}

/**
 * The per-peer rate limit, checked before anything else by every RPC of the
 * CA server (the cheapest refusal: a peer over its rate costs no signature
 * check at all).
 */
export function admitPeer(deps: Pick<CaServiceDeps, 'limits' | 'metrics'>, peer: string | undefined): void {
  if (deps.limits && !deps.limits.peer.tryTake(peerAddress(peer))) {
    deps.metrics.rateLimited.inc({ scope: 'peer' });
    throw new CastellanError('RESOURCE_EXHAUSTED', 'ratelimit.peer', 'too many requests from this address; retry with backoff');
  }
}

/**
 * Who the caller is: a client certificate from this CA, else a bearer token.
 * Throws UNAUTHENTICATED (a CastellanError) when neither proves an identity.
 */
export async function authenticate(deps: CaServiceDeps, input: CallerCredentials): Promise<Caller> {
  const now = deps.clock.now();
  let peerError: CastellanError | undefined;
  if (input.peerCertDer) {
    try {
      // Only an authority that still vouches (active or old, never tainted) may have signed it.
      const view = deps.view();
      return authenticatePeerCertificate(input.peerCertDer, { trustDomain: deps.trustDomain, vouchingSignersDer: view.vouchingSignersDer, taintedSignersDer: view.taintedSignersDer }, now);
    } catch (e) {
      peerError = e as CastellanError;
      if (input.authorization.length === 0) throw e;
    }
  }
  if (!deps.tokenAuth) {
    throw peerError ?? new CastellanError('UNAUTHENTICATED', 'auth.no_credentials', 'no client certificate from this CA and token authentication is not configured');
  }
  if (input.authorization.length === 0) {
    throw new CastellanError('UNAUTHENTICATED', 'auth.no_credentials', 'no credentials: send "authorization: Bearer <service-account token>" or a client certificate from this CA');
  }
  return deps.tokenAuth.authenticate({ authorization: input.authorization });
}

/** Validates the requested lifetime (seconds on the wire) and returns ms. */
export function requestedTtlMs(deps: Pick<CaServiceDeps, 'defaultTtlMs' | 'maxTtlMs'>, sec: bigint): number {
  if (sec < 0n) throw new CastellanError('INVALID_ARGUMENT', 'ttl.negative', `validity_duration must not be negative (got ${sec})`);
  if (sec === 0n) return deps.defaultTtlMs;
  if (sec * 1000n > BigInt(deps.maxTtlMs)) {
    throw new CastellanError('INVALID_ARGUMENT', 'ttl.too_long', `requested validity ${sec}s exceeds the maximum ${Math.floor(deps.maxTtlMs / 1000)}s`);
  }
  return Number(sec) * 1000;
}

/**
 * A full signing queue refuses before any CSR is read. A CSR whose shape is
 * wrong still gets its own INVALID_ARGUMENT rather than the retryable
 * RESOURCE_EXHAUSTED (an Istio agent would retry it for ever): the same error
 * the signer would give, since the shape is what it checks first. Nothing
 * further is judged here: the signature, an off-curve point and the identity
 * come after a public-key operation in the signer, and a CSR that fails one
 * of them is told so when it is retried, so the status of a request never
 * depends on the load. No public-key operation, so shedding stays cheap.
 */
function refusalOfShape(csr: string): CastellanError | undefined {
  try {
    checkCsrShape(csr);
    return undefined;
  } catch (e) {
    return e instanceof CastellanError ? e : undefined;
  }
}

/**
 * The identity asked for in `ImpersonatedIdentity`, once node authorization
 * allowed it; undefined when the caller asks for none or for its own.
 * Without node authorization, any other identity is refused (as before).
 */
function impersonationOf(deps: CaServiceDeps, caller: Caller, input: CertificateRequestInput): Impersonation | undefined {
  const requested = input.metadata?.ImpersonatedIdentity;
  if (requested === undefined || requested === caller.spiffeId) return undefined;
  if (!deps.nodeAuth) throw new CastellanError('PERMISSION_DENIED', 'auth.impersonation', 'ImpersonatedIdentity is not permitted for this caller');
  return deps.nodeAuth.authorizer.authorize(caller, requested, input.requestId);
}

export async function createCertificate(deps: CaServiceDeps, input: CertificateRequestInput): Promise<CertificateResponse> {
  const { metrics, logger } = deps;
  metrics.csrCount.inc();
  admitPeer(deps, input.peer);
  let caller: Caller;
  try {
    caller = await authenticate(deps, input);
  } catch (e) {
    const err = e instanceof CastellanError ? e : new CastellanError('UNAUTHENTICATED', 'auth.failed', 'authentication failed', { cause: e });
    metrics.authFailures.inc({ method: input.peerCertDer ? 'mtls' : 'token' });
    throw err;
  }
  const impersonation = impersonationOf(deps, caller, input);
  const subject = impersonation?.spiffeId ?? caller.spiffeId;
  // Per (caller, identity issued): a node agent gets a budget per workload identity on its node.
  if (deps.limits && !deps.limits.identity.tryTake(impersonation ? `${caller.spiffeId} as ${subject}` : subject)) {
    metrics.rateLimited.inc({ scope: 'identity' });
    throw new CastellanError('RESOURCE_EXHAUSTED', 'ratelimit.identity', 'too many certificate requests for this identity; retry with backoff');
  }
  const ttlMs = requestedTtlMs(deps, input.validityDurationSec);
  if (typeof input.csr !== 'string' || input.csr.length === 0) {
    metrics.csrParsingErrors.inc();
    throw new CastellanError('INVALID_ARGUMENT', 'csr.malformed', 'csr is empty');
  }
  let issued: IssueResult;
  try {
    issued = await deps.signer.issue({ csrPem: input.csr, spiffeId: subject, ttlMs, now: deps.clock.now(), signal: input.signal });
  } catch (thrown) {
    const e = thrown instanceof CastellanError && thrown.code === 'signer.queue_full' ? (refusalOfShape(input.csr) ?? thrown) : thrown;
    if (e instanceof CastellanError) {
      if (e.code.startsWith('csr.') && e.kind === 'INVALID_ARGUMENT') metrics.csrParsingErrors.inc();
      else metrics.csrSignErrors.inc({ error: e.code });
    } else {
      metrics.csrSignErrors.inc({ error: 'internal' });
    }
    throw e;
  }
  const view = deps.view();
  // The batch may have been cut just before a rotation: the chain is the issuer's own.
  const authority = view.authorities.get(issued.issuerId);
  if (!authority) throw new CastellanError('UNAVAILABLE', 'issuer.retired', 'the signing authority changed while this request was signed; retry');
  deps.onIssued?.(issued.issuerId, issued.notAfter);
  metrics.issued.inc();
  if (impersonation) {
    deps.nodeAuth!.metrics.issued.inc({ caller: impersonation.nodeAccount });
    // The audit line of an impersonated issuance: who asked, from which node, for whom, which certificate.
    logger.info(
      { event: 'ca.impersonated_issued', requestId: input.requestId, caller: caller.spiffeId, pod: caller.pod?.name, node: impersonation.node, spiffeId: subject, serial: issued.serialHex, notAfter: new Date(issued.notAfter).toISOString() },
      'issued certificate to a node agent for a workload on its node',
    );
  }
  // No child logger per request: pino re-runs redaction on a child's bindings (measurable on the hot path).
  else if (logger.isLevelEnabled('info')) {
    logger.info(
      { event: 'ca.issued', requestId: input.requestId, spiffeId: caller.spiffeId, auth: caller.method, serial: issued.serialHex, notAfter: new Date(issued.notAfter).toISOString(), issuer: issued.issuerId },
      'issued certificate',
    );
  }
  return {
    certChain: [issued.certPem, ...authority.chainPem, view.trustBundlePem],
    caller,
    serialHex: issued.serialHex,
    notAfter: issued.notAfter,
  };
}
