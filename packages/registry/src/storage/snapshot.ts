/**
 * Snapshot files: the 64-byte file header (kind snapshot, the last LSN covered, the
 * epoch), then frames numbered 0, 1, 2, ... each holding one JSON chunk:
 *
 *   {"kind":"meta", "format", "epoch", "revision", "lsn", "instances", "leases", "emptyServices", "forgottenRevision"?}
 *   {"kind":"instances" | "leases" | "emptyServices", "items": [...]}   (any number)
 *   {"kind":"end", "frames": <number of frames before this one>}
 *
 * A snapshot is valid only if every frame checks and the end frame is there, so a file
 * cut short is never mistaken for a smaller registry. It is written in chunks, yielding to
 * the event loop between them, so a large registry does not stall requests while it is
 * saved.
 */
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import type { Snapshot } from '../core/entry.js';
import type { InstanceJson } from './storage.js';
import { FILE_HEADER_BYTES, decodeFileHeader, encodeFileHeader } from './file-header.js';
import { FILE_MODE, fsyncDir, writeAll } from './fsutil.js';
import { TEMP_SUFFIX, snapshotFileName } from './layout.js';
import { FRAME_HEADER_BYTES, MAX_FRAME_PAYLOAD_BYTES, decodeFrame, sealFrame, writeFrame } from './record.js';

/** Items per chunk: small enough that serialising one takes about a millisecond. */
export const SNAPSHOT_CHUNK_ITEMS = 1000;
/**
 * Bytes after which a chunk ends, whatever its items: a sixteenth of the largest frame
 * (MAX_FRAME_PAYLOAD_BYTES, 64 MiB), as the log's entries are cut at ENTRY_TARGET_BYTES.
 */
export const SNAPSHOT_CHUNK_BYTES = 4 * 1024 * 1024;
/** Bytes gathered before each write to the file. */
const WRITE_BUFFER_BYTES = 1024 * 1024;
/** Longest stretch of serialisation between two yields to the event loop. */
const MAX_BUSY_MS = 5;

/**
 * The meta chunk counts the items of each list; `serviceRevisions`, `serviceSettings` and
 * `histories` came later, so a meta chunk without them counts none.
 */
type Chunk =
  | { kind: 'meta'; format: 1; epoch: string; revision: number; lsn: number; instances: number; leases: number; emptyServices: number; serviceRevisions?: number; serviceSettings?: number; histories?: number; replica?: number; replicaSettings?: number; forgottenRevision?: number }
  | { kind: 'instances'; items: Snapshot['instances'] }
  | { kind: 'leases'; items: Snapshot['leases'] }
  | { kind: 'emptyServices'; items: Snapshot['emptyServices'] }
  | { kind: 'serviceRevisions'; items: NonNullable<Snapshot['serviceRevisions']> }
  | { kind: 'serviceSettings'; items: NonNullable<Snapshot['serviceSettings']> }
  | { kind: 'histories'; items: NonNullable<Snapshot['histories']> }
  /** ap mode only: the replicated records. */
  | { kind: 'replica'; items: NonNullable<Snapshot['replica']> }
  /** ap mode only: the versions of the service settings. */
  | { kind: 'replicaSettings'; items: NonNullable<Snapshot['replicaSettings']> }
  | { kind: 'end'; frames: number };

type ListKind = 'instances' | 'leases' | 'emptyServices' | 'serviceRevisions' | 'serviceSettings' | 'histories' | 'replica' | 'replicaSettings';
const LISTS: ListKind[] = ['instances', 'leases', 'emptyServices', 'serviceRevisions', 'serviceSettings', 'histories', 'replica', 'replicaSettings'];

const listOf = (snap: Snapshot, kind: ListKind): unknown[] => snap[kind] ?? [];

