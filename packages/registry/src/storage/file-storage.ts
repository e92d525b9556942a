/**
 * Durable storage in a data directory: a write-ahead log with group commit (wal.ts),
 * checksummed snapshots (snapshot.ts), recovery (recovery.ts) and a directory lock
 * (lock.ts). The file formats and the failure behaviour are described in docs/storage.md.
 */
import { resolve } from 'node:path';
import type { FileHandle } from 'node:fs/promises';
import type { Entry, Snapshot } from '../core/entry.js';
import { ensureDir } from './fsutil.js';
import { acquireLock, type DirLock, type LockTiming } from './lock.js';
import { stderrLogger, type StorageLogger } from './logger.js';
import { setRevisionFloor } from './meta.js';
import { recover } from './recovery.js';
import { trimDataDir } from './retention.js';
import { writeSnapshotFile } from './snapshot.js';
import type { StorageObserver } from './observer.js';
import type { InstanceJson, Recovered, Storage } from './storage.js';
import { WalWriter, type WalLimits, type WalStats } from './wal.js';

export interface FileStorageLimits extends WalLimits {
  /**
   * A snapshot is due after this many records since the last one (or the bytes below),
   * but never before the log since the last one is as large as that snapshot was.
   */
  snapshotEveryRecords: number;
  /** ... or after this many bytes of log since the last one. */
  snapshotEveryBytes: number;
}

const MiB = 1024 * 1024;

/**
 * How far revisions jump after a crash: more than the writes a process can have applied
 * without their being durable (MAX_PENDING_WRITES client writes, and the node's own lease
 * expiries and check results meanwhile).
 */
export const UNCLEAN_STOP_REVISION_GAP = 1_000_000;

export const DEFAULT_FILE_STORAGE_LIMITS: Readonly<FileStorageLimits> = {
  // Replaying 50,000 records takes about 1.5 s on a loaded 2-core machine (docs/storage.md,
  // "Measured"); snapshotting much more often would cost more than it saves at restart.
  snapshotEveryRecords: 50_000,
  snapshotEveryBytes: 64 * MiB,
  // Large enough that a full batch amortises the fsync (about a millisecond of sequential
  // write on an SSD), small enough that the batch buffer is not a memory concern.
  maxBatchBytes: 4 * MiB,
  // Bounds the encoded-but-unwritten bytes: several batches, so the next batch is ready
  // while the current fsync runs.
  maxPendingBytes: 32 * MiB,
  // Segments are read whole at recovery; this keeps each read a modest buffer.
  segmentMaxBytes: 64 * MiB,
};

export interface FileStorageOptions extends Partial<FileStorageLimits> {
  dataDir: string;
  logger?: StorageLogger;
  /** Tests only: replaces fdatasync to inject faults. */
  sync?: (fh: FileHandle) => Promise<void>;
  /** Tests only: shorter lock refreshes and staleness than LOCK_HEARTBEAT_MS and LOCK_STALE_MS. */
  lockTiming?: LockTiming;
  /** Told about each group commit of the log (metrics); optional. */
  observer?: StorageObserver;
}

export interface FileStorageStats extends WalStats {
  snapshotsWritten: number;
  lastSnapshotLsn: number;
}

export class FileStorage implements Storage {
  readonly durable = true;
  readonly location: string;
  private readonly limits: FileStorageLimits;
  private readonly logger: StorageLogger;
  private wal: WalWriter | null = null;
  private lock: DirLock | null = null;
  /** Set when this directory's lock was found taken by another process. */
  private lockLost: Error | null = null;
  private epoch = '';
  /** Records and bytes counted at the last snapshot, to tell when the next is due. */
  private mark = { appends: 0, bytes: 0 };
  private snapshotChain: Promise<void> = Promise.resolve();
  private snapshotsWritten = 0;
  private lastSnapshotLsn = 0;
  /** The size of the last snapshot written or loaded (bytes). */
  private lastSnapshotBytes = 0;

  constructor(private readonly opts: FileStorageOptions) {
    this.location = resolve(opts.dataDir);
    this.logger = opts.logger ?? stderrLogger;
    this.limits = { ...DEFAULT_FILE_STORAGE_LIMITS, ...definedOnly(opts) };
  }

  async open(newEpoch: () => string): Promise<Recovered> {
    if (this.wal) throw new Error(`storage ${this.location} is already open`);
    await ensureDir(this.location);
    // Another process that took this directory (it judged this one stopped) gets it alone:
    // from then on nothing more is written here, and the node, whose writes fail, stops.
    this.lock = await acquireLock(this.location, this.logger, { onLost: (why) => (this.lockLost = new Error(`${why}; this node writes nothing more to ${this.location}`)), ...(this.opts.lockTiming ? { timing: this.opts.lockTiming } : {}) });
    try {
      const rec = await recover(this.location, newEpoch, this.logger);
      const wal = await WalWriter.open({ ...this.limits, dir: this.location, epoch: rec.epoch, sync: this.opts.sync, observer: this.opts.observer }, rec.tail, rec.lastLsn);
      this.wal = wal;
      this.epoch = rec.epoch;
      this.lastSnapshotLsn = rec.snapshotLsn;
      this.lastSnapshotBytes = rec.snapshotBytes;
      // Records replayed at start count toward the next snapshot, so restarts do not let the log grow without bound.
      this.mark = { appends: -rec.entries.length, bytes: -rec.entryBytes };
      const floor = this.lock.tookOver ? await this.floorAfterCrash(rec) : rec.revisionFloor;
      return { epoch: rec.epoch, snapshot: rec.snapshot, entries: rec.entries, ...(floor > 0 ? { revisionFloor: floor } : {}) };
    } catch (err) {
      await this.releaseLock();
      throw err;
    }
  }

