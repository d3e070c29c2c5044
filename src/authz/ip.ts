/**
 * IP addresses and CIDR blocks for `ipBlocks`, `remoteIpBlocks`,
 * `source.ip`, `remote.ip` and `destination.ip`.
 *
 * Parsing is as strict as Go's net/netip, which Istio's validation uses:
 * dotted-quad IPv4 without leading zeros, RFC 4291 IPv6 text (with an
 * optional embedded IPv4 tail), no zone identifiers, prefix lengths in range.
 * A bare address is a /32 (IPv4) or /128 (IPv6) block. Host bits set inside a
 * prefix are ignored (`10.1.2.3/8` is `10.0.0.0/8`), as Istio does when it
 * builds Envoy's CidrRange.
 *
 * An IPv4-mapped IPv6 address in a *request* (`::ffff:10.1.2.3`) is treated
 * as the IPv4 address it carries, so an IPv4 block cannot be side-stepped by
 * a dual-stack socket reporting the mapped form.
 */

/** An address as four 32-bit words (IPv4 uses only `w[3]`). */
export interface IpAddr {
  readonly v: 4 | 6;
  readonly w: readonly [number, number, number, number];
}

export interface Cidr {
  readonly v: 4 | 6;
  /** Network words, already masked. */
  readonly w: readonly [number, number, number, number];
  readonly bits: number;
  /** The text it was parsed from, for explanations. */
  readonly text: string;
}

/** Dotted-quad IPv4 (no leading zeros, no empty parts) as a 32-bit number. */
function parseV4Words(s: string): number | undefined {
  let n = 0;
  let part = 0;
  let digits = 0;
  let parts = 0;
  for (let i = 0; i <= s.length; i++) {
    const c = i === s.length ? 0x2e : s.charCodeAt(i);
    if (c === 0x2e) {
      if (digits === 0 || parts === 4) return undefined;
      n = n * 256 + part;
      parts++;
      part = 0;
      digits = 0;
      continue;
    }
    if (c < 0x30 || c > 0x39) return undefined;
    if (digits > 0 && part === 0) return undefined; // leading zero
    part = part * 10 + (c - 0x30);
    if (part > 255) return undefined;
    digits++;
  }
  return parts === 4 ? n >>> 0 : undefined;
}

function parseV6Words(s: string): [number, number, number, number] | undefined {
  if (s.length === 0 || s.length > 45 || s.includes('%')) return undefined;
  const groups: number[] = [];
  let tail: number | undefined;
  const dbl = s.indexOf('::');
  if (dbl !== -1 && s.indexOf('::', dbl + 1) !== -1) return undefined;
  const parseSide = (side: string, allowV4Tail: boolean): number[] | undefined => {
    if (side === '') return [];
    const out: number[] = [];
    const parts = side.split(':');
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i]!;
      if (allowV4Tail && i === parts.length - 1 && p.includes('.')) {
        const v4 = parseV4Words(p);
        if (v4 === undefined) return undefined;
        tail = v4;
        continue;
      }
      if (!/^[0-9a-fA-F]{1,4}$/.test(p)) return undefined;
      out.push(parseInt(p, 16));
    }
    return out;
  };
  if (dbl === -1) {
    const all = parseSide(s, true);
    if (!all) return undefined;
    const total = all.length + (tail === undefined ? 0 : 2);
    if (total !== 8) return undefined;
    groups.push(...all);
  } else {
    const left = parseSide(s.slice(0, dbl), false);
    const right = parseSide(s.slice(dbl + 2), true);
    if (!left || !right) return undefined;
    const used = left.length + right.length + (tail === undefined ? 0 : 2);
    if (used > 7) return undefined;
    groups.push(...left, ...new Array<number>(8 - used).fill(0), ...right);
  }
  if (tail !== undefined) groups.push(tail >>> 16, tail & 0xffff);
  if (groups.length !== 8) return undefined;
  return [
    ((groups[0]! << 16) | groups[1]!) >>> 0,
    ((groups[2]! << 16) | groups[3]!) >>> 0,
    ((groups[4]! << 16) | groups[5]!) >>> 0,
    ((groups[6]! << 16) | groups[7]!) >>> 0,
  ];
}

/** Parses an address as written in a policy (strict). */
export function parseIp(s: string): IpAddr | undefined {
  if (s.includes(':')) {
    const w = parseV6Words(s);
    return w ? { v: 6, w } : undefined;
  }
  const n = parseV4Words(s);
  return n === undefined ? undefined : { v: 4, w: [0, 0, 0, n] };
}

/** Parses an address seen in a request; IPv4-mapped IPv6 becomes IPv4. */
export function parseRequestIp(s: string): IpAddr | undefined {
  const a = parseIp(s.startsWith('[') && s.endsWith(']') ? s.slice(1, -1) : s);
  if (a && a.v === 6 && a.w[0] === 0 && a.w[1] === 0 && a.w[2] === 0xffff) return { v: 4, w: [0, 0, 0, a.w[3]] };
  return a;
}

function mask(bits: number): number {
  return bits <= 0 ? 0 : bits >= 32 ? 0xffffffff : (0xffffffff << (32 - bits)) >>> 0;
}

/** Parses `addr` or `addr/len`; undefined when invalid. */
export function parseCidr(text: string): Cidr | undefined {
  const slash = text.indexOf('/');
  const addrText = slash === -1 ? text : text.slice(0, slash);
  const addr = parseIp(addrText);
  if (!addr) return undefined;
  const max = addr.v === 4 ? 32 : 128;
  let bits = max;
  if (slash !== -1) {
    const b = text.slice(slash + 1);
    if (!/^(0|[1-9]\d{0,2})$/.test(b)) return undefined;
    bits = Number(b);
    if (bits > max) return undefined;
  }
  const w: [number, number, number, number] = [0, 0, 0, 0];
  if (addr.v === 4) {
    w[3] = (addr.w[3] & mask(bits)) >>> 0;
  } else {
    for (let i = 0; i < 4; i++) w[i] = (addr.w[i]! & mask(bits - 32 * i)) >>> 0;
  }
  return { v: addr.v, w, bits, text };
}

export function cidrContains(c: Cidr, a: IpAddr): boolean {
  if (c.v !== a.v) return false;
  if (c.v === 4) return ((a.w[3] & mask(c.bits)) >>> 0) === c.w[3];
  for (let i = 0; i < 4; i++) {
    const m = mask(c.bits - 32 * i);
    if (((a.w[i]! & m) >>> 0) !== c.w[i]) return false;
  }
  return true;
}
