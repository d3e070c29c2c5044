/** The file-based live policy set: what it loads, and when. */
import { renameSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { PolicyWatcher } from '../../src/authz/watch.ts';
import { silentLogger } from '../../src/platform/logger.ts';
import { tempDir } from '../support/tmp.ts';

const tmp = tempDir('castellan-authz-watch-');
afterAll(() => tmp.cleanup());

const P = (name: string): string => `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: ${name}, namespace: foo}\nspec: {action: DENY, rules: [{to: [{operation: {paths: ["/admin"]}}]}]}\n`;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('PolicyWatcher', () => {
  let w: PolicyWatcher | undefined;
  afterEach(() => w?.close());

  const start = (file: string, debounceMs: number): { reloads: { ok: boolean; policies: number }[] } => {
    const reloads: { ok: boolean; policies: number }[] = [];
    // fs.watch events are not needed here: the 10 ms poll sees every state the file passes through
    w = new PolicyWatcher({ paths: [file], engine: {}, logger: silentLogger(), pollMs: 10, debounceMs, onReload: (r) => reloads.push(r) });
    return { reloads };
  };

  it('never loads the empty file of an in-place rewrite (it would drop every DENY rule)', async () => {
    const file = join(tmp.path, 'inplace.yaml');
    writeFileSync(file, P('a') + '---\n' + P('b'));
    const { reloads } = start(file, 150);
    expect(w!.engine.size).toBe(2);
    // an editor or `cat > file` rewriting in place: truncated, then written a moment later
    truncateSync(file, 0);
    await sleep(60); // six polls see the empty file
    writeFileSync(file, P('a') + '---\n' + P('b') + '---\n' + P('c'));
    const until = Date.now() + 3000;
    while (reloads.length === 0 && Date.now() < until) await sleep(10);
    expect(reloads).toEqual([{ ok: true, policies: 3 }]);
    expect(w!.engine.size).toBe(3);
  });

  it('loads an empty file that stays empty: no policies is a valid set', async () => {
    const file = join(tmp.path, 'emptied.yaml');
    writeFileSync(file, P('a'));
    const { reloads } = start(file, 30);
    truncateSync(file, 0);
    const until = Date.now() + 3000;
    while (reloads.length === 0 && Date.now() < until) await sleep(10);
    expect(reloads).toEqual([{ ok: true, policies: 0 }]);
  });

  it('an atomic replace is loaded once, after the settle time', async () => {
    const file = join(tmp.path, 'atomic.yaml');
    writeFileSync(file, P('a'));
    const { reloads } = start(file, 50);
    writeFileSync(join(tmp.path, '.atomic.tmp'), P('a') + '---\n' + P('b'));
    const t0 = performance.now();
    renameSync(join(tmp.path, '.atomic.tmp'), file);
    const until = Date.now() + 3000;
    while (reloads.length === 0 && Date.now() < until) await sleep(5);
    const waited = performance.now() - t0;
    expect(reloads).toEqual([{ ok: true, policies: 2 }]);
    expect(waited).toBeGreaterThanOrEqual(50);
    await sleep(100);
    expect(reloads).toHaveLength(1);
  });

  it('a bad edit keeps the last good set and reports the error', async () => {
    const file = join(tmp.path, 'bad.yaml');
    writeFileSync(file, P('a'));
    const { reloads } = start(file, 20);
    writeFileSync(join(tmp.path, '.bad.tmp'), P('a').replace('rules: [{to: [{operation: {paths: ["/admin"]}}]}]', 'rules: []'));
    renameSync(join(tmp.path, '.bad.tmp'), file);
    const until = Date.now() + 3000;
    while (reloads.length === 0 && Date.now() < until) await sleep(5);
    expect(reloads).toEqual([expect.objectContaining({ ok: false, policies: 1 })]);
    expect(w!.lastError).toMatch(/a DENY policy without rules/);
    expect(w!.engine.size).toBe(1);
  });
});
