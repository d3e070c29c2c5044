/**
 * The file Keystore (the default). Layout of `--data-dir` (0700):
 *   keyring.json   (0600) the keyring document (keyring-doc.ts)
 *   root-cert.pem  (0644) the trust bundle, for clients (agents' --ca-root-cert);
 *                  rewritten by the CA server whenever the bundle changes
 *
 * Writes are atomic (temp file, fsync, rename). Creation is create-if-absent
 * (link(2)), so several processes cold-starting on one directory end with
 * one root. Updates are compare-and-swap on a content hash under a lock
 * file, so two processes sharing a directory cannot overwrite each other's
 * change unseen. `watch` polls (every 2 s by default): fs.watch misses
 * renames on some file systems.
 */
import { createHash } from 'node:crypto';
import { promises as fs, constants } from 'node:fs';
import { join } from 'node:path';
import { CastellanError } from '../platform/errors.ts';
import { assertPrivateFile, createFileExclusive, ensurePrivateDir, writeFileAtomic } from '../platform/files.ts';
import { parseKeyringDoc, serializeKeyringDoc, type KeyringDoc } from './keyring-doc.ts';
import type { Keystore, StoredKeyring } from './keystore.ts';

export const KEYRING_FILE = 'keyring.json';
export const ROOT_CERT_FILE = 'root-cert.pem';
const LOCK_STALE_MS = 10_000;

const hash = (text: string): string => createHash('sha256').update(text).digest('hex').slice(0, 32);

/** A write that failed for a reason of the machine (disk full, read-only, quota): say which. */
function storageError(e: unknown): CastellanError {
  if (e instanceof CastellanError) return e;
  const code = (e as NodeJS.ErrnoException).code ?? 'error';
  const why: Record<string, string> = { ENOSPC: 'the disk is full (ENOSPC)', EDQUOT: 'the disk quota is exhausted (EDQUOT)', EROFS: 'the file system is read-only (EROFS)', EACCES: 'permission denied (EACCES)' };
  return new CastellanError('UNAVAILABLE', 'keystore.write_failed', `cannot write the keyring: ${why[code] ?? code}; the previous keyring is still in force`, { cause: e });
}

export interface FileKeystoreOptions {
  dataDir: string;
  /** ms between checks for changes made by another process; default 2000 */
  pollMs?: number;
}

export async function fileKeystore(o: FileKeystoreOptions): Promise<Keystore> {
  await ensurePrivateDir(o.dataDir);
  const path = join(o.dataDir, KEYRING_FILE);
  const lockPath = `${path}.lock`;
  const where = path;

  async function readText(): Promise<string | null> {
    try {
      await assertPrivateFile(path);
      return await fs.readFile(path, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
  }

  async function read(): Promise<StoredKeyring | null> {
    const text = await readText();
    return text === null ? null : { doc: parseKeyringDoc(text, where), version: hash(text) };
  }

  async function withLock<T>(fn: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      let fh: Awaited<ReturnType<typeof fs.open>> | undefined;
      try {
        fh = await fs.open(lockPath, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw storageError(e);
        const st = await fs.stat(lockPath).catch(() => undefined);
        if (st && Date.now() - st.mtimeMs > LOCK_STALE_MS) await fs.rm(lockPath, { force: true });
        else if (attempt > 200) throw new CastellanError('UNAVAILABLE', 'keystore.locked', `keyring ${where} is locked by another process (${lockPath})`);
        else await new Promise((r) => setTimeout(r, 25));
        continue;
      }
      // The lock is ours from here: whatever fails, it is removed.
      try {
        await fh.writeFile(String(process.pid));
        await fh.close();
        break;
      } catch (e) {
        await fh.close().catch(() => undefined);
        await fs.rm(lockPath, { force: true });
        throw storageError(e);
      }
    }
    try {
      return await fn();
    } finally {
      await fs.rm(lockPath, { force: true });
    }
  }

  const timers = new Set<NodeJS.Timeout>();
  return {
    where,
    read,
    async createIfAbsent(doc: KeyringDoc) {
      const text = serializeKeyringDoc(doc);
      const created = await createFileExclusive(path, text, 0o600);
      if (created) return { stored: { doc, version: hash(text) }, created };
      const stored = await read();
      if (!stored) throw new CastellanError('UNAVAILABLE', 'keystore.vanished', `keyring ${where} disappeared while being created`);
      return { stored, created: false };
    },
    async update(doc: KeyringDoc, expectedVersion: string) {
      return withLock(async () => {
        const current = await readText();
        if (current === null || hash(current) !== expectedVersion) {
          throw new CastellanError('ABORTED', 'keystore.conflict', `keyring ${where} was changed by another process; re-read and retry`);
        }
        const text = serializeKeyringDoc(doc);
        try {
          await writeFileAtomic(path, text, 0o600);
        } catch (e) {
          throw storageError(e);
        }
        return { doc, version: hash(text) };
      });
    },
    watch(onChange, onError) {
      let last: string | undefined;
      let stopped = false;
      const tick = async (): Promise<void> => {
        try {
          const text = await readText();
          if (text !== null) {
            const v = hash(text);
            if (last !== undefined && v !== last) {
              last = v;
              onChange({ doc: parseKeyringDoc(text, where), version: v });
            }
            last = v;
          }
        } catch (e) {
          onError(e);
        }
        if (!stopped) {
          const t = setTimeout(() => {
            timers.delete(t);
            void tick();
          }, o.pollMs ?? 2000);
          t.unref();
          timers.add(t);
        }
      };
      void tick();
      return () => {
        stopped = true;
        for (const t of timers) clearTimeout(t);
        timers.clear();
      };
    },
    async close() {
      for (const t of timers) clearTimeout(t);
      timers.clear();
    },
  };
}

/** Publishes the trust bundle for clients as `<data-dir>/root-cert.pem` (0644). */
export async function writeRootCertFile(dataDir: string, bundlePem: string): Promise<void> {
  await writeFileAtomic(join(dataDir, ROOT_CERT_FILE), bundlePem, 0o644);
}
