/**
 * The benchmark's one process manager, for every suite (side by side and standalone).
 * Every process and temporary directory a run makes is registered here, by PID and by
 * path, and is ended / removed by that PID and path: on normal completion, on failure, on
 * Ctrl-C / SIGTERM / SIGHUP and when the runner exits. Nothing is ever killed by name.
 * Also: CPU time and memory of processes and of the machine, from /proc.
 */
import { fork, spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, statSync, readSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

export const ROOT = resolve(new URL('../..', import.meta.url).pathname);
export const AGENT_BIN = join(ROOT, 'packages/registry/bin/switchboard.js');

/** pid -> { proc, name } of every child that may still be running. */
const children = new Map();
/** Temporary directories still to remove. */
const tempDirs = new Set();
/** Extra cleanup callbacks (e.g. the standalone runner's own registry). */
const extraCleanups = new Set();

export const sleep = (ms) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

/** Sends a signal to one process by PID; false when it is already gone. */
export function signalPid(pid, sig) {
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}

/**
 * What this runner has started, in a state file (/tmp/switchboard-bench-<pid>.json), so
 * that a later run can clean up after a runner that was itself killed with SIGKILL (its
 * servers are not its IPC children and would outlive it): see reapOrphans().
 */
const STATE_FILE = join(tmpdir(), `switchboard-bench-${process.pid}.json`);
/** pid -> its start time (see startTicks), or null when it could not be read (it had exited and been reaped). */
const startedPids = new Map();
let runnerStartMemo;
/** This runner's own start time (read once, when first needed: the /proc helpers are defined below). */
const runnerStart = () => (runnerStartMemo ??= startTicks(process.pid));
/** This boot of the machine: a PID and start time name one process within one boot only. */
function bootId() {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return null;
  }
}
const BOOT = bootId();
function saveState() {
  try {
    // Nothing left to reap: no state file (killAllNow removes it at the end, too).
    if (startedPids.size === 0 && tempDirs.size === 0) return rmSync(STATE_FILE, { force: true });
    const procs = [...startedPids].map(([pid, start]) => ({ pid, start }));
    writeFileSync(STATE_FILE, JSON.stringify({ runnerPid: process.pid, runnerStart: runnerStart(), boot: BOOT, procs, dirs: [...tempDirs] }));
  } catch {
    /* best effort */
  }
}

/**
 * Saves a started child's PID and start time for reapOrphans (servers, client tools, and
 * forked load generators and providers: a provider frozen with SIGSTOP outlives a killed
 * runner, its IPC channel notwithstanding), and forgets it once it has exited.
 */
function remember(proc) {
  if (proc.pid === undefined) return;
  startedPids.set(proc.pid, startTicks(proc.pid));
  saveState();
  proc.once('exit', () => {
    startedPids.delete(proc.pid);
    saveState();
  });
}

/**
 * Whether a recorded directory may be removed by a later run: one under the OS temp dir,
 * or elsewhere (--data-root) one whose name has the suite's own form, `bench-<what>-XXXXXX`
 * (makeTempDir's), so that nothing else is ever removed.
 */
const OWN_DIR = /^bench-[a-z0-9-]+-[A-Za-z0-9]{6}$/;
function removable(dir) {
  return dir.startsWith(tmpdir() + '/') || OWN_DIR.test(basename(dir));
}

/**
 * Kills what runners that no longer exist left behind, and removes their directories.
 * Returns what it did. A process is killed by PID, and only when it is the one the runner
 * started: its start time (saved with the PID) is the same, in the same boot, so a reused
 * PID is never hit. (A state file without start times, from an older runner: when its
 * command line names one of that runner's temporary directories.) A frozen (SIGSTOPped)
 * process gets SIGCONT before its SIGKILL. A runner whose PID this one now has is gone
 * too: its start time differs. Its directories are removed when they are under the OS temp
 * dir or, elsewhere (--data-root), when their name has the suite's own form (removable());
 * one that cannot be removed keeps the state file, with nothing else in it, for the next run.
 */
