#!/usr/bin/env node
/**
 * `npm run bench -- --suite cp`: cp mode against the same etcd used directly.
 *
 *   1. registrations: persistent registrations through three cp nodes (PUT, keep-alive
 *      HTTP connections) vs puts of the same JSON value into the same 3-member etcd with
 *      the etcd3 client;
 *   2. consistent reads of a 20-instance service: GET ?consistent=true through three cp
 *      nodes vs linearizable prefix range reads;
 *   3. write unavailability after SIGKILL of the etcd leader: one sequential writer (cp:
 *      through one node, retrying 503 after 20 ms; etcd: the etcd3 client with a
 *      deliberate fault policy, see below), the longest gap between two acknowledged
 *      writes around the kill; median of --kill-trials fresh clusters.
 *
 * --trials N (default 3): the throughput step runs N times, each on a fresh etcd
 * cluster; the table shows the run whose overhead is the median, and every run's overhead.
 * --kill-trials N (default 5): leader-kill runs of each kind (etcd's randomised election
 * timeout moves the gap between about one and two election timeouts from run to run).
 *
 * Throughput is reported with the CPU time the servers used (etcd members, plus the cp
 * nodes for cp): operations per server CPU-second, and the overhead of cp on that.
 * The load generator runs in this process and is not counted.
 *
 * etcd3 client fault policy for the direct runs: no retries and no circuit breaker
 * (cockatiel's noop, as bench/compare/drivers/etcd.mjs), a 1 s deadline per call, so a
 * call to a dead leader fails fast and the next call picks another endpoint. The default
 * breaker (open for 5 s after 3 failures) stretched a gap to 4.8 s in one run.
 *
 *   node bench/run.mjs --suite cp [--duration 8s] [--warmup 2s] [--concurrency 32] [--trials 3] [--kill-trials 5] [--only registrations,reads,leader-kill] [--write-docs]
 *   node bench/cp.mjs --report bench/results/cp-<time>.json --write-docs
 *
 * --profile DIR: the cp nodes of the throughput step write CPU profiles into DIR
 * (summarise with bench/profile-summary.mjs).
 * --write-docs puts the table into docs/benchmarks.md (between the `cp` generated markers).
 */
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { Pool } from 'undici';
import { startEtcd } from './compare/systems/etcd.mjs';
import { ROOT, freePorts, installCleanup, killAllNow, runIfScript, sleep, sumStats, track, waitReady } from './lib/procs.mjs';
import { gitFacts, median, parseDuration, positiveInt } from './lib/harness.mjs';
import { payload } from './compare/lib/payload.mjs';
import { replaceGenerated } from './lib/docs.mjs';
import { openSession } from './compare/drivers/switchboard.mjs';
import { fmtInt } from './lib/report.mjs';

const require = createRequire(import.meta.url);
const { Etcd3 } = require('etcd3');
const { noop } = createRequire(require.resolve('etcd3'))('cockatiel');

const AGENT = join(ROOT, 'packages/registry/bin/switchboard.js');
/** What --only can pick. */
const PARTS = ['registrations', 'reads', 'leader-kill'];

/** With `profileDir` (--profile), the nodes run with --cpu-prof and write their profiles there. */
async function startCpNodes(etcd, n = 3, profileDir = null) {
  const ports = await freePorts(n);
  const prefix = `/bench-${process.pid}/`;
  const nodes = [];
  for (let i = 0; i < n; i++) {
    const proc = track(
      spawn(process.execPath, [...(profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir, '--cpu-prof-name', `cp-b${i + 1}-${Date.now()}.cpuprofile`] : []), AGENT, 'agent', '--mode', 'cp', '--etcd', etcd.endpoints.map((e) => `http://${e}`).join(','), '--etcd-prefix', prefix, '--node-id', `b${i + 1}`, '--http-addr', `127.0.0.1:${ports[i]}`, '--log-level', 'warn', '--log-format', 'json'], { stdio: ['ignore', 'ignore', 'inherit'] }),
      `cp node b${i + 1}`,
    );
    proc.name = `cp node b${i + 1}`;
    proc.logFile = '/dev/null';
    nodes.push({ proc, url: `http://127.0.0.1:${ports[i]}` });
  }
  for (const node of nodes) {
    await waitReady({ what: 'cp node', procs: [node.proc], timeoutMs: 30_000, probe: async () => (await fetch(`${node.url}/readyz`)).ok });
    node.pool = new Pool(node.url, { connections: 16, pipelining: 1 });
  }
  return {
    nodes,
    pids: nodes.map((x) => x.proc.pid),
    async stop() {
      await Promise.all(nodes.map((x) => x.pool?.close()));
      await Promise.all(nodes.map((x) => new Promise((r) => (x.proc.exitCode !== null ? r() : (x.proc.once('exit', r), x.proc.kill('SIGTERM'))))));
    },
  };
}

