/** S1: socket directory and socket modes, symlinks, foreign files, live and stale sockets. */
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, lstatSync, mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startSdsServer } from '../../src/sds/server.ts';
import { prepareSocketPath, resolveGroup } from '../../src/sds/socket.ts';
import { tempDir } from '../support/tmp.ts';
import { FakeStore } from './fake-store.ts';
import { peers, skipWithout } from '../support/peers.ts';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
function tmp(): string {
  const t = tempDir('castellan-sock-');
  cleanups.push(() => t.cleanup());
  return t.path;
}
const mode = (p: string): number => lstatSync(p).mode & 0o777;

async function refusedWith(p: Promise<unknown>, code: string): Promise<void> {
  await expect(p).rejects.toMatchObject({ code });
}

describe('SDS socket safety (S1)', () => {
  it('ok/owner only: directory 0700, socket 0600; close removes the socket', async () => {
    const dir = join(tmp(), 'run', 'sds');
    const s = await startSdsServer({ socketPath: join(dir, 'socket'), store: new FakeStore() });
    expect(mode(dir)).toBe(0o700);
    expect(lstatSync(s.socketPath).isSocket()).toBe(true);
    expect(mode(s.socketPath)).toBe(0o600);
    await s.close();
    expect(() => lstatSync(s.socketPath)).toThrow(/ENOENT/);
  });

  it('ok/with a group: directory 0750, socket 0660, group set', async () => {
    const gid = process.getgid!();
    const dir = join(tmp(), 'sds');
    const s = await startSdsServer({ socketPath: join(dir, 'socket'), store: new FakeStore(), policy: { gid } });
    cleanups.push(() => s.close());
    expect(mode(dir)).toBe(0o750);
    expect(mode(s.socketPath)).toBe(0o660);
    expect(statSync(s.socketPath).gid).toBe(gid);
  });

  it('ok/an existing directory of ours open to others is tightened', async () => {
    const dir = join(tmp(), 'wide');
    mkdirSync(dir);
    chmodSync(dir, 0o777);
    await prepareSocketPath(join(dir, 'socket'));
    expect(mode(dir)).toBe(0o700);
  });

  it('fail/symlink planted at the socket path is neither followed nor removed', async () => {
    const d = tmp();
    const target = join(d, 'precious');
    writeFileSync(target, 'keep me');
    mkdirSync(join(d, 'sds'), { mode: 0o700 });
    symlinkSync(target, join(d, 'sds', 'socket'));
    await refusedWith(startSdsServer({ socketPath: join(d, 'sds', 'socket'), store: new FakeStore() }), 'sds.socket_symlink');
    expect(readFileSync(target, 'utf8')).toBe('keep me');
    expect(lstatSync(join(d, 'sds', 'socket')).isSymbolicLink()).toBe(true);
  });

  it('fail/dangling symlink to where a socket would be created', async () => {
    const d = tmp();
    mkdirSync(join(d, 'sds'), { mode: 0o700 });
    symlinkSync(join(d, 'elsewhere.sock'), join(d, 'sds', 'socket'));
    await refusedWith(prepareSocketPath(join(d, 'sds', 'socket')), 'sds.socket_symlink');
    expect(() => lstatSync(join(d, 'elsewhere.sock'))).toThrow(/ENOENT/);
  });

  it('fail/socket directory is a symlink', async () => {
    const d = tmp();
    mkdirSync(join(d, 'real'), { mode: 0o700 });
    symlinkSync(join(d, 'real'), join(d, 'link'));
    await refusedWith(prepareSocketPath(join(d, 'link', 'socket')), 'sds.socket_dir_symlink');
  });

  it('fail/a regular file at the socket path is not removed', async () => {
    const d = tmp();
    mkdirSync(join(d, 'sds'), { mode: 0o700 });
    writeFileSync(join(d, 'sds', 'socket'), 'not a socket');
    await refusedWith(prepareSocketPath(join(d, 'sds', 'socket')), 'sds.socket_not_socket');
    expect(readFileSync(join(d, 'sds', 'socket'), 'utf8')).toBe('not a socket');
  });

  it('fail/a live socket (another agent answering) is not taken over', async () => {
    const d = tmp();
    const p = join(d, 'sds', 'socket');
    mkdirSync(join(d, 'sds'), { mode: 0o700 });
    const other = createServer(() => undefined);
    await new Promise<void>((r) => other.listen(p, r));
    cleanups.push(() => new Promise<void>((r) => other.close(() => r())));
    await refusedWith(prepareSocketPath(p), 'sds.socket_in_use');
    expect(lstatSync(p).isSocket()).toBe(true);
  });

  it.skipIf(skipWithout(peers.python))('ok/a stale socket of ours (nobody listening) is replaced', async () => {
    const d = tmp();
    const p = join(d, 'sds', 'socket');
    mkdirSync(join(d, 'sds'), { mode: 0o700 });
    // bound but never listening, then the process is gone: what a crashed agent leaves
    execFileSync('/usr/bin/python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', p]);
    expect(lstatSync(p).isSocket()).toBe(true);
    const s = await startSdsServer({ socketPath: p, store: new FakeStore() });
    cleanups.push(() => s.close());
    expect(mode(p)).toBe(0o600);
  });

  it.runIf(process.getuid?.() === 0 && !skipWithout(peers.python))('fail/a stale socket owned by another user is not removed', async () => {
    const d = tmp();
    const p = join(d, 'sds', 'socket');
    mkdirSync(join(d, 'sds'), { mode: 0o700 });
    execFileSync('/usr/bin/python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', p]);
    chownSync(p, 65534, 65534);
    await refusedWith(prepareSocketPath(p), 'sds.socket_owner');
    expect(lstatSync(p).isSocket()).toBe(true);
  });

  it('ok/group names resolve from the group file; fail/unknown group', () => {
    const d = tmp();
    writeFileSync(join(d, 'group'), 'root:x:0:\nenvoy:x:1337:istio-proxy\n');
    expect(resolveGroup('envoy', join(d, 'group'))).toBe(1337);
    expect(resolveGroup('42', join(d, 'group'))).toBe(42);
    expect(() => resolveGroup('nope', join(d, 'group'))).toThrow(/no group named "nope"/);
  });
});
