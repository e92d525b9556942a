#!/usr/bin/env node
/**
 * The durable-storage benchmark of docs/storage.md ("Measured"). Standalone: it needs only
 * a build (`npm run build`) and starts its own agents on 127.0.0.1.
 *
 *   (a) durable registrations per second from --clients concurrent HTTP clients (keep-alive)
 *       against a real agent with --data-dir, with p50/p99 latency; then FileStorage.append
 *       directly with the same number of concurrent appenders, and with one (the fsync cost);
 *   (b) restart time with --records log records and no snapshot: from spawn to the
 *       `listening on` line, and the agent's resident memory (now and peak);
 *   (c) writing a snapshot of --snapshot-instances instances: its duration and how long
 *       the event loop was held up meanwhile (what requests would feel).
 *
 *   node bench/storage.mjs [--duration 5s] [--clients 64] [--records 1000000]
 *                          [--snapshot-instances 100000] [--only a|b|c]
 *
 * Every phase is bounded in time; every process it starts is killed by PID and every
 * temporary directory removed, also on Ctrl-C.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { Pool } from 'undici';

const ROOT = new URL('..', import.meta.url).pathname;
const AGENT_BIN = join(ROOT, 'packages/registry/bin/switchboard.js');
const { FileStorage } = await import(join(ROOT, 'packages/registry/dist/src/storage/file-storage.js'));
const { silentLogger } = await import(join(ROOT, 'packages/registry/dist/src/storage/logger.js'));

const START_TIMEOUT_MS = 180_000;
const WARMUP_MS = 1_000;
/** Log records per distinct instance in (b): a realistic log re-registers instances. */
const RECORDS_PER_INSTANCE = 10;
const FILL_WINDOW = 5_000;

const { values: args } = parseArgs({
  options: {
    duration: { type: 'string', default: '5s' },
    clients: { type: 'string', default: '64' },
    records: { type: 'string', default: '1000000' },
    'snapshot-instances': { type: 'string', default: '100000' },
    only: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  process.stdout.write('usage: node bench/storage.mjs [--duration 5s] [--clients 64] [--records 1000000] [--snapshot-instances 100000] [--only a|b|c]\n');
  process.exit(0);
}
const DURATION_MS = parseDuration(args.duration);
const CLIENTS = Number(args.clients);
const RECORDS = Number(args.records);
const SNAPSHOT_INSTANCES = Number(args['snapshot-instances']);

function parseDuration(text) {
  const m = /^(\d+(?:\.\d+)?)(ms|s)$/.exec(text);
  if (!m) throw new Error(`--duration "${text}" must look like 500ms or 5s`);
  return Number(m[1]) * (m[2] === 's' ? 1000 : 1);
}

// ---- cleanup: children by PID, temporary directories ----

const children = new Set();
const dirs = new Set();
function cleanup() {
  for (const pid of children) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}
process.on('exit', cleanup);
process.on('SIGINT', () => process.exit(130));

function tempDir(name) {
  const d = mkdtempSync(join(os.tmpdir(), `sb-bench-${name}-`));
  dirs.add(d);
  return d;
}

function removeDir(d) {
  rmSync(d, { recursive: true, force: true });
  dirs.delete(d);
}

// ---- helpers ----

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function summary(latencies, ms) {
  const sorted = Float64Array.from(latencies).sort();
  return { ops: latencies.length, perSecond: Math.round((latencies.length * 1000) / ms), p50Ms: +percentile(sorted, 50).toFixed(2), p99Ms: +percentile(sorted, 99).toFixed(2) };
}

function memoryOf(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (key) => Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(status)?.[1] ?? NaN);
  return { rssMiB: Math.round(kib('VmRSS') / 1024), peakRssMiB: Math.round(kib('VmHWM') / 1024) };
}

function instance(id, service, revision, port) {
  return {
    id, service, namespace: 'default', address: '10.0.0.1', port, protocol: 'http', zone: 'eu-1', version: '1.2.3',
    tags: ['bench'], metadata: { team: 'storage' }, weight: 100, status: 'up', health: 'passing', checks: [], leaseId: null,
    createRevision: revision, modRevision: revision,
  };
}

function putEntry(revision, distinct) {
  const n = revision % distinct;
  return { revision, changes: [{ op: 'put', instance: instance(`i${n}`, `svc${n % 100}`, revision, 1000 + (revision % 50_000)), specs: [] }] };
}

/** Spawns the agent (in memory when dataDir is null); resolves at its `listening on` line. */
function startAgent(dataDir) {
  const started = performance.now();
  const where = dataDir === null ? ['--dev'] : ['--data-dir', dataDir];
  const child = spawn(process.execPath, [AGENT_BIN, 'agent', ...where, '--http-addr', '127.0.0.1:0', '--log-format', 'json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child.pid);
  child.once('exit', () => children.delete(child.pid));
  let out = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`agent did not listen within ${START_TIMEOUT_MS} ms:\n${out}`)), START_TIMEOUT_MS);
    child.stderr.on('data', (d) => (out += d));
    child.stdout.on('data', (d) => {
      out += d;
      const m = /listening on (http:\/\/[^\s"]+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        const recovered = /"ms":(\d+),"msg":"recovered state/.exec(out);
        resolve({ child, url: m[1], startMs: Math.round(performance.now() - started), recoveryMs: recovered ? Number(recovered[1]) : null });
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`agent exited with ${code}:\n${out}`));
    });
  });
}

