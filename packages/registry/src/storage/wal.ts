/**
 * The write-ahead log writer: group commit onto segment files.
 *
 * `append` gives the entry the next LSN and queues it. One writer loop drains the queue:
 * it takes everything queued (up to maxBatchBytes), frames it into one buffer, writes it
 * with one positional write, fdatasyncs once, and resolves those appends in order. Appends
 * that arrive while that fsync is in flight wait in the queue and form the next batch, so
 * under load many appends share one fsync. On Linux, segments are opened with O_DSYNC
 * and the write is the fsync: it returns once the data (and the metadata
 * needed to read it back) is on stable storage, which is what write + fdatasync gave, in
 * one call to the thread pool instead of two (measured: a quarter less CPU per commit,
 * a third of it on the event loop, and a shorter wait). After a failed write or fsync the log is
 * failed for good: the page cache may no longer match the disk, so nothing is retried,
 * and every pending and later append rejects.
 */
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Entry } from '../core/entry.js';
import { FILE_HEADER_BYTES, encodeFileHeader } from './file-header.js';
import { FILE_MODE, fsyncDir, writeAll } from './fsutil.js';
import { segmentFileName } from './layout.js';
import type { StorageObserver } from './observer.js';
import { BATCH_END, FRAME_HEADER_BYTES, MAX_FRAME_PAYLOAD_BYTES, writeFrame } from './record.js';

export interface WalLimits {
  /** Most bytes one write (one fsync) carries; a larger single record goes alone. */
  maxBatchBytes: number;
  /**
   * Most encoded bytes waiting to be written. Appends beyond it are queued as entries and
   * encoded once the queue drains below the limit: they are not refused (refusing would
   * stop the node), their callers simply wait longer.
   */
  maxPendingBytes: number;
  /** A segment that has grown past this is closed and a new one started. */
  segmentMaxBytes: number;
}

export interface WalStats {
  appends: number;
  /** Batches written; each is one write and one fdatasync. */
  writes: number;
  fsyncs: number;
  bytesWritten: number;
  /** Bytes of records encoded (the payloads and frame headers). */
  bytesEncoded: number;
  segmentsCreated: number;
  /** Appends that found the pending queue full and were encoded later. */
  deferredAppends: number;
}

/** Where the writer continues: an existing segment (at its valid end) or a new one. */
export interface WalTail {
  name: string;
  firstLsn: number;
  size: number;
}

export interface WalWriterOptions extends WalLimits {
  dir: string;
  epoch: string;
  /** Makes written data durable; fh.datasync() unless a test injects a fault. */
  sync?: (fh: FileHandle) => Promise<void>;
  /** Told about each group commit (records, bytes, write and fsync time); optional. */
  observer?: StorageObserver;
}

interface RecordItem {
  kind: 'record';
  lsn: number;
  entry: Entry;
  /** The record's JSON, encoded into the batch buffer when written; null until encoded. */
  payload: string | null;
  /** UTF-8 length of the payload. */
  bytes: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

interface RotateItem {
  kind: 'rotate';
  firstLsn: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

type Item = RecordItem | RotateItem;

/**
 * O_DSYNC for the segments on Linux, or 0: elsewhere (and when a test injects its own sync,
 * so that a fault on the fsync comes from that function) the writer calls fdatasync. Not
 * on macOS although it has the flag: there libuv's fdatasync is F_FULLFSYNC, which also
 * empties the drive's write cache, and an O_DSYNC write does not.
 */
function dsyncFlag(opts: WalWriterOptions): number {
  return opts.sync === undefined && process.platform === 'linux' && typeof constants.O_DSYNC === 'number' ? constants.O_DSYNC : 0;
}

export class WalWriter {
  readonly stats: WalStats = { appends: 0, writes: 0, fsyncs: 0, bytesWritten: 0, bytesEncoded: 0, segmentsCreated: 0, deferredAppends: 0 };
  private readonly queue: Item[] = [];
  private pendingBytes = 0;
  private running = false;
  private failure: Error | null = null;
  private drained: (() => void)[] = [];
  private nextLsn: number;
  private segmentFirstLsn: number;
  private segmentName: string;

