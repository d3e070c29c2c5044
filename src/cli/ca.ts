/**
 * `castellan ca status|prepare|activate|taint|retire|import`: the admin CLI,
 * a thin client of the running server's admin API on its Unix socket. It
 * never touches the keyring itself.
 *
 * Exit codes: 0 done; 1 refused by the server (a guard rail, a wrong state,
 * an unknown id: the message says why and what to do); 2 invalid usage;
 * 3 the server cannot be reached on the admin socket.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { create } from '@bufbuild/protobuf';
import {
  ImportRequestSchema,
  PrepareRequestSchema,
  StatusRequestSchema,
  TransitionRequestSchema,
  type Authority,
  type StatusResponse,
  type TransitionResponse,
} from '../gen/castellan/v1/admin_pb.js';
import { helpText, parseCommand, type FlagSpec } from '../config/flags.ts';
import { ADMIN_SOCKET_FLAGS, withAdminClient } from './admin-client.ts';
import { CACERTS_FILES } from '../ca/plugin.ts';
import { assertPrivateFile } from '../platform/files.ts';

export const CA_FLAGS: FlagSpec[] = [
  ...ADMIN_SOCKET_FLAGS,
  { name: 'force', type: 'boolean', default: false, help: 'override a guard rail (prints what it risks)' },
  { name: 'cacerts-dir', type: 'string', arg: 'DIR', help: 'import: the new intermediate in Istio\'s cacerts layout' },
  { name: 'output', type: 'string', arg: 'FORMAT', default: 'text', help: 'text|json' },
  { name: 'kind', type: 'string', arg: 'KIND', default: 'x509', help: 'prepare/activate/taint/retire: x509 (the CA authorities) or jwt (the JWT-SVID signing keys)' },
];

const SUBCOMMANDS: Record<string, string> = {
  status: 'show every authority: id, state, validity, live leaves, when retiring becomes safe',
  prepare: 'self-signed: create the next root; it enters the trust bundle but signs nothing',
  import: 'plug-in: bring a new intermediate (--cacerts-dir) in as prepared',
  activate: 'sign with the prepared authority (or ID); the current one becomes old, still trusted',
  taint: 'mark the previous authority (or ID) tainted: agents re-issue what it signed at once',
  retire: 'remove the previous authority (or ID) from the trust bundle and erase its key',
  // each of prepare, activate, taint and retire takes --kind jwt for the JWT-SVID signing keys
};

function usage(): string {
  const lines = ['usage: castellan ca <command> [ID] [flags]', '', 'commands:'];
  for (const [k, v] of Object.entries(SUBCOMMANDS)) lines.push(`  ${k.padEnd(9)} ${v}`);
  return lines.join('\n') + '\n\n' + helpText('ca <command>', '', CA_FLAGS).split('\n').slice(2).join('\n');
}

const dash = (s: string): string => (s === '' ? '-' : s);
const short = (t: string): string => (t === '' ? '-' : t.replace(/\.\d{3}Z$/, 'Z'));

function jwtKeyLines(a: Authority): string[] {
  return [
    `${a.id}  ${a.state.toUpperCase()}  (JWT signing key, ${a.keyType})`,
    `    planned life   ${short(a.notBefore)} to ${short(a.notAfter)}`,
    `    tokens         ${a.issued} issued (all replicas, as recorded), last expires ${short(a.lastLeafNotAfter)}`,
    ...(a.state === 'retired' || a.state === 'active' ? [] : [`    retire safe at ${short(a.retireSafeAt)}`]),
    `    history        ${historyOf(a)}`,
  ];
}

function historyOf(a: Authority): string {
  return (
    [
      ['prepared', a.preparedAt],
      ['activated', a.activatedAt],
      ['deactivated', a.deactivatedAt],
      ['tainted', a.taintedAt],
      ['retired', a.retiredAt],
    ]
      .filter(([, t]) => t)
      .map(([k, t]) => `${k} ${short(t!)}`)
      .join(', ') || '-'
  );
}

function authorityLines(a: Authority): string[] {
  if (a.source === 'jwt') return jwtKeyLines(a);
  return [
    `${a.id}  ${a.state.toUpperCase()}  (${a.source}, ${a.keyType})`,
    `    subject        ${dash(a.subject)}`,
    `    valid          ${short(a.notBefore)} to ${short(a.notAfter)}`,
    `    leaves         ${a.issued} issued (all replicas, as recorded), ${a.liveLeaves} live (this server, since it started), last expires ${short(a.lastLeafNotAfter)}`,
    ...(a.state === 'retired' || a.state === 'active' ? [] : [`    retire safe at ${short(a.retireSafeAt)}`]),
    `    history        ${historyOf(a)}`,
  ];
}

/** What automatic rotation does next, as the admin would read it (empty fields: nothing due). */
function nextStepLine(s: StatusResponse): string {
  if (!s.autoRotation) return 'next step: none (automatic rotation is off: run the steps by hand)';
  if (!s.nextStep) return `next step: nothing due; next check ${short(s.nextStepAt)}`;
  return `next step: ${s.nextStep} ${s.nextStepAuthorityId.slice(0, 16) || '(new authority)'} at ${short(s.nextStepAt)}${s.leader ? '' : ' (by the replica that rotates)'}`;
}

