/** File system steps that durability depends on. */
import { constants } from 'node:fs';
import { mkdir, open, rename, type FileHandle } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { TEMP_SUFFIX } from './layout.js';

/** Data files are private to the agent's user. */
export const FILE_MODE = 0o600;
export const DIR_MODE = 0o700;

/**
 * Makes a directory's entries (created, renamed or removed files) durable. A file's own
 * fsync does not cover the entry that names it.
 */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Creates the directory (mode 0700, and any missing parents) and makes the new entries durable. */
export async function ensureDir(dir: string): Promise<void> {
  const created = await mkdir(dir, { recursive: true, mode: DIR_MODE });
  if (created === undefined) return;
  const first = resolve(created);
  for (let p = resolve(dir); ; p = dirname(p)) {
    await fsyncDir(dirname(p));
    if (p === first || dirname(p) === p) return;
  }
}

/** Writes all of `buf` at `position`; a positional write may write less than asked. */
export async function writeAll(fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, position + done);
    if (bytesWritten <= 0) throw new Error(`write returned ${bytesWritten} bytes`);
    done += bytesWritten;
  }
}

/**
 * Replaces `path` with `data` so that a crash leaves either the old or the new content:
 * write a temporary file, fsync it, rename it over the target, fsync the directory.
 */
export async function writeFileAtomic(path: string, data: Buffer): Promise<void> {
  const tmp = path + TEMP_SUFFIX;
  const fh = await open(tmp, 'w', FILE_MODE);
  try {
    await writeAll(fh, data, 0);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  await fsyncDir(dirname(path));
}

export function isErrno(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === code;
}
