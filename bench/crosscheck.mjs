#!/usr/bin/env node
/**
 * `npm run bench -- --suite crosscheck`: the peers' figures checked against clients that
 * are not the comparison's Node clients, in one run on the same machine.
 *
 *   1. The comparison itself for the two workloads it can be checked on: registrations
 *      and discovery reads at 64 clients, Switchboard, etcd and ZooKeeper
 *      (bench/compare/runner.mjs, --only register,read --level 64).
 *   2. ZooKeeper with its own Java client (bench/crosscheck/ZkLoad.java, compiled with
 *      javac): 64 sessions creating ephemeral znodes of the same size, then 64 sessions
 *      listing a 20-child parent (bare getChildren); a fresh standalone server per run,
 *      configured as the comparison's.
 *   3. etcd with its own tool: `etcdctl check perf --load l` (Go client: 500 clients,
 *      puts of 1 KiB values under 256-byte keys, at most 8,000/s, for 60 s) against a fresh
 *      single member per run, configured as the comparison's.
 *
 * The independent clients' workloads are not the same as the comparison's in every detail
 * (etcdctl's puts carry no lease and larger values, and it runs 500 clients); the table
 * names the differences. What the cross-check answers is whether the peers' figures in the
 * comparison are of the right magnitude, or held down by the Node clients.
 *
 *   node bench/run.mjs --suite crosscheck [--runs 3] [--duration 5s] [--warmup 3s]
 *        [--only comparison,zookeeper,etcd] [--jvm-opts=-XX:+UseSerialGC] [--server-jvm-opts=...] [--wait-quiet D] [--write-docs]
 *   node bench/crosscheck.mjs --report bench/results/crosscheck-<time>.json --write-docs
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { startEtcd } from './compare/systems/etcd.mjs';
import { ZK_TICK_MS, startZookeeper } from './compare/systems/zookeeper.mjs';
import { ensureJavac, ensurePeers, zookeeperClasspath } from './compare/lib/install.mjs';
import { payload } from './compare/lib/payload.mjs';
import { ROOT, endAll, installCleanup, makeTempDir, runIfScript, spawnCaptured, stopProc } from './lib/procs.mjs';
import { between, cpuSample, gitFacts, machineFacts, openResults, parseDuration, positiveInt, stat, waitQuiet } from './lib/harness.mjs';
import { replaceGenerated } from './lib/docs.mjs';
import { Progress, fmtInt, fmtMs, fmtPct, table } from './lib/report.mjs';
import { mdTable, mm } from './compare/report.mjs';
import { LEASE_TTL_MS, main as compare } from './compare/runner.mjs';

const PARTS = ['comparison', 'zookeeper', 'etcd'];
const SESSIONS = 64;
/** The size of the comparison's instance JSON (what each znode holds there). */
const PAYLOAD_BYTES = Buffer.byteLength(payload(1, 1, 100_000));
/** The client JVM's options: with the JVM's default collector (G1) ZooKeeper's figures were lower here (docs/benchmarks.md). */
const DEFAULT_JVM_OPTS = '-XX:+UseSerialGC';
/** etcdctl check perf's fixed length, and a bound on one run of it. */
const CHECK_PERF_SECONDS = 60;
const CHECK_PERF_LIMIT_MS = 150_000;
/** Bounds on javac, and on a Java run beyond its warm-up and measured time (60 s to connect, 30 s to finish). */
const JAVAC_LIMIT_MS = 120_000;
const javaLimitMs = (opts) => 90_000 + opts.warmupMs + opts.durationMs;

