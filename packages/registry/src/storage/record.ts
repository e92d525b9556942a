/**
 * The frame every log record and snapshot chunk is stored in. Little endian:
 *
 *   offset  size  field
 *   0       4     payload length in bytes (u32)
 *   4       4     CRC-32 of bytes 0-3 and 8 to the end of the payload (u32)
 *   8       8     sequence number (u64; the LSN in a log, the chunk index in a snapshot)
 *   16      1     flags (bit 0: last frame of one write, see BATCH_END)
 *   17      n     payload (UTF-8 JSON)
 *
 * The checksum covers the length too, so a flipped length bit is caught even when the
 * wrong length happens to land on a plausible boundary.
 */
import { crc32 } from './checksum.js';

export const FRAME_HEADER_BYTES = 17;
/** Larger frames are refused when written and taken as damage when read. */
export const MAX_FRAME_PAYLOAD_BYTES = 64 * 1024 * 1024;
/**
 * Set on the last frame of each write (one group commit). Recovery uses it to tell a torn
 * final write, which was never acknowledged, from damage to data that was: see scan.ts.
 */
export const BATCH_END = 1;

const TWO_32 = 2 ** 32;

export interface Frame {
  offset: number;
  /** Offset just past the frame. */
  end: number;
  seq: number;
  flags: number;
  payload: Buffer;
}

export type Decoded =
  | { kind: 'frame'; frame: Frame }
  /** The frame runs past the end of the data. */
  | { kind: 'short'; reason: string }
  /** The frame is complete but wrong. */
  | { kind: 'bad'; reason: string };

function checksum(buf: Buffer, start: number, end: number): number {
  return crc32(buf.subarray(start + 8, end), crc32(buf.subarray(start, start + 4)));
}

/**
 * Writes one frame into `out` at `at` and returns the offset after it. A string payload is
 * encoded as UTF-8 straight into `out` (no intermediate buffer); `out` must have room for
 * its Buffer.byteLength.
 */
export function writeFrame(out: Buffer, at: number, seq: number, flags: number, payload: Uint8Array | string): number {
  const start = at + FRAME_HEADER_BYTES;
  let length: number;
  if (typeof payload === 'string') {
    length = out.write(payload, start, 'utf8');
    // Only a write that stopped within a character's width (4 bytes) of the buffer's end
    // can have been cut short; only then is the length worth checking.
    if (out.length - (start + length) < 4 && length !== Buffer.byteLength(payload, 'utf8')) throw new Error(`no room for a ${Buffer.byteLength(payload, 'utf8')}-byte record at offset ${start} of a ${out.length}-byte buffer`);
  } else {
    out.set(payload, start);
    length = payload.length;
  }
  return sealFrame(out, at, start + length, seq, flags);
}

/**
 * Writes the header of the frame at `at` whose payload is already in `out` up to `end`
 * (encoded there piece by piece); returns `end`.
 */
export function sealFrame(out: Buffer, at: number, end: number, seq: number, flags: number): number {
  out.writeUInt32LE(end - at - FRAME_HEADER_BYTES, at);
  out.writeUInt32LE(seq % TWO_32, at + 8);
  out.writeUInt32LE(Math.floor(seq / TWO_32), at + 12);
  out.writeUInt8(flags, at + 16);
  out.writeUInt32LE(checksum(out, at, end), at + 4);
  return end;
}

export function encodeFrame(seq: number, flags: number, payload: Uint8Array): Buffer {
  if (payload.length > MAX_FRAME_PAYLOAD_BYTES) {
    throw new Error(`a record of ${payload.length} bytes exceeds the largest frame (${MAX_FRAME_PAYLOAD_BYTES} bytes)`);
  }
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payload.length);
  writeFrame(out, 0, seq, flags, payload);
  return out;
}

/** Reads the frame at `offset` of `buf`, whose valid data ends at `limit`. */
export function decodeFrame(buf: Buffer, offset: number, limit = buf.length): Decoded {
  if (offset + FRAME_HEADER_BYTES > limit) return { kind: 'short', reason: `${limit - offset} bytes left, less than a frame header` };
  const length = buf.readUInt32LE(offset);
  if (length > MAX_FRAME_PAYLOAD_BYTES) return { kind: 'bad', reason: `length ${length} exceeds the largest frame` };
  const end = offset + FRAME_HEADER_BYTES + length;
  if (end > limit) return { kind: 'short', reason: `the frame needs ${end - offset} bytes, ${limit - offset} are left` };
  if (checksum(buf, offset, end) !== buf.readUInt32LE(offset + 4)) return { kind: 'bad', reason: 'checksum mismatch' };
  const seq = buf.readUInt32LE(offset + 8) + buf.readUInt32LE(offset + 12) * TWO_32;
  const flags = buf.readUInt8(offset + 16);
  return { kind: 'frame', frame: { offset, end, seq, flags, payload: buf.subarray(offset + FRAME_HEADER_BYTES, end) } };
}
