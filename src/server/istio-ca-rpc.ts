/**
 * istio.v1.auth.IstioCertificateService over grpc-js: moves bytes and
 * statuses to and from createCertificate (ca-service.ts), logs the refusals
 * and measures every answer. Response headers (x-request-id) go out with the
 * answer, in one write.
 */
import * as grpc from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import { IstioCertificateResponseSchema, type IstioCertificateService, type IstioCertificateResponse, type IstioCertificateRequest } from '../gen/istio/v1/auth/ca_pb.js';
import type { GrpcHandlers } from '../grpc/service.ts';
import { STATUS_OF, toGrpcError } from '../grpc/status.ts';
import { asCastellanError, type CastellanError } from '../platform/errors.ts';
import { createCertificate, type CaServiceDeps } from './ca-service.ts';
import { callerCredentials, nextRequestId } from './call.ts';

type Answer = { ok: true; res: IstioCertificateResponse } | { ok: false; err: CastellanError };

/** CreateCertificate: answered, logged, measured. */
async function answerCreate(deps: CaServiceDeps, call: grpc.ServerUnaryCall<IstioCertificateRequest, IstioCertificateResponse>, requestId: string): Promise<Answer> {
  const { logger, metrics } = deps;
  const req = call.request;
  const peer = call.getPeer();
  const started = process.hrtime.bigint();
  // grpc-js emits 'cancelled' when the client cancels, its deadline passes or the connection drops.
  const gone = new AbortController();
  call.once('cancelled', () => gone.abort());
  let a: Answer;
  try {
    const res = await createCertificate(deps, { ...callerCredentials(call), csr: req.csr, validityDurationSec: req.validityDuration, metadata: req.metadata, requestId, peer, signal: gone.signal });
    a = { ok: true, res: create(IstioCertificateResponseSchema, { certChain: res.certChain }) };
  } catch (e) {
    const err = asCastellanError(e);
    // A caller that went away hears nothing; the csr_sign_errors metric counts those.
    const level = err.kind === 'INTERNAL' ? 'error' : err.kind === 'CANCELLED' ? 'debug' : 'warn';
    logger[level]({ event: 'ca.request_failed', requestId, peer, code: grpc.status[STATUS_OF[err.kind]], reason: err.code, err: level === 'error' ? e : undefined }, err.message);
    a = { ok: false, err };
  }
  metrics.latency.observe({ code: grpc.status[a.ok ? grpc.status.OK : STATUS_OF[a.err.kind]] }, Number(process.hrtime.bigint() - started) / 1e9);
  return a;
}

export function istioCertificateService(deps: CaServiceDeps): GrpcHandlers<(typeof IstioCertificateService)['method']> {
  return {
    createCertificate(call, callback) {
      const requestId = nextRequestId();
      const sendHeaders = (): void => {
        const md = new grpc.Metadata();
        md.set('x-request-id', requestId);
        call.sendMetadata(md);
      };
      answerCreate(deps, call, requestId).then(
        (a) => {
          sendHeaders();
          if (a.ok) callback(null, a.res);
          else callback(toGrpcError(a.err));
        },
        (e: unknown) => {
          deps.logger.error({ event: 'ca.handler_crash', requestId, err: e }, 'unexpected error in CreateCertificate');
          sendHeaders();
          callback(toGrpcError(e));
        },
      );
    },
  };
}
