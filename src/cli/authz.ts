/**
 * `castellan authz check|test|validate|serve`: Istio AuthorizationPolicy
 * evaluation for policy authors and Envoy's ext_authz.
 *
 * Exit codes: 0 evaluated / every case passed / no errors; 1 `--expect`
 * mismatch or a failed case; 2 invalid input (flags, policies, request,
 * suite), with a message naming the file, document, field and reason.
 * `serve` exits 0 after SIGINT/SIGTERM, 1 if it fails at run time.
 *
 * `serve` reads policies from files (`--policies`, reloaded on change) or,
 * with `--kubernetes`, from the API server (list + watch of
 * security.istio.io AuthorizationPolicies; src/kube/policy-watch.ts): one
 * source or the other, never both, so a policy has one place it comes from.
 */
import { readFileSync } from 'node:fs';
import { helpText, parseCommand, parseDuration, type FlagSpec, type FlagValues } from '../config/flags.ts';
import { AuthzEngine, type CustomDecision } from '../authz/engine.ts';
import { formatDecision } from '../authz/explain.ts';
import { assertNoErrors, collectPolicies, formatIssue, type FileIssue } from '../authz/loader.ts';
import { createAuthzMetrics } from '../authz/metrics.ts';
import { PATH_NORMALIZATIONS, type PathNormalization } from '../authz/path.ts';
import { parseRequestText } from '../authz/request.ts';
import { runSuiteFile, type SuiteResult } from '../authz/suite.ts';
import { isTrustDomainName } from '../authz/trust-domain.ts';
import { PolicyWatcher } from '../authz/watch.ts';
import type { InvalidPolicyMode } from '../kube/policy-watch.ts';
import { CastellanError } from '../platform/errors.ts';
import { createLogger } from '../platform/logger.ts';
import type { OpsServer } from '../platform/http.ts';

/** src/kube/policy-watch.ts's modes, spelled out so that check/test/validate start without client-node. */
const INVALID_POLICY_MODES: readonly InvalidPolicyMode[] = ['fail-closed', 'skip'];

const COMMON: FlagSpec[] = [
  { name: 'root-namespace', type: 'string', arg: 'NS', default: 'istio-system', help: 'namespace whose policies apply to every workload of the mesh' },
  { name: 'path-normalization', type: 'string', arg: 'MODE', default: 'base', help: `path normalisation before matching: ${PATH_NORMALIZATIONS.join('|')}` },
  { name: 'custom-decision', type: 'string', arg: 'allow|deny', default: 'deny', help: 'answer of the CUSTOM provider when a CUSTOM policy matches' },
  { name: 'trust-domain', type: 'string', arg: 'TD', default: 'cluster.local', help: 'the mesh\'s trust domain: principals "cluster.local/…" and of its aliases mean this one (Istio\'s meshConfig.trustDomain)' },
  { name: 'trust-domain-alias', type: 'string', multiple: true, arg: 'TD', help: 'a trust domain treated as the local one (Istio\'s trustDomainAliases; repeatable). Never a federated trust domain' },
];
const OUTPUT: FlagSpec = { name: 'output', type: 'string', arg: 'text|json', default: 'text', help: 'output format' };