function metaOf(snap: Snapshot, lsn: number): Extract<Chunk, { kind: 'meta' }> {
  const { epoch, revision } = snap;
  return {
    kind: 'meta',
    format: 1,
    epoch,
    revision,
    lsn,
    instances: snap.instances.length,
    leases: snap.leases.length,
    emptyServices: snap.emptyServices.length,
    serviceRevisions: listOf(snap, 'serviceRevisions').length,
    serviceSettings: listOf(snap, 'serviceSettings').length,
    histories: listOf(snap, 'histories').length,
    ...(snap.forgottenRevision ? { forgottenRevision: snap.forgottenRevision } : {}),
    // ap mode only; absent otherwise, so that other snapshots stay as they were.
    ...(snap.replica ? { replica: snap.replica.length } : {}),
    ...(snap.replicaSettings ? { replicaSettings: snap.replicaSettings.length } : {}),
  };
}

/**
 * The snapshot file's write buffer. Frames are encoded straight into it, and it is written
 * out when the next piece would not fit; a frame being built then moves to its start (or
 * into a larger buffer), so every frame is written whole from one buffer.
 */
class FrameOut {
  buf = Buffer.allocUnsafe(WRITE_BUFFER_BYTES);
  /** Bytes of complete frames at the start of `buf`, not yet in the file. */
  filled = 0;
  /** Where the next write goes in the file. */
  position = 0;

  constructor(private readonly fh: FileHandle) {}

  /**
   * Makes room for `bytes` more at `at`, inside the frame being built from `filled`:
   * writes out the complete frames before it and moves it to the start of the buffer, or
   * of a larger one. Returns where the frame starts now.
   */
  async room(at: number, bytes: number): Promise<number> {
    if (at + bytes <= this.buf.length) return this.filled;
    const start = this.filled;
    await this.flush();
    if (at - start + bytes > this.buf.length) {
      const bigger = Buffer.allocUnsafe(Math.max(at - start + bytes, 2 * this.buf.length));
      this.buf.copy(bigger, 0, start, at);
      this.buf = bigger;
    } else this.buf.copyWithin(0, start, at);
    return 0;
  }

  /** Writes out the complete frames. */
  async flush(): Promise<void> {
    if (this.filled === 0) return;
    await writeAll(this.fh, this.buf.subarray(0, this.filled), this.position);
    this.position += this.filled;
    this.filled = 0;
  }
}

/**
 * The items of one list, encoded into `out` as frames from `seq` on, item by item; returns
 * the next frame's number. A frame ends after `chunkItems` items or once it holds
 * SNAPSHOT_CHUNK_BYTES, whichever comes first, so that no list the limits allow makes a
 * frame larger than the largest one (instances with 16 KiB of metadata in control
 * characters take about 100 KB each). An instance's text is taken from the core when it
 * has it for exactly that object (instances are replaced, never changed in place), else
 * serialised: joining a chunk's instances into one string first, which then had to be
 * flattened, measured and encoded, made writing a 100,000-instance snapshot take about
 * twice the CPU (storage.md).
 */
async function putListFrames(out: FrameOut, seq: number, kind: ListKind, items: readonly unknown[], chunkItems: number, instanceJson: InstanceJson | undefined): Promise<number> {
  const textOf = (item: unknown): string => {
    if (kind !== 'instances' || !instanceJson) return JSON.stringify(item);
    const it = item as Snapshot['instances'][number];
    const cached = instanceJson(it.instance);
    return cached === undefined ? JSON.stringify(it) : `{"instance":${cached},"specs":${JSON.stringify(it.specs)}}`;
  };
  let busySince = performance.now();
  for (let first = 0; first < items.length; ) {
    let start = out.filled;
    let at = start + FRAME_HEADER_BYTES;
    const put = async (text: string): Promise<void> => {
      // A UTF-16 code unit takes at most 3 bytes of UTF-8.
      if (at + 3 * text.length > out.buf.length) {
        const moved = await out.room(at, 3 * text.length);
        at -= start - moved;
        start = moved;
      }
      at += out.buf.write(text, at, 'utf8');
      // Checked as it grows, so that an oversized chunk fails before its buffer grows far.
      if (at - start - FRAME_HEADER_BYTES > MAX_FRAME_PAYLOAD_BYTES) throw new Error(`a snapshot chunk of more than ${MAX_FRAME_PAYLOAD_BYTES} bytes exceeds the largest frame`);
    };
    await put(`{"kind":"${kind}","items":[`);
    let i = first;
    while (i < items.length && i - first < chunkItems && at - start < SNAPSHOT_CHUNK_BYTES) {
      await put((i > first ? ',' : '') + textOf(items[i]));
      i++;
    }
    await put(']}');
    out.filled = sealFrame(out.buf, start, at, seq++, 0);
    first = i;
    if (performance.now() - busySince > MAX_BUSY_MS) {
      await yieldToLoop();
      busySince = performance.now();
    }
  }
  return seq;
}