  private constructor(
    private readonly opts: WalWriterOptions,
    private fh: FileHandle | null,
    private position: number,
    tail: { name: string; firstLsn: number },
    lastLsn: number,
  ) {
    this.nextLsn = lastLsn + 1;
    this.segmentFirstLsn = tail.firstLsn;
    this.segmentName = tail.name;
  }

  /** Continues `tail` (already cut to its valid end) or starts a segment after `lastLsn`. */
  static async open(opts: WalWriterOptions, tail: WalTail | null, lastLsn: number): Promise<WalWriter> {
    if (tail) {
      const fh = await open(join(opts.dir, tail.name), constants.O_RDWR | dsyncFlag(opts));
      return new WalWriter(opts, fh, tail.size, tail, lastLsn);
    }
    const w = new WalWriter(opts, null, 0, { name: '', firstLsn: -1 }, lastLsn);
    try {
      await w.startSegment(lastLsn + 1);
    } catch (err) {
      // The segment may be open already (its header or the directory sync failed).
      await w.fh?.close().catch(() => undefined);
      throw err;
    }
    return w;
  }

  /** The LSN of the last appended (not necessarily durable) record. */
  get lastLsn(): number {
    return this.nextLsn - 1;
  }

  /** Resolves once the entry and every entry appended before it are fsync'd. */
  append(entry: Entry): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    let payload: EncodedPayload | null = null;
    if (this.pendingBytes < this.opts.maxPendingBytes && !this.hasDeferred()) {
      try {
        payload = encodePayload(entry);
      } catch (err) {
        // Memory already holds the entry, so the log cannot go on without it.
        this.fail(err, []);
        return Promise.reject(this.failure);
      }
    } else {
      this.stats.deferredAppends++;
    }
    return new Promise<void>((resolve, reject) => {
      const item: RecordItem = { kind: 'record', lsn: this.nextLsn++, entry, payload: null, bytes: 0, resolve, reject };
      if (payload) this.attach(item, payload);
      this.stats.appends++;
      this.queue.push(item);
      this.kick();
    });
  }

  /**
   * Ends the current segment after everything appended so far: later appends go to a new
   * segment. Returns the last LSN before the cut and a promise of the new segment.
   */
  cut(): { lsn: number; done: Promise<void> } {
    const lsn = this.lastLsn;
    if (this.failure) {
      const failed = Promise.reject(this.failure);
      failed.catch(() => undefined);
      return { lsn, done: failed };
    }
    const done = new Promise<void>((resolve, reject) => this.queue.push({ kind: 'rotate', firstLsn: lsn + 1, resolve, reject }));
    // The caller may await this only after an earlier snapshot; a failure before then is
    // still reported to it, and must not count as an unhandled rejection meanwhile.
    done.catch(() => undefined);
    this.kick();
    return { lsn, done };
  }

  /** Waits for the queue to drain, then closes the segment. */
  async close(): Promise<void> {
    if (this.running || this.queue.length > 0) await new Promise<void>((r) => this.drained.push(r));
    const fh = this.fh;
    this.fh = null;
    await fh?.close();
  }

  // ---- the writer loop ----

  private kick(): void {
    if (this.running) return;
    this.running = true;
    // One turn of the event loop lets appends from requests read in the same turn join.
    setImmediate(() => void this.run());
  }

  private async run(): Promise<void> {
    let inFlight: Item[] = [];
    try {
      while (this.queue.length > 0 && !this.failure) {
        const head = this.queue[0] as Item;
        if (head.kind === 'rotate') inFlight = [this.queue.shift() as Item];
        else this.takeBatch((inFlight = []) as RecordItem[]);
        if (head.kind === 'rotate') await this.startSegment(head.firstLsn);
        else await this.writeBatch(inFlight as RecordItem[]);
        for (const item of inFlight) item.resolve();
        inFlight = [];
        this.encodeDeferred();
        if (this.position >= this.opts.segmentMaxBytes) await this.startSegment(this.lastWrittenLsn() + 1);
      }
    } catch (err) {
      this.fail(err, inFlight);
    } finally {
      this.running = false;
      for (const r of this.drained.splice(0)) r();
    }
  }

