/**
 * The comparison suite: the same workloads against Switchboard, etcd and ZooKeeper on this
 * machine, in one run (issue 4; the method is in docs/benchmarks.md).
 *
 *   npm run bench                      the quick suite (under ten minutes)
 *   npm run bench -- --suite full      every workload, every level, 3-member clusters too
 *
 * The runner installs the peers when missing (apt-get), starts every server itself on
 * 127.0.0.1 in temporary directories, forks the load generator (bench/compare/loadgen.mjs)
 * for each run, reads the servers' CPU time and memory from /proc, and writes the results
 * to bench/results/<timestamp>.json. Every process and directory it made is removed at the
 * end, on failure and on Ctrl-C.
 */
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ensurePeers } from './lib/install.mjs';
import { ROOT, forkTracked, endAll, installCleanup, killAllNow, sleep, stopProc, sumStats } from '../lib/procs.mjs';
import { gitFacts, machineFacts, median, openResults, parseDuration, pkgVersion, runGenerator, speedCheck, stat, summarizeProfiles, targetOf, waitQuiet } from '../lib/harness.mjs';
import { startEtcd } from './systems/etcd.mjs';
import { startSwitchboard } from './systems/switchboard.mjs';
import { startZookeeper } from './systems/zookeeper.mjs';
import { Progress, fmtBytes, fmtInt, fmtMs, fmtPct } from '../lib/report.mjs';
import { watchFigures } from './lib/watchstats.mjs';
import { docsRefusals, renderTable } from './report.mjs';

// ------------------------------------------------------------------ systems

/** The systems under test; `peer` ones are installed via apt-get when missing. */
export const SYSTEMS = {
  switchboard: { label: 'Switchboard', kind: 'switchboard', start: (o) => startSwitchboard(o) },
  etcd: { label: 'etcd', kind: 'etcd', peer: 'etcd', start: () => startEtcd({ members: 1 }) },
  etcd3: { label: 'etcd x3', kind: 'etcd', peer: 'etcd', start: () => startEtcd({ members: 3 }) },
  zookeeper: { label: 'ZooKeeper', kind: 'zookeeper', peer: 'zookeeper', start: () => startZookeeper({ nodes: 1 }) },
  zookeeper3: { label: 'ZooKeeper x3', kind: 'zookeeper', peer: 'zookeeper', start: () => startZookeeper({ nodes: 3 }) },
};

/**
 * Switchboard's two ways of sending a registration: a REST request each (what any HTTP
 * client does), or a request on the session stream the process holds for its lease
 * (what the SDK does; docs/api.md, "Requests over the session").
 */
const REGISTER_VARIANTS = {
  switchboard: [{ variant: 'REST', transport: 'rest' }, { variant: 'session', transport: 'requests' }],
};

/** Variants of one workload per system kind (read consistency / read style). */
const READ_VARIANTS = {
  switchboard: [{ variant: 'REST', readMode: 'rest' }, { variant: 'session', readMode: 'session' }, { variant: 'session, endpoints only', readMode: 'session-endpoints' }],
  etcd: [{ variant: 'serializable', readMode: 'serializable' }, { variant: 'linearizable', readMode: 'linearizable' }],
  zookeeper: [{ variant: 'Curator: children + data', readMode: 'curator' }, { variant: 'bare getChildren', readMode: 'bare' }],
};

// ------------------------------------------------------------------ workloads

