/**
 * What may be deleted once a snapshot is durable. The newest two snapshots are kept, and
 * the log from the older of them on: if the newest snapshot is ever found damaged,
 * `storage repair` moves it aside and the node recovers everything from the older one
 * plus the log. The cost is about one snapshot interval of log on disk. With a single
 * snapshot nothing is trimmed yet, for the same reason.
 */
import { readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { fsyncDir, isErrno } from './fsutil.js';
import { classifyFiles, type DataFiles, type NamedFile } from './layout.js';
import type { StorageLogger } from './logger.js';

/** Snapshots kept (the newest first); the log is kept from the oldest kept one on. */
export const SNAPSHOTS_KEPT = 2;

export interface Trimmable {
  segments: NamedFile[];
  snapshots: NamedFile[];
}

/** The files that retention allows deleting, given everything in the directory. */
export function trimmable(files: DataFiles): Trimmable {
  const kept = files.snapshots.slice(-SNAPSHOTS_KEPT);
  if (kept.length < SNAPSHOTS_KEPT) return { segments: [], snapshots: [] };
  const baseLsn = (kept[0] as NamedFile).seq;
  const segments: NamedFile[] = [];
  const segs = files.segments;
  // A segment is unneeded when the next one starts at or before the first LSN needed.
  for (let i = 0; i + 1 < segs.length && (segs[i + 1] as NamedFile).seq <= baseLsn + 1; i++) segments.push(segs[i] as NamedFile);
  return { segments, snapshots: files.snapshots.slice(0, -SNAPSHOTS_KEPT) };
}

/** Deletes what retention allows; returns how many files went. */
export async function trimDataDir(dir: string, logger: StorageLogger): Promise<number> {
  const t = trimmable(classifyFiles(await readdir(dir)));
  const doomed = [...t.snapshots, ...t.segments];
  for (const f of doomed) {
    await unlink(join(dir, f.name)).catch((err) => {
      if (!isErrno(err, 'ENOENT')) throw err;
    });
  }
  if (doomed.length > 0) {
    // Not needed for safety (recovery skips covered files), but keeps the count honest.
    await fsyncDir(dir);
    logger.info({ dir, segments: t.segments.map((f) => f.name), snapshots: t.snapshots.map((f) => f.name) }, 'trimmed the log behind the snapshots');
  }
  return doomed.length;
}