export function reapOrphans() {
  const done = [];
  let files = [];
  try {
    files = readdirSync(tmpdir()).filter((f) => /^switchboard-bench-\d+\.json$/.test(f));
  } catch {
    return done;
  }
  for (const f of files) {
    const path = join(tmpdir(), f);
    let st;
    try {
      st = JSON.parse(readFileSync(path, 'utf8'));
    } catch {
      continue;
    }
    const sameBoot = BOOT == null || st.boot == null || st.boot === BOOT;
    const runner = procStats(st.runnerPid);
    const alive = sameBoot && runner !== null && runner.state !== 'Z' && (st.runnerStart == null || runner.startTicks === st.runnerStart);
    const mine = st.runnerPid === process.pid && (st.runnerStart == null || st.runnerStart === runnerStart());
    if (mine || alive) continue; // that runner is still running
    // After a reboot nothing it started is left.
    const procs = !sameBoot ? [] : (st.procs ?? (st.pids ?? []).map((pid) => ({ pid, start: null })));
    for (const { pid, start } of procs) {
      // A zombie is already dead (its parent has not reaped it): nothing to kill.
      if (procStats(pid)?.state === 'Z') continue;
      if (!isOurs(pid, start, st.dirs ?? [])) continue;
      signalPid(pid, 'SIGCONT'); // a provider frozen with SIGSTOP
      if (signalPid(pid, 'SIGKILL')) done.push(`killed ${pid} (left by runner ${st.runnerPid})`);
    }
    const left = [];
    for (const d of st.dirs ?? []) {
      if (!removable(d)) continue;
      try {
        rmSync(d, { recursive: true, force: true });
        done.push(`removed ${d}`);
      } catch {
        left.push(d);
      }
    }
    // A directory that could not be removed stays in the state file for the next run.
    if (left.length === 0) rmSync(path, { force: true });
    else {
      try {
        writeFileSync(path, JSON.stringify({ ...st, procs: [], dirs: left }));
      } catch {
        /* best effort */
      }
    }
    // A dead runner with this runner's PID had this runner's state file: write it again.
    if (st.runnerPid === process.pid) {
      for (const d of left) tempDirs.add(d);
      if (startedPids.size > 0 || tempDirs.size > 0) saveState();
    }
  }
  return done;
}

/** Whether `pid` is still the process a runner saved: the same start time, or (saved without one) a command line naming one of its directories. */
function isOurs(pid, start, dirs) {
  if (start != null) return startTicks(pid) === start;
  try {
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return dirs.some((d) => cmd.includes(d));
  } catch {
    return false;
  }
}

/** A fresh temporary directory (under `root`, default the OS temp dir), removed at the end whatever happens. */
export function makeTempDir(prefix, root = tmpdir()) {
  const dir = mkdtempSync(join(root, `${prefix}-`));
  tempDirs.add(dir);
  saveState();
  return dir;
}

export function removeTempDir(dir) {
  try {
    rmSync(dir, { recursive: true, force: true });
  } catch {
    /* best effort; retried at exit */
    return;
  }
  tempDirs.delete(dir);
}

/** Registers an already started child process (spawn / fork) for cleanup by PID. */
export function track(proc, name) {
  if (proc.pid === undefined) return proc;
  children.set(proc.pid, { proc, name });
  proc.once('exit', () => children.delete(proc.pid));
  return proc;
}

/** PIDs of every child still running, with their names (for the "nothing left" check). */
export function liveChildren() {
  return [...children].map(([pid, c]) => ({ pid, name: c.name }));
}

/**
 * Spawns a server process with its stdout and stderr going to a log file (never a pipe that
 * could fill up), tracked by PID.
 */
export function spawnLogged(name, cmd, args, { cwd, env, logFile }) {
  const fd = openSync(logFile, 'a');
  try {
    const proc = spawnTracked(name, cmd, args, { cwd, env, stdio: ['ignore', fd, fd] });
    proc.logFile = logFile;
    proc.on('error', () => {}); // ENOENT etc. show as an exit
    return proc;
  } finally {
    closeSync(fd);
  }
}

/** Spawns and tracks a process, its PID saved for reapOrphans (a later run's cleanup). */
function spawnTracked(name, cmd, args, { cwd, env, stdio }) {
  const proc = spawn(cmd, args, { cwd, env: env ?? process.env, stdio, detached: false });
  track(proc, name);
  remember(proc);
  proc.name = name;
  return proc;
}

/**
 * Spawns a client tool whose output the caller reads (stdout and stderr piped; the caller
 * must consume both), tracked by PID like a server: ended with the run, and reaped by a
 * later run if this one was killed.
 */
