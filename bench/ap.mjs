/**
 * `npm run bench -- --suite ap`: the ap cluster (three durable Switchboard nodes on
 * 127.0.0.1, linked directly; the partition step links them through fault proxies)
 * against a standalone node, a 3-member etcd and (when installed) a 3-node ZooKeeper:
 *   1. registration throughput from 64 clients (each with its own lease and connection,
 *      closed loop; the clients of the ap cluster are spread over its three nodes);
 *   2. replication lag: a write acknowledged by one node, seen on the watch stream of each
 *      other node (p50/p99/max at a steady 500 writes/s);
 *   3. convergence: 10,000 instances registered on each side of a partition, then the
 *      time from the heal until every node lists all 20,000;
 *   4. failover: a client of the SDK flips an instance's status in a loop; its node is
 *      killed; the longest gap between two acknowledged writes;
 *   5. one peer link: replication-sized messages per second between two transports.
 * Every step runs --trials times (default 3, each on fresh processes); figures are the
 * median with min and max. --write-docs puts the tables into docs/benchmarks.md (between
 * the `ap` generated markers); `node bench/ap.mjs --report FILE --write-docs` does it
 * again from a results file.
 * Options: --duration 10s --warmup 2s --clients 64 --per-side 10000 --skip etcd,zookeeper
 *          --trials 3 --write-docs --report FILE
 *          --only throughput,lag,convergence,failover,link (steps to run; default all)
 *          --profile DIR (the ap nodes run with --cpu-prof; a profile per node in DIR at stop;
 *          summarise with bench/profile-summary.mjs)
 * Results go to bench/results/ap-<timestamp>.json. Every process is ended by PID.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { Agent as UndiciAgent, request } from 'undici';
import { startEtcd } from './compare/systems/etcd.mjs';
import { startZookeeper } from './compare/systems/zookeeper.mjs';
import { AGENT_BIN, AGENT_CONFIG, startSwitchboard } from './compare/systems/switchboard.mjs';
import { loadDriver } from './compare/drivers/index.mjs';
import { payload } from './compare/lib/payload.mjs';
import { ROOT, freePorts, installCleanup, runIfScript, makeTempDir, removeTempDir, sleep, spawnLogged, stopProc, sumStats, waitReady } from './lib/procs.mjs';
import { gitFacts, parseDuration, positiveInt, stat } from './lib/harness.mjs';
import { Histogram } from './lib/hist.mjs';
import { replaceGenerated } from './lib/docs.mjs';

const { FaultProxy } = await import(join(ROOT, 'packages/registry/dist/test/support/fault-proxy.js'));
const { connect } = await import(join(ROOT, 'packages/client/dist/src/index.js'));

const now = () => performance.now();
const log = (s) => process.stdout.write(s + '\n');

function parseArgs(argv) {
  const o = { durationMs: 10_000, warmupMs: 2_000, clients: 64, perSide: 10_000, skip: new Set(), only: null, profileDir: null, trials: 3, writeDocs: false, report: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--suite') i++;
    else if (a === '--duration') o.durationMs = parseDuration(argv[++i], '--duration');
    else if (a === '--warmup') o.warmupMs = parseDuration(argv[++i], '--warmup', { allowZero: true });
    else if (a === '--clients') o.clients = positiveInt(argv[++i], a);
    else if (a === '--per-side') o.perSide = positiveInt(argv[++i], a);
    else if (a === '--skip') for (const s of (argv[++i] ?? '').split(',')) o.skip.add(s.trim());
    else if (a === '--profile') o.profileDir = argv[++i];
    else if (a === '--trials' || a === '--runs') o.trials = positiveInt(argv[++i], a);
    else if (a === '--write-docs') o.writeDocs = true;
    else if (a === '--report') o.report = argv[++i];
    else if (a === '--only') o.only = new Set((argv[++i] ?? '').split(',').map((s) => s.trim()));
    else if (a.startsWith('--suite=')) continue;
    else throw new Error(`unknown option ${a}`);
  }
  return o;
}

// ------------------------------------------------------------------ the ap cluster

/**
 * Three durable ap nodes. With `proxied`, node i reaches node j through proxy `i>j` (the
 * partition step cuts them); without, the nodes link directly, as etcd and ZooKeeper
 * members do in this suite (a proxy in this process would copy every replication byte
 * on the cores the servers and the load generator share).
 */
async function startApCluster(opts = {}) {
  // A port picked free may be taken before the node binds it (the kernel also hands it
  // out as the source port of an outgoing connection): new ports, up to three times.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startApClusterOnce(opts);
    } catch (err) {
      if (attempt >= 3 || !/ADDRESS_IN_USE/.test(String(err?.message))) throw err;
    }
  }
}

