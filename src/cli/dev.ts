/**
 * `castellan dev` (`npm start`): runs the local demo until SIGINT/SIGTERM
 * (exit 0), or, with --once, until the first mutual-TLS call (exit 0 if it
 * succeeded, 1 otherwise). Exit 2: invalid flags.
 */
import { resolve } from 'node:path';
import { helpText, parseCommand, parseDuration, type FlagSpec } from '../config/flags.ts';
import { startDemo, type Demo } from '../dev/demo.ts';
import { createLogger } from '../platform/logger.ts';
import { validateTrustDomain } from '../spiffe/id.ts';

export const DEV_FLAGS: FlagSpec[] = [
  { name: 'data-dir', type: 'string', arg: 'DIR', default: './.castellan/dev', help: 'where the demo keeps its CA keyring, dev token issuer, tokens and sockets (0700)' },
  { name: 'cert-ttl', type: 'string', arg: 'DUR', default: '5m', help: 'lifetime of the demo workload certificates (renewed at half-life)' },
  { name: 'grpc-listen', type: 'string', arg: 'ADDR', default: '127.0.0.1:0', help: 'CA address (loopback; port 0 = any free port)' },
  { name: 'trust-domain', type: 'string', arg: 'TD', default: 'cluster.local', help: 'SPIFFE trust domain' },
  { name: 'once', type: 'boolean', default: false, help: 'exit after the first mutual-TLS call (for scripts and CI)' },
  { name: 'log-level', type: 'string', arg: 'LEVEL', default: 'warn', help: 'log level of the components (logs go to stderr)' },
];

export async function run(argv: string[]): Promise<number> {
  let v;
  let certTtlMs: number;
  try {
    v = parseCommand('dev', argv, DEV_FLAGS).values;
    if (v.help) {
      process.stdout.write(helpText('dev', '[flags]', DEV_FLAGS));
      return 0;
    }
    certTtlMs = parseDuration(v['cert-ttl'] as string, '--cert-ttl');
    if (certTtlMs < 2000) throw new Error('castellan dev: --cert-ttl must be at least 2s');
    validateTrustDomain(v['trust-domain'] as string);
    const listen = v['grpc-listen'] as string;
    if (!/^(127\.\d+\.\d+\.\d+|localhost|\[::1\]):\d{1,5}$/.test(listen)) throw new Error(`castellan dev: --grpc-listen must be a loopback HOST:PORT, got "${listen}"`);
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    return 2;
  }
  const logger = createLogger({ level: v['log-level'] as string, name: 'dev' });
  const print = (line: string): void => void process.stdout.write(line + '\n');
  let demo: Demo;
  try {
    demo = await startDemo({
      dataDir: resolve(v['data-dir'] as string),
      certTtlMs,
      grpcListen: v['grpc-listen'] as string,
      trustDomain: v['trust-domain'] as string,
      logger,
      print,
    });
  } catch (e) {
    process.stderr.write(`castellan dev: ${(e as Error).message}\n`);
    return 1;
  }
  if (v.once) {
    const ok = await demo.firstCall.then(
      () => true,
      () => false,
    );
    await demo.close();
    return ok ? 0 : 1;
  }
  return new Promise<number>((res) => {
    // Ctrl-C reaches every process of the foreground group, and a wrapper may forward it
    // again: a repeated signal while stopping is ignored rather than killing mid-cleanup.
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      print(`stopping  (${signal})`);
      demo.close().then(
        () => {
          print('stopped   cleanly; data kept in the data directory for the next run');
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          res(0);
        },
        () => res(1),
      );
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}