function directClient(etcd) {
  return new Etcd3({
    hosts: etcd.endpoints.map((e) => `http://${e}`),
    faultHandling: { host: () => noop, global: noop },
    defaultCallOptions: () => ({ deadline: Date.now() + 1000 }),
  });
}

/** Unmeasured writes through the cp nodes before their first figure (see throughput()). */
const NODE_WARMUP_MS = 6_000;

/** Runs `op` from `concurrency` loops for warmup + duration; counts ops in the measured part with the servers' CPU. */
async function measure({ concurrency, warmupMs, durationMs, pids, nodePids = [], op }) {
  let measuring = false;
  let stop = false;
  let ops = 0;
  let errors = 0;
  // The first few errors' messages, so that a run with errors says what they were.
  const errorSamples = [];
  const loops = Array.from({ length: concurrency }, async (_, w) => {
    let i = 0;
    while (!stop) {
      try {
        await op(w, i++);
        if (measuring) ops++;
      } catch (err) {
        if (measuring) errors++;
        if (measuring && errorSamples.length < 3) errorSamples.push(String(err?.message ?? err).slice(0, 300));
      }
    }
  });
  await sleep(warmupMs);
  const cpu0 = sumStats(pids);
  const nodes0 = nodePids.length ? sumStats(nodePids) : null;
  const t0 = performance.now();
  measuring = true;
  await sleep(durationMs);
  measuring = false;
  const seconds = (performance.now() - t0) / 1000;
  const cpu1 = sumStats(pids);
  const nodes1 = nodePids.length ? sumStats(nodePids) : null;
  stop = true;
  await Promise.all(loops);
  const cpuSeconds = cpu0 && cpu1 ? (cpu1.cpuMs - cpu0.cpuMs) / 1000 : NaN;
  const out = { opsPerSec: ops / seconds, errors, ...(errorSamples.length > 0 && { errorSamples }), cpuSeconds, opsPerCpuSecond: ops / cpuSeconds };
  // For cp: the cp nodes' share of the server CPU (the rest is etcd's), in µs per operation for each part.
  if (nodes0 && nodes1) {
    const nodeCpuSeconds = (nodes1.cpuMs - nodes0.cpuMs) / 1000;
    Object.assign(out, { nodeCpuSeconds, nodeCpuUsPerOp: (nodeCpuSeconds / ops) * 1e6, etcdCpuUsPerOp: ((cpuSeconds - nodeCpuSeconds) / ops) * 1e6 });
  }
  return out;
}

async function httpOk(pool, method, path, body) {
  const res = await pool.request({ method, path, headers: body ? { 'content-type': 'application/json' } : {}, body });
  const text = await res.body.text();
  if (res.statusCode >= 300) throw new Error(`${method} ${path}: ${res.statusCode} ${text.slice(0, 200)}`);
  return text;
}