async function startApClusterOnce({ ids = ['a', 'b', 'c'], profileDir = null, proxied = false } = {}) {
  const dir = makeTempDir('bench-ap');
  const cfgFile = join(dir, 'config.json');
  writeFileSync(cfgFile, JSON.stringify(AGENT_CONFIG));
  const peerPorts = await freePorts(ids.length);
  const proxies = new Map();
  for (const [i, from] of ids.entries()) {
    if (proxied) for (const [j, to] of ids.entries()) if (i !== j) proxies.set(`${from}>${to}`, await FaultProxy.start({ host: '127.0.0.1', port: peerPorts[j] }));
  }
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('SWITCHBOARD_')) delete env[k];
  const nodes = ids.map((id, i) => ({ id, peerPort: peerPorts[i], url: null, proc: null, logFile: join(dir, `${id}.log`) }));
  const start = async (n) => {
    const peers = nodes.filter((o) => o !== n).map((o) => `${o.id}@${proxied ? proxies.get(`${n.id}>${o.id}`).address : `127.0.0.1:${o.peerPort}`}`).join(',');
    writeFileSync(n.logFile, '');
    const prof = profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir, '--cpu-prof-name', `ap-${n.id}-${Date.now()}.cpuprofile`] : [];
    n.proc = spawnLogged(`ap ${n.id}`, process.execPath, [...prof, AGENT_BIN, 'agent', '--mode', 'ap', '--node-id', n.id, '--data-dir', join(dir, n.id), '--http-addr', '127.0.0.1:0', '--peer-addr', `127.0.0.1:${n.peerPort}`, '--peers', peers, '--log-format', 'json', '--config', cfgFile], { cwd: ROOT, env, logFile: n.logFile });
    n.url = await waitReady({
      what: `ap node ${n.id}`,
      procs: [n.proc],
      timeoutMs: 30_000,
      everyMs: 100,
      probe: async () => /listening on (http:\/\/[^\s"]+)/.exec(readFileSync(n.logFile, 'utf8'))?.[1] ?? null,
    });
  };
  const cluster = {
    nodes,
    proxies,
    start,
    async waitMeshed(timeoutMs = 30_000) {
      const end = now() + timeoutMs;
      for (;;) {
        const ok = await Promise.all(nodes.filter((n) => n.proc).map(async (n) => {
          const s = await json(n.url, '/v1/status').catch(() => null);
          return s?.cluster?.ready === true && s.cluster.members.every((m) => m.reachable || !nodes.find((x) => x.id === m.id)?.proc);
        }));
        if (ok.every(Boolean)) return;
        if (now() > end) throw new Error('the ap cluster did not link up');
        await sleep(100);
      }
    },
    partition(left, right) {
      if (!proxied) throw new Error('a partition needs a proxied cluster');
      for (const l of left) for (const r of right) for (const k of [`${l}>${r}`, `${r}>${l}`]) proxies.get(k).cut('refuse');
    },
    heal() {
      for (const p of proxies.values()) p.restore();
    },
    async kill(id) {
      const n = nodes.find((x) => x.id === id);
      await stopProc(n.proc, 0, 'SIGKILL');
      n.proc = null;
    },
    async stop() {
      await Promise.all(nodes.filter((n) => n.proc).map((n) => stopProc(n.proc, 5_000)));
      await Promise.all([...proxies.values()].map((p) => p.close()));
      removeTempDir(dir);
    },
  };
  try {
    // Every start settles before a failure is acted on, so that none is left running.
    const started = await Promise.allSettled(nodes.map(start));
    const failed = started.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    await cluster.waitMeshed();
  } catch (err) {
    await cluster.stop().catch(() => undefined);
    throw err;
  }
  return cluster;
}

const http = new UndiciAgent({ connections: 256, keepAliveTimeout: 10_000 });
async function json(url, path, method = 'GET', body) {
  const res = await request(url + path, { method, dispatcher: http, headers: body ? { 'content-type': 'application/json' } : {}, body: body ? JSON.stringify(body) : undefined, headersTimeout: 10_000, bodyTimeout: 10_000 });
  const text = await res.body.text();
  if (res.statusCode >= 400) throw new Error(`${method} ${path}: ${res.statusCode} ${text.slice(0, 200)}`);
  return text ? JSON.parse(text) : undefined;
}

// ------------------------------------------------------------------ 1. throughput

/**
 * 64 clients in a closed loop, each with its own lease; `targets` are spread over the
 * clients. `pids` are the servers' processes: their CPU time over the measured window
 * gives registrations per server CPU-second (the load generator, this process, shares the
 * cores, so throughput alone also measures how much CPU was left to each system).
 */
