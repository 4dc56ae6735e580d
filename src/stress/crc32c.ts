// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), table-driven: slicing-by-8 for the
// bulk of a buffer and the byte-wise table for the rest. crc32c("123456789") = 0xE3069283.

const POLY = 0x82f63b78;

/** T[k][b]: the CRC of byte b followed by k zero bytes. T[0] is the classic byte table. */
const T: Uint32Array[] = (() => {
  const t = Array.from({ length: 8 }, () => new Uint32Array(256));
  for (let b = 0; b < 256; b++) {
    let c = b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
    t[0][b] = c >>> 0;
  }
  for (let b = 0; b < 256; b++) {
    let c = t[0][b];
    for (let k = 1; k < 8; k++) { c = t[0][c & 0xff] ^ (c >>> 8); t[k][b] = c >>> 0; }
  }
  return t;
})();
const [T0, T1, T2, T3, T4, T5, T6, T7] = T;

/**
 * Continues a CRC-32C over bytes [start, end) of `buf`. Pass the previous result as `crc`
 * to checksum a message in pieces (start with 0). Returns an unsigned 32-bit value.
 */
export function crc32cUpdate(crc: number, buf: Uint8Array, start = 0, end = buf.length): number {
  let c = ~crc >>> 0;
  let i = start;
  // Slicing-by-8 over whole 8-byte groups.
  for (const last = end - 8; i <= last; i += 8) {
    const a = c ^ (buf[i] | (buf[i + 1] << 8) | (buf[i + 2] << 16) | (buf[i + 3] << 24));
    c = T7[a & 0xff] ^ T6[(a >>> 8) & 0xff] ^ T5[(a >>> 16) & 0xff] ^ T4[a >>> 24] ^
      T3[buf[i + 4]] ^ T2[buf[i + 5]] ^ T1[buf[i + 6]] ^ T0[buf[i + 7]];
  }
  for (; i < end; i++) c = T0[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

/** CRC-32C of a whole buffer (or a string, as UTF-8). */
export function crc32c(data: Uint8Array | string): number {
  const buf = typeof data === 'string' ? new TextEncoder().encode(data) : data;
  return crc32cUpdate(0, buf, 0, buf.length);
}

/** The byte-at-a-time reference (tests compare the sliced version against it). */
export function crc32cBytewise(buf: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < buf.length; i++) c = T0[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}
