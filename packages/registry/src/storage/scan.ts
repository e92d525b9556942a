/**
 * Reading log segments and judging damage. Only the final write to the log can be torn
 * by a crash: each write is fsync'd before the next one starts and before a new segment
 * is created, and the last frame of every write carries BATCH_END. So a bad frame in the
 * last segment is a torn tail when nothing valid follows it except frames of that same
 * final write (no BATCH_END frame before the end of the file). Anything else (damage in
 * an older segment, or a complete, fsync'd write after the bad spot) is damage to data
 * that was acknowledged: recovery stops and names the place.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FILE_HEADER_BYTES, decodeFileHeader, type FileHeader } from './file-header.js';
import type { NamedFile } from './layout.js';
import { BATCH_END, FRAME_HEADER_BYTES, decodeFrame, type Frame } from './record.js';

export interface Damage {
  file: string;
  /** Byte offset of the first bad byte range (a frame or the header). */
  offset: number;
  /** Bytes from `offset` to the end of the file. */
  bytes: number;
  reason: string;
  /** A torn final write (safe to cut off) rather than damage to acknowledged data. */
  torn: boolean;
}

export interface SegmentScan {
  name: string;
  path: string;
  size: number;
  header: FileHeader | null;
  records: number;
  firstLsn: number | null;
  lastLsn: number | null;
  /** Offset just past the last good frame (or header). */
  validEnd: number;
  damage: Damage | null;
}

export interface ScanExpect {
  /** The LSN the first frame must carry. */
  firstLsn: number;
  epoch: string | null;
  /** Whether this is the newest segment (the only one a crash can tear). */
  isLast: boolean;
}

/**
 * Whether the bytes after a bad spot at `from` hold an acknowledged write: a valid frame
 * that ends a write (BATCH_END) anywhere but at the very end of the file. With
 * `anyFrame`, any valid frame counts (used after a bad header, since a header is fsync'd
 * before any frame is written behind it).
 */
export function acknowledgedDataAfter(buf: Buffer, from: number, anyFrame: boolean): boolean {
  for (let p = from; p + FRAME_HEADER_BYTES <= buf.length; ) {
    const d = decodeFrame(buf, p);
    if (d.kind !== 'frame') {
      p++;
      continue;
    }
    if (anyFrame || ((d.frame.flags & BATCH_END) !== 0 && d.frame.end !== buf.length)) return true;
    p = d.frame.end;
  }
  return false;
}

function damageAt(name: string, buf: Buffer, offset: number, reason: string, torn: boolean): Damage {
  return { file: name, offset, bytes: buf.length - offset, reason, torn };
}

function checkHeader(name: string, buf: Buffer, file: NamedFile, expect: ScanExpect): FileHeader | Damage {
  const h = decodeFileHeader(buf, 'segment');
  if ('error' in h) {
    const torn = h.torn && expect.isLast && !acknowledgedDataAfter(buf, 1, true);
    return damageAt(name, buf, 0, `bad segment header: ${h.error}`, torn);
  }
  if (h.seq !== file.seq) return damageAt(name, buf, 0, `header says first LSN ${h.seq}, the file name ${file.seq}`, false);
  if (expect.epoch !== null && h.epoch !== expect.epoch) {
    return damageAt(name, buf, 0, `segment of epoch ${h.epoch} in a directory of epoch ${expect.epoch}`, false);
  }
  return h;
}

/**
 * Reads one segment, calling `onFrame` for each good frame in order, and stops at the
 * first bad one. Frames must carry consecutive LSNs from `expect.firstLsn`.
 */
export async function scanSegment(dir: string, file: NamedFile, expect: ScanExpect, onFrame?: (f: Frame) => void): Promise<SegmentScan> {
  const path = join(dir, file.name);
  const buf = await readFile(path);
  const out: SegmentScan = { name: file.name, path, size: buf.length, header: null, records: 0, firstLsn: null, lastLsn: null, validEnd: 0, damage: null };
  const h = checkHeader(file.name, buf, file, expect);
  if ('offset' in h) {
    out.damage = h;
    return out;
  }
  out.header = h;
  if (h.seq !== expect.firstLsn) {
    out.damage = damageAt(file.name, buf, 0, `the segment starts at LSN ${h.seq}, LSN ${expect.firstLsn} was expected (a segment is missing)`, false);
    return out;
  }
  let offset = FILE_HEADER_BYTES;
  let lsn = h.seq;
  while (offset < buf.length) {
    const d = decodeFrame(buf, offset);
    let reason: string | null = d.kind === 'frame' ? null : `${d.kind === 'short' ? 'cut short' : 'bad frame'}: ${d.reason}`;
    if (d.kind === 'frame' && d.frame.seq !== lsn) reason = `LSN ${d.frame.seq} where ${lsn} was expected`;
    if (reason !== null || d.kind !== 'frame') {
      const torn = expect.isLast && !acknowledgedDataAfter(buf, offset + 1, false);
      out.damage = damageAt(file.name, buf, offset, reason ?? 'bad frame', torn);
      break;
    }
    onFrame?.(d.frame);
    out.records++;
    out.firstLsn ??= lsn;
    out.lastLsn = lsn;
    lsn++;
    offset = d.frame.end;
  }
  out.validEnd = offset;
  return out;
}

export interface LogScan {
  /** Segments read, in order (up to and including a damaged one). */
  segments: SegmentScan[];
  /** Segments wholly covered by the snapshot, not read. */
  covered: NamedFile[];
  /** Segments after a damaged one, not read. */
  unread: NamedFile[];
  damage: Damage | null;
  /** The last good LSN (the snapshot's when no record follows it). */
  lastLsn: number;
}

/**
 * Reads the log after a snapshot that covers up to `afterLsn` (0 without a snapshot),
 * calling `onRecord` for each record with a higher LSN. Stops at the first damage.
 */
export async function scanLog(
  dir: string,
  segments: NamedFile[],
  afterLsn: number,
  epoch: string | null,
  onRecord?: (f: Frame) => void,
): Promise<LogScan> {
  const out: LogScan = { segments: [], covered: [], unread: [], damage: null, lastLsn: afterLsn };
  let i = 0;
  // A segment is covered when the next one starts at or before the first needed LSN.
  while (i + 1 < segments.length && (segments[i + 1] as NamedFile).seq <= afterLsn + 1) out.covered.push(segments[i++] as NamedFile);
  const first = segments[i];
  if (first !== undefined && first.seq > afterLsn + 1) {
    const reason = `the log resumes at LSN ${first.seq} but LSN ${afterLsn + 1} is the next one needed (a segment or snapshot is missing)`;
    out.damage = { file: first.name, offset: 0, bytes: 0, reason, torn: false };
    out.unread = segments.slice(i);
    return out;
  }
  let expected = first?.seq ?? afterLsn + 1;
  for (; i < segments.length; i++) {
    const file = segments[i] as NamedFile;
    const scan = await scanSegment(dir, file, { firstLsn: expected, epoch, isLast: i === segments.length - 1 }, (f) => {
      if (f.seq > afterLsn) onRecord?.(f);
    });
    out.segments.push(scan);
    if (scan.lastLsn !== null) out.lastLsn = Math.max(out.lastLsn, scan.lastLsn);
    expected = (scan.lastLsn ?? expected - 1) + 1;
    if (scan.damage) {
      out.damage = scan.damage;
      out.unread = segments.slice(i + 1);
      return out;
    }
  }
  return out;
}
