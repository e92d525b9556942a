/**
 * CRC-32 (IEEE 802.3, the polynomial of zlib, gzip and PNG) over byte ranges, chainable:
 * `crc32(b, crc32(a))` equals the checksum of a followed by b. Node has zlib.crc32 from
 * 20.15 and 22.2; older releases get the same function from a table, so that files stay
 * readable whichever Node wrote them.
 */
import zlib from 'node:zlib';

type Crc32 = (data: Uint8Array, seed?: number) => number;

const native = (zlib as unknown as { crc32?: Crc32 }).crc32;

let table: Uint32Array | null = null;

function makeTable(): Uint32Array {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
}

/** The table-driven fallback; exported so that tests can compare it with zlib's. */
export function crc32Portable(data: Uint8Array, seed = 0): number {
  const t = (table ??= makeTable());
  let c = ~seed >>> 0;
  for (let i = 0; i < data.length; i++) c = (t[(c ^ (data[i] as number)) & 0xff] as number) ^ (c >>> 8);
  return ~c >>> 0;
}

export const crc32: Crc32 = native ? (data, seed = 0) => native(data, seed) : crc32Portable;