async function throughput(label, targets, o, pids) {
  const drivers = await Promise.all(targets.map((t) => loadDriver(t)));
  const services = Array.from({ length: o.clients }, (_, c) => `reg-${c}`);
  await drivers[0].prepareServices(services);
  const procs = [];
  // Switchboard's clients write over their sessions, as the SDK does (docs/api.md,
  // "Requests over the session"); the peers' drivers have one way each.
  for (let c = 0; c < o.clients; c++) procs.push(await drivers[c % drivers.length].process({ ttlMs: 30_000, transport: 'requests' }));
  const hist = new Histogram();
  let ops = 0;
  let errors = 0;
  const t0 = now();
  const tStart = t0 + o.warmupMs;
  const tEnd = tStart + o.durationMs;
  const cpu = { server0: null, server1: null, self0: null, self1: null };
  const sample = (k) => {
    cpu[`server${k}`] = sumStats(pids)?.cpuMs ?? null;
    cpu[`self${k}`] = process.cpuUsage();
  };
  const t0Timer = setTimeout(() => sample(0), Math.max(0, tStart - now()));
  const t1Timer = setTimeout(() => sample(1), Math.max(0, tEnd - now()));
  await Promise.all(procs.map(async (p, c) => {
    for (let k = 0; now() < tEnd; k++) {
      const s = now();
      try {
        await p.register(`reg-${c}`, `i-${k}`, payload(c, k, k));
        if (s >= tStart && now() <= tEnd) {
          ops++;
          hist.recordMs(now() - s);
        }
      } catch {
        if (s >= tStart) errors++;
      }
    }
  }));
  // Revoked, so that their instances go now rather than expire in the middle of the next step.
  await Promise.all(procs.map((p) => p.close({ revoke: true }).catch(() => undefined)));
  await Promise.all(drivers.map((d) => d.close()));
  clearTimeout(t0Timer);
  clearTimeout(t1Timer);
  const seconds = o.durationMs / 1000;
  const serverCpu = cpu.server0 !== null && cpu.server1 !== null ? (cpu.server1 - cpu.server0) / 1000 / seconds : null;
  const selfUsage = cpu.self0 && cpu.self1 ? (cpu.self1.user + cpu.self1.system - cpu.self0.user - cpu.self0.system) / 1e6 / seconds : null;
  const r = {
    system: label,
    clients: o.clients,
    opsPerSec: Math.round(ops / seconds),
    errors,
    latencyMs: { p50: round(hist.percentileMs(50)), p99: round(hist.percentileMs(99)) },
    // Cores busy over the measured window: the servers (all members), and this process.
    serverCpu: serverCpu === null ? null : round(serverCpu),
    loadGenCpu: selfUsage === null ? null : round(selfUsage),
    perServerCpuSecond: serverCpu ? Math.round(ops / seconds / serverCpu) : null,
  };
  log(`  ${label.padEnd(22)} ${String(r.opsPerSec).padStart(7)} registrations/s   p50 ${r.latencyMs.p50} ms   p99 ${r.latencyMs.p99} ms   errors ${errors}   ${r.perServerCpuSecond ?? '?'} per server CPU-s (servers ${r.serverCpu ?? '?'} cores, load generator ${r.loadGenCpu ?? '?'})`);
  return r;
}

const round = (x) => Math.round(x * 100) / 100;

/** A node's log commits and the records they carried, from its /metrics. */
async function walCounters(url) {
  const res = await request(url + '/metrics', { dispatcher: http });
  const text = await res.body.text();
  const num = (name) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  return { commits: num('switchboard_wal_batch_records_count'), records: num('switchboard_wal_batch_records_sum') };
}

// ------------------------------------------------------------------ 2. replication lag

