#!/usr/bin/env node
/**
 * `npm run bench`: the benchmarks of docs/benchmarks.md. `--suite` chooses:
 *   quick (default), full   Switchboard side by side with etcd and ZooKeeper
 *                           (bench/compare/runner.mjs, its own options)
 *   cp                      cp mode against the same etcd used directly (bench/cp.mjs)
 *   crosscheck              the peers' figures checked with their own clients: ZooKeeper's
 *                           Java client, etcdctl check perf (bench/crosscheck.mjs)
 *   standalone              the Switchboard-only benchmark in this file: each workload
 *                           runs against a fresh agent process; the load comes from a
 *                           separate generator process (bench/lib/loadgen.mjs).
 * Results go to bench/results/<timestamp>.json.
 *
 *   node bench/run.mjs --suite standalone [--duration 10s] [--warmup 2s] [--only reads,watch]
 *                      [--mode durable|dev] [--quick] [--profile] [--wait-quiet 60s]
 *                      [--agent PATH] [--help]
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve as resolvePath } from 'node:path';
import { parseArgs } from 'node:util';
import { Client } from 'undici';
import { formatSummary, summarize } from './profile-summary.mjs';
import { AGENT_BIN, ROOT, endAll, installCleanup, killAllNow, procStats, sleep } from './lib/procs.mjs';
import { gitFacts, machineFacts, openResults, parseDuration, positiveInt, runGenerator, waitQuiet } from './lib/harness.mjs';
import { Progress, fmtBytes, fmtInt, fmtMs, fmtPct, fmtUs, table } from './lib/report.mjs';
import { startSwitchboard } from './compare/systems/switchboard.mjs';

const WORKLOADS = [
  { name: 'reg-persistent', group: 'registrations', title: 'registrations, persistent', unit: 'writes/s' },
  { name: 'reg-lease', group: 'registrations', title: 'registrations, lease-bound', unit: 'writes/s' },
  { name: 'reads', group: 'reads', title: 'reads, 20 instances', unit: 'reads/s' },
  { name: 'reads-healthy', group: 'reads', title: 'reads, ?healthy=true', unit: 'reads/s' },
  { name: 'watch', group: 'watch', title: 'watch fan-out', unit: 'events/s' },
];

const HELP = `usage: npm run bench -- --suite standalone [options]
       (or: node bench/run.mjs --suite standalone [options])
       The default suite (quick) and --suite full compare Switchboard with etcd and
       ZooKeeper: npm run bench -- --help


Workloads (each against a fresh agent; the load from a separate process):
  reg-persistent   PUT registrations from --clients clients, no lease
  reg-lease        the same, every instance bound to the client's lease
  reads            GET /v1/services/catalog (20 instances) from --readers readers
  reads-healthy    the same with ?healthy=true (16 of 20 instances pass)
  watch            --watchers SSE watchers of one service; a writer changes it
                   --watch-rate times a second; latency from write to receipt
Options:
  --duration D     measured time per workload (default 10s; like 500ms, 10s, 1m)
  --warmup D       unmeasured time before it (default 2s)
  --only LIST      workloads or groups, comma-separated: registrations, reads,
                   watch, reg-persistent, reg-lease, reads-healthy
  --mode M         durable (default: --data-dir on a fresh temporary directory) or
                   dev (--dev, in memory). Without --mode, a durable agent is probed
                   first; if it fails and a --dev agent works, the run falls back to
                   dev, saying so; if no agent works, the run stops.
  --data-root DIR  where durable data directories are created (default the OS tmp dir)
  --wait-quiet D   before each workload, wait up to D until other processes use
                   less than 25% of a core (for shared machines; default no wait)
  --agent PATH     the agent's bin/switchboard.js (default this checkout's), to
                   compare another build (A/B) with the same load
  --quick          a short smoke run: 0.5s warm-up, 3s measured
  --profile        run the agent under node --cpu-prof; profiles and a summary of
                   the hottest functions go next to the results
  --clients N      registration clients (default 64)
  --readers N      read clients (default 64)
  --watchers N     watch streams (default 200)
  --watch-rate N   changes per second in the watch workload (default 20)
  --help           this text
`;

function options(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      duration: { type: 'string' },
      warmup: { type: 'string' },
      only: { type: 'string' },
      mode: { type: 'string' },
      'data-root': { type: 'string' },
      'wait-quiet': { type: 'string' },
      agent: { type: 'string' },
      quick: { type: 'boolean', default: false },
      profile: { type: 'boolean', default: false },
      clients: { type: 'string' },
      readers: { type: 'string' },
      watchers: { type: 'string' },
      'watch-rate': { type: 'string' },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (values.help) return { help: true };
  const quick = values.quick;
  const durationMs = values.duration !== undefined ? parseDuration(values.duration, '--duration') : quick ? 3000 : 10_000;
  const warmupMs = values.warmup !== undefined ? parseDuration(values.warmup, '--warmup', { allowZero: true }) : quick ? 500 : 2000;
  if (values.mode !== undefined && !['durable', 'dev'].includes(values.mode)) throw new Error(`--mode must be durable or dev, got "${values.mode}"`);
  let selected = WORKLOADS;
  if (values.only !== undefined) {
    const wanted = values.only.split(',').map((s) => s.trim()).filter(Boolean);
    for (const w of wanted) if (!WORKLOADS.some((x) => x.name === w || x.group === w)) throw new Error(`--only: unknown workload "${w}" (known: ${[...new Set(WORKLOADS.flatMap((x) => [x.group, x.name]))].join(', ')})`);
    selected = WORKLOADS.filter((x) => wanted.includes(x.name) || wanted.includes(x.group));
  }
  return {
    help: false,
    quick,
    durationMs,
    warmupMs,
    mode: values.mode ?? null,
    dataRoot: values['data-root'] ?? os.tmpdir(),
    agentBin: values.agent !== undefined ? resolvePath(values.agent) : AGENT_BIN,
    waitQuietMs: values['wait-quiet'] !== undefined ? parseDuration(values['wait-quiet'], '--wait-quiet') : 0,
    profile: values.profile,
    selected,
    clients: values.clients ? positiveInt(values.clients, '--clients', 1024) : 64,
    readers: values.readers ? positiveInt(values.readers, '--readers', 1024) : 64,
    watchers: values.watchers ? positiveInt(values.watchers, '--watchers', 5000) : 200,
    watchRate: values['watch-rate'] ? positiveInt(values['watch-rate'], '--watch-rate', 10_000) : 20,
  };
}

/** A standalone agent with every default (no configuration file), durable or --dev. */
function startAgent({ mode, dataRoot, bin, profileDir = null, profileName = 'agent.cpuprofile', timeoutMs = 15_000 }) {
  return startSwitchboard({ mode, dataRoot, bin, profileDir, profileName, timeoutMs, config: null });
}

