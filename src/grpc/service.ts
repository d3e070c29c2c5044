/**
 * Bridges protobuf-es generated service descriptors to @grpc/grpc-js.
 *
 * Messages are (de)serialized with the generated schemas, so handler and
 * client types come from the .proto: a misspelled field is a compile error,
 * never a silently dropped key (the failure mode of untyped proto loaders).
 */
import * as grpc from '@grpc/grpc-js';
import { fromBinary, toBinary, type DescMessage, type MessageShape } from '@bufbuild/protobuf';
import type { GenService, GenServiceMethods } from '@bufbuild/protobuf/codegenv2';

type In<M> = M extends { input: infer I extends DescMessage } ? MessageShape<I> : never;
type Out<M> = M extends { output: infer O extends DescMessage } ? MessageShape<O> : never;

/** Server-side handler map for a generated service. */
export type GrpcHandlers<T extends GenServiceMethods> = {
  [K in keyof T]: T[K]['methodKind'] extends 'unary'
    ? grpc.handleUnaryCall<In<T[K]>, Out<T[K]>>
    : T[K]['methodKind'] extends 'bidi_streaming'
      ? grpc.handleBidiStreamingCall<In<T[K]>, Out<T[K]>>
      : T[K]['methodKind'] extends 'server_streaming'
        ? grpc.handleServerStreamingCall<In<T[K]>, Out<T[K]>>
        : grpc.handleClientStreamingCall<In<T[K]>, Out<T[K]>>;
};

export interface CallOptions {
  metadata?: grpc.Metadata;
  /** Absolute deadline (Date or ms since epoch). */
  deadline?: grpc.Deadline;
}

/** Client-side view of a generated service: unary calls return promises, streams are grpc-js duplexes. */
export type GrpcClient<T extends GenServiceMethods> = {
  [K in keyof T]: T[K]['methodKind'] extends 'unary'
    ? (req: In<T[K]>, opts?: CallOptions) => Promise<Out<T[K]>>
    : T[K]['methodKind'] extends 'bidi_streaming'
      ? (opts?: CallOptions) => grpc.ClientDuplexStream<In<T[K]>, Out<T[K]>>
      : T[K]['methodKind'] extends 'server_streaming'
        ? (req: In<T[K]>, opts?: CallOptions) => grpc.ClientReadableStream<Out<T[K]>>
        : never;
} & { readonly raw: grpc.Client; close(): void };

export function serviceDefinition(service: GenService<GenServiceMethods>): grpc.ServiceDefinition {
  const def: Record<string, grpc.MethodDefinition<MessageShape<DescMessage>, MessageShape<DescMessage>>> = {};
  for (const m of service.methods) {
    def[m.localName] = {
      path: `/${service.typeName}/${m.name}`,
      originalName: m.name,
      requestStream: m.methodKind === 'client_streaming' || m.methodKind === 'bidi_streaming',
      responseStream: m.methodKind === 'server_streaming' || m.methodKind === 'bidi_streaming',
      requestSerialize: (msg: MessageShape<DescMessage>) => Buffer.from(toBinary(m.input, msg)),
      requestDeserialize: (buf: Buffer) => fromBinary(m.input, buf),
      responseSerialize: (msg: MessageShape<DescMessage>) => Buffer.from(toBinary(m.output, msg)),
      responseDeserialize: (buf: Buffer) => fromBinary(m.output, buf),
    };
  }
  return def;
}

export function addService<T extends GenServiceMethods>(
  server: grpc.Server,
  service: GenService<T>,
  handlers: GrpcHandlers<T>,
): void {
  server.addService(
    serviceDefinition(service as unknown as GenService<GenServiceMethods>),
    handlers as unknown as grpc.UntypedServiceImplementation,
  );
}

export function createClient<T extends GenServiceMethods>(
  service: GenService<T>,
  address: string,
  credentials: grpc.ChannelCredentials,
  options?: grpc.ClientOptions,
): GrpcClient<T> {
  const svc = service as unknown as GenService<GenServiceMethods>;
  const Ctor = grpc.makeGenericClientConstructor(serviceDefinition(svc), svc.typeName);
  const raw = new Ctor(address, credentials, options) as grpc.Client & Record<string, (...a: unknown[]) => unknown>;
  const out: Record<string, unknown> = { raw, close: () => raw.close() };
  for (const m of svc.methods) {
    const fn = raw[m.localName]!.bind(raw);
    if (m.methodKind === 'unary') {
      out[m.localName] = (req: unknown, opts: CallOptions = {}) =>
        new Promise((resolve, reject) => {
          fn(req, opts.metadata ?? new grpc.Metadata(), { deadline: opts.deadline }, (err: grpc.ServiceError | null, res: unknown) =>
            err ? reject(err) : resolve(res),
          );
        });
    } else if (m.methodKind === 'bidi_streaming') {
      out[m.localName] = (opts: CallOptions = {}) => fn(opts.metadata ?? new grpc.Metadata(), { deadline: opts.deadline });
    } else if (m.methodKind === 'server_streaming') {
      out[m.localName] = (req: unknown, opts: CallOptions = {}) => fn(req, opts.metadata ?? new grpc.Metadata(), { deadline: opts.deadline });
    }
  }
  return out as GrpcClient<T>;
}

/** Binds `server` to `address` (host:port or unix:/path); resolves with the bound port. */
export function bindServer(server: grpc.Server, address: string, credentials: grpc.ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) => server.bindAsync(address, credentials, (err, port) => (err ? reject(err) : resolve(port))));
}

/**
 * Stops accepting calls and lets the calls in flight finish; with `graceMs`,
 * cuts whatever is still running after that long. Resolves once stopped.
 */
export function shutdownServer(server: grpc.Server, graceMs?: number): Promise<void> {
  return new Promise((resolve) => {
    const force =
      graceMs === undefined
        ? undefined
        : setTimeout(() => {
            server.forceShutdown();
            resolve();
          }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(force);
      resolve();
    });
  });
}
