/**
 * `castellan console`: a read-only web page for CA admins, served on
 * loopback. It is a client of the server's admin API on its Unix socket,
 * like `castellan ca` (it calls Status only), plus a reader of the server's
 * /metrics for issuance and refusal rates; nothing new is exposed on the
 * network, and every change stays a `castellan ca` command with its guard
 * rails (the page shows which one, and when it is safe).
 *
 * Exit codes: 0 after SIGINT/SIGTERM; 1 cannot listen or bundle the page;
 * 2 usage. An unreachable admin socket is shown on the page (it may come
 * back), not an exit.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import { AdminService, StatusRequestSchema, type StatusResponse } from '../gen/castellan/v1/admin_pb.js';
import { certInfo } from '../ca/authority.ts';
import { parseCertificatesPem } from '../platform/pem.ts';
import { helpText, parseCommand, parseDuration, type FlagSpec } from '../config/flags.ts';
import { createClient } from '../grpc/service.ts';
import { CastellanError } from '../platform/errors.ts';
import { bundleScript, sibling } from '../web/bundle.ts';
import type { BundleRoot, CaCounters, ConsoleAuthority, ConsoleStatus } from '../web/console/model.ts';
import { CONSOLE_CSS, consoleHtml } from '../web/console/page.ts';
import { parseListen, startPageServer, untilSignal } from '../web/http.ts';

export const CONSOLE_FLAGS: FlagSpec[] = [
  { name: 'admin-socket', type: 'string', arg: 'PATH', help: 'the server\'s admin socket (default: <data-dir>/admin.sock)' },
  { name: 'data-dir', type: 'string', arg: 'DIR', default: './.castellan', help: 'the server\'s --data-dir, to find its admin socket' },
  { name: 'listen', type: 'string', arg: 'HOST:PORT', default: '127.0.0.1:8181', help: 'address of the page (loopback; port 0 picks a free one)' },
  { name: 'allow-remote', type: 'boolean', default: false, help: 'allow a --listen address that is not loopback (the page shows the CA\'s state to whoever reaches it)' },
  { name: 'metrics-url', type: 'string', arg: 'URL', default: 'http://127.0.0.1:15014/metrics', help: 'the server\'s /metrics, for issuance and refusal rates ("off": none)' },
  { name: 'refresh', type: 'string', arg: 'DUR', default: '2s', help: 'how often the page refreshes' },
];

const toJson = (m: object): unknown => JSON.parse(JSON.stringify(m, (k, v: unknown) => (k === '$typeName' ? undefined : typeof v === 'bigint' ? Number(v) : v)));

function bundleRoots(pems: readonly string[]): BundleRoot[] {
  return pems.flatMap((pem) =>
    parseCertificatesPem(pem, 'trust bundle').map((der) => {
      const x = new X509Certificate(der);
      const info = certInfo(der);
      return {
        subject: x.subject.replace(/\n/g, ', '),
        ski: info.ski ?? '',
        notBefore: new Date(info.notBefore).toISOString(),
        notAfter: new Date(info.notAfter).toISOString(),
        sha256: createHash('sha256').update(der).digest('hex').replace(/(..)(?!$)/g, '$1:'),
        pem: x.toString(),
      };
    }),
  );
}

/** Sums the samples of one metric of a Prometheus text exposition, grouped by the value of `by` (or all together). */
function samples(text: string, name: string, by?: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line.startsWith(name) || (line[name.length] !== '{' && line[name.length] !== ' ')) continue;
    const m = /^[^{\s]+(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const v = Number(m[2]);
    if (!Number.isFinite(v)) continue;
    const label = by ? (new RegExp(`(?:^|,)${by}="((?:[^"\\\\]|\\\\.)*)"`).exec(m[1] ?? '')?.[1] ?? '') : '';
    out.set(label, (out.get(label) ?? 0) + v);
  }
  return out;
}

export function countersFromMetrics(text: string, at: number): CaCounters {
  const one = (n: string): number => samples(text, n).get('') ?? 0;
  const refusals: Record<string, number> = {};
  const add = (prefix: string, m: Map<string, number>): void => {
    for (const [k, v] of m) if (v > 0) refusals[k ? `${prefix}: ${k}` : prefix] = v;
  };
  add('authentication failed', samples(text, 'citadel_server_authentication_failure_count', 'method'));
  add('CSR unparsable', samples(text, 'citadel_server_csr_parsing_err_count'));
  add('not signed', samples(text, 'citadel_server_csr_sign_err_count', 'error'));
  add('rate limited', samples(text, 'castellan_rate_limited', 'scope'));
  return { at, requests: one('citadel_server_csr_count'), issued: one('citadel_server_success_cert_issuance_count'), signerQueue: one('castellan_signer_queue_depth'), refusals };
}

