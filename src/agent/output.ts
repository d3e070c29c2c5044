/**
 * `--output-dir`: the served secrets as files, for workloads that read
 * certificates from disk instead of SDS (Istio's OUTPUT_CERTS layout):
 * `cert-chain.pem` (leaf + intermediates, 0644), `key.pem` (0600) and
 * `root-cert.pem` (0644). Each file is replaced atomically, all three are
 * written and synced before the first rename, and the key is renamed just
 * before the chain: a reader can pair a new key with the old chain only
 * between two back-to-back renames (and should re-read when the pair does not
 * match, as with any set of files that changes underneath).
 */
import { ensurePrivateDir, writeFileAtomic, writeFilesAtomic } from '../platform/files.ts';
import { join } from 'node:path';
import type { IssuedCertificate } from './cache.ts';

export async function writeOutputDir(dir: string, c: IssuedCertificate): Promise<void> {
  await ensurePrivateDir(dir);
  await writeFilesAtomic([
    { path: join(dir, 'root-cert.pem'), data: c.bundlePem, mode: 0o644 },
    { path: join(dir, 'key.pem'), data: c.keyPem, mode: 0o600 },
    { path: join(dir, 'cert-chain.pem'), data: c.chainPem, mode: 0o644 },
  ]);
}

/** A trust bundle pushed between issuances (ROOTCA changed): only root-cert.pem changes. */
export async function writeOutputBundle(dir: string, bundlePem: string): Promise<void> {
  await ensurePrivateDir(dir);
  await writeFileAtomic(join(dir, 'root-cert.pem'), bundlePem, 0o644);
}
