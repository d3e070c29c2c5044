/**
 * `castellan workload fetch-x509|fetch-jwt|validate-jwt`: a client of any
 * SPIFFE Workload API (Castellan's agent, SPIRE's agent), for debugging and
 * scripts, in the manner of `spire-agent api fetch`. The socket is --socket,
 * else $SPIFFE_ENDPOINT_SOCKET (unix:///path or a path).
 *
 * Exit codes: 0 done; 1 the Workload API refused (the message says why);
 * 2 invalid usage; 3 the socket cannot be reached (or answered nothing in time).
 */
import { X509Certificate } from 'node:crypto';
import { join, resolve } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { create, type JsonObject } from '@bufbuild/protobuf';
import {
  JWTBundlesRequestSchema,
  JWTSVIDRequestSchema,
  SpiffeWorkloadAPI,
  ValidateJWTSVIDRequestSchema,
  X509SVIDRequestSchema,
  type X509SVIDResponse,
} from '../gen/spiffe/workload/workload_pb.js';
import { helpText, parseCommand, parseDuration, type FlagSpec, type FlagValues } from '../config/flags.ts';
import { createClient, type GrpcClient } from '../grpc/service.ts';
import { ERROR_TRAILER } from '../grpc/status.ts';
import { derToPem } from '../platform/pem.ts';
import { ensurePrivateDir, writeFilesAtomic } from '../platform/files.ts';
import { splitDer } from '../workload/der.ts';

export const WORKLOAD_FLAGS: FlagSpec[] = [
  { name: 'socket', type: 'string', arg: 'PATH', help: 'the Workload API socket (default: $SPIFFE_ENDPOINT_SOCKET)' },
  { name: 'audience', type: 'string', multiple: true, arg: 'AUD', help: 'fetch-jwt: audience of the JWT-SVID [repeatable]; validate-jwt: the audience to check' },
  { name: 'token', type: 'string', arg: 'JWT', help: 'validate-jwt: the JWT-SVID to check ("-" reads it from stdin)' },
  { name: 'spiffe-id', type: 'string', arg: 'ID', help: 'fetch-jwt: only this SPIFFE ID\'s JWT-SVID' },
  { name: 'write', type: 'string', arg: 'DIR', help: 'fetch-x509: also write svid.0.pem, svid.0.key (0600) and bundle.0.pem into DIR' },
  { name: 'timeout', type: 'string', arg: 'DUR', default: '10s', help: 'how long to wait for an answer' },
  { name: 'output', type: 'string', arg: 'FORMAT', default: 'text', help: 'text|json' },
];

const SUBCOMMANDS: Record<string, string> = {
  'fetch-x509': 'the X.509-SVIDs and bundles: SPIFFE ID, validity, chain and bundle summary',
  'fetch-jwt': 'a JWT-SVID for --audience, and the JWT bundles',
  'validate-jwt': 'check --token for --audience: SPIFFE ID and claims',
};

function usage(): string {
  const lines = ['usage: castellan workload <command> [flags]', '', 'commands:'];
  for (const [k, v] of Object.entries(SUBCOMMANDS)) lines.push(`  ${k.padEnd(13)} ${v}`);
  return lines.join('\n') + '\n\n' + helpText('workload <command>', '', WORKLOAD_FLAGS).split('\n').slice(2).join('\n');
}

class UsageError extends Error {}

type Client = GrpcClient<(typeof SpiffeWorkloadAPI)['method']>;

const iso = (ms: number): string => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

function certSummary(der: Buffer): { subject: string; notBefore: string; notAfter: string } {
  const c = new X509Certificate(der);
  return { subject: (c.subject ?? '').split('\n').join(', '), notBefore: iso(Date.parse(c.validFrom)), notAfter: iso(Date.parse(c.validTo)) };
}

function socketOf(values: FlagValues): string {
  const raw = (values.socket as string | undefined) || process.env.SPIFFE_ENDPOINT_SOCKET;
  if (!raw) throw new UsageError('--socket PATH is required (or set SPIFFE_ENDPOINT_SOCKET)');
  if (raw.startsWith('unix://')) return raw.slice('unix://'.length);
  if (raw.startsWith('unix:')) return raw.slice('unix:'.length);
  if (/^[a-z]+:/.test(raw)) throw new UsageError(`--socket must be a path or unix:///path, got "${raw}"`);
  return resolve(raw);
}

