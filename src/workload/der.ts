/** DER certificate lists as the Workload API carries them: concatenated, no framing. */

/** Splits concatenated DER certificates (each a SEQUENCE with a definite length). */
export function splitDer(blob: Uint8Array): Buffer[] {
  const out: Buffer[] = [];
  const b = Buffer.from(blob);
  let i = 0;
  while (i < b.length) {
    if (b[i] !== 0x30 || i + 2 > b.length) throw new Error('not a sequence of DER certificates');
    const first = b[i + 1]!;
    let len = first;
    let hdr = 2;
    if (first & 0x80) {
      const n = first & 0x7f;
      if (n === 0 || n > 4 || i + 2 + n > b.length) throw new Error('bad DER length');
      len = b.readUIntBE(i + 2, n);
      hdr = 2 + n;
    }
    if (i + hdr + len > b.length) throw new Error('truncated DER certificate');
    out.push(b.subarray(i, i + hdr + len));
    i += hdr + len;
  }
  return out;
}
