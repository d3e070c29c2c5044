/**
 * What every RPC handler of the CA server reads from a grpc-js call: the
 * caller's credentials (bearer tokens, verified TLS client certificate) and a
 * request id for its log lines.
 */
import { randomBytes } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';
import type { CallerCredentials } from './ca-service.ts';

/** Every value of the `authorization` metadata key, as text (authentication looks at all of them). */
function authorizationOf(md: grpc.Metadata): string[] {
  return md.get('authorization').map((v) => (typeof v === 'string' ? v : v.toString('latin1')));
}

/** The credentials a call carries: its `authorization` values and the client certificate TLS verified. */
export function callerCredentials(call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>): CallerCredentials {
  return { authorization: authorizationOf(call.metadata), peerCertDer: call.getAuthContext()?.sslPeerCertificate?.raw };
}

/** Request ids: unique per process start (random prefix) and cheap (a counter), not secret. */
const BOOT_ID = randomBytes(4).toString('hex');
let requestCounter = 0;
export function nextRequestId(): string {
  return `${BOOT_ID}-${(++requestCounter).toString(36)}`;
}
