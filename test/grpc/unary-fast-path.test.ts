/**
 * The CreateCertificate fast path on a real grpc-js server over TLS: which
 * streams it answers and which it leaves to grpc-js, and that its answers
 * are the ones grpc-js gives (grpc-js client, and a raw node:http2 client for
 * the frames a well-behaved client never sends).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as http2 from 'node:http2';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeGrpcMessage, installUnaryFastPath, type FastUnaryCall, type FastUnaryReply } from '../../src/grpc/unary-fast-path.ts';
import { tempDir } from '../support/tmp.ts';

const FAST = '/t.T/Fast';
const OTHER = '/t.T/Other';
const raw = (b: Buffer): Buffer => b;
const method = (path: string): grpc.MethodDefinition<Buffer, Buffer> => ({ path, requestStream: false, responseStream: false, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw });

let tmp: ReturnType<typeof tempDir>;
let server: grpc.Server;
let port: number;
let caPem: Buffer;
let installed: boolean;
const seen: { fast: FastUnaryCall[]; grpcjs: string[] } = { fast: [], grpcjs: [] };
/** what the fast handler answers next, by request text */
const answers = new Map<string, (c: FastUnaryCall) => Promise<FastUnaryReply>>();

beforeAll(async () => {
  tmp = tempDir('castellan-fastpath-');
  const sh = (args: string[]): void => void execFileSync('openssl', args, { cwd: tmp.path, stdio: 'ignore' });
  sh(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'k.pem', '-out', 'c.pem', '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost']);
  caPem = readFileSync(join(tmp.path, 'c.pem'));
  server = new grpc.Server({ 'grpc.max_receive_message_length': 1024 });
  const echo = (name: string) => (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
    seen.grpcjs.push(name);
    cb(null, Buffer.concat([Buffer.from(`${name}:`), call.request]));
  };
  server.addService({ fast: method(FAST), other: method(OTHER) }, { fast: echo('grpcjs-fast'), other: echo('grpcjs-other') });
  port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createSsl(null, [{ private_key: readFileSync(join(tmp.path, 'k.pem')), cert_chain: caPem }]), (e, p) => (e ? reject(e) : resolve(p))),
  );
  installed = installUnaryFastPath(server, {
    path: FAST,
    maxRequestBytes: 1024,
    handle: async (c) => {
      seen.fast.push(c);
      const text = Buffer.from(c.message).toString();
      const a = answers.get(text);
      if (a) return a(c);
      return { ok: true, message: Buffer.from(`fast:${text}`), headers: { 'x-request-id': 'r1' } };
    },
  });
});

afterAll(() => {
  server?.forceShutdown();
  tmp?.cleanup();
});

function client(options: grpc.ClientOptions = {}): grpc.Client {
  return new grpc.Client(`localhost:${port}`, grpc.credentials.createSsl(caPem), options);
}

interface Outcome {
  code: number;
  details: string;
  body?: string;
  headers: grpc.Metadata | undefined;
  trailers: grpc.Metadata | undefined;
}

function unary(c: grpc.Client, path: string, body: string | Buffer, md = new grpc.Metadata(), deadlineMs = 5000): Promise<Outcome> {
  return new Promise((resolve) => {
    let headers: grpc.Metadata | undefined;
    let out: Buffer | undefined;
    const call = c.makeUnaryRequest(path, raw, raw, Buffer.from(body), md, { deadline: Date.now() + deadlineMs }, (err, res) => {
      out = res;
      if (!err) resolve({ code: 0, details: 'OK', body: out?.toString(), headers, trailers: undefined });
    });
    call.on('metadata', (m) => (headers = m));
    call.on('status', (s) => {
      if (s.code !== 0) resolve({ code: s.code, details: s.details, headers, trailers: s.metadata });
    });
  });
}

/** The server still answers a plain call on the fast path. */
async function expectServing(): Promise<void> {
  const c = client();
  try {
    expect((await unary(c, FAST, 'still here')).body).toBe('fast:still here');
  } finally {
    c.close();
  }
}

/** A raw HTTP/2 exchange: what grpc-js's client would never send. */
async function rawCall(path: string, body: Buffer, extra: http2.OutgoingHttpHeaders = {}): Promise<{ headers: http2.IncomingHttpHeaders; trailers: http2.IncomingHttpHeaders; data: Buffer }> {
  const s = http2.connect(`https://localhost:${port}`, { ca: caPem });
  try {
    return await new Promise((resolve, reject) => {
      const req = s.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers', ...extra });
      let headers: http2.IncomingHttpHeaders = {};
      let trailers: http2.IncomingHttpHeaders = {};
      const data: Buffer[] = [];
      req.on('response', (h) => (headers = h));
      req.on('trailers', (t) => (trailers = t));
      req.on('data', (d: Buffer) => data.push(d));
      req.on('end', () => resolve({ headers, trailers, data: Buffer.concat(data) }));
      req.on('error', reject);
      req.end(body);
    });
  } finally {
    s.close();
  }
}

