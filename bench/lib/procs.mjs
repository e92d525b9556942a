/**
 * The processes the benchmark starts: agents and load generators. Every child is kept in
 * a registry by PID and is ended by that PID: on normal completion (SIGTERM, then SIGKILL
 * after a grace period), on failure, on Ctrl-C and when the runner exits.
 */
import { spawn, fork } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';

export const ROOT = resolve(new URL('../..', import.meta.url).pathname);
export const AGENT_BIN = join(ROOT, 'packages/registry/bin/switchboard.js');

/** pid -> { proc, name } of every child that may still be running. */
const children = new Map();
/** Temporary data directories still to remove. */
const dataDirs = new Set();

function track(proc, name) {
  children.set(proc.pid, { proc, name });
  proc.once('exit', () => children.delete(proc.pid));
  return proc;
}

/** Sends a signal to one child by PID; false when it is already gone. */
function signal(pid, sig) {
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}

/** Ends one child: SIGTERM, then SIGKILL after graceMs. Resolves with its exit code/signal. */
export function stopChild(proc, graceMs = 5000) {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve({ code: proc.exitCode, signal: proc.signalCode, forced: false });
  return new Promise((done) => {
    let forced = false;
    const timer = setTimeout(() => {
      forced = true;
      signal(proc.pid, 'SIGKILL');
    }, graceMs);
    proc.once('exit', (code, sig) => {
      clearTimeout(timer);
      done({ code, signal: sig, forced });
    });
    if (!signal(proc.pid, 'SIGTERM')) {
      clearTimeout(timer);
      done({ code: proc.exitCode, signal: proc.signalCode, forced });
    }
  });
}

/** Kills every child still running, at once (SIGKILL), and removes their temporary data. */
export function killAllNow() {
  for (const [pid] of children) signal(pid, 'SIGKILL');
  for (const dir of dataDirs) {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      /* best effort at exit */
    }
    dataDirs.delete(dir);
  }
}

const CLK_TCK = 100; // sysconf(_SC_CLK_TCK) on Linux

/** CPU time (user + system, ms) and resident memory (bytes) of a process, from /proc. */
export function procStats(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state); utime is field 14, stime 15, rss 24 (pages).
    const ticks = Number(fields[11]) + Number(fields[12]);
    const rssPages = Number(fields[21]);
    return { cpuMs: (ticks * 1000) / CLK_TCK, rssBytes: rssPages * 4096 };
  } catch {
    return null;
  }
}

/** CPU time of the whole machine (ms, all cores): busy (user+nice+system+irq+softirq+steal) and idle. */
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

/**
 * Starts an agent on 127.0.0.1 with a free port and resolves once it prints
 * `listening on http://HOST:PORT`. mode: 'dev' | 'durable' (a fresh temporary data dir).
 * Rejects (after killing it) when it exits first or does not listen within timeoutMs.
 */
export async function startAgent({ mode, profileDir = null, profileName = 'agent.cpuprofile', timeoutMs = 15_000, dataRoot = tmpdir(), bin = AGENT_BIN }) {
  const nodeArgs = [];
  if (profileDir) nodeArgs.push('--cpu-prof', `--cpu-prof-dir=${profileDir}`, `--cpu-prof-name=${profileName}`);
  const args = [bin, 'agent', '--http-addr', '127.0.0.1:0', '--log-format', 'json', '--log-level', 'info'];
  let dataDir = null;
  if (mode === 'durable') {
    dataDir = mkdtempSync(join(dataRoot, 'switchboard-bench-'));
    dataDirs.add(dataDir);
    args.push('--data-dir', dataDir);
  } else {
    args.push('--dev');
  }
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('SWITCHBOARD_')) delete env[k]; // flags only
  const spawnedAt = performance.now();
  const proc = track(spawn(process.execPath, [...nodeArgs, ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] }), 'agent');

  const agent = {
    proc,
    pid: proc.pid,
    mode,
    dataDir,
    url: null,
    durable: null,
    /** Milliseconds from spawn to the "listening on" line. */
    startMs: null,
    /** Log lines at warn level or above, and the last lines of output, for the report. */
    warnings: [],
    /** Info log lines after "listening on" (time in epoch ms, message). */
    events: [],
    warnCount: 0,
    errorCount: 0,
    tail: [],
    stderr: '',
    async stop(graceMs = 5000) {
      const r = await stopChild(proc, graceMs);
      if (dataDir) {
        rmSync(dataDir, { recursive: true, force: true });
        dataDirs.delete(dataDir);
      }
      return r;
    },
  };

  const remember = (line) => {
    agent.tail.push(line);
    if (agent.tail.length > 30) agent.tail.shift();
  };
  // Both pipes are read to the end, so a chatty agent never blocks on a full pipe.
  const lines = createInterface({ input: proc.stdout });
  let onListening;
  const listening = new Promise((res) => (onListening = res));
  lines.on('line', (line) => {
    remember(line);
    let rec = null;
    try {
      rec = JSON.parse(line);
    } catch {
      /* not JSON: kept in the tail only */
    }
    if (agent.url !== null && rec && rec.level === 30 && agent.events.length < 50) {
      // Info lines after start (snapshots, segment changes), for correlating latency outliers.
      agent.events.push({ time: rec.time, msg: rec.msg, ...(rec.ms !== undefined ? { ms: rec.ms } : {}), ...(rec.bytes !== undefined ? { bytes: rec.bytes } : {}) });
    }
    if (rec && typeof rec.level === 'number' && rec.level >= 40) {
      if (rec.level >= 50) agent.errorCount++;
      else agent.warnCount++;
      if (agent.warnings.length < 20) agent.warnings.push(line.slice(0, 2000));
    }
    const m = /listening on (http:\/\/[^\s"]+)/.exec(line);
    if (m && agent.url === null) {
      agent.url = m[1].replace(/\/$/, '');
      agent.startMs = Math.round(performance.now() - spawnedAt);
      agent.durable = rec && typeof rec.durable === 'boolean' ? rec.durable : null;
      onListening();
    }
  });
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (d) => {
    if (agent.stderr.length < 20_000) agent.stderr += d;
  });

  let timer;
  const exited = new Promise((_, rej) => proc.once('exit', (code, sig) => rej(new Error(`the agent exited before listening (code ${code}, signal ${sig}): ${agent.stderr.trim() || agent.tail.join('\n')}`))));
  const timedOut = new Promise((_, rej) => (timer = setTimeout(() => rej(new Error(`the agent did not print "listening on" within ${timeoutMs} ms`)), timeoutMs)));
  try {
    await Promise.race([listening, exited, timedOut]);
  } catch (err) {
    await agent.stop(1000);
    throw err;
  } finally {
    clearTimeout(timer);
  }
  if (!/^http:\/\/127\.0\.0\.1:\d+$/.test(agent.url)) {
    await agent.stop(1000);
    throw new Error(`the agent listens on ${agent.url}, not on 127.0.0.1`);
  }
  return agent;
}

/** Forks the load generator (bench/lib/loadgen.mjs) with an IPC channel. */
export function forkGenerator() {
  const proc = fork(join(ROOT, 'bench/lib/loadgen.mjs'), [], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  return track(proc, 'generator');
}

let cleanupInstalled = false;
/** Kills every child on Ctrl-C, SIGTERM, an uncaught error and at exit. */
export function installCleanup(onInterrupt) {
  if (cleanupInstalled) return;
  cleanupInstalled = true;
  process.on('exit', killAllNow);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(sig, () => {
      killAllNow();
      onInterrupt?.(sig);
      process.exit(sig === 'SIGINT' ? 130 : 143);
    });
  }
}
