/**
 * The admin API (`castellan.v1.AdminService`) on a Unix socket: plain gRPC,
 * the socket (0600, in a 0700 directory, owner only) is the access control,
 * as with SPIRE's admin socket. Thin adapters over CaManager, which owns
 * the guard rails; every refusal is a precise status with the reason.
 */
import * as grpc from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import {
  AdminService,
  AuthoritySchema,
  DeleteBundleResponseSchema,
  FederatedBundleInfoSchema,
  ListBundlesResponseSchema,
  ShowBundleResponseSchema,
  StatusResponseSchema,
  TransitionResponseSchema,
  type Authority,
  type FederatedBundleInfo,
} from '../gen/castellan/v1/admin_pb.js';
import { addService, bindServer, shutdownServer } from '../grpc/service.ts';
import { toGrpcError } from '../grpc/status.ts';
import type { AuthorityStatus, CaManager } from '../ca/manager.ts';
import { derToPem } from '../platform/pem.ts';
import type { TransitionResult } from '../ca/keyring.ts';
import type { JwtKeyManager, JwtKeyStatus } from '../ca/jwt-manager.ts';
import type { JwtTransition } from '../ca/jwt-keys.ts';
import { CastellanError } from '../platform/errors.ts';
import type { Logger } from '../platform/logger.ts';
import { prepareSocketPath, secureBoundSocket } from '../sds/socket.ts';
import { authoritiesPem } from '../spiffe/bundle.ts';
import type { FederatedBundleSummary, Federation } from './federation.ts';

export interface AdminServer {
  readonly socketPath: string;
  close(): Promise<void>;
}

export function authorityMessage(s: AuthorityStatus): Authority {
  return create(AuthoritySchema, {
    id: s.id,
    state: s.state,
    source: s.source,
    keyType: s.keyType,
    subject: s.subject,
    notBefore: s.notBefore,
    notAfter: s.notAfter,
    liveLeaves: BigInt(s.liveLeaves),
    issued: BigInt(s.issued),
    lastLeafNotAfter: s.lastLeafNotAfter ?? '',
    retireSafeAt: s.retireSafeAt ?? '',
    preparedAt: s.preparedAt ?? '',
    activatedAt: s.activatedAt ?? '',
    deactivatedAt: s.deactivatedAt ?? '',
    taintedAt: s.taintedAt ?? '',
    retiredAt: s.retiredAt ?? '',
  });
}

/** A JWT key as an Authority message: source "jwt", key_type the JWS alg, no subject. */
export function jwtKeyMessage(k: JwtKeyStatus): Authority {
  return create(AuthoritySchema, {
    id: k.kid,
    state: k.state,
    source: 'jwt',
    keyType: k.alg,
    notBefore: k.createdAt,
    notAfter: k.notAfter,
    issued: BigInt(k.issued),
    lastLeafNotAfter: k.lastTokenNotAfter ?? '',
    retireSafeAt: k.retireSafeAt ?? '',
    preparedAt: k.preparedAt ?? '',
    activatedAt: k.activatedAt ?? '',
    deactivatedAt: k.deactivatedAt ?? '',
    taintedAt: k.taintedAt ?? '',
    retiredAt: k.retiredAt ?? '',
  });
}

export function federatedBundleMessage(s: FederatedBundleSummary): FederatedBundleInfo {
  return create(FederatedBundleInfoSchema, {
    trustDomain: s.trustDomain,
    source: s.source,
    endpointUrl: s.endpointUrl,
    sequence: BigInt(s.sequence),
    updatedAt: s.updatedAt,
    lastRefresh: s.lastRefresh ?? '',
    x509Authorities: s.x509Authorities,
    jwtAuthorities: s.jwtAuthorities,
    lastError: s.lastError ?? '',
  });
}

/** The `castellan bundle` calls. */
function bundleHandlers(federation: Federation) {
  return {
    showBundle: async (req: { format: string }) => {
      const own = federation.ownBundle();
      if (req.format !== '' && req.format !== 'spiffe' && req.format !== 'pem') throw new CastellanError('INVALID_ARGUMENT', 'federation.format', `format must be "spiffe" or "pem", got "${req.format.slice(0, 32)}"`);
      const text = req.format === 'pem' ? authoritiesPem(own.x509Authorities) : federation.ownBundleDocument();
      return create(ShowBundleResponseSchema, { trustDomain: own.trustDomain, text, sequence: BigInt(own.sequence ?? 0) });
    },
    setBundle: async (req: { trustDomain: string; text: string; format: string }) => federatedBundleMessage(await federation.setManual(req.trustDomain, req.text, req.format)),
    deleteBundle: async (req: { trustDomain: string }) => {
      await federation.delete(req.trustDomain);
      return create(DeleteBundleResponseSchema, {});
    },
    listBundles: async () => create(ListBundlesResponseSchema, { bundles: federation.list().map(federatedBundleMessage) }),
  };
}

