/**
 * The Workload API part of `castellan dev`: a workload that is not Envoy
 * (plain Node TLS, like any go-spiffe or py-spiffe program) takes its
 * identity from its agent's SPIFFE Workload API and calls the backend over
 * mutual TLS; it then fetches a JWT-SVID for the backend's audience, and
 * the backend checks it through its own agent's ValidateJWTSVID.
 */
import * as grpc from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import {
  JWTSVIDRequestSchema,
  SpiffeWorkloadAPI,
  ValidateJWTSVIDRequestSchema,
  X509SVIDRequestSchema,
  type X509SVIDResponse,
} from '../gen/spiffe/workload/workload_pb.js';
import { createClient } from '../grpc/service.ts';
import { derToPem } from '../platform/pem.ts';
import { splitDer } from '../workload/der.ts';
import type { Logger } from '../platform/logger.ts';
import type { WorkloadSecrets } from './sds-client.ts';
import { callBackend } from './workloads.ts';

/** A Workload API client on `socket` (the security header on every call). */
export function workloadApiClient(socket: string) {
  const client = createClient(SpiffeWorkloadAPI, `unix:${socket}`, grpc.credentials.createInsecure());
  const md = (): grpc.Metadata => {
    const m = new grpc.Metadata();
    m.set('workload.spiffe.io', 'true');
    return m;
  };
  return {
    /** Streams the X.509-SVID as PEM secrets, now and on every change; returns the canceller. */
    watchX509(onUpdate: (s: WorkloadSecrets & { spiffeId: string }) => void, onError: (e: Error) => void): () => void {
      const call = client.fetchX509SVID(create(X509SVIDRequestSchema, {}), { metadata: md() });
      let n = 0;
      call.on('data', (r: X509SVIDResponse) => {
        const s = r.svids[0];
        if (!s) return;
        onUpdate({
          spiffeId: s.spiffeId,
          keyPem: derToPem(s.x509SvidKey, 'PRIVATE KEY'),
          chainPem: splitDer(s.x509Svid).map((d) => derToPem(d)).join(''),
          bundlePem: splitDer(s.bundle).map((d) => derToPem(d)).join(''),
          version: String(++n),
        });
      });
      call.on('error', (e: grpc.ServiceError) => {
        if (e.code !== grpc.status.CANCELLED) onError(e);
      });
      return () => call.cancel();
    },
    async fetchJwt(audience: string): Promise<{ spiffeId: string; token: string }> {
      const r = await client.fetchJWTSVID(create(JWTSVIDRequestSchema, { audience: [audience] }), { metadata: md(), deadline: Date.now() + 10_000 });
      return { spiffeId: r.svids[0]!.spiffeId, token: r.svids[0]!.svid };
    },
    async validateJwt(audience: string, token: string): Promise<string> {
      const r = await client.validateJWTSVID(create(ValidateJWTSVIDRequestSchema, { audience, svid: token }), { metadata: md(), deadline: Date.now() + 10_000 });
      return r.spiffeId;
    },
    close: () => client.close(),
  };
}

const claimsOf = (token: string): { kid?: string; exp?: number } => ({
  ...(JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString()) as { kid?: string }),
  ...(JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { exp?: number }),
});

/**
 * Starts the non-Envoy workload: every X.509-SVID it receives is used for a
 * mutual-TLS call to the backend; the first time, a JWT-SVID round trip too.
 * `done` settles after the first round (mTLS call and JWT-SVID checks).
 */
export function startWorkloadApiDemo(o: {
  /** the frontend agent's Workload API socket (the caller's identity) */
  callerSocket: string;
  /** the backend agent's Workload API socket (validates JWT-SVIDs for the backend) */
  backendSocket: string;
  backendPort: () => number;
  backendId: string;
  print: (line: string) => void;
  logger: Logger;
}): { done: Promise<void>; close: () => void } {
  let settle!: (e?: Error) => void;
  const done = new Promise<void>((res, rej) => (settle = (e) => (e ? rej(e) : res())));
  const caller = workloadApiClient(o.callerSocket);
  const backend = workloadApiClient(o.backendSocket);
  let first = true;
  const onSvid = async (s: WorkloadSecrets & { spiffeId: string }): Promise<void> => {
    const r = await callBackend({ port: o.backendPort(), secrets: s, expectServer: o.backendId });
    o.print(`workload  a client without Envoy (plain Node TLS) took ${s.spiffeId} from the Workload API → backend over mutual TLS: OK, backend says "${r.reply}"`);
    if (!first) return;
    first = false;
    const jwt = await caller.fetchJwt(o.backendId);
    const c = claimsOf(jwt.token);
    o.print(`jwt-svid  minted for ${jwt.spiffeId}, aud ${o.backendId}, kid ${c.kid?.slice(0, 12)}…, expires ${new Date((c.exp ?? 0) * 1000).toISOString().slice(11, 19)}Z`);
    const who = await backend.validateJwt(o.backendId, jwt.token);
    o.print(`jwt-svid  the backend's agent validated it (ValidateJWTSVID): caller is ${who}`);
    const refused = await backend.validateJwt('spiffe://elsewhere/other', jwt.token).then(
      () => undefined,
      (e: grpc.ServiceError) => `${grpc.status[e.code]} (${e.details})`,
    );
    if (!refused) throw new Error('the JWT-SVID was accepted for another audience');
    o.print(`jwt-svid  for another audience it is refused: ${refused}`);
  };
  const stop = caller.watchX509(
    (s) =>
      void onSvid(s).then(
        () => settle(),
        (e: unknown) => {
          o.print(`workload  Workload API demo step FAILED: ${(e as Error).message}`);
          settle(e as Error);
        },
      ),
    (e) => {
      o.logger.warn({ event: 'dev.workload_api_stream', err: e.message }, 'Workload API stream ended');
      settle(e);
    },
  );
  done.catch(() => undefined);
  return {
    done,
    close: () => {
      stop();
      caller.close();
      backend.close();
    },
  };
}