/** Writes on node a at `rate`/s; each write's event is timed on the watch streams of b and c. */
async function replicationLag(cluster, { rate = 500, seconds = 5 } = {}) {
  const [a, ...others] = cluster.nodes;
  const acked = new Map();
  const arrivals = new Map();
  const hist = new Histogram();
  let seen = 0;
  const streams = await Promise.all(others.map(async (n) => {
    const ac = new AbortController();
    const res = await request(`${n.url}/v1/watch?service=lag`, { dispatcher: http, signal: ac.signal, headers: { accept: 'text/event-stream' }, bodyTimeout: 0 });
    let buf = '';
    res.body.on('data', (chunk) => {
      const at = now();
      buf += chunk.toString();
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const ev = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (!/^event: put/m.test(ev)) continue;
        const id = /"id":"(l-\d+)"/.exec(ev)?.[1];
        if (!id) continue;
        // An event may arrive before the write's answer: kept, and timed once the answer is in.
        const list = arrivals.get(id) ?? [];
        list.push(at);
        arrivals.set(id, list);
        seen++;
      }
    });
    res.body.on('error', () => undefined);
    return ac;
  }));
  const total = rate * seconds;
  const start = now();
  const inflight = [];
  for (let k = 0; k < total; k++) {
    await sleep(start + (k * 1000) / rate - now());
    const id = `l-${k}`;
    inflight.push(json(a.url, `/v1/services/lag/instances/${id}`, 'PUT', { address: '10.9.0.1', port: 1000 + (k % 60000) }).then(() => acked.set(id, now())));
  }
  await Promise.all(inflight);
  const end = now() + 5_000;
  while (seen < total * others.length && now() < end) await sleep(20);
  for (const ac of streams) ac.abort();
  // Lag of each copy: from the origin's acknowledgement to its event on another node (0 when it came first).
  for (const [id, list] of arrivals) {
    const t = acked.get(id);
    if (t !== undefined) for (const at of list) hist.recordMs(Math.max(0, at - t));
  }
  const r = { writesPerSec: rate, writes: total, observed: seen, expected: total * others.length, lagMs: { p50: round(hist.percentileMs(50)), p99: round(hist.percentileMs(99)), max: round(hist.percentileMs(100)) } };
  log(`  replication lag at ${rate} writes/s: p50 ${r.lagMs.p50} ms, p99 ${r.lagMs.p99} ms, max ${r.lagMs.max} ms (${seen}/${r.expected} events seen)`);
  return r;
}

// ------------------------------------------------------------------ 3. convergence

async function instancesOn(n) {
  return (await json(n.url, '/v1/status')).instances;
}

/** Instances of the convergence step on one node (its own namespace, summed over its services). */
async function convCount(n) {
  const body = await json(n.url, '/v1/services?namespace=conv');
  return (body.services ?? []).reduce((sum, s) => sum + s.instances, 0);
}

/** Waits until every node holds the same number of instances twice in a row (the cluster is quiet). */
async function settle(cluster, timeoutMs = 60_000) {
  const end = now() + timeoutMs;
  let prev = '';
  for (;;) {
    const counts = (await Promise.all(cluster.nodes.filter((n) => n.proc).map((n) => instancesOn(n).catch(() => -1)))).join(',');
    if (counts === prev && new Set(counts.split(',')).size === 1) return;
    if (now() > end) throw new Error(`the cluster did not settle: ${counts}`);
    prev = counts;
    await sleep(500);
  }
}

async function convergence(cluster, perSide) {
  const [a, b] = cluster.nodes;
  cluster.partition(['a'], ['b', 'c']);
  await sleep(500);
  const batch = async (n, prefix) => {
    for (let i = 0; i < perSide; i += 1000) {
      const instances = Array.from({ length: Math.min(1000, perSide - i) }, (_, k) => ({ service: `conv-${prefix}-${(i + k) % 50}`, id: `${prefix}-${i + k}`, address: '10.8.0.1', port: 2000 + ((i + k) % 60000) }));
      await json(n.url, '/v1/instances/batch?namespace=conv', 'POST', { instances });
    }
  };
  const w0 = now();
  await Promise.all([batch(a, 'left'), batch(b, 'right')]);
  const writeMs = now() - w0;
  const during = await Promise.all(cluster.nodes.map(convCount));
  const want = 2 * perSide;
  const healed = now();
  cluster.heal();
  const end = healed + 60_000;
  let counts;
  let linkedMs = null;
  for (;;) {
    counts = await Promise.all(cluster.nodes.map((n) => convCount(n).catch(() => -1)));
    if (linkedMs === null) {
      const linked = await Promise.all(cluster.nodes.map((n) => json(n.url, '/v1/status').then((st) => st.cluster.members.every((m) => m.reachable), () => false)));
      if (linked.every(Boolean)) linkedMs = Math.round(now() - healed);
    }
    if (counts.every((c) => c === want)) break;
    if (now() > end) break;
    await sleep(20);
  }
  const ms = now() - healed;
  const ok = counts.every((c) => c === want);
  log(`  convergence: ${perSide} instances per side written in ${Math.round(writeMs)} ms (during the cut the nodes held ${during.join(', ')}); links up again ${linkedMs ?? '?'} ms after the heal; every node lists ${want} ${ok ? `${Math.round(ms)} ms after the heal` : `NOT within 60 s (counts ${counts.join(', ')})`}`);
  return { perSide, duringCut: during, converged: ok, convergeMs: ok ? Math.round(ms) : null, linkedMs, counts };
}

// ------------------------------------------------------------------ 4. failover gap

