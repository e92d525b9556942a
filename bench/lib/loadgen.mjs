/**
 * The load generator: a child process of the runner (bench/run.mjs), so that its CPU is
 * not the agent's. It receives one `{ type: 'run', workload, url, options }` message,
 * reports `phase` and `progress` messages while it runs and ends with one `result` (or
 * `error`) message. Every loop is bounded by a deadline and a count.
 */
import { Client, Pool } from 'undici';
import { createParser } from 'eventsource-parser';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Histogram } from './hist.mjs';
import { replyThenExit, send } from './child.mjs';

const now = () => performance.now();
/** Milliseconds on a clock shared by every part of this process (writer and watchers). */
const wallNow = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, Math.max(0, ms)));


const JSON_HEADERS = { 'content-type': 'application/json' };
const CLIENT_OPTS = { pipelining: 1, keepAliveTimeout: 60_000, keepAliveMaxTimeout: 600_000, headersTimeout: 30_000, bodyTimeout: 30_000 };

/** Counts failures by HTTP status / error code, keeping a few examples. */
class Errors {
  constructor() {
    this.total = 0;
    this.byKind = {};
    this.examples = [];
  }
  add(kind, detail) {
    this.total++;
    this.byKind[kind] = (this.byKind[kind] ?? 0) + 1;
    if (this.examples.length < 5) this.examples.push(`${kind}: ${String(detail).slice(0, 300)}`);
  }
  json() {
    return { total: this.total, byKind: this.byKind, examples: this.examples };
  }
}

/** Keeps the n largest latencies with what identifies them (bounded). */
class Slowest {
  constructor(n) {
    this.n = n;
    this.items = [];
    this.floor = -Infinity;
  }
  offer(ms, info) {
    if (this.items.length >= this.n && ms <= this.floor) return;
    this.items.push({ ms: Math.round(ms * 1000) / 1000, ...info });
    this.items.sort((a, b) => b.ms - a.ms);
    if (this.items.length > this.n) this.items.length = this.n;
    this.floor = this.items[this.items.length - 1].ms;
  }
  list() {
    return this.items;
  }
}

async function call(client, method, path, body) {
  const res = await client.request({ method, path, headers: body === undefined ? undefined : JSON_HEADERS, body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body) });
  const text = await res.body.text();
  if (res.statusCode >= 300) throw new Error(`${method} ${path} -> ${res.statusCode} ${text.slice(0, 300)}`);
  return text === '' ? null : JSON.parse(text);
}

/** Status and a few metrics of the agent after a workload, for the cross-checks. */
async function agentFacts(url) {
  const c = new Client(url, CLIENT_OPTS);
  try {
    const status = await call(c, 'GET', '/v1/status');
    const res = await c.request({ method: 'GET', path: '/metrics' });
    const text = await res.body.text();
    const metric = (name) => {
      const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, 'm').exec(text);
      return m ? Number(m[1]) : null;
    };
    const sumOf = (name, filter) => {
      let total = 0;
      for (const line of text.split('\n')) if (line.startsWith(name) && filter(line)) total += Number(line.slice(line.lastIndexOf(' ') + 1));
      return total;
    };
    const gc = {};
    for (const m of text.matchAll(/^switchboard_process_nodejs_gc_duration_seconds_(sum|count)\{kind="(\w+)"\} ([0-9.e+-]+)$/gm)) {
      gc[m[2]] ??= { count: 0, ms: 0 };
      if (m[1] === 'sum') gc[m[2]].ms = Number(m[3]) * 1000;
      else gc[m[2]].count = Number(m[3]);
    }
    const lag = (name) => {
      const v = metric(`switchboard_process_nodejs_eventloop_lag_${name}_seconds`);
      return v === null ? null : Math.round(v * 1e6) / 1000;
    };
    return {
      /** Event-loop delay since the previous scrape (prom-client, 10 ms resolution). */
      eventLoopDelay: { p50Ms: lag('p50'), p99Ms: lag('p99'), maxMs: lag('max') },
      gc,
      heapUsedBytes: metric('switchboard_process_nodejs_heap_size_used_bytes'),
      residentBytes: metric('switchboard_process_process_resident_memory_bytes'),
      revision: status.revision,
      instances: status.instances,
      leases: status.leases,
      watchers: status.watchers,
      version: status.version,
      durable: status.storage?.durable ?? null,
      watchEventsSent: metric('switchboard_watch_events_sent_total'),
      watchStreamsCut: metric('switchboard_watch_streams_cut_total'),
      http5xx: sumOf('switchboard_http_requests_total', (l) => /status="5\d\d"/.test(l)),
      http4xx: sumOf('switchboard_http_requests_total', (l) => /status="4\d\d"/.test(l)),
    };
  } catch (err) {
    return { error: String(err.message ?? err) };
  } finally {
    await c.destroy();
  }
}