/** How long a probe waits for the agent: longer than a run's start, so that a slow start is not taken for a failure. */
const PROBE_TIMEOUT_MS = 30_000;

/**
 * Checks that an agent in `mode` (durable: on a fresh data dir) starts and takes a write;
 * null when it works, else what went wrong.
 */
async function probeAgent(mode, dataRoot, bin) {
  let agent;
  try {
    agent = await startAgent({ mode, dataRoot, bin, timeoutMs: PROBE_TIMEOUT_MS });
    if (mode === 'durable' && agent.durable !== true) return `the agent started with --data-dir but reports durable=${agent.durable}`;
    const c = new Client(agent.url);
    try {
      const res = await c.request({ method: 'PUT', path: '/v1/services/probe/instances/p-1', headers: { 'content-type': 'application/json' }, body: '{"address":"127.0.0.1","port":1}' });
      const text = await res.body.text();
      if (res.statusCode !== 200) return `a registration on the ${mode} agent answered ${res.statusCode}: ${text.slice(0, 200)}`;
    } finally {
      await c.destroy();
    }
    return null;
  } catch (err) {
    return String(err.message ?? err).split('\n')[0];
  } finally {
    await agent?.stop(3000);
  }
}

async function runWorkload(w, idx, opts, mode, progress, profileDir) {
  const agent = await startAgent({ mode, dataRoot: opts.dataRoot, profileDir, profileName: `${w.name}.cpuprofile`, bin: opts.agentBin });
  const loadAverage = os.loadavg().map((x) => Math.round(x * 100) / 100);
  let stopped = null;
  try {
    const label = `[${idx + 1}/${opts.selected.length}] ${w.name.padEnd(14)}`;
    progress.update(`${label} starting`, { force: true });
    const r = await runGenerator({
      script: join(ROOT, 'bench/lib/loadgen.mjs'),
      workload: w.name,
      sys: agent,
      progress,
      label,
      hardLimitMs: opts.warmupMs + opts.durationMs + 90_000,
      options: {
        durationMs: opts.durationMs,
        warmupMs: opts.warmupMs,
        clients: opts.clients,
        readers: opts.readers,
        watchers: opts.watchers,
        watchRate: opts.watchRate,
        idsPerClient: 500,
        leaseTtlMs: 600_000,
        maxRequests: 20_000_000,
      },
    });
    const result = r.result;
    const c = r.cpu;
    const cpu = c ? { agent: c.serverCpuPct, generator: c.generatorCpuPct, others: c.othersCpuPct, agentCpuMs: c.serverCpuMs, windowMs: c.windowMs } : null;
    // Agent CPU per operation: a figure that does not depend on the generator keeping up.
    const ops = w.name === 'watch' ? result.writesMeasured * result.connected : result.requests;
    if (cpu && cpu.agentCpuMs !== null && ops > 0) cpu.agentUsPerOp = Math.round((cpu.agentCpuMs * 1000 * 10) / ops) / 10;
    const rss = procStats(agent.pid ?? agent.pids[0])?.rssBytes ?? null;
    return { result, cpu, agentRssBytes: rss, agentStartMs: agent.startMs, loadAverageAtStart: loadAverage };
  } finally {
    stopped = await agent.stop(profileDir ? 15_000 : 5000);
    const log = agent.log ?? { warnings: 0, errors: 0, examples: [], events: [], tail: [] };
    w.agentLog = { warnings: log.warnings, errors: log.errors, examples: log.examples.slice(0, 5), events: log.events, tail: log.tail.slice(-5), stop: stopped };
  }
}