async function failoverGap(cluster) {
  const urls = cluster.nodes.map((n) => n.url);
  const client = await connect(urls, { leaseTtlMs: 3_000, backoff: { initialMs: 20, maxMs: 200 } });
  const reg = await client.register({ service: 'gap', id: 'g1', address: '127.0.0.1', port: 9999 });
  const victim = cluster.nodes.find((n) => n.url === client.lease.endpoint);
  let last = now();
  let longest = 0;
  let writes = 0;
  let stop = false;
  const loop = (async () => {
    for (let k = 0; !stop; k++) {
      await reg.setStatus(k % 2 === 0 ? 'out_of_service' : 'up');
      const t = now();
      longest = Math.max(longest, t - last);
      last = t;
      writes++;
    }
  })();
  await sleep(1_000);
  longest = 0;
  const killedAt = now();
  await cluster.kill(victim.id);
  await sleep(3_000);
  stop = true;
  await loop;
  const movedTo = client.lease?.endpoint;
  await client.close();
  log(`  failover: node ${victim.id} killed; longest gap between two acknowledged writes ${Math.round(longest)} ms (target <= 500 ms); ${writes} writes; lease now on ${movedTo === victim.url ? 'the dead node?!' : 'a survivor'}`);
  return { killed: victim.id, longestGapMs: Math.round(longest), writes, sinceKillMs: Math.round(now() - killedAt) };
}

// ------------------------------------------------------------------ 5. one peer link

/**
 * Two transports in this process: replication-sized messages over one link, as fast as it
 * takes them; with `tls`, the link in peer TLS (certificates made with openssl for the run).
 */
async function peerLink(n = 200_000, { tls = false } = {}) {
  const { createTcpTransport } = await import(join(ROOT, 'packages/registry/dist/src/engines/ap/net/index.js'));
  const { DEFAULT_LIMITS } = await import(join(ROOT, 'packages/protocol/dist/src/index.js'));
  const { pino } = await import('pino');
  const logger = pino({ level: 'silent' });
  let certDir = null;
  let certs = null;
  if (tls) {
    const { makePeerCerts } = await import(join(ROOT, 'packages/registry/dist/test/support/pki.js'));
    certDir = makeTempDir('bench-peer-tls');
    const c = makePeerCerts(certDir, { node: 'ca' }).node;
    certs = { cert: c.cert, key: c.key, ca: c.ca };
  }
  const b = await createTcpTransport({ nodeId: 'b', listen: { host: '127.0.0.1', port: 0 }, peers: [], join: [], limits: DEFAULT_LIMITS, logger, tls: certs });
  const a = await createTcpTransport({ nodeId: 'a', listen: { host: '127.0.0.1', port: 0 }, peers: [{ id: 'b', host: '127.0.0.1', port: b.address().port }], join: [], limits: DEFAULT_LIMITS, logger, tls: certs });
  try {
    const up = now() + 10_000;
    while (!a.peers()[0].reachable && now() < up) await sleep(10);
    let got = 0;
    b.onMessage(() => got++);
    const msg = { type: 'ap_batch', records: [{ namespace: 'default', service: 'web', id: 'web-1', version: '000mwy8dy9k0000@a', body: { address: '10.0.0.1', port: 8080, tags: ['x'], metadata: { k: 'v' } } }] };
    const t0 = now();
    let sent = 0;
    while (sent < n) {
      for (let i = 0; i < 1000; i++) if (a.send('b', msg)) sent++;
      await new Promise((r) => setImmediate(r));
    }
    const end = now() + 30_000;
    while (got < n && now() < end) await sleep(5);
    const ms = now() - t0;
    const r = { messages: n, received: got, ms: Math.round(ms), perSec: Math.round(got / (ms / 1000)), dropped: a.peers()[0].dropped, rttMs: a.peers()[0].rttMs };
    log(`  one peer link${tls ? ' with peer TLS' : ''}: ${r.perSec} messages/s (${got}/${n} received, ${r.dropped} dropped)`);
    return r;
  } finally {
    await a.close();
    await b.close();
    if (certDir) removeTempDir(certDir);
  }
}

// ------------------------------------------------------------------ main

