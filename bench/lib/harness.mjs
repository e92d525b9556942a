/**
 * The shape every benchmark suite runs in (the side-by-side suite, bench/compare/runner.mjs,
 * and the standalone suite, bench/run.mjs): forked load generators driven over IPC, CPU
 * and memory sampled from /proc at the generators' phase changes, a wait for a quiet
 * machine, the machine and source facts, and the results directory.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { ROOT, forkTracked, fsTypeOf, liveChildren, procStats, sleep, stopProc, sumStats, systemCpu } from './procs.mjs';
import { fmtInt, fmtPct } from './report.mjs';
import { histFromWire } from '../compare/lib/histwire.mjs';
import { formatSummary, summarize } from '../profile-summary.mjs';

/** A duration like 500ms, 10s or 1m, in ms (0 only with allowZero; at most 10 min). */
/** A whole number from 1 to `max` given as `name`; anything else is refused naming it. */
export function positiveInt(text, name, max = Infinity) {
  const v = Number(text);
  if (!Number.isInteger(v) || v < 1 || v > max) throw new Error(`${name} must be a whole number ${Number.isFinite(max) ? `from 1 to ${max}` : 'of 1 or more'}, got ${text}`);
  return v;
}

export function parseDuration(text, name, { allowZero = false } = {}) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(String(text).trim());
  if (!m) throw new Error(`${name} "${text}" is not a duration like 500ms, 10s or 1m`);
  const v = Math.round(Number(m[1]) * { ms: 1, s: 1000, m: 60_000 }[m[2] ?? 's']);
  if ((v === 0 && !allowZero) || v > 600_000) throw new Error(`${name} must be between ${allowZero ? '0' : '1ms'} and 10m`);
  return v;
}

/** The results directory, the run's time stamp and (with a profile) the profile directory. */
export function openResults(profile) {
  const started = new Date();
  const stamp = started.toISOString().replace(/[:]/g, '-').replace(/\.\d+Z$/, 'Z');
  const resultsDir = join(ROOT, 'bench/results');
  mkdirSync(resultsDir, { recursive: true });
  const profileDir = profile ? join(resultsDir, `${stamp}-profiles`) : null;
  if (profileDir) mkdirSync(profileDir, { recursive: true });
  return { started, stamp, resultsDir, profileDir };
}

/** Summaries of every CPU profile in a directory (hottest functions), for the report. */
export function summarizeProfiles(dir, top = 15) {
  const out = [];
  for (const f of readdirSync(dir).filter((x) => x.endsWith('.cpuprofile')).sort()) {
    try {
      const s = summarize(JSON.parse(readFileSync(join(dir, f), 'utf8')), { top });
      out.push({ file: join(dir, f), summary: s, text: formatSummary(s, `agent CPU profile, ${f}`) });
    } catch (err) {
      out.push({ file: join(dir, f), error: err.message, text: `${f}: ${err.message}` });
    }
  }
  return out;
}

export const median = (xs) => {
  const s = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return null;
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
export const stat = (xs) => {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x));
  return v.length === 0 ? null : { median: median(v), min: Math.min(...v), max: Math.max(...v), n: v.length };
};

export function targetOf(sys) {
  return { kind: sys.kind, endpoints: sys.endpoints, connectString: sys.connectString, url: sys.url };
}

export function pkgVersion(name) {
  try {
    return JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8')).version;
  } catch {
    return null;
  }
}

