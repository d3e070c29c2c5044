/**
 * The file-based live policy set: what it loads, and when. Time is a fake
 * clock (the poll and the settle time); the files are real.
 */
import { renameSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { PolicyWatcher } from '../../src/authz/watch.ts';
import { FakeClock } from '../../src/platform/clock.ts';
import { silentLogger } from '../../src/platform/logger.ts';
import { tempDir } from '../support/tmp.ts';

const tmp = tempDir('castellan-authz-watch-');
afterAll(() => tmp.cleanup());

const P = (name: string): string => `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: ${name}, namespace: foo}\nspec: {action: DENY, rules: [{to: [{operation: {paths: ["/admin"]}}]}]}\n`;

describe('PolicyWatcher', () => {
  let w: PolicyWatcher | undefined;
  afterEach(() => w?.close());

  const start = (file: string, debounceMs: number) => {
    const reloads: { ok: boolean; policies: number }[] = [];
    const clock = new FakeClock();
    // fs.watch events are not needed here: the 10 ms poll sees every state the file passes through
    w = new PolicyWatcher({ paths: [file], engine: {}, logger: silentLogger(), pollMs: 10, debounceMs, onReload: (r) => reloads.push(r), clock });
    /** Moves the clock in 10 ms steps (one poll each) until a reload is reported or `maxMs` passed; the fake ms it took. */
    const untilReload = (maxMs = 3000): number => {
      const t0 = clock.now();
      while (reloads.length === 0 && clock.now() - t0 < maxMs) clock.advance(10);
      return clock.now() - t0;
    };
    return { reloads, clock, untilReload };
  };

  it('never loads the empty file of an in-place rewrite (it would drop every DENY rule)', () => {
    const file = join(tmp.path, 'inplace.yaml');
    writeFileSync(file, P('a') + '---\n' + P('b'));
    const { reloads, clock, untilReload } = start(file, 150);
    expect(w!.engine.size).toBe(2);
    // an editor or `cat > file` rewriting in place: truncated, then written a moment later
    truncateSync(file, 0);
    for (let i = 0; i < 6; i++) clock.advance(10); // six polls see the empty file
    expect(reloads).toEqual([]);
    writeFileSync(file, P('a') + '---\n' + P('b') + '---\n' + P('c'));
    untilReload();
    expect(reloads).toEqual([{ ok: true, policies: 3 }]);
    expect(w!.engine.size).toBe(3);
  });

  it('loads an empty file that stays empty: no policies is a valid set', () => {
    const file = join(tmp.path, 'emptied.yaml');
    writeFileSync(file, P('a'));
    const { reloads, untilReload } = start(file, 30);
    truncateSync(file, 0);
    untilReload();
    expect(reloads).toEqual([{ ok: true, policies: 0 }]);
  });

  it('an atomic replace is loaded once, after the settle time', () => {
    const file = join(tmp.path, 'atomic.yaml');
    writeFileSync(file, P('a'));
    const { reloads, clock, untilReload } = start(file, 50);
    writeFileSync(join(tmp.path, '.atomic.tmp'), P('a') + '---\n' + P('b'));
    renameSync(join(tmp.path, '.atomic.tmp'), file);
    const waited = untilReload();
    expect(reloads).toEqual([{ ok: true, policies: 2 }]);
    expect(waited).toBeGreaterThanOrEqual(50);
    clock.advance(100);
    expect(reloads).toHaveLength(1);
  });

  it('a bad edit keeps the last good set and reports the error', () => {
    const file = join(tmp.path, 'bad.yaml');
    writeFileSync(file, P('a'));
    const { reloads, untilReload } = start(file, 20);
    writeFileSync(join(tmp.path, '.bad.tmp'), P('a').replace('rules: [{to: [{operation: {paths: ["/admin"]}}]}]', 'rules: []'));
    renameSync(join(tmp.path, '.bad.tmp'), file);
    untilReload();
    expect(reloads).toEqual([expect.objectContaining({ ok: false, policies: 1 })]);
    expect(w!.lastError).toMatch(/a DENY policy without rules/);
    expect(w!.engine.size).toBe(1);
  });
});