export async function main(argv) {
  const o = parseArgs(argv);
  if (o.report) {
    const out = JSON.parse(readFileSync(o.report, 'utf8'));
    log(renderText(out));
    if (o.writeDocs) log(`docs: ${writeApDocs(out, o.report)} regenerated from ${o.report}`);
    return 0;
  }
  installCleanup(undefined, log);
  const started = new Date();
  log(`ap suite: ${o.clients} clients, ${o.durationMs / 1000} s measured after ${o.warmupMs / 1000} s warm-up, ${o.trials} run(s); ${cpus().length} cores, load average ${loadavg().map((x) => x.toFixed(1)).join(' ')}`);
  const out = {
    format: 2,
    suite: 'ap',
    command: `npm run bench -- --suite ap ${argv.filter((a) => !a.startsWith('--suite')).join(' ')}`.trim(),
    startedAt: started.toISOString(),
    commit: gitFacts().commit?.slice(0, 12) ?? null,
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? '', loadavgAtStart: loadavg() },
    settings: { ...o, skip: [...o.skip], only: o.only ? [...o.only] : null },
    runs: [],
    notes: ['The load generator runs in the benchmark process and shares the cores with every server.'],
  };
  for (let t = 1; t <= o.trials; t++) {
    if (o.trials > 1) log(`\n== run ${t} of ${o.trials}`);
    out.runs.push(await runOnce(o, t === 1 ? o.profileDir : null));
  }
  out.summary = summarize(out.runs);
  out.targets = targetsOf(out.summary);
  out.machine.loadavgAtEnd = loadavg();
  out.finishedAt = new Date().toISOString();
  log('\n' + renderText(out));
  const dir = join(ROOT, 'bench/results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `ap-${started.toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify(out, null, 2) + '\n');
  log(`results: ${file}`);
  if (o.writeDocs) log(`docs: ${writeApDocs(out, file)} regenerated from these results`);
  await http.close();
  return 0;
}

/** One run of every step asked for, each on fresh processes. */
async function runOnce(o, profileDir) {
  const run = { throughput: [] };
  const want = (step) => o.only === null || o.only.has(step);
  if (want('throughput') || want('lag') || want('failover')) {
    const cluster = await startApCluster({ profileDir });
    try {
      if (want('throughput')) {
        log('\n1. registration throughput');
        const wal0 = await Promise.all(cluster.nodes.map((n) => walCounters(n.url)));
        const t0 = now();
        run.throughput.push(await throughput('Switchboard ap x3', cluster.nodes.map((n) => ({ kind: 'switchboard', url: n.url })), o, cluster.nodes.map((n) => n.proc.pid)));
        const seconds = (now() - t0) / 1000;
        const wal1 = await Promise.all(cluster.nodes.map((n) => walCounters(n.url)));
        // Log commits (write + fsync) per node: each costs CPU in the kernel, whoever's records it carries.
        run.throughput.at(-1).walPerNode = wal1.map((w, i) => ({ commitsPerSec: Math.round((w.commits - wal0[i].commits) / seconds), recordsPerCommit: round((w.records - wal0[i].records) / Math.max(1, w.commits - wal0[i].commits)) }));
        log(`  log commits per node: ${run.throughput.at(-1).walPerNode.map((w) => `${w.commitsPerSec}/s (${w.recordsPerCommit} records each)`).join(', ')}`);
        await settle(cluster);
      }
      if (want('lag')) {
        log('\n2. replication lag');
        run.replication = await replicationLag(cluster);
      }
      if (want('failover')) {
        log('\n4. failover of a client whose node is killed');
        run.failover = await failoverGap(cluster);
      }
    } finally {
      await cluster.stop();
    }
  }
  if (want('convergence')) {
    const cluster = await startApCluster({ proxied: true });
    try {
      log('\n3. convergence after a partition (peer links through fault proxies)');
      run.convergence = await convergence(cluster, o.perSide);
    } finally {
      await cluster.stop();
    }
  }
  if (want('link')) {
    log('\n5. one peer link');
    run.peerLink = await peerLink();
    run.peerLinkTls = await peerLink(200_000, { tls: true });
  }
  if (!want('throughput')) return run;

  const sb = await startSwitchboard();
  try {
    run.throughput.push(await throughput('Switchboard standalone', [{ kind: 'switchboard', url: sb.url }], o, sb.pids));
  } finally {
    await sb.stop();
  }
  if (!o.skip.has('etcd')) {
    try {
      const etcd = await startEtcd({ members: 3 });
      try {
        run.throughput.push(await throughput(`etcd x3 (${etcd.version})`, [{ kind: 'etcd', endpoints: etcd.endpoints }], o, etcd.pids));
      } finally {
        await etcd.stop();
      }
    } catch (err) {
      log(`  etcd x3: not measured (${err.message.split('\n')[0]})`);
    }
  }
  if (!o.skip.has('zookeeper')) {
    try {
      const zk = await startZookeeper({ nodes: 3 });
      try {
        run.throughput.push(await throughput('ZooKeeper x3', [{ kind: 'zookeeper', hosts: zk.hosts, connectString: zk.connectString }], o, zk.pids));
      } finally {
        await zk.stop();
      }
    } catch (err) {
      log(`  ZooKeeper x3: not measured (${err.message.split('\n')[0]})`);
    }
  }
  return run;
}

