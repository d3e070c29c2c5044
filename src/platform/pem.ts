/**
 * The one PEM parser (RFC 7468's strict form) for every reader in src/:
 * CA material (src/ca), CSRs (src/pki/csr.ts), the agent's chains and
 * bundles (src/agent/cert-info.ts) and the peer certificate Envoy sends to
 * ext_authz (src/grpc/ext-authz.ts).
 *
 * A block is `-----BEGIN L-----`, a line break, base64 lines, `-----END L-----`
 * with the same label L. The base64 must be canonical: padded to a multiple
 * of 4 characters, `=` only at the end, zero unused bits, so one DER has
 * exactly one PEM body. Text outside the blocks is refused by default (a
 * file cannot smuggle extra material); `outside: 'ignore'` skips it (RFC
 * 7468 explanatory text, e.g. the comments of a CA bundle file).
 *
 * Failures are PemSyntaxError, not CastellanError: each caller turns them
 * into its own error code and message.
 */
import { CastellanError } from './errors.ts';

export interface PemBlock {
  label: string;
  der: Buffer;
}

export class PemSyntaxError extends Error {
  /** `outside`: text outside the blocks; `base64`: a block's body is not canonical base64. */
  readonly problem: 'outside' | 'base64';
  constructor(problem: 'outside' | 'base64', message: string) {
    super(message);
    this.name = 'PemSyntaxError';
    this.problem = problem;
  }
}

const BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([A-Za-z0-9+/=\r\n]+?)-----END \1-----/g;
const CANONICAL = /^[A-Za-z0-9+/]+={0,2}$/;
const B64_VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < 64; i++) B64_VALUE['ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'.charCodeAt(i)] = i;

/** A block body (base64 lines) as DER, or undefined when the base64 is not canonical. */
function decodeBody(body: string): Buffer | undefined {
  const s = body.includes('\n') || body.includes('\r') ? body.replace(/[\r\n]/g, '') : body;
  if (s.length % 4 !== 0 || !CANONICAL.test(s)) return undefined;
  const pad = s.endsWith('==') ? 2 : s.endsWith('=') ? 1 : 0;
  const unusedBits = pad === 2 ? 0x0f : pad === 1 ? 0x03 : 0;
  if ((B64_VALUE[s.charCodeAt(s.length - pad - 1)]! & unusedBits) !== 0) return undefined;
  const der = Buffer.from(s, 'base64');
  return der.length === (s.length / 4) * 3 - pad ? der : undefined;
}

/** Every PEM block of `text`, in order. Throws PemSyntaxError. */
export function parsePem(text: string, o: { outside?: 'reject' | 'ignore' } = {}): PemBlock[] {
  const strict = o.outside !== 'ignore';
  const blocks: PemBlock[] = [];
  let last = 0;
  for (const m of text.matchAll(BLOCK)) {
    if (strict && text.slice(last, m.index).trim() !== '') throw new PemSyntaxError('outside', 'unexpected text outside PEM blocks');
    const der = decodeBody(m[2]!);
    if (!der) throw new PemSyntaxError('base64', `invalid base64 in a PEM block labelled ${m[1]!}`);
    blocks.push({ label: m[1]!, der });
    last = m.index + m[0].length;
  }
  if (strict && text.slice(last).trim() !== '') throw new PemSyntaxError('outside', 'unexpected text outside PEM blocks');
  return blocks;
}

/** Every block of a PEM text (CA material: strict); errors are INVALID_ARGUMENT pem.malformed naming `what`. */
export function parsePemBlocks(text: string, what: string): PemBlock[] {
  try {
    return parsePem(text);
  } catch (e) {
    if (e instanceof PemSyntaxError) throw new CastellanError('INVALID_ARGUMENT', 'pem.malformed', `${what}: ${e.message}`);
    throw e;
  }
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
