/** security.md P1: a million serials, unique, positive, <= 20 octets (and exactly 16 as DER INTEGER contents). */
import { describe, expect, it } from 'vitest';
import { randomSerial } from '../../src/pki/leaf.ts';

describe('randomSerial (P1)', () => {
  it('ok/one-million-unique-positive', () => {
    const N = 1_000_000;
    // Key on the first 8 bytes (62 random bits) in a Set of bigints would be slow; a hex string Set is fine.
    const seen = new Set<string>();
    let bad = 0;
    for (let i = 0; i < N; i++) {
      const s = randomSerial();
      // positive and minimal: 16 bytes, top bit clear, first octet non-zero (no pad, no shrink)
      if (s.length !== 16 || s[0]! >= 0x80 || s[0]! < 0x40) bad++;
      seen.add(s.toString('latin1'));
    }
    expect(bad).toBe(0);
    expect(seen.size).toBe(N);
  }, 60_000);

  it('ok/serials-are-independent-copies', () => {
    const a = randomSerial();
    const keep = Buffer.from(a);
    for (let i = 0; i < 300; i++) randomSerial();
    expect(a.equals(keep)).toBe(true);
  });

  it('ok/bits-look-random (each of the 126 free bits set about half the time)', () => {
    const N = 20_000;
    const ones = new Array<number>(128).fill(0);
    for (let i = 0; i < N; i++) {
      const s = randomSerial();
      for (let bit = 0; bit < 128; bit++) if (s[bit >> 3]! & (0x80 >> (bit & 7))) ones[bit]!++;
    }
    expect(ones[0]).toBe(0);
    expect(ones[1]).toBe(N);
    for (let bit = 2; bit < 128; bit++) expect(Math.abs(ones[bit]! / N - 0.5)).toBeLessThan(0.03);
  });
});