// ------------------------------------------------------------------ summary and report

function summarize(runs) {
  const systems = [...new Set(runs.flatMap((r) => r.throughput.map((t) => t.system)))];
  const of = (system) => runs.map((r) => r.throughput.find((t) => t.system === system)).filter(Boolean);
  return {
    throughput: systems.map((system) => {
      const rs = of(system);
      return {
        system,
        opsPerSec: stat(rs.map((t) => t.opsPerSec)),
        p50Ms: stat(rs.map((t) => t.latencyMs.p50)),
        p99Ms: stat(rs.map((t) => t.latencyMs.p99)),
        errors: rs.reduce((n, t) => n + t.errors, 0),
        // Null for results written before the CPU was measured.
        perServerCpuSecond: stat(rs.map((t) => t.perServerCpuSecond)),
        serverCpu: stat(rs.map((t) => t.serverCpu)),
        loadGenCpu: stat(rs.map((t) => t.loadGenCpu)),
      };
    }),
    lag: runs.some((r) => r.replication)
      ? { p50Ms: stat(runs.map((r) => r.replication?.lagMs.p50)), p99Ms: stat(runs.map((r) => r.replication?.lagMs.p99)), maxMs: stat(runs.map((r) => r.replication?.lagMs.max)), writesPerSec: runs.find((r) => r.replication)?.replication.writesPerSec, missing: runs.reduce((n, r) => n + (r.replication ? r.replication.expected - r.replication.observed : 0), 0) }
      : null,
    convergence: runs.some((r) => r.convergence)
      ? { perSide: runs.find((r) => r.convergence)?.convergence.perSide, convergeMs: stat(runs.map((r) => r.convergence?.convergeMs)), linkedMs: stat(runs.map((r) => r.convergence?.linkedMs)), failed: runs.filter((r) => r.convergence && !r.convergence.converged).length }
      : null,
    failover: runs.some((r) => r.failover) ? { longestGapMs: stat(runs.map((r) => r.failover?.longestGapMs)) } : null,
    peerLink: runs.some((r) => r.peerLink) ? { perSec: stat(runs.map((r) => r.peerLink?.perSec)) } : null,
    peerLinkTls: runs.some((r) => r.peerLinkTls) ? { perSec: stat(runs.map((r) => r.peerLinkTls?.perSec)) } : null,
  };
}

function targetsOf(summary) {
  const ap = summary.throughput.find((t) => t.system === 'Switchboard ap x3')?.opsPerSec?.median ?? null;
  const peers = summary.throughput.filter((t) => /^(etcd|ZooKeeper)/.test(t.system));
  const best = peers.reduce((m, t) => (t.opsPerSec && t.opsPerSec.median > (m?.opsPerSec.median ?? 0) ? t : m), null);
  return {
    throughput: ap !== null && best ? { measured: ap, best: best.system, bestOpsPerSec: best.opsPerSec.median, ratio: round(ap / best.opsPerSec.median), met: ap >= 2 * best.opsPerSec.median } : null,
    lagP99: summary.lag ? { measured: summary.lag.p99Ms.median, met: summary.lag.p99Ms.median < 50 } : null,
    convergence: summary.convergence?.convergeMs ? { measured: summary.convergence.convergeMs.median, met: summary.convergence.failed === 0 && summary.convergence.convergeMs.median <= 2_000 } : null,
    failoverGap: summary.failover ? { measured: summary.failover.longestGapMs.median, met: summary.failover.longestGapMs.median <= 500 } : null,
  };
}

const n0 = (x) => Math.round(x).toLocaleString('en-US');
const ms = (x) => (x < 10 ? `${x.toFixed(1)} ms` : `${n0(x)} ms`);
const cell = (s, f) => (s === null || s === undefined ? '—' : s.n > 1 ? `${f(s.median)} [${f(s.min)}–${f(s.max)}]` : f(s.median));
const yes = (t) => (t === null ? 'not measured' : t.met ? 'yes' : '**no**');

