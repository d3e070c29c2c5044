/**
 * castellan.v1.TrustService over grpc-js: WatchBundle streams the trust
 * bundle (and the tainted authorities) to an authenticated caller now and on
 * every keyring change, until the caller goes away.
 */
import { create } from '@bufbuild/protobuf';
import type * as grpc from '@grpc/grpc-js';
import type { KeyringView } from '../ca/keyring.ts';
import { BundleUpdateSchema, type BundleUpdate, type TrustService, type WatchBundleRequest } from '../gen/castellan/v1/trust_pb.js';
import type { GrpcHandlers } from '../grpc/service.ts';
import { toGrpcError } from '../grpc/status.ts';
import { admitPeer, authenticate, type CaServiceDeps } from './ca-service.ts';
import { callerCredentials, nextRequestId } from './call.ts';

/** The open WatchBundle streams; the keyring fan-out calls each on every change. */
export type BundleWatchers = Set<(v: KeyringView) => void>;

/** More fields of every update (the JWT bundle, src/server/jwt-service.ts; the federated bundles, src/server/federation.ts). */
export type BundleExtra = () => Partial<Pick<BundleUpdate, 'jwtBundleJson' | 'taintedJwtKeys' | 'jwtMaxTtlSeconds' | 'federatedBundles'>>;

function watchBundle(deps: CaServiceDeps, watchers: BundleWatchers, call: grpc.ServerWritableStream<WatchBundleRequest, BundleUpdate>, extra?: BundleExtra): void {
  const creds = callerCredentials(call);
  const requestId = nextRequestId();
  const send = (v: KeyringView): void => {
    call.write(create(BundleUpdateSchema, { trustBundlePem: v.trustBundlePem, taintedAuthorityIds: [...v.taintedIds], generation: BigInt(v.generation), activeAuthorityId: v.active.id, ...extra?.() }));
  };
  let watcher: ((v: KeyringView) => void) | undefined;
  const stop = (): void => {
    if (watcher) watchers.delete(watcher);
    watcher = undefined;
  };
  call.on('cancelled', stop);
  call.on('close', stop);
  call.on('error', stop);
  // A server-streaming call ends with a status by emitting it as an error (destroy() would
  // leave the stream open without one).
  const refuse = (e: unknown): void => {
    stop();
    call.emit('error', toGrpcError(e));
  };
  try {
    admitPeer(deps, call.getPeer());
  } catch (e) {
    refuse(e);
    return;
  }
  authenticate(deps, creds).then(
    (caller) => {
      if (call.cancelled) return;
      deps.logger.debug({ event: 'trust.watch', requestId, spiffeId: caller.spiffeId }, 'bundle watch opened');
      watcher = send;
      watchers.add(watcher);
      send(deps.view());
    },
    (e: unknown) => {
      deps.metrics.authFailures.inc({ method: creds.peerCertDer ? 'mtls' : 'token' });
      refuse(e);
    },
  );
}

export function trustService(deps: CaServiceDeps, watchers: BundleWatchers, extra?: BundleExtra): GrpcHandlers<(typeof TrustService)['method']> {
  return { watchBundle: (call) => watchBundle(deps, watchers, call, extra) };
}