function summaryRow(w, r) {
  const res = r.result;
  const cpu = r.cpu ?? {};
  if (w.name === 'watch') {
    const c = res.checks;
    return [w.title, `${fmtInt(res.eventsPerSec)} ${w.unit}`, fmtMs(res.latency.p50Ms), fmtMs(res.latency.p99Ms), fmtMs(res.latency.p999Ms), fmtMs(res.latency.maxMs), String(res.writeErrors.total + c.streamErrors), fmtUs(cpu.agentUsPerOp), fmtPct(cpu.agent), fmtPct(cpu.generator), fmtPct(cpu.others)];
  }
  return [w.title, `${fmtInt(res.ratePerSec)} ${w.unit}`, fmtMs(res.latency.p50Ms), fmtMs(res.latency.p99Ms), fmtMs(res.latency.p999Ms), fmtMs(res.latency.maxMs), String(res.errors.total), fmtUs(cpu.agentUsPerOp), fmtPct(cpu.agent), fmtPct(cpu.generator), fmtPct(cpu.others)];
}

function doneLine(idx, n, w, r) {
  const res = r.result;
  const pos = `[${idx + 1}/${n}] ${w.name.padEnd(14)}`;
  const cpu = r.cpu ? `  cpu: agent ${fmtPct(r.cpu.agent)} generator ${fmtPct(r.cpu.generator)} others ${fmtPct(r.cpu.others)}` : '';
  if (w.name === 'watch') {
    const c = res.checks;
    return `${pos} done    ${fmtInt(res.eventsPerSec)} events/s to ${res.connected} watchers  p50 ${fmtMs(res.latency.p50Ms)}  p99 ${fmtMs(res.latency.p99Ms)}  max ${fmtMs(res.latency.maxMs)}  missing ${c.missing}  out-of-order ${c.outOfOrder}${cpu}`;
  }
  return `${pos} done    ${fmtInt(res.ratePerSec)} ${w.unit}  p50 ${fmtMs(res.latency.p50Ms)}  p99 ${fmtMs(res.latency.p99Ms)}  p99.9 ${fmtMs(res.latency.p999Ms)}  errors ${res.errors.total}${cpu}`;
}