function firstOf<T>(stream: grpc.ClientReadableStream<T>): Promise<T> {
  return new Promise((res, rej) => {
    stream.once('data', (m: T) => {
      res(m);
      stream.cancel();
    });
    stream.once('error', rej);
    stream.once('end', () => rej(Object.assign(new Error('the stream ended without a response'), { code: grpc.status.UNAVAILABLE })));
  });
}

async function fetchX509(client: Client, md: grpc.Metadata, deadline: number, values: FlagValues): Promise<{ json: unknown; text: string }> {
  const started = performance.now();
  const r: X509SVIDResponse = await firstOf(client.fetchX509SVID(create(X509SVIDRequestSchema, {}), { metadata: md, deadline }));
  const ms = (performance.now() - started).toFixed(1);
  const svids = r.svids.map((s) => {
    const chain = splitDer(s.x509Svid);
    const bundle = splitDer(s.bundle);
    return { spiffeId: s.spiffeId, hint: s.hint, chain: chain.map(certSummary), bundle: bundle.map(certSummary), raw: { chain, bundle, key: s.x509SvidKey } };
  });
  const dir = values.write as string | undefined;
  if (dir) {
    await ensurePrivateDir(dir);
    const files = svids.flatMap((s, i) => [
      { path: join(dir, `svid.${i}.key`), data: derToPem(s.raw.key, 'PRIVATE KEY'), mode: 0o600 },
      { path: join(dir, `bundle.${i}.pem`), data: s.raw.bundle.map((d) => derToPem(d)).join(''), mode: 0o644 },
      { path: join(dir, `svid.${i}.pem`), data: s.raw.chain.map((d) => derToPem(d)).join(''), mode: 0o644 },
    ]);
    await writeFilesAtomic(files);
  }
  const federated = Object.entries(r.federatedBundles).map(([td, b]) => ({ trustDomain: td, certificates: splitDer(b).length }));
  const json = { svids: svids.map(({ raw: _raw, ...s }) => s), federatedBundles: federated, written: dir ?? null };
  const lines = [`Received ${svids.length} svid${svids.length === 1 ? '' : 's'} after ${ms}ms`, ''];
  for (const s of svids) {
    lines.push(`SPIFFE ID:          ${s.spiffeId}`, `SVID valid after:   ${s.chain[0]?.notBefore}`, `SVID valid until:   ${s.chain[0]?.notAfter}`, `Intermediates:      ${s.chain.length - 1}`);
    s.bundle.forEach((c, i) => lines.push(`CA #${i + 1} subject:      ${c.subject}`, `CA #${i + 1} valid until:  ${c.notAfter}`));
    lines.push('');
  }
  for (const f of federated) lines.push(`Federated bundle ${f.trustDomain}: ${f.certificates} certificate(s)`);
  if (dir) lines.push(`Written to ${dir}: svid.N.pem, svid.N.key (0600), bundle.N.pem`);
  return { json, text: lines.join('\n') + '\n' };
}

async function fetchJwt(client: Client, md: grpc.Metadata, deadline: number, values: FlagValues): Promise<{ json: unknown; text: string }> {
  const audience = (values.audience as string[] | undefined) ?? [];
  if (audience.length === 0) throw new UsageError('fetch-jwt needs --audience AUD');
  const r = await client.fetchJWTSVID(create(JWTSVIDRequestSchema, { audience, spiffeId: (values['spiffe-id'] as string | undefined) ?? '' }), { metadata: md, deadline });
  const b = await firstOf(client.fetchJWTBundles(create(JWTBundlesRequestSchema, {}), { metadata: md, deadline }));
  const svids = r.svids.map((s) => {
    const claims = JSON.parse(Buffer.from(s.svid.split('.')[1] ?? '', 'base64url').toString('utf8') || '{}') as { exp?: number };
    return { spiffeId: s.spiffeId, token: s.svid, expiresAt: claims.exp ? iso(claims.exp * 1000) : null };
  });
  const bundles = Object.entries(b.bundles).map(([td, v]) => ({ trustDomain: td, keys: ((JSON.parse(Buffer.from(v).toString('utf8')) as { keys?: { kid?: string }[] }).keys ?? []).map((k) => k.kid ?? '') }));
  const lines: string[] = [];
  for (const s of svids) lines.push(`token(${s.spiffeId}), expires ${s.expiresAt ?? '?'}:`, `\t${s.token}`, '');
  for (const x of bundles) lines.push(`bundle(${x.trustDomain}): ${x.keys.length} key(s): ${x.keys.join(', ')}`);
  return { json: { svids, bundles }, text: lines.join('\n') + '\n' };
}