const HELP = `usage: npm run bench -- --suite crosscheck [options]
       (or: node bench/run.mjs --suite crosscheck [options])

Checks the peers' figures of the comparison against clients that are not its Node
clients, in one run: the comparison's registrations and reads at 64 clients, then
ZooKeeper driven by its own Java client (64 sessions: ephemeral creates, then bare
getChildren of 20 children), then etcd driven by its own tool (etcdctl check perf
--load l: 500 Go clients, 60 s). About 10 minutes with the defaults.

Options:
  --runs N          runs per figure (default 3; a fresh server for every run of the
                    registrations and etcd's check, one server for all listing runs,
                    as in the comparison)
  --duration D      measured time of a Java run (default 5s)
  --warmup D        unmeasured time before it (default 3s: the JVMs compile first)
  --only LIST       parts, comma-separated: comparison, zookeeper, etcd
  --jvm-opts=TEXT   options of the Java client's JVM (default "${DEFAULT_JVM_OPTS}";
                    with "=", since the value starts with a dash; "" for the defaults)
  --server-jvm-opts=TEXT  extra JVM options for the ZooKeeper server of the Java runs
                    (default none: the JVM's defaults, as in the comparison)
  --wait-quiet D    before each run, wait up to D for a quiet machine
  --write-docs      put the table into docs/benchmarks.md (needs every part)
  --report FILE     print (and with --write-docs, write) the table of an earlier run
  --help            this text
`;

function options(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      runs: { type: 'string', default: '3' },
      duration: { type: 'string', default: '5s' },
      warmup: { type: 'string', default: '3s' },
      only: { type: 'string' },
      'jvm-opts': { type: 'string', default: DEFAULT_JVM_OPTS },
      'server-jvm-opts': { type: 'string', default: '' },
      'wait-quiet': { type: 'string' },
      'write-docs': { type: 'boolean', default: false },
      report: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  });
  const only = values.only ? values.only.split(',').map((s) => s.trim()).filter(Boolean) : PARTS;
  for (const p of only) if (!PARTS.includes(p)) throw new Error(`--only: unknown part ${p} (parts: ${PARTS.join(', ')})`);
  if (values['write-docs'] && values.only && !values.report) throw new Error('--write-docs needs every part: leave out --only');
  return {
    help: values.help,
    report: values.report ?? null,
    writeDocs: values['write-docs'],
    runs: positiveInt(values.runs, '--runs', 20),
    durationMs: parseDuration(values.duration, '--duration'),
    warmupMs: parseDuration(values.warmup, '--warmup', { allowZero: true }),
    waitQuiet: values['wait-quiet'] ?? null,
    waitQuietMs: values['wait-quiet'] ? parseDuration(values['wait-quiet'], '--wait-quiet') : 0,
    jvmOpts: values['jvm-opts'].split(/\s+/).filter(Boolean),
    serverJvmOpts: values['server-jvm-opts'].split(/\s+/).filter(Boolean),
    only,
  };
}

/** Runs `cmd` tracked (ended with the suite), calling onLine for every line of its output. */
function runTracked(name, cmd, args, { env, onLine, onSpawn, limitMs }) {
  return new Promise((resolve, reject) => {
    const proc = spawnCaptured(name, cmd, args, { env });
    onSpawn?.(proc);
    const lines = [];
    const errLines = []; // the last 200
    const marked = []; // the client's own error lines (ZkLoad: ...), the first 20
    const timer = setTimeout(() => {
      void stopProc(proc, 2000);
      reject(new Error(`${name} did not finish within ${limitMs / 1000} s`));
    }, limitMs);
    createInterface({ input: proc.stdout }).on('line', (l) => {
      lines.push(l);
      onLine?.(l, proc);
    });
    createInterface({ input: proc.stderr }).on('line', (l) => {
      errLines.push(l);
      if (errLines.length > 200) errLines.shift();
      if (l.startsWith('ZkLoad:') && marked.length < 20) marked.push(l);
    });
    proc.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`${name}: ${err.message}`));
    });
    proc.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, lines, errLines, marked, pid: proc.pid });
    });
  });
}

/** Server and client CPU (% of a core) between two cpuSample()s, and operations per server CPU-second. */
function cpuFigures(a, b, opsPerSec) {
  const cpu = between(a, b);
  const serverCpuPct = cpu?.serverCpuPct ?? null;
  return { serverCpuPct, clientCpuPct: cpu?.generatorCpuPct ?? null, perServerCpuSec: serverCpuPct ? (opsPerSec * 100) / serverCpuPct : null };
}