export const CHECK_FLAGS: FlagSpec[] = [
  { name: 'policies', type: 'string', multiple: true, arg: 'PATH', help: 'policy file or directory (.yaml, .yml, .json); more paths may follow' },
  { name: 'request', type: 'string', arg: 'FILE|-', help: 'request document (YAML or JSON; - for stdin)' },
  OUTPUT,
  { name: 'explain', type: 'boolean', help: 'list every policy considered and the first condition that failed' },
  { name: 'expect', type: 'string', arg: 'allow|deny', help: 'exit 1 unless the decision is this' },
  ...COMMON,
];
export const TEST_FLAGS: FlagSpec[] = [OUTPUT, { name: 'verbose', type: 'boolean', help: 'print the explanation of failed cases' }, ...COMMON];
export const VALIDATE_FLAGS: FlagSpec[] = [
  { name: 'policies', type: 'string', multiple: true, arg: 'PATH', help: 'policy file or directory (also accepted as arguments)' },
  OUTPUT,
];
export const SERVE_FLAGS: FlagSpec[] = [
  { name: 'policies', type: 'string', multiple: true, arg: 'PATH', help: 'policy file or directory, reloaded on change' },
  { name: 'grpc-listen', type: 'string', arg: 'ADDR', default: '127.0.0.1:9191', help: 'ext_authz gRPC address (host:port or unix:/path; plaintext, as Envoy\'s local ext_authz cluster uses)' },
  { name: 'http-listen', type: 'string', arg: 'ADDR', default: '127.0.0.1:9192', help: '/metrics /healthz /readyz address ("off" to disable)' },
  ...COMMON,
  { name: 'workload-namespace', type: 'string', arg: 'NS', help: 'destination workload namespace when a check request does not name one' },
  { name: 'workload-label', type: 'string', multiple: true, arg: 'K=V', help: 'destination workload label added to every check request' },
  { name: 'poll-interval', type: 'string', arg: 'DUR', default: '2s', help: 'how often policy files are checked for changes (besides file events)' },
  { name: 'kubernetes', type: 'boolean', help: 'read AuthorizationPolicies from the Kubernetes API (list + watch) instead of --policies' },
  { name: 'kubeconfig', type: 'string', arg: 'PATH', help: 'kubeconfig for --kubernetes (default: $KUBECONFIG, then the in-cluster service account)' },
  { name: 'kubernetes-namespace', type: 'string', multiple: true, arg: 'NS', help: 'with --kubernetes: watch only this namespace, and always the --root-namespace (default: all namespaces)' },
  { name: 'kubernetes-invalid', type: 'string', arg: 'MODE', default: 'fail-closed', help: `with --kubernetes, an object that fails validation: ${INVALID_POLICY_MODES.join('|')} (fail-closed: a stand-in that can only deny)` },
  { name: 'log-level', type: 'string', arg: 'LEVEL', default: 'info', help: 'trace|debug|info|warn|error|fatal|silent' },
];

const SUBCOMMANDS: Record<string, { synopsis: string; summary: string; flags: FlagSpec[] }> = {
  check: { synopsis: '--policies PATH... --request FILE|- [flags]', summary: 'decide one request and say why', flags: CHECK_FLAGS },
  test: { synopsis: 'SUITE... [flags]', summary: 'run policy test suites (a line per case, exit 1 on failure)', flags: TEST_FLAGS },
  validate: { synopsis: 'PATH... [flags]', summary: 'lint policies with Istio\'s validation rules and warnings', flags: VALIDATE_FLAGS },
  serve: { synopsis: '--policies PATH... | --kubernetes [--grpc-listen ADDR] [flags]', summary: 'serve Envoy ext_authz (envoy.service.auth.v3.Authorization/Check)', flags: SERVE_FLAGS },
};

function usage(): string {
  const lines = ['usage: castellan authz <command> [flags]', '', 'commands:'];
  for (const [n, s] of Object.entries(SUBCOMMANDS)) lines.push(`  ${n.padEnd(9)} ${s.summary}`);
  lines.push('  playground a local web page: edit policies and a request, see the decision as you type');
  lines.push('', 'Run "castellan authz <command> --help" for its flags.', 'Exit codes: 0 ok, 1 expectation or test failure, 2 invalid input.');
  return lines.join('\n') + '\n';
}

function invalid(msg: string): CastellanError {
  return new CastellanError('INVALID_ARGUMENT', 'config.invalid', msg);
}

interface Common {
  rootNamespace: string;
  trustDomain: string;
  trustDomainAliases: string[];
  pathNormalization: PathNormalization;
  customDecision: CustomDecision;
  output: 'text' | 'json';
}