/** Which keyring a transition is about: "x509" (or empty) or "jwt". */
function kindOf(kind: string, jwtKeys: JwtKeyManager | undefined): 'x509' | JwtKeyManager {
  if (kind === '' || kind === 'x509') return 'x509';
  if (kind !== 'jwt') throw new CastellanError('INVALID_ARGUMENT', 'admin.kind', `kind must be "x509" or "jwt", got "${kind.slice(0, 32)}"`);
  if (!jwtKeys) throw new CastellanError('FAILED_PRECONDITION', 'admin.no_jwt', 'this server mints no JWT-SVIDs (--no-jwt-svid): it has no JWT keys');
  return jwtKeys;
}

export async function startAdminServer(o: {
  socketPath: string;
  manager: CaManager;
  jwtKeys?: JwtKeyManager;
  federation: Federation;
  keystoreWhere: string;
  propagationMs: number;
  autoRotate: boolean;
  isLeader: () => boolean;
  logger: Logger;
}): Promise<AdminServer> {
  const { manager, logger } = o;
  const path = await prepareSocketPath(o.socketPath);
  const server = new grpc.Server({ 'grpc.max_receive_message_length': 256 * 1024 });
  const answer = (r: TransitionResult) => {
    const s = manager.status().find((a) => a.id === r.authority.id)!;
    return create(TransitionResponseSchema, { authority: authorityMessage(s), forcedRisk: r.forcedRisk ?? '' });
  };
  const answerJwt = (jwt: JwtKeyManager, r: JwtTransition) => {
    const s = jwt.status().find((k) => k.kid === r.key.kid)!;
    return create(TransitionResponseSchema, { authority: jwtKeyMessage(s), forcedRisk: r.forcedRisk ?? '' });
  };
  const unary =
    <Req, Res>(name: string, fn: (req: Req) => Promise<Res>): grpc.handleUnaryCall<Req, Res> =>
    (call, callback) => {
      fn(call.request).then(
        (res) => callback(null, res),
        (e: unknown) => {
          const g = toGrpcError(e);
          logger[g.code === grpc.status.INTERNAL ? 'error' : 'warn']({ event: 'admin.refused', call: name, code: grpc.status[g.code], reason: e instanceof CastellanError ? e.code : 'internal', err: g.code === grpc.status.INTERNAL ? e : undefined }, g.details);
          callback(g);
        },
      );
    };
  const status = () => {
    const next = manager.nextAutoStep();
    return create(StatusResponseSchema, {
      trustDomain: manager.view().trustDomain,
      generation: BigInt(manager.view().generation),
      leader: o.isLeader(),
      keystore: o.keystoreWhere,
      propagationSeconds: BigInt(Math.round(o.propagationMs / 1000)),
      authorities: manager.status().map(authorityMessage),
      autoRotation: o.autoRotate,
      jwtKeys: o.jwtKeys?.status().map(jwtKeyMessage) ?? [],
      trustBundlePem: manager.view().rootsDer.map((d) => derToPem(d)),
      nextStep: next.step?.kind ?? '',
      nextStepAuthorityId: next.step && next.step.kind !== 'prepare' ? next.step.id : '',
      nextStepAt: new Date(next.recheckAt).toISOString(),
    });
  };
  const bundles = bundleHandlers(o.federation);
  addService(server, AdminService, {
    showBundle: unary('ShowBundle', bundles.showBundle),
    setBundle: unary('SetBundle', bundles.setBundle),
    deleteBundle: unary('DeleteBundle', bundles.deleteBundle),
    listBundles: unary('ListBundles', bundles.listBundles),
    status: unary('Status', async () => status()),
    prepare: unary('Prepare', async (req) => {
      const k = kindOf(req.kind, o.jwtKeys);
      return k === 'x509' ? answer(await manager.prepare()) : answerJwt(k, await k.prepare());
    }),
    import: unary('Import', async (req) =>
      answer(await manager.importPlugin({ 'ca-cert.pem': req.caCertPem, 'ca-key.pem': req.caKeyPem, 'root-cert.pem': req.rootCertPem, 'cert-chain.pem': req.certChainPem })),
    ),
    activate: unary('Activate', async (req) => {
      const k = kindOf(req.kind, o.jwtKeys);
      return k === 'x509' ? answer(await manager.activate(req.authorityId || undefined, req.force)) : answerJwt(k, await k.activate(req.authorityId || undefined, req.force));
    }),
    taint: unary('Taint', async (req) => {
      const k = kindOf(req.kind, o.jwtKeys);
      return k === 'x509' ? answer(await manager.taint(req.authorityId || undefined, req.force)) : answerJwt(k, await k.taint(req.authorityId || undefined, req.force));
    }),
    retire: unary('Retire', async (req) => {
      const k = kindOf(req.kind, o.jwtKeys);
      return k === 'x509' ? answer(await manager.retire(req.authorityId || undefined, req.force)) : answerJwt(k, await k.retire(req.authorityId || undefined, req.force));
    }),
  });
  // Bind with a umask that leaves the socket owner-only from its first instant.
  const old = process.umask(0o177);
  try {
    await bindServer(server, `unix:${path}`, grpc.ServerCredentials.createInsecure());
  } finally {
    process.umask(old);
  }
  await secureBoundSocket(path);
  logger.info({ event: 'admin.listening', socket: path }, 'admin API listening');
  return {
    socketPath: path,
    // a call stuck past 2 s is cut: closing the CA must not wait on an admin client
    close: () => shutdownServer(server, 2000),
  };
}