/** GC counts and time (ms) between two agentFacts() scrapes, by kind. */
function gcBetween(before, after) {
  const out = {};
  for (const [kind, a] of Object.entries(after.gc ?? {})) {
    const b = before.gc?.[kind] ?? { count: 0, ms: 0 };
    out[kind] = { count: a.count - b.count, ms: Math.round((a.ms - b.ms) * 10) / 10 };
  }
  return out;
}

/** This process's own event-loop delay over a window: a stalled generator shows here. */
function loopMonitor() {
  const h = monitorEventLoopDelay({ resolution: 5 });
  h.enable();
  return {
    reset: () => h.reset(),
    stop() {
      h.disable();
      const ms = (ns) => Math.round(ns / 1000) / 1000;
      return { p50Ms: ms(h.percentile(50)), p99Ms: ms(h.percentile(99)), maxMs: ms(h.max), resolutionMs: 5 };
    },
  };
}

/**
 * Runs `clients` closed loops (each its own keep-alive connection) for warmupMs then
 * durationMs. Only requests that start inside the measured window count.
 */
async function closedLoop({ url, clients, warmupMs, durationMs, maxRequests, prepare, request, label }) {
  const conns = [];
  for (let c = 0; c < clients; c++) conns.push(new Client(url, CLIENT_OPTS));
  const state = [];
  for (let c = 0; c < clients; c++) state.push(await prepare(conns[c], c));

  const hist = new Histogram();
  const errors = new Errors();
  const slowest = new Slowest(10);
  const firstRequests = new Histogram();
  let measured = 0;
  let completedAll = 0;
  let okAll = 0;
  let bytes = 0;
  const perClientMax = Math.ceil(maxRequests / clients);
  const t0 = now();
  const mStart = t0 + warmupMs;
  const mEnd = mStart + durationMs;
  if (warmupMs > 0) send({ type: 'phase', phase: 'warmup' });
  const phaseTimers = [];
  const loop = loopMonitor();
  let agentAtStart = null;
  const startMeasure = () => {
    loop.reset();
    // Resets the agent's event-loop-delay figures, so the final scrape covers the window.
    agentFacts(url).then((f) => (agentAtStart = f));
    send({ type: 'phase', phase: 'measure' });
  };
  if (warmupMs > 0) phaseTimers.push(setTimeout(startMeasure, warmupMs));
  else startMeasure();
  phaseTimers.push(setTimeout(() => send({ type: 'phase', phase: 'measured' }), warmupMs + durationMs));

  let lastCount = 0;
  let lastAt = t0;
  const progress = setInterval(() => {
    const t = now();
    const rate = ((completedAll - lastCount) * 1000) / (t - lastAt);
    lastCount = completedAll;
    lastAt = t;
    send({ type: 'progress', label, phase: t < mStart ? 'warmup' : 'measure', elapsedMs: t - t0, totalMs: warmupMs + durationMs, rate, done: measured, errors: errors.total });
  }, 250);

  const runClient = async (c) => {
    const conn = conns[c];
    const st = state[c];
    for (let k = 0; k < perClientMax; k++) {
      const start = now();
      if (start >= mEnd) break;
      const req = request(st, c, k);
      let ok = false;
      try {
        const res = await conn.request(req);
        const buf = await res.body.arrayBuffer();
        if (res.statusCode >= 200 && res.statusCode < 300) {
          ok = true;
          bytes += buf.byteLength;
          if (st.check) st.check(buf, res);
        } else {
          let code = '';
          try {
            code = JSON.parse(Buffer.from(buf).toString('utf8')).code ?? '';
          } catch {
            /* not a problem document */
          }
          errors.add(`HTTP ${res.statusCode}${code ? ' ' + code : ''}`, Buffer.from(buf).toString('utf8'));
        }
      } catch (err) {
        errors.add(err.code ?? err.name ?? 'error', err.message);
        await sleep(10); // never spin on a dead connection
      }
      const end = now();
      completedAll++;
      if (ok) okAll++;
      if (k === 0) firstRequests.recordMs(end - start);
      // Measured: the requests that start inside the window (one that started during the
      // warm-up, such as a connection's first, is not, whenever it ends).
      if (ok && start >= mStart) {
        measured++;
        hist.recordMs(end - start);
        slowest.offer(end - start, { client: c, request: k, startedAtMs: Math.round(start - t0), startedAtEpochMs: Math.round(performance.timeOrigin + start) });
      }
    }
  };
  await Promise.all(conns.map((_, c) => runClient(c)));
  const generatorLoop = loop.stop();
  clearInterval(progress);
  for (const t of phaseTimers) clearTimeout(t);
  send({ type: 'phase', phase: 'measured' });
  const agentAtEnd = await agentFacts(url);
  await Promise.all(conns.map((c) => c.close().catch(() => c.destroy())));
  return {
    clients,
    warmupMs,
    durationMs,
    requests: measured,
    ratePerSec: (measured * 1000) / durationMs,
    latency: hist.summary(),
    errors: errors.json(),
    okTotal: okAll,
    completedTotal: completedAll,
    bytesPerResponse: okAll > 0 ? Math.round(bytes / okAll) : 0,
    /** The slowest measured requests: which client, its n-th request, when it started. */
    slowest: slowest.list(),
    /** Each connection's first request (connect included), warm-up or not. */
    firstRequestLatency: firstRequests.summary(),
    generatorEventLoopDelay: generatorLoop,
    agentEventLoopDelay: agentAtEnd.eventLoopDelay ?? null,
    agentGc: agentAtStart ? gcBetween(agentAtStart, agentAtEnd) : null,
    agentAtEnd,
    states: state,
  };
}

