/**
 * The load generator of the comparison suite: a child process of the runner
 * (bench/compare/runner.mjs), so that its CPU is not the servers'. It gets one
 * `{ type: 'run', workload, target, options }` message, sends `phase` (warmup, measure,
 * measured), `progress` and other messages while it runs, and ends with one `result` (or
 * `error`) message. The same code drives every system through its driver
 * (bench/compare/drivers/*.mjs). Every loop is bounded by a deadline and a count.
 */
import { loadDriver } from './drivers/index.mjs';
import { Histogram } from '../lib/hist.mjs';
import { payload } from './lib/payload.mjs';
import { histToWire } from './lib/histwire.mjs';
import { replyThenExit, send } from '../lib/child.mjs';

const now = () => performance.now();
const wallNow = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, Math.max(0, ms)));


class Errors {
  constructor() {
    this.total = 0;
    this.byKind = {};
    this.examples = [];
  }
  add(err) {
    const kind = String(err?.code ?? err?.name ?? 'error');
    this.total++;
    this.byKind[kind] = (this.byKind[kind] ?? 0) + 1;
    if (this.examples.length < 5) this.examples.push(`${kind}: ${String(err?.message ?? err).slice(0, 300)}`);
  }
  json() {
    return { total: this.total, byKind: this.byKind, examples: this.examples };
  }
}

/** `p`, or a rejection after `ms` (a call that never answers must not hang a run). */
function withTimeout(p, ms, what) {
  let t;
  return Promise.race([p, new Promise((_, rej) => (t = setTimeout(() => rej(Object.assign(new Error(`${what}: no answer within ${ms} ms`), { code: 'TIMEOUT' })), ms)))]).finally(() => clearTimeout(t));
}

/**
 * Runs `fn(i)` for i in [0, n) with at most `limit` at once, each call bounded by 30 s;
 * stops at the deadline. With `tolerate`, a failed call is counted and skipped instead of
 * failing the whole run. Returns the number of failed calls.
 */
async function bounded(n, limit, deadlineMs, fn, what, { tolerate = false } = {}) {
  let next = 0;
  let done = 0;
  let failed = 0;
  const worker = async () => {
    while (next < n) {
      if (now() > deadlineMs) throw new Error(`${what}: only ${done} of ${n} done before the deadline`);
      const i = next++;
      try {
        await withTimeout(fn(i), 30_000, what);
      } catch (err) {
        if (!tolerate) throw err;
        failed++;
      }
      done++;
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, n) }, worker));
  return failed;
}

/**
 * `workers` closed loops for warmupMs then durationMs; only operations that start inside
 * the measured window count. op(workerIndex, k) performs one operation (throws on error).
 */
/** With several generator processes, each waits for the runner's `go` so that all start together. */
function barrier(o) {
  if (!o.barrier) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no go from the runner within 120 s')), 120_000);
    process.on('message', (m) => {
      if (m?.type === 'go') {
        clearTimeout(t);
        resolve();
      }
    });
    send({ type: 'ready' });
  });
}

async function closedLoop({ workers, warmupMs, durationMs, maxOps, op, label, o }) {
  await barrier(o);
  const hist = new Histogram();
  const errors = new Errors();
  let measured = 0;
  let completed = 0;
  const perWorkerMax = Math.ceil(maxOps / workers);
  const t0 = now();
  const mStart = t0 + warmupMs;
  const mEnd = mStart + durationMs;
  send({ type: 'phase', phase: warmupMs > 0 ? 'warmup' : 'measure' });
  const timers = [];
  if (warmupMs > 0) timers.push(setTimeout(() => send({ type: 'phase', phase: 'measure' }), warmupMs));
  timers.push(setTimeout(() => send({ type: 'phase', phase: 'measured' }), warmupMs + durationMs));
  let lastCount = 0;
  let lastAt = t0;
  const progress = setInterval(() => {
    const t = now();
    const rate = ((completed - lastCount) * 1000) / (t - lastAt);
    lastCount = completed;
    lastAt = t;
    send({ type: 'progress', label, phase: t < mStart ? 'warmup' : 'measure', elapsedMs: t - t0, totalMs: warmupMs + durationMs, rate, errors: errors.total });
  }, 500);
  const run = async (w) => {
    for (let k = 0; k < perWorkerMax; k++) {
      const start = now();
      if (start >= mEnd) break;
      let ok = false;
      try {
        await op(w, k);
        ok = true;
      } catch (err) {
        if (start >= mStart) errors.add(err);
        await sleep(10); // never spin on a failing connection
      }
      const end = now();
      completed++;
      if (ok && start >= mStart) {
        measured++;
        hist.recordMs(end - start);
      }
    }
  };
  await Promise.all(Array.from({ length: workers }, (_, w) => run(w)));
  clearInterval(progress);
  for (const t of timers) clearTimeout(t);
  send({ type: 'phase', phase: 'measured' });
  return { workers, warmupMs, durationMs, ops: measured, ratePerSec: (measured * 1000) / durationMs, latency: hist.summary(), latencyWire: histToWire(hist), errors: errors.json() };
}