export function machineFacts({ dataRoot = null } = {}) {
  const cpus = os.cpus();
  let disk = null;
  try {
    disk = execFileSync('df', ['-h', '--output=source,fstype,size', os.tmpdir()], { encoding: 'utf8', timeout: 5000 }).trim().split('\n')[1]?.trim().replace(/\s+/g, ' ');
  } catch {
    /* unknown */
  }
  let osName = `${os.platform()} ${os.release()}`;
  try {
    const m = /PRETTY_NAME="([^"]+)"/.exec(readFileSync('/etc/os-release', 'utf8'));
    if (m) osName = `${m[1]} (kernel ${os.release()})`;
  } catch {
    /* keep */
  }
  return {
    cpus: cpus.length,
    cpuModel: cpus[0]?.model ?? 'unknown',
    memoryBytes: os.totalmem(),
    os: osName,
    node: process.version,
    v8: process.versions.v8,
    tmpDisk: disk,
    ...(dataRoot ? { dataDirFilesystem: fsTypeOf(dataRoot) } : {}),
    loadAverageAtStart: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

export function gitFacts() {
  const git = (...args) => execFileSync('git', args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10_000 }).trimEnd();
  try {
    // The benchmark's own code too: a figure depends on its load generators and drivers.
    const all = git('status', '--porcelain', '--', 'packages', 'bench').split('\n').filter(Boolean);
    const changed = all.filter((l) => l.slice(3).startsWith('packages/'));
    const benchChanged = all.filter((l) => l.slice(3).startsWith('bench/'));
    return { commit: git('rev-parse', 'HEAD'), uncommittedFilesInPackages: changed.length, uncommittedExamples: changed.slice(0, 10), uncommittedFilesInBench: benchChanged.length, uncommittedBenchExamples: benchChanged.slice(0, 10) };
  } catch {
    return { commit: null };
  }
}

/**
 * A CPU sample for between(): the servers (`serverPids`), the processes making the load
 * (`loadPids`, reported as the generator), this runner and the whole machine.
 */
export function cpuSample(serverPids, loadPids) {
  let cpuMs = 0;
  for (const pid of loadPids) cpuMs += procStats(pid)?.cpuMs ?? 0;
  return { at: performance.now(), server: sumStats(serverPids), gen: { cpuMs }, runner: procStats(process.pid), system: systemCpu() };
}

/** Samples the servers' CPU / memory, the generator's CPU and the whole machine's. */
export function between(a, b) {
  if (!a || !b) return null;
  const ms = b.at - a.at;
  const pct = (x, y, k = 'cpuMs') => (x && y ? ((y[k] - x[k]) * 100) / ms : null);
  const server = pct(a.server, b.server);
  const gen = pct(a.gen, b.gen);
  const runner = pct(a.runner, b.runner);
  const machine = pct(a.system, b.system, 'busyMs');
  const others = machine === null ? null : Math.max(0, machine - (server ?? 0) - (gen ?? 0) - (runner ?? 0));
  return {
    windowMs: Math.round(ms),
    serverCpuMs: a.server && b.server ? b.server.cpuMs - a.server.cpuMs : null,
    serverCpuPct: server,
    generatorCpuPct: gen,
    othersCpuPct: others,
    serverRssBytes: b.server?.rssBytes ?? null,
  };
}

// ------------------------------------------------------------------ one run

/**
 * Waits (at most maxMs) until processes other than this suite's use less than 25% of one
 * core over one second. Returns the last figure (% of a core), or null when not measured.
 */
export async function waitQuiet(maxMs, progress, label) {
  if (!maxMs) return null;
  const ours = () => liveChildren().reduce((a, c) => a + (procStats(c.pid)?.cpuMs ?? 0), procStats(process.pid)?.cpuMs ?? 0);
  const deadline = performance.now() + maxMs;
  let busy = null;
  for (let i = 0; i < 600 && performance.now() < deadline; i++) {
    const a = systemCpu();
    const oa = ours();
    const t = performance.now();
    await sleep(1000);
    const b = systemCpu();
    if (!a || !b) return null;
    busy = Math.max(0, ((b.busyMs - a.busyMs - (ours() - oa)) * 100) / (performance.now() - t));
    if (busy < 25) return busy;
    progress.update(`${label}  waiting for a quiet machine: other processes use ${fmtPct(busy)} of a core`, { force: true });
  }
  return busy;
}

/** What speedCheck serialises and parses: 20 instances, as a read answers them. */
const SPEED_SAMPLE = Array.from({ length: 20 }, (_, i) => ({ id: `i-${i}`, service: 'catalog', address: `10.1.0.${i + 1}`, port: 8080, tags: ['bench'], metadata: { seq: String(i) }, weight: 100, status: 'up', health: 'passing', createRevision: i, modRevision: i }));