/** The tables, as Markdown (also printed at the end of a run). */
function renderTables(out) {
  const { summary, targets } = out;
  const L = [];
  const ap = summary.throughput.find((t) => t.system === 'Switchboard ap x3');
  if (summary.throughput.length > 0) {
    L.push('#### Registration throughput, 64 clients', '');
    L.push('| system | registrations/s (median [min–max]) | p50 | p99 | per server CPU-s | server CPU | load gen. CPU | errors | ap x3 ÷ this | per CPU-s: ap x3 ÷ this |', '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    const pct = (x) => `${Math.round(x * 100)}%`;
    for (const t of summary.throughput) {
      const ratio = ap && t !== ap && t.opsPerSec ? `${(ap.opsPerSec.median / t.opsPerSec.median).toFixed(2)}x` : '';
      const cpuRatio = ap?.perServerCpuSecond && t !== ap && t.perServerCpuSecond ? `${(ap.perServerCpuSecond.median / t.perServerCpuSecond.median).toFixed(2)}x` : '';
      L.push(`| ${t.system} | ${cell(t.opsPerSec, n0)} | ${cell(t.p50Ms, ms)} | ${cell(t.p99Ms, ms)} | ${cell(t.perServerCpuSecond, n0)} | ${t.serverCpu ? pct(t.serverCpu.median) : '—'} | ${t.loadGenCpu ? pct(t.loadGenCpu.median) : '—'} | ${t.errors} | ${ratio} | ${cpuRatio} |`);
    }
    L.push('');
  }
  const rows = [];
  if (summary.lag) rows.push([`replication lag at ${summary.lag.writesPerSec} writes/s, p50 / p99 / max`, `${cell(summary.lag.p50Ms, ms)} / ${cell(summary.lag.p99Ms, ms)} / ${cell(summary.lag.maxMs, ms)}${summary.lag.missing ? ` (${summary.lag.missing} events missing)` : ''}`]);
  if (summary.convergence) rows.push([`convergence after a partition (${n0(summary.convergence.perSide)} instances written on each side), from the heal`, `${cell(summary.convergence.convergeMs, ms)} (links up again after ${cell(summary.convergence.linkedMs, ms)})${summary.convergence.failed ? `; ${summary.convergence.failed} run(s) did not converge within 60 s` : ''}`]);
  if (summary.failover) rows.push(['failover: longest gap between two acknowledged writes of an SDK client whose node is SIGKILLed', cell(summary.failover.longestGapMs, ms)]);
  if (summary.peerLink) rows.push(['one peer link: replication-sized messages per second', cell(summary.peerLink.perSec, n0)]);
  if (summary.peerLinkTls) rows.push(['one peer link with peer TLS (`--peer-tls-*`): replication-sized messages per second', cell(summary.peerLinkTls.perSec, n0)]);
  if (rows.length > 0) {
    L.push('#### Replication, convergence and failover', '', '| measure | median [min–max] |', '|---|---:|', ...rows.map(([a, b]) => `| ${a} | ${b} |`), '');
  }
  L.push('#### Targets of issue 8', '', '| target | measured | met |', '|---|---|---|');
  const t = targets;
  L.push(`| registrations of the 3-node ap cluster ≥ 2x the better of 3-member etcd and 3-node ZooKeeper | ${t.throughput ? `${n0(t.throughput.measured)}/s vs ${t.throughput.best} ${n0(t.throughput.bestOpsPerSec)}/s = ${t.throughput.ratio.toFixed(2)}x` : '—'} | ${yes(t.throughput)} |`);
  L.push(`| replication lag p99 < 50 ms | ${t.lagP99 ? ms(t.lagP99.measured) : '—'} | ${yes(t.lagP99)} |`);
  L.push(`| convergence within 2 s of the heal | ${t.convergence ? ms(t.convergence.measured) : '—'} | ${yes(t.convergence)} |`);
  L.push(`| no write gap longer than 0.5 s for a client whose node is killed | ${t.failoverGap ? ms(t.failoverGap.measured) : '—'} | ${yes(t.failoverGap)} |`);
  L.push('');
  return L;
}

function renderText(out) {
  return renderTables(out).join('\n');
}

const AP_BEGIN = '<!-- BEGIN GENERATED: ap (npm run bench -- --suite ap --write-docs, or node bench/ap.mjs --report RESULTS.json --write-docs) -->';
const AP_END = '<!-- END GENERATED: ap -->';

function writeApDocs(out, resultsFile) {
  const rel = relative(ROOT, resolve(resultsFile));
  const head = `*This part is generated* from \`${rel}\` (\`${out.command}\`, ${out.startedAt}, Switchboard at commit ${out.commit ?? '?'}; ${out.runs.length} run${out.runs.length > 1 ? 's' : ''}, median [min–max]; ${out.settings.warmupMs / 1000} s warm-up + ${out.settings.durationMs / 1000} s measured per throughput figure; ${out.machine.cpus} cores, ${out.machine.cpuModel}, load average ${out.machine.loadavgAtStart.map((x) => x.toFixed(1)).join(' ')} at the start).`;
  return replaceGenerated(join(ROOT, 'docs/benchmarks.md'), AP_BEGIN, AP_END, [head, '', ...renderTables(out)]);
}

runIfScript(import.meta.url, 'ap', main);