// ---------------------------------------------------------------- workloads

/** Durable registrations: `clients` processes, each with its lease, registering new instances. */
async function register(drv, o) {
  // This generator's share of the clients: [first, first + clients).
  const first = o.firstClient ?? 0;
  const services = Array.from({ length: o.clients }, (_, c) => `reg-${first + c}`);
  await drv.prepareServices(services);
  const procs = new Array(o.clients);
  await bounded(o.clients, 32, now() + 60_000, async (c) => (procs[c] = await drv.process({ ttlMs: o.ttlMs, transport: o.transport ?? 'rest' })), 'opening client processes');
  const r = await closedLoop({
    workers: o.clients,
    warmupMs: o.warmupMs,
    durationMs: o.durationMs,
    maxOps: o.maxOps,
    label: 'registrations',
    o,
    op: (c, k) => procs[c].register(services[c], `i-${k}`, payload(first + c, k, k)),
  });
  const lost = procs.filter((p) => p.lost).length;
  return { ...r, clients: o.clients, transport: o.transport ?? null, leasesLost: lost };
}

const CATALOG_SIZE = 20;

async function seed(drv, service, n, ttlMs) {
  await drv.prepareServices([service]);
  const p = await drv.process({ ttlMs, transport: 'rest' });
  for (let i = 0; i < n; i++) await p.register(service, `i-${i}`, payload(200, i, i));
  return p;
}

/** Discovery reads of a 20-instance service by `readers` reader processes. */
async function read(drv, o) {
  const CATALOG = `catalog-${o.runTag ?? 0}`; // a new service per run: a previous run's leftovers never interfere
  // With several generators, the first one seeds the service (the others find it seeded
  // when the runner's `go` arrives, since the first says `ready` only after seeding).
  const owner = o.seed === false ? null : await seed(drv, CATALOG, CATALOG_SIZE, o.ttlMs);
  const readers = new Array(o.readers);
  await bounded(o.readers, 32, now() + 60_000, async (i) => (readers[i] = await drv.reader({ mode: o.readMode })), 'opening readers');
  let wrong = 0;
  const r = await closedLoop({
    workers: o.readers,
    warmupMs: o.warmupMs,
    durationMs: o.durationMs,
    maxOps: o.maxOps,
    label: 'reads',
    o,
    op: async (i) => {
      const n = await readers[i].read(CATALOG);
      if (n !== CATALOG_SIZE) {
        wrong++;
        throw Object.assign(new Error(`read ${n} instances instead of ${CATALOG_SIZE}`), { code: 'WRONG_ANSWER' });
      }
    },
  });
  const ownerLost = !!owner?.lost;
  await Promise.all(readers.map((x) => x.close().catch(() => undefined)));
  // With several generators another one may still be reading: the owner's lease then
  // simply expires after this process is gone (the next run reads another service).
  if (!o.barrier) await owner?.close().catch(() => undefined);
  return { ...r, readers: o.readers, readMode: o.readMode ?? null, serviceInstances: CATALOG_SIZE, wrongAnswers: wrong, ownerLost };
}

/** Most receipts (watchers x changes) one generator records in the watch workload. */
const MAX_WATCH_RECEIPTS = 4_000_000;

/** Dynamic instances alive at any time in the watch workload (each lives 2 x POOL changes). */
const POOL = 10;