async function throughput(opts) {
  const want = (part) => opts.only === null || opts.only.has(part);
  const etcd = await startEtcd({ members: 3 });
  const out = {};
  try {
    const direct = directClient(etcd);
    const reads = [];
    for (let i = 0; i < 20; i++) reads.push(direct.put(`/services/read/${i}`).value(payload(1, i, i)));
    await Promise.all(reads);
    if (want('registrations')) out.registrations = { etcd: await measure({ ...opts, pids: etcd.pids, op: (w, i) => direct.put(`/services/reg/w${w}-${i % 500}`).value(payload(w, i, i)) }) };
    if (want('reads')) out.consistentReads = { etcd: await measure({ ...opts, pids: etcd.pids, op: () => direct.getAll().prefix('/services/read/').strings() }) };
    direct.close();
    const cp = await startCpNodes(etcd, 3, opts.profileDir);
    try {
      for (let i = 0; i < 20; i++) await httpOk(cp.nodes[0].pool, 'PUT', `/v1/services/read/instances/i${i}`, payload(1, i, i));
      const pids = [...etcd.pids, ...cp.pids];
      const cluster = async () => (await Promise.all(cp.nodes.map(async (n) => JSON.parse(await httpOk(n.pool, 'GET', '/v1/status')).cluster ?? {}))).reduce((a, x) => ({ batches: a.batches + (x.writeBatches?.batches ?? 0), writes: a.writes + (x.writeBatches?.writes ?? 0), barrierWrites: a.barrierWrites + (x.barrierWrites ?? 0) }), { batches: 0, writes: 0, barrierWrites: 0 });
      // New Node processes run their hot code unoptimised for seconds, three of them on two
      // cores the longer: the nodes first take the same writes for NODE_WARMUP_MS, not
      // measured (without it the first figure measured, the REST registrations, cost the
      // nodes about a fifth more CPU per write than the same workload run again). They
      // write the instances the registrations then write again, so no others are left.
      await measure({ ...opts, warmupMs: 0, durationMs: NODE_WARMUP_MS, pids, op: (w, i) => httpOk(cp.nodes[w % 3].pool, 'PUT', `/v1/services/reg/instances/w${w}-${i % 500}`, payload(w, i, i)) });
      if (want('registrations')) {
        const before = await cluster();
        out.registrations.cp = await measure({ ...opts, pids, nodePids: cp.pids, op: (w, i) => httpOk(cp.nodes[w % 3].pool, 'PUT', `/v1/services/reg/instances/w${w}-${i % 500}`, payload(w, i, i)) });
        const after = await cluster();
        // Writes per etcd transaction (group commit), over the warm-up and the measured window.
        out.registrations.cp.writesPerTxn = (after.writes - before.writes) / Math.max(1, after.batches - before.batches);
      }
      if (want('reads')) {
        const before = await cluster();
        out.consistentReads.cp = await measure({ ...opts, pids, nodePids: cp.pids, op: (w) => httpOk(cp.nodes[w % 3].pool, 'GET', '/v1/services/read?consistent=true') });
        // On etcd releases whose progress answers can overtake events the views prove progress with barrier writes (docs/cp.md).
        out.consistentReads.cp.barrierWrites = (await cluster()).barrierWrites - before.barrierWrites;
      }
      // The same through session streams (one per worker, requests instead of HTTP
      // requests: docs/api.md, "Requests over the session"), as the SDK writes.
      const sessions = await Promise.all(Array.from({ length: opts.concurrency }, (_, w) => openSession(cp.nodes[w % 3].url, 0, { lease: false })));
      try {
        if (want('registrations')) {
          const before = await cluster();
          out.registrations.cpSession = await measure({ ...opts, pids, nodePids: cp.pids, op: (w, i) => sessions[w].request((id) => `{"type":"register","id":${id},"service":"reg","instanceId":"w${w}-${i % 500}","instance":${payload(w, i, i)}}`) });
          const after = await cluster();
          out.registrations.cpSession.writesPerTxn = (after.writes - before.writes) / Math.max(1, after.batches - before.batches);
        }
        if (want('reads')) {
          const before = await cluster();
          out.consistentReads.cpSession = await measure({ ...opts, pids, nodePids: cp.pids, op: (w) => sessions[w].request((id) => `{"type":"read","id":${id},"service":"read","consistent":true}`) });
          out.consistentReads.cpSession.barrierWrites = (await cluster()).barrierWrites - before.barrierWrites;
        }
      } finally {
        for (const x of sessions) x.terminate();
      }
    } finally {
      await cp.stop();
    }
  } finally {
    await etcd.stop();
  }
  for (const r of Object.values(out)) {
    r.overheadPerCpuSecond = 1 - r.cp.opsPerCpuSecond / r.etcd.opsPerCpuSecond;
    if (r.cpSession) r.overheadSessionPerCpuSecond = 1 - r.cpSession.opsPerCpuSecond / r.etcd.opsPerCpuSecond;
  }
  return out;
}

async function leaderIndex(etcd) {
  for (let i = 0; i < 100; i++) {
    for (let m = 0; m < etcd.endpoints.length; m++) {
      try {
        const text = await (await fetch(`http://${etcd.endpoints[m]}/metrics`, { signal: AbortSignal.timeout(1000) })).text();
        if (/^etcd_server_is_leader 1/m.test(text)) return m;
      } catch {
        /* not answering */
      }
    }
    await sleep(100);
  }
  throw new Error('etcd has no leader');
}

