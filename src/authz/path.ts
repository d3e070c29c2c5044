/**
 * Request path normalisation, as Istio configures Envoy before any
 * authorization filter runs (meshConfig.pathNormalization):
 *
 * - `none`: the path is matched as received;
 * - `base` (Istio's default): Envoy's `normalize_path`, i.e. the Chromium URL
 *   path canonicaliser: `\` becomes `/`; `.` and `..` segments are resolved
 *   (RFC 3986 §5.2.4, never above the root), also when written `%2e`;
 *   percent-encoded unreserved characters (`%41` → `A`, `%7E` → `~`) are
 *   decoded; characters that must not appear raw (space, `"`, `<`, `>`, `^`,
 *   `` ` ``, `{`, `|`, `}`, controls, non-ASCII bytes) are percent-encoded;
 *   every other escape (notably `%2F` and `%5C`) is kept as written;
 * - `merge-slashes`: `base`, then runs of `/` become one;
 * - `decode-and-merge-slashes`: `%2F`/`%2f` and `%5C`/`%5c` are decoded
 *   first, then `merge-slashes`.
 *
 * Matching never sees the query (`?…`) or the fragment (`#…`). A path that
 * Envoy would refuse (a NUL byte, raw or escaped) yields `null`: Envoy answers
 * 400 before authorization, so the engine reports a denial.
 */

export const PATH_NORMALIZATIONS = ['none', 'base', 'merge-slashes', 'decode-and-merge-slashes'] as const;
export type PathNormalization = (typeof PATH_NORMALIZATIONS)[number];

export interface SplitPath {
  /** The path without query and fragment, as received. */
  readonly path: string;
  /** The query including its leading `?`, or ''. */
  readonly query: string;
}

/** Strips the fragment, then splits path and query at the first `?`. */
export function splitPath(raw: string): SplitPath {
  const hash = raw.indexOf('#');
  const noFrag = hash === -1 ? raw : raw.slice(0, hash);
  const q = noFrag.indexOf('?');
  return q === -1 ? { path: noFrag, query: '' } : { path: noFrag.slice(0, q), query: noFrag.slice(q) };
}

// Character classes of the canonicaliser (per byte).
const PASS = 0;
const UNESCAPE = 1; // kept raw; decoded when escaped
const ESCAPE = 2; // must be percent-encoded
const INVALID = 3; // refused
const CLASS = new Uint8Array(256).fill(ESCAPE);
{
  const set = (chars: string, c: number): void => {
    for (const ch of chars) CLASS[ch.charCodeAt(0)] = c;
  };
  CLASS[0] = INVALID;
  set("!$&'()*+,/:;=@[]", PASS);
  set('-_~', UNESCAPE);
  for (let c = 0x30; c <= 0x39; c++) CLASS[c] = UNESCAPE;
  for (let c = 0x41; c <= 0x5a; c++) CLASS[c] = UNESCAPE;
  for (let c = 0x61; c <= 0x7a; c++) CLASS[c] = UNESCAPE;
  // '.', '%' and '\' are handled before the table is consulted.
}

const HEX = '0123456789ABCDEF';

function hexVal(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  return -1;
}

/** The byte decoded from `%XY` at `i`, or -1. */
function escapedAt(b: Uint8Array, i: number, end: number): number {
  if (i + 3 > end || b[i] !== 0x25) return -1;
  const h = hexVal(b[i + 1]!);
  const l = hexVal(b[i + 2]!);
  return h < 0 || l < 0 ? -1 : h * 16 + l;
}

/** Length of a dot at `i`: 1 for `.`, 3 for `%2e`/`%2E`, 0 otherwise. */
function dotAt(b: Uint8Array, i: number, end: number): number {
  if (i >= end) return 0;
  if (b[i] === 0x2e) return 1;
  if (b[i] === 0x25 && i + 2 < end && b[i + 1] === 0x32 && (b[i + 2] === 0x65 || b[i + 2] === 0x45)) return 3;
  return 0;
}

const isSlash = (c: number | undefined): boolean => c === 0x2f || c === 0x5c;

/** True when the canonicaliser would return `path` unchanged (the common case, decided without allocating). */
function isCanonical(path: string): boolean {
  if (path.charCodeAt(0) !== 0x2f) return false;
  let prev = 0;
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c >= 0x80) return false;
    if (c === 0x2e) {
      if (prev === 0x2f) return false;
    } else if (c === 0x25 || c === 0x5c) return false;
    else {
      const cls = CLASS[c]!;
      if (cls !== PASS && cls !== UNESCAPE) return false;
    }
    prev = c;
  }
  return true;
}