async function validateJwt(client: Client, md: grpc.Metadata, deadline: number, values: FlagValues): Promise<{ json: unknown; text: string }> {
  const audience = (values.audience as string[] | undefined) ?? [];
  if (audience.length !== 1) throw new UsageError('validate-jwt needs exactly one --audience AUD');
  let token = values.token as string | undefined;
  if (token === '-') token = (await new Response(process.stdin as unknown as ReadableStream).text()).trim();
  if (!token) throw new UsageError('validate-jwt needs --token JWT (or --token - to read it from stdin)');
  const r = await client.validateJWTSVID(create(ValidateJWTSVIDRequestSchema, { audience: audience[0]!, svid: token }), { metadata: md, deadline });
  const claims = (r.claims ?? {}) as JsonObject;
  return { json: { valid: true, spiffeId: r.spiffeId, claims }, text: `SVID is valid.\nSPIFFE ID: ${r.spiffeId}\nClaims:    ${JSON.stringify(claims)}\n` };
}

export async function run(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h' || sub === 'help') {
    process.stdout.write(usage());
    return sub === undefined ? 2 : 0;
  }
  if (!(sub in SUBCOMMANDS)) {
    process.stderr.write(`castellan workload: unknown command "${sub}"\n\n${usage()}`);
    return 2;
  }
  let values: FlagValues;
  let socket: string;
  let timeoutMs: number;
  try {
    ({ values } = parseCommand(`workload ${sub}`, rest, WORKLOAD_FLAGS, { configFlag: false }));
    if (values.help) {
      process.stdout.write(`${SUBCOMMANDS[sub]}\n\n` + helpText(`workload ${sub}`, '[flags]', WORKLOAD_FLAGS));
      return 0;
    }
    if (values.output !== 'text' && values.output !== 'json') throw new UsageError(`--output must be text or json, got "${String(values.output)}"`);
    if (values.write !== undefined && sub !== 'fetch-x509') throw new UsageError('--write goes with fetch-x509 only');
    if (values.token !== undefined && sub !== 'validate-jwt') throw new UsageError('--token goes with validate-jwt only');
    timeoutMs = parseDuration(values.timeout as string, '--timeout');
    socket = socketOf(values);
  } catch (e) {
    process.stderr.write(`castellan workload ${sub}: ${(e as Error).message.replace(/^castellan workload [a-z0-9-]+: /, '')}\n`);
    return 2;
  }
  const client = createClient(SpiffeWorkloadAPI, `unix:${socket}`, grpc.credentials.createInsecure());
  const md = new grpc.Metadata();
  md.set('workload.spiffe.io', 'true');
  const deadline = Date.now() + timeoutMs;
  try {
    const fn = sub === 'fetch-x509' ? fetchX509 : sub === 'fetch-jwt' ? fetchJwt : validateJwt;
    const out = await fn(client, md, deadline, values);
    process.stdout.write(values.output === 'json' ? JSON.stringify(out.json, null, 2) + '\n' : out.text);
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`castellan workload ${sub}: ${e.message}\n`);
      return 2;
    }
    const err = e as grpc.ServiceError;
    // Castellan's own refusals carry its x-castellan-error trailer; a missing connection does not.
    const answered = (err.metadata?.get(ERROR_TRAILER).length ?? 0) > 0;
    if (!answered && (err.code === grpc.status.UNAVAILABLE || err.code === grpc.status.DEADLINE_EXCEEDED)) {
      process.stderr.write(`castellan workload ${sub}: no answer from the Workload API at ${socket} (${err.details || err.message}); is the agent running with --workload-api-socket ${socket}?\n`);
      return 3;
    }
    process.stderr.write(`castellan workload ${sub}: ${grpc.status[err.code] ?? 'error'}: ${err.details || err.message}\n`);
    return 1;
  } finally {
    client.close();
  }
}