// ---------------------------------------------------------------- ZooKeeper

function compileZkLoad(dir) {
  const src = join(ROOT, 'bench/crosscheck/ZkLoad.java');
  const cp = zookeeperClasspath().join(':');
  return runTracked('javac', 'javac', ['-implicit:none', '-d', dir, '-cp', cp, src], { limitMs: JAVAC_LIMIT_MS }).then((r) => {
    if (r.code !== 0) throw new Error(`javac ZkLoad.java failed:\n${r.errLines.join('\n')}`);
  });
}

/** One Java run against `zk`: figures from the client, CPU of server and client over the measured window. */
async function javaRun(zk, classDir, mode, opts) {
  const cp = [classDir, ...zookeeperClasspath()].join(':');
  const args = [...opts.jvmOpts, '-Dlog4j.configuration=file:/dev/null', '-cp', cp, 'ZkLoad', zk.connectString, mode, String(SESSIONS), String(opts.warmupMs), String(opts.durationMs), String(PAYLOAD_BYTES), String(LEASE_TTL_MS)];
  let from = null;
  let to = null;
  const r = await runTracked(`ZkLoad ${mode}`, 'java', args, {
    limitMs: javaLimitMs(opts),
    onLine(line, proc) {
      if (line === 'measure') from = cpuSample(zk.pids, [proc.pid]);
      else if (line === 'measured') to = cpuSample(zk.pids, [proc.pid]);
    },
  });
  const json = r.lines.find((l) => l.startsWith('{'));
  if (r.code !== 0 || !json || !from || !to) throw new Error(`ZkLoad ${mode} failed (exit ${r.code}):\n${r.errLines.slice(-15).join('\n')}`);
  const res = JSON.parse(json);
  return { ...res, ...cpuFigures(from, to, res.opsPerSec), errorExamples: r.marked.slice(0, 3) };
}

/** Fills `result.runs` as runs end, so that a failure keeps the runs before it. */
async function zookeeperPart(opts, progress, result) {
  const classDir = makeTempDir('bench-crosscheck-java');
  await compileZkLoad(classDir);
  const runs = (result.runs = { create: [], children: [] });
  const one = async (zk, mode, i) => {
    await waitQuiet(opts.waitQuietMs, progress, `ZooKeeper (Java client) ${mode} run ${i}`);
    progress.update(`ZooKeeper, Java client: ${mode} run ${i}/${opts.runs} (${(opts.warmupMs + opts.durationMs) / 1000} s + connecting)`);
    const r = await javaRun(zk, classDir, mode, opts);
    runs[mode].push(r);
    progress.log(`ZooKeeper, Java client, ${mode === 'create' ? 'ephemeral creates' : 'bare getChildren'} run ${i}: ${fmtInt(r.opsPerSec)}/s  p50 ${fmtMs(r.p50Ms)}  p99 ${fmtMs(r.p99Ms)}  server ${fmtPct(r.serverCpuPct)}  client ${fmtPct(r.clientCpuPct)}  errors ${r.errors}`);
  };
  // As in the comparison: a fresh server for every run of the registrations, one server
  // for every run of the reads. There, the reads' server has served other runs before
  // the first one it is measured in; here an unmeasured listing run warms its JVM first.
  for (let i = 1; i <= opts.runs; i++) {
    const zk = await startZookeeper({ nodes: 1, jvmOpts: opts.serverJvmOpts });
    try {
      await one(zk, 'create', i);
    } finally {
      await zk.stop();
    }
  }
  const zk = await startZookeeper({ nodes: 1, jvmOpts: opts.serverJvmOpts });
  try {
    progress.update('ZooKeeper, Java client: a listing run to warm the server (not counted)');
    await javaRun(zk, classDir, 'children', opts);
    for (let i = 1; i <= opts.runs; i++) await one(zk, 'children', i);
  } finally {
    await zk.stop();
  }
}

// ---------------------------------------------------------------- etcd

