/**
 * The data directory lock: a LOCK file holding the owner's pid, so that two agents (or
 * an agent and `storage repair`) never write one directory. It is created complete, by
 * hard-linking a fully written temporary file to LOCK (link fails if LOCK exists), so a
 * reader never sees an empty lock.
 *
 * A pid says whether its process runs only in the PID namespace and boot it was taken in:
 * two containers that mount one directory may both run the agent as pid 1, and a pid of
 * another namespace is not running in ours. So the lock also names its namespace, boot
 * and host (on a second line: an older agent reads the pid of the first), and the owner
 * refreshes the file's time every LOCK_HEARTBEAT_MS. A lock of our namespace and boot is
 * stale when its process is gone; any other when it was not refreshed for LOCK_STALE_MS
 * (a start waits that long before it takes over, or refuses). Two processes that take
 * over the same stale lock at the very same moment are not excluded (there is no portable
 * flock in Node), which the docs say.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, readlinkSync } from 'node:fs';
import { link, readFile, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { FILE_MODE, isErrno } from './fsutil.js';
import { LOCK_FILE, TEMP_SUFFIX } from './layout.js';
import type { StorageLogger } from './logger.js';

/** How often the owner refreshes its LOCK's modification time. */
export const LOCK_HEARTBEAT_MS = 2_000;
/** A lock of another PID namespace, boot or host not refreshed for this long is stale. */
export const LOCK_STALE_MS = 10_000;

export class DirectoryLockedError extends Error {
  constructor(
    readonly dir: string,
    readonly pid: number,
    /** Where the owner runs when it is not this process's namespace (a container, another host). */
    readonly elsewhere: string | null = null,
  ) {
    super(
      `data directory ${dir} is in use by process ${pid}${elsewhere ? ` ${elsewhere}` : ''} (${join(dir, LOCK_FILE)}): ` +
        'stop that agent first, or use another --data-dir; ' +
        (elsewhere ? `its lock is refreshed every ${LOCK_HEARTBEAT_MS / 1000} s and taken over ${LOCK_STALE_MS / 1000} s after its owner stops` : `if pid ${pid} is not a switchboard process, remove the LOCK file`),
    );
    this.name = 'DirectoryLockedError';
  }
}

/** Where this process runs: its PID namespace, the boot and the host (null where /proc does not say). */
interface Place {
  pidNs: string | null;
  boot: string | null;
  host: string;
}

let here: Place | undefined;
function thisPlace(): Place {
  const read = (f: () => string): string | null => {
    try {
      return f().trim();
    } catch {
      return null;
    }
  };
  return (here ??= { pidNs: read(() => readlinkSync('/proc/self/ns/pid')), boot: read(() => readFileSync('/proc/sys/kernel/random/boot_id', 'utf8')), host: hostname() });
}

interface Owner {
  pid: number | null;
  /** Null for a lock written by an earlier version (the pid alone). */
  place: Place | null;
  token: string | null;
  /** When the owner last refreshed it (ms since the epoch). */
  refreshedAt: number;
}

function samePlace(a: Place, b: Place): boolean {
  return a.pidNs === b.pidNs && a.boot === b.boot && a.host === b.host;
}

export interface DirLock {
  readonly path: string;
  /** The lock was taken over from an owner that stopped without releasing it (a crash). */
  readonly tookOver: boolean;
  release(): Promise<void>;
}

/** Locks held by this process (its own pid in a LOCK file is stale unless listed here), with their refresh timers. */
const held = new Map<string, NodeJS.Timeout>();

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

