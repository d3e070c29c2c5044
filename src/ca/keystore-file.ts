/**
 * File keystore for self-signed mode. Layout of `--data-dir` (0700):
 *   keyring.json   (0600) the authorities with their keys and states
 *   root-cert.pem  (0644) the trust bundle, for clients (agents' --ca-root-cert)
 * The first start creates a root; every later start loads it back. Several
 * processes starting at once end with exactly one root: creation is
 * create-if-absent (link(2)), and losers load the winner's keyring.
 */
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { CastellanError } from '../platform/errors.ts';
import { assertPrivateFile, createFileExclusive, ensurePrivateDir, writeFileAtomic } from '../platform/files.ts';
import type { Logger } from '../platform/logger.ts';
import { buildAuthority, createSelfSignedRoot, type SigningAuthority } from './authority.ts';
import { CA_KEY_TYPES, type CaKeyType } from './keys.ts';
import { parseCertificatesPem } from './pem.ts';

const AuthorityRecord = z.strictObject({
  id: z.string(),
  state: z.enum(['prepared', 'active', 'tainted', 'retired']),
  keyType: z.enum(CA_KEY_TYPES),
  certPem: z.string(),
  keyPem: z.string(),
  createdAt: z.string(),
});

const Keyring = z.strictObject({
  version: z.literal(1),
  trustDomain: z.string(),
  authorities: z.array(AuthorityRecord).min(1),
});
export type KeyringDoc = z.infer<typeof Keyring>;

export interface SelfSignedOptions {
  dataDir: string;
  trustDomain: string;
  keyType: CaKeyType;
  /** ms */
  rootTtlMs: number;
  now: number;
  logger: Logger;
}

export const KEYRING_FILE = 'keyring.json';
export const ROOT_CERT_FILE = 'root-cert.pem';

function corrupt(path: string, why: string, cause?: unknown): CastellanError {
  return new CastellanError('FAILED_PRECONDITION', 'keystore.corrupt', `keyring ${path} is unusable: ${why}`, { cause });
}

export async function readKeyring(path: string): Promise<KeyringDoc> {
  await assertPrivateFile(path);
  let raw: unknown;
  try {
    raw = JSON.parse(await fs.readFile(path, 'utf8'));
  } catch (e) {
    throw corrupt(path, 'not valid JSON', e);
  }
  const parsed = Keyring.safeParse(raw);
  if (!parsed.success) throw corrupt(path, parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '));
  return parsed.data;
}

/** Loads (or on first start creates) the self-signed root and returns the active signing authority. */
export async function loadOrCreateSelfSigned(o: SelfSignedOptions): Promise<SigningAuthority> {
  await ensurePrivateDir(o.dataDir);
  const path = join(o.dataDir, KEYRING_FILE);
  let doc: KeyringDoc;
  try {
    doc = await readKeyring(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    const root = await createSelfSignedRoot({ trustDomain: o.trustDomain, keyType: o.keyType, ttlMs: o.rootTtlMs, now: o.now });
    const probe = buildAuthority({
      certDer: parseCertificatesPem(root.certPem, 'new root')[0]!,
      keyPem: root.keyPem,
      chainDers: [],
      rootDers: parseCertificatesPem(root.certPem, 'new root'),
      now: o.now,
      what: 'new root',
    });
    const fresh: KeyringDoc = {
      version: 1,
      trustDomain: o.trustDomain,
      authorities: [{ id: probe.id, state: 'active', keyType: o.keyType, certPem: root.certPem, keyPem: root.keyPem, createdAt: new Date(o.now).toISOString() }],
    };
    if (await createFileExclusive(path, JSON.stringify(fresh, null, 2) + '\n', 0o600)) {
      o.logger.info({ event: 'ca.root_created', id: probe.id, keyType: o.keyType, notAfter: new Date(probe.notAfter).toISOString() }, 'created self-signed root');
      doc = fresh;
    } else {
      o.logger.info({ event: 'ca.root_race_lost' }, 'another process created the root first; loading it');
      doc = await readKeyring(path);
    }
  }
  if (doc.trustDomain !== o.trustDomain) {
    throw new CastellanError(
      'FAILED_PRECONDITION',
      'keystore.trust_domain',
      `keyring ${path} belongs to trust domain "${doc.trustDomain}", not "${o.trustDomain}": pass --trust-domain ${doc.trustDomain} or use another --data-dir`,
    );
  }
  const active = doc.authorities.filter((a) => a.state === 'active');
  if (active.length !== 1) throw corrupt(path, `expected exactly one active authority, found ${active.length}`);
  const trusted = doc.authorities.filter((a) => a.state !== 'retired');
  const rootDers = trusted.flatMap((a) => parseCertificatesPem(a.certPem, `authority ${a.id}`));
  const a = active[0]!;
  let authority: SigningAuthority;
  try {
    authority = buildAuthority({
      certDer: parseCertificatesPem(a.certPem, `authority ${a.id}`)[0]!,
      keyPem: a.keyPem,
      chainDers: [],
      rootDers,
      now: o.now,
      what: `keyring ${path}`,
    });
  } catch (e) {
    if (e instanceof CastellanError) throw e;
    throw corrupt(path, 'certificate or key cannot be parsed', e);
  }
  await writeFileAtomic(join(o.dataDir, ROOT_CERT_FILE), authority.trustBundlePem, 0o644);
  return authority;
}
