/**
 * The hot path's canonical-base64url test (no re-encoding) against its
 * definition: the text is what Buffer's encoder prints for the bytes it
 * decodes to, and only the base64url alphabet.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isCanonicalBase64url } from '../../src/identity/jws.ts';

const byDefinition = (s: string): boolean => /^[A-Za-z0-9_-]*$/.test(s) && Buffer.from(s, 'base64url').toString('base64url') === s;
const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

describe('isCanonicalBase64url', () => {
  it('agrees with decode-then-encode on strings of the alphabet (every length mod 4, every last character)', () => {
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom(...alphabet), maxLength: 40 }), (s) => {
        expect(isCanonicalBase64url(s)).toBe(byDefinition(s));
      }),
      { numRuns: 20_000 },
    );
  });

  it('agrees on strings with padding, base64 (not url) characters, whitespace and non-ASCII', () => {
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom(...alphabet, '=', '+', '/', ' ', '\n', '.', 'é', '\u0000'), maxLength: 24 }), (s) => {
        expect(isCanonicalBase64url(s)).toBe(byDefinition(s));
      }),
      { numRuns: 20_000 },
    );
  });

  it('refuses trailing bits and lone characters, accepts the canonical forms', () => {
    expect(isCanonicalBase64url('')).toBe(true);
    expect(isCanonicalBase64url('QQ')).toBe(true); // "A"
    expect(isCanonicalBase64url('QR')).toBe(false); // same byte, stray low bits
    expect(isCanonicalBase64url('QUI')).toBe(true); // "AB"
    expect(isCanonicalBase64url('QUJ')).toBe(false);
    expect(isCanonicalBase64url('QUJD')).toBe(true); // "ABC"
    expect(isCanonicalBase64url('QUJDR')).toBe(false); // 5 characters: 1 mod 4
    expect(isCanonicalBase64url('QQ==')).toBe(false); // padding is not base64url
  });
});
