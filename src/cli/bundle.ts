/**
 * `castellan bundle show|set|delete|list`: federation by hand (as
 * `spire-server bundle` does), a thin client of the running server's admin
 * API on its Unix socket (docs/federation.md).
 *
 * Exit codes: 0 done; 1 refused by the server (nothing to delete); 2 invalid
 * usage, this server's own trust domain, or a bundle file that does not
 * validate (checked here before anything is sent, and again by the server); 3 the server cannot be reached on the admin socket.
 */
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import { DeleteBundleRequestSchema, ListBundlesRequestSchema, SetBundleRequestSchema, ShowBundleRequestSchema, type FederatedBundleInfo } from '../gen/castellan/v1/admin_pb.js';
import { helpText, parseCommand, type FlagSpec } from '../config/flags.ts';
import { parseBundleText } from '../server/federation.ts';
import { ADMIN_SOCKET_FLAGS, withAdminClient } from './admin-client.ts';

export const BUNDLE_FLAGS: FlagSpec[] = [
  ...ADMIN_SOCKET_FLAGS,
  { name: 'trust-domain', type: 'string', arg: 'TD', help: 'set, delete: the foreign trust domain' },
  { name: 'file', type: 'string', arg: 'PATH', help: 'set: the foreign bundle ("-" for stdin)' },
  { name: 'format', type: 'string', arg: 'FORMAT', help: 'show: spiffe (default) or pem; set: spiffe or pem (default: PEM when the file starts with a PEM block, else spiffe)' },
  { name: 'output', type: 'string', arg: 'FORMAT', default: 'text', help: 'list: text|json' },
];

const SUBCOMMANDS: Record<string, string> = {
  show: 'print this trust domain\'s bundle (what its bundle endpoint serves), to hand to a foreign trust domain',
  set: 'store a foreign trust domain\'s bundle (--trust-domain TD --file F); agents trust it for that domain only',
  delete: 'forget a foreign trust domain\'s bundle (--trust-domain TD)',
  list: 'every stored foreign bundle: trust domain, source, sequence, last refresh, authorities',
};

function usage(): string {
  const lines = ['usage: castellan bundle <command> [flags]', '', 'commands:'];
  for (const [k, v] of Object.entries(SUBCOMMANDS)) lines.push(`  ${k.padEnd(7)} ${v}`);
  return lines.join('\n') + '\n\n' + helpText('bundle <command>', '', BUNDLE_FLAGS).split('\n').slice(2).join('\n');
}

const dash = (s: string): string => (s === '' ? '-' : s.replace(/\.\d{3}Z$/, 'Z'));

function listText(bundles: readonly FederatedBundleInfo[]): string {
  if (bundles.length === 0) return 'no federated bundles\n';
  const rows = [['TRUST DOMAIN', 'SOURCE', 'SEQUENCE', 'UPDATED', 'LAST REFRESH', 'X509', 'JWT', 'LAST ERROR']];
  for (const b of bundles) {
    const source = b.source === 'endpoint' || b.endpointUrl ? `${b.source} ${b.endpointUrl}`.trim() : b.source;
    rows.push([b.trustDomain, source, String(b.sequence), dash(b.updatedAt), dash(b.lastRefresh), String(b.x509Authorities), String(b.jwtAuthorities), dash(b.lastError)]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n') + '\n';
}

function fail(sub: string, msg: string): number {
  process.stderr.write(`castellan bundle ${sub}: ${msg}\n`);
  return 2;
}

export async function run(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h' || sub === 'help') {
    process.stdout.write(usage());
    return sub === undefined ? 2 : 0;
  }
  if (!(sub in SUBCOMMANDS)) {
    process.stderr.write(`castellan bundle: unknown command "${sub}"\n\n${usage()}`);
    return 2;
  }
  let values;
  try {
    ({ values } = parseCommand(`bundle ${sub}`, rest, BUNDLE_FLAGS));
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(`${SUBCOMMANDS[sub]}\n\n` + helpText(`bundle ${sub}`, '[flags]', BUNDLE_FLAGS));
    return 0;
  }
  const td = (values['trust-domain'] as string | undefined) ?? '';
  const file = values.file as string | undefined;
  const format = (values.format as string | undefined) ?? '';
  const output = values.output as string;
  if (format !== '' && format !== 'spiffe' && format !== 'pem') return fail(sub, `--format must be spiffe or pem, got "${format}"`);
  if (output !== 'text' && output !== 'json') return fail(sub, `--output must be text or json, got "${output}"`);
  if ((sub === 'set' || sub === 'delete') && td === '') return fail(sub, '--trust-domain TD is required');
  if (sub !== 'set' && file !== undefined) return fail(sub, '--file goes with set only');
  if ((sub === 'show' || sub === 'list') && td !== '') return fail(sub, '--trust-domain goes with set and delete');
  let text = '';
  if (sub === 'set') {
    if (!file) return fail(sub, '--file PATH is required (a SPIFFE bundle document, or PEM CA certificates)');
    try {
      text = readFileSync(file === '-' ? 0 : file, 'utf8');
      parseBundleText(td, text, format, file === '-' ? 'stdin' : file); // a precise message and exit 2 before anything is sent
    } catch (e) {
      return fail(sub, (e as Error).message);
    }
  }
  // the server refusing the input itself (its own trust domain, a bundle that does not validate) is a usage error
  const refusalExit = (code: grpc.status): number => (code === grpc.status.INVALID_ARGUMENT ? 2 : 1);
  return withAdminClient(`bundle ${sub}`, values, async (client, deadline) => {
    if (sub === 'show') {
      const r = await client.showBundle(create(ShowBundleRequestSchema, { format }), { deadline });
      process.stdout.write(r.text);
    } else if (sub === 'set') {
      const r = await client.setBundle(create(SetBundleRequestSchema, { trustDomain: td, text, format }), { deadline });
      process.stdout.write(`stored the bundle of ${r.trustDomain}: sequence ${r.sequence}, ${r.x509Authorities} X.509 and ${r.jwtAuthorities} JWT authorities\n`);
    } else if (sub === 'delete') {
      await client.deleteBundle(create(DeleteBundleRequestSchema, { trustDomain: td }), { deadline });
      process.stdout.write(`deleted the bundle of ${td}\n`);
    } else {
      const r = await client.listBundles(create(ListBundlesRequestSchema, {}), { deadline });
      const json = r.bundles.map((b) => ({ ...b, $typeName: undefined, sequence: Number(b.sequence) }));
      process.stdout.write(output === 'json' ? JSON.stringify(json, null, 2) + '\n' : listText(r.bundles));
    }
    return 0;
  }, refusalExit);
}