function statusText(s: StatusResponse): string {
  const head = `keyring ${s.keystore} (generation ${s.generation}), trust domain ${s.trustDomain}; this replica ${s.leader ? 'rotates' : 'does not rotate'}; automatic rotation ${s.autoRotation ? 'on' : 'off'}; propagation time ${s.propagationSeconds}s`;
  const jwt = s.jwtKeys.length === 0 ? ['JWT-SVID signing keys: none (--no-jwt-svid)', ''] : ['JWT-SVID signing keys:', '', ...s.jwtKeys.flatMap((a) => [...jwtKeyLines(a), ''])];
  return [head, nextStepLine(s), '', ...s.authorities.flatMap((a) => [...authorityLines(a), '']), ...jwt].join('\n');
}

function transitionText(r: TransitionResponse): string {
  return authorityLines(r.authority!).join('\n') + '\n';
}

export async function run(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h' || sub === 'help') {
    process.stdout.write(usage());
    return sub === undefined ? 2 : 0;
  }
  if (!(sub in SUBCOMMANDS)) {
    process.stderr.write(`castellan ca: unknown command "${sub}"\n\n${usage()}`);
    return 2;
  }
  let values;
  let positionals: string[];
  try {
    ({ values, positionals } = parseCommand(`ca ${sub}`, rest, CA_FLAGS, { allowPositionals: true }));
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(`${SUBCOMMANDS[sub]}\n\n` + helpText(`ca ${sub}`, ['activate', 'taint', 'retire'].includes(sub) ? '[ID] [flags]' : '[flags]', CA_FLAGS));
    return 0;
  }
  const output = values.output as string;
  if (output !== 'text' && output !== 'json') {
    process.stderr.write(`castellan ca ${sub}: --output must be text or json, got "${output}"\n`);
    return 2;
  }
  const kind = values.kind as string;
  if (kind !== 'x509' && kind !== 'jwt') {
    process.stderr.write(`castellan ca ${sub}: --kind must be x509 or jwt, got "${kind}"\n`);
    return 2;
  }
  if (kind === 'jwt' && (sub === 'import' || sub === 'status')) {
    process.stderr.write(`castellan ca ${sub}: --kind jwt goes with prepare, activate, taint and retire (status shows both kinds)\n`);
    return 2;
  }
  const takesId = ['activate', 'taint', 'retire'].includes(sub);
  if (positionals.length > (takesId ? 1 : 0)) {
    process.stderr.write(`castellan ca ${sub}: unexpected argument "${positionals[takesId ? 1 : 0]}"\n`);
    return 2;
  }
  const id = positionals[0] ?? '';
  if (id !== '' && !/^[0-9a-f]{8,128}$/.test(id)) {
    process.stderr.write(`castellan ca ${sub}: ID must be the authority's hex subject key identifier (or at least 8 hex digits of it), got "${id}"\n`);
    return 2;
  }
  let importReq;
  if (sub === 'import') {
    const dir = values['cacerts-dir'] as string | undefined;
    if (!dir) {
      process.stderr.write('castellan ca import: --cacerts-dir DIR is required (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem)\n');
      return 2;
    }
    try {
      await assertPrivateFile(join(dir, 'ca-key.pem'));
      const t = Object.fromEntries(CACERTS_FILES.map((f) => [f, readFileSync(join(dir, f), 'utf8')])) as Record<(typeof CACERTS_FILES)[number], string>;
      importReq = create(ImportRequestSchema, { caCertPem: t['ca-cert.pem'], caKeyPem: t['ca-key.pem'], rootCertPem: t['root-cert.pem'], certChainPem: t['cert-chain.pem'] });
    } catch (e) {
      process.stderr.write(`castellan ca import: ${(e as Error).message}\n`);
      return 2;
    }
  }
  return withAdminClient(`ca ${sub}`, values, async (client, deadline) => {
    let out: string;
    let forcedRisk = '';
    if (sub === 'status') {
      const s = await client.status(create(StatusRequestSchema, {}), { deadline });
      out = output === 'json' ? JSON.stringify(toJson(s), null, 2) + '\n' : statusText(s);
    } else {
      const t = create(TransitionRequestSchema, { authorityId: id, force: values.force === true, kind });
      const r =
        sub === 'prepare' ? await client.prepare(create(PrepareRequestSchema, { kind }), { deadline })
        : sub === 'import' ? await client.import(importReq!, { deadline })
        : sub === 'activate' ? await client.activate(t, { deadline })
        : sub === 'taint' ? await client.taint(t, { deadline })
        : await client.retire(t, { deadline });
      forcedRisk = r.forcedRisk;
      out = output === 'json' ? JSON.stringify({ authority: toJson(r.authority!), forcedRisk: r.forcedRisk || null }, null, 2) + '\n' : transitionText(r);
    }
    if (forcedRisk) process.stderr.write(`castellan ca ${sub}: FORCED past a guard rail. Risk accepted: ${forcedRisk}\n`);
    process.stdout.write(out);
    return 0;
  });
}

function toJson(m: object): unknown {
  return JSON.parse(JSON.stringify(m, (k, v: unknown) => (k === '$typeName' ? undefined : typeof v === 'bigint' ? Number(v) : v)));
}