// ---- workloads ----

async function registrations({ url, options, lease }) {
  const idsPerClient = options.idsPerClient;
  const setup = new Client(url, CLIENT_OPTS);
  const before = await agentFacts(url);
  await setup.close();
  const r = await closedLoop({
    url,
    clients: options.clients,
    warmupMs: options.warmupMs,
    durationMs: options.durationMs,
    maxRequests: options.maxRequests,
    label: lease ? 'registrations (lease)' : 'registrations (persistent)',
    async prepare(conn, c) {
      let leaseId = null;
      if (lease) leaseId = (await call(conn, 'POST', '/v1/leases', { ttlMs: options.leaseTtlMs })).leaseId;
      return { leaseSuffix: leaseId ? `,"leaseId":"${leaseId}"` : '' };
    },
    // Each PUT changes the instance (a new seq), so every one is a real write with a new
    // revision; ids cycle over idsPerClient per client (creates first, then replaces).
    request(st, c, k) {
      return {
        method: 'PUT',
        path: `/v1/services/bench-${c}/instances/i-${k % idsPerClient}`,
        headers: JSON_HEADERS,
        body: `{"address":"10.1.${c}.${(k % 250) + 1}","port":8080,"tags":["bench"],"metadata":{"seq":"${k}"}${st.leaseSuffix}}`,
      };
    },
  });
  const after = r.agentAtEnd;
  delete r.states;
  delete r.agentAtEnd;
  // Every acknowledged PUT made exactly one revision (leases make none).
  const revisionsMade = typeof after.revision === 'number' && typeof before.revision === 'number' ? after.revision - before.revision : null;
  return {
    ...r,
    idsPerClient,
    agent: after,
    checks: { acknowledgedWrites: r.okTotal, revisionsMade, revisionMismatch: revisionsMade === null ? null : revisionsMade - r.okTotal },
  };
}