async function tryCreate(path: string, token: string): Promise<boolean> {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}${TEMP_SUFFIX}`;
  await writeFile(tmp, `${process.pid}\n${JSON.stringify({ ...thisPlace(), token })}\n`, { mode: FILE_MODE });
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

/** The lock's owner as its file says, or null when there is no LOCK. */
async function ownerOf(path: string): Promise<Owner | null> {
  try {
    const [text, st] = await Promise.all([readFile(path, 'utf8'), stat(path)]);
    const [first = '', second = ''] = text.split('\n');
    const pid = Number.parseInt(first, 10);
    let place: Place | null = null;
    let token: string | null = null;
    try {
      const p = JSON.parse(second) as Partial<Place> & { token?: unknown };
      if (typeof p.host === 'string') place = { pidNs: typeof p.pidNs === 'string' ? p.pidNs : null, boot: typeof p.boot === 'string' ? p.boot : null, host: p.host };
      if (typeof p.token === 'string') token = p.token;
    } catch {
      /* an earlier version's lock: the pid alone */
    }
    return { pid: Number.isInteger(pid) && pid > 0 ? pid : null, place, token, refreshedAt: st.mtimeMs };
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return null;
    throw err;
  }
}

/**
 * Whether the owner may still be running: in our namespace and boot, by its pid; else by
 * its refreshes, waiting (up to LOCK_STALE_MS and a refresh) for an owner that stopped
 * refreshing to go stale rather than refusing a start that follows its end at once.
 */
async function ownerRuns(path: string, owner: Owner, t: LockTiming): Promise<boolean> {
  if (owner.place === null || samePlace(owner.place, thisPlace())) {
    // Our own pid can only be a previous incarnation's (containers reuse pid 1).
    return owner.pid !== null && owner.pid !== process.pid && pidAlive(owner.pid);
  }
  const giveUpAt = Date.now() + t.staleMs + t.heartbeatMs;
  for (;;) {
    const now = await ownerOf(path);
    if (now === null || now.token !== owner.token) return false; // gone or replaced: look again
    if (Date.now() - now.refreshedAt >= t.staleMs) return false;
    if (Date.now() >= giveUpAt) return true;
    await new Promise((r) => setTimeout(r, Math.min(t.heartbeatMs / 4, giveUpAt - Date.now())));
  }
}

/** The lock's timing: LOCK_HEARTBEAT_MS and LOCK_STALE_MS, shorter in tests. */
export interface LockTiming {
  heartbeatMs: number;
  staleMs: number;
}

function describePlace(p: Place): string {
  return p.host !== thisPlace().host ? `on host ${p.host}` : 'in another PID namespace (another container) or before a reboot';
}

export async function acquireLock(dir: string, logger: StorageLogger, opts: { onLost?: (why: string) => void; timing?: LockTiming } = {}): Promise<DirLock> {
  const path = resolve(dir, LOCK_FILE);
  if (held.has(path)) throw new DirectoryLockedError(dir, process.pid);
  const t = opts.timing ?? { heartbeatMs: LOCK_HEARTBEAT_MS, staleMs: LOCK_STALE_MS };
  const token = randomBytes(8).toString('hex');
  let tookOver = false;
  for (let attempt = 0; attempt < 3; attempt++) {
    if (await tryCreate(path, token)) {
      held.set(path, refresher(path, token, logger, t.heartbeatMs, opts.onLost));
      return { path, tookOver, release: () => releaseLock(path, token) };
    }
    const owner = await ownerOf(path);
    if (owner === null) continue; // released meanwhile
    const foreign = owner.place !== null && !samePlace(owner.place, thisPlace());
    if (foreign && Date.now() - owner.refreshedAt < t.staleMs) logger.warn({ file: path, pid: owner.pid, host: owner.place?.host }, `the data directory lock is held ${describePlace(owner.place as Place)}: waiting up to ${(t.staleMs + t.heartbeatMs) / 1000} s for it to go stale`);
    if (await ownerRuns(path, owner, t)) throw new DirectoryLockedError(dir, owner.pid ?? -1, foreign ? describePlace(owner.place as Place) : null);
    const again = await ownerOf(path);
    if (again === null || again.token !== owner.token) continue; // released, or taken by another, meanwhile
    logger.warn({ file: path, pid: owner.pid, ...(foreign ? { host: owner.place?.host } : {}) }, foreign ? `taking over a stale data directory lock: not refreshed for ${t.staleMs / 1000} s` : 'taking over a stale data directory lock: its process is not running');
    await unlink(path).catch((err) => {
      if (!isErrno(err, 'ENOENT')) throw err;
    });
    tookOver = true;
  }
  const owner = await ownerOf(path);
  throw new DirectoryLockedError(dir, owner?.pid ?? -1);
}

/**
 * Refreshes the lock's time every LOCK_HEARTBEAT_MS, after checking it is still ours: a
 * lock found replaced means another process took this directory (it judged us stopped),
 * which `onLost` is told (the agent stops: two writers would corrupt the log).
 */
function refresher(path: string, token: string, logger: StorageLogger, heartbeatMs: number, onLost?: (why: string) => void): NodeJS.Timeout {
  let lost = false;
  const timer = setInterval(() => {
    if (lost) return;
    void ownerOf(path)
      .then(async (owner) => {
        if (owner !== null && owner.token === token) {
          const now = new Date();
          await utimes(path, now, now);
          return;
        }
        lost = true;
        const why = owner === null ? `the data directory lock ${path} was removed` : `the data directory lock ${path} was taken by process ${owner.pid ?? '?'}${owner.place ? ` on ${owner.place.host}` : ''}`;
        logger.warn({ file: path }, `${why}: another process may be writing this directory`);
        onLost?.(why);
      })
      .catch((err: unknown) => logger.warn({ file: path, err: (err as Error).message }, 'could not refresh the data directory lock'));
  }, heartbeatMs);
  timer.unref();
  return timer;
}

async function releaseLock(path: string, token: string): Promise<void> {
  const timer = held.get(path);
  if (timer === undefined) return;
  clearInterval(timer);
  held.delete(path);
  // Only our own: a lock another process took (see refresher) is its to remove.
  const owner = await ownerOf(path);
  if (owner === null || owner.token !== token) return;
  await unlink(path).catch((err) => {
    if (!isErrno(err, 'ENOENT')) throw err;
  });
}
