/**
 * A lean server path for one hot unary method, on the HTTP/2 sessions of a
 * grpc-js server.
 *
 * Why: measured on this project's 2-core machines, a grpc-js TLS server that
 * does no work at all answers 800 unary calls/s with a p99 of 7-12 ms; the
 * same exchange on node:http2 directly has a p99 of 3 ms and costs ~100 us of
 * CPU less per call. bench/grpc-e2e.ts runs the CA both ways in the same
 * rounds (the second with `--no-fast-path`): 1.07-1.16x the issuances per
 * server CPU-second, and a third of the p99 at half of peak. CreateCertificate is
 * the one method where that matters.
 *
 * What: the `stream` listener grpc-js put on its http2 server is wrapped.
 * A stream for `path` in the plain form every mesh client sends (POST,
 * application/grpc, identity encoding, a well-formed grpc-timeout if any) is
 * answered here; every other stream (other methods, compressed requests, odd
 * headers) goes to grpc-js unchanged, so health, streaming methods,
 * compression, keepalive, GOAWAY and graceful shutdown stay grpc-js's. The
 * wire behaviour follows grpc-js for the same inputs: status codes, the
 * trailers-only form for errors, RESOURCE_EXHAUSTED as soon as a message
 * header announces more than the limit (nothing more is buffered), the peer
 * certificate only when TLS verified it.
 *
 * It reaches into grpc-js internals (the `http2Servers` map, one `stream`
 * listener per server); when they are not as expected, `install` returns
 * false, nothing is changed, and grpc-js serves the method as before.
 */
import * as http2 from 'node:http2';
import { TLSSocket } from 'node:tls';
import { status, type Server } from '@grpc/grpc-js';

/** One call as the handler sees it. */
export interface FastUnaryCall {
  /** the request message, without the gRPC frame header */
  readonly message: Uint8Array;
  /** every value of `name` in the request headers, in order */
  header(name: string): string[];
  /** DER of the client certificate, when TLS verified one */
  readonly peerCertDer: Uint8Array | undefined;
  /** "address:port", as grpc-js's getPeer() */
  readonly peer: string;
  /** ms since epoch, from grpc-timeout; undefined without one */
  readonly deadline: number | undefined;
}

export type FastUnaryReply =
  | { readonly ok: true; readonly message: Uint8Array; readonly headers?: Readonly<Record<string, string>> }
  | {
      readonly ok: false;
      readonly code: status;
      readonly details: string;
      /** response headers (initial metadata): sent ahead of the status, as grpc-js does after sendMetadata */
      readonly headers?: Readonly<Record<string, string>>;
      readonly trailers?: Readonly<Record<string, string>>;
    };

export interface FastUnaryOptions {
  /** the method's full path, /package.Service/Method */
  readonly path: string;
  /** largest request message accepted (bytes, without the frame header) */
  readonly maxRequestBytes: number;
  /** must not throw; a rejection is answered INTERNAL */
  readonly handle: (call: FastUnaryCall) => Promise<FastUnaryReply>;
}

const TIMEOUT_UNITS_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 1e-3, n: 1e-6 };
const TIMEOUT_RE = /^(\d{1,8})([HMSmun])$/;

/** grpc-message is percent-encoded UTF-8: every byte outside 0x20-0x7E, and '%'. */
export function encodeGrpcMessage(s: string): string {
  let plain = true;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x25) {
      plain = false;
      break;
    }
  }
  if (plain) return s;
  let out = '';
  for (const b of Buffer.from(s, 'utf8')) out += b < 0x20 || b > 0x7e || b === 0x25 ? `%${b.toString(16).toUpperCase().padStart(2, '0')}` : String.fromCharCode(b);
  return out;
}

/** Whether the fast path may answer this stream; anything else goes to grpc-js. */
function eligible(headers: http2.IncomingHttpHeaders): boolean {
  if (headers[':method'] !== 'POST') return false;
  const ct = headers['content-type'];
  if (ct !== 'application/grpc' && ct !== 'application/grpc+proto') return false;
  const enc = headers['grpc-encoding'];
  if (enc !== undefined && enc !== 'identity') return false;
  const t = headers['grpc-timeout'];
  if (t !== undefined && (typeof t !== 'string' || !TIMEOUT_RE.test(t))) return false;
  return true;
}