function stopAgent(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    process.kill(child.pid, 'SIGKILL');
  });
}

/** Runs `op` from `workers` concurrent loops: a warm-up, then DURATION_MS measured. */
async function closedLoop(workers, op) {
  const latencies = [];
  let measuring = false;
  let stop = false;
  const loop = async (w) => {
    for (let i = 0; !stop; i++) {
      const t = performance.now();
      await op(w, i);
      if (measuring) latencies.push(performance.now() - t);
    }
  };
  const loops = Array.from({ length: workers }, (_, w) => loop(w));
  await new Promise((r) => setTimeout(r, WARMUP_MS));
  measuring = true;
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, DURATION_MS));
  measuring = false;
  const ms = performance.now() - t0;
  stop = true;
  await Promise.all(loops);
  return summary(latencies, ms);
}

// ---- (a) throughput ----

/** Registrations over HTTP against a durable agent, or an in-memory one (--dev) for reference. */
async function httpRegistrations(durable) {
  const dir = durable ? tempDir('http') : null;
  const agent = await startAgent(dir);
  const pool = new Pool(agent.url, { connections: CLIENTS, pipelining: 1 });
  const body = JSON.stringify({ address: '10.0.0.1', port: 8080 });
  try {
    return await closedLoop(CLIENTS, async (w, i) => {
      const res = await pool.request({ method: 'PUT', path: `/v1/services/bench${w % 16}/instances/c${w}-${i}`, headers: { 'content-type': 'application/json' }, body });
      await res.body.text();
      if (res.statusCode !== 200) throw new Error(`registration answered ${res.statusCode}`);
    });
  } finally {
    await pool.close();
    await stopAgent(agent.child);
    if (dir) removeDir(dir);
  }
}

async function directAppends(workers) {
  const dir = tempDir('append');
  const s = new FileStorage({ dataDir: dir, logger: silentLogger });
  await s.open(() => 'bench');
  let revision = 0;
  try {
    const r = await closedLoop(workers, () => s.append(putEntry(++revision, 1_000_000)));
    const st = s.stats;
    return { ...r, fsyncs: st.fsyncs, appendsPerFsync: +(st.appends / st.fsyncs).toFixed(1) };
  } finally {
    await s.close();
    removeDir(dir);
  }
}

// ---- (b) restart ----

async function restart() {
  const dir = tempDir('restart');
  const distinct = Math.max(1, Math.round(RECORDS / RECORDS_PER_INSTANCE));
  const fillStarted = performance.now();
  const s = new FileStorage({ dataDir: dir, logger: silentLogger });
  await s.open(() => 'benchrestart');
  for (let r = 1; r <= RECORDS; r += FILL_WINDOW) {
    const acks = [];
    for (let k = r; k < r + FILL_WINDOW && k <= RECORDS; k++) acks.push(s.append(putEntry(k, distinct)));
    await Promise.all(acks);
  }
  const bytes = s.stats.bytesWritten;
  await s.close();
  const fillMs = Math.round(performance.now() - fillStarted);
  try {
    const agent = await startAgent(dir);
    const mem = memoryOf(agent.child.pid);
    await stopAgent(agent.child);
    return { records: RECORDS, distinctInstances: distinct, logMiB: +(bytes / 2 ** 20).toFixed(1), fillMs, spawnToListeningMs: agent.startMs, recoveryMs: agent.recoveryMs, ...mem };
  } finally {
    removeDir(dir);
  }
}