async function readMetrics(url: string): Promise<{ metrics?: CaCounters; metricsError?: string }> {
  try {
    const r = await fetch(url, { signal: AbortSignal.timeout(3000), redirect: 'error' });
    if (!r.ok) return { metricsError: `metrics at ${url}: HTTP ${r.status}` };
    return { metrics: countersFromMetrics(await r.text(), Date.now()) };
  } catch (e) {
    return { metricsError: `metrics at ${url} unavailable (${(e as Error).cause instanceof Error ? ((e as Error).cause as Error).message : (e as Error).message}); rates need the server's --http-listen (--metrics-url URL)` };
  }
}

function consoleStatus(s: StatusResponse, adminSocket: string, metricsUrl: string): ConsoleStatus {
  const j = toJson(s) as Omit<ConsoleStatus, 'now' | 'adminSocket' | 'bundle' | 'metricsUrl'> & { trustBundlePem?: string[]; authorities?: ConsoleAuthority[] };
  return {
    now: Date.now(),
    adminSocket,
    trustDomain: j.trustDomain ?? '',
    generation: Number(j.generation ?? 0),
    leader: j.leader ?? false,
    keystore: j.keystore ?? '',
    propagationSeconds: Number(j.propagationSeconds ?? 0),
    autoRotation: j.autoRotation ?? false,
    authorities: j.authorities ?? [],
    bundle: bundleRoots(j.trustBundlePem ?? []),
    nextStep: j.nextStep ?? '',
    nextStepAuthorityId: j.nextStepAuthorityId ?? '',
    nextStepAt: j.nextStepAt ?? '',
    metricsUrl,
  };
}

export async function run(argv: string[]): Promise<number> {
  let v;
  try {
    ({ values: v } = parseCommand('console', argv, CONSOLE_FLAGS));
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    return 2;
  }
  if (v.help) {
    process.stdout.write(helpText('console', '[--admin-socket PATH | --data-dir DIR] [--listen 127.0.0.1:PORT] [--metrics-url URL]', CONSOLE_FLAGS));
    return 0;
  }
  let host: string;
  let port: number;
  let refreshMs: number;
  const metricsUrl = String(v['metrics-url']);
  try {
    ({ host, port } = parseListen('listen', String(v.listen), v['allow-remote'] === true));
    refreshMs = parseDuration(String(v.refresh), '--refresh');
    if (refreshMs < 250) throw new CastellanError('INVALID_ARGUMENT', 'config.invalid', '--refresh must be at least 250ms');
    if (metricsUrl !== 'off' && !/^https?:\/\/[^\s/]+\/\S*$/.test(metricsUrl)) throw new CastellanError('INVALID_ARGUMENT', 'config.invalid', `--metrics-url must be an http(s) URL or "off", got "${metricsUrl}"`);
  } catch (e) {
    process.stderr.write(`castellan console: ${(e as Error).message}\n`);
    return 2;
  }
  const socket = (v['admin-socket'] as string | undefined) || join(String(v['data-dir']), 'admin.sock');
  const client = createClient(AdminService, `unix:${socket}`, grpc.credentials.createInsecure());
  const status = async (): Promise<ConsoleStatus> => {
    let s: StatusResponse;
    try {
      s = await client.status(create(StatusRequestSchema, {}), { deadline: Date.now() + 5000 });
    } catch (e) {
      const err = e as grpc.ServiceError;
      throw new CastellanError('UNAVAILABLE', 'console.admin_unreachable', `the admin API at ${socket} did not answer (${err.details || err.message}); is "castellan server" running with this --data-dir or --admin-socket?`);
    }
    return { ...consoleStatus(s, socket, metricsUrl), ...(metricsUrl === 'off' ? {} : await readMetrics(metricsUrl)) };
  };
  let server;
  try {
    const script = await bundleScript(sibling('console/app'));
    server = await startPageServer({
      host,
      port,
      allowAnyHost: v['allow-remote'] === true,
      routes: {
        '/': { type: 'text/html; charset=utf-8', body: consoleHtml(refreshMs) },
        '/console.js': { type: 'text/javascript; charset=utf-8', body: script },
        '/console.css': { type: 'text/css; charset=utf-8', body: CONSOLE_CSS },
        '/api/status': status,
      },
    });
  } catch (e) {
    client.close();
    process.stderr.write(`castellan console: ${(e as Error).message}\n`);
    return 1;
  }
  process.stdout.write(`castellan console: ${server.url} (read-only view of the CA at ${socket}; Ctrl-C stops)\n`);
  await untilSignal();
  await server.close();
  client.close();
  return 0;
}