/** What each workload measures, why it matters, its units (also rendered into the docs). */
export const WORKLOADS = {
  register: {
    title: 'durable registration',
    unit: 'registrations/s',
    measures: 'Closed loop: N client processes, each with its own connection and lease, register new instances one after another (each acknowledged only once durable). Throughput, latency per registration, registrations per server CPU-second. Switchboard twice: REST (a PUT per registration on a keep-alive HTTP connection, the lease kept by REST keep-alives) and session (the lease and the registrations on one session WebSocket, as the SDK does; ratios are taken against this row).',
    why: 'Deploys, restarts and autoscaling register instances in bursts; the registry must absorb them without becoming the bottleneck.',
  },
  read: {
    title: 'discovery reads (20 instances)',
    unit: 'reads/s',
    measures: '64 reader processes read the full instance list of a 20-instance service in a closed loop. etcd: prefix range, serializable (member-local) and linearizable; ZooKeeper: getChildren + getData of each child (Curator) and getChildren alone; Switchboard: GET /v1/services/{service} (REST), the same read as a request on a session WebSocket (session; ratios are taken against this row), and that read with `fields: ["address","port"]` (session, endpoints only: the id, address and port of each instance, what a client needs to connect; the like-for-like row for a bare listing, which gives the names only), the answer\'s JSON parsed in every case.',
    why: 'Clients without a watch (or with a cache miss) read the list on every call or on a timer; this is the registry\'s most frequent request.',
  },
  watch: {
    title: 'watch fan-out',
    unit: 'ms (change to watcher)',
    measures: 'W watcher processes watch one service of 20 instances (etcd: prefix watch; ZooKeeper: child watch, re-listed at each notification; Switchboard: SSE). One writer makes 20 changes per second, alternately registering a new instance and deregistering the oldest of the 10 it added (each lives about a second). Latency from just before the write is sent to the moment each watcher knows the new membership, over every watcher and change; also the first watcher to know (the watchers are split between two load generator processes, each of which reads its streams one after another, so the spread to the last one is partly the generators\') and the writer\'s own acknowledgement (the durable write).',
    why: 'How quickly consumers stop calling an instance that left and start calling one that arrived.',
  },
  renew: {
    title: 'lease renewal load',
    unit: 'server CPU % of one core, memory',
    measures: '10,000 leases, each holding one instance, kept alive with the system\'s own keep-alive at TTL/3 (TTL 10 s: 3,000 keep-alives/s): ZooKeeper session pings (10,000 sessions, one connection each), Switchboard session WebSocket keepalive messages (10,000 sockets), etcd LeaseKeepAlive streams (one per lease, as the etcd3 client makes them, 100 leases per client connection: 10,000 gRPC clients in one Node process do not connect reliably). Server CPU over 20 s and resident memory.',
    why: 'A large fleet renews leases all the time, even when nothing changes: this is the idle cost of the registry.',
  },
  failure: {
    title: 'failure detection (TTL 4 s)',
    unit: 'ms from kill to watchers',
    measures: 'A provider process (its own lease/session, TTL 4 s everywhere: etcd lease TTL, ZooKeeper session timeout, Switchboard session lease) registers one instance; 10 watchers watch the service. The provider then leaves in one of three ways: killed with SIGKILL (the process is gone, its sockets closed by the kernel), frozen with SIGSTOP (alive but silent: only the TTL can tell), or drained (it deregisters its instance as a process shutting down cleanly does: Switchboard DELETE of the instance, etcd delete of the key, ZooKeeper delete of the znode). Time from the signal, or from the start of the deregistration, until the watchers see the instance gone (first and last watcher). The full suite runs it on the 3-member etcd cluster and ZooKeeper ensemble too.',
    why: 'Until the registry notices, consumers keep sending requests to a dead instance. A crash (SIGKILL) should be seen within a second, a hung process (SIGSTOP) within the TTL and a second, and a planned shutdown (drain) at once, within 100 ms.',
  },
  checks: {
    title: 'active HTTP checks (Switchboard only)',
    unit: 'agent CPU-seconds per second, checks/s per CPU-second, MiB',
    measures: 'The agent probes 10,000 persistent instances, each with one HTTP check at a 10 s interval (timeout 2 s) whose target is one port of a small HTTP server in the load generator process (the path names the instance; it answers 200 "ok"). After a warm-up of 15 s (every check has run at least once), a window of 60 s: the probes the target answered per second, the agent\'s CPU time per second (CPU-seconds per second = cores busy), the probes per agent CPU-second and the agent\'s resident memory at the end. Afterwards every instance must be passing and the agent must report every check scheduled. etcd and ZooKeeper have no active checks (a sidecar would do them), so this row has no peer.',
    why: 'Active checks are work the registry does all the time, for every instance, even when nothing changes: this sizes the node that runs them (1,000 probes/s here).',
  },
  memory: {
    title: 'memory per instance',
    unit: 'bytes per instance',
    measures: '100 owner processes register 1,000 instances each (100,000 lease-bound instances); growth of the servers\' resident memory (sum over members) from the idle server to 5 s after the last registration, divided by 100,000.',
    why: 'Sizing: how much memory a registry of a given fleet needs.',
  },
};

const QUICK = {
  name: 'quick',
  systems: ['switchboard', 'etcd', 'zookeeper'],
  cases: [
    { workload: 'register', level: 64 },
    { workload: 'read', level: 64 },
    { workload: 'watch', level: 200 },
    { workload: 'failure', level: 10 },
  ],
  runs: 3,
  warmupMs: 2000,
  durationMs: 5000,
};

/** The workloads of the quick suite (the others are in the full suite only). */
export const QUICK_WORKLOADS = [...new Set(QUICK.cases.map((c) => c.workload))];

const FULL = {
  name: 'full',
  systems: ['switchboard', 'etcd', 'zookeeper', 'etcd3', 'zookeeper3'],
  cases: [
    { workload: 'register', level: 1 },
    { workload: 'register', level: 16 },
    { workload: 'register', level: 64 },
    { workload: 'register', level: 256 },
    { workload: 'read', level: 64 },
    { workload: 'watch', level: 1 },
    { workload: 'watch', level: 200 },
    { workload: 'watch', level: 1000 },
    { workload: 'renew', level: 10_000 },
    { workload: 'failure', level: 10 },
    { workload: 'checks', level: 10_000 },
    { workload: 'memory', level: 100_000 },
  ],
  runs: 3,
  warmupMs: 2000,
  durationMs: 5000,
};

export const LEASE_TTL_MS = 10_000; // registration, reads, watch, renewal, memory
export const FAILURE_TTL_MS = 4_000;
export const CHECK_INTERVAL_MS = 10_000;
/** How the provider leaves in the failure workload: two signals and a graceful drain. */
export const FAILURE_MODES = ['SIGKILL', 'SIGSTOP', 'drain'];

