/**
 * Per-role V8 flags applied by the launcher (src/cli/launch.ts, issue 21):
 * which flags are added, that the operator's own win, and that the agent
 * really runs with them as one process under its original PID.
 */
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { missingNodeFlags, ROLE_NODE_FLAGS } from '../../src/cli/launch.ts';
import { tempDir } from '../support/tmp.ts';

const ROOT = new URL('../..', import.meta.url).pathname;
const NODE = join(ROOT, 'node_modules/.bin/node');

describe('per-role node flags', () => {
  it('the agent gets small semi-spaces and the interpreter only, the server small semi-spaces; the other commands keep Node\'s defaults', () => {
    expect(missingNodeFlags('agent', [])).toEqual(['--max-semi-space-size=1', '--no-opt', '--no-maglev', '--no-sparkplug']);
    expect(missingNodeFlags('server', [])).toEqual(['--max-semi-space-size=4']);
    expect(missingNodeFlags('server', [], '--max-semi-space-size=16')).toEqual([]);
    for (const cmd of ['dev', 'authz', 'ca', 'nope']) expect(missingNodeFlags(cmd, [])).toEqual([]);
  });

  it('a flag the operator set, on the command line or in NODE_OPTIONS, in either spelling, is not overridden', () => {
    expect(missingNodeFlags('agent', ['--max-semi-space-size=8'])).toEqual(['--no-opt', '--no-maglev', '--no-sparkplug']);
    expect(missingNodeFlags('agent', ['--max_semi_space_size=8'])).toEqual(['--no-opt', '--no-maglev', '--no-sparkplug']);
    expect(missingNodeFlags('agent', [], '--trace-gc --max-semi-space-size=4')).toEqual(['--no-opt', '--no-maglev', '--no-sparkplug']);
    // --opt and --maglev turn the compilers back on: the operator's spelling of the same flag wins.
    expect(missingNodeFlags('agent', ['--opt', '--max-semi-space-size=8', '--sparkplug'], '--maglev')).toEqual([]);
    expect(missingNodeFlags('agent', ['--no-opt'])).toEqual(['--max-semi-space-size=1', '--no-maglev', '--no-sparkplug']);
    expect(missingNodeFlags('agent', ['--trace-gc'], '--max-old-space-size=64')).toEqual(ROLE_NODE_FLAGS.agent);
  });

  it('`castellan agent` re-executes itself in place: same PID, the flag on its command line, its stdio kept', async () => {
    const tmp = tempDir('castellan-launch-');
    try {
      // A root file that is not PEM: the agent stops at its configuration, after the relaunch.
      const root = join(tmp.path, 'root.pem');
      writeFileSync(root, 'not a certificate\n');
      const p = spawn(NODE, [join(ROOT, 'bin/castellan.js'), 'agent', '--ca-root-cert', root, '--token-file', join(tmp.path, 'token'),
        '--sds-socket', join(tmp.path, 'sds', 'socket'), '--http-listen', 'off', '--log-level', 'silent'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let cmdline = '';
      let stderr = '';
      p.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
      // Read the command line while the process lives (it exits once the root file is rejected).
      const poll = setInterval(() => {
        try {
          const c = readFileSync(`/proc/${p.pid}/cmdline`, 'utf8');
          if (c.includes('semi')) cmdline = c;
        } catch {
          // exited
        }
      }, 1);
      const code = await new Promise<number | null>((resolve) => p.once('exit', resolve));
      clearInterval(poll);
      expect(stderr).toMatch(/cannot read the CA root certificate/);
      expect(code).toBe(1);
      expect(cmdline.split('\0')).toEqual(expect.arrayContaining(['--max-semi-space-size=1', '--no-opt', '--no-maglev', '--no-sparkplug']));
    } finally {
      tmp.cleanup();
    }
  });
});