function common(cmd: string, v: FlagValues): Common {
  const rootNamespace = v['root-namespace'] as string;
  if (!rootNamespace) throw invalid(`castellan authz ${cmd}: --root-namespace must not be empty`);
  const pn = v['path-normalization'] as string;
  if (!(PATH_NORMALIZATIONS as readonly string[]).includes(pn)) throw invalid(`castellan authz ${cmd}: --path-normalization must be one of ${PATH_NORMALIZATIONS.join(', ')}, got "${pn}"`);
  const cd = String(v['custom-decision'] ?? 'deny').toLowerCase();
  if (cd !== 'allow' && cd !== 'deny') throw invalid(`castellan authz ${cmd}: --custom-decision must be allow or deny, got "${cd}"`);
  const out = String(v.output ?? 'text');
  if (out !== 'text' && out !== 'json') throw invalid(`castellan authz ${cmd}: --output must be text or json, got "${out}"`);
  const trustDomain = String(v['trust-domain'] ?? 'cluster.local');
  if (!isTrustDomainName(trustDomain)) throw invalid(`castellan authz ${cmd}: --trust-domain must be a trust domain name (lowercase letters, digits, ".", "-", "_"), got "${trustDomain.slice(0, 100)}"`);
  const trustDomainAliases = (v['trust-domain-alias'] as string[] | undefined) ?? [];
  const badAlias = trustDomainAliases.find((a) => !/^[a-z0-9._*-]{1,255}$/.test(a));
  if (badAlias !== undefined) throw invalid(`castellan authz ${cmd}: --trust-domain-alias must be a trust domain name (or a "*" pattern), got "${badAlias.slice(0, 100)}"`);
  return { rootNamespace, trustDomain, trustDomainAliases, pathNormalization: pn as PathNormalization, customDecision: cd, output: out };
}

function policyPaths(cmd: string, v: FlagValues, positionals: string[]): string[] {
  const paths = [...((v.policies as string[] | undefined) ?? []), ...positionals];
  if (paths.length === 0) throw invalid(`castellan authz ${cmd}: --policies PATH is required (a file or directory of AuthorizationPolicy documents)`);
  return paths;
}

function printIssues(issues: readonly FileIssue[], severities: readonly string[]): void {
  for (const i of issues) if (severities.includes(i.severity)) process.stderr.write(`${i.severity}: ${formatIssue(i)}\n`);
}