const frame = (msg: Buffer, compressed = 0): Buffer => {
  const h = Buffer.alloc(5);
  h[0] = compressed;
  h.writeUInt32BE(msg.length, 1);
  return Buffer.concat([h, msg]);
};
/** grpc-status and grpc-message, wherever they came (trailers-only or trailers) */
const statusOf = (r: { headers: http2.IncomingHttpHeaders; trailers: http2.IncomingHttpHeaders }): [string, string] => [String(r.trailers['grpc-status'] ?? r.headers['grpc-status']), decodeURIComponent(String(r.trailers['grpc-message'] ?? r.headers['grpc-message'] ?? ''))];

describe('unary fast path', () => {
  it('installs on a bound grpc-js server, and refuses (changing nothing) on one without listeners', () => {
    expect(installed).toBe(true);
    expect(installUnaryFastPath(new grpc.Server(), { path: FAST, maxRequestBytes: 1, handle: async () => ({ ok: true, message: new Uint8Array() }) })).toBe(false);
  });

  it('answers the plain calls of its method; other methods and compressed calls go to grpc-js', async () => {
    const c = client();
    const gz = client({ 'grpc.default_compression_algorithm': 2 }); // gzip
    try {
      seen.fast.length = 0;
      seen.grpcjs.length = 0;
      const md = new grpc.Metadata();
      md.add('authorization', 'Bearer a');
      md.add('x-team', 'blue');
      md.add('x-team', 'red');
      const a = await unary(c, FAST, 'hello', md);
      expect([a.code, a.details]).toEqual([0, "OK"]);
      expect(a.body).toBe('fast:hello');
      expect(a.headers?.get('x-request-id')).toEqual(['r1']);
      expect(seen.fast.at(-1)!.header('authorization')).toEqual(['Bearer a']);
      // every value of a repeated header reaches the handler (the headers object would keep one)
      expect(seen.fast.at(-1)!.header('x-team')).toEqual(['blue', 'red']);
      expect(seen.fast.at(-1)!.peer).toMatch(/^127\.0\.0\.1:\d+$/);
      expect(seen.fast.at(-1)!.deadline).toBeGreaterThan(Date.now());
      expect(seen.fast.at(-1)!.peerCertDer).toBeUndefined();
      expect((await unary(c, OTHER, 'x')).body).toBe('grpcjs-other:x');
      expect((await unary(gz, FAST, 'zipped')).body).toBe('grpcjs-fast:zipped');
      expect(seen.fast).toHaveLength(1);
      expect(seen.grpcjs).toEqual(['grpcjs-other', 'grpcjs-fast']);
      expect((await unary(c, '/t.T/Nope', 'x')).code).toBe(grpc.status.UNIMPLEMENTED);
    } finally {
      c.close();
      gz.close();
    }
  });

  it('an error carries its response headers, its trailers and a percent-encoded message', async () => {
    const details = 'refused: 100% "ünïcode" \u{1F512}\nline two';
    answers.set('deny', async () => ({ ok: false, code: grpc.status.PERMISSION_DENIED, details, headers: { 'x-request-id': 'r2' }, trailers: { 'x-castellan-error': 'auth.denied' } }));
    answers.set('bare', async () => ({ ok: false, code: grpc.status.UNAVAILABLE, details: 'no headers' }));
    const c = client();
    try {
      const o = await unary(c, FAST, 'deny');
      expect(o.code).toBe(grpc.status.PERMISSION_DENIED);
      expect(o.details).toBe(details);
      expect(o.headers?.get('x-request-id')).toEqual(['r2']);
      expect(o.trailers?.get('x-castellan-error')).toEqual(['auth.denied']);
      const b = await unary(c, FAST, 'bare');
      expect([b.code, b.details]).toEqual([grpc.status.UNAVAILABLE, 'no headers']);
    } finally {
      c.close();
    }
  });

  it('a handler that rejects is INTERNAL; one that answers after the deadline is DEADLINE_EXCEEDED', async () => {
    answers.set('throw', async () => {
      throw new Error('secret detail');
    });
    answers.set('slow', async () => {
      await new Promise((r) => setTimeout(r, 150));
      return { ok: true, message: Buffer.from('late') };
    });
    const t = await rawCall(FAST, frame(Buffer.from('throw')));
    expect(statusOf(t)).toEqual(['13', 'internal error']);
    const s = await rawCall(FAST, frame(Buffer.from('slow')), { 'grpc-timeout': '50m' });
    expect(statusOf(s)).toEqual(['4', 'Deadline exceeded']);
    expect(s.data.length).toBe(0);
  });

  it('a client that resets its call before the answer costs nothing but the answer (the server lives on)', async () => {
    let answered!: () => void;
    const done = new Promise<void>((r) => (answered = r));
    answers.set('abandoned', async () => {
      await new Promise((r) => setTimeout(r, 100));
      answered();
      return { ok: true, message: Buffer.from('too late') };
    });
    const s = http2.connect(`https://localhost:${port}`, { ca: caPem });
    try {
      const req = s.request({ ':method': 'POST', ':path': FAST, 'content-type': 'application/grpc', te: 'trailers' });
      req.on('error', () => undefined);
      req.end(frame(Buffer.from('abandoned')));
      await new Promise((r) => setTimeout(r, 30));
      req.close(http2.constants.NGHTTP2_CANCEL);
      await done;
      await new Promise((r) => setTimeout(r, 20));
    } finally {
      s.destroy();
    }
    await expectServing();
  });

  it('clients that reset calls or drop connections at any moment, against answers at any moment, never take the server down', async () => {
    // The fast path lets go of its listeners at 'close' (the 'error' one too); whatever comes
    // after (a late answer, a reset, a lost session) must find nothing to throw on.
    const errors: unknown[] = [];
    const onUncaught = (e: unknown): void => void errors.push(e);
    process.on('uncaughtException', onUncaught);
    process.on('unhandledRejection', onUncaught);
    let n = 0;
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.record({ cutAfterMs: fc.integer({ min: 0, max: 8 }), answerAfterMs: fc.integer({ min: 0, max: 12 }), cut: fc.constantFrom('reset', 'drop-connection', 'none') }), { minLength: 10, maxLength: 25 }),
          async (calls) => {
            const s = http2.connect(`https://localhost:${port}`, { ca: caPem });
            s.on('error', () => undefined);
            try {
              await Promise.all(
                calls.map(async (c) => {
                  const text = `stress-${n++}`;
                  answers.set(text, async () => {
                    await new Promise((r) => setTimeout(r, c.answerAfterMs));
                    return { ok: true, message: Buffer.from(text) };
                  });
                  const req = s.request({ ':method': 'POST', ':path': FAST, 'content-type': 'application/grpc', te: 'trailers' });
                  req.on('error', () => undefined);
                  req.resume();
                  req.end(frame(Buffer.from(text)));
                  const ended = new Promise((r) => req.once('close', r));
                  await new Promise((r) => setTimeout(r, c.cutAfterMs));
                  if (c.cut === 'reset' && !req.closed) req.close(http2.constants.NGHTTP2_CANCEL);
                  if (c.cut === 'drop-connection') s.destroy();
                  await ended;
                  answers.delete(text);
                }),
              );
            } finally {
              s.destroy();
            }
          },
        ),
        { numRuns: 8 },
      );
      await new Promise((r) => setTimeout(r, 50)); // late answers land
    } finally {
      process.off('uncaughtException', onUncaught);
      process.off('unhandledRejection', onUncaught);
    }
    expect(errors).toEqual([]);
    await expectServing();
  });

  it('frames a client should never send get grpc-js\'s answers, and the handler never sees them', async () => {
    seen.fast.length = 0;
    expect(statusOf(await rawCall(FAST, Buffer.alloc(0)))[0]).toBe('12'); // no message
    expect(statusOf(await rawCall(FAST, Buffer.concat([frame(Buffer.from('a')), frame(Buffer.from('b'))])))[0]).toBe('12'); // two messages
    expect(statusOf(await rawCall(FAST, frame(Buffer.from('abcdef')).subarray(0, 8)))[0]).toBe('13'); // cut short
    expect(statusOf(await rawCall(FAST, frame(Buffer.from('x'), 1)))[0]).toBe('13'); // compressed flag, identity encoding
    const big = statusOf(await rawCall(FAST, frame(Buffer.alloc(4096, 1))));
    expect(big[0]).toBe('8');
    expect(big[1]).toMatch(/larger than max \(4096 vs\. 1024\)/);
    expect(seen.fast).toHaveLength(0);
    // a malformed grpc-timeout is left to grpc-js, which answers it itself
    const badTimeout = await rawCall(FAST, frame(Buffer.from('t')), { 'grpc-timeout': 'soon' });
    expect(seen.fast).toHaveLength(0);
    expect(statusOf(badTimeout)[0]).not.toBe('0');
    await expectServing();
  });

  it('refuses an oversized message from its header, without waiting for (or buffering) the body', async () => {
    const s = http2.connect(`https://localhost:${port}`, { ca: caPem });
    try {
      const r = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
        const req = s.request({ ':method': 'POST', ':path': FAST, 'content-type': 'application/grpc', te: 'trailers' });
        req.on('response', resolve);
        req.on('error', reject);
        const h = Buffer.alloc(5);
        h.writeUInt32BE(100 * 1024 * 1024, 1); // announces 100 MiB, sends 16 KiB, never ends
        req.write(Buffer.concat([h, Buffer.alloc(16 * 1024)]));
      });
      expect(r['grpc-status']).toBe('8');
    } finally {
      s.destroy();
    }
  });
});

describe('encodeGrpcMessage', () => {
  it('is what a gRPC client percent-decodes back to the original, and only printable ASCII', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme' }), fc.string({ unit: 'binary' }), (a, b) => {
        const s = a + b;
        const e = encodeGrpcMessage(s);
        expect(/^[\x20-\x7e]*$/.test(e)).toBe(true);
        // what travels is UTF-8 (a lone surrogate becomes U+FFFD on the way, as in any UTF-8 encoder)
        expect(decodeURIComponent(e)).toBe(Buffer.from(s, 'utf8').toString('utf8'));
      }),
    );
    expect(encodeGrpcMessage('plain text')).toBe('plain text');
    expect(encodeGrpcMessage('50%')).toBe('50%25');
  });
});
