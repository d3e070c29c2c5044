/** The strict DER reader (src/pki/der.ts): each defect is a csr.malformed CastellanError, never a crash. */
import { describe, expect, it } from 'vitest';
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
});
