/**
 * `--output-dir`: the served secrets as files, for workloads that read
 * certificates from disk instead of SDS (Istio's OUTPUT_CERTS layout):
 * `cert-chain.pem` (leaf + intermediates, 0644), `key.pem` (0600) and
 * `root-cert.pem` (0644). Each file is replaced atomically; the key is
 * written before the chain so a reader never pairs a new chain with an old key
 * for longer than one rename.
 */
import { ensurePrivateDir, writeFileAtomic } from '../platform/files.ts';
import { join } from 'node:path';
import type { IssuedCertificate } from './cache.ts';

export async function writeOutputDir(dir: string, c: IssuedCertificate): Promise<void> {
  await ensurePrivateDir(dir);
  await writeFileAtomic(join(dir, 'root-cert.pem'), c.bundlePem, 0o644);
  await writeFileAtomic(join(dir, 'key.pem'), c.keyPem, 0o600);
  await writeFileAtomic(join(dir, 'cert-chain.pem'), c.chainPem, 0o644);
}

/** A trust bundle pushed between issuances (ROOTCA changed): only root-cert.pem changes. */
export async function writeOutputBundle(dir: string, bundlePem: string): Promise<void> {
  await ensurePrivateDir(dir);
  await writeFileAtomic(join(dir, 'root-cert.pem'), bundlePem, 0o644);
}