  /**
   * Moves the next records into `batch` (the caller's list, so that items already taken are
   * failed with the rest if encoding a later one throws, instead of waiting for ever).
   */
  private takeBatch(batch: RecordItem[]): void {
    let bytes = 0;
    while (this.queue.length > 0) {
      const item = this.queue[0] as Item;
      if (item.kind !== 'record') break;
      if (item.payload === null) this.attach(item, encodePayload(item.entry));
      const size = FRAME_HEADER_BYTES + item.bytes;
      if (batch.length > 0 && bytes + size > this.opts.maxBatchBytes) break;
      this.queue.shift();
      batch.push(item);
      bytes += size;
    }
  }

  private async writeBatch(batch: RecordItem[]): Promise<void> {
    let total = 0;
    for (const item of batch) total += FRAME_HEADER_BYTES + item.bytes;
    const buf = Buffer.allocUnsafe(total);
    let at = 0;
    batch.forEach((item, i) => {
      at = writeFrame(buf, at, item.lsn, i === batch.length - 1 ? BATCH_END : 0, item.payload as string);
    });
    const fh = this.fh as FileHandle;
    const observer = this.opts.observer;
    const t0 = observer ? performance.now() : 0;
    await this.io('write', () => writeAll(fh, buf, this.position));
    this.position += total;
    this.pendingBytes -= total;
    this.stats.writes++;
    this.stats.bytesWritten += total;
    const t1 = observer ? performance.now() : 0;
    // With O_DSYNC the write above was the sync; its time is reported as the sync's.
    if (dsyncFlag(this.opts) === 0) await this.io('fsync', () => (this.opts.sync ? this.opts.sync(fh) : fh.datasync()));
    this.stats.fsyncs++;
    if (observer) {
      const end = performance.now();
      observer.walCommit(dsyncFlag(this.opts) === 0 ? { records: batch.length, bytes: total, writeSeconds: (t1 - t0) / 1000, syncSeconds: (end - t1) / 1000 } : { records: batch.length, bytes: total, writeSeconds: null, syncSeconds: (end - t0) / 1000 });
    }
  }

  /** Closes the current segment (all of it already fsync'd) and starts `firstLsn`'s. */
  private async startSegment(firstLsn: number): Promise<void> {
    if (firstLsn === this.segmentFirstLsn && this.fh) return;
    const name = segmentFileName(firstLsn);
    const old = this.fh;
    this.fh = null;
    await old?.close();
    const fh = await this.io('create', () => open(join(this.opts.dir, name), constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | dsyncFlag(this.opts), FILE_MODE), name);
    this.fh = fh;
    await this.io('write', () => writeAll(fh, encodeFileHeader({ kind: 'segment', seq: firstLsn, epoch: this.opts.epoch }), 0), name);
    await this.io('fsync', () => fh.datasync(), name);
    await this.io('fsync', () => fsyncDir(this.opts.dir), name);
    this.position = FILE_HEADER_BYTES;
    this.segmentFirstLsn = firstLsn;
    this.segmentName = name;
    this.stats.segmentsCreated++;
  }

  // ---- helpers ----

  private attach(item: RecordItem, payload: EncodedPayload): void {
    item.payload = payload.text;
    item.bytes = payload.bytes;
    this.pendingBytes += FRAME_HEADER_BYTES + payload.bytes;
    this.stats.bytesEncoded += FRAME_HEADER_BYTES + payload.bytes;
  }

  private hasDeferred(): boolean {
    const last = this.queue[this.queue.length - 1];
    return last !== undefined && last.kind === 'record' && last.payload === null;
  }

  private encodeDeferred(): void {
    for (const item of this.queue) {
      if (this.pendingBytes >= this.opts.maxPendingBytes) return;
      if (item.kind === 'record' && item.payload === null) this.attach(item, encodePayload(item.entry));
    }
  }

  private lastWrittenLsn(): number {
    const next = this.queue.find((i): i is RecordItem => i.kind === 'record');
    return next ? next.lsn - 1 : this.lastLsn;
  }