/** One trial: a sequential writer; the etcd leader is killed after 2 s; the longest gap between acknowledged writes. */
async function unavailabilityTrial(kind) {
  const etcd = await startEtcd({ members: 3 });
  let cp = null;
  let direct = null;
  try {
    let write;
    if (kind === 'cp') {
      cp = await startCpNodes(etcd);
      const pool = cp.nodes[0].pool;
      write = (i) => httpOk(pool, 'PUT', `/v1/services/gap/instances/i${i % 100}`, payload(2, i, i));
    } else {
      direct = directClient(etcd);
      write = (i) => direct.put(`/services/gap/i${i % 100}`).value(payload(2, i, i));
    }
    let stop = false;
    let last = performance.now();
    let longest = 0;
    let acked = 0;
    let failed = 0;
    const writer = (async () => {
      for (let i = 0; !stop; i++) {
        try {
          await write(i);
          const now = performance.now();
          longest = Math.max(longest, now - last);
          last = now;
          acked++;
        } catch {
          failed++;
          await sleep(20);
        }
      }
    })();
    await sleep(2000);
    longest = 0;
    const leader = await leaderIndex(etcd);
    etcd.procs[leader].kill('SIGKILL');
    await sleep(8000);
    stop = true;
    await writer;
    return { longestGapMs: Math.round(longest), acked, failed };
  } finally {
    await cp?.stop();
    direct?.close();
    await etcd.stop();
  }
}


/**
 * The run whose overhead is the median, per workload, so that a row's figures come from one
 * run; errors and barrier writes are totals over the runs (a failed run must not hide
 * behind two clean ones), and the overhead of every run is kept for the table.
 */
function medianThroughput(runs) {
  const out = {};
  for (const k of Object.keys(runs[0])) {
    // The run of median overhead over the session where it was measured (the SDK's way), else over REST.
    const key = runs[0][k].overheadSessionPerCpuSecond !== undefined ? 'overheadSessionPerCpuSecond' : 'overheadPerCpuSecond';
    const byOverhead = [...runs].sort((x, y) => x[k][key] - y[k][key]);
    const mid = byOverhead[Math.floor((byOverhead.length - 1) / 2)][k];
    const total = (name, f) => runs.reduce((a, x) => a + (Number.isFinite(x[k][name]?.[f]) ? x[k][name][f] : 0), 0);
    const side = (name) => ({ ...mid[name], errors: total(name, 'errors'), ...(mid[name].barrierWrites !== undefined && { barrierWrites: total(name, 'barrierWrites') }) });
    out[k] = { etcd: side('etcd'), cp: side('cp'), overheadPerCpuSecond: mid.overheadPerCpuSecond, overheadRuns: runs.map((x) => x[k].overheadPerCpuSecond) };
    if (mid.cpSession) Object.assign(out[k], { cpSession: side('cpSession'), overheadSessionPerCpuSecond: mid.overheadSessionPerCpuSecond, overheadSessionRuns: runs.map((x) => x[k].overheadSessionPerCpuSecond) });
  }
  return out;
}

