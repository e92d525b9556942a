/**
 * `switchboard storage repair`: keeps everything before the first damage and moves the
 * rest aside into DIR/damaged-<time>/, so that the node can start again. Damaged
 * snapshots are moved aside whole (the previous snapshot and the log kept behind it take
 * over); a damaged log segment is cut at the bad frame, its remaining bytes saved as
 * "<segment>.from-<offset>", and every later segment moved aside whole. Nothing is
 * deleted: an operator (or a later tool) can still examine what was moved.
 */
import { mkdir, open, readdir, rename, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { FILE_HEADER_BYTES } from './file-header.js';
import { DIR_MODE, FILE_MODE, fsyncDir, writeAll } from './fsutil.js';
import { classifyFiles, damagedDirName, type NamedFile } from './layout.js';
import { acquireLock } from './lock.js';
import type { StorageLogger } from './logger.js';
import { readMeta } from './meta.js';
import { epochFromFiles } from './recovery.js';
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
}

class Mover {
  readonly moved: string[] = [];
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

  async moveWhole(name: string): Promise<void> {
    await this.prepare();
    await rename(join(this.dir, name), join(this.target, name));
    this.moved.push(name);
  }

  /** Saves bytes [offset, end) of a segment aside, then cuts the segment at offset. */
  async cutTail(name: string, offset: number): Promise<number> {
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
async function repairSnapshots(dir: string, snapshots: NamedFile[], mover: Mover, found: Damage[]): Promise<NamedFile | null> {
  for (const f of [...snapshots].reverse()) {
    try {
      await readSnapshotFile(dir, f.name, f.seq);
      return f;
    } catch (err) {
      if (!(err instanceof SnapshotDamageError)) throw err;
      found.push({ file: f.name, offset: err.offset, bytes: 0, reason: err.reason, torn: false });
      await mover.moveWhole(f.name);
    }
  }
  return null;
}

export async function repairDataDir(dir: string, logger: StorageLogger, now = new Date()): Promise<RepairReport> {
  const lock = await acquireLock(dir, logger);
  try {
    const files = classifyFiles(await readdir(dir));
    const epoch = (await readMeta(dir))?.epoch ?? (await epochFromFiles(dir, files));
    const mover = new Mover(dir, join(dir, damagedDirName(now)));
    const damage: Damage[] = [];
    const snap = await repairSnapshots(dir, files.snapshots, mover, damage);
    const scan = await scanLog(dir, files.segments, snap?.seq ?? 0, epoch);
    let cut: RepairReport['cut'] = null;
    if (scan.damage) {
      damage.push(scan.damage);
      const d = scan.damage;
      if (d.offset < FILE_HEADER_BYTES) await mover.moveWhole(d.file);
      else cut = { file: d.file, offset: d.offset, bytes: await mover.cutTail(d.file, d.offset) };
      for (const f of scan.unread) await mover.moveWhole(f.name);
    }
    await mover.finish();
    const kept = scan.segments.reduce((n, s) => n + s.records, 0);
    const report: RepairReport = { dir, movedTo: mover.moved.length > 0 ? mover.target : null, moved: mover.moved, cut, damage, snapshot: snap?.name ?? null, keptRecords: kept, lastLsn: scan.lastLsn };
    if (report.movedTo) logger.warn({ ...report }, 'repaired the data directory: damaged parts moved aside');
    return report;
  } finally {
    await lock.release();
  }
}
