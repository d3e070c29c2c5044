/**
 * gRPC wiring of Envoy's external authorization service
 * (envoy.service.auth.v3.Authorization/Check) over the transport-free adapter
 * in src/authz/ext-authz.ts.
 *
 * Each call reads the active engine once, so a policy reload in the middle of
 * a call changes nothing for that call. A check that cannot be mapped or
 * evaluated is denied (fail closed) and logged; the handler never throws.
 */
import * as grpc from '@grpc/grpc-js';
import { Authorization, type CheckRequest, type CheckResponse } from '../gen/envoy/service/auth/v3/external_auth_pb.js';
import type { AuthzEngine, CustomDecision } from '../authz/engine.ts';
import { checkRequestToAuthz, decisionToCheckResponse, deniedResponse, UnmappableCheck, type ExtAuthzDefaults } from '../authz/ext-authz.ts';
import type { AuthzMetrics } from '../authz/metrics.ts';
import { uriSans } from '../identity/mtls.ts';
import type { Logger } from '../platform/logger.ts';
import { parsePem } from '../platform/pem.ts';
import { addService, bindServer, shutdownServer } from './service.ts';

export interface ExtAuthzServerOptions {
  /** `host:port` or `unix:/path`. */
  readonly listen: string;
  /** The engine to use for the next call (read once per call). */
  readonly engine: () => AuthzEngine;
  readonly defaults?: ExtAuthzDefaults;
  readonly customDecision?: CustomDecision;
  readonly metrics?: AuthzMetrics;
  readonly logger: Logger;
  /** Largest CheckRequest accepted (bytes); default 4 MiB (requests may carry a body). */
  readonly maxRequestBytes?: number;
}

export interface ExtAuthzServer {
  /** The bound address (`host:port` with the real port, or the unix path). */
  readonly address: string;
  close(): Promise<void>;
}

/**
 * The SPIFFE ID of a peer certificate as Envoy sends it (URL-encoded PEM),
 * read structurally from the SAN extension (security.md C7): exactly one
 * spiffe:// URI SAN, otherwise none.
 */
export function spiffeIdOfCertificate(urlEncodedPem: string): string | undefined {
  try {
    const pem = decodeURIComponent(urlEncodedPem);
    const cert = parsePem(pem, { outside: 'ignore' }).find((b) => b.label === 'CERTIFICATE');
    if (!cert) return undefined;
    const ids = uriSans(cert.der).filter((u) => u.startsWith('spiffe://'));
    return ids.length === 1 ? ids[0] : undefined;
  } catch {
    return undefined;
  }
}

export function createCheckHandler(o: Omit<ExtAuthzServerOptions, 'listen' | 'maxRequestBytes'>): (req: CheckRequest) => CheckResponse {
  return (req) => {
    const started = process.hrtime.bigint();
    const engine = o.engine();
    const http = req.attributes?.request?.http !== undefined;
    let res: CheckResponse;
    try {
      const ar = checkRequestToAuthz(req, o.defaults);
      const d = engine.evaluate(ar, { customDecision: o.customDecision ?? 'deny' });
      o.metrics?.decisions.inc({ decision: d.decision, action: d.action ?? 'none' });
      if (o.logger.isLevelEnabled('debug')) {
        o.logger.debug({ event: 'authz.check', decision: d.decision, policy: d.policy, reason: d.reason, rule: d.rule, workload: ar.workload.namespace }, 'check');
      }
      res = decisionToCheckResponse(d, http);
    } catch (e) {
      const reason = e instanceof UnmappableCheck ? 'invalid-check-request' : 'internal-error';
      o.metrics?.checkErrors.inc({ reason });
      o.metrics?.decisions.inc({ decision: 'DENY', action: 'none' });
      if (e instanceof UnmappableCheck) o.logger.warn({ event: 'authz.check_unmappable', error: e.message }, 'check request denied: cannot map it to a workload');
      else o.logger.error({ event: 'authz.check_failed', err: e }, 'check failed: denied');
      res = deniedResponse('none', reason, http);
    }
    o.metrics?.checkDuration.observe(Number(process.hrtime.bigint() - started) / 1e9);
    return res;
  };
}

export async function startExtAuthzServer(o: ExtAuthzServerOptions): Promise<ExtAuthzServer> {
  const max = o.maxRequestBytes ?? 4 * 1024 * 1024;
  const server = new grpc.Server({ 'grpc.max_receive_message_length': max, 'grpc.max_send_message_length': 1024 * 1024 });
  const check = createCheckHandler({ ...o, defaults: { principalFromCertificate: spiffeIdOfCertificate, ...o.defaults } });
  addService(server, Authorization, {
    check: (call, callback) => {
      callback(null, check(call.request));
    },
  });
  const port = await bindServer(server, o.listen, grpc.ServerCredentials.createInsecure());
  const address = o.listen.startsWith('unix:') ? o.listen : `${o.listen.slice(0, o.listen.lastIndexOf(':'))}:${port}`;
  let closed = false;
  return {
    address,
    async close() {
      if (closed) return;
      closed = true;
      await shutdownServer(server, 2000);
    },
  };
}
