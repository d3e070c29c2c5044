/**
 * Files that hold secrets: private directories, atomic writes and
 * permission checks. A key file is never readable by group or others, is
 * written to a temporary file in the same directory, fsynced, then renamed
 * (or linked, for create-if-absent) so a crash never leaves half a key.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs, constants } from 'node:fs';
import { dirname, join, basename } from 'node:path';
import { CastellanError, type ErrorCode } from './errors.ts';

function fileError(code: ErrorCode, msg: string, cause?: unknown): CastellanError {
  return new CastellanError('FAILED_PRECONDITION', code, msg, { cause });
}

/** Creates `dir` (mode 0700) if missing; refuses a symlink, a non-directory or a directory open to group/others. */
export async function ensurePrivateDir(dir: string): Promise<void> {
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  const st = await fs.lstat(dir);
  if (st.isSymbolicLink()) throw fileError('files.symlink', `${dir} is a symbolic link; refusing to use it for keys`);
  if (!st.isDirectory()) throw fileError('files.not_dir', `${dir} is not a directory`);
  if ((st.mode & 0o077) !== 0) {
    throw fileError('files.perms', `directory ${dir} is accessible by group or others (mode ${(st.mode & 0o777).toString(8)}); run: chmod 700 ${dir}`);
  }
}

/** Throws unless `path` (followed through symlinks) is a regular file with no group/other permissions. */
export async function assertPrivateFile(path: string): Promise<void> {
  const st = await fs.stat(path);
  if (!st.isFile()) throw fileError('files.not_file', `${path} is not a regular file`);
  if ((st.mode & 0o077) !== 0) {
    throw fileError(
      'files.perms',
      `key file ${path} is readable by group or others (mode ${(st.mode & 0o777).toString(8)}); run: chmod 600 ${path} (in Kubernetes: defaultMode 0400 on the Secret volume)`,
    );
  }
}

async function writeTemp(path: string, data: string | Uint8Array, mode: number): Promise<string> {
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await fs.open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
  try {
    await fh.writeFile(data);
    await fh.chmod(mode); // umask may have cleared bits we want (e.g. 0644)
    await fh.sync();
  } catch (e) {
    // e.g. ENOSPC half-way: leave nothing behind
    await fh.close().catch(() => undefined);
    await fs.rm(tmp, { force: true });
    throw e;
  }
  await fh.close();
  return tmp;
}

async function syncDir(dir: string): Promise<void> {
  const fh = await fs.open(dir, constants.O_RDONLY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Replaces `path` atomically with `data` at `mode`. */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode: number): Promise<void> {
  const tmp = await writeTemp(path, data, mode);
  try {
    await fs.rename(tmp, path);
  } catch (e) {
    await fs.rm(tmp, { force: true });
    throw e;
  }
  await syncDir(dirname(path));
}

/**
 * Replaces several files in one directory, each atomically, in the given
 * order, with every new file written and synced before the first rename: the
 * renames follow one another with no I/O between them, so a reader sees a mix
 * of old and new files for a few system calls, not for a disk sync.
 */
export async function writeFilesAtomic(files: readonly { path: string; data: string | Uint8Array; mode: number }[]): Promise<void> {
  const temps: string[] = [];
  try {
    for (const f of files) temps.push(await writeTemp(f.path, f.data, f.mode));
    for (let i = 0; i < files.length; i++) {
      await fs.rename(temps[i]!, files[i]!.path);
      temps[i] = '';
    }
  } finally {
    for (const t of temps) if (t) await fs.rm(t, { force: true });
  }
  for (const d of new Set(files.map((f) => dirname(f.path)))) await syncDir(d);
}

/**
 * Creates `path` with `data` only if it does not exist yet (atomic: link(2)
 * fails with EEXIST when another process won). Returns false when it existed.
 */
export async function createFileExclusive(path: string, data: string | Uint8Array, mode: number): Promise<boolean> {
  const tmp = await writeTemp(path, data, mode);
  try {
    await fs.link(tmp, path);
    await syncDir(dirname(path));
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  } finally {
    await fs.rm(tmp, { force: true });
  }
}
