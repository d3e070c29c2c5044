/**
 * Per-role V8 settings, applied by the launcher. V8 sizes its heap when the
 * process starts (v8.setFlagsFromString cannot shrink the young generation
 * afterwards), so a command whose settings differ from Node's defaults
 * re-executes itself with them, in place, before it loads anything else:
 * process.execve replaces the process image (same PID, still one process,
 * no wrapper left running), which NODE_OPTIONS could not do without also
 * reaching every process the command might start, and which works the same
 * for `node bin/castellan.js` and the container image's `node dist/cli/main.js`.
 *
 * A flag the operator gave (on the command line or in NODE_OPTIONS) wins:
 * only the role's flags not set already are added, and nothing happens when
 * none is missing (so the re-executed process does not loop).
 */

/**
 * The agent:
 * - semi-spaces of 1 MiB instead of Node's 16 MiB. Its young generation
 *   otherwise grows to 32 MiB committed (two 16 MiB halves) for a heap whose
 *   live data is ~25 MiB; at 1 MiB the scavenges are more frequent but each
 *   is tiny;
 * - no optimising compilers (`--no-opt --no-maglev`): ~9 MiB less resident
 *   (fewer of the node binary's compiler pages touched, no optimised code),
 *   for up to ~40 % more CPU on an SDS burst (50 clients × 3 rounds: 0.2–0.3 s
 *   of agent CPU); no baseline compiler either (`--no-sparkplug`): ~1.5 MiB
 *   less, no measurable cost on that burst. The agent runs in V8's
 *   interpreter, like `--jitless` but with WebAssembly (Node's type stripper)
 *   and the regular-expression compiler kept. A sidecar serves a few streams
 *   and renews a certificate now and then: no hot loop for a compiler to
 *   pay back.
 * Measured side by side by bench/agent-footprint.ts (docs/performance.md).
 *
 * The CA server: semi-spaces of 4 MiB instead of V8's default (up to 32). Nearly all of
 * a finished call's objects survive the scavenge after it (what a node:http2
 * stream reaches stays live until the next full collection), so a scavenge's
 * pause grows with the semi-space, not with what is really live; smaller
 * semi-spaces give the same copying in shorter pauses, and a smaller young
 * generation (docs/performance.md, "The half-peak tail").
 */
export const ROLE_NODE_FLAGS: Readonly<Record<string, readonly string[]>> = {
  agent: ['--max-semi-space-size=1', '--no-opt', '--no-maglev', '--no-sparkplug'],
  server: ['--max-semi-space-size=4'],
};

/** A flag's name without value, `_` spelled `-`, and without `no-`: `--opt` and `--no-opt` set the same flag. */
const flagName = (f: string): string => f.split('=')[0]!.replace(/_/g, '-').replace(/^--no-/, '--');

/** The role's flags that neither `execArgv` nor NODE_OPTIONS sets already. */
export function missingNodeFlags(command: string, execArgv: readonly string[], nodeOptions = ''): string[] {
  const given = new Set([...execArgv, ...nodeOptions.split(/\s+/)].filter((a) => a.startsWith('--')).map(flagName));
  return (ROLE_NODE_FLAGS[command] ?? []).filter((f) => !given.has(flagName(f)));
}

/**
 * Re-executes this process with the role's missing flags (never returns
 * then); returns when there is nothing to add or the platform has no
 * process.execve (the command then runs with Node's defaults).
 */
export function relaunchForRole(command: string): void {
  const add = missingNodeFlags(command, process.execArgv, process.env.NODE_OPTIONS);
  if (add.length === 0 || typeof process.execve !== 'function') return;
  process.execve(process.execPath, [process.execPath, ...process.execArgv, ...add, ...process.argv.slice(1)], process.env);
}