/**
 * How fast the machine is right now: the time of a fixed piece of CPU work (1,000 times
 * JSON out and back in of 20 instances, about 30 ms on a 2-core AMD EPYC; the median of
 * three), taken by the runner before each run starts its load. A shared or virtual
 * machine's speed moves with its neighbours; the spread of these times over a run shows
 * that it moved. It is a short sample of one thread's CPU between runs: it does not say
 * how much the speed moved during a run, nor anything about the disk.
 */
export function speedCheck() {
  const times = [];
  let keep = 0;
  for (let rep = 0; rep < 3; rep++) {
    const t = performance.now();
    for (let i = 0; i < 1000; i++) keep += JSON.parse(JSON.stringify(SPEED_SAMPLE)).length;
    times.push(performance.now() - t);
  }
  if (keep !== 60_000) throw new Error('speedCheck: unexpected result');
  return median(times);
}

export const COMPARE_LOADGEN = join(ROOT, 'bench/compare/loadgen.mjs');

/**
 * Forks `count` generator processes (`script`: the side-by-side suite's generator by
 * default, bench/lib/loadgen.mjs for the standalone suite; the clients of a closed-loop
 * workload, or the watchers of the watch workload, are split between them and they start
 * together after all are ready), runs one
 * workload against `sys` (`{ pids, procs, url?, kind?, endpoints?, connectString? }`),
 * samples the servers' CPU at the generators' phase changes, and merges the results
 * (`merge(results)` when given, even of one generator).
 * `onMessage(msg, gen)` sees every other message (interactive workloads). The promise's
 * `generators` are the forked processes.
 */
export function runGenerator({ workload, sys, options, progress, label, hardLimitMs, onMessage, count = 1, script = COMPARE_LOADGEN, merge = null }) {
  const gens = [];
  for (let g = 0; g < count; g++) gens.push(forkTracked('load generator', script, [], { execArgv: ['--max-old-space-size=8192'] }));
  const genPids = gens.map((g) => g.pid);
  const sample = () => cpuSample(sys.pids, genPids);
  let mStart = null;
  let mEnd = null;
  let measuredCount = 0;
  let readyCount = 0;
  let live = sample();
  let liveCpu = null;
  const results = new Array(count);
  let resultCount = 0;
  const rates = new Array(count).fill(0);
  const done = new Promise((resolve, reject) => {
    let settled = false;
    const finish = (err, result) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      gens.forEach((g, i) => g.off('exit', exitHandlers[i]));
      Promise.all(gens.map((g) => stopProc(g, 2000))).then(() => (err ? reject(err) : resolve({ result, cpu: between(mStart, mEnd), generators: count })));
    };
    const timer = setTimeout(() => finish(new Error(`${label}: no result within ${Math.round(hardLimitMs / 1000)} s`)), hardLimitMs);
    // A generator leaves once its result is sent; only one that leaves before it fails the run
    // (with two generators, the first may finish while the second still closes its clients).
    const exitHandlers = gens.map((_, g) => (code, sig) => {
      if (results[g] === undefined) finish(new Error(`${label}: a load generator exited (code ${code}, signal ${sig}) without a result`));
    });
    const deadServer = () => sys.procs.find((p) => p.exitCode !== null || p.signalCode !== null);
    gens.forEach((gen, g) => {
      gen.once('exit', exitHandlers[g]);
      gen.on('message', (msg) => {
        if (msg.type === 'phase') {
          if (msg.phase === 'measure' && mStart === null) mStart = sample();
          if (msg.phase === 'measured' && mStart !== null && mEnd === null && ++measuredCount >= count) mEnd = sample();
        } else if (msg.type === 'ready') {
          if (++readyCount === count) for (const x of gens) x.send({ type: 'go' });
        } else if (msg.type === 'progress') {
          rates[g] = msg.rate ?? 0;
          if (g !== 0) return;
          const s = sample();
          if (s.at - live.at >= 1000) {
            liveCpu = between(live, s);
            live = s;
          }
          const d = deadServer();
          if (d) return finish(new Error(`${label}: ${d.name} exited during the run (code ${d.exitCode}, signal ${d.signalCode})`));
          progress.update(progressText(label, msg.rate !== null && msg.rate !== undefined ? { ...msg, rate: rates.reduce((a, b) => a + b, 0) } : msg, liveCpu));
        } else if (msg.type === 'result') {
          results[g] = msg.result;
          if (++resultCount === count) finish(null, merge ? merge(results) : count === 1 ? results[0] : mergeResults(results));
        } else if (msg.type === 'error') {
          finish(new Error(`${label}: the load generator failed: ${msg.error}`));
        } else {
          onMessage?.(msg, gen);
        }
      });
    });
    gens.forEach((gen, g) => {
      let o = options;
      if (count > 1) {
        const key = options.clients !== undefined ? 'clients' : options.readers !== undefined ? 'readers' : 'watchers';
        const total = options[key];
        const share = Math.floor(total / count) + (g < total % count ? 1 : 0);
        const first = g * Math.floor(total / count) + Math.min(g, total % count);
        // The first generator seeds (reads) and writes (watch); every one has its share.
        o = { ...options, [key]: share, firstClient: first, barrier: true, seed: g === 0, writer: g === 0 };
      }
      gen.send({ type: 'run', workload, target: targetOf(sys), url: sys.url, options: o });
    });
  });
  // The processes themselves, for a caller that must end them early (stopProc).
  done.generators = gens;
  return done;
}

