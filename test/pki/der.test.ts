/** The strict DER reader (src/pki/der.ts): each defect is a csr.malformed CastellanError, never a crash. */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { children, oidString, readTlv, validateTree } from '../../src/pki/der.ts';
import { h, oid } from './helpers.ts';

function readAll(buf: Buffer): void {
  const top = readTlv(buf, 0, buf.length, 'test');
  if (top.end !== buf.length) throw new Error('not consumed');
  validateTree(buf, top, 'test');
}

describe('readTlv / children / validateTree', () => {
  const ok: [string, string][] = [
    ['ok/short-form', '0403010203'],
    ['ok/long-form-81', `0481${'80'}${'00'.repeat(128)}`],
    ['ok/long-form-82', `0482${'0100'}${'00'.repeat(256)}`],
    ['ok/nested', '300630040402aabb'],
    ['ok/empty-sequence', '3000'],
  ];
  for (const [name, hex] of ok) it(name, () => expect(() => readAll(h(hex))).not.toThrow());

  const fail: [string, string, RegExp][] = [
    ['fail/empty', '', /truncated/],
    ['fail/truncated-header', '30', /truncated/],
    ['fail/value-past-end', '300501', /runs past/],
    ['fail/indefinite-length', '30800000', /indefinite/],
    ['fail/non-minimal-long-form', '30810100', /minimally/],
    ['fail/leading-zero-length', '3082000100', /minimally/],
    ['fail/length-too-large', '3084000000010000', /too large/],
    ['fail/high-tag-number', '1f2001 00', /high tag/],
    ['fail/child-past-parent', '30040404aabb', /runs past/],
  ];
  for (const [name, hex, re] of fail) {
    it(name, () => {
      let err: unknown;
      try {
        readAll(h(hex));
      } catch (e) {
        err = e;
      }
      expect(err).toMatchObject({ kind: 'INVALID_ARGUMENT', code: 'csr.malformed' });
      expect((err as Error).message).toMatch(re);
    });
  }

  it('fail/nesting-deeper-than-16', () => {
    let v = h('0500');
    for (let i = 0; i < 20; i++) v = Buffer.concat([Buffer.of(0x30, v.length), v]);
    expect(() => readAll(v)).toThrow(/nested too deeply/);
  });
  it('fail/too-many-elements', () => {
    const body = Buffer.concat(Array.from({ length: 65 }, () => h('0500')));
    const v = Buffer.concat([h('3081'), Buffer.of(body.length), body]);
    expect(() => children(v, readTlv(v, 0, v.length, 't'), 't')).toThrow(/too many elements/);
  });
});

describe('oidString', () => {
  const read = (b: Buffer) => oidString(b, readTlv(b, 0, b.length, 'oid'), 'oid');
  it('ok/common-oids', () => {
    for (const o of ['1.2.840.10045.3.1.7', '2.5.29.17', '1.3.132.0.34', '2.999.3', '0.9.2342']) expect(read(oid(o))).toBe(o);
  });
  it('ok/largest-allowed-arc', () => expect(read(oid(`1.2.${2 ** 40}`))).toBe(`1.2.${2 ** 40}`));
  const fail: [string, Buffer, RegExp][] = [
    ['fail/huge-arc', oid('1.2.18446744073709551616'), /too large/],
    ['fail/empty', h('0600'), /bad length/],
    ['fail/non-minimal-arc', h('06032a8001'), /minimally/],
    ['fail/truncated-arc', h('06022a86'), /truncated/],
    ['fail/too-long', Buffer.concat([h('0641'), Buffer.alloc(65, 1)]), /bad length/],
    ['fail/not-an-oid', h('0401aa'), /OBJECT IDENTIFIER/],
  ];
  for (const [name, b, re] of fail) it(name, () => expect(() => read(b)).toThrow(re));
  // The decode cache (hashed bytes, compared on a hit, emptied at 256 entries) must answer
  // exactly what a fresh decode does, also for OIDs that differ in one byte and at any offset.
  it('ok/cached-answers-equal-fresh-decodes', () => {
    const arcs = fc.tuple(fc.integer({ min: 0, max: 2 }), fc.integer({ min: 0, max: 39 }), fc.array(fc.integer({ min: 0, max: 2 ** 32 }), { maxLength: 8 }));
    fc.assert(
      fc.property(fc.array(arcs, { minLength: 1, maxLength: 40 }), fc.integer({ min: 0, max: 7 }), (list, pad) => {
        for (const [a, b, rest] of [...list, ...list]) {
          const o = [a, b, ...rest].join('.');
          const der = Buffer.concat([Buffer.alloc(pad), oid(o)]);
          expect(oidString(der, readTlv(der, pad, der.length, 'oid'), 'oid')).toBe(o);
        }
      }),
      { seed: Number(process.env.FC_SEED ?? 7), numRuns: 200 },
    );
  });
  // White box: two OIDs of the same length whose bytes hash alike (FNV-1a as in der.ts, found
  // by a birthday search) must each still get their own answer.
  it('ok/hash-collision-answers-each-its-own', () => {
    const fnv = (b: Buffer): number => {
      let k = b.length - 2;
      for (let i = 2; i < b.length; i++) k = Math.imul(k ^ b[i]!, 0x01000193);
      return k;
    };
    const arc3 = (v: number): number[] => [0x80 | (v >> 14), 0x80 | ((v >> 7) & 0x7f), v & 0x7f];
    const seen = new Map<number, string>();
    let pair: [string, string] | undefined;
    let x = 12345;
    for (let n = 0; n < 2_000_000 && !pair; n++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0; // seeded LCG: the same search every run
      const [a1, a2] = [2 ** 14 + (x % 2 ** 20), 2 ** 14 + ((x >>> 11) % 2 ** 20)];
      const o = `1.2.${a1}.${a2}`;
      const k = fnv(Buffer.from([0x06, 7, 0x2a, ...arc3(a1), ...arc3(a2)]));
      const other = seen.get(k);
      if (other && other !== o) pair = [other, o];
      else seen.set(k, o);
    }
    expect(pair).toBeDefined();
    const [a, b] = pair!;
    expect(fnv(oid(a))).toBe(fnv(oid(b)));
    for (const o of [a, b, a, b]) expect(read(oid(o))).toBe(o);
  });
});