export const FAIRNESS_RULES = [
  'fsync on everywhere: Switchboard with --data-dir (every acknowledged write fdatasync\'d, group commit); etcd with its defaults (WAL fsync, never --unsafe-no-fsync, default --snapshot-count); ZooKeeper with forceSync=yes (its default).',
  'The same payload everywhere: each instance is the same ~80-byte JSON document (address, port, tags, metadata), stored as the value (etcd), the znode data (ZooKeeper) or the registration body (Switchboard, plus its leaseId).',
  'Each system used as real discovery uses it: etcd keys under a prefix bound to a lease and prefix watches; ZooKeeper ephemeral znodes under a service path, child watches; Switchboard REST with leases and SSE watches.',
  'The same client counts, and one connection (and lease/session) per simulated client process, for every system.',
  'The load generator runs in its own process (a new one per run), never inside a server; it shares the machine\'s cores with the servers, so each throughput is also given per CPU-second of the servers (user + system time of every server process, from /proc/<pid>/stat, over the measured window).',
  'Warm-up excluded: only operations that start inside the measured window count.',
  'Registrations, reads and watches are driven by two load generator processes (the clients, or the watchers, split evenly between them), for every system: one Node process cannot drive the etcd3 gRPC client hard enough, and one process reading 200 watch streams one after another adds its own delay to the last of them. In the watch workload the first process also makes the changes; every process records when each of its watchers received each change, on the machine\'s clock shared by all of them.',
  `Each figure is the median of ${QUICK.runs} runs (2 for lease renewal and memory, whose set-up is long), with the minimum and maximum; the runs of the systems are interleaved (run 1 of each system, then run 2, ...) so that a disturbance of the machine does not hit one system only.`,
  'Warm-up of 2 s before every measured window (the JVM compiles ZooKeeper\'s hot paths in its first seconds; a read or watch server also serves earlier runs).',
  `The same lease TTL everywhere: ${LEASE_TTL_MS / 1000} s for the load workloads (keep-alives running), ${FAILURE_TTL_MS / 1000} s for failure detection (ZooKeeper session timeout = TTL).`,
  'Clients configured so as not to hide latency: no retries and no circuit breaker in the etcd3 client (cockatiel noop policies), no retries in node-zookeeper-client; errors are counted, not retried.',
  'Every server on 127.0.0.1, each in a fresh temporary data directory on the same disk; registration and memory runs start a fresh server for every run.',
  'The machine\'s own speed is checked before each run of the load, watch and failure workloads, before the load starts: a fixed CPU task (1,000 times 20 instances to JSON and back, the median of three timings) timed by the runner. On a shared or virtual machine it moves with the neighbours; the results give the spread of these checks over the run, an indication that the machine\'s speed moved (a short sample of one thread\'s CPU between runs, so not a measure of how much it moved during one).',
];

// ------------------------------------------------------------------ options

const HELP = `usage: npm run bench [-- options]     (or: node bench/compare/runner.mjs [options])

Suites:
  --suite quick        (default) registration at 64 clients, discovery reads, watch
                       fan-out to 200 watchers and failure detection (SIGKILL,
                       SIGSTOP, drain), against Switchboard, a single etcd member
                       and standalone ZooKeeper
  --suite full         every workload at every level (also the cost of 10,000 active
                       HTTP checks), and the 3-member etcd cluster and 3-node
                       ZooKeeper ensemble too (about 55 minutes; with --runs 1
                       about 25)
  --suite standalone   the Switchboard-only benchmark (bench/run.mjs; its own options)
  --suite crosscheck   the peers' figures checked with their own clients (ZooKeeper's
                       Java client, etcdctl check perf; bench/crosscheck.mjs, its own
                       options)
Options:
  --only LIST          workloads: register, read, watch, renew, failure, checks,
                       memory
  --systems LIST       switchboard, etcd, etcd3, zookeeper, zookeeper3
  --runs N             runs per figure (default 3)
  --generators N       load generator processes for registrations, reads and watches
                       (default 2; the clients or watchers are split between them)
  --level N            one level (clients, readers, watchers, leases, instances) for
                       every selected workload instead of the suite's levels
  --duration D         measured time per run (default 5s)
  --warmup D           unmeasured time before it (default 2s; the JVM needs it)
  --wait-quiet D       before each run, wait up to D until processes other than the
                       suite's use less than 25% of a core (for shared machines)
  --profile            run the Switchboard agent under node --cpu-prof; profiles and a
                       summary of the hottest functions go next to the results
  --write-docs         regenerate docs/benchmarks.md from this run's results; refused
                       (exit 2) for a run in which a system did not start or a run
                       failed, or with other workloads, levels or systems than the
                       suite's (--only, --level, --systems)
  --force-docs         with --write-docs: write the docs from such a run anyway
  --help               this text
`;