/** Error counts of several generators (Errors.json() each) as one: counts summed, five examples kept. */
export function mergeErrors(list) {
  const errors = { total: 0, byKind: {}, examples: [] };
  for (const e of list) {
    errors.total += e.total;
    for (const [k, v] of Object.entries(e.byKind ?? {})) errors.byKind[k] = (errors.byKind[k] ?? 0) + v;
    errors.examples.push(...(e.examples ?? []));
  }
  errors.examples = errors.examples.slice(0, 5);
  return errors;
}

/** The results of several generators as one: operations summed, latencies merged. */
export function mergeResults(rs) {
  const h = histFromWire(rs[0].latencyWire);
  for (const r of rs.slice(1)) h.merge(histFromWire(r.latencyWire));
  const errors = mergeErrors(rs.map((r) => r.errors));
  const sum = (k) => rs.reduce((a, r) => a + (r[k] ?? 0), 0);
  const out = { ...rs[0], ops: sum('ops'), ratePerSec: sum('ratePerSec'), latency: h.summary(), errors, perGenerator: rs.map((r) => ({ ops: r.ops, ratePerSec: r.ratePerSec, latency: r.latency })) };
  for (const k of ['clients', 'readers', 'workers', 'wrongAnswers', 'leasesLost']) if (rs[0][k] !== undefined) out[k] = sum(k);
  delete out.latencyWire;
  return out;
}

export function progressText(label, p, cpu) {
  const t = p.totalMs > 0 ? `${(p.elapsedMs / 1000).toFixed(1)}/${(p.totalMs / 1000).toFixed(1)}s` : `${(p.elapsedMs / 1000).toFixed(1)}s`;
  let what = '';
  if (p.rate !== null && p.rate !== undefined) what = `${fmtInt(p.rate)}/s`;
  else if (p.events !== undefined) what = `changes ${fmtInt(p.done)}  deliveries ${fmtInt(p.events)}`;
  else if (p.done !== undefined) what = `${p.label} ${fmtInt(p.done)}`;
  const c = cpu ? `  cpu: server ${fmtPct(cpu.serverCpuPct)} generator ${fmtPct(cpu.generatorCpuPct)} others ${fmtPct(cpu.othersCpuPct)}` : '';
  return `${label}  ${p.phase} ${t}  ${what}  errors ${p.errors ?? 0}${c}`;
}

