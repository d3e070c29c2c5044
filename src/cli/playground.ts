/**
 * `castellan authz playground`: a local web page where policy authors edit
 * AuthorizationPolicies and a request side by side and see the decision and
 * its explanation as they type, run a pasted `authz test` suite, and export
 * files `authz check` / `authz test` accept unchanged.
 *
 * The page decides in the browser: its script is bundled by esbuild when the
 * command starts, from the same src/authz/ modules `authz check` imports
 * (src/web/bundle.ts). The server only hands out the page and the files given
 * on the command line; it listens on loopback unless --allow-remote.
 *
 * Exit codes: 0 after SIGINT/SIGTERM; 1 cannot listen or bundle; 2 usage.
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, relative, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { helpText, parseCommand, type FlagSpec } from '../config/flags.ts';
import { collectPolicies, formatIssue } from '../authz/loader.ts';
import { PATH_NORMALIZATIONS } from '../authz/path.ts';
import { CastellanError } from '../platform/errors.ts';
import { bundleScript, sibling } from '../web/bundle.ts';
import { parseListen, startPageServer, untilSignal } from '../web/http.ts';
import { EXAMPLE, PLAYGROUND_CSS, playgroundHtml } from '../web/playground/page.ts';

export const PLAYGROUND_FLAGS: FlagSpec[] = [
  { name: 'policies', type: 'string', multiple: true, arg: 'PATH', help: 'policy file or directory to start from (default: the suite\'s policy paths, else an example)' },
  { name: 'request', type: 'string', arg: 'FILE', help: 'request document to start from' },
  { name: 'suite', type: 'string', arg: 'FILE', help: 'an authz test suite to start from' },
  { name: 'listen', type: 'string', arg: 'HOST:PORT', default: '127.0.0.1:8180', help: 'address of the page (loopback; port 0 picks a free one)' },
  { name: 'allow-remote', type: 'boolean', default: false, help: 'allow a --listen address that is not loopback' },
  { name: 'root-namespace', type: 'string', arg: 'NS', default: 'istio-system', help: 'initial root namespace (changeable on the page)' },
  { name: 'path-normalization', type: 'string', arg: 'MODE', default: 'base', help: `initial path normalisation: ${PATH_NORMALIZATIONS.join('|')}` },
  { name: 'custom-decision', type: 'string', arg: 'allow|deny', default: 'deny', help: 'initial answer of the CUSTOM provider' },
];

function invalid(msg: string): CastellanError {
  return new CastellanError('INVALID_ARGUMENT', 'config.invalid', `castellan authz playground: ${msg}`);
}

function read(what: string, path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw invalid(`cannot read ${what} ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

/** The policy files under `paths` as one multi-document text, each headed by its file name. */
function policyText(paths: readonly string[]): string {
  const r = collectPolicies(paths);
  const unreadable = r.issues.find((i) => i.document === 0 && i.severity === 'error' && r.files.indexOf(i.file) < 0);
  if (unreadable) throw invalid(formatIssue(unreadable));
  return r.files.map((f) => `# file: ${relative(process.cwd(), f) || f}\n${read('policy file', f).replace(/\n*$/, '\n')}`).join('---\n');
}

/** Policy paths a suite names (relative to it). */
function suitePolicyPaths(file: string, text: string): string[] {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch {
    return [];
  }
  const list = typeof doc === 'object' && doc !== null ? (doc as { policies?: unknown }).policies : undefined;
  if (!Array.isArray(list)) return [];
  return list.filter((p): p is string => typeof p === 'string').map((p) => (isAbsolute(p) ? p : resolve(dirname(file), p)));
}

export async function run(argv: string[]): Promise<number> {
  const cmd = 'authz playground';
  try {
    const { values: v } = parseCommand(cmd, argv, PLAYGROUND_FLAGS, { allowPositionals: false, configFlag: false, env: {} });
    if (v.help) {
      process.stdout.write(helpText(cmd, '[--policies PATH...] [--request FILE] [--suite FILE] [--listen 127.0.0.1:PORT]', PLAYGROUND_FLAGS));
      return 0;
    }
    const pn = String(v['path-normalization']);
    if (!(PATH_NORMALIZATIONS as readonly string[]).includes(pn)) throw invalid(`--path-normalization must be one of ${PATH_NORMALIZATIONS.join(', ')}, got "${pn}"`);
    const cd = String(v['custom-decision']).toLowerCase();
    if (cd !== 'allow' && cd !== 'deny') throw invalid(`--custom-decision must be allow or deny, got "${cd}"`);
    const { host, port } = parseListen('listen', String(v.listen), v['allow-remote'] === true);
    const suiteFile = v.suite as string | undefined;
    const suite = suiteFile ? read('suite', suiteFile) : undefined;
    const given = (v.policies as string[] | undefined) ?? [];
    const paths = given.length > 0 ? given : suiteFile && suite ? suitePolicyPaths(suiteFile, suite) : [];
    const initial = {
      policies: paths.length > 0 ? policyText(paths) : EXAMPLE.policies,
      request: v.request ? read('request', String(v.request)) : EXAMPLE.request,
      suite: suite ?? (given.length === 0 && !v.request ? EXAMPLE.suite : ''),
      rootNamespace: String(v['root-namespace']),
      pathNormalization: pn,
      customDecision: cd,
    };
    const script = await bundleScript(sibling('playground/app'));
    const server = await startPageServer({
      host,
      port,
      allowAnyHost: v['allow-remote'] === true,
      routes: {
        '/': { type: 'text/html; charset=utf-8', body: playgroundHtml(PATH_NORMALIZATIONS) },
        '/playground.js': { type: 'text/javascript; charset=utf-8', body: script },
        '/playground.css': { type: 'text/css; charset=utf-8', body: PLAYGROUND_CSS },
        '/initial.json': () => Promise.resolve(initial),
      },
    });
    process.stdout.write(`castellan authz playground: ${server.url} (decisions are made in the browser; Ctrl-C stops)\n`);
    await untilSignal();
    await server.close();
    return 0;
  } catch (e) {
    if (e instanceof CastellanError && e.kind !== 'INVALID_ARGUMENT') {
      process.stderr.write(`castellan ${cmd}: ${e.message}\n`);
      return 1;
    }
    const msg = e instanceof CastellanError ? e.message : `unexpected error: ${(e as Error).stack ?? String(e)}`;
    process.stderr.write(`${msg.startsWith('castellan ') ? '' : `castellan ${cmd}: `}${msg}\n`);
    return 2;
  }
}
