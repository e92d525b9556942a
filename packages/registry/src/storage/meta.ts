/**
 * meta.json: the format and epoch of a data directory. It is written once, atomically,
 * before the first segment, so a directory that has data always has its epoch; segment
 * headers and snapshots repeat the epoch, which lets recovery rebuild a lost meta.json and
 * refuse files copied in from another directory.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FORMAT_VERSION } from './file-header.js';
import { isErrno, writeFileAtomic } from './fsutil.js';
import { META_FILE } from './layout.js';

export interface Meta {
  format: number;
  epoch: string;
  /** ISO time the directory was created or its meta rebuilt; for operators only. */
  createdAt: string;
  /**
   * Set by `storage repair` when it moved acknowledged records aside: the registry starts at
   * this revision at least, so that no revision a client saw is given to another change.
   */
  revisionFloor?: number;
}

export async function readMeta(dir: string): Promise<Meta | null> {
  const path = join(dir, META_FILE);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return null;
    throw err;
  }
  let meta: unknown;
  try {
    meta = JSON.parse(text);
  } catch (err) {
    throw new Error(`${path} is not valid JSON (${(err as Error).message}); remove it and the epoch is rebuilt from the log`);
  }
  const m = meta as Partial<Meta>;
  if (typeof m.epoch !== 'string' || m.format !== FORMAT_VERSION) {
    throw new Error(`${path} must hold {"format": ${FORMAT_VERSION}, "epoch": "..."}; remove it and the epoch is rebuilt from the log`);
  }
  const out: Meta = { format: m.format, epoch: m.epoch, createdAt: String(m.createdAt ?? '') };
  if (typeof m.revisionFloor === 'number' && Number.isSafeInteger(m.revisionFloor) && m.revisionFloor > 0) out.revisionFloor = m.revisionFloor;
  return out;
}

export async function writeMeta(dir: string, epoch: string, now: Date, revisionFloor?: number): Promise<Meta> {
  const meta: Meta = { format: FORMAT_VERSION, epoch, createdAt: now.toISOString(), ...(revisionFloor ? { revisionFloor } : {}) };
  await writeFileAtomic(join(dir, META_FILE), Buffer.from(JSON.stringify(meta, null, 2) + '\n'));
  return meta;
}

/**
 * Keeps `revisionFloor` in meta.json (a crash, a repair that moved records aside): the
 * node starts at it or above. The rest of the file (its creation time) stays as it was.
 */
export async function setRevisionFloor(dir: string, epoch: string, revisionFloor: number, now = new Date()): Promise<void> {
  const meta = await readMeta(dir);
  const createdAt = meta?.createdAt || now.toISOString();
  const out: Meta = { format: FORMAT_VERSION, epoch, createdAt, revisionFloor };
  await writeFileAtomic(join(dir, META_FILE), Buffer.from(JSON.stringify(out, null, 2) + '\n'));
}