/**
 * Writes the snapshot as `snap-<lsn>.snap` durably: temporary file, fsync, rename, fsync
 * of the directory. Returns the file name and its size.
 */
export async function writeSnapshotFile(dir: string, lsn: number, snap: Snapshot, chunkItems = SNAPSHOT_CHUNK_ITEMS, instanceJson?: InstanceJson): Promise<{ name: string; bytes: number }> {
  const name = snapshotFileName(lsn);
  const tmp = join(dir, name + TEMP_SUFFIX);
  const fh = await open(tmp, 'w', FILE_MODE);
  let bytes = 0;
  let complete = false;
  try {
    const out = new FrameOut(fh);
    out.filled = encodeFileHeader({ kind: 'snapshot', seq: lsn, epoch: snap.epoch }).copy(out.buf, 0);
    const putChunk = async (seq: number, chunk: Chunk): Promise<void> => {
      const text = JSON.stringify(chunk);
      const start = await out.room(out.filled, FRAME_HEADER_BYTES + Buffer.byteLength(text, 'utf8')); // may replace out.buf
      out.filled = writeFrame(out.buf, start, seq, 0, text);
    };
    await putChunk(0, metaOf(snap, lsn));
    let seq = 1;
    for (const kind of LISTS) seq = await putListFrames(out, seq, kind, listOf(snap, kind), chunkItems, instanceJson);
    await putChunk(seq, { kind: 'end', frames: seq });
    await out.flush();
    await fh.sync();
    bytes = out.position;
    complete = true;
  } finally {
    await fh.close();
    // A failed snapshot (disk full, most likely) gives its space back at once.
    if (!complete) await unlink(tmp).catch(() => undefined);
  }
  await rename(tmp, join(dir, name));
  await fsyncDir(dir);
  return { name, bytes };
}

export class SnapshotDamageError extends Error {
  constructor(
    readonly file: string,
    readonly offset: number,
    readonly reason: string,
  ) {
    super(`snapshot ${file} is damaged at byte ${offset}: ${reason}`);
    this.name = 'SnapshotDamageError';
  }
}

export interface LoadedSnapshot {
  lsn: number;
  snapshot: Snapshot;
  bytes: number;
}

type MetaChunk = Extract<Chunk, { kind: 'meta' }>;

interface ReadState {
  snap: Snapshot;
  meta: MetaChunk | null;
  epoch: string;
  lsn: number;
}

function parseChunk(payload: Buffer): Chunk | string {
  try {
    return JSON.parse(payload.toString('utf8')) as Chunk;
  } catch (err) {
    return `a chunk is not JSON (${(err as Error).message})`;
  }
}

/**
 * Reads and checks a whole snapshot file; throws SnapshotDamageError if it is not intact.
 * Read frame by frame, never whole: a registry of a million instances with full histories
 * writes a snapshot past 2 GiB, the most one read of a file into memory can take in Node.
 */