type StreamListener = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, flags: number, rawHeaders: string[]) => void;

interface GrpcInternals {
  http2Servers?: Map<http2.Http2Server | http2.Http2SecureServer, unknown>;
  onStreamOpened?: (stream: http2.ServerHttp2Stream) => void;
}

/**
 * Puts the fast path in front of grpc-js for `o.path` on every listener of
 * `server` (call after bindAsync). Returns false, changing nothing, when
 * grpc-js's internals are not the expected ones.
 */
export function installUnaryFastPath(server: Server, o: FastUnaryOptions): boolean {
  const internals = server as unknown as GrpcInternals;
  const servers = internals.http2Servers;
  if (!(servers instanceof Map) || servers.size === 0) return false;
  const targets: [http2.Http2Server | http2.Http2SecureServer, StreamListener][] = [];
  for (const h2 of servers.keys()) {
    const ls = h2.listeners('stream') as StreamListener[];
    if (ls.length !== 1) return false;
    targets.push([h2, ls[0]!]);
  }
  const opened = typeof internals.onStreamOpened === 'function' ? internals.onStreamOpened.bind(server) : undefined;
  for (const [h2, original] of targets) {
    h2.removeListener('stream', original);
    h2.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, flags: number, rawHeaders: string[]) => {
      if (headers[':path'] !== o.path || !eligible(headers)) {
        original.call(h2, stream, headers, flags, rawHeaders);
        return;
      }
      opened?.(stream); // grpc-js's idle-connection accounting
      serve(stream, headers, rawHeaders, o);
    });
  }
  return true;
}

/**
 * Runs `write` unless the stream is gone. A stream can be reset or its session
 * destroyed between any two events; writing to it then throws, and nothing
 * may throw out of an event listener (that would end the process).
 */
function writing(stream: http2.ServerHttp2Stream, write: () => void): void {
  if (stream.destroyed || stream.closed || stream.headersSent) return;
  try {
    write();
  } catch {
    stream.destroy();
  }
}

function writingTrailers(stream: http2.ServerHttp2Stream, trailers: http2.OutgoingHttpHeaders): void {
  try {
    stream.sendTrailers(trailers);
  } catch {
    stream.destroy();
  }
}

function trailersOnly(stream: http2.ServerHttp2Stream, code: number, details: string, extra?: Readonly<Record<string, string>>): void {
  writing(stream, () => stream.respond({ ':status': 200, 'content-type': 'application/grpc+proto', ...extra, 'grpc-status': String(code), 'grpc-message': encodeGrpcMessage(details) }, { endStream: true }));
}