/**
 * Watch fan-out: `watchers` watcher processes on one service (20 instances); one writer
 * process alternately registers a new instance and deregisters the oldest of the
 * POOL it added, at `watchRate` changes per second (so each instance lives about one
 * second). Change 2k adds w-(k+POOL), change 2k+1 removes w-k. Latency: from just before
 * the write is sent to when each watcher knows.
 *
 * With several generator processes (`o.barrier`), the first (`o.writer`) seeds the service
 * and writes, and every process holds its share of the watchers; each returns when each
 * of its watchers received each change (wall-clock ms, the same clock in every process of
 * the machine) and the runner merges them with the writer's send times (watchFigures).
 */
async function watch(drv, o) {
  const W = o.watchers;
  const writerRole = o.writer !== false;
  const WATCHED = `watched-${o.runTag ?? 0}`;
  const total = Math.min(100_000, Math.round((o.watchRate * (o.warmupMs + o.durationMs)) / 1000));
  const warmupChanges = Math.round((o.watchRate * o.warmupMs) / 1000);
  // Every receipt is kept and sent to the runner: bounded (8 bytes and a few in JSON each).
  if (W * total > MAX_WATCH_RECEIPTS) throw new Error(`${W} watchers x ${total} changes is more than MAX_WATCH_RECEIPTS (${MAX_WATCH_RECEIPTS}) receipts for one generator: shorten --duration, lower the level or add --generators`);
  const owner = writerRole ? await seed(drv, WATCHED, CATALOG_SIZE, o.ttlMs) : (await drv.prepareServices([WATCHED]), null);
  // receipts[w][i]: when watcher w received change i (NaN: not yet).
  const receipts = Array.from({ length: W }, () => new Array(total).fill(NaN));
  const lastSeen = new Array(W).fill(-1);
  const streamErrors = new Errors();
  let received = 0;
  let duplicates = 0;
  const onChange = (w) => (op, id, at) => {
    if (typeof id !== 'string' || !id.startsWith('w-')) return;
    const m = Number(id.slice(2));
    const i = op === 'put' ? 2 * (m - POOL) : 2 * m + 1;
    if (i < 0 || i >= total) return;
    received++;
    if (!Number.isNaN(receipts[w][i])) duplicates++;
    else receipts[w][i] = at;
    if (i > lastSeen[w]) lastSeen[w] = i;
  };
  send({ type: 'phase', phase: 'setup' });
  const watchers = new Array(W);
  const connectStart = now();
  await bounded(W, 50, now() + 120_000, async (w) => (watchers[w] = await drv.watcher(WATCHED, onChange(w), (e) => streamErrors.add(new Error(e)))), 'connecting watchers');
  const connectMs = now() - connectStart;
  const writer = writerRole ? await drv.process({ ttlMs: o.ttlMs, transport: 'rest' }) : null;
  if (writer) for (let m = 0; m < POOL; m++) await writer.register(WATCHED, `w-${m}`, payload(201, m, -1));
  await barrier(o);
  await sleep(200);
  const sentAt = []; // change index -> wall time the write was sent
  const writeErrors = new Errors();
  const ack = new Histogram();
  let behind = 0;
  let acked = 0;
  const t0 = now();
  send({ type: 'phase', phase: warmupChanges > 0 ? 'warmup' : 'measure' });
  const progress = setInterval(() => {
    const t = now();
    send({ type: 'progress', label: 'watch', phase: t - t0 < o.warmupMs ? 'warmup' : 'measure', elapsedMs: t - t0, totalMs: o.warmupMs + o.durationMs, rate: null, done: writer ? sentAt.length : lastSeen.reduce((a, b) => Math.max(a, b), -1) + 1, events: received, errors: writeErrors.total + streamErrors.total });
  }, 500);
  if (writer) {
    for (let i = 0; i < total; i++) {
      const target = t0 + (i * 1000) / o.watchRate;
      if (target - now() > 0) await sleep(target - now());
      else if (now() - target > 1000 / o.watchRate) behind++;
      if (now() - t0 > (o.warmupMs + o.durationMs) * 3 + 10_000) break; // hard bound if a server stalls
      if (i === warmupChanges) send({ type: 'phase', phase: 'measure' });
      const k = Math.floor(i / 2);
      sentAt[i] = wallNow();
      try {
        if (i % 2 === 0) await writer.register(WATCHED, `w-${k + POOL}`, payload(201, k + POOL, i));
        else await writer.deregister(WATCHED, `w-${k}`);
        acked++;
        if (i >= warmupChanges) ack.recordMs(wallNow() - sentAt[i]);
      } catch (err) {
        writeErrors.add(err);
      }
    }
  } else {
    const measureAt = setTimeout(() => send({ type: 'phase', phase: 'measure' }), o.warmupMs);
    // Until every watcher has the last change, bounded as the writer's loop is.
    const limit = t0 + (o.warmupMs + o.durationMs) * 3 + 10_000;
    while (now() < limit && lastSeen.some((l) => l < total - 1)) await sleep(20);
    clearTimeout(measureAt);
  }
  const writeEnd = now();
  send({ type: 'phase', phase: 'measured' });
  // Drain: wait (bounded) until every watcher has the last change.
  const last = writer ? sentAt.length - 1 : total - 1;
  const drainStart = now();
  while (now() - drainStart < 10_000 && lastSeen.some((l) => l < last)) await sleep(20);
  const drainMs = now() - drainStart;
  clearInterval(progress);
  await Promise.all(watchers.map((w) => w?.close().catch(() => undefined)));
  await writer?.close().catch(() => undefined);
  await owner?.close().catch(() => undefined);
  return {
    part: writer ? 'writer' : 'watchers',
    watchers: W,
    watchRate: o.watchRate,
    warmupMs: o.warmupMs,
    durationMs: o.durationMs,
    connectMs: Math.round(connectMs),
    // Offsets from the process's time origin keep the message small; never received: null.
    receipts: receipts.map((r) => r.map((at) => (Number.isNaN(at) ? null : Math.round((at - performance.timeOrigin) * 1000) / 1000))),
    receiptOrigin: performance.timeOrigin,
    duplicates,
    received,
    writeMs: writeEnd - t0,
    drainMs: Math.round(drainMs),
    streamErrors: streamErrors.json(),
    ...(writer
      ? { sentAt, measuredFrom: Math.min(warmupChanges, sentAt.length), changesAcknowledged: acked, writerBehind: behind, writeAckWire: histToWire(ack), writeErrors: writeErrors.json() }
      : {}),
  };
}