export async function readSnapshotFile(dir: string, name: string, expectLsn: number): Promise<LoadedSnapshot> {
  const fh = await open(join(dir, name), 'r');
  try {
    const size = (await fh.stat()).size;
    const head = Buffer.alloc(Math.min(FILE_HEADER_BYTES, size));
    await readAt(fh, head, 0);
    const h = decodeFileHeader(head, 'snapshot');
    if ('error' in h) throw new SnapshotDamageError(name, 0, h.error);
    if (h.seq !== expectLsn) throw new SnapshotDamageError(name, 0, `header says LSN ${h.seq}, the file name ${expectLsn}`);
    const st: ReadState = { snap: { format: 1, epoch: h.epoch, revision: 0, leases: [], instances: [], emptyServices: [], serviceRevisions: [], serviceSettings: [], histories: [] }, meta: null, epoch: h.epoch, lsn: h.seq };
    let offset = FILE_HEADER_BYTES;
    const frameHead = Buffer.alloc(FRAME_HEADER_BYTES);
    for (let seq = 0; ; seq++) {
      // The frame's header first, for its length; then the whole frame, checked as one.
      if (offset + FRAME_HEADER_BYTES > size) throw new SnapshotDamageError(name, offset, `cut short (${size - offset} bytes left, less than a frame header)`);
      await readAt(fh, frameHead, offset);
      const length = frameHead.readUInt32LE(0);
      if (length > MAX_FRAME_PAYLOAD_BYTES) throw new SnapshotDamageError(name, offset, `length ${length} exceeds the largest frame`);
      if (offset + FRAME_HEADER_BYTES + length > size) throw new SnapshotDamageError(name, offset, `cut short (the frame needs ${FRAME_HEADER_BYTES + length} bytes, ${size - offset} are left)`);
      const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + length);
      await readAt(fh, frame, offset);
      const d = decodeFrame(frame, 0);
      if (d.kind !== 'frame') throw new SnapshotDamageError(name, offset, d.kind === 'short' ? `cut short (${d.reason})` : d.reason);
      if (d.frame.seq !== seq) throw new SnapshotDamageError(name, offset, `chunk ${d.frame.seq} where ${seq} was expected`);
      const chunk = parseChunk(d.frame.payload);
      const problem = typeof chunk === 'string' ? chunk : applyChunk(st, chunk, seq);
      if (problem !== null) throw new SnapshotDamageError(name, offset, problem);
      offset += d.frame.end;
      if ((chunk as Chunk).kind === 'end') break;
    }
    if (offset !== size) throw new SnapshotDamageError(name, offset, `${size - offset} bytes follow the end chunk`);
    return { lsn: h.seq, snapshot: st.snap, bytes: size };
  } finally {
    await fh.close();
  }
}

/** Fills `buf` from the file at `position` (a file shorter than that is damage the caller found first). */
async function readAt(fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  for (let at = 0; at < buf.length; ) {
    const { bytesRead } = await fh.read(buf, at, buf.length - at, position + at);
    if (bytesRead === 0) throw new Error(`the file ended at byte ${position + at} while being read`);
    at += bytesRead;
  }
}

/** Adds a chunk to the snapshot being read; returns what is wrong with it, if anything. */
function applyChunk(st: ReadState, chunk: Chunk, seq: number): string | null {
  if ((seq === 0) !== (chunk.kind === 'meta')) return seq === 0 ? 'the first chunk is not the meta chunk' : 'a second meta chunk';
  switch (chunk.kind) {
    case 'meta':
      if (chunk.format !== 1 || chunk.epoch !== st.epoch || chunk.lsn !== st.lsn) return 'the meta chunk disagrees with the file header';
      st.snap.revision = chunk.revision;
      if (typeof chunk.forgottenRevision === 'number') st.snap.forgottenRevision = chunk.forgottenRevision;
      st.meta = chunk;
      return null;
    case 'instances':
    case 'leases':
    case 'emptyServices':
    case 'serviceRevisions':
    case 'serviceSettings':
    case 'histories':
    case 'replica':
    case 'replicaSettings':
      if (!Array.isArray(chunk.items)) return `chunk ${seq} has no items`;
      for (const item of chunk.items) ((st.snap[chunk.kind] ??= []) as unknown[]).push(item);
      return null;
    case 'end': {
      const meta = st.meta;
      if (chunk.frames !== seq) return `the end chunk counts ${chunk.frames} chunks, ${seq} were read`;
      if (!meta || LISTS.some((k) => (meta[k] ?? 0) !== listOf(st.snap, k).length)) return 'item counts differ from the meta chunk';
      return null;
    }
    default:
      return `unknown chunk kind ${JSON.stringify((chunk as { kind: unknown }).kind)}`;
  }
}
