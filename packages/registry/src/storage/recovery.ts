/**
 * Opening a data directory: find the epoch, load the newest snapshot, replay the log
 * after it, cut off a torn final write, and refuse to start on damage to anything that
 * was acknowledged.
 */
import { open, readdir, truncate, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Entry, Snapshot } from '../core/entry.js';
import { StorageCorruptionError } from './errors.js';
import { FILE_HEADER_BYTES, decodeFileHeader } from './file-header.js';
import { fsyncDir } from './fsutil.js';
import { classifyFiles, type DataFiles } from './layout.js';
import type { StorageLogger } from './logger.js';
import { readMeta, writeMeta } from './meta.js';
import type { Frame } from './record.js';
import { trimDataDir } from './retention.js';
import { scanLog, type Damage, type LogScan } from './scan.js';
import { SnapshotDamageError, readSnapshotFile, type LoadedSnapshot } from './snapshot.js';
import type { WalTail } from './wal.js';

export interface RecoveryResult {
  epoch: string;
  snapshot: Snapshot | null;
  /** The last LSN the snapshot covers (0 without one). */
  snapshotLsn: number;
  /** The snapshot file's size in bytes (0 without one), for the snapshot schedule. */
  snapshotBytes: number;
  entries: Entry[];
  /** Encoded bytes of `entries`, for the snapshot schedule. */
  entryBytes: number;
  lastLsn: number;
  /** The segment to continue writing, or null to start a new one after lastLsn. */
  tail: WalTail | null;
  /** The least revision to start at (set by a repair that moved records aside; 0: none). */
  revisionFloor: number;
}

export async function recover(dir: string, newEpoch: () => string, logger: StorageLogger, now = new Date()): Promise<RecoveryResult> {
  const files = classifyFiles(await readdir(dir));
  await removeTemps(dir, files, logger);
  const epoch = await epochOf(dir, files, newEpoch, logger, now);
  const revisionFloor = (await readMeta(dir))?.revisionFloor ?? 0;
  const loaded = await loadNewestSnapshot(dir, files, epoch);
  const entries: Entry[] = [];
  let entryBytes = 0;
  const onRecord = (f: Frame): void => {
    entries.push(parseEntry(dir, f));
    entryBytes += f.end - f.offset;
  };
  const scan = await scanLog(dir, files.segments, loaded?.lsn ?? 0, epoch, onRecord);
  const removed = scan.damage ? await cutTornTail(dir, scan.damage, logger) : null;
  await trimDataDir(dir, logger);
  return {
    epoch,
    snapshot: loaded?.snapshot ?? null,
    snapshotLsn: loaded?.lsn ?? 0,
    snapshotBytes: loaded?.bytes ?? 0,
    entries,
    entryBytes,
    lastLsn: scan.lastLsn,
    tail: tailOf(scan, removed),
    revisionFloor,
  };
}

/** Leftovers of writes a crash interrupted; we hold the lock, so none is in progress. */
async function removeTemps(dir: string, files: DataFiles, logger: StorageLogger): Promise<void> {
  for (const name of files.temps) await unlink(join(dir, name)).catch(() => undefined);
  if (files.temps.length > 0) logger.info({ dir, files: files.temps }, 'removed temporary files of interrupted writes');
}

/** The directory's epoch: meta.json's, else rebuilt from the data, else a new one. */
async function epochOf(dir: string, files: DataFiles, newEpoch: () => string, logger: StorageLogger, now: Date): Promise<string> {
  const meta = await readMeta(dir);
  if (meta) return meta.epoch;
  const found = await epochFromFiles(dir, files);
  if (found === null) return (await writeMeta(dir, newEpoch(), now)).epoch;
  logger.warn({ dir, epoch: found }, 'meta.json is missing; rebuilt it with the epoch found in the data files');
  await writeMeta(dir, found, now);
  return found;
}

/** The epoch in the header of the first readable snapshot or segment. */
export async function epochFromFiles(dir: string, files: DataFiles): Promise<string | null> {
  for (const f of [...files.snapshots, ...files.segments]) {
    const kind = f.name.startsWith('snap-') ? 'snapshot' : 'segment';
    const fh = await open(join(dir, f.name), 'r');
    try {
      const { buffer } = await fh.read(Buffer.alloc(FILE_HEADER_BYTES), 0, FILE_HEADER_BYTES, 0);
      const h = decodeFileHeader(buffer, kind);
      if (!('error' in h)) return h.epoch;
    } finally {
      await fh.close();
    }
  }
  return null;
}

async function loadNewestSnapshot(dir: string, files: DataFiles, epoch: string): Promise<LoadedSnapshot | null> {
  const newest = files.snapshots[files.snapshots.length - 1];
  if (!newest) return null;
  let loaded: LoadedSnapshot;
  try {
    loaded = await readSnapshotFile(dir, newest.name, newest.seq);
  } catch (err) {
    if (err instanceof SnapshotDamageError) throw new StorageCorruptionError(dir, err.file, err.offset, `snapshot: ${err.reason}`);
    throw err;
  }
  if (loaded.snapshot.epoch !== epoch) {
    throw new StorageCorruptionError(dir, newest.name, 0, `snapshot of epoch ${loaded.snapshot.epoch} in a directory of epoch ${epoch}`);
  }
  return loaded;
}

function parseEntry(dir: string, f: Frame): Entry {
  try {
    return JSON.parse(f.payload.toString('utf8')) as Entry;
  } catch (err) {
    // The checksum matched, so the writer wrote this: a bug, not a disk fault.
    throw new Error(`log record LSN ${f.seq} in ${dir} passed its checksum but is not JSON: ${(err as Error).message}`);
  }
}

/**
 * Cuts a torn final write off the last segment, or removes that segment if even its
 * header is torn (returning its name); throws on any other damage.
 */
async function cutTornTail(dir: string, damage: Damage, logger: StorageLogger): Promise<string | null> {
  if (!damage.torn) throw new StorageCorruptionError(dir, damage.file, damage.offset, damage.reason);
  const path = join(dir, damage.file);
  const info = { file: path, offset: damage.offset, bytesDropped: damage.bytes, reason: damage.reason };
  if (damage.offset < FILE_HEADER_BYTES) {
    await unlink(path);
    await fsyncDir(dir);
    logger.warn(info, 'removed a log segment whose creation was interrupted by a crash (it held no acknowledged write)');
    return damage.file;
  }
  await truncate(path, damage.offset);
  const fh = await open(path, 'r+');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
  logger.warn(info, 'cut off a torn write at the end of the log (a crash interrupted it; it was never acknowledged)');
  return null;
}

function tailOf(scan: LogScan, removed: string | null): WalTail | null {
  const last = scan.segments[scan.segments.length - 1];
  if (!last || !last.header || last.name === removed) return null;
  return { name: last.name, firstLsn: last.header.seq, size: last.validEnd };
}
