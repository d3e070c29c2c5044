/**
 * The value patterns of AuthorizationPolicy, compiled once. Every matcher
 * here runs in time linear in the input for a fixed pattern (security.md A5):
 * exact, prefix, suffix and presence are single string operations; the glob
 * and path-template matchers scan left to right without backtracking.
 *
 * Istio's forms: `abc` exact, `abc*` prefix, `*abc` suffix, `*` presence.
 * A `*` anywhere else is a literal character (except in `namespaces`, where
 * Istio turns every `*` into `.*`, see `globMatch`).
 */

export const Kind = {
  Exact: 0,
  Prefix: 1,
  Suffix: 2,
  /** `*`: the attribute exists and is not empty. */
  NonEmpty: 3,
  /** `*` on a header, host or method: the header exists, even if empty. */
  Present: 4,
} as const;
export type Kind = (typeof Kind)[keyof typeof Kind];
export type Presence = typeof Kind.NonEmpty | typeof Kind.Present;

export interface StringPattern {
  readonly kind: Kind;
  readonly lit: string;
  readonly text: string;
}

/** Longest pattern accepted in a policy (characters). */
export const MAX_PATTERN_LENGTH = 1024;
/** Most values accepted in one field of a policy. */
export const MAX_VALUES_PER_FIELD = 1024;

/**
 * Compiles `text` with Istio's wildcard forms. `presence` says what `*` means
 * for this field; `lower` lowercases (ASCII) the literal for case-insensitive
 * fields.
 */
export function compilePattern(text: string, presence: Presence = Kind.NonEmpty, lower = false): StringPattern {
  const t = lower ? asciiLower(text) : text;
  if (t === '*') return { kind: presence, lit: '', text };
  if (t.startsWith('*')) return { kind: Kind.Suffix, lit: t.slice(1), text };
  if (t.endsWith('*')) return { kind: Kind.Prefix, lit: t.slice(0, -1), text };
  return { kind: Kind.Exact, lit: t, text };
}

export function matchPattern(p: StringPattern, s: string): boolean {
  switch (p.kind) {
    case Kind.Exact:
      return s === p.lit;
    case Kind.Prefix:
      return s.startsWith(p.lit);
    case Kind.Suffix:
      return s.endsWith(p.lit);
    case Kind.NonEmpty:
      return s.length > 0;
    case Kind.Present:
      return true;
  }
}

/** A set of patterns (OR) with a hash lookup for the exact ones. */
export interface PatternSet {
  readonly exact: ReadonlySet<string>;
  readonly others: readonly StringPattern[];
  readonly all: readonly StringPattern[];
}

export function compilePatternSet(values: readonly string[], presence: Presence = Kind.NonEmpty, lower = false): PatternSet {
  const all = values.map((v) => compilePattern(v, presence, lower));
  const exact = new Set<string>();
  const others: StringPattern[] = [];
  for (const p of all) {
    if (p.kind === Kind.Exact) exact.add(p.lit);
    else others.push(p);
  }
  return { exact, others, all };
}

export function matchSet(set: PatternSet, s: string): boolean {
  if (set.exact.has(s)) return true;
  const o = set.others;
  for (let i = 0; i < o.length; i++) if (matchPattern(o[i]!, s)) return true;
  return false;
}

/** The first pattern of `set` that matches `s`, for explanations. */
export function firstMatch(set: PatternSet, s: string): StringPattern | undefined {
  for (const p of set.all) if (matchPattern(p, s)) return p;
  return undefined;
}

export function asciiLower(s: string): string {
  // Envoy's ignore_case is ASCII-only; String#toLowerCase would also fold
  // characters such as U+212A KELVIN SIGN into "k".
  return /[A-Z]/.test(s) ? s.replace(/[A-Z]+/g, (m) => m.toLowerCase()) : s;
}

