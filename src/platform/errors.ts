/**
 * The one error type of Castellan. Every failure a caller can see carries:
 * - `kind`: a transport-neutral category named after the gRPC canonical codes;
 *   it is mapped to a gRPC status in exactly one place (src/grpc/status.ts) and
 *   to CLI exit codes in src/cli;
 * - `code`: a stable, dotted identifier callers and tests can branch on
 *   (e.g. `csr.bad_signature`);
 * - `message`: safe to send to the caller and to log: it must never contain a
 *   private key, a token, a CSR or any other secret;
 * - `cause` (optional): the internal detail, for logs only, never on the wire.
 */
export type ErrorKind =
  | 'INVALID_ARGUMENT'
  | 'UNAUTHENTICATED'
  | 'PERMISSION_DENIED'
  | 'RESOURCE_EXHAUSTED'
  | 'UNAVAILABLE'
  | 'FAILED_PRECONDITION'
  | 'NOT_FOUND'
  | 'DEADLINE_EXCEEDED'
  | 'ALREADY_EXISTS'
  | 'ABORTED'
  | 'CANCELLED'
  | 'INTERNAL';

export class CastellanError extends Error {
  readonly kind: ErrorKind;
  readonly code: ErrorCode;

  constructor(kind: ErrorKind, code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CastellanError';
    this.kind = kind;
    this.code = code;
  }
}

export function isCastellanError(e: unknown): e is CastellanError {
  return e instanceof CastellanError;
}

/** Wraps anything thrown into a CastellanError without leaking its message to callers. */
export function asCastellanError(e: unknown, fallbackCode: ErrorCode = 'internal'): CastellanError {
  if (e instanceof CastellanError) return e;
  return new CastellanError('INTERNAL', fallbackCode, 'internal error', { cause: e });
}

/**
 * Every error code, one line each: the registry `CastellanError` takes its
 * `code` from, so a misspelled code (thrown or compared) is a compile error.
 * To add a code, add its line here, in its area, in alphabetical order;
 * codes are stable (clients, dashboards and tests branch on them): rename
 * one only with its users. Codes built from parts stay checked through
 * their types: `${KubeArea}.forbidden` (src/kube/api-errors.ts),
 * `jwtsvid.${CodeSuffix<'jwtsvid'>}` (src/workload/jwt.ts); a code read at
 * run time (e.g. from a gRPC status name) goes through isErrorCode.
 */