/**
 * Lease renewal load: `leases` processes, each keeping one lease (and one instance) alive
 * with the system's own keep-alive; the runner reads the servers' CPU and memory over the
 * measured window.
 */
async function renew(drv, o) {
  const SERVICES = 100;
  const services = Array.from({ length: SERVICES }, (_, s) => `renew-${s}`);
  await drv.prepareServices(services);
  send({ type: 'phase', phase: 'setup' });
  const procs = [];
  const setupStart = now();
  let lastReport = 0;
  const setupFailures = await bounded(o.leases, 50, now() + 300_000, async (k) => {
    // etcd: 100 leases per client connection (each lease with its own keep-alive stream, as
    // the etcd3 client does): 10,000 gRPC clients in one Node process do not connect
    // reliably. The other systems: one connection per lease (a ZooKeeper session is a
    // connection; Switchboard's session stream is one WebSocket per process).
    const p = await drv.process({ ttlMs: o.ttlMs, transport: 'session', shareKey: Math.floor(k / 100) });
    await p.register(services[k % SERVICES], `i-${k}`, payload(k >> 8, k, k));
    if (p.dropHttp) await p.dropHttp();
    procs.push(p);
    if (now() - lastReport > 500) {
      lastReport = now();
      send({ type: 'progress', label: 'leases', phase: 'setup', elapsedMs: now() - setupStart, totalMs: 0, rate: null, done: procs.length, errors: 0 });
    }
  }, 'opening leases', { tolerate: true });
  const setupMs = now() - setupStart;
  // Let the keep-alives settle into their rhythm (one TTL), then measure. Leases lost
  // before the window (a slow setup) are reported apart.
  await sleep(o.warmupMs);
  const lostBefore = procs.filter((p) => p.lost).length;
  send({ type: 'phase', phase: 'measure' });
  const t0 = now();
  while (now() - t0 < o.durationMs) {
    await sleep(Math.min(500, o.durationMs - (now() - t0)));
    send({ type: 'progress', label: 'leases', phase: 'measure', elapsedMs: now() - t0, totalMs: o.durationMs, rate: null, done: procs.length, errors: procs.filter((p) => p.lost).length });
  }
  send({ type: 'phase', phase: 'measured' });
  const lost = procs.filter((p) => p.lost).length - lostBefore;
  const alive = procs.length - lostBefore;
  const keepalivesPerSec = (alive * 3000) / o.ttlMs;
  // Processes are left to die with this process (the runner stops the server next).
  return { leases: procs.length, leasesNotOpened: setupFailures, ttlMs: o.ttlMs, setupMs: Math.round(setupMs), durationMs: o.durationMs, leasesLostInSetup: lostBefore, leasesLost: lost, keepalivesPerSec, ops: 0, errors: { total: lost } };
}

