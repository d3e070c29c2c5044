/**
 * Plug-in CA mode: an intermediate from the organisation's own PKI, in
 * Istio's "cacerts" layout (usually a Kubernetes Secret mounted as a
 * directory): ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem.
 */
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { CastellanError } from '../platform/errors.ts';
import { assertPrivateFile } from '../platform/files.ts';
import { buildAuthority, certInfo, type SigningAuthority } from './authority.ts';
import { emptyLeaves, type AuthorityRecord } from './keyring-doc.ts';
import { derToPem, parseCertificatesPem } from '../platform/pem.ts';

export const CACERTS_FILES = ['ca-cert.pem', 'ca-key.pem', 'root-cert.pem', 'cert-chain.pem'] as const;

export type CacertsTexts = Record<(typeof CACERTS_FILES)[number], string>;

async function readCacerts(dir: string): Promise<CacertsTexts> {
  const text: Partial<CacertsTexts> = {};
  for (const f of CACERTS_FILES) {
    try {
      text[f] = await fs.readFile(join(dir, f), 'utf8');
    } catch (e) {
      throw new CastellanError('FAILED_PRECONDITION', 'plugin.missing', `--cacerts-dir ${dir}: cannot read ${f} (all of ${CACERTS_FILES.join(', ')} are required)`, { cause: e });
    }
  }
  await assertPrivateFile(join(dir, 'ca-key.pem'));
  return text as CacertsTexts;
}

/** Checks a cacerts set (signing cert is a CA, matches its key, chains to a root of the bundle) and builds the authority. */
export function pluginFromTexts(text: CacertsTexts, what: string, now: number): { authority: SigningAuthority; chainDers: Buffer[] } {
  const wrap = <T>(file: string, fn: () => T): T => {
    try {
      return fn();
    } catch (e) {
      const msg = e instanceof CastellanError ? e.message : 'cannot be parsed';
      throw new CastellanError('FAILED_PRECONDITION', 'plugin.invalid', `${what}: ${file}: ${msg}`, { cause: e });
    }
  };
  const certs = wrap('ca-cert.pem', () => parseCertificatesPem(text['ca-cert.pem'], 'ca-cert.pem'));
  if (certs.length !== 1) throw new CastellanError('FAILED_PRECONDITION', 'plugin.invalid', `${what}: ca-cert.pem must hold exactly one certificate, found ${certs.length}`);
  const roots = wrap('root-cert.pem', () => parseCertificatesPem(text['root-cert.pem'], 'root-cert.pem'));
  const chain = wrap('cert-chain.pem', () => parseCertificatesPem(text['cert-chain.pem'], 'cert-chain.pem'));
  return { authority: buildAuthority({ certDer: certs[0]!, keyPem: text['ca-key.pem'], chainDers: chain, rootDers: roots, now, what }), chainDers: chain };
}

export async function loadPluginCa(dir: string, now: number): Promise<SigningAuthority> {
  return pluginFromTexts(await readCacerts(dir), `--cacerts-dir ${dir}`, now).authority;
}

/**
 * A cacerts set as a keyring record (state as given; the caller decides
 * prepared or active), after the same checks as loadPluginCa.
 */
export function pluginRecordFromTexts(text: CacertsTexts, what: string, now: number, state: 'prepared' | 'active'): { record: AuthorityRecord; authority: SigningAuthority } {
  const { authority, chainDers } = pluginFromTexts(text, what, now);
  const between = chainDers.filter((d) => !d.equals(authority.certDer) && !certInfo(d).selfSigned);
  const t = new Date(now).toISOString();
  const record: AuthorityRecord = {
    id: authority.id,
    state,
    source: 'plugin',
    keyType: authority.keyType,
    certPem: authority.certPem,
    keyPem: derToPem(authority.keyPkcs8Der, 'PRIVATE KEY'),
    chainPem: between.map((d) => derToPem(d)).join(''),
    rootsPem: authority.trustBundlePem,
    createdAt: t,
    ...(state === 'prepared' ? { preparedAt: t } : { activatedAt: t }),
    leaves: emptyLeaves(),
  };
  return { record, authority };
}

/** pluginRecordFromTexts for a cacerts directory. */
export async function pluginRecord(dir: string, now: number, state: 'prepared' | 'active'): Promise<{ record: AuthorityRecord; authority: SigningAuthority }> {
  return pluginRecordFromTexts(await readCacerts(dir), `--cacerts-dir ${dir}`, now, state);
}