/** Parses etcdctl check perf's verdict lines. */
export function parseCheckPerf(lines) {
  const text = lines.join('\n');
  const rate = /Throughput (?:is|too low:) (\d+) writes\/s/.exec(text);
  const slowest = /Slowest request took(?: too long:)? ([\d.]+)s/.exec(text);
  const stddev = /Stddev (?:is|too high:) ([\d.]+)s/.exec(text);
  const errors = [...text.matchAll(/FAIL: ERROR\((.*)\) -> (\d+)/g)].map((m) => ({ error: m[1], count: Number(m[2]) }));
  return {
    opsPerSec: rate ? Number(rate[1]) : null,
    slowestMs: slowest ? Number(slowest[1]) * 1000 : null,
    stddevMs: stddev ? Number(stddev[1]) * 1000 : null,
    errors: errors.reduce((a, e) => a + e.count, 0),
    errorKinds: errors,
  };
}

/** Fills `result.runs` as runs end, so that a failure keeps the runs before it. */
async function etcdPart(opts, progress, result) {
  const runs = (result.runs = []);
  for (let i = 1; i <= opts.runs; i++) {
    await waitQuiet(opts.waitQuietMs, progress, `etcd (etcdctl check perf) run ${i}`);
    const etcd = await startEtcd({ members: 1 });
    try {
      progress.update(`etcd, etcdctl check perf --load l: run ${i}/${opts.runs} (${CHECK_PERF_SECONDS} s)`);
      // The server's CPU over the load's minute, less a second at each end: from the tool's
      // first output (its progress bar starts with the load, once its 500 clients are
      // open; it deletes its keys after).
      let a = null;
      let b = null;
      const timers = [];
      let r;
      try {
        r = await runTracked('etcdctl check perf', 'etcdctl', ['--endpoints', etcd.endpoints.join(','), 'check', 'perf', '--load', 'l'], {
          env: { ...process.env, ETCDCTL_API: '3' },
          limitMs: CHECK_PERF_LIMIT_MS,
          onSpawn(proc) {
            const sample = () => cpuSample(etcd.pids, [proc.pid]);
            proc.stdout.once('data', () => timers.push(setTimeout(() => (a = sample()), 1000), setTimeout(() => (b = sample()), (CHECK_PERF_SECONDS - 1) * 1000)));
          },
        });
      } finally {
        for (const t of timers) clearTimeout(t);
      }
      const res = parseCheckPerf(r.lines);
      if (res.opsPerSec === null) throw new Error(`etcdctl check perf gave no throughput (exit ${r.code}):\n${[...r.lines, ...r.errLines].slice(-15).join('\n')}`);
      const cpu = cpuFigures(a, b, res.opsPerSec);
      // Its exit code says PASS or FAIL against the load's 8,000/s, not whether it ran.
      runs.push({ ...res, exitCode: r.code, ...cpu, version: etcd.version });
      progress.log(`etcd, etcdctl check perf --load l, run ${i}: ${fmtInt(res.opsPerSec)}/s  slowest ${fmtMs(res.slowestMs)}  server ${fmtPct(cpu.serverCpuPct)}  client ${fmtPct(cpu.clientCpuPct)}  errors ${res.errors}`);
    } finally {
      await etcd.stop();
    }
  }
}

// ---------------------------------------------------------------- report

/** A row's summary from the comparison (variant null: the system's only row, with no variant). */
const pick = (out, workload, label, variant = null) => out.comparison?.cases.find((c) => c.workload === workload)?.rows.find((r) => r.label === label && (r.variant ?? null) === variant)?.summary ?? null;
const statOf = (runs, f) => stat((runs ?? []).map(f));
const ratio = (a, b) => (a && b ? `${(a / b).toFixed(2)}x` : '-');

/** One row: the comparison's figure against the independent client's runs. */
function crossRow(what, node, independentLabel, runs, switchboard, switchboardLabel) {
  return {
    what,
    node,
    independentLabel,
    independent: statOf(runs, (r) => r.opsPerSec),
    independentCpu: { server: statOf(runs, (r) => r.serverCpuPct), client: statOf(runs, (r) => r.clientCpuPct), perServerCpuSec: statOf(runs, (r) => r.perServerCpuSec) },
    errors: (runs ?? []).reduce((n, r) => n + r.errors, 0),
    switchboard,
    switchboardLabel,
  };
}

