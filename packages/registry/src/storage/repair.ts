/**
 * `switchboard storage repair`: keeps everything before the first damage and moves the
 * rest aside into DIR/damaged-<time>/, so that the node can start again. Damaged
 * snapshots are moved aside whole (the previous snapshot and the log kept behind it take
 * over); a damaged log segment is cut at the bad frame, its remaining bytes saved as
 * "<segment>.from-<offset>", and every later segment moved aside whole. Nothing is
 * deleted: an operator (or a later tool) can still examine what was moved.
 */
import { mkdir, open, readdir, rename, stat, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { FILE_HEADER_BYTES } from './file-header.js';
import { DIR_MODE, FILE_MODE, fsyncDir, writeAll } from './fsutil.js';
import { classifyFiles, damagedDirName, type NamedFile } from './layout.js';
import { UNCLEAN_STOP_REVISION_GAP } from './file-storage.js';
import { acquireLock } from './lock.js';
import type { StorageLogger } from './logger.js';
import { FRAME_HEADER_BYTES } from './record.js';
import { readMeta, setRevisionFloor } from './meta.js';
import { epochFromFiles } from './recovery.js';
import type { Frame } from './record.js';
import { scanLog, type Damage } from './scan.js';
import { SnapshotDamageError, readSnapshotFile } from './snapshot.js';

export interface RepairReport {
  dir: string;
  /** Where the damaged parts went; null when nothing needed repair. */
  movedTo: string | null;
  /** Files moved aside whole, and tails saved from a cut segment. */
  moved: string[];
  /** The segment cut at the damage, if any. */
  cut: { file: string; offset: number; bytes: number } | null;
  damage: Damage[];
  /** The snapshot recovery now starts from, and the records after it. */
  snapshot: string | null;
  keptRecords: number;
  lastLsn: number;
  /**
   * When log records were moved aside: the revision the registry starts at from now on
   * (kept in meta.json; the next change takes the one after it), at or above any the moved
   * records can have had, so that no revision a client saw
   * (a watch position, an ETag, a blocking query's index) is given to another change.
   */
  revisionFloor: number | null;
}

class Mover {
  readonly moved: string[] = [];
  /** The highest LSN the moved data can hold (a frame is at least FRAME_HEADER_BYTES). */
  highestLsn = 0;
  private ready = false;
  constructor(
    readonly dir: string,
    readonly target: string,
  ) {}

  private async prepare(): Promise<void> {
    if (this.ready) return;
    await mkdir(this.target, { mode: DIR_MODE });
    await fsyncDir(this.dir);
    this.ready = true;
  }

  /** Moves a file aside; `seq` is its first LSN (a segment) or the LSN it covers (a snapshot). */
  async moveWhole(name: string, seq: number, kind: 'segment' | 'snapshot'): Promise<void> {
    await this.prepare();
    const size = kind === 'segment' ? (await stat(join(this.dir, name))).size : 0;
    this.highestLsn = Math.max(this.highestLsn, kind === 'segment' ? seq + Math.ceil(size / FRAME_HEADER_BYTES) : seq);
    await rename(join(this.dir, name), join(this.target, name));
    this.moved.push(name);
  }

  /** Saves bytes [offset, end) of a segment aside, then cuts the segment at offset (after LSN `lastLsn`). */
  async cutTail(name: string, offset: number, lastLsn: number): Promise<number> {
    await this.prepare();
    const src = await open(join(this.dir, name), 'r+');
    try {
      const { size } = await src.stat();
      const tail = Buffer.alloc(size - offset);
      await src.read(tail, 0, tail.length, offset);
      const saved = `${name}.from-${offset}`;
      const out = await open(join(this.target, saved), 'wx', FILE_MODE);
      try {
        await writeAll(out, tail, 0);
        await out.sync();
      } finally {
        await out.close();
      }
      this.moved.push(saved);
      this.highestLsn = Math.max(this.highestLsn, lastLsn + Math.ceil(tail.length / FRAME_HEADER_BYTES));
      await truncate(join(this.dir, name), offset);
      await src.sync();
      return tail.length;
    } finally {
      await src.close();
    }
  }

  async finish(): Promise<void> {
    if (!this.ready) return;
    await fsyncDir(this.target);
    await fsyncDir(this.dir);
  }
}

/** Moves damaged snapshots aside, newest first, until an intact one is found. */
async function repairSnapshots(dir: string, snapshots: NamedFile[], mover: Mover, found: Damage[]): Promise<{ file: NamedFile; revision: number } | null> {
  for (const f of [...snapshots].reverse()) {
    try {
      const loaded = await readSnapshotFile(dir, f.name, f.seq);
      return { file: f, revision: loaded.snapshot.revision };
    } catch (err) {
      if (!(err instanceof SnapshotDamageError)) throw err;
      found.push({ file: f.name, offset: err.offset, bytes: 0, reason: err.reason, torn: false });
      await mover.moveWhole(f.name, f.seq, 'snapshot');
    }
  }
  return null;
}

export async function repairDataDir(dir: string, logger: StorageLogger, now = new Date()): Promise<RepairReport> {
  const lock = await acquireLock(dir, logger);
  try {
    const files = classifyFiles(await readdir(dir));
    const meta = await readMeta(dir);
    const epoch = meta?.epoch ?? (await epochFromFiles(dir, files));
    const mover = new Mover(dir, join(dir, damagedDirName(now)));
    const damage: Damage[] = [];
    const snap = await repairSnapshots(dir, files.snapshots, mover, damage);
    // The highest revision kept: the snapshot's, or a kept record's.
    let keptRevision = snap?.revision ?? 0;
    const onRecord = (f: Frame): void => {
      try {
        keptRevision = Math.max(keptRevision, Number((JSON.parse(f.payload.toString('utf8')) as { revision?: unknown }).revision) || 0);
      } catch {
        /* a record that passed its checksum is the writer's JSON; recovery reports it if not */
      }
    };
    const scan = await scanLog(dir, files.segments, snap?.file.seq ?? 0, epoch, onRecord);
    let cut: RepairReport['cut'] = null;
    if (scan.damage) {
      damage.push(scan.damage);
      const d = scan.damage;
      const seg = files.segments.find((f) => f.name === d.file);
      if (d.offset < FILE_HEADER_BYTES) await mover.moveWhole(d.file, seg?.seq ?? scan.lastLsn + 1, 'segment');
      else cut = { file: d.file, offset: d.offset, bytes: await mover.cutTail(d.file, d.offset, scan.lastLsn) };
      // The unread segments after it (when the log's first segment is missing, the damage
      // names the first one there is, which is also the first unread one: moved once).
      for (const f of scan.unread) if (f.name !== d.file) await mover.moveWhole(f.name, f.seq, 'segment');
    }
    await mover.finish();
    // Records moved aside may have been acknowledged, and their revisions seen by clients:
    // the registry starts above any they can have had. Each logged entry adds at most one
    // revision, so the moved LSNs past the last kept one bound how many revisions were lost.
    // (A damaged snapshot whose records the log still holds loses none.)
    let revisionFloor: number | null = null;
    const lost = Math.max(0, mover.highestLsn - scan.lastLsn);
    if (lost > 0) revisionFloor = Math.max(meta?.revisionFloor ?? 0, keptRevision) + lost;
    // A repair of a directory whose agent crashed takes its lock over, and releases it
    // cleanly: it carries the crash's floor over (file-storage.ts, floorAfterCrash), which
    // the next start could no longer tell it needs.
    if (lock.tookOver) revisionFloor = Math.max(revisionFloor ?? 0, meta?.revisionFloor ?? 0, keptRevision) + UNCLEAN_STOP_REVISION_GAP;
    if (revisionFloor !== null && epoch !== null) await setRevisionFloor(dir, epoch, revisionFloor, now);
    const kept = scan.segments.reduce((n, s) => n + s.records, 0);
    const report: RepairReport = { dir, movedTo: mover.moved.length > 0 ? mover.target : null, moved: mover.moved, cut, damage, snapshot: snap?.file.name ?? null, keptRecords: kept, lastLsn: scan.lastLsn, revisionFloor };
    if (report.movedTo) logger.warn({ ...report }, 'repaired the data directory: damaged parts moved aside');
    return report;
  } finally {
    await lock.release();
  }
}