/** Memory: `instances` instances held by `owners` processes (1,000 each); the runner samples RSS. */
async function memory(drv, o) {
  const per = Math.ceil(o.instances / o.owners);
  const services = Array.from({ length: o.owners }, (_, s) => `mem-${s}`);
  await drv.prepareServices(services);
  send({ type: 'phase', phase: 'setup' });
  const procs = new Array(o.owners);
  await bounded(o.owners, 32, now() + 60_000, async (c) => (procs[c] = await drv.process({ ttlMs: o.ttlMs, transport: 'rest' })), 'opening owners');
  let done = 0;
  const errors = new Errors();
  const t0 = now();
  const progress = setInterval(() => send({ type: 'progress', label: 'instances', phase: 'setup', elapsedMs: now() - t0, totalMs: 0, rate: null, done, errors: errors.total }), 500);
  const deadline = now() + 600_000;
  await Promise.all(
    procs.map(async (p, c) => {
      for (let k = 0; k < per && done < o.instances; k++) {
        if (now() > deadline) throw new Error(`only ${done} of ${o.instances} instances registered in 600 s`);
        try {
          await p.register(services[c], `i-${k}`, payload(c, k, k));
          done++;
        } catch (err) {
          errors.add(err);
          if (errors.total > 100) throw new Error(`too many registration errors: ${errors.examples.join('; ')}`);
          k--;
          await sleep(50);
        }
      }
    }),
  );
  clearInterval(progress);
  const loadMs = now() - t0;
  // Tell the runner, then hold the leases alive until it has sampled memory.
  send({ type: 'loaded', instances: done });
  await new Promise((resolve) => {
    const t = setTimeout(resolve, 120_000);
    process.on('message', (m) => {
      if (m?.type === 'release') {
        clearTimeout(t);
        resolve();
      }
    });
  });
  const lost = procs.filter((p) => p.lost).length;
  return { instances: done, owners: o.owners, loadMs: Math.round(loadMs), registrationsPerSec: Math.round((done * 1000) / loadMs), leasesLost: lost, ops: 0, errors: errors.json() };
}

/**
 * Failure detection, watcher side: `watchers` watchers on service `fd`; every change seen
 * is reported to the runner at once ({ type: 'seen', op, id, watcher, at }). The runner
 * starts and kills the provider processes; it ends this workload with { type: 'finish' }.
 */
async function failureWatch(drv, o) {
  await drv.prepareServices(['fd']);
  const errors = new Errors();
  const watchers = [];
  for (let w = 0; w < o.watchers; w++) {
    watchers.push(await drv.watcher('fd', (op, id, at) => send({ type: 'seen', op, id, watcher: w, at }), (e) => errors.add(new Error(e))));
  }
  send({ type: 'watching', watchers: o.watchers });
  await new Promise((resolve) => {
    const t = setTimeout(resolve, o.maxMs);
    process.on('message', (m) => {
      if (m?.type === 'finish') {
        clearTimeout(t);
        resolve();
      }
    });
  });
  await Promise.all(watchers.map((w) => w.close().catch(() => undefined)));
  return { watchers: o.watchers, errors: errors.json(), ops: 0 };
}

/**
 * Active HTTP checks (Switchboard only: etcd and ZooKeeper have none): `instances`
 * persistent instances, each with one http check (interval `intervalMs`) on this process's
 * target server, one port, the path naming the instance. After a warm-up of at least one
 * interval (every check has run), the measured window counts the probes the target
 * answered; the runner reads the agent's CPU and memory over the same window. At the end,
 * every instance must be passing and the agent must report every check scheduled.
 */
