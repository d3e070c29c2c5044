/** The agent's view of a CA refusal keeps the server's stable error code (x-castellan-error) for its logs. */
import * as grpc from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { fromGrpcError } from '../../src/agent/ca-client.ts';

function serviceError(code: grpc.status, details: string, trailer?: string): grpc.ServiceError {
  const metadata = new grpc.Metadata();
  if (trailer !== undefined) metadata.set('x-castellan-error', trailer);
  return Object.assign(new Error(details), { code, details, metadata });
}

describe('fromGrpcError', () => {
  it('ok/names the server code of the x-castellan-error trailer beside the status', () => {
    const e = fromGrpcError(serviceError(grpc.status.PERMISSION_DENIED, 'ImpersonatedIdentity is not permitted for this caller', 'auth.impersonation'));
    expect(e.kind).toBe('PERMISSION_DENIED');
    expect(e.code).toBe('ca_client.permission_denied');
    expect(e.message).toBe('CA answered PERMISSION_DENIED (auth.impersonation): ImpersonatedIdentity is not permitted for this caller');
  });
  it('ok/without the trailer (a proxy, another CA) the message has the status alone', () => {
    expect(fromGrpcError(serviceError(grpc.status.UNAVAILABLE, 'connection refused')).message).toBe('CA answered UNAVAILABLE: connection refused');
  });
  it('fail/a trailer that is not a plain code is not echoed into the logs', () => {
    expect(fromGrpcError(serviceError(grpc.status.INTERNAL, 'x', 'forged: see https://evil.example')).message).toBe('CA answered INTERNAL: x');
  });
});