  /** Runs one I/O step, naming the file and the step in the error. */
  private async io<T>(step: string, fn: () => Promise<T>, name = this.segmentName): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw new Error(`write-ahead log ${join(this.opts.dir, name)}: ${step} failed: ${e.message}`, { cause: err });
    }
  }

  private fail(err: unknown, inFlight: Item[]): void {
    const e = err instanceof Error ? err : new Error(String(err));
    this.failure = e;
    for (const item of inFlight) item.reject(e);
    for (const item of this.queue.splice(0)) item.reject(e);
    this.pendingBytes = 0;
  }
}

/**
 * An entry's JSON, made by whoever already holds parts of it serialised (the engine reuses
 * each instance's cached JSON, see entryJson), handed to the log just before that entry is
 * appended, so that the log does not serialise the instances again. One slot, not a map:
 * the engine appends the entry right after handing its JSON over, and an entry whose
 * encoding is deferred (a full queue) is simply serialised later. The entry itself is not
 * touched, so JSON.stringify, replay and comparisons never see the text.
 */
const handed: { entry: Entry | null; json: string } = { entry: null, json: '' };

/** Gives the next append of `entry` its JSON text (it must parse to the same entry). */
export function setEntryJson(entry: Entry, json: string): void {
  handed.entry = entry;
  handed.json = json;
}

function handedJson(entry: Entry): string | undefined {
  if (handed.entry !== entry) return undefined;
  const json = handed.json;
  handed.entry = null;
  handed.json = '';
  return json;
}

interface EncodedPayload {
  text: string;
  bytes: number;
}

/** The record's text and its UTF-8 length; the bytes are written once, into the batch buffer. */
function encodePayload(entry: Entry): EncodedPayload {
  const text = handedJson(entry) ?? JSON.stringify(entry);
  const bytes = Buffer.byteLength(text, 'utf8');
  if (bytes > MAX_FRAME_PAYLOAD_BYTES) throw new Error(`a log record of ${bytes} bytes exceeds the largest frame (${MAX_FRAME_PAYLOAD_BYTES} bytes)`);
  return { text, bytes };
}

const PUT_HEAD = '{"op":"put","instance":';

type PutChange = Extract<Entry['changes'][number], { op: 'put' }>;
type PutRest = Exclude<keyof PutChange, 'op' | 'instance'>;
/** The fields of a put after its instance, all of them: the object's type makes a field added to a put fail to compile until it is listed. */
const PUT_REST_FIELDS: Record<PutRest, true> = { specs: true, reason: true, detail: true, repl: true };
const PUT_REST = Object.keys(PUT_REST_FIELDS) as PutRest[];

/** A put's JSON around its instance's cached text, field by field (no copy of the change to serialise). */
function putJson(c: PutChange, instance: string): string {
  let text = `${PUT_HEAD}${instance}`;
  for (const k of PUT_REST) {
    const v = c[k];
    // As JSON.stringify does: a field that is undefined is left out.
    if (v !== undefined) text += `,"${k}":${JSON.stringify(v)}`;
  }
  return `${text}}`;
}
const CHANGES_PLACEHOLDER = '"changes":0';

/**
 * The JSON of an entry, equal (once parsed) to JSON.stringify(entry), with the instance of
 * each put taken from `instanceJson` when it has it (the instance exactly as stored,
 * serialised once by the registry) instead of being serialised again.
 */
export function entryJson(entry: Entry, instanceJson: (change: Extract<Entry['changes'][number], { op: 'put' }>) => string | undefined): string {
  let changes = '';
  for (const c of entry.changes) {
    let text: string | undefined;
    if (c.op === 'put') {
      const cached = instanceJson(c);
      if (cached !== undefined) text = putJson(c, cached);
    }
    changes += (changes === '' ? '' : ',') + (text ?? JSON.stringify(c));
  }
  const head = JSON.stringify({ ...entry, changes: 0 });
  const at = head.indexOf(CHANGES_PLACEHOLDER);
  if (at < 0) return JSON.stringify(entry);
  return `${head.slice(0, at)}"changes":[${changes}]${head.slice(at + CHANGES_PLACEHOLDER.length)}`;
}
