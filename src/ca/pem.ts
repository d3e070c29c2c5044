/**
 * PEM helpers for CA material (off the hot path). Parsing is strict: only
 * the expected block label is accepted and anything between blocks other
 * than whitespace is an error, so a file cannot smuggle extra material.
 */
import { CastellanError } from '../platform/errors.ts';

const BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([A-Za-z0-9+/=\r\n]+?)-----END \1-----/g;

export interface PemBlock {
  label: string;
  der: Buffer;
}

export function parsePemBlocks(text: string, what: string): PemBlock[] {
  const blocks: PemBlock[] = [];
  let last = 0;
  for (const m of text.matchAll(BLOCK)) {
    if (text.slice(last, m.index).trim() !== '') {
      throw new CastellanError('INVALID_ARGUMENT', 'pem.malformed', `${what}: unexpected text outside PEM blocks`);
    }
    blocks.push({ label: m[1]!, der: Buffer.from(m[2]!.replace(/\s+/g, ''), 'base64') });
    last = m.index + m[0].length;
  }
  if (text.slice(last).trim() !== '') {
    throw new CastellanError('INVALID_ARGUMENT', 'pem.malformed', `${what}: unexpected text outside PEM blocks`);
  }
  return blocks;
}

/** All CERTIFICATE blocks of a PEM text, as DER. Throws if there is none or another label appears. */
export function parseCertificatesPem(text: string, what: string): Buffer[] {
  const blocks = parsePemBlocks(text, what);
  if (blocks.length === 0) throw new CastellanError('INVALID_ARGUMENT', 'pem.empty', `${what}: no certificate found`);
  for (const b of blocks) {
    if (b.label !== 'CERTIFICATE') {
      throw new CastellanError('INVALID_ARGUMENT', 'pem.malformed', `${what}: expected CERTIFICATE blocks, found "${b.label}"`);
    }
  }
  return blocks.map((b) => b.der);
}

export function derToPem(der: Uint8Array, label = 'CERTIFICATE'): string {
  const b64 = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString('base64');
  let body = '';
  for (let i = 0; i < b64.length; i += 64) body += b64.slice(i, i + 64) + '\n';
  return `-----BEGIN ${label}-----\n${body}-----END ${label}-----\n`;
}
