/**
 * Plug-in CA mode: an intermediate from the organisation's own PKI, in
 * Istio's "cacerts" layout (usually a Kubernetes Secret mounted as a
 * directory): ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem.
 */
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { CastellanError } from '../platform/errors.ts';
import { assertPrivateFile } from '../platform/files.ts';
import { buildAuthority, type SigningAuthority } from './authority.ts';
import { parseCertificatesPem } from './pem.ts';

export const CACERTS_FILES = ['ca-cert.pem', 'ca-key.pem', 'root-cert.pem', 'cert-chain.pem'] as const;

export async function loadPluginCa(dir: string, now: number): Promise<SigningAuthority> {
  const text: Record<string, string> = {};
  for (const f of CACERTS_FILES) {
    try {
      text[f] = await fs.readFile(join(dir, f), 'utf8');
    } catch (e) {
      throw new CastellanError('FAILED_PRECONDITION', 'plugin.missing', `--cacerts-dir ${dir}: cannot read ${f} (all of ${CACERTS_FILES.join(', ')} are required)`, { cause: e });
    }
  }
  await assertPrivateFile(join(dir, 'ca-key.pem'));
  const what = `--cacerts-dir ${dir}`;
  const wrap = <T>(file: string, fn: () => T): T => {
    try {
      return fn();
    } catch (e) {
      const msg = e instanceof CastellanError ? e.message : 'cannot be parsed';
      throw new CastellanError('FAILED_PRECONDITION', 'plugin.invalid', `${what}: ${file}: ${msg}`, { cause: e });
    }
  };
  const certs = wrap('ca-cert.pem', () => parseCertificatesPem(text['ca-cert.pem']!, 'ca-cert.pem'));
  if (certs.length !== 1) throw new CastellanError('FAILED_PRECONDITION', 'plugin.invalid', `${what}: ca-cert.pem must hold exactly one certificate, found ${certs.length}`);
  const roots = wrap('root-cert.pem', () => parseCertificatesPem(text['root-cert.pem']!, 'root-cert.pem'));
  const chain = wrap('cert-chain.pem', () => parseCertificatesPem(text['cert-chain.pem']!, 'cert-chain.pem'));
  return buildAuthority({ certDer: certs[0]!, keyPem: text['ca-key.pem']!, chainDers: chain, rootDers: roots, now, what });
}