function runCheck(v: FlagValues, positionals: string[]): number {
  const c = common('check', v);
  const paths = policyPaths('check', v, positionals);
  const reqPath = v.request as string | undefined;
  if (!reqPath) throw invalid('castellan authz check: --request FILE is required (a request document; - reads stdin)');
  const expect = v.expect === undefined ? undefined : String(v.expect).toUpperCase();
  if (expect !== undefined && expect !== 'ALLOW' && expect !== 'DENY') throw invalid(`castellan authz check: --expect must be allow or deny, got "${String(v.expect)}"`);
  const loaded = assertNoErrors(collectPolicies(paths));
  let text: string;
  try {
    text = readFileSync(reqPath === '-' ? 0 : reqPath, 'utf8');
  } catch (e) {
    throw invalid(`castellan authz check: cannot read request ${reqPath}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const request = parseRequestText(text, reqPath === '-' ? '<stdin>' : reqPath);
  const engine = AuthzEngine.compile(loaded.policies, { rootNamespace: c.rootNamespace, pathNormalization: c.pathNormalization, trustDomain: c.trustDomain, trustDomainAliases: c.trustDomainAliases });
  const explain = v.explain === true;
  const d = engine.evaluate(request, { explain, customDecision: c.customDecision });
  if (c.output === 'json') process.stdout.write(JSON.stringify(d, null, 2) + '\n');
  else {
    if (explain) printIssues(loaded.issues, ['warning']);
    process.stdout.write(formatDecision(d, { explain }));
  }
  if (expect !== undefined && d.decision !== expect) {
    if (c.output === 'text') process.stderr.write(`castellan authz check: expected ${expect}, got ${d.decision}\n`);
    return 1;
  }
  return 0;
}

function runTest(v: FlagValues, suites: string[]): number {
  const c = common('test', v);
  if (suites.length === 0) throw invalid('castellan authz test: give at least one suite file');
  const results: SuiteResult[] = suites.map((f) => runSuiteFile(f, c));
  const all = results.flatMap((r) => r.cases);
  const failed = all.filter((r) => !r.passed).length;
  if (c.output === 'json') {
    process.stdout.write(JSON.stringify({ passed: all.length - failed, failed, suites: results.map((r) => ({ suite: r.suite, policies: r.policies, cases: r.cases.map((x) => ({ name: x.name, passed: x.passed, expect: x.expect, message: x.message, decision: { ...x.decision, trace: v.verbose ? x.decision.trace : undefined } })) })) }, null, 2) + '\n');
  } else {
    for (const r of results) {
      if (results.length > 1) process.stdout.write(`${r.suite} (${r.policies} policies)\n`);
      for (const x of r.cases) {
        process.stdout.write(`${x.passed ? 'PASS' : 'FAIL'}  ${x.name}: ${x.message}\n`);
        if (!x.passed && v.verbose) process.stdout.write(formatDecision(x.decision, { explain: true }).replace(/^/gm, '        '));
      }
    }
    process.stdout.write(`${all.length - failed} passed, ${failed} failed\n`);
  }
  return failed > 0 ? 1 : 0;
}

function runValidate(v: FlagValues, positionals: string[]): number {
  const out = String(v.output ?? 'text');
  if (out !== 'text' && out !== 'json') throw invalid(`castellan authz validate: --output must be text or json, got "${out}"`);
  const paths = policyPaths('validate', v, positionals);
  const r = collectPolicies(paths);
  const count = (s: string): number => r.issues.filter((i) => i.severity === s).length;
  let errors = count('error');
  let duplicate: string | undefined;
  if (errors === 0) {
    try {
      assertNoErrors(r);
    } catch (e) {
      duplicate = (e as Error).message;
      errors++;
    }
  }
  if (out === 'json') {
    process.stdout.write(JSON.stringify({ files: r.files, policies: r.policies.map((p) => `${p.namespace}/${p.name}`), errors, warnings: count('warning'), issues: r.issues, ...(duplicate ? { duplicate } : {}) }, null, 2) + '\n');
  } else {
    for (const i of r.issues) process.stdout.write(`${i.severity}: ${formatIssue(i)}\n`);
    if (duplicate) process.stdout.write(`error: ${duplicate}\n`);
    process.stdout.write(`${r.files.length} file(s), ${r.policies.length} policies: ${errors} error(s), ${count('warning')} warning(s), ${count('note')} note(s)\n`);
  }
  return errors > 0 ? 2 : 0;
}

/** The namespaces `--kubernetes-namespace` names (empty: all), plus the root namespace whose policies apply mesh-wide. */
function kubeNamespaces(v: FlagValues, rootNamespace: string): string[] {
  const given = (v['kubernetes-namespace'] as string[] | undefined) ?? [];
  for (const ns of given) {
    if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(ns) || ns.length > 63) throw invalid(`castellan authz serve: --kubernetes-namespace must be a namespace name (DNS-1123 label), got "${ns}"`);
  }
  return given.length === 0 ? [] : [...new Set([...given, rootNamespace])];
}

/** Policies come from files or from the API server; the flags of the other source are errors. */
function policySource(v: FlagValues, positionals: string[]): { kind: 'files'; paths: string[] } | { kind: 'kubernetes'; kubeconfig?: string; invalid: InvalidPolicyMode } {
  if (v.kubernetes !== true) {
    for (const f of ['kubeconfig', 'kubernetes-namespace'] as const) {
      const x = v[f];
      if (x !== undefined && !(Array.isArray(x) && x.length === 0)) throw invalid(`castellan authz serve: --${f} is only used with --kubernetes`);
    }
    return { kind: 'files', paths: policyPaths('serve', v, positionals) };
  }
  if ((v.policies as string[] | undefined)?.length || positionals.length > 0) {
    throw invalid('castellan authz serve: --kubernetes reads the policies from the API server: drop --policies (one source or the other)');
  }
  const mode = String(v['kubernetes-invalid']);
  if (!(INVALID_POLICY_MODES as readonly string[]).includes(mode)) throw invalid(`castellan authz serve: --kubernetes-invalid must be one of ${INVALID_POLICY_MODES.join(', ')}, got "${mode}"`);
  const kubeconfig = v.kubeconfig === undefined ? undefined : String(v.kubeconfig);
  if (kubeconfig === '') throw invalid('castellan authz serve: --kubeconfig must not be empty');
  if (kubeconfig === undefined && !process.env.KUBECONFIG && !process.env.KUBERNETES_SERVICE_HOST) {
    throw invalid('castellan authz serve: --kubernetes: not running in a cluster ($KUBERNETES_SERVICE_HOST is unset): give --kubeconfig PATH or set $KUBECONFIG');
  }
  return { kind: 'kubernetes', ...(kubeconfig !== undefined ? { kubeconfig } : {}), invalid: mode as InvalidPolicyMode };
}

/** What serve needs of a policy source: PolicyWatcher (files) or KubePolicySource. */
interface ServedPolicies {
  readonly engine: AuthzEngine;
  reload(): boolean;
  close(): void;
}

async function runServe(v: FlagValues, positionals: string[]): Promise<number> {
  const c = common('serve', v);
  const src = policySource(v, positionals);
  const namespaces = src.kind === 'kubernetes' ? kubeNamespaces(v, c.rootNamespace) : [];
  const labels: Record<string, string> = {};
  for (const l of (v['workload-label'] as string[] | undefined) ?? []) {
    const i = l.indexOf('=');
    if (i <= 0) throw invalid(`castellan authz serve: --workload-label must be KEY=VALUE, got "${l}"`);
    labels[l.slice(0, i)] = l.slice(i + 1);
  }
  const pollMs = parseDuration(String(v['poll-interval']), '--poll-interval');
  const grpcListen = String(v['grpc-listen']);
  const httpListen = String(v['http-listen']);
  if (!/^(unix:.+|(\[[0-9a-fA-F:]+\]|[^:\s/]+):\d{1,5})$/.test(grpcListen)) throw invalid(`castellan authz serve: --grpc-listen must be HOST:PORT or unix:/path, got "${grpcListen}"`);
  if (httpListen !== 'off' && !/^(\[[0-9a-fA-F:]+\]|[^:\s/]+):\d{1,5}$/.test(httpListen)) throw invalid(`castellan authz serve: --http-listen must be HOST:PORT or "off", got "${httpListen}"`);
  // Loaded here so that check/test/validate start without grpc-js (and client-node).
  const { startExtAuthzServer } = await import('../grpc/ext-authz.ts');
  const { startOpsServer } = await import('../platform/http.ts');
  const logger = createLogger({ level: String(v['log-level']), name: 'authz' });
  const metrics = createAuthzMetrics();
  const engineOptions = { rootNamespace: c.rootNamespace, pathNormalization: c.pathNormalization, trustDomain: c.trustDomain, trustDomainAliases: c.trustDomainAliases };
  let policies: ServedPolicies;
  let ready: () => boolean = () => true;
  let synced: Promise<void> = Promise.resolve();
  if (src.kind === 'kubernetes') {
    const { KubePolicySource } = await import('../kube/policy-watch.ts');
    const { loadKubeConfig } = await import('../kube/kubeconfig.ts');
    let kubeConfig;
    try {
      kubeConfig = loadKubeConfig(src.kubeconfig);
    } catch (e) {
      throw invalid(`castellan authz serve: cannot load the kubeconfig${src.kubeconfig ? ` ${src.kubeconfig}` : ''}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    const k = new KubePolicySource({ kubeConfig, namespaces, invalid: src.invalid, engine: engineOptions, logger, metrics });
    policies = k;
    ready = () => k.ready;
    synced = k.synced;
  } else {
    policies = new PolicyWatcher({ paths: src.paths, engine: engineOptions, logger, metrics, pollMs });
  }

  // Signals from here on: a stop while waiting for the first list of policies is a clean exit.
  let signalled: string | undefined;
  let onSignal: ((signal: string) => void) | undefined;
  const signal = (s: string): void => {
    if (signalled) return;
    signalled = s;
    onSignal?.(s);
  };
  const onTerm = (): void => signal('SIGTERM');
  const onInt = (): void => signal('SIGINT');
  const hup = (): void => void policies.reload();
  process.on('SIGHUP', hup);
  process.once('SIGTERM', onTerm);
  process.once('SIGINT', onInt);

  let ops: OpsServer | undefined;
  let grpcServer;
  try {
    // /healthz answers while the first list is awaited; /readyz says 503 until policies are in force
    if (httpListen !== 'off') ops = await startOpsServer(httpListen, { registry: metrics.registry, ready, logger });
    if (src.kind === 'kubernetes') {
      logger.info({ event: 'authz.kubernetes_waiting', namespaces: namespaces.length > 0 ? namespaces : 'all' }, 'waiting for the first list of AuthorizationPolicies before serving');
      // No Check is answered before the cluster's policies are in force: Envoy's ext_authz fails closed meanwhile.
      await Promise.race([synced, new Promise<void>((r) => (onSignal = () => r()))]);
    }
    if (!signalled) {
      grpcServer = await startExtAuthzServer({
        listen: grpcListen,
        engine: () => policies.engine,
        defaults: { ...(v['workload-namespace'] ? { namespace: String(v['workload-namespace']) } : {}), labels },
        customDecision: c.customDecision,
        metrics,
        logger,
      });
    }
  } catch (e) {
    policies.close();
    process.off('SIGHUP', hup);
    process.off('SIGTERM', onTerm);
    process.off('SIGINT', onInt);
    await Promise.all([grpcServer?.close(), ops?.close()]);
    const msg = `failed to start: ${(e as Error).message}`;
    logger.fatal({ event: 'authz.start_failed' }, msg);
    logger.flush();
    process.stderr.write(`castellan authz serve: ${msg}\n`);
    return 1;
  }
  const g = grpcServer;
  if (g) logger.info({ event: 'authz.listening', grpc: g.address, http: ops?.address ?? 'off', policies: policies.engine.size, source: src.kind }, 'ext_authz serving');
  return new Promise<number>((resolve) => {
    const stop = (s: string): void => {
      logger.info({ event: 'authz.signal', signal: s }, 'shutting down');
      policies.close();
      process.off('SIGHUP', hup);
      process.off('SIGTERM', onTerm);
      process.off('SIGINT', onInt);
      Promise.all([g?.close(), ops?.close()]).then(
        () => {
          logger.flush();
          resolve(0);
        },
        (e: unknown) => {
          logger.error({ err: e }, 'shutdown failed');
          resolve(1);
        },
      );
    };
    if (signalled) stop(signalled);
    else onSignal = stop;
  });
}

export async function run(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h' || sub === 'help') {
    process.stdout.write(usage());
    return sub === undefined ? 2 : 0;
  }
  if (sub === 'playground') return (await import('./playground.ts')).run(rest);
  const spec = SUBCOMMANDS[sub];
  if (!spec) {
    process.stderr.write(`castellan authz: unknown command "${sub}"\n\n${usage()}`);
    return 2;
  }
  const cmd = `authz ${sub}`;
  try {
    const parsed = parseCommand(cmd, rest, spec.flags, { allowPositionals: true, configFlag: sub === 'serve', ...(sub === 'serve' ? {} : { env: {} }) });
    if (parsed.values.help) {
      process.stdout.write(helpText(cmd, spec.synopsis, spec.flags));
      return 0;
    }
    switch (sub) {
      case 'check':
        return runCheck(parsed.values, parsed.positionals);
      case 'test':
        return runTest(parsed.values, parsed.positionals);
      case 'validate':
        return runValidate(parsed.values, parsed.positionals);
      default:
        return await runServe(parsed.values, parsed.positionals);
    }
  } catch (e) {
    const msg = e instanceof CastellanError ? e.message : `unexpected error: ${(e as Error).stack ?? String(e)}`;
    process.stderr.write(`${msg.startsWith('castellan ') ? '' : `castellan ${cmd}: `}${msg}\n`);
    return 2;
  }
}
