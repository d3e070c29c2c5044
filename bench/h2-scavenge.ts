/**
 * bench/h2-scavenge: how much a bare node:http2 server promotes to V8's old
 * generation per finished stream (no Castellan, no grpc-js code). Behind the
 * README's finding on young-generation pauses under open-loop load.
 *
 * The parent starts a server child under --trace-gc-nvp and drives it from
 * here (8 h2c sessions, one request per millisecond for RUN_MS), then sums
 * what the child's scavenges promoted and copied. Variants of the server's
 * handler, each in a fresh child:
 *   plain    respond with a gRPC-shaped answer (headers, 600 bytes, trailers)
 *   cut      the same, and at close cut the native handle's links to the stream
 *   clear    the same, and after close clear the stream's own fields
 *
 *   node_modules/.bin/node bench/h2-scavenge.ts       (not part of npm run bench;
 *   CHILD_NODE_ARGS="--max-semi-space-size=2" passes V8 flags to the server)
 */
import { spawn } from 'node:child_process';
import http2 from 'node:http2';
import { fileURLToPath } from 'node:url';

const RUN_MS = Number(process.env.RUN_MS ?? 6000);

if (process.argv[2] === 'serve') {
  const variant = process.argv[3];
  const srv = http2.createServer();
  srv.on('stream', (s: http2.ServerHttp2Stream) => {
    const own = s as unknown as Record<string | symbol, unknown>;
    const handleKey = Object.getOwnPropertySymbols(s).find((k) => k.description === 'kHandle');
    const handle = handleKey ? (own[handleKey] as Record<string | symbol, unknown>) : undefined;
    s.once('close', () => {
      if (variant === 'cut' && handle) {
        for (const k of Object.getOwnPropertySymbols(handle)) if (k.description === 'owner_symbol') handle[k] = undefined;
        handle.owner = undefined;
      }
      if (variant === 'clear') {
        setImmediate(() => {
          for (const k of [...Object.getOwnPropertySymbols(s), ...Object.keys(s)]) {
            try {
              own[k] = undefined;
            } catch {
              // read-only: leave it
            }
          }
        });
      }
    });
    s.resume();
    s.on('end', () => {
      s.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      s.end(Buffer.alloc(600));
    });
    s.on('wantTrailers', () => s.sendTrailers({ 'grpc-status': '0' }));
  });
  srv.listen(0, '127.0.0.1', () => process.send!((srv.address() as { port: number }).port));
  process.on('disconnect', () => process.exit(0));
} else {
  const rows: string[] = [];
  for (const variant of ['plain', 'cut', 'clear']) {
    const child = spawn(process.execPath, ['--trace-gc-nvp', ...(process.env.CHILD_NODE_ARGS ?? '').split(' ').filter(Boolean), fileURLToPath(import.meta.url), 'serve', variant], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const port = await new Promise<number>((res) => child.once('message', (m) => res(m as number)));
    const sessions = Array.from({ length: 8 }, () => http2.connect(`http://127.0.0.1:${port}`));
    let sent = 0;
    let done = 0;
    const t0 = Date.now();
    await new Promise<void>((res) => {
      const iv = setInterval(() => {
        if (Date.now() - t0 > RUN_MS) {
          clearInterval(iv);
          res();
          return;
        }
        const r = sessions[sent++ % sessions.length]!.request({ ':method': 'POST', ':path': '/x', 'content-type': 'application/grpc' });
        r.on('error', () => undefined);
        r.on('close', () => done++);
        r.resume();
        r.end(Buffer.alloc(900));
      }, 1);
    });
    await new Promise((r) => setTimeout(r, 300));
    for (const s of sessions) s.close();
    child.disconnect();
    await new Promise((r) => child.once('exit', r));
    let promoted = 0;
    let copied = 0;
    let scavenges = 0;
    let pauseMs = 0;
    for (const line of out.split('\n')) {
      if (!/ gc=s /.test(line)) continue;
      const f = (k: string): number => Number(new RegExp(` ${k}=([0-9.]+)`).exec(line)?.[1] ?? 0);
      scavenges++;
      promoted += f('promoted');
      copied += f('new_space_survived');
      pauseMs += f('pause');
    }
    rows.push(`${variant.padEnd(6)} ${String(done).padStart(6)} streams  ${String(scavenges).padStart(3)} scavenges  promoted ${(promoted / done).toFixed(0).padStart(5)} B/stream  copied ${(copied / done).toFixed(0).padStart(5)} B/stream  pauses ${pauseMs.toFixed(0)} ms`);
  }
  console.log(`h2-scavenge: bare node:http2 server (Node ${process.version}), ~1 000 requests/s for ${RUN_MS / 1000} s over 8 h2c sessions`);
  for (const r of rows) console.log(`  ${r}`);
}
