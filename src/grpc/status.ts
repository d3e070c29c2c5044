/**
 * The one place where Castellan errors become gRPC statuses.
 * Istio's agent retries UNAVAILABLE, RESOURCE_EXHAUSTED, ABORTED, INTERNAL,
 * DEADLINE_EXCEEDED and CANCELLED, and never UNAUTHENTICATED or
 * INVALID_ARGUMENT, so the kind chosen for each failure matters.
 */
import * as grpc from '@grpc/grpc-js';
import { asCastellanError, type ErrorKind } from '../platform/errors.ts';

/** The trailer that carries a refusal's stable Castellan code (`auth.token_expired`, `csr.malformed`, …). */
export const ERROR_TRAILER = 'x-castellan-error';

export const STATUS_OF: Record<ErrorKind, grpc.status> = {
  INVALID_ARGUMENT: grpc.status.INVALID_ARGUMENT,
  UNAUTHENTICATED: grpc.status.UNAUTHENTICATED,
  PERMISSION_DENIED: grpc.status.PERMISSION_DENIED,
  RESOURCE_EXHAUSTED: grpc.status.RESOURCE_EXHAUSTED,
  UNAVAILABLE: grpc.status.UNAVAILABLE,
  FAILED_PRECONDITION: grpc.status.FAILED_PRECONDITION,
  NOT_FOUND: grpc.status.NOT_FOUND,
  DEADLINE_EXCEEDED: grpc.status.DEADLINE_EXCEEDED,
  ALREADY_EXISTS: grpc.status.ALREADY_EXISTS,
  ABORTED: grpc.status.ABORTED,
  CANCELLED: grpc.status.CANCELLED,
  INTERNAL: grpc.status.INTERNAL,
};

/**
 * Converts anything thrown into a grpc-js error object. Only the public
 * message travels; causes stay in logs. The stable code is sent as the
 * `x-castellan-error` trailer so clients can branch on it.
 */
export function toGrpcError(e: unknown): Partial<grpc.StatusObject> & { code: grpc.status; details: string } {
  const err = asCastellanError(e);
  const metadata = new grpc.Metadata();
  metadata.set(ERROR_TRAILER, err.code);
  return { code: STATUS_OF[err.kind], details: err.message, metadata };
}
