/**
 * The data directory lock: a LOCK file holding the owner's pid, so that two agents (or
 * an agent and `storage repair`) never write one directory. It is created complete, by
 * hard-linking a fully written temporary file to LOCK (link fails if LOCK exists), so a
 * reader never sees an empty lock. A lock whose pid is no longer running is taken over;
 * two processes that take over the same stale lock at the very same moment are not
 * excluded (there is no portable flock in Node), which the docs say.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { link, readFile, unlink, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { FILE_MODE, isErrno } from './fsutil.js';
import { LOCK_FILE, TEMP_SUFFIX } from './layout.js';
import type { StorageLogger } from './logger.js';

export class DirectoryLockedError extends Error {
  constructor(
    readonly dir: string,
    readonly pid: number,
  ) {
    super(
      `data directory ${dir} is in use by process ${pid} (${join(dir, LOCK_FILE)}): ` +
        'stop that agent first, or use another --data-dir; if pid ' + pid + ' is not a switchboard process, remove the LOCK file',
    );
    this.name = 'DirectoryLockedError';
  }
}

export interface DirLock {
  readonly path: string;
  release(): Promise<void>;
}

/** Locks held by this process: its own pid in a LOCK file is stale unless listed here. */
const held = new Set<string>();

/** Whether a process runs under `pid`; a zombie (dead, not yet reaped) does not count. */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return isErrno(err, 'EPERM'); // alive, owned by another user
  }
  return !isZombie(pid);
}

function isZombie(pid: number): boolean {
  try {
    // /proc/<pid>/stat is "pid (comm) state ..."; comm may hold spaces and parentheses.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z';
  } catch {
    return false; // no /proc (not Linux): trust kill(0)
  }
}

async function tryCreate(path: string): Promise<boolean> {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}${TEMP_SUFFIX}`;
  await writeFile(tmp, `${process.pid}\n`, { mode: FILE_MODE });
  try {
    await link(tmp, path);
    return true;
  } catch (err) {
    // ENOENT: a process that holds the lock cleared our temporary file; it is taken.
    if (isErrno(err, 'EEXIST') || isErrno(err, 'ENOENT')) return false;
    throw err;
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}

async function ownerOf(path: string): Promise<number | null> {
  try {
    const pid = Number.parseInt(await readFile(path, 'utf8'), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return null;
    throw err;
  }
}

export async function acquireLock(dir: string, logger: StorageLogger): Promise<DirLock> {
  const path = resolve(dir, LOCK_FILE);
  if (held.has(path)) throw new DirectoryLockedError(dir, process.pid);
  for (let attempt = 0; attempt < 2; attempt++) {
    if (await tryCreate(path)) {
      held.add(path);
      return { path, release: () => releaseLock(path) };
    }
    const pid = await ownerOf(path);
    // Our own pid can only be a previous incarnation's (containers reuse pid 1).
    if (pid !== null && pid !== process.pid && pidAlive(pid)) throw new DirectoryLockedError(dir, pid);
    logger.warn({ file: path, pid }, 'taking over a stale data directory lock: its process is not running');
    await unlink(path).catch((err) => {
      if (!isErrno(err, 'ENOENT')) throw err;
    });
  }
  const pid = await ownerOf(path);
  throw new DirectoryLockedError(dir, pid ?? -1);
}

async function releaseLock(path: string): Promise<void> {
  if (!held.delete(path)) return;
  await unlink(path).catch((err) => {
    if (!isErrno(err, 'ENOENT')) throw err;
  });
}
