/**
 * `castellan` command dispatcher. Each command lives in its own module under
 * src/cli/ and exports `run(argv): Promise<number>` (the exit code). Before
 * it is loaded, a command with V8 settings of its own re-executes the
 * process with them (launch.ts).
 */
import { relaunchForRole } from './launch.ts';

const COMMANDS: Record<string, { summary: string; load: () => Promise<{ run(argv: string[]): Promise<number> }> }> = {
  server: { summary: 'run the CA server (Istio CreateCertificate API over gRPC/TLS)', load: () => import('./server.ts') },
  agent: { summary: 'run the node/sidecar agent serving Envoy SDS on a Unix socket', load: () => import('./agent.ts') },
  dev: { summary: 'all-in-one demo: CA, token issuer, two agents, an mTLS call (no Kubernetes)', load: () => import('./dev.ts') },
  authz: { summary: 'evaluate, test, lint and serve Istio AuthorizationPolicies', load: () => import('./authz.ts') },
  workload: { summary: 'query a SPIFFE Workload API: fetch-x509, fetch-jwt, validate-jwt', load: () => import('./workload.ts') },
  console: { summary: 'a read-only web page of the CA: authorities on a timeline, bundle, leaves, rates, next steps', load: () => import('./console.ts') },
  bundle: { summary: 'federation by hand: show this trust domain\'s bundle, set, delete or list foreign ones (admin socket)', load: () => import('./bundle.ts') },
  ca: { summary: 'rotate the CA: status, prepare, import, activate, taint, retire (through the server\'s admin socket)', load: () => import('./ca.ts') },
};

function usage(): string {
  const lines = ['usage: castellan <command> [flags]', '', 'commands:'];
  for (const [name, c] of Object.entries(COMMANDS)) lines.push(`  ${name.padEnd(8)} ${c.summary}`);
  lines.push('', 'Run "castellan <command> --help" for the flags of a command.');
  return lines.join('\n');
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(usage() + '\n');
    return cmd === undefined ? 2 : 0;
  }
  if (cmd === '--version') {
    process.stdout.write('castellan 0.1.0\n');
    return 0;
  }
  const c = COMMANDS[cmd];
  if (!c) {
    process.stderr.write(`castellan: unknown command "${cmd}"\n\n${usage()}\n`);
    return 2;
  }
  relaunchForRole(cmd);
  const mod = await c.load();
  return mod.run(rest);
}

const code = await main(process.argv.slice(2));
// Long-running commands (server, agent, dev) resolve only when they stop.
process.exitCode = code;