/**
 * An anchored glob where `*` matches any run of characters (possibly empty)
 * and everything else is literal. Leftmost placement of each literal piece is
 * always a correct choice for `*`-only globs, so one left-to-right pass with
 * `indexOf` decides it: O(|s| · |glob|) worst case, no backtracking.
 */
export interface Glob {
  readonly pieces: readonly string[];
  readonly text: string;
}

export function compileGlob(text: string): Glob {
  return { pieces: text.split('*'), text };
}

export function globMatch(g: Glob, s: string): boolean {
  const p = g.pieces;
  if (p.length === 1) return s === p[0];
  const first = p[0]!;
  const last = p[p.length - 1]!;
  if (s.length < first.length + last.length) return false;
  if (!s.startsWith(first) || !s.endsWith(last)) return false;
  let pos = first.length;
  const limit = s.length - last.length;
  for (let i = 1; i < p.length - 1; i++) {
    const piece = p[i]!;
    if (piece === '') continue;
    const at = s.indexOf(piece, pos);
    if (at === -1 || at + piece.length > limit) return false;
    pos = at + piece.length;
  }
  return true;
}

// ---------------------------------------------------------------------------
// Path templates: `{*}` and `{**}` in `paths` (Envoy's URI template matcher).

/** RFC 3986 pchar minus `*` and `=`, the characters a `{*}` may match. */
const PCHAR = new Uint8Array(128);
for (const ch of "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%!$&'()+,;:@") PCHAR[ch.charCodeAt(0)] = 1;

function isPchar(c: number): boolean {
  return c < 128 && PCHAR[c] === 1;
}

export interface PathTemplate {
  /** Segments before `{**}`: a literal, or null for `{*}`. */
  readonly head: readonly (string | null)[];
  /** True when the template has a `{**}`. */
  readonly anyTail: boolean;
  /** Literal segments after `{**}`. */
  readonly tail: readonly string[];
  readonly text: string;
}

export function containsPathTemplate(path: string): boolean {
  return path.includes('{*}') || path.includes('{**}');
}

/**
 * Compiles a validated template. Segments are split on `/` after the leading
 * slash; an empty last segment (trailing `/`) is a literal ''.
 */
export function compilePathTemplate(text: string): PathTemplate {
  const segs = text.slice(1).split('/');
  const head: (string | null)[] = [];
  const tail: string[] = [];
  let anyTail = false;
  for (const s of segs) {
    if (s === '{**}') anyTail = true;
    else if (anyTail) tail.push(s);
    else head.push(s === '{*}' ? null : s);
  }
  return { head, anyTail, tail, text };
}

/**
 * Envoy's template regex is `/` + segments joined by `/`, where `{*}` is
 * `[pchar]+` and `{**}` is `[pchar/]*`, matched against the whole path.
 */
export function matchPathTemplate(t: PathTemplate, path: string): boolean {
  if (path.charCodeAt(0) !== 0x2f) return false;
  let pos = 1;
  const n = path.length;
  for (let i = 0; i < t.head.length; i++) {
    const seg = t.head[i];
    const lastHead = i === t.head.length - 1 && !t.anyTail;
    if (seg === null || seg === undefined) {
      const start = pos;
      while (pos < n && isPchar(path.charCodeAt(pos))) pos++;
      if (pos === start) return false;
    } else {
      if (!path.startsWith(seg, pos)) return false;
      pos += seg.length;
    }
    if (!lastHead) {
      if (path.charCodeAt(pos) !== 0x2f) return false;
      pos++;
    }
  }
  if (!t.anyTail) return pos === n;
  // `{**}` then, optionally, "/" + literal tail segments.
  const suffix = t.tail.length ? '/' + t.tail.join('/') : '';
  const midEnd = n - suffix.length;
  if (midEnd < pos || !path.endsWith(suffix)) return false;
  for (let i = pos; i < midEnd; i++) {
    const c = path.charCodeAt(i);
    if (c !== 0x2f && !isPchar(c)) return false;
  }
  return true;
}