export function spawnCaptured(name, cmd, args, { cwd, env } = {}) {
  return spawnTracked(name, cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** The last `lines` lines of a log file (at most the last 64 KiB are read). */
export function tailOf(file, lines = 20) {
  try {
    const size = statSync(file).size;
    const len = Math.min(size, 65536);
    const buf = Buffer.alloc(len);
    const fd = openSync(file, 'r');
    try {
      readSync(fd, buf, 0, len, size - len);
    } finally {
      closeSync(fd);
    }
    return buf.toString('utf8').split('\n').filter((l) => l.trim() !== '').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/**
 * Forks a Node script (a load generator, a provider) with an IPC channel, tracked by PID
 * and saved for reapOrphans like a server; its output goes to the runner's.
 */
export function forkTracked(name, script, args = [], { execArgv } = {}) {
  const proc = fork(script, args, { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit', 'ipc'], ...(execArgv ? { execArgv } : {}) });
  track(proc, name);
  remember(proc);
  return proc;
}

/**
 * Ends one child: SIGTERM (or `sig`), then SIGKILL after graceMs. Resolves with its exit
 * code and signal and whether it had to be killed.
 */
export function stopProc(proc, graceMs = 5000, sig = 'SIGTERM') {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve({ code: proc?.exitCode ?? null, signal: proc?.signalCode ?? null, forced: false });
  return new Promise((done) => {
    let forced = false;
    const timer = setTimeout(() => {
      forced = true;
      signalPid(proc.pid, 'SIGKILL');
    }, graceMs);
    proc.once('exit', (code, signal) => {
      clearTimeout(timer);
      done({ code, signal, forced });
    });
    if (!signalPid(proc.pid, sig)) {
      clearTimeout(timer);
      done({ code: proc.exitCode, signal: proc.signalCode, forced });
    }
  });
}

/** The name the standalone runner used for stopProc. */
export const stopChild = stopProc;

/** Kills every child still running (SIGKILL, by PID) and removes every temporary directory. */
export function killAllNow() {
  for (const f of extraCleanups) {
    try {
      f();
    } catch {
      /* best effort */
    }
  }
  for (const [pid] of children) {
    signalPid(pid, 'SIGCONT'); // a SIGSTOP'ed provider
    signalPid(pid, 'SIGKILL');
  }
  for (const dir of [...tempDirs]) removeTempDir(dir);
  // Every child has had its SIGKILL (one that cannot be signalled is gone already), so a
  // later run has nothing to reap but directories that could not be removed: the state
  // file stays only for those, not for children whose exit this process may not live to see.
  if (tempDirs.size === 0) rmSync(STATE_FILE, { force: true });
  else saveState();
}

/**
 * At the end of a run: ends everything still running and says what (if anything) could
 * not be ended, as a warning line for the console ('' when nothing is left).
 */
export async function endAll() {
  killAllNow();
  await sleep(200);
  const left = liveChildren();
  return left.length > 0 ? `WARNING: processes still running: ${left.map((p) => `${p.name} (${p.pid})`).join(', ')}\n` : '';
}

export function onCleanup(f) {
  extraCleanups.add(f);
}

let installed = false;
/**
 * Kills every child and removes every temp dir on Ctrl-C, SIGTERM, SIGHUP and at exit; first
 * cleans up after earlier runners that were killed (reapOrphans), each line told to `log`.
 * Every suite calls it before it starts anything (a suite run by another calls it again:
 * the second call does nothing).
 */
export function installCleanup(onInterrupt, log = (line) => process.stdout.write(`${line}\n`)) {
  if (installed) return;
  installed = true;
  for (const line of reapOrphans()) log(`cleanup of an earlier run that was killed: ${line}`);
  process.on('exit', killAllNow);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(sig, () => {
      killAllNow();
      try {
        onInterrupt?.(sig);
      } catch {
        /* ignore */
      }
      process.exit(sig === 'SIGINT' ? 130 : 143);
    });
  }
}

const CLK_TCK = 100; // sysconf(_SC_CLK_TCK) on Linux
const PAGE = 4096;

/** CPU time (user + system of all threads, ms) and resident memory (bytes) of a process. */
export function procStats(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // f[0] is field 3 (state); utime is field 14, stime 15, starttime 22 (clock ticks
    // since boot), rss 24 (pages).
    return { cpuMs: ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK, rssBytes: Number(f[21]) * PAGE, state: f[0], startTicks: Number(f[19]) };
  } catch {
    return null;
  }
}

/**
 * When a process started (clock ticks since boot), or null when it is gone: with its PID,
 * it names one process, since a reused PID starts later.
 */
export function startTicks(pid) {
  return procStats(pid)?.startTicks ?? null;
}

/** Sum of procStats over several PIDs (a cluster's members); null if any is gone. */
export function sumStats(pids) {
  let cpuMs = 0;
  let rssBytes = 0;
  for (const pid of pids) {
    const s = procStats(pid);
    if (!s) return null;
    cpuMs += s.cpuMs;
    rssBytes += s.rssBytes;
  }
  return { cpuMs, rssBytes };
}

/** CPU time of the whole machine (ms, all cores). */
export function systemCpu() {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const [user, nice, system, idle, iowait, irq, softirq, steal] = f;
    return { busyMs: ((user + nice + system + irq + softirq + (steal ?? 0)) * 1000) / CLK_TCK, idleMs: ((idle + iowait) * 1000) / CLK_TCK };
  } catch {
    return null;
  }
}

/** The filesystem type holding a path (from /proc/mounts), for the results. */
export function fsTypeOf(path) {
  try {
    let best = { mnt: '', type: 'unknown' };
    for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
      const [, mnt, type] = line.split(' ');
      if (mnt && (path === mnt || path.startsWith(mnt.endsWith('/') ? mnt : mnt + '/')) && mnt.length >= best.mnt.length) best = { mnt, type };
    }
    return best.type;
  } catch {
    return 'unknown';
  }
}

/** `n` distinct free TCP ports on 127.0.0.1 (bound and released; the OS does not reuse them soon). */
export async function freePorts(n) {
  const servers = [];
  try {
    for (let i = 0; i < n; i++) {
      const s = createServer();
      await new Promise((res, rej) => {
        s.once('error', rej);
        s.listen(0, '127.0.0.1', res);
      });
      servers.push(s);
    }
    return servers.map((s) => s.address().port);
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  }
}

/**
 * Polls `probe` (async, resolves truthy when ready) every `everyMs` until it succeeds, a
 * watched process exits, or `timeoutMs` passes. Throws with the log tails on failure.
 */
export async function waitReady({ what, probe, procs, timeoutMs, everyMs = 200 }) {
  const deadline = performance.now() + timeoutMs;
  let lastErr = null;
  for (let i = 0; i < 100_000 && performance.now() < deadline; i++) {
    const dead = procs.find((p) => p.exitCode !== null || p.signalCode !== null);
    if (dead) throw new StartError(`${what}: ${dead.name} exited (code ${dead.exitCode}, signal ${dead.signalCode}) before it was ready`, procs);
    try {
      const v = await probe();
      if (v) return v;
    } catch (err) {
      lastErr = err;
    }
    await sleep(everyMs);
  }
  throw new StartError(`${what} was not ready within ${Math.round(timeoutMs / 1000)} s${lastErr ? ` (last probe error: ${String(lastErr.message ?? lastErr).split('\n')[0]})` : ''}`, procs);
}

/** A peer that did not start: the message carries the tail of each process's log. */
export class StartError extends Error {
  constructor(message, procs) {
    const tails = procs.map((p) => `--- last lines of ${p.name} (${p.logFile}) ---\n${tailOf(p.logFile, 15)}`).join('\n');
    super(`${message}\n${tails}`);
    this.name = 'StartError';
  }
}

/**
 * Runs a suite's `main(argv)` when its module (`metaUrl`) was started as the script: the
 * exit code is main's; a failure is printed as `bench NAME: ...` and every process it
 * started is ended.
 */
export function runIfScript(metaUrl, name, main) {
  if (metaUrl !== pathToFileURL(process.argv[1] ?? '').href) return;
  main(process.argv.slice(2)).then(
    (code) => (process.exitCode = code),
    (err) => {
      process.stderr.write(`bench ${name}: ${err?.stack ?? err}\n`);
      killAllNow();
      process.exitCode = 1;
    },
  );
}