/** The rows of the cross-check table. */
export function crossRows(out) {
  const zk = out.zookeeper?.runs;
  const sb = pick(out, 'register', 'Switchboard', 'session');
  const java = 'ZooKeeper Java client, 64 sessions';
  return [
    crossRow('ZooKeeper: ephemeral creates, 64 sessions', pick(out, 'register', 'ZooKeeper'), java, zk?.create, sb, 'Switchboard (session) registrations'),
    crossRow('ZooKeeper: bare getChildren of 20 children, 64 sessions', pick(out, 'read', 'ZooKeeper', 'bare getChildren'), java, zk?.children, pick(out, 'read', 'Switchboard', 'session'), 'Switchboard (session) reads'),
    crossRow('etcd: puts (Node: lease-bound, 64 clients; etcdctl: 1 KiB values, no lease, 500 clients)', pick(out, 'register', 'etcd'), 'etcdctl check perf --load l (Go)', out.etcd?.runs, sb, 'Switchboard (session) registrations'),
  ];
}

export function renderCross(out, { format = 'text' } = {}) {
  const rows = crossRows(out);
  const headers = ['peer and workload', 'Node client (comparison)', 'independent client', 'independent ÷ Node', 'independent: server CPU / client CPU', 'independent: per server CPU-s', 'independent: errors', 'Switchboard ÷ independent'];
  const body = rows.map((r) => [
    r.what,
    mm(r.node?.throughput, fmtInt),
    `${mm(r.independent, fmtInt)} (${r.independentLabel})`,
    ratio(r.independent?.median, r.node?.throughput?.median),
    `${mm(r.independentCpu.server, fmtPct)} / ${mm(r.independentCpu.client, fmtPct)}`,
    mm(r.independentCpu.perServerCpuSec, fmtInt),
    fmtInt(r.errors),
    `${ratio(r.switchboard?.throughput?.median, r.independent?.median)} (${r.switchboardLabel} ${fmtInt(r.switchboard?.throughput?.median)}/s)`,
  ]);
  return format === 'md' ? mdTable(headers, body) : table(headers, body);
}

const BEGIN = '<!-- BEGIN GENERATED: crosscheck (npm run bench -- --suite crosscheck --write-docs, or node bench/crosscheck.mjs --report RESULTS.json --write-docs) -->';
const END = '<!-- END GENERATED: crosscheck -->';

export function writeCrossDocs(out, file) {
  const missing = ['comparison', 'zookeeper', 'etcd'].filter((p) => !out[p] || out[p].error);
  if (missing.length > 0 || out.comparisonFailed) throw new Error(`${file} lacks ${missing.length ? missing.join(', ') : 'a successful comparison'}: the docs take a complete cross-check only`);
  const rel = relative(ROOT, file);
  const lines = [
    `*Generated* from \`${rel}\` (${out.startedAt}; ${out.settings.runs} runs per figure, median [min–max]; Java client JVM options \`${out.settings.jvmOpts.join(' ') || '(defaults)'}\`, ZooKeeper server JVM options ${out.settings.serverJvmOpts?.length ? `\`${out.settings.serverJvmOpts.join(' ')}\`` : 'the defaults, as in the comparison'}; ${out.versions.javac}) by \`node bench/crosscheck.mjs --report ${rel} --write-docs\`.`,
    '',
    renderCross(out, { format: 'md' }),
    '',
  ];
  return replaceGenerated(join(ROOT, 'docs/benchmarks.md'), BEGIN, END, lines);
}

// ---------------------------------------------------------------- main

