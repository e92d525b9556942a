/**
 * The 64-byte header at the start of every log segment and snapshot file. Little endian:
 *
 *   offset  size  field
 *   0       8     magic: "SWBD-WAL" (log segment) or "SWBD-SNP" (snapshot)
 *   8       4     format version (1)
 *   12      4     header length (64)
 *   16      8     sequence: a segment's first LSN; the last LSN a snapshot covers
 *   24      1     epoch length in bytes (at most 32)
 *   25      32    epoch, UTF-8, zero padded
 *   57      3     reserved, zero
 *   60      4     CRC-32 of bytes 0-59
 *
 * The header is written and fsync'd before any frame follows it, so a file whose header
 * is incomplete was being created when the process stopped.
 */
import { crc32 } from './checksum.js';

export const FILE_HEADER_BYTES = 64;
export const FORMAT_VERSION = 1;
export const MAX_EPOCH_BYTES = 32;

export type FileKind = 'segment' | 'snapshot';

const MAGIC: Record<FileKind, string> = { segment: 'SWBD-WAL', snapshot: 'SWBD-SNP' };
const TWO_32 = 2 ** 32;

export interface FileHeader {
  kind: FileKind;
  seq: number;
  epoch: string;
}

export function encodeFileHeader(h: FileHeader): Buffer {
  const epoch = Buffer.from(h.epoch, 'utf8');
  if (epoch.length === 0 || epoch.length > MAX_EPOCH_BYTES) throw new Error(`epoch "${h.epoch}" must be 1-${MAX_EPOCH_BYTES} bytes`);
  const out = Buffer.alloc(FILE_HEADER_BYTES);
  out.write(MAGIC[h.kind], 0, 'latin1');
  out.writeUInt32LE(FORMAT_VERSION, 8);
  out.writeUInt32LE(FILE_HEADER_BYTES, 12);
  out.writeUInt32LE(h.seq % TWO_32, 16);
  out.writeUInt32LE(Math.floor(h.seq / TWO_32), 20);
  out.writeUInt8(epoch.length, 24);
  epoch.copy(out, 25);
  out.writeUInt32LE(crc32(out.subarray(0, 60)), 60);
  return out;
}

/** The header, or why the first bytes of `buf` are not a valid one. */
export function decodeFileHeader(buf: Buffer, kind: FileKind): FileHeader | { error: string; torn: boolean } {
  if (buf.length < FILE_HEADER_BYTES) return { error: `the file has ${buf.length} bytes, less than its ${FILE_HEADER_BYTES}-byte header`, torn: true };
  if (buf.readUInt32LE(60) !== crc32(buf.subarray(0, 60))) return { error: 'header checksum mismatch', torn: true };
  const magic = buf.toString('latin1', 0, 8);
  if (magic !== MAGIC[kind]) return { error: `magic "${magic}" is not "${MAGIC[kind]}"`, torn: false };
  const version = buf.readUInt32LE(8);
  if (version !== FORMAT_VERSION) return { error: `format version ${version} is not supported (this build reads ${FORMAT_VERSION})`, torn: false };
  const epochBytes = buf.readUInt8(24);
  if (epochBytes === 0 || epochBytes > MAX_EPOCH_BYTES) return { error: `epoch length ${epochBytes} is out of range`, torn: false };
  const seq = buf.readUInt32LE(16) + buf.readUInt32LE(20) * TWO_32;
  return { kind, seq, epoch: buf.toString('utf8', 25, 25 + epochBytes) };
}