export const ERROR_CODES = [
  // (general)
  'internal',
  // admin
  'admin.kind',
  'admin.no_jwt',
  // agent
  'agent.bad_response',
  'agent.ca_root',
  'agent.issue_failed',
  // auth
  'auth.bad_header',
  'auth.failed',
  'auth.impersonation',
  'auth.impersonation_mtls',
  'auth.impersonation_unavailable',
  'auth.internal',
  'auth.issuer_tainted',
  'auth.jwks_unavailable',
  'auth.no_credentials',
  'auth.oidc_discovery',
  'auth.peer_certificate',
  'auth.token_alg',
  'auth.token_claims',
  'auth.token_expired',
  'auth.token_header',
  'auth.token_malformed',
  'auth.token_signature',
  'auth.token_subject',
  'auth.token_unknown_key',
  'auth.tokenreview_refused',
  'auth.tokenreview_unavailable',
  // authz
  'authz.duplicate_policy',
  'authz.invalid_option',
  'authz.invalid_policy',
  'authz.invalid_request',
  'authz.invalid_suite',
  // bundle
  'bundle.conflict',
  'bundle.forbidden',
  'bundle.invalid',
  'bundle.not_found',
  'bundle.rejected',
  'bundle.unavailable',
  // ca
  'ca.bad_key',
  'ca.chain',
  'ca.expired',
  'ca.key_mismatch',
  'ca.key_type',
  'ca.no_roots',
  'ca.no_ski',
  'ca.not_ca',
  'ca.not_yet_valid',
  // ca_client
  'ca_client.aborted',
  'ca_client.already_exists',
  'ca_client.cancelled',
  'ca_client.data_loss',
  'ca_client.deadline_exceeded',
  'ca_client.failed',
  'ca_client.failed_precondition',
  'ca_client.internal',
  'ca_client.invalid_argument',
  'ca_client.not_found',
  'ca_client.out_of_range',
  'ca_client.permission_denied',
  'ca_client.resource_exhausted',
  'ca_client.token_file',
  'ca_client.unauthenticated',
  'ca_client.unavailable',
  'ca_client.unimplemented',
  'ca_client.unknown',
  // cert
  'cert.malformed',
  // config
  'config.invalid',
  // console
  'console.admin_unreachable',
  // csr
  'csr.bad_signature',
  'csr.identity_mismatch',
  'csr.key_policy',
  'csr.malformed',
  // federation
  'federation.endpoint_cert',
  'federation.endpoint_listen',
  'federation.format',
  'federation.own_trust_domain',
  'federation.trust_domain',
  'federation.unknown_trust_domain',
  // files
  'files.not_dir',
  'files.not_file',
  'files.perms',
  'files.symlink',
  // issue
  'issue.bad_request',
  // issuer
  'issuer.expired',
  'issuer.retired',
  // jwt
  'jwt.audience',
  'jwt.no_key',
  // jwtsvid
  'jwtsvid.alg',
  'jwtsvid.audience',
  'jwtsvid.claims',
  'jwtsvid.expired',
  'jwtsvid.header',
  'jwtsvid.internal',
  'jwtsvid.malformed',
  'jwtsvid.missing',
  'jwtsvid.signature',
  'jwtsvid.tainted',
  'jwtsvid.unknown_key',
  'jwtsvid.untrusted_domain',
  // keystore
  'keystore.conflict',
  'keystore.corrupt',
  'keystore.deleted',
  'keystore.forbidden',
  'keystore.locked',
  'keystore.no_namespace',
  'keystore.not_found',
  'keystore.rejected',
  'keystore.trust_domain',
  'keystore.unavailable',
  'keystore.vanished',
  'keystore.write_failed',
  // leaf
  'leaf.encoding',
  // lease
  'lease.config',
  'lease.timeout',
  // ops
  'ops.listen',
  'ops.worker_exit',
  // peer
  'peer.no_certificate',
  'peer.not_allowed',
  'peer.spiffe_id',
  // pem
  'pem.empty',
  'pem.malformed',
  // plugin
  'plugin.invalid',
  'plugin.missing',
  // ratelimit
  'ratelimit.identity',
  'ratelimit.peer',
  // rotation
  'rotation.active',
  'rotation.already_prepared',
  'rotation.ambiguous_id',
  'rotation.bad_state',
  'rotation.exists',
  'rotation.guard',
  'rotation.not_valid',
  'rotation.nothing_prepared',
  'rotation.nothing_to_retire',
  'rotation.nothing_to_taint',
  'rotation.plugin_mode',
  'rotation.shared_key',
  'rotation.tainted_key',
  'rotation.unknown_authority',
  'rotation.unknown_key',
  // sds
  'sds.bad_type_url',
  'sds.missing_node',
  'sds.no_names',
  'sds.not_ready',
  'sds.socket_changed',
  'sds.socket_dir',
  'sds.socket_dir_owner',
  'sds.socket_dir_symlink',
  'sds.socket_in_use',
  'sds.socket_not_socket',
  'sds.socket_owner',
  'sds.socket_symlink',
  'sds.unknown_resource',
  // signer
  'signer.abandoned',
  'signer.closed',
  'signer.internal',
  'signer.no_issuer',
  'signer.no_outcome',
  'signer.options',
  'signer.queue_full',
  'signer.worker_failed',
  // spiffe
  'spiffe.invalid_id',
  // ttl
  'ttl.negative',
  'ttl.too_long',
  // web
  'web.bundle',
  'web.listen',
  // workload
  'workload.audience',
  'workload.header',
  'workload.jwt_unavailable',
  'workload.no_ca',
  'workload.not_entitled',
  // the doubles of tests (test/server/ca-service.test.ts, test/rotation/harness.ts, test/agent/fake-ca.ts)
  'auth.test',
  'fake.fail',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/** The part after `area.` of every registered code of that area (e.g. CodeSuffix<'jwtsvid'> = 'alg' | 'audience' | …). */
export type CodeSuffix<Area extends string> = ErrorCode extends infer C ? (C extends `${Area}.${infer S}` ? S : never) : never;

const KNOWN: ReadonlySet<string> = new Set(ERROR_CODES);

/** Whether a string built at run time is a registered code. */
export function isErrorCode(s: string): s is ErrorCode {
  return KNOWN.has(s);
}
