/**
 * The gRPC binding of SDS: `envoy.service.secret.v3.SecretDiscoveryService`
 * (StreamSecrets, FetchSecrets, DeltaSecrets) over a Unix socket, plain
 * gRPC as Envoy expects (the socket's permissions are the access control).
 * Handlers are thin: the state machines in sotw.ts and delta.ts decide.
 */
import * as grpc from '@grpc/grpc-js';
import type { GenService } from '@bufbuild/protobuf/codegenv2';
import { SecretDiscoveryService } from '../gen/envoy/service/secret/v3/sds_pb.js';
import { addService, bindServer, shutdownServer, type GrpcHandlers } from '../grpc/service.ts';
import { toGrpcError } from '../grpc/status.ts';
import { asCastellanError } from '../platform/errors.ts';
import { silentLogger, type Logger } from '../platform/logger.ts';
import { DeltaSession } from './delta.ts';
import type { SecretStore } from './resources.ts';
import { prepareSocketPath, secureBoundSocket, type SocketPolicy } from './socket.ts';
import { fetchSecrets, SotwSession } from './sotw.ts';

type SdsMethods = typeof SecretDiscoveryService extends GenService<infer M> ? M : never;

export interface SdsServerOptions {
  /** Unix socket path (relative paths are resolved against the cwd). */
  socketPath: string;
  store: SecretStore;
  policy?: SocketPolicy;
  logger?: Logger;
  /** Largest request accepted, bytes (SDS requests are small). Default 1 MiB. */
  maxRequestBytes?: number;
}

export interface SdsServer {
  /** Absolute socket path. */
  readonly socketPath: string;
  /** Streams currently open (StreamSecrets + DeltaSecrets). */
  activeStreams(): number;
  /** Ends every stream, stops the server and removes the socket. */
  close(): Promise<void>;
}

interface Session<Req> {
  handle(req: Req): void;
  close(): void;
}

function bindStream<Req, Res>(
  call: grpc.ServerDuplexStream<Req, Res>,
  session: Session<Req>,
  logger: Logger,
  open: Set<() => void>,
): void {
  let ended = false;
  const finish = (): void => {
    if (ended) return;
    ended = true;
    session.close();
    open.delete(endNow);
  };
  const endNow = (): void => {
    finish();
    call.end();
  };
  open.add(endNow);
  call.on('data', (req: Req) => {
    if (ended) return;
    try {
      session.handle(req);
    } catch (e) {
      const err = asCastellanError(e);
      logger.warn({ event: 'sds.stream_refused', code: err.code }, err.message);
      finish();
      call.emit('error', toGrpcError(err));
    }
  });
  call.on('end', () => {
    finish();
    call.end();
  });
  call.on('cancelled', finish);
  call.on('close', finish);
  call.on('error', finish);
}

/** The three SDS handlers over a store; `open` collects a closer per live stream. */
export function createSdsHandlers(store: SecretStore, logger: Logger, open: Set<() => void>): GrpcHandlers<SdsMethods> {
  return {
    streamSecrets(call) {
      bindStream(call, new SotwSession({ store, logger, send: (r) => call.write(r) }), logger, open);
    },
    deltaSecrets(call) {
      bindStream(call, new DeltaSession({ store, logger, send: (r) => call.write(r) }), logger, open);
    },
    fetchSecrets(call, callback) {
      try {
        callback(null, fetchSecrets(store, call.request));
      } catch (e) {
        callback(toGrpcError(e));
      }
    },
  };
}

/** Prepares the socket path safely, binds and serves. The caller must `close()`. */
export async function startSdsServer(o: SdsServerOptions): Promise<SdsServer> {
  const logger = o.logger ?? silentLogger();
  const policy = o.policy ?? {};
  const path = await prepareSocketPath(o.socketPath, policy);
  const max = o.maxRequestBytes ?? 1024 * 1024;
  const server = new grpc.Server({ 'grpc.max_receive_message_length': max, 'grpc.max_send_message_length': 4 * 1024 * 1024 });
  const open = new Set<() => void>();
  addService(server, SecretDiscoveryService, createSdsHandlers(o.store, logger, open));
  const served = await serveOnUnixSocket(server, path, policy, open);
  logger.info({ event: 'sds.listening', socket: path }, 'SDS listening');
  return served;
}

/**
 * Binds `server` to the socket `path` (prepared by prepareSocketPath), sets
 * the socket's mode and group, and returns its handle. `open` holds one
 * ender per open stream. Shared by SDS and the SPIFFE Workload API.
 */
export async function serveOnUnixSocket(server: grpc.Server, path: string, policy: SocketPolicy, open: Set<() => void>): Promise<SdsServer> {
  await bindServer(server, `unix:${path}`, grpc.ServerCredentials.createInsecure());
  try {
    await secureBoundSocket(path, policy);
  } catch (e) {
    server.forceShutdown();
    throw e;
  }
  let closed = false;
  return {
    socketPath: path,
    activeStreams: () => open.size,
    async close() {
      if (closed) return;
      closed = true;
      for (const end of [...open]) end();
      await shutdownServer(server, 2000);
      // grpc-js unlinks the socket on shutdown; make sure, without following anything planted there.
      try {
        const { lstat, unlink } = await import('node:fs/promises');
        const st = await lstat(path);
        if (st.isSocket()) await unlink(path);
      } catch {
        /* already gone */
      }
    },
  };
}