async function main(argv) {
  let opts;
  try {
    opts = options(argv);
  } catch (err) {
    process.stderr.write(`bench: ${err.message}\n\n${HELP}`);
    return 2;
  }
  if (opts.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (!existsSync(opts.agentBin)) {
    process.stderr.write(`bench: --agent ${opts.agentBin} does not exist\n`);
    return 2;
  }
  if (!existsSync(join(dirname(dirname(opts.agentBin)), 'dist/src/cli/main.js'))) {
    process.stderr.write('bench: the agent is not built; run `npm run bench` (it builds first) or `npm run build`\n');
    return 2;
  }
  const progress = new Progress();
  installCleanup(() => process.stdout.write('\nbench: interrupted; every process it started was killed\n'), (l) => progress.log(l));

  const { started, stamp, resultsDir, profileDir } = openResults(opts.profile);

  // ---- agent mode: durable by default; --dev only when a --dev agent works where a durable one did not ----
  let mode = opts.mode ?? 'durable';
  let fallbackReason = null;
  if (mode === 'durable') {
    progress.update('probing durable storage (--data-dir on a temporary directory)...', { force: true });
    const problem = await probeAgent('durable', opts.dataRoot, opts.agentBin);
    if (problem) {
      if (opts.mode === 'durable') {
        progress.done(`bench: --mode durable was asked for, but the durable agent does not work: ${problem}`);
        return 1;
      }
      // An agent that does not start at all (a broken build, a wrong --agent) is no reason for --dev.
      progress.done(`the durable agent did not work (${problem}); probing a --dev agent...`);
      const devProblem = await probeAgent('dev', opts.dataRoot, opts.agentBin);
      if (devProblem) {
        progress.done(`bench: no agent works: durable: ${problem}; --dev: ${devProblem}. Nothing was measured (is the agent built? is --agent right?)`);
        return 1;
      }
      fallbackReason = problem;
      mode = 'dev';
      const bar = '*'.repeat(88);
      progress.done(`${bar}\nFALLING BACK TO --dev (IN MEMORY): a durable agent (--data-dir) did not work (${problem}),\nbut a --dev agent did. These figures do not include fsync: not comparable with durable ones.\n${bar}`);
    } else {
      progress.done('durable storage works: agents run with --data-dir on fresh temporary directories');
    }
  }
  const facts = machineFacts({ dataRoot: mode === 'durable' ? opts.dataRoot : null });
  const source = opts.agentBin === AGENT_BIN ? gitFacts() : { agentBin: opts.agentBin, note: 'another build than this checkout (--agent)' };
  progress.log(
    `machine: ${facts.cpus} cores (${facts.cpuModel}), ${fmtBytes(facts.memoryBytes)}, node ${facts.node}; agent mode ${mode}${fallbackReason ? ' (fallback)' : ''}; ` +
      `${opts.warmupMs / 1000}s warm-up + ${opts.durationMs / 1000}s measured per workload`,
  );
  progress.log(`note: the load generator is a separate process but shares the ${facts.cpus} cores with the agent`);

  const results = [];
  let failed = false;
  for (let i = 0; i < opts.selected.length; i++) {
    const w = opts.selected[i];
    try {
      if (opts.waitQuietMs > 0) {
        const busy = await waitQuiet(opts.waitQuietMs, progress, `[${i + 1}/${opts.selected.length}] ${w.name.padEnd(14)}`);
        if (busy !== null && busy >= 25) progress.log(`  the machine did not become quiet (${fmtPct(busy)} of a core busy); running anyway`);
      }
      const r = await runWorkload(w, i, opts, mode, progress, profileDir);
      progress.done(doneLine(i, opts.selected.length, w, r));
      let profile = null;
      if (profileDir) {
        const file = join(profileDir, `${w.name}.cpuprofile`);
        if (existsSync(file)) profile = { file, summary: summarize(JSON.parse(readFileSync(file, 'utf8')), { top: 20 }) };
        else profile = { file: null, error: 'no profile written (the agent did not exit cleanly)' };
      }
      if (w.agentLog.warnings + w.agentLog.errors > 0) progress.log(`  the agent logged ${w.agentLog.warnings} warnings and ${w.agentLog.errors} errors; first: ${w.agentLog.examples[0]?.slice(0, 300)}`);
      if (w.agentLog.stop.forced) progress.log('  the agent did not stop within the grace period after SIGTERM and was killed');
      results.push({ workload: w.name, title: w.title, ...r, agentLog: w.agentLog, profile });
    } catch (err) {
      failed = true;
      progress.done(`[${i + 1}/${opts.selected.length}] ${w.name.padEnd(14)} FAILED: ${err.message}`);
      results.push({ workload: w.name, title: w.title, error: err.message, agentLog: w.agentLog ?? null });
    }
  }

  // ---- report ----
  const ok = results.filter((r) => !r.error);
  const rows = results.map((r) => (r.error ? [r.title, 'FAILED', '-', '-', '-', '-', '-', '-', '-', '-', '-'] : summaryRow(WORKLOADS.find((w) => w.name === r.workload), r)));
  process.stdout.write('\n' + table(['workload', 'throughput', 'p50', 'p99', 'p99.9', 'max', 'errors', 'agent CPU/op', 'agent CPU', 'gen. CPU', 'other CPU'], rows) + '\n');
  const watch = ok.find((r) => r.workload === 'watch');
  if (watch) {
    const x = watch.result;
    const c = x.checks;
    process.stdout.write(
      `\nwatch: ${x.connected} watchers, ${x.writesAcknowledged} writes at ${x.writeRate}/s; latency from the write's send time to receipt (p50/p99/max above);\n` +
        `       write ack p50 ${fmtMs(x.ackLatency.p50Ms)} p99 ${fmtMs(x.ackLatency.p99Ms)}; spread first-to-last watcher p50 ${fmtMs(x.fanoutSpread.p50Ms)} max ${fmtMs(x.fanoutSpread.maxMs)}` +
        (x.writerFellBehind > 0 ? `; the writer had ${x.writerFellBehind} times 16 writes in flight (the rate was not kept)` : '') +
        ';\n' +
        `       deliveries ${fmtInt(x.eventsReceived)} of ${fmtInt(c.expectedDeliveries)}: missing ${c.missing}, out-of-order ${c.outOfOrder}, duplicates ${c.duplicates}, id mismatches ${c.idMismatch}, stream errors ${c.streamErrors}` +
        (c.missing === 0 && c.outOfOrder === 0 ? '  [OK]' : '  [FAIL]') +
        '\n',
    );
  }
  const disturbed = ok.filter((r) => (r.cpu?.others ?? 0) > 25);
  if (disturbed.length > 0) {
    process.stdout.write(
      `\nWARNING: other processes on this machine used CPU during ${disturbed.map((r) => `${r.workload} (${fmtPct(r.cpu.others)} of a core)`).join(', ')}; ` +
        'those figures are disturbed: re-run on a quiet machine\n',
    );
  }
  for (const r of ok.filter((r) => r.result.checks?.revisionMismatch)) process.stdout.write(`\n${r.workload}: the agent made ${r.result.checks.revisionsMade} revisions for ${r.result.checks.acknowledgedWrites} acknowledged writes\n`);
  process.stdout.write(
    `\nagent mode: ${mode}${fallbackReason ? ` (FALLBACK from durable: ${fallbackReason})` : ''}; ${facts.cpus} cores shared by the agent and the load generator; ` +
      `CPU is % of one core over the measured window; "agent CPU/op" is the agent's CPU time per request (watch: per event delivered)\n`,
  );
  if (profileDir) {
    for (const r of ok) if (r.profile?.summary) process.stdout.write('\n' + formatSummary(r.profile.summary, `agent CPU profile, ${r.workload}`) + '\n');
  }

  const out = {
    format: 1,
    startedAt: started.toISOString(),
    finishedAt: new Date().toISOString(),
    command: ['node', 'bench/run.mjs', '--suite', 'standalone', ...process.argv.slice(2).filter((a, i, all) => a !== '--suite' && all[i - 1] !== '--suite' && !a.startsWith('--suite='))].join(' '),
    machine: facts,
    source,
    agent: { requestedMode: opts.mode ?? 'durable (default)', mode, fallbackReason, version: ok[0]?.result.agent?.version ?? null, bin: opts.agentBin },
    settings: { durationMs: opts.durationMs, warmupMs: opts.warmupMs, clients: opts.clients, readers: opts.readers, watchers: opts.watchers, watchRate: opts.watchRate, quick: opts.quick, profile: opts.profile },
    notes: [`The load generator runs in its own process, but on this ${facts.cpus}-core machine it shares the cores with the agent.`, 'CPU figures are percent of one core over the measured window (user + system); "others" is every other process on the machine.'],
    workloads: results,
  };
  const file = join(resultsDir, `${stamp}.json`);
  writeFileSync(file, JSON.stringify(out, null, 2) + '\n');
  process.stdout.write(`\nresults: ${file}\n`);
  // Everything this run started must be gone now.
  process.stdout.write(await endAll());
  return failed ? 1 : 0;
}

/** `--suite NAME` (or `--suite=NAME`) and the other arguments. */
function suiteOf(argv) {
  const rest = [];
  let suite = null;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--suite') suite = argv[++i] ?? '';
    else if (argv[i].startsWith('--suite=')) suite = argv[i].slice(8);
    else rest.push(argv[i]);
  }
  return { suite, rest };
}

const { suite, rest } = suiteOf(process.argv.slice(2));
const run =
  suite === 'standalone'
    ? main(rest)
    : suite === 'ap' ? import('./ap.mjs').then((m) => m.main(rest))
    : suite === 'cp'
    ? import('./cp.mjs').then((m) => m.main(rest))
    : suite === 'crosscheck'
    ? import('./crosscheck.mjs').then((m) => m.main(rest))
    : import('./compare/runner.mjs').then((m) => m.main(process.argv.slice(2)));
run.then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`bench: ${err?.stack ?? err}\n`);
    killAllNow();
    process.exitCode = 1;
  },
);