export async function main(argv) {
  let opts;
  try {
    opts = options(argv);
  } catch (err) {
    process.stderr.write(`bench crosscheck: ${err.message}\n\n${HELP}`);
    return 2;
  }
  if (opts.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (opts.report) {
    const out = JSON.parse(readFileSync(opts.report, 'utf8'));
    process.stdout.write(renderCross(out) + '\n');
    if (!opts.writeDocs) return 0;
    try {
      process.stdout.write(`docs: ${writeCrossDocs(out, opts.report)} regenerated from ${opts.report}\n`);
      return 0;
    } catch (err) {
      process.stderr.write(`bench crosscheck: ${err.message}\n`);
      return 1;
    }
  }
  const progress = new Progress();
  installCleanup(() => process.stdout.write('\nbench crosscheck: interrupted; every process it started was killed and its temporary directories removed\n'), (l) => progress.log(l));
  const { started, stamp, resultsDir } = openResults(false);
  const versions = {};
  try {
    Object.assign(versions, ensurePeers(['etcd', 'zookeeper'], (l) => progress.log(l)));
    if (opts.only.includes('zookeeper')) versions.javac = ensureJavac((l) => progress.log(l));
  } catch (err) {
    progress.done(`bench crosscheck: ${err.message}`);
    return 1;
  }
  const out = {
    format: 1,
    kind: 'crosscheck',
    startedAt: started.toISOString(),
    command: ['npm run bench -- --suite crosscheck', ...argv].join(' '),
    machine: machineFacts(),
    source: gitFacts(),
    versions,
    settings: { runs: opts.runs, warmupMs: opts.warmupMs, durationMs: opts.durationMs, sessions: SESSIONS, payloadBytes: PAYLOAD_BYTES, jvmOpts: opts.jvmOpts, serverJvmOpts: opts.serverJvmOpts, checkPerfLoad: 'l', zookeeperTickMs: ZK_TICK_MS },
    comparisonFile: null,
    comparisonFailed: false,
    comparison: null,
    zookeeper: null,
    etcd: null,
  };
  let code = 0;
  mkdirSync(resultsDir, { recursive: true });
  const file = join(resultsDir, `crosscheck-${stamp}.json`);
  const partialFile = join(resultsDir, `crosscheck-${stamp}.partial.json`);
  const save = (f) => writeFileSync(f, JSON.stringify(out, null, 2) + '\n');
  // Each part on its own: one that fails is recorded and reported, the others still run,
  // and what is done is saved after every part.
  const parts = {
    async comparison() {
      const args = ['--only', 'register,read', '--level', String(SESSIONS), '--runs', String(opts.runs), ...(opts.waitQuiet ? ['--wait-quiet', opts.waitQuiet] : [])];
      let results = null;
      const rc = await compare(args, {
        onResults(f, r) {
          out.comparisonFile = relative(ROOT, f);
          results = r;
        },
      });
      if (rc !== 0) out.comparisonFailed = true;
      if (!results) throw new Error(`the comparison ended with code ${rc} and no results`);
      out.comparison = results;
    },
    zookeeper: () => zookeeperPart(opts, progress, (out.zookeeper = {})),
    etcd: () => etcdPart(opts, progress, (out.etcd = {})),
  };
  for (const part of PARTS) {
    if (!opts.only.includes(part)) continue;
    try {
      await parts[part]();
      if (out.comparisonFailed && part === 'comparison') code = 1;
    } catch (err) {
      // What the part finished before it failed stays, marked with the error.
      out[part] = { ...(out[part] ?? {}), error: String(err?.message ?? err) };
      progress.log(`bench crosscheck: ${part} failed: ${out[part].error}`);
      code = 1;
    }
    save(partialFile);
  }
  out.finishedAt = new Date().toISOString();
  save(file);
  rmSync(partialFile, { force: true });
  progress.done('');
  process.stdout.write('\n' + renderCross(out) + '\n');
  process.stdout.write(`\nresults: ${file}\n`);
  if (opts.writeDocs) {
    try {
      process.stdout.write(`docs: ${writeCrossDocs(out, file)} regenerated from these results\n`);
    } catch (err) {
      process.stdout.write(`docs: not written: ${err.message}\n`);
      code = 1;
    }
  }
  process.stdout.write(await endAll());
  return code;
}

runIfScript(import.meta.url, 'crosscheck', main);
