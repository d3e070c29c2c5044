// The agent's CA root file watch (the istio-ca-root-cert ConfigMap mounted as a file):
// a changed file is handed on once, an unreadable or certificate-less file keeps the
// previous root, and stop() ends the polling. Driven by the fake clock.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { watchRootFile } from '../../src/agent/agent.ts';
import { FakeClock } from '../../src/platform/clock.ts';
import { silentLogger } from '../../src/platform/logger.ts';

const pem = (tag: string): string => `-----BEGIN CERTIFICATE-----\n${Buffer.from(tag).toString('base64')}\n-----END CERTIFICATE-----\n`;

describe('agent CA root file watch', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it('hands on each change once, keeps the last root on a bad file, and stops', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'castellan-root-'));
    dirs.push(dir);
    const file = join(dir, 'root-cert.pem');
    writeFileSync(file, pem('a'));
    const clock = new FakeClock();
    const seen: string[] = [];
    const stop = watchRootFile(file, pem('a'), 1000, clock, silentLogger(), async (p) => void seen.push(p));
    /** one poll: fire the timer, wait until the check has read the file and armed the next one */
    const poll = async (): Promise<void> => {
      expect(clock.pendingTimers).toBe(1);
      clock.advance(1000);
      await vi.waitFor(() => expect(clock.pendingTimers).toBe(1));
    };

    await poll();
    expect(seen).toEqual([]); // unchanged
    writeFileSync(file, pem('b'));
    await poll();
    await poll();
    expect(seen).toEqual([pem('b')]); // once
    writeFileSync(file, 'not a certificate');
    await poll();
    rmSync(file);
    await poll();
    writeFileSync(file, pem('b'));
    await poll();
    expect(seen).toEqual([pem('b')]); // bad or missing file: the previous root stays, and its return is no change
    writeFileSync(file, pem('c'));
    await poll();
    expect(seen).toEqual([pem('b'), pem('c')]);
    stop();
    expect(clock.pendingTimers).toBe(0);
  });
});