const CATALOG = 'catalog';
const CATALOG_SIZE = 20;
const DRAINING = 4; // instances set to draining, which healthy=true leaves out

async function seedService(url, service, size, draining) {
  const c = new Client(url, CLIENT_OPTS);
  try {
    for (let i = 0; i < size; i++) {
      await call(c, 'PUT', `/v1/services/${service}/instances/i-${i}`, {
        address: `10.2.0.${i + 1}`,
        port: 8080,
        zone: ['zone-a', 'zone-b', 'zone-c'][i % 3],
        version: `1.${i % 4}.0`,
        tags: ['http', i % 2 === 0 ? 'primary' : 'secondary'],
        metadata: { team: 'bench', build: `b${1000 + i}` },
      });
    }
    for (let i = size - draining; i < size; i++) await call(c, 'PUT', `/v1/services/${service}/instances/i-${i}/status`, { status: 'draining' });
    return await call(c, 'GET', `/v1/services/${service}`);
  } finally {
    await c.close();
  }
}

async function reads({ url, options, healthy }) {
  const seeded = await seedService(url, CATALOG, CATALOG_SIZE, DRAINING);
  const expected = healthy ? CATALOG_SIZE - DRAINING : CATALOG_SIZE;
  const path = `/v1/services/${CATALOG}${healthy ? '?healthy=true' : ''}`;
  let checked = 0;
  let wrongAnswers = 0;
  const r = await closedLoop({
    url,
    clients: options.readers,
    warmupMs: options.warmupMs,
    durationMs: options.durationMs,
    maxRequests: options.maxRequests,
    label: healthy ? 'reads (healthy=true)' : 'reads',
    async prepare() {
      return {
        // Parses one answer in 64 (and the first): enough to catch a wrong answer
        // without making the generator's JSON parsing the bottleneck.
        check(buf) {
          if (checked++ % 64 !== 0) return;
          const a = JSON.parse(Buffer.from(buf).toString('utf8'));
          if (a.instances.length !== expected || a.service !== CATALOG) wrongAnswers++;
        },
      };
    },
    request() {
      return { method: 'GET', path };
    },
  });
  delete r.states;
  const agent = r.agentAtEnd;
  delete r.agentAtEnd;
  return { ...r, service: { instances: seeded.instances.length, draining: DRAINING, answerInstances: expected, path }, agent, checks: { answersChecked: Math.ceil(checked / 64), wrongAnswers } };
}

const WATCHED = 'watched';