/**
 * Envoy's `normalize_path` on a path without query. Returns null when Envoy
 * would reject the request.
 */
export function canonicalizePath(path: string): string | null {
  if (isCanonical(path)) return path;
  const b = Buffer.from(path, 'utf8');
  const end = b.length;
  const out: number[] = [];
  let ok = true;
  let lastInvalidPercent = -10;
  if (end === 0 || !isSlash(b[0])) out.push(0x2f);
  const backUp = (): void => {
    // out ends with '/'; drop the last segment, never the first slash.
    let i = out.length - 1;
    if (i === 0) return;
    i--;
    while (i > 0 && out[i] !== 0x2f) i--;
    out.length = i + 1;
  };
  for (let i = 0; i < end; i++) {
    const c = b[i]!;
    const dl = dotAt(b, i, end);
    if (dl > 0) {
      if (out.length > 0 && out[out.length - 1] === 0x2f) {
        const after = i + dl;
        if (after === end) {
          i = after - 1; // "." at the end: current directory
          continue;
        }
        if (isSlash(b[after])) {
          i = after; // "./": skip dot and slash
          continue;
        }
        const dl2 = dotAt(b, after, end);
        if (dl2 > 0) {
          const after2 = after + dl2;
          if (after2 === end) {
            backUp();
            i = after2 - 1;
            continue;
          }
          if (isSlash(b[after2])) {
            backUp();
            i = after2;
            continue;
          }
        }
      }
      out.push(0x2e);
      i += dl - 1;
      continue;
    }
    if (c === 0x5c) {
      out.push(0x2f);
      continue;
    }
    if (c === 0x25) {
      const v = escapedAt(b, i, end);
      if (v >= 0) {
        const cls = CLASS[v]!;
        if (cls === UNESCAPE) {
          out.push(v);
          if (lastInvalidPercent >= out.length - 3) fixNestedEscape(b, i + 3, end, lastInvalidPercent, out);
        } else {
          out.push(0x25, b[i + 1]!, b[i + 2]!);
          if (cls === INVALID) ok = false;
        }
        i += 2;
      } else {
        lastInvalidPercent = out.length;
        out.push(0x25);
      }
      continue;
    }
    const cls = CLASS[c]!;
    if (cls === PASS || cls === UNESCAPE) out.push(c);
    else {
      if (cls === INVALID) ok = false;
      out.push(0x25, HEX.charCodeAt(c >> 4), HEX.charCodeAt(c & 15));
    }
  }
  if (!ok) return null;
  return Buffer.from(out).toString('latin1');
}

/**
 * An invalid `%` followed by characters that were just unescaped must not
 * turn into a valid escape (`%%30%30` would otherwise read as `%00`): the
 * stray `%` is re-encoded as `%25`, as the canonicaliser does.
 */
function fixNestedEscape(b: Uint8Array, next: number, end: number, pct: number, out: number[]): void {
  const len = out.length;
  const last = out[len - 1]!;
  const appendNext = pct === len - 2;
  if (appendNext) {
    if (next >= end || b[next]! >= 0x80) return;
    out.push(b[next]!);
  }
  const h = hexVal(out[pct + 1] ?? -1);
  const l = hexVal(out[pct + 2] ?? -1);
  if (out.length >= pct + 3 && h >= 0 && l >= 0) {
    if (!appendNext) out.push(out[pct + 1]!);
    out[pct + 1] = 0x32;
    out[pct + 2] = 0x35;
    out.push(last);
  } else if (appendNext) {
    out.length = len;
  }
}

function decodeSlashes(path: string): string {
  if (!path.includes('%')) return path;
  return path.replace(/%(2f|5c)/gi, (m) => (m[2] === 'f' || m[2] === 'F' ? '/' : '\\'));
}

function mergeSlashes(path: string): string {
  return path.includes('//') ? path.replace(/\/{2,}/g, '/') : path;
}

/**
 * The path authorization matches on (no query, no fragment), or null when
 * Envoy would reject the request.
 */
export function normalizePath(rawPathNoQuery: string, mode: PathNormalization): string | null {
  switch (mode) {
    case 'none':
      return rawPathNoQuery;
    case 'base':
      return canonicalizePath(rawPathNoQuery);
    case 'merge-slashes': {
      const p = canonicalizePath(rawPathNoQuery);
      return p === null ? null : mergeSlashes(p);
    }
    case 'decode-and-merge-slashes': {
      const p = canonicalizePath(decodeSlashes(rawPathNoQuery));
      return p === null ? null : mergeSlashes(p);
    }
  }
}
