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
  readonly code: string;

  constructor(kind: ErrorKind, code: string, message: string, options?: { cause?: unknown }) {
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
export function asCastellanError(e: unknown, fallbackCode = 'internal'): CastellanError {
  if (e instanceof CastellanError) return e;
  return new CastellanError('INTERNAL', fallbackCode, 'internal error', { cause: e });
}