async function watch({ url, options }) {
  const { watchers: W, watchRate: rate, warmupMs, durationMs } = options;
  await seedService(url, WATCHED, CATALOG_SIZE, 0);

  // ---- watchers: one connection and one SSE parser each ----
  const latency = new Histogram();
  const latencyAll = new Histogram();
  /** revision -> { first, last, n } receive times over watchers */
  const perRevision = new Map();
  const ws = [];
  let received = 0;
  const connectDeadline = now() + 15_000;
  const openOne = async (w) => {
    const client = new Client(url, { ...CLIENT_OPTS, bodyTimeout: 0 });
    const st = { client, lastRev: 0, revs: new Set(), outOfOrder: 0, duplicates: 0, otherEvents: 0, idMismatch: 0, parseErrors: 0, ended: false, error: null, chunkAt: 0 };
    const parser = createParser({
      onEvent(ev) {
        const t = st.chunkAt;
        if (ev.event !== 'put') {
          st.otherEvents++;
          return;
        }
        let d;
        try {
          d = JSON.parse(ev.data);
        } catch {
          st.parseErrors++;
          return;
        }
        const rev = d.revision;
        if (ev.id !== `${d.epoch}:${rev}`) st.idMismatch++;
        if (st.revs.has(rev)) st.duplicates++;
        else if (rev < st.lastRev) st.outOfOrder++;
        st.revs.add(rev);
        if (rev > st.lastRev) st.lastRev = rev;
        received++;
        const sentAt = Number(d.instance?.metadata?.sentAt);
        const lat = t - sentAt;
        latencyAll.recordMs(lat);
        if (d.instance?.metadata?.phase === 'measure') latency.recordMs(lat);
        let pr = perRevision.get(rev);
        if (!pr) perRevision.set(rev, (pr = { first: t, last: t, n: 0 }));
        pr.n++;
        if (t < pr.first) pr.first = t;
        if (t > pr.last) pr.last = t;
      },
      onError() {
        st.parseErrors++;
      },
    });
    const res = await client.request({ method: 'GET', path: `/v1/watch?service=${WATCHED}`, headers: { accept: 'text/event-stream' }, headersTimeout: Math.max(1000, connectDeadline - now()) });
    if (res.statusCode !== 200) throw new Error(`watch ${w}: HTTP ${res.statusCode} ${(await res.body.text()).slice(0, 300)}`);
    const decoder = new TextDecoder();
    res.body.on('data', (chunk) => {
      st.chunkAt = wallNow(); // the receive time: when the bytes reach this process
      parser.feed(decoder.decode(chunk, { stream: true }));
    });
    res.body.on('error', (err) => {
      if (!st.ended) st.error = err.code ?? err.message;
    });
    res.body.on('end', () => {
      if (!st.ended) st.error = 'stream ended by the agent';
    });
    st.body = res.body;
    ws.push(st);
  };
  send({ type: 'phase', phase: 'setup' });
  // At most 50 connects in flight; the whole connect phase is bounded by connectDeadline.
  for (let w = 0; w < W; w += 50) {
    await Promise.all(Array.from({ length: Math.min(50, W - w) }, (_, i) => openOne(w + i)));
    if (now() > connectDeadline) throw new Error(`only ${ws.length} of ${W} watchers connected within 15 s`);
  }
  const connectedAt = now();
  const agentBefore = await agentFacts(url);
  const genLoop = loopMonitor();

  // ---- the writer: open loop at a steady rate, acknowledgements recorded per revision ----
  // As many connections as writes may be in flight, so the client never queues a write.
  const MAX_IN_FLIGHT = 16;
  const writer = new Pool(url, { ...CLIENT_OPTS, connections: MAX_IN_FLIGHT });
  const writes = []; // { i, sentAt, ackAt, revision, phase }
  const writeErrors = new Errors();
  const total = Math.min(100_000, Math.round((rate * (warmupMs + durationMs)) / 1000));
  const warmupWrites = Math.round((rate * warmupMs) / 1000);
  const ackLatency = new Histogram();
  let inFlight = 0;
  let behind = 0;
  const pending = new Set();
  const t0 = now();
  send({ type: 'phase', phase: warmupWrites > 0 ? 'warmup' : 'measure' });
  const progress = setInterval(() => {
    const t = now();
    send({ type: 'progress', label: 'watch', phase: t - t0 < warmupMs ? 'warmup' : 'measure', elapsedMs: t - t0, totalMs: warmupMs + durationMs, rate: null, done: writes.length, events: received, errors: writeErrors.total });
  }, 250);
  let measureSent = false;
  for (let i = 0; i < total; i++) {
    const target = t0 + (i * 1000) / rate;
    if (target - now() > 0) await sleep(target - now());
    if (now() - t0 > (warmupMs + durationMs) * 2 + 10_000) break; // hard bound if the agent stalls
    const phase = i < warmupWrites ? 'warmup' : 'measure';
    if (phase === 'measure' && !measureSent) {
      measureSent = true;
      send({ type: 'phase', phase: 'measure' });
    }
    if (inFlight >= MAX_IN_FLIGHT) {
      behind++;
      await Promise.race(pending);
    }
    const sentAt = wallNow();
    const rec = { i, sentAt, ackAt: null, revision: null, phase };
    const body = JSON.stringify({ address: `10.3.0.${(i % CATALOG_SIZE) + 1}`, port: 8080, metadata: { seq: String(i), sentAt: sentAt.toFixed(3), phase } });
    inFlight++;
    const p = call(writer, 'PUT', `/v1/services/${WATCHED}/instances/i-${i % CATALOG_SIZE}`, body)
      .then((a) => {
        rec.ackAt = wallNow();
        rec.revision = a.revision;
        if (phase === 'measure') ackLatency.recordMs(rec.ackAt - sentAt);
        writes.push(rec);
      })
      .catch((err) => writeErrors.add('write', err.message))
      .finally(() => {
        inFlight--;
        pending.delete(p);
      });
    pending.add(p);
  }
  const writeDeadline = now() + 10_000;
  while (pending.size > 0 && now() < writeDeadline) await Promise.race([...pending, sleep(100)]);
  send({ type: 'phase', phase: 'measured' });

  // ---- drain: wait (bounded) until every watcher has the last acknowledged revision ----
  const lastRev = writes.reduce((m, w) => Math.max(m, w.revision ?? 0), 0);
  const drainStart = now();
  while (now() - drainStart < 10_000 && ws.some((s) => s.lastRev < lastRev && !s.error)) await sleep(20);
  const drainMs = now() - drainStart;
  clearInterval(progress);
  const writerMs = now() - t0;

  // ---- checks: every watcher got every acknowledged revision, in order ----
  let missing = 0;
  let watchersMissing = 0;
  for (const s of ws) {
    let m = 0;
    for (const w of writes) if (!s.revs.has(w.revision)) m++;
    missing += m;
    if (m > 0) watchersMissing++;
  }
  const sum = (f) => ws.reduce((a, s) => a + f(s), 0);
  const spread = new Histogram();
  for (const w of writes) {
    const pr = perRevision.get(w.revision);
    if (!pr) continue;
    if (w.phase === 'measure') spread.recordMs(pr.last - pr.first);
  }
  const streamErrors = ws.filter((s) => s.error).map((s) => s.error);
  for (const s of ws) {
    s.ended = true;
  }
  const generatorEventLoopDelay = genLoop.stop();
  const facts = await agentFacts(url);
  await Promise.all(ws.map((s) => s.client.destroy()));
  await writer.close();
  const measuredWrites = writes.filter((w) => w.phase === 'measure').length;
  return {
    watchers: W,
    connected: ws.length,
    connectMs: Math.round(connectedAt - (connectDeadline - 15_000)),
    writeRate: rate,
    warmupMs,
    durationMs,
    writesPlanned: total,
    writesAcknowledged: writes.length,
    writesMeasured: measuredWrites,
    writerFellBehind: behind,
    writeErrors: writeErrors.json(),
    eventsReceived: received,
    eventsPerSec: (received * 1000) / writerMs,
    latency: latency.summary(),
    latencyIncludingWarmup: latencyAll.summary(),
    ackLatency: ackLatency.summary(),
    fanoutSpread: spread.summary(),
    drainMs: Math.round(drainMs),
    generatorEventLoopDelay,
    agentEventLoopDelay: facts.eventLoopDelay ?? null,
    agentGc: gcBetween(agentBefore, facts),
    agent: facts,
    checks: {
      expectedDeliveries: writes.length * ws.length,
      missing,
      watchersMissing,
      outOfOrder: sum((s) => s.outOfOrder),
      duplicates: sum((s) => s.duplicates),
      idMismatch: sum((s) => s.idMismatch),
      otherEvents: sum((s) => s.otherEvents),
      parseErrors: sum((s) => s.parseErrors),
      streamErrors: streamErrors.length,
      streamErrorExamples: [...new Set(streamErrors)].slice(0, 5),
    },
  };
}

const WORKLOADS = {
  'reg-persistent': (a) => registrations({ ...a, lease: false }),
  'reg-lease': (a) => registrations({ ...a, lease: true }),
  reads: (a) => reads({ ...a, healthy: false }),
  'reads-healthy': (a) => reads({ ...a, healthy: true }),
  watch: (a) => watch(a),
};

process.on('message', (msg) => {
  if (msg?.type !== 'run') return;
  void replyThenExit(() => {
    const fn = WORKLOADS[msg.workload];
    if (!fn) throw new Error(`unknown workload ${msg.workload}`);
    return fn({ url: msg.url, options: msg.options });
  });
});
process.on('disconnect', () => process.exit(0));
