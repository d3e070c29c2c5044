/**
 * A minimal, strict DER reader and writer for the hot path.
 *
 * Reading accepts only DER: definite lengths in minimal form, low tag
 * numbers, no bytes past the end of a value, nesting bounded. Every defect is
 * a CastellanError('INVALID_ARGUMENT', 'csr.malformed') naming what was wrong,
 * never a crash or a foreign exception.
 */
import { CastellanError } from '../platform/errors.ts';

export interface Tlv {
  readonly tag: number;
  /** offset of the tag byte */
  readonly start: number;
  /** offset of the first content byte */
  readonly valueStart: number;
  /** offset just past the value */
  readonly end: number;
}

export function malformed(what: string): CastellanError {
  return new CastellanError('INVALID_ARGUMENT', 'csr.malformed', `malformed CSR: ${what}`);
}

/** Reads one TLV at `pos` that must end at or before `limit`. */
export function readTlv(buf: Uint8Array, pos: number, limit: number, what: string): Tlv {
  if (pos + 2 > limit) throw malformed(`${what}: truncated`);
  const tag = buf[pos]!;
  if ((tag & 0x1f) === 0x1f) throw malformed(`${what}: high tag numbers are not allowed`);
  let len = buf[pos + 1]!;
  let p = pos + 2;
  if (len === 0x80) throw malformed(`${what}: indefinite length is not DER`);
  if (len > 0x80) {
    const n = len & 0x7f;
    if (n > 3) throw malformed(`${what}: length too large`);
    if (p + n > limit) throw malformed(`${what}: truncated length`);
    len = 0;
    for (let i = 0; i < n; i++) len = (len << 8) | buf[p + i]!;
    if (buf[p] === 0 || len < 0x80) throw malformed(`${what}: length not minimally encoded`);
    p += n;
  }
  const end = p + len;
  if (end > limit) throw malformed(`${what}: value runs past its container`);
  return { tag, start: pos, valueStart: p, end };
}

export function expectTag(t: Tlv, tag: number, what: string): Tlv {
  if (t.tag !== tag) throw malformed(`${what}: expected tag 0x${tag.toString(16)}, found 0x${t.tag.toString(16)}`);
  return t;
}

/** The TLVs directly inside a constructed value, which must fill it exactly. */
export function children(buf: Uint8Array, parent: Tlv, what: string, max = 64): Tlv[] {
  if ((parent.tag & 0x20) === 0) throw malformed(`${what}: expected a constructed value`);
  const out: Tlv[] = [];
  let p = parent.valueStart;
  while (p < parent.end) {
    if (out.length >= max) throw malformed(`${what}: too many elements`);
    const t = readTlv(buf, p, parent.end, what);
    out.push(t);
    p = t.end;
  }
  return out;
}

/** Checks that every constructed value below `t` is well-formed DER (bounded depth). */
export function validateTree(buf: Uint8Array, t: Tlv, what: string, depth = 0): void {
  if (depth > 16) throw malformed(`${what}: nested too deeply`);
  if ((t.tag & 0x20) === 0) return;
  // children()'s walk without its array: this runs over every node of every CSR
  let n = 0;
  for (let p = t.valueStart; p < t.end; ) {
    if (++n > 1024) throw malformed(`${what}: too many elements`);
    const c = readTlv(buf, p, t.end, what);
    validateTree(buf, c, what, depth + 1);
    p = c.end;
  }
}

/**
 * Decoded OIDs by a hash of their content bytes, each entry holding its bytes
 * to compare: a CSR names the same few OIDs over and over, and the lookup
 * allocates nothing. Only bytes that decoded cleanly are cached, a colliding
 * entry is replaced, and the cache is emptied when full, so hostile input
 * cannot grow it.
 */
const oidCache = new Map<number, { bytes: Uint8Array; dotted: string }>();

/** Dotted form of an OID value; arcs bounded to 2^53 and 32 arcs. */
export function oidString(buf: Uint8Array, t: Tlv, what: string): string {
  if (t.tag !== 0x06) throw malformed(`${what}: expected an OBJECT IDENTIFIER`);
  const len = t.end - t.valueStart;
  if (len === 0 || len > 64) throw malformed(`${what}: OBJECT IDENTIFIER has a bad length`);
  let key = len;
  for (let i = t.valueStart; i < t.end; i++) key = Math.imul(key ^ buf[i]!, 0x01000193); // FNV-1a
  const hit = oidCache.get(key);
  if (hit !== undefined && hit.bytes.length === len) {
    let same = true;
    for (let i = 0; i < len && same; i++) same = hit.bytes[i] === buf[t.valueStart + i];
    if (same) return hit.dotted;
  }
  const dotted = decodeOid(buf, t, what);
  if (oidCache.size >= 256) oidCache.clear();
  oidCache.set(key, { bytes: buf.slice(t.valueStart, t.end), dotted });
  return dotted;
}

function decodeOid(buf: Uint8Array, t: Tlv, what: string): string {
  const arcs: number[] = [];
  let v = 0;
  let first = true;
  for (let i = t.valueStart; i < t.end; i++) {
    const b = buf[i]!;
    if (v === 0 && b === 0x80) throw malformed(`${what}: OBJECT IDENTIFIER arc not minimally encoded`);
    v = v * 128 + (b & 0x7f);
    if (v > Number.MAX_SAFE_INTEGER / 256) throw malformed(`${what}: OBJECT IDENTIFIER arc too large`);
    if ((b & 0x80) === 0) {
      if (first) {
        const a = v < 40 ? 0 : v < 80 ? 1 : 2;
        arcs.push(a, v - a * 40);
        first = false;
      } else arcs.push(v);
      v = 0;
    }
  }
  if ((buf[t.end - 1]! & 0x80) !== 0) throw malformed(`${what}: OBJECT IDENTIFIER truncated`);
  return arcs.join('.');
}

export function bytesEqual(buf: Uint8Array, t: Tlv, expected: Uint8Array): boolean {
  if (t.end - t.start !== expected.length) return false;
  for (let i = 0; i < expected.length; i++) if (buf[t.start + i] !== expected[i]) return false;
  return true;
}

// ---- writing ----

/** Size of a DER length field for a value of `n` bytes (n < 2^24). */
export function lengthSize(n: number): number {
  return n < 0x80 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : 4;
}

/** Writes the tag and the DER length of an `n`-byte value at `pos`; returns the offset of the value. */
export function putHeader(out: Uint8Array, pos: number, tag: number, n: number): number {
  out[pos++] = tag;
  const size = lengthSize(n);
  if (size === 1) {
    out[pos++] = n;
    return pos;
  }
  out[pos++] = 0x80 | (size - 1);
  for (let shift = (size - 2) * 8; shift >= 0; shift -= 8) out[pos++] = (n >>> shift) & 0xff;
  return pos;
}

/** Encodes tag + length + the concatenation of `parts`, in one allocation. */
export function tlv(tag: number, ...parts: Uint8Array[]): Buffer {
  let len = 0;
  for (const p of parts) len += p.length;
  const out = Buffer.allocUnsafe(1 + lengthSize(len) + len);
  let pos = putHeader(out, 0, tag, len);
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

export const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