export async function main(argv) {
  const { values } = parseArgs({ args: argv, options: { duration: { type: 'string', default: '8s' }, warmup: { type: 'string', default: '2s' }, concurrency: { type: 'string', default: '32' }, trials: { type: 'string', default: '3' }, 'kill-trials': { type: 'string', default: '5' }, 'write-docs': { type: 'boolean', default: false }, profile: { type: 'string' }, report: { type: 'string' }, suite: { type: 'string' }, only: { type: 'string' }, help: { type: 'boolean', default: false } } });
  if (values.help) {
    process.stdout.write('usage: npm run bench -- --suite cp [--duration 8s] [--warmup 2s] [--concurrency 32] [--trials 3] [--kill-trials 5] [--only registrations,reads,leader-kill] [--write-docs]\n       node bench/cp.mjs --report RESULTS.json --write-docs\n');
    return 0;
  }
  if (values.report) {
    const out = JSON.parse(readFileSync(values.report, 'utf8'));
    if (out.throughputRuns?.length > 0) out.throughput = medianThroughput(out.throughputRuns);
    process.stdout.write(renderCp(out).join('\n') + '\n');
    if (values['write-docs']) process.stdout.write(`docs: ${writeCpDocs(out, values.report)} regenerated from ${values.report}\n`);
    return 0;
  }
  installCleanup();
  const only = values.only === undefined ? null : new Set(values.only.split(',').map((x) => x.trim()).filter(Boolean));
  for (const part of only ?? []) {
    if (!PARTS.includes(part)) throw new Error(`--only: unknown part "${part}" (parts: ${PARTS.join(', ')})`);
  }
  if (only !== null && values['write-docs']) throw new Error('--write-docs needs every part: leave out --only');
  const opts = { durationMs: parseDuration(values.duration, '--duration'), warmupMs: parseDuration(values.warmup, '--warmup', { allowZero: true }), concurrency: positiveInt(values.concurrency, '--concurrency'), profileDir: values.profile ?? null, only };
  const started = new Date();
  const startLoad = loadavg();
  const trials = positiveInt(values.trials, '--trials');
  const tpRuns = [];
  if (only === null || only.has('registrations') || only.has('reads')) for (let t = 0; t < trials; t++) tpRuns.push(await throughput(opts));
  const tp = tpRuns.length > 0 ? medianThroughput(tpRuns) : {};
  const fmt = (r) => `${Math.round(r.opsPerSec)} ops/s, ${r.cpuSeconds.toFixed(1)} server CPU-s, ${Math.round(r.opsPerCpuSecond)} ops per CPU-s${r.errors ? `, ${r.errors} errors` : ''}${r.barrierWrites !== undefined ? `, ${r.barrierWrites} barrier writes` : ''}${r.writesPerTxn !== undefined ? `, ${r.writesPerTxn.toFixed(1)} writes per etcd transaction` : ''}${r.nodeCpuUsPerOp !== undefined ? ` (per op: etcd ${Math.round(r.etcdCpuUsPerOp)} µs, cp nodes ${Math.round(r.nodeCpuUsPerOp)} µs of CPU)` : ''}`;
  for (const [k, r] of Object.entries(tp)) {
    const runsOf = (xs) => (tpRuns.length > 1 ? ` (runs: ${xs.map((x) => `${(x * 100).toFixed(0)}%`).join(', ')})` : '');
    process.stdout.write(`${k}${tpRuns.length > 1 ? ` (the run of median overhead, of ${tpRuns.length})` : ''}\n  etcd direct  ${fmt(r.etcd)}\n  cp (3 nodes) ${fmt(r.cp)}\n  overhead per server CPU-second: ${(r.overheadPerCpuSecond * 100).toFixed(0)}%${runsOf(r.overheadRuns)}\n`);
    if (r.cpSession) process.stdout.write(`  cp over the session ${fmt(r.cpSession)}\n  overhead per server CPU-second: ${(r.overheadSessionPerCpuSecond * 100).toFixed(0)}%${runsOf(r.overheadSessionRuns)}\n`);
  }
  const gaps = { etcd: [], cp: [] };
  // The gap is mostly etcd's election, whose timeout is randomised between one and two
  // election timeouts: its median needs more runs than the throughput figures.
  const killTrials = positiveInt(values['kill-trials'], '--kill-trials');
  for (let t = 0; t < (only === null || only.has('leader-kill') ? killTrials : 0); t++) {
    for (const kind of ['etcd', 'cp']) {
      const r = await unavailabilityTrial(kind);
      gaps[kind].push(r);
      process.stdout.write(`leader kill, ${kind}: longest write gap ${r.longestGapMs} ms (${r.acked} writes acknowledged, ${r.failed} refused)\n`);
    }
  }
  const summary = gaps.cp.length > 0 ? { etcd: median(gaps.etcd.map((g) => g.longestGapMs)), cp: median(gaps.cp.map((g) => g.longestGapMs)) } : null;
  if (summary) process.stdout.write(`write unavailability after a leader kill (median of ${killTrials}): etcd direct ${summary.etcd} ms, cp ${summary.cp} ms\n`);
  const dir = join(ROOT, 'bench/results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `cp-${started.toISOString().replace(/[:.]/g, '-')}.json`);
  const out = { suite: 'cp', started: started.toISOString(), command: `npm run bench -- --suite cp ${argv.filter((a) => !a.startsWith('--suite') && a !== 'cp').join(' ')}`.trim(), commit: gitFacts().commit?.slice(0, 12) ?? null, machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? '', loadavgAtStart: startLoad, loadavgAtEnd: loadavg() }, options: { ...opts, only: only && [...only], nodeWarmupMs: NODE_WARMUP_MS }, throughput: tp, throughputRuns: tpRuns, leaderKill: { trials: gaps, medianLongestGapMs: summary } };
  writeFileSync(file, JSON.stringify(out, null, 2) + '\n');
  process.stdout.write(`results: ${file}\n`);
  if (values['write-docs']) process.stdout.write(`docs: ${writeCpDocs(out, file)} regenerated from these results\n`);
  killAllNow();
  return 0;
}