async function checks(_drv, o) {
  const { createServer } = await import('node:http');
  const { Client } = await import('undici');
  const url = o.url;
  let served = 0;
  const server = createServer((req, res) => {
    served++;
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '2' });
    res.end('ok');
  });
  server.keepAliveTimeout = 60_000;
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const port = server.address().port;
  const service = `checked-${o.runTag}`;
  const errors = new Errors();
  const conns = Array.from({ length: 16 }, () => new Client(url, { pipelining: 1, keepAliveTimeout: 60_000 }));
  const call = async (c, method, path, body) => {
    const res = await c.request({ method, path, headers: body ? { 'content-type': 'application/json' } : undefined, body });
    const text = await res.body.text();
    if (res.statusCode >= 300) throw Object.assign(new Error(`${method} ${path} -> ${res.statusCode} ${text.slice(0, 200)}`), { code: `HTTP ${res.statusCode}` });
    return text ? JSON.parse(text) : null;
  };
  try {
    send({ type: 'phase', phase: 'setup' });
    const t0 = now();
    let done = 0;
    const interval = `${Math.round(o.intervalMs / 1000)}s`;
    const progress = setInterval(() => send({ type: 'progress', label: 'instances', phase: 'setup', elapsedMs: now() - t0, totalMs: 0, rate: null, done, errors: errors.total }), 500);
    try {
      await bounded(o.instances, conns.length, now() + 300_000, async (k) => {
        const body = JSON.stringify({ address: '127.0.0.1', port, tags: ['bench'], metadata: { i: String(k) }, checks: [{ type: 'http', target: `http://127.0.0.1:${port}/health/${k}`, interval, timeout: '2s' }] });
        await call(conns[k % conns.length], 'PUT', `/v1/services/${service}/instances/c-${k}`, body);
        done++;
      }, 'registering checked instances');
    } finally {
      clearInterval(progress);
    }
    const setupMs = now() - t0;
    send({ type: 'phase', phase: 'warmup' });
    const w0 = now();
    while (now() - w0 < o.warmupMs) {
      await sleep(Math.min(500, o.warmupMs - (now() - w0)));
      send({ type: 'progress', label: 'probes served', phase: 'warmup', elapsedMs: now() - w0, totalMs: o.warmupMs + o.durationMs, rate: null, done: served, errors: errors.total });
    }
    const servedBefore = served;
    send({ type: 'phase', phase: 'measure' });
    const m0 = now();
    while (now() - m0 < o.durationMs) {
      await sleep(Math.min(500, o.durationMs - (now() - m0)));
      send({ type: 'progress', label: 'probes served', phase: 'measure', elapsedMs: o.warmupMs + now() - m0, totalMs: o.warmupMs + o.durationMs, rate: null, done: served - servedBefore, errors: errors.total });
    }
    const windowMs = now() - m0;
    const probes = served - servedBefore;
    send({ type: 'phase', phase: 'measured' });
    const status = await call(conns[0], 'GET', '/v1/status');
    const healthy = await call(conns[0], 'GET', `/v1/services/${service}?healthy=true`);
    const passing = healthy.instances.length;
    if (passing !== o.instances) errors.add(new Error(`${passing} of ${o.instances} instances passing at the end`));
    const scheduled = status.checks?.scheduled ?? null;
    if (scheduled !== null && scheduled < o.instances) errors.add(new Error(`the agent reports ${scheduled} checks scheduled for ${o.instances} instances`));
    return { instances: o.instances, intervalMs: o.intervalMs, setupMs: Math.round(setupMs), probes, windowMs: Math.round(windowMs), ratePerSec: (probes * 1000) / windowMs, expectedPerSec: (o.instances * 1000) / o.intervalMs, passing, scheduled, ops: probes, errors: errors.json() };
  } finally {
    await Promise.all(conns.map((c) => c.destroy().catch(() => undefined)));
    server.closeAllConnections?.();
    server.close();
  }
}

const WORKLOADS = { register, read, watch, renew, memory, checks, 'failure-watch': failureWatch };

process.on('message', (msg) => {
  if (msg?.type !== 'run') return;
  void replyThenExit(async () => {
    const fn = WORKLOADS[msg.workload];
    if (!fn) throw new Error(`unknown workload ${msg.workload}`);
    const drv = msg.workload === 'checks' ? null : await loadDriver(msg.target, { readMode: msg.options.readMode });
    return fn(drv, msg.workload === 'checks' ? { ...msg.options, url: msg.target.url } : msg.options);
  });
});
process.on('disconnect', () => process.exit(0));
