/**
 * Preparing the SDS Unix socket path safely (security.md S1). The socket's
 * file permissions are the only access control of SDS, so:
 * - the directory is created 0700 (0750 when a group is given) and must be
 *   a real directory owned by us; a wider directory of ours is tightened,
 *   someone else's is refused;
 * - whatever is at the socket path is inspected with lstat, never followed:
 *   a symlink, a regular file, or anything not a socket is refused;
 * - an existing socket is removed only if it is ours and stale: owned by our
 *   uid and nobody answers a connect on it (ECONNREFUSED). A socket that
 *   answers means another agent is running: refused;
 * - after bind, the socket is set 0600 (0660 with a group) and its group
 *   changed. Between bind and chmod the directory's mode keeps others out.
 * bind(2) itself never follows a symlink (it fails with EADDRINUSE), so a
 * symlink planted after our checks cannot redirect the socket.
 */
import { promises as fs, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname, resolve } from 'node:path';
import { CastellanError, type ErrorCode } from '../platform/errors.ts';

export interface SocketPolicy {
  /** Group allowed to connect (Envoy's), as a gid. Undefined: owner only. */
  gid?: number;
}

function refuse(code: ErrorCode, msg: string, cause?: unknown): CastellanError {
  return new CastellanError('FAILED_PRECONDITION', code, msg, { cause });
}

export function dirMode(p: SocketPolicy): number {
  return p.gid === undefined ? 0o700 : 0o750;
}
export function socketMode(p: SocketPolicy): number {
  return p.gid === undefined ? 0o600 : 0o660;
}

/** Resolves `--sds-socket-group` (a name from /etc/group or a numeric gid). */
export function resolveGroup(group: string, groupFile = '/etc/group'): number {
  if (/^\d+$/.test(group)) return Number(group);
  let text = '';
  try {
    text = readFileSync(groupFile, 'utf8');
  } catch (e) {
    throw new CastellanError('INVALID_ARGUMENT', 'config.invalid', `--sds-socket-group: cannot read ${groupFile} to resolve "${group}"; pass a numeric gid`, { cause: e });
  }
  for (const line of text.split('\n')) {
    const [name, , gid] = line.split(':');
    if (name === group && gid && /^\d+$/.test(gid)) return Number(gid);
  }
  throw new CastellanError('INVALID_ARGUMENT', 'config.invalid', `--sds-socket-group: no group named "${group}"`);
}

/** True if something accepts a connection on the Unix socket at `path` within `timeoutMs`. */
export function socketAnswers(path: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((res) => {
    const s = connect({ path });
    const done = (v: boolean): void => {
      clearTimeout(t);
      s.destroy();
      res(v);
    };
    const t = setTimeout(() => done(true), timeoutMs); // a listener that never completes the handshake still owns it
    s.once('connect', () => done(true));
    s.once('error', (e: NodeJS.ErrnoException) => done(e.code !== 'ECONNREFUSED' && e.code !== 'ENOENT'));
  });
}

/**
 * Makes `socketPath` ready for bind: safe directory, nothing (or only our
 * own stale socket, removed) at the path. Returns the absolute path.
 */
export async function prepareSocketPath(socketPath: string, policy: SocketPolicy = {}): Promise<string> {
  const path = resolve(socketPath);
  const dir = dirname(path);
  const uid = process.getuid?.() ?? -1;
  await fs.mkdir(dir, { recursive: true, mode: dirMode(policy) });
  const dst = await fs.lstat(dir);
  if (dst.isSymbolicLink()) throw refuse('sds.socket_dir_symlink', `socket directory ${dir} is a symbolic link; refusing to use it`);
  if (!dst.isDirectory()) throw refuse('sds.socket_dir', `${dir} is not a directory`);
  if (dst.uid !== uid) throw refuse('sds.socket_dir_owner', `socket directory ${dir} is owned by uid ${dst.uid}, not by this agent (uid ${uid})`);
  if ((dst.mode & 0o777 & ~dirMode(policy)) !== 0) await fs.chmod(dir, dirMode(policy));
  if (policy.gid !== undefined) await fs.chown(dir, -1, policy.gid);

  let st;
  try {
    st = await fs.lstat(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return path;
    throw e;
  }
  if (st.isSymbolicLink()) throw refuse('sds.socket_symlink', `${path} is a symbolic link; refusing to follow or remove it`);
  if (!st.isSocket()) throw refuse('sds.socket_not_socket', `${path} exists and is not a socket; refusing to remove it`);
  if (st.uid !== uid) throw refuse('sds.socket_owner', `${path} is a socket owned by uid ${st.uid}, not by this agent; refusing to remove it`);
  if (await socketAnswers(path)) throw refuse('sds.socket_in_use', `${path} is in use: another agent answers on it`);
  // Ours and stale (nobody listening): re-check it is still the same inode, then remove.
  const again = await fs.lstat(path);
  if (again.ino !== st.ino || !again.isSocket()) throw refuse('sds.socket_changed', `${path} changed while being checked; refusing to remove it`);
  await fs.unlink(path);
  return path;
}

/** After bind: tighten the socket's mode and group; refuses if the path is no longer a socket. */
export async function secureBoundSocket(path: string, policy: SocketPolicy = {}): Promise<void> {
  const st = await fs.lstat(path);
  if (!st.isSocket()) throw refuse('sds.socket_changed', `${path} is not the socket just bound`);
  if (policy.gid !== undefined) await fs.chown(path, -1, policy.gid);
  await fs.chmod(path, socketMode(policy));
}