const CP_BEGIN = '<!-- BEGIN GENERATED: cp (npm run bench -- --suite cp --write-docs, or node bench/cp.mjs --report RESULTS.json --write-docs) -->';
const CP_END = '<!-- END GENERATED: cp -->';

/** The cp table, as Markdown. */
function renderCp(out) {
  const n0 = fmtInt;
  const pct = (x) => `${Math.round(x * 100)}%`;
  const L = ['| | etcd used directly | cp, 3 nodes | cp overhead per server CPU-second | server CPU per operation: etcd direct; cp: etcd + nodes |', '|---|---:|---:|---:|---:|'];
  const us = (x) => `${fmtInt(x)} µs`;
  const split = (r, cp) => (cp.etcdCpuUsPerOp === undefined ? '' : `${us(1e6 / r.etcd.opsPerCpuSecond)}; ${us(cp.etcdCpuUsPerOp)} + ${us(cp.nodeCpuUsPerOp)}${cp.writesPerTxn !== undefined ? ` (${cp.writesPerTxn.toFixed(1)} writes per etcd transaction)` : ''}`);
  const row = (title, r, cp, overhead, runs) =>
    `| ${title} | ${n0(r.etcd.opsPerSec)}/s, ${n0(r.etcd.opsPerCpuSecond)} per server CPU-s | ${n0(cp.opsPerSec)}/s, ${n0(cp.opsPerCpuSecond)} per server CPU-s | ${pct(overhead)}${runs?.length > 1 ? ` (runs: ${runs.map(pct).join(', ')})` : ''} (target under 25%: ${overhead < 0.25 ? 'met' : '**not met**'}${runs?.length > 1 && runs.some((x) => x < 0.25) !== runs.every((x) => x < 0.25) ? `; met in ${runs.filter((x) => x < 0.25).length} of ${runs.length} runs` : ''}) | ${split(r, cp)} |`;
  for (const [k, title] of [['registrations', 'registrations/s (32 concurrent)'], ['consistentReads', 'consistent reads/s of a 20-instance service (32 concurrent)']]) {
    const r = out.throughput[k];
    if (!r) continue;
    L.push(row(`${title}, REST`, r, r.cp, r.overheadPerCpuSecond, r.overheadRuns));
    if (r.cpSession) L.push(row(`${title}, over the session`, r, r.cpSession, r.overheadSessionPerCpuSecond, r.overheadSessionRuns));
  }
  const lk = out.leaderKill;
  if (!lk?.medianLongestGapMs) return L;
  const all = (kind) => lk.trials[kind].map((g) => n0(g.longestGapMs)).join(', ');
  L.push(`| longest write gap after SIGKILL of the etcd leader (median of ${lk.trials.etcd.length}; all runs) | ${n0(lk.medianLongestGapMs.etcd)} ms (${all('etcd')}) | ${n0(lk.medianLongestGapMs.cp)} ms (${all('cp')}) | ${(() => { const d = lk.medianLongestGapMs.cp - lk.medianLongestGapMs.etcd; return d >= 0 ? `${n0(d)} ms more` : `${n0(-d)} ms less`; })()} | |`);
  return L;
}

function writeCpDocs(out, resultsFile) {
  const rel = relative(ROOT, resolve(resultsFile));
  const m = out.machine;
  const head = `*This part is generated* from \`${rel}\` (\`${out.command ?? 'npm run bench -- --suite cp'}\`, ${out.started}${out.commit ? `, Switchboard at commit ${out.commit}` : ''}; ${out.options.warmupMs / 1000} s warm-up + ${out.options.durationMs / 1000} s measured per throughput figure${out.options.nodeWarmupMs ? `, after ${out.options.nodeWarmupMs / 1000} s of unmeasured writes through the new cp nodes` : ''}${m ? `; ${m.cpus} cores, ${m.cpuModel}, load average ${m.loadavgAtStart.map((x) => x.toFixed(1)).join(' ')} at the start` : ''}). Server CPU is the etcd members' (plus the cp nodes' for cp); the load generator runs in the benchmark process and is not counted.${out.throughputRuns?.length > 1 ? ` Throughput figures: of ${out.throughputRuns.length} runs, each on a fresh etcd cluster, the one whose overhead is the median (the overhead of every run is listed).` : ''}`;
  return replaceGenerated(join(ROOT, 'docs/benchmarks.md'), CP_BEGIN, CP_END, [head, '', ...renderCp(out), '']);
}

runIfScript(import.meta.url, 'cp', main);