function serve(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, rawHeaders: string[], o: FastUnaryOptions): void {
  // Errors on the stream (a reset, a lost connection) end in 'close'; nothing to answer.
  stream.on('error', () => undefined);
  const t = headers['grpc-timeout'] as string | undefined;
  let deadline: number | undefined;
  if (t !== undefined) {
    const m = TIMEOUT_RE.exec(t)!;
    deadline = Date.now() + Number(m[1]) * TIMEOUT_UNITS_MS[m[2]!]!;
  }
  const chunks: Buffer[] = [];
  let have = 0;
  let refused = false;
  // node:http2 keeps a finished stream alive through scavenges until a full collection
  // (bench/h2-scavenge.ts; what holds it was not found), and with it everything its listeners hold:
  // the request body, the headers, the call. Let go of ours at close, the no-op 'error' listener
  // too (every closure made here holds this call's scope, and no 'error' follows 'close').
  // Measured under open-loop load: what survives a scavenge fell from 8-11 KB to 3-5 KB per call,
  // and dropping the 'error' listener cut what is promoted by another ~12 %.
  stream.once('close', () => {
    chunks.length = 0;
    stream.removeAllListeners('data');
    stream.removeAllListeners('end');
    stream.removeAllListeners('wantTrailers');
    stream.removeAllListeners('error');
  });
  const refuse = (code: number, details: string): void => {
    refused = true;
    chunks.length = 0;
    stream.removeAllListeners('data');
    trailersOnly(stream, code, details);
    // Tell the client to stop sending the rest of the body (its status is already on the way).
    if (!stream.destroyed) stream.close(http2.constants.NGHTTP2_NO_ERROR);
  };
  stream.on('data', (chunk: Buffer) => {
    chunks.push(chunk);
    have += chunk.length;
    if (have >= 5) {
      const head = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      const len = head.readUInt32BE(1);
      if (len > o.maxRequestBytes) {
        refuse(status.RESOURCE_EXHAUSTED, `Received message larger than max (${len} vs. ${o.maxRequestBytes})`);
        return;
      }
      if (have > 5 + len) refuse(status.UNIMPLEMENTED, `Received a second request message for server unary call ${o.path}`);
    }
  });
  stream.on('end', () => {
    if (refused) return;
    if (have < 5) {
      trailersOnly(stream, status.UNIMPLEMENTED, `Received no request message for server unary call ${o.path}`);
      return;
    }
    const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, have);
    const len = body.readUInt32BE(1);
    if (have < 5 + len) {
      // the client half-closed inside a message
      trailersOnly(stream, status.INTERNAL, 'Received an incomplete request message');
      return;
    }
    if (body[0] !== 0) {
      trailersOnly(stream, status.INTERNAL, 'Received compressed message but "grpc-encoding" header was identity');
      return;
    }
    const socket = stream.session?.socket;
    let peerCertDer: Uint8Array | undefined;
    if (socket instanceof TLSSocket && socket.authorized) {
      const raw = socket.getPeerCertificate().raw as Buffer | undefined;
      if (raw && raw.length > 0) peerCertDer = raw;
    }
    const peer = socket?.remoteAddress ? (socket.remotePort ? `${socket.remoteAddress}:${socket.remotePort}` : socket.remoteAddress) : 'unknown';
    const call: FastUnaryCall = {
      message: body.subarray(5, 5 + len),
      header: (name) => {
        const out: string[] = [];
        for (let i = 0; i + 1 < rawHeaders.length; i += 2) if (rawHeaders[i]!.toLowerCase() === name) out.push(rawHeaders[i + 1]!);
        return out;
      },
      peerCertDer,
      peer,
      deadline,
    };
    o.handle(call).then(
      (r) => reply(stream, r, deadline),
      () => trailersOnly(stream, status.INTERNAL, 'internal error'),
    );
  });
}

function reply(stream: http2.ServerHttp2Stream, answer: FastUnaryReply, deadline: number | undefined): void {
  writing(stream, () => replyNow(stream, answer, deadline));
}

function replyNow(stream: http2.ServerHttp2Stream, answer: FastUnaryReply, deadline: number | undefined): void {
  const r: FastUnaryReply = deadline !== undefined && Date.now() > deadline ? { ok: false, code: status.DEADLINE_EXCEEDED, details: 'Deadline exceeded', headers: answer.headers } : answer;
  if (!r.ok) {
    if (!r.headers) {
      trailersOnly(stream, r.code, r.details, r.trailers);
      return;
    }
    stream.respond({ ':status': 200, 'content-type': 'application/grpc+proto', 'grpc-accept-encoding': 'identity,deflate,gzip', ...r.headers }, { waitForTrailers: true });
    stream.once('wantTrailers', () => writingTrailers(stream, { ...r.trailers, 'grpc-status': String(r.code), 'grpc-message': encodeGrpcMessage(r.details) }));
    stream.end();
    return;
  }
  const frame = Buffer.allocUnsafe(5 + r.message.length);
  frame[0] = 0;
  frame.writeUInt32BE(r.message.length, 1);
  frame.set(r.message, 5);
  stream.respond({ ':status': 200, 'content-type': 'application/grpc+proto', 'grpc-accept-encoding': 'identity,deflate,gzip', 'grpc-encoding': 'identity', ...r.headers }, { waitForTrailers: true });
  stream.once('wantTrailers', () => writingTrailers(stream, { 'grpc-status': String(status.OK), 'grpc-message': 'OK' }));
  stream.end(frame);
}