export function parseOptions(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      suite: { type: 'string', default: 'quick' },
      only: { type: 'string' },
      systems: { type: 'string' },
      runs: { type: 'string' },
      duration: { type: 'string' },
      warmup: { type: 'string' },
      profile: { type: 'boolean', default: false },
      'wait-quiet': { type: 'string' },
      level: { type: 'string' },
      generators: { type: 'string' },
      'write-docs': { type: 'boolean', default: false },
      'force-docs': { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (values.help) return { help: true };
  const base = { quick: QUICK, full: FULL }[values.suite];
  if (!base) throw new Error(`--suite must be quick, full or standalone, got "${values.suite}"`);
  let cases = base.cases;
  if (values.only) {
    const wanted = values.only.split(',').map((s) => s.trim()).filter(Boolean);
    for (const w of wanted) if (!WORKLOADS[w]) throw new Error(`--only: unknown workload "${w}" (known: ${Object.keys(WORKLOADS).join(', ')})`);
    cases = cases.filter((c) => wanted.includes(c.workload));
    if (cases.length === 0) throw new Error(`--only ${values.only}: no such workload in the ${base.name} suite (the full suite has them all)`);
  }
  if (values.level) {
    const lv = Number(values.level);
    if (!Number.isInteger(lv) || lv < 1 || lv > 100_000) throw new Error('--level must be an integer from 1 to 100000');
    cases = [...new Map(cases.map((c) => [c.workload, { ...c, level: lv }])).values()];
  }
  let systems = base.systems;
  if (values.systems) {
    systems = values.systems.split(',').map((s) => s.trim()).filter(Boolean);
    for (const s of systems) if (!SYSTEMS[s]) throw new Error(`--systems: unknown system "${s}" (known: ${Object.keys(SYSTEMS).join(', ')})`);
  }
  if (values.generators && !['1', '2', '3', '4'].includes(values.generators)) throw new Error('--generators must be 1 to 4');
  if (values['force-docs'] && !values['write-docs']) throw new Error('--force-docs goes with --write-docs');
  const runs = values.runs ? Number(values.runs) : base.runs;
  if (!Number.isInteger(runs) || runs < 1 || runs > 20) throw new Error('--runs must be an integer from 1 to 20');
  return {
    help: false,
    suite: base.name,
    cases,
    systems,
    runs,
    warmupMs: values.warmup !== undefined ? parseDuration(values.warmup, '--warmup', { allowZero: true }) : base.warmupMs,
    durationMs: values.duration !== undefined ? parseDuration(values.duration, '--duration') : base.durationMs,
    durationExplicit: values.duration !== undefined,
    warmupExplicit: values.warmup !== undefined,
    profile: values.profile,
    generators: values.generators ? Number(values.generators) : 2,
    waitQuietMs: values['wait-quiet'] !== undefined ? parseDuration(values['wait-quiet'], '--wait-quiet') : 0,
    writeDocs: values['write-docs'],
    forceDocs: values['force-docs'],
    // The suite as defined, whatever --only, --level and --systems chose (docsRefusals).
    suiteSystems: base.systems,
    suiteCases: base.cases.map((c) => `${c.workload}@${c.level}`),
    argv,
  };
}

// ------------------------------------------------------------------ helpers

// ------------------------------------------------------------------ workload runners

/** Starts a system (the profile option only for Switchboard). */
async function start(sysName, ctx, profileName) {
  const def = SYSTEMS[sysName];
  const o = def.kind === 'switchboard' && ctx.profileDir ? { profileDir: ctx.profileDir, profileName } : {};
  const sys = await def.start(o);
  sys.name = sysName;
  return sys;
}

/** The rows (system + variant) of one case. */
function rowsOf(c, systems) {
  const rows = [];
  for (const s of systems) {
    const kind = SYSTEMS[s].kind;
    if (c.workload === 'read') for (const v of READ_VARIANTS[kind]) rows.push({ system: s, label: SYSTEMS[s].label, ...v });
    else if (c.workload === 'register' && REGISTER_VARIANTS[kind]) for (const v of REGISTER_VARIANTS[kind]) rows.push({ system: s, label: SYSTEMS[s].label, ...v });
    else if (c.workload === 'checks' && kind !== 'switchboard') continue; // no active checks in the peers
    else if (c.workload === 'failure') for (const signal of FAILURE_MODES) rows.push({ system: s, label: SYSTEMS[s].label, variant: signal, signal });
    else rows.push({ system: s, label: SYSTEMS[s].label, variant: null });
  }
  return rows.map((r) => ({ ...r, runs: [] }));
}

function optionsFor(c, ctx, row) {
  ctx.runSeq = (ctx.runSeq ?? 0) + 1; // names a fresh service per run
  const base = { runTag: ctx.runSeq, warmupMs: ctx.opts.warmupMs, durationMs: ctx.opts.durationMs, ttlMs: LEASE_TTL_MS, maxOps: 50_000_000 };
  switch (c.workload) {
    case 'register':
      return { ...base, clients: c.level, transport: row.transport };
    case 'read':
      return { ...base, readers: c.level, readMode: row.readMode };
    case 'watch':
      return { ...base, watchers: c.level, watchRate: 20 };
    case 'renew':
      return { ...base, leases: c.level, warmupMs: LEASE_TTL_MS, durationMs: 20_000 };
    case 'memory':
      return { ...base, instances: c.level, owners: Math.ceil(c.level / 1000) };
    case 'checks':
      // One interval of warm-up at least and a minute measured, unless --duration / --warmup say otherwise.
      return { ...base, instances: c.level, intervalMs: CHECK_INTERVAL_MS, warmupMs: ctx.opts.warmupExplicit ? ctx.opts.warmupMs : CHECK_INTERVAL_MS + 5000, durationMs: ctx.opts.durationExplicit ? ctx.opts.durationMs : 60_000 };
    default:
      return base;
  }
}

/** The key figures of one run, by workload (what the summary and the table use). */
function figuresOf(workload, r) {
  const res = r.result;
  const cpu = r.cpu ?? {};
  const perCpuSec = cpu.serverCpuMs > 0 && res.ops > 0 ? (res.ops * 1000) / cpu.serverCpuMs : null;
  switch (workload) {
    case 'register':
    case 'read':
      return { throughput: res.ratePerSec, p50Ms: res.latency.p50Ms ?? null, p99Ms: res.latency.p99Ms ?? null, perServerCpuSec: perCpuSec, serverCpuPct: cpu.serverCpuPct, generatorCpuPct: cpu.generatorCpuPct, othersCpuPct: cpu.othersCpuPct, errors: res.errors.total };
    case 'watch':
      return { p50Ms: res.latency.p50Ms ?? null, p99Ms: res.latency.p99Ms ?? null, maxMs: res.latency.maxMs ?? null, firstP50Ms: res.firstWatcher?.p50Ms ?? null, firstP99Ms: res.firstWatcher?.p99Ms ?? null, ackP50Ms: res.writeAck?.p50Ms ?? null, ackP99Ms: res.writeAck?.p99Ms ?? null, deliveriesPerSec: res.ratePerSec, missed: res.missed, perServerCpuSec: perCpuSec, serverCpuPct: cpu.serverCpuPct, generatorCpuPct: cpu.generatorCpuPct, othersCpuPct: cpu.othersCpuPct, errors: res.errors.total };
    case 'renew':
      return { serverCpuPct: cpu.serverCpuPct, serverRssBytes: cpu.serverRssBytes, leasesLost: res.leasesLost, leasesLostInSetup: (res.leasesLostInSetup ?? 0) + (res.leasesNotOpened ?? 0), setupMs: res.setupMs, keepalivesPerSec: res.keepalivesPerSec, cpuMsPerThousandKeepalives: cpu.serverCpuMs !== null ? (cpu.serverCpuMs / ((res.keepalivesPerSec * cpu.windowMs) / 1000)) * 1000 : null, errors: res.leasesLost };
    case 'checks': {
      const cpuSecPerSec = cpu.serverCpuMs !== null && cpu.windowMs > 0 ? cpu.serverCpuMs / cpu.windowMs : null;
      return { checksPerSec: res.ratePerSec, expectedPerSec: res.expectedPerSec, serverCpuPct: cpu.serverCpuPct, cpuSecPerSec, checksPerCpuSec: cpu.serverCpuMs > 0 ? (res.probes * 1000) / cpu.serverCpuMs : null, serverRssBytes: cpu.serverRssBytes, passing: res.passing, othersCpuPct: cpu.othersCpuPct, errors: res.errors.total };
    }
    default:
      return {};
  }
}

/** register / read / watch / renew: closed-loop runs, interleaved over the systems. */
async function runLoadCase(c, ctx) {
  const rows = rowsOf(c, ctx.opts.systems);
  const freshPerRun = c.workload === 'register' || c.workload === 'renew' || c.workload === 'checks';
  const servers = new Map();
  // 10,000 leases take up to two minutes to set up (etcd): two runs at most.
  const n = c.workload === 'renew' || c.workload === 'checks' ? Math.min(ctx.opts.runs, 2) : ctx.opts.runs;
  try {
    if (!freshPerRun) for (const s of new Set(rows.map((r) => r.system))) servers.set(s, await startReported(s, ctx, `${c.workload}-${c.level}`));
    for (let run = 1; run <= n; run++) {
      for (const row of rows) {
        const label = `${ctx.pos(c)} ${row.label}${row.variant ? ` (${row.variant})` : ''}  run ${run}/${n}`;
        let sys = servers.get(row.system);
        try {
          if (freshPerRun) sys = await startReported(row.system, ctx, `${c.workload}-${c.level}${row.variant && row.system === 'switchboard' ? `-${row.variant.toLowerCase()}` : ''}-run${run}`);
          if (!sys) throw new Error(`${row.label} did not start`);
          await waitQuiet(ctx.opts.waitQuietMs, ctx.progress, label);
          const speedCheckMs = speedCheck();
          const hardLimitMs = (c.workload === 'renew' || c.workload === 'checks' ? 400_000 : 0) + ctx.opts.warmupMs + ctx.opts.durationMs + 180_000;
          const count = c.workload === 'register' || c.workload === 'read' || c.workload === 'watch' ? Math.min(ctx.opts.generators, c.level) : 1;
          const r = await runGenerator({ workload: c.workload, sys, options: optionsFor(c, ctx, row), progress: ctx.progress, label, hardLimitMs, count, merge: c.workload === 'watch' ? watchFigures : null });
          const fig = figuresOf(c.workload, r);
          row.runs.push({ run, speedCheckMs, ...r, figures: fig });
          ctx.progress.done(`${label}  ${doneText(c.workload, fig)}  speed check ${fmtMs(speedCheckMs)}`);
        } catch (err) {
          row.runs.push({ run, error: err.message });
          ctx.progress.done(`${label}  FAILED: ${err.message.split('\n')[0]}`);
          if (err.name === 'StartError') ctx.progress.log(err.message.split('\n').slice(1).join('\n'));
        } finally {
          if (freshPerRun && sys) await sys.stop();
        }
      }
    }
  } finally {
    for (const s of servers.values()) if (s) await s.stop();
  }
  return { workload: c.workload, level: c.level, rows: rows.map(summarizeRow(c.workload)) };
}

function doneText(workload, f) {
  switch (workload) {
    case 'register':
    case 'read':
      return `${fmtInt(f.throughput)}/s  p50 ${fmtMs(f.p50Ms)}  p99 ${fmtMs(f.p99Ms)}  ${fmtInt(f.perServerCpuSec)} per server CPU-s  errors ${f.errors}  cpu: server ${fmtPct(f.serverCpuPct)} generator ${fmtPct(f.generatorCpuPct)} others ${fmtPct(f.othersCpuPct)}`;
    case 'watch':
      return `p50 ${fmtMs(f.p50Ms)}  p99 ${fmtMs(f.p99Ms)}  max ${fmtMs(f.maxMs)}  missed ${f.missed}  errors ${f.errors}  cpu: server ${fmtPct(f.serverCpuPct)} generator ${fmtPct(f.generatorCpuPct)} others ${fmtPct(f.othersCpuPct)}`;
    case 'renew':
      return `server CPU ${fmtPct(f.serverCpuPct)} of a core  RSS ${fmtBytes(f.serverRssBytes)}  leases lost ${f.leasesLost}`;
    case 'checks':
      return `${fmtInt(f.checksPerSec)} checks/s  agent CPU ${fmtPct(f.serverCpuPct)} of a core  ${fmtInt(f.checksPerCpuSec)} checks per CPU-s  RSS ${fmtBytes(f.serverRssBytes)}  passing ${fmtInt(f.passing)}  errors ${f.errors}`;
    default:
      return '';
  }
}

/** Starts a system, reporting a failure clearly (its log tails) and returning null. */
async function startReported(name, ctx, profileName) {
  ctx.progress.update(`${SYSTEMS[name].label}: starting`, { force: true });
  try {
    return await start(name, ctx, `${profileName}.cpuprofile`);
  } catch (err) {
    ctx.progress.done(`${SYSTEMS[name].label}: FAILED TO START: ${err.message}`);
    ctx.startFailures.push({ system: name, error: err.message });
    return null;
  }
}

function summarizeRow(workload) {
  return (row) => {
    const ok = row.runs.filter((r) => !r.error);
    const keys = new Set(ok.flatMap((r) => Object.keys(r.figures ?? {})));
    const summary = {};
    for (const k of keys) summary[k] = stat(ok.map((r) => r.figures[k]));
    return { ...row, summary, failedRuns: row.runs.length - ok.length };
  };
}

/**
 * Failure detection: one server and one watcher generator per system, kept for the whole
 * case; the runs interleaved over the systems (run 1 of each system and way of leaving,
 * then run 2, ...), each with a new provider killed by PID.
 */
async function runFailureCase(c, ctx) {
  const rows = rowsOf(c, ctx.opts.systems);
  const n = ctx.opts.runs;
  // Every run of every system happens while each generator watches: its time limit covers
  // them all (a run takes 75 s at most: register 20 s, appear 10 s, 3 s, gone 30 s, drain 10 s).
  const maxMs = n * rows.length * (80_000 + ctx.opts.waitQuietMs) + 60_000;
  const watched = [];
  try {
    for (const sysName of ctx.opts.systems) {
      const w = { sysName, rows: rows.filter((r) => r.system === sysName), label: `${ctx.pos(c)} ${SYSTEMS[sysName].label}`, sys: await startReported(sysName, ctx, 'failure'), error: null };
      watched.push(w);
      if (!w.sys) w.error = 'the system did not start';
      else startWatchers(w, c, ctx, maxMs);
    }
    for (const w of watched) {
      if (w.error) continue;
      const ready = await w.waitFor(() => w.seen.some((m) => m.type === 'watching'), 60_000);
      if (!ready && !w.error) w.error = 'the watchers did not connect within 60 s';
      if (w.error) ctx.progress.done(`${w.label}  FAILED: ${w.error.split('\n')[0]}`);
    }
    for (let run = 1; run <= n; run++) {
      for (const w of watched) {
        for (const row of w.rows) {
          const label = `${w.label} (${row.signal})  run ${run}/${n}`;
          // A system whose watchers are gone has no more runs: each one records why.
          if (w.error) {
            row.runs.push({ run, error: w.error });
            continue;
          }
          await waitQuiet(ctx.opts.waitQuietMs, ctx.progress, label);
          const speedCheckMs = speedCheck();
          ctx.progress.update(`${label}  starting the provider`, { force: true });
          try {
            const fig = await oneFailure({ sys: w.sys, row, run, c, seen: w.seen, waitFor: w.waitFor, watchersFailed: () => w.error });
            row.runs.push({ run, speedCheckMs, figures: fig, result: fig });
            ctx.progress.done(`${label}  first watcher ${fmtMs(fig.firstMs)}  last watcher ${fmtMs(fig.lastMs)}`);
          } catch (err) {
            row.runs.push({ run, error: err.message });
            ctx.progress.done(`${label}  FAILED: ${err.message.split('\n')[0]}`);
            if (w.error) ctx.progress.log(`${w.label}: no more runs (its watchers' load generator failed)`);
          }
        }
      }
    }
  } finally {
    // A generator that watches leaves when told to; one that never did is ended.
    for (const w of watched) {
      for (const g of w.genDone?.generators ?? []) {
        if (w.seen.some((m) => m.type === 'watching') && g.connected) g.send({ type: 'finish' });
        else void stopProc(g, 2000);
      }
    }
    for (const w of watched) {
      await w.genDone?.catch(() => undefined);
      await w.sys?.stop();
    }
  }
  return { workload: c.workload, level: c.level, ttlMs: FAILURE_TTL_MS, rows: rows.map(summarizeRow(c.workload)) };
}

/**
 * Forks the watcher generator of one system (`w`: its server, rows and label) and gives
 * `w` what the runs use: `seen` (every message of the watchers), `waitFor(pred, ms)`
 * (resolves with pred() once it holds, the generator fails or `ms` pass), `genDone` (its
 * runGenerator) and `error` (set, with the generator's own message, when it fails).
 */
function startWatchers(w, c, ctx, maxMs) {
  w.seen = [];
  let waiters = [];
  const wake = () => {
    for (const f of waiters) f();
  };
  w.waitFor = (pred, ms) =>
    new Promise((resolve) => {
      const deadline = setTimeout(done, ms);
      function done() {
        clearTimeout(deadline);
        waiters = waiters.filter((f) => f !== check);
        resolve(pred());
      }
      function check() {
        if (pred() || w.error) done();
      }
      waiters.push(check);
      check();
    });
  w.genDone = runGenerator({
    workload: 'failure-watch',
    sys: w.sys,
    options: { watchers: c.level, maxMs },
    progress: ctx.progress,
    label: w.label,
    hardLimitMs: maxMs + 100_000,
    onMessage: (msg) => {
      if (msg.type === 'seen' || msg.type === 'watching') {
        w.seen.push(msg);
        wake();
      }
    },
  });
  w.genDone
    .then(
      // It leaves with a result only when told to finish: earlier, it failed too.
      () => (w.error ??= "the watchers' load generator ended before the runs did"),
      (err) => (w.error ??= `the watchers' load generator failed: ${err.message.replace(`${w.label}: `, '')}`),
    )
    .finally(wake);
}

/** The provider's next message of `type`; rejects on its error message, its exit or after `ms`. */
function messageFrom(provider, type, ms, what) {
  return new Promise((resolve, reject) => {
    const done = (err, m) => {
      clearTimeout(t);
      provider.off('message', onMessage);
      provider.off('exit', onExit);
      if (err) reject(err);
      else resolve(m);
    };
    const t = setTimeout(() => done(new Error(`the provider did not ${what} within ${ms / 1000} s`)), ms);
    const onMessage = (m) => {
      if (m.type === type) done(null, m);
      else if (m.type === 'error') done(new Error(`provider: ${m.error}`));
    };
    const onExit = (code) => done(new Error(`the provider exited (code ${code}) before it could ${what}`));
    provider.on('message', onMessage);
    provider.once('exit', onExit);
  });
}

async function oneFailure({ sys, row, run, c, seen, waitFor, watchersFailed }) {
  const id = `p-${row.signal.toLowerCase()}-${run}`;
  const provider = forkTracked('provider', join(ROOT, 'bench/compare/provider.mjs'), [JSON.stringify(targetOf(sys)), String(FAILURE_TTL_MS), id]);
  try {
    const registered = await messageFrom(provider, 'registered', 20_000, 'register');
    const putsOf = () => new Set(seen.filter((m) => m.type === 'seen' && m.op === 'put' && m.id === id).map((m) => m.watcher));
    const appeared = await waitFor(() => putsOf().size >= c.level, 10_000);
    // The watchers' generator failing is the failure, not what it could no longer see.
    if (watchersFailed()) throw new Error(watchersFailed());
    if (!appeared) throw new Error(`only ${putsOf().size} of ${c.level} watchers saw the instance appear`);
    // A random moment within the keep-alive cycle (TTL/3), after a steady state of 1.5 s.
    await sleep(1500 + Math.random() * (FAILURE_TTL_MS / 3));
    let killedAt;
    let drainAckMs = null;
    if (row.signal === 'drain') {
      const drained = messageFrom(provider, 'drained', 10_000, 'finish deregistering');
      provider.send({ type: 'drain' });
      const d = await drained;
      killedAt = d.at; // the provider's clock is the same machine's
      drainAckMs = d.ackMs;
    } else {
      killedAt = performance.timeOrigin + performance.now();
      process.kill(provider.pid, row.signal);
    }
    const gone = () => seen.filter((m) => m.type === 'seen' && m.op === 'delete' && m.id === id);
    await waitFor(() => new Set(gone().map((m) => m.watcher)).size >= c.level, 30_000);
    if (watchersFailed()) throw new Error(watchersFailed());
    const times = new Map();
    for (const m of gone()) if (!times.has(m.watcher)) times.set(m.watcher, m.at - killedAt);
    if (times.size === 0) throw new Error('no watcher saw the instance go within 30 s');
    const all = [...times.values()].sort((a, b) => a - b);
    return { firstMs: all[0], lastMs: all[all.length - 1], medianMs: median(all), watchersSaw: times.size, watchers: c.level, registeredToKillMs: killedAt - registered.at, ...(drainAckMs !== null ? { drainAckMs } : {}) };
  } finally {
    if (row.signal === 'SIGSTOP') process.kill(provider.pid, 'SIGCONT');
    await stopProc(provider, 100, 'SIGKILL');
  }
}

/** Memory per instance: fresh server per run; RSS before and 5 s after 100,000 registrations. */
async function runMemoryCase(c, ctx) {
  const rows = rowsOf(c, ctx.opts.systems);
  const n = Math.min(ctx.opts.runs, 2); // 100,000 registrations per run and system: 2 runs at most
  for (let run = 1; run <= n; run++) {
    for (const row of rows) {
      const label = `${ctx.pos(c)} ${row.label}  run ${run}/${n}`;
      const sys = await startReported(row.system, ctx, `memory-run${run}`);
      if (!sys) {
        row.runs.push({ run, error: 'the system did not start' });
        continue;
      }
      try {
        await sleep(2000);
        const before = sumStats(sys.pids);
        let after = null;
        const r = await runGenerator({
          workload: 'memory',
          sys,
          options: optionsFor(c, ctx, row),
          progress: ctx.progress,
          label,
          hardLimitMs: 900_000,
          onMessage: (msg, gen) => {
            if (msg.type === 'loaded') {
              ctx.progress.update(`${label}  ${fmtInt(msg.instances)} registered; settling 5 s`, { force: true });
              setTimeout(() => {
                after = sumStats(sys.pids);
                gen.send({ type: 'release' });
              }, 5000);
            }
          },
        });
        if (!after || !before) throw new Error('could not read the servers\' memory');
        const fig = { bytesPerInstance: (after.rssBytes - before.rssBytes) / r.result.instances, rssBeforeBytes: before.rssBytes, rssAfterBytes: after.rssBytes, registrationsPerSec: r.result.registrationsPerSec, errors: r.result.errors.total };
        row.runs.push({ run, ...r, figures: fig });
        ctx.progress.done(`${label}  ${fmtInt(fig.bytesPerInstance)} bytes/instance  (RSS ${fmtBytes(before.rssBytes)} -> ${fmtBytes(after.rssBytes)})`);
      } catch (err) {
        row.runs.push({ run, error: err.message });
        ctx.progress.done(`${label}  FAILED: ${err.message.split('\n')[0]}`);
      } finally {
        await sys.stop();
      }
    }
  }
  return { workload: c.workload, level: c.level, rows: rows.map(summarizeRow(c.workload)) };
}

// ------------------------------------------------------------------ main

/**
 * Runs the suite. `hooks.onResults(file, results)` is called with the results file once it
 * is written (the cross-check suite reads the comparison's figures from it).
 */
export async function main(argv, hooks = {}) {
  let opts;
  try {
    opts = parseOptions(argv);
  } catch (err) {
    const hint = /Unknown option '--(quick|mode|agent|clients|readers|watchers|watch-rate|data-root)'/.test(err.message) ? ' (an option of the Switchboard-only benchmark: add --suite standalone)' : '';
    process.stderr.write(`bench: ${err.message}${hint}\n\n${HELP}`);
    return 2;
  }
  if (opts.help) {
    process.stdout.write(HELP);
    return 0;
  }
  // A part of the suite is known before the run: refused now rather than after it.
  const partOnly = docsRefusals({ suite: opts.suite, settings: opts, cases: opts.cases.map((c) => ({ ...c, rows: [] })) });
  if (opts.writeDocs && !opts.forceDocs && partOnly.length > 0) {
    process.stderr.write(`bench: --write-docs: ${partOnly.join('; ')}: its figures would replace the whole generated section of docs/benchmarks.md. Run the whole suite, or add --force-docs to write them anyway.\n`);
    return 2;
  }
  const progress = new Progress();
  installCleanup(() => process.stdout.write('\nbench: interrupted; every process it started was killed and its temporary directories removed\n'), (l) => progress.log(l));
  const { started, stamp, resultsDir, profileDir } = openResults(opts.profile);

  // ---- peers ----
  const peers = [...new Set(opts.systems.map((s) => SYSTEMS[s].peer).filter(Boolean))];
  let versions = {};
  try {
    versions = ensurePeers(peers, (l) => progress.log(l));
  } catch (err) {
    progress.done(`bench: the peers cannot be installed: ${err.message}`);
    return 1;
  }
  if (!existsSync(join(ROOT, 'packages/registry/dist/src/cli/main.js'))) {
    process.stderr.write('bench: the agent is not built; run `npm run bench` (it builds first) or `npm run build`\n');
    return 2;
  }
  versions.etcd3Client = pkgVersion('etcd3');
  versions.zookeeperClient = pkgVersion('node-zookeeper-client');
  const machine = machineFacts();
  progress.log(
    `machine: ${machine.cpus} cores (${machine.cpuModel}), ${fmtBytes(machine.memoryBytes)}, ${machine.os}, node ${machine.node}\n` +
      `peers: etcd ${versions.etcdBinary ?? '-'} (Debian ${versions['etcd-server'] ?? '-'}), ZooKeeper (Debian ${versions.zookeeper ?? '-'}), ${versions.java ?? ''}; clients etcd3 ${versions.etcd3Client}, node-zookeeper-client ${versions.zookeeperClient}\n` +
      `suite ${opts.suite}: ${opts.cases.map((c) => `${c.workload}@${c.level}`).join(', ')} against ${opts.systems.map((s) => SYSTEMS[s].label).join(', ')}; ` +
      `${opts.runs} runs each, ${opts.warmupMs / 1000}s warm-up + ${opts.durationMs / 1000}s measured`,
  );

  const ctx = { opts, progress, profileDir, startFailures: [], pos: null };
  const partialFile = join(resultsDir, `${stamp}.partial.json`);
  const results = [];
  for (let i = 0; i < opts.cases.length; i++) {
    const c = opts.cases[i];
    ctx.pos = () => `[${i + 1}/${opts.cases.length}] ${c.workload}@${fmtInt(c.level)}`;
    const t = performance.now();
    let res;
    if (c.workload === 'failure') res = await runFailureCase(c, ctx);
    else if (c.workload === 'memory') res = await runMemoryCase(c, ctx);
    else res = await runLoadCase(c, ctx);
    res.elapsedMs = Math.round(performance.now() - t);
    results.push(res);
    // Saved after every case: an interrupted run keeps what it finished.
    writeFileSync(partialFile, JSON.stringify({ ...assemble(), partial: true }, null, 2) + '\n');
  }
  rmSync(partialFile, { force: true });

  // ---- report ----
  const out = assemble();
  function assemble() {
    return {
      format: 1,
      kind: 'comparison',
      suite: opts.suite,
      startedAt: started.toISOString(),
      finishedAt: new Date().toISOString(),
      command: ['npm run bench --', ...argv].join(' '),
      machine,
      source: gitFacts(),
      versions: { ...versions, switchboard: pkgVersion('@switchboard/registry') },
      settings: { runs: opts.runs, warmupMs: opts.warmupMs, durationMs: opts.durationMs, leaseTtlMs: LEASE_TTL_MS, failureTtlMs: FAILURE_TTL_MS, systems: opts.systems, suiteSystems: opts.suiteSystems, suiteCases: opts.suiteCases, profile: opts.profile },
      fairnessRules: FAIRNESS_RULES,
      workloads: WORKLOADS,
      startFailures: ctx.startFailures,
      cases: results,
    };
  }
  if (profileDir) out.profiles = summarizeProfiles(profileDir);
  const file = join(resultsDir, `${stamp}.json`);
  writeFileSync(file, JSON.stringify(out, null, 2) + '\n');
  process.stdout.write('\n' + renderTable(out, { format: 'text' }) + '\n');
  if (out.profiles) for (const p of out.profiles) process.stdout.write(`\n${p.text}\n`);
  process.stdout.write(`\nresults: ${file}\n`);
  hooks.onResults?.(file, out);
  let refused = false;
  if (opts.writeDocs) {
    const refusals = docsRefusals(out);
    if (refusals.length > 0 && !opts.forceDocs) {
      refused = true;
      process.stderr.write(`bench: --write-docs: docs/benchmarks.md NOT written: ${refusals.join('; ')}. To write these figures anyway: node bench/compare/report.mjs ${file} --write-docs --force-docs\n`);
    } else {
      const { writeDocs, refreshMethodText } = await import('./report.mjs');
      const docs = writeDocs(out, file);
      // The method lists every workload (the full suite's too), not only the ones this run had.
      if (out.suite !== 'full') await refreshMethodText(docs);
      process.stdout.write(`docs: ${docs} regenerated from these results${refusals.length > 0 ? ` (--force-docs, although ${refusals.join('; ')})` : ''}\n`);
    }
  }
  // Everything this run started must be gone now.
  process.stdout.write(await endAll());
  const failed = results.some((c) => c.rows.some((r) => r.failedRuns > 0)) || ctx.startFailures.length > 0;
  return refused ? 2 : failed ? 1 : 0;
}


if (import.meta.url === `file://${process.argv[1]}`) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err) => {
      process.stderr.write(`bench: ${err?.stack ?? err}\n`);
      killAllNow();
      process.exitCode = 1;
    },
  );
}