  /**
   * After a crash: reads may have answered revisions of writes that were applied but not
   * yet durable, and those revisions must not name other changes now (a watcher resuming
   * from one would skip them; an ETag would match another answer). Revisions continue past
   * every revision the crashed process can have handed out, and the floor is kept in
   * meta.json before anything is written, so that a second crash cannot reuse them either.
   * Positions below it get a reset (the engine's event log starts at the floor).
   */
  private async floorAfterCrash(rec: Awaited<ReturnType<typeof recover>>): Promise<number> {
    const last = rec.entries.length > 0 ? (rec.entries[rec.entries.length - 1] as Entry).revision : (rec.snapshot?.revision ?? 0);
    const floor = Math.max(last, rec.revisionFloor) + UNCLEAN_STOP_REVISION_GAP;
    await setRevisionFloor(this.location, rec.epoch, floor);
    this.logger.warn({ dir: this.location, revision: last, continuesFrom: floor }, `the last stop was not clean: revisions continue from ${floor}, past any that reads may have shown before the crash; watchers resume with a reset`);
    return floor;
  }

  append(entry: Entry): Promise<void> {
    if (!this.wal) return Promise.reject(new Error(`storage ${this.location} is not open`));
    if (this.lockLost) return Promise.reject(this.lockLost);
    return this.wal.append(entry);
  }

  snapshotDue(): boolean {
    if (!this.wal) return false;
    const s = this.wal.stats;
    const bytes = s.bytesEncoded - this.mark.bytes;
    // A snapshot rewrites the whole registry. Waiting until the log has grown as large as
    // the last one keeps its cost per record bounded however large the registry is (a
    // registry of 200,000 instances is not rewritten every 50,000 records), and the log
    // replayed at start stays within about the size of the snapshot read before it.
    // snapshotEveryBytes still bounds the log whatever the last snapshot's size (a registry
    // that shrank after a large snapshot is not left to grow a log as large as it was).
    if (bytes >= this.limits.snapshotEveryBytes) return true;
    if (bytes < this.lastSnapshotBytes) return false;
    return s.appends - this.mark.appends >= this.limits.snapshotEveryRecords;
  }

  /**
   * Cuts the log now (this tick: the snapshot holds exactly the entries appended so far),
   * then saves the snapshot in the background and trims what it covers.
   */
  writeSnapshot(snapshot: Snapshot, instanceJson?: InstanceJson): Promise<void> {
    const wal = this.wal;
    if (!wal) return Promise.reject(new Error(`storage ${this.location} is not open`));
    if (this.lockLost) return Promise.reject(this.lockLost);
    if (snapshot.epoch !== this.epoch) return Promise.reject(new Error(`snapshot of epoch ${snapshot.epoch} given to a directory of epoch ${this.epoch}`));
    const cut = wal.cut();
    this.mark = { appends: wal.stats.appends, bytes: wal.stats.bytesEncoded };
    const run = this.snapshotChain.then(() => this.saveSnapshot(snapshot, cut, instanceJson));
    this.snapshotChain = run.catch(() => undefined);
    return run;
  }

  async close(): Promise<void> {
    await this.snapshotChain;
    const wal = this.wal;
    this.wal = null;
    await wal?.close();
    await this.releaseLock();
  }

  get stats(): FileStorageStats {
    const wal = this.wal?.stats ?? { appends: 0, writes: 0, fsyncs: 0, bytesWritten: 0, bytesEncoded: 0, segmentsCreated: 0, deferredAppends: 0 };
    return { ...wal, snapshotsWritten: this.snapshotsWritten, lastSnapshotLsn: this.lastSnapshotLsn };
  }

  private async saveSnapshot(snapshot: Snapshot, cut: { lsn: number; done: Promise<void> }, instanceJson?: InstanceJson): Promise<void> {
    // The old segment must be complete before the files it shares with the snapshot go.
    await cut.done;
    if (cut.lsn <= this.lastSnapshotLsn) return; // nothing logged since the last one
    const started = performance.now();
    const file = await writeSnapshotFile(this.location, cut.lsn, snapshot, undefined, instanceJson);
    this.snapshotsWritten++;
    this.lastSnapshotLsn = cut.lsn;
    this.lastSnapshotBytes = file.bytes;
    this.logger.info({ file: file.name, bytes: file.bytes, lsn: cut.lsn, revision: snapshot.revision, instances: snapshot.instances.length, ms: Math.round(performance.now() - started) }, 'snapshot written');
    await trimDataDir(this.location, this.logger);
  }

  private async releaseLock(): Promise<void> {
    const lock = this.lock;
    this.lock = null;
    await lock?.release();
  }
}

function definedOnly(opts: Partial<FileStorageLimits>): Partial<FileStorageLimits> {
  const out: Partial<FileStorageLimits> = {};
  for (const k of Object.keys(DEFAULT_FILE_STORAGE_LIMITS) as (keyof FileStorageLimits)[]) {
    const v = opts[k];
    if (v !== undefined) {
      if (!Number.isInteger(v) || v <= 0) throw new Error(`storage limit ${k} must be a positive integer, got ${v}`);
      out[k] = v;
    }
  }
  return out;
}