// ---- (c) snapshot ----

async function snapshotWrite() {
  const dir = tempDir('snapshot');
  const s = new FileStorage({ dataDir: dir, logger: silentLogger });
  const { epoch } = await s.open(() => 'benchsnap');
  try {
    await s.append({ revision: 1, changes: [] });
    const instances = Array.from({ length: SNAPSHOT_INSTANCES }, (_, i) => ({ instance: instance(`i${i}`, `svc${i % 100}`, 1, 8080), specs: [] }));
    const snap = { format: 1, epoch, revision: 1, leases: [], emptyServices: [], instances };
    const delay = monitorEventLoopDelay({ resolution: 1 });
    delay.enable();
    const t = performance.now();
    await s.writeSnapshot(snap);
    const ms = Math.round(performance.now() - t);
    delay.disable();
    return { instances: SNAPSHOT_INSTANCES, ms, loopDelayP99Ms: +(delay.percentile(99) / 1e6).toFixed(1), loopDelayMaxMs: +(delay.max / 1e6).toFixed(1) };
  } finally {
    await s.close();
    removeDir(dir);
  }
}

// ---- main ----

const machine = { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, memGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version, loadavg: os.loadavg().map((x) => +x.toFixed(2)) };
process.stdout.write(`machine: ${machine.cpus} cores, ${machine.cpuModel}, ${machine.memGiB} GiB, Node ${machine.node}, load average ${machine.loadavg.join(' ')}\n`);
const results = { machine, durationMs: DURATION_MS, clients: CLIENTS };
if (!args.only || args.only === 'a') {
  results.http = await httpRegistrations(true);
  process.stdout.write(`(a) HTTP PUT, ${CLIENTS} keep-alive clients, durable: ${results.http.perSecond} registrations/s, p50 ${results.http.p50Ms} ms, p99 ${results.http.p99Ms} ms\n`);
  results.httpDev = await httpRegistrations(false);
  process.stdout.write(`(a) HTTP PUT, ${CLIENTS} keep-alive clients, --dev (memory, for reference): ${results.httpDev.perSecond} registrations/s, p50 ${results.httpDev.p50Ms} ms, p99 ${results.httpDev.p99Ms} ms\n`);
  results.append64 = await directAppends(CLIENTS);
  process.stdout.write(`(a) FileStorage.append, ${CLIENTS} concurrent: ${results.append64.perSecond} appends/s, p50 ${results.append64.p50Ms} ms, p99 ${results.append64.p99Ms} ms, ${results.append64.appendsPerFsync} appends per fsync\n`);
  results.append1 = await directAppends(1);
  process.stdout.write(`(a) FileStorage.append, 1 at a time: ${results.append1.perSecond} appends/s, p50 ${results.append1.p50Ms} ms, p99 ${results.append1.p99Ms} ms (one fsync each)\n`);
}
if (!args.only || args.only === 'b') {
  results.restart = await restart();
  const r = results.restart;
  process.stdout.write(`(b) restart with ${r.records} records (${r.logMiB} MiB of log, ${r.distinctInstances} instances, no snapshot): listening after ${r.spawnToListeningMs} ms (recovery ${r.recoveryMs} ms), RSS ${r.rssMiB} MiB, peak ${r.peakRssMiB} MiB\n`);
}
if (!args.only || args.only === 'c') {
  results.snapshot = await snapshotWrite();
  const r = results.snapshot;
  process.stdout.write(`(c) snapshot of ${r.instances} instances written in ${r.ms} ms; event loop delay meanwhile p99 ${r.loopDelayP99Ms} ms, max ${r.loopDelayMaxMs} ms\n`);
}
process.stdout.write(JSON.stringify(results) + '\n');
