// Goal: health monitoring through the API with real targets: HTTP checks (2xx passing, 429
// warning, else critical, expected body), TCP and gRPC health checks, flap damping by
// threshold, bounded concurrency with every run time-boxed, ttl check reports, the protect
// threshold, reason-coded history and the drain barrier; every new input refused with a
// clear 4xx.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { Server, ServerCredentials, status as grpcStatus, type ServerUnaryCall, type sendUnaryData } from '@grpc/grpc-js';
import { DEFAULT_LIMITS, validateInstanceInput, type CheckSpec } from '@switchboard/protocol';
import { decodeHealthCheckResponse, encodeHealthCheckRequest, encodeVarint, HEALTH_CHECK_METHOD } from '../../src/health/grpc.js';
import { HttpProber } from '../../src/health/http.js';
import { CheckNetworks, TargetGuard } from '../../src/health/networks.js';
import { SseReader, call, sleep, startNode, type TestNode } from '../helpers.js';

/** An HTTP server whose answer the test sets. */
async function target(): Promise<{ url: string; set(code: number, body?: string): void; hang(on: boolean): void; answered(code: number): number; close(): void }> {
  let code = 200;
  const answers = new Map<number, number>();
  let body = 'ok';
  let hanging = false;
  const srv = http.createServer((_req, res) => {
    if (hanging) return; // never answers
    answers.set(code, (answers.get(code) ?? 0) + 1);
    res.writeHead(code).end(body);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/health`,
    set: (c, b = 'ok') => ((code = c), (body = b)),
    hang: (on) => (hanging = on),
    answered: (c) => answers.get(c) ?? 0,
    close: () => {
      srv.closeAllConnections();
      srv.close();
    },
  };
}

async function checkOf(node: TestNode, svc: string, id: string, checkId: string): Promise<{ status: string; output: string }> {
  const i = (await call(node.url, 'GET', `/v1/services/${svc}/instances/${id}`)).body;
  return i.checks.find((c: { id: string }) => c.id === checkId);
}

async function until(what: string, pred: () => Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  const t0 = Date.now();
  while (!(await pred())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

const reg = (node: TestNode, svc: string, id: string, body: Record<string, unknown>) =>
  call(node.url, 'PUT', `/v1/services/${svc}/instances/${id}`, { address: '127.0.0.1', port: 1, ...body });

test('an HTTP check turns critical after the threshold of 500s and passing again after recovery; only changes are events', async () => {
  const node = await startNode();
  const t = await target();
  try {
    const w = await SseReader.open(`${node.url}/v1/watch?service=web`);
    await reg(node, 'web', 'w1', { checks: [{ id: 'h', type: 'http', target: t.url, interval: '100ms', criticalThreshold: 3 }] });
    await until('passing', async () => (await checkOf(node, 'web', 'w1', 'h')).status === 'passing');
    t.set(500, 'boom');
    await until('critical', async () => (await checkOf(node, 'web', 'w1', 'h')).status === 'critical');
    // Counted at the target, not timed: a probe sent before set() may be answered after it,
    // so the time from set() to critical can be shorter than two intervals.
    assert.ok(t.answered(500) >= 3, `three failures in a row were needed (target answered ${t.answered(500)} 500s)`);
    assert.equal((await checkOf(node, 'web', 'w1', 'h')).output, 'HTTP 500 Internal Server Error');
    const healthy = (await call(node.url, 'GET', '/v1/services/web?healthy=true')).body;
    assert.deepEqual(healthy.instances, []);
    t.set(200);
    await until('passing again', async () => (await checkOf(node, 'web', 'w1', 'h')).status === 'passing');
    await sleep(300); // more passing results: no more events
    assert.deepEqual(w.events.map((e) => [e.event, e.json.reason, e.json.instance.health]), [
      ['put', 'registered', 'critical'],
      ['put', 'check_passed', 'passing'],
      ['put', 'check_failed', 'critical'],
      ['put', 'check_passed', 'passing'],
    ]);
    w.close();
  } finally {
    t.close();
    await node.close();
  }
});

test('HTTP: 429 is warning, a missing expected body is critical', async () => {
  const node = await startNode();
  const t = await target();
  try {
    const checks = [
      { id: 'h', type: 'http', target: t.url, interval: '100ms', criticalThreshold: 1 },
      { id: 'b', type: 'http', target: t.url, interval: '100ms', criticalThreshold: 1, expectBody: 'all good' },
    ];
    await reg(node, 'web', 'w1', { checks });
    await until('expected body missing', async () => (await checkOf(node, 'web', 'w1', 'b')).output === 'HTTP 200 OK, but the body lacks "all good"');
    t.set(200, 'status: all good');
    await until('expected body found', async () => (await checkOf(node, 'web', 'w1', 'b')).status === 'passing');
    t.set(429);
    await until('warning', async () => (await checkOf(node, 'web', 'w1', 'h')).status === 'warning');
    const inst = (await call(node.url, 'GET', '/v1/services/web/instances/w1')).body;
    assert.equal(inst.health, 'warning');
    assert.equal((await call(node.url, 'GET', '/v1/services/web?healthy=true')).body.instances.length, 1, 'warning is still healthy, only deprioritised');
  } finally {
    t.close();
    await node.close();
  }
});

test('TCP checks: an open port passes, a closed one is critical; the default target is the instance', async () => {
  const node = await startNode();
  const srv = net.createServer((s) => s.destroy());
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const open = (srv.address() as AddressInfo).port;
  const closedSrv = net.createServer();
  await new Promise<void>((r) => closedSrv.listen(0, '127.0.0.1', r));
  const closed = (closedSrv.address() as AddressInfo).port;
  await new Promise<void>((r) => closedSrv.close(() => r()));
  try {
    await reg(node, 'db', 'up', { port: open, checks: [{ id: 't', type: 'tcp', interval: '100ms' }] });
    await reg(node, 'db', 'down', { checks: [{ id: 't', type: 'tcp', target: `127.0.0.1:${closed}`, interval: '100ms' }] });
    await until('tcp passing', async () => (await checkOf(node, 'db', 'up', 't')).status === 'passing');
    await until('tcp refused', async () => /connection refused/.test((await checkOf(node, 'db', 'down', 't')).output));
    assert.equal((await checkOf(node, 'db', 'down', 't')).status, 'critical');
  } finally {
    srv.close();
    await node.close();
  }
});

test('gRPC health checks speak grpc.health.v1 with hand-encoded messages', async () => {
  // the encoding round-trips, including a status after an unknown field
  assert.deepEqual(encodeHealthCheckRequest(''), Buffer.alloc(0));
  assert.deepEqual(encodeHealthCheckRequest('a.B'), Buffer.from([0x0a, 3, 0x61, 0x2e, 0x42]));
  assert.deepEqual(decodeHealthCheckResponse(Buffer.from([0x08, 1])), { status: 1 });
  assert.deepEqual(decodeHealthCheckResponse(Buffer.from([0x12, 2, 0x61, 0x62, 0x08, 2])), { status: 2 });
  assert.deepEqual(encodeVarint(300), Buffer.from([0xac, 0x02]));

  const node = await startNode();
  let serving = 1;
  const asked: string[] = [];
  const server = new Server();
  server.register(
    HEALTH_CHECK_METHOD,
    (call: ServerUnaryCall<string, number>, cb: sendUnaryData<number>) => {
      asked.push(call.request);
      if (call.request === 'ghost') return cb({ code: grpcStatus.NOT_FOUND, details: 'unknown service' });
      cb(null, serving);
    },
    (status: number) => Buffer.from([0x08, status]),
    (buf: Buffer) => {
      // HealthCheckRequest: field 1, length-delimited
      return buf.length === 0 ? '' : buf.subarray(2).toString('utf8');
    },
    'unary',
  );
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  const bare = new Server(); // no health service
  const barePort = await new Promise<number>((resolve, reject) => bare.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  try {
    await reg(node, 'rpc', 'g1', { port, protocol: 'grpc', checks: [{ id: 'g', type: 'grpc', interval: '100ms', grpcService: 'orders.v1.Orders', criticalThreshold: 1 }] });
    await reg(node, 'rpc', 'g2', { checks: [{ id: 'g', type: 'grpc', target: `127.0.0.1:${barePort}`, interval: '100ms', criticalThreshold: 1 }] });
    await until('grpc serving', async () => (await checkOf(node, 'rpc', 'g1', 'g')).status === 'passing');
    assert.ok(asked.includes('orders.v1.Orders'));
    serving = 2;
    await until('grpc not serving', async () => /NOT_SERVING/.test((await checkOf(node, 'rpc', 'g1', 'g')).output));
    await until('unimplemented', async () => /UNIMPLEMENTED/.test((await checkOf(node, 'rpc', 'g2', 'g')).output));
  } finally {
    server.forceShutdown();
    bare.forceShutdown();
    await node.close();
  }
});

test('a target that never answers is cut off at its timeout and never blocks other checks', async () => {
  const node = await startNode({ limits: { maxConcurrentChecks: 1 } });
  const slow = await target();
  const fast = await target();
  slow.hang(true);
  try {
    await reg(node, 'web', 'slow', { checks: [{ id: 'h', type: 'http', target: slow.url, interval: '200ms', timeout: '300ms', criticalThreshold: 1 }] });
    await reg(node, 'web', 'fast', { checks: [{ id: 'h', type: 'http', target: fast.url, interval: '100ms' }] });
    await until('fast passing', async () => (await checkOf(node, 'web', 'fast', 'h')).status === 'passing', 3_000);
    await until('slow timed out', async () => (await checkOf(node, 'web', 'slow', 'h')).output === 'timed out after 300ms', 3_000);
    const st = (await call(node.url, 'GET', '/v1/status')).body.checks;
    assert.equal(st.scheduled, 2);
    assert.equal(st.maxConcurrent, 1);
    assert.equal(st.denied, 0, 'no probe refused by the check networks');
    assert.ok(st.running <= 1);
    const metrics = (await call(node.url, 'GET', '/metrics')).body as string;
    assert.match(metrics, /^switchboard_check_timeouts_total [1-9]/m);
    assert.match(metrics, /^switchboard_check_runs_total\{status="passing"\} [1-9]/m);
  } finally {
    slow.close();
    fast.close();
    await node.close();
  }
});

test('ttl checks: reports (with pass/warn/fail), expiry to critical, the instance stays; bad reports are refused', async () => {
  const node = await startNode();
  try {
    await reg(node, 'job', 'j1', { checks: [{ id: 'beat', type: 'ttl', ttl: '500ms' }, { id: 'h', type: 'http', target: 'http://127.0.0.1:1/' }] });
    const report = (body: unknown, check = 'beat') => call(node.url, 'PUT', `/v1/services/job/instances/j1/checks/${check}`, body);
    const first = await report({ status: 'pass', output: 'batch 1 done' });
    assert.equal(first.status, 200);
    assert.deepEqual(await checkOf(node, 'job', 'j1', 'beat'), { id: 'beat', type: 'ttl', status: 'passing', output: 'batch 1 done' });
    const again = await report({ status: 'passing', output: 'batch 2 done' });
    assert.equal(again.body.revision, first.body.revision, 'no state change, no new revision');
    await report({ status: 'warn', output: 'slow' });
    assert.equal((await checkOf(node, 'job', 'j1', 'beat')).status, 'warning');
    await until('ttl expiry', async () => (await checkOf(node, 'job', 'j1', 'beat')).output === 'no report within 500ms (ttl)', 2_000);
    assert.equal((await checkOf(node, 'job', 'j1', 'beat')).status, 'critical');
    assert.equal((await call(node.url, 'GET', '/v1/services/job/instances/j1')).status, 200);

    const bad = async (body: unknown, status: number, code: string, field?: string, check = 'beat') => {
      const r = await report(body, check);
      assert.equal(r.status, status, JSON.stringify(r.body));
      assert.equal(r.body.code, code);
      assert.ok(r.body.hint, 'every refusal says how to fix it');
      if (field) assert.equal(r.body.field, field);
    };
    await bad({ status: 'ok' }, 400, 'INVALID_ARGUMENT', 'status');
    await bad({}, 400, 'INVALID_ARGUMENT', 'status');
    await bad({ status: 'pass', output: 7 }, 400, 'INVALID_ARGUMENT', 'output');
    await bad({ status: 'pass', output: 'x'.repeat(1025) }, 400, 'LIMIT_EXCEEDED', 'output');
    await bad({ status: 'pass' }, 404, 'CHECK_NOT_FOUND', 'checkId', 'nope');
    await bad({ status: 'pass' }, 400, 'INVALID_ARGUMENT', 'checkId', 'h');
    const missing = await call(node.url, 'PUT', '/v1/services/job/instances/zz/checks/beat', { status: 'pass' });
    assert.equal(missing.body.code, 'INSTANCE_NOT_FOUND');
  } finally {
    await node.close();
  }
});

test('new check fields are validated with a field and a hint', async () => {
  const node = await startNode();
  try {
    const cases: [Record<string, unknown>, string][] = [
      [{ type: 'http', target: 'ftp://x/' }, 'checks/0/target'],
      [{ type: 'tcp', target: 'no-port' }, 'checks/0/target'],
      [{ type: 'ttl', target: '10.0.0.1:80' }, 'checks/0/target'],
      [{ type: 'tcp', expectBody: 'ok' }, 'checks/0/expectBody'],
      [{ type: 'http', grpcService: 'x' }, 'checks/0/grpcService'],
      [{ type: 'http', passingThreshold: 0 }, 'checks/0/passingThreshold'],
      [{ type: 'http', criticalThreshold: 1.5 }, 'checks/0/criticalThreshold'],
      [{ type: 'http', interval: '10s', jitter: '6s' }, 'checks/0/jitter'],
      [{ type: 'http', deregisterCriticalAfter: '10' }, 'checks/0/deregisterCriticalAfter'],
    ];
    for (const [check, field] of cases) {
      const r = await reg(node, 'web', 'w', { checks: [check] });
      assert.equal(r.status, 400, JSON.stringify(check));
      assert.equal(r.body.field, field);
      assert.ok(r.body.hint);
    }
  } finally {
    await node.close();
  }
});

test('the protect threshold: below it, healthy=true answers include the unhealthy and say protected', async () => {
  const node = await startNode();
  try {
    for (const id of ['a', 'b', 'c', 'd']) await reg(node, 'api', id, { checks: [{ id: 't', type: 'ttl', ttl: '1h' }] });
    await call(node.url, 'PUT', '/v1/services/api/instances/a/checks/t', { status: 'pass' });
    await call(node.url, 'PUT', '/v1/services/api/instances/d/status', { status: 'out_of_service' });
    const healthy = () => call(node.url, 'GET', '/v1/services/api?healthy=true');
    assert.deepEqual((await healthy()).body.instances.map((i: { id: string }) => i.id), ['a']);
    assert.equal((await healthy()).body.protected, undefined);

    const before = (await call(node.url, 'GET', '/v1/services/api')).body.revision;
    const set = await call(node.url, 'PUT', '/v1/services/api/settings', { protectThreshold: 0.5 });
    assert.equal(set.status, 200);
    assert.ok(set.body.revision > before, 'a settings change is a new revision of the service');
    assert.deepEqual((await call(node.url, 'GET', '/v1/services/api/settings')).body, { protectThreshold: 0.5 });
    const prot = (await healthy()).body;
    assert.equal(prot.protected, true);
    assert.deepEqual(prot.instances.map((i: { id: string }) => i.id), ['a', 'b', 'c'], 'out_of_service stays out');
    await call(node.url, 'PUT', '/v1/services/api/instances/b/checks/t', { status: 'pass' });
    assert.equal((await healthy()).body.protected, undefined, '2 of 3 healthy is above the threshold');

    assert.equal((await call(node.url, 'PUT', '/v1/services/api/settings', { protectThreshold: null })).status, 200);
    assert.deepEqual((await call(node.url, 'GET', '/v1/services/api/settings')).body, { protectThreshold: null });
    for (const v of [0, 1.5, '0.5', -1]) {
      const r = await call(node.url, 'PUT', '/v1/services/api/settings', { protectThreshold: v });
      assert.equal(r.status, 400);
      assert.equal(r.body.field, 'protectThreshold');
    }
    assert.equal((await call(node.url, 'PUT', '/v1/services/api/settings', {})).status, 400);
  } finally {
    await node.close();
  }
});

test('history: every change with its reason; kept after the instance is gone', async () => {
  const node = await startNode();
  try {
    const lease = (await call(node.url, 'POST', '/v1/leases', { ttlMs: 60_000 })).body.leaseId;
    await reg(node, 'web', 'w1', { leaseId: lease });
    await reg(node, 'web', 'w1', { leaseId: lease, tags: ['blue'] });
    await call(node.url, 'PUT', '/v1/services/web/instances/w1/status', { status: 'out_of_service' });
    await call(node.url, 'POST', '/v1/services/web/instances/w1/drain?wait=0s');
    await call(node.url, 'DELETE', `/v1/leases/${lease}`);
    const h = await call(node.url, 'GET', '/v1/services/web/instances/w1/history');
    assert.equal(h.status, 200);
    assert.equal(h.body.exists, false);
    assert.deepEqual(h.body.history.map((e: any) => [e.type, e.reason, e.status]), [
      ['put', 'registered', 'up'],
      ['put', 'updated', 'up'],
      ['put', 'status_changed', 'out_of_service'],
      ['put', 'drained', 'draining'],
      ['delete', 'lease_revoked', 'draining'],
    ]);
    assert.equal(h.body.history[1].detail, 'changed tags');
    assert.ok(h.body.history.every((e: any) => typeof e.at === 'string' && e.revision > 0));
    const none = await call(node.url, 'GET', '/v1/services/web/instances/never/history');
    assert.equal(none.status, 404);
    assert.equal(none.body.code, 'INSTANCE_NOT_FOUND');
  } finally {
    await node.close();
  }
});

test('drain answers once every watcher of the service was sent the change', async () => {
  const node = await startNode();
  try {
    await reg(node, 'web', 'w1', {});
    const mine = await SseReader.open(`${node.url}/v1/watch?service=web`);
    const all = await SseReader.open(`${node.url}/v1/watch`);
    const other = await SseReader.open(`${node.url}/v1/watch?service=other`);
    const r = await call(node.url, 'POST', '/v1/services/web/instances/w1/drain?wait=2s');
    assert.equal(r.status, 200);
    assert.deepEqual({ ...r.body, revision: 0 }, { revision: 0, watchers: 2, reached: 2, timedOut: 0, gone: 0 });
    for (const w of [mine, all]) {
      await w.until(() => w.events.some((e) => e.json.instance.status === 'draining' && e.json.reason === 'drained'), 500, 'the drain event');
    }
    assert.equal(other.events.length, 0);
    const again = await call(node.url, 'POST', '/v1/services/web/instances/w1/drain');
    assert.equal(again.body.revision, r.body.revision, 'draining twice changes nothing');
    assert.equal(again.body.reached, 2);
    for (const w of [mine, all, other]) w.close();

    const unknown = await call(node.url, 'POST', '/v1/services/web/instances/zz/drain');
    assert.equal(unknown.body.code, 'INSTANCE_NOT_FOUND');
    const long = await call(node.url, 'POST', '/v1/services/web/instances/w1/drain?wait=10m');
    assert.equal(long.status, 400);
    assert.equal(long.body.limit, 'blockingWaitMaxMs');
    const bad = await call(node.url, 'POST', '/v1/services/web/instances/w1/drain?wait=soon');
    assert.equal(bad.body.field, 'wait');
  } finally {
    await node.close();
  }
});

test('an HTTP check of an endpoint whose body never ends holds no socket after its answer', async () => {
  const node = await startNode();
  const sockets = new Set<net.Socket>();
  // Headers at once, then a body that trickles a byte a second and never ends (a stream).
  const srv = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write(':');
    const t = setInterval(() => res.write(':'), 1_000);
    res.on('close', () => clearInterval(t));
  });
  srv.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  try {
    const url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}/`;
    await reg(node, 'stream', 's1', { checks: [{ id: 'h', type: 'http', target: url, interval: '100ms' }] });
    await until('the check passing', async () => (await checkOf(node, 'stream', 's1', 'h'))?.status === 'passing');
    await sleep(1_500); // about 15 runs
    assert.ok(sockets.size <= 2, `${sockets.size} sockets still open on the target`);
  } finally {
    await call(node.url, 'DELETE', '/v1/services/stream/instances/s1');
    await node.close();
    srv.closeAllConnections();
    srv.close();
  }
});

/** An HTTP server counting the connections it accepts and those still open. */
async function countingServer(handler: http.RequestListener): Promise<{ url: string; accepted: () => number; open: () => number; close(): void }> {
  const sockets = new Set<net.Socket>();
  let accepted = 0;
  const srv = http.createServer(handler);
  srv.on('connection', (s: net.Socket) => {
    accepted++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`,
    accepted: () => accepted,
    open: () => sockets.size,
    close: () => {
      srv.closeAllConnections();
      srv.close();
    },
  };
}

const httpSpec = (extra: Record<string, unknown> = {}): CheckSpec => validateInstanceInput({ address: '127.0.0.1', port: 1, checks: [{ type: 'http', timeout: '5s', ...extra }] }, DEFAULT_LIMITS).checks[0] as CheckSpec;

test('HTTP probes: each run opens one connection and leaves none behind, an aborted run too', async () => {
  const srv = await countingServer((req, res) => {
    if (req.url === '/hang') return; // never answers
    res.end('ok');
  });
  const prober = new HttpProber(new TargetGuard(CheckNetworks.DEFAULT));
  try {
    for (let i = 0; i < 3; i++) assert.deepEqual(await prober.probe({ spec: httpSpec(), target: `${srv.url}/ok` }, new AbortController().signal), { status: 'passing', output: 'HTTP 200 OK' });
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 200);
    assert.equal((await prober.probe({ spec: httpSpec(), target: `${srv.url}/hang` }, ac.signal)).status, 'critical');
    await sleep(300); // a spare connection would have been opened by now
    assert.equal(srv.accepted(), 4, 'one connection per run');
    assert.equal(srv.open(), 0, 'no idle or spare connection left open');
  } finally {
    prober.close();
    srv.close();
  }
});

test('HTTP expectBody: a body that holds the text at once but keeps streaming passes at once, also across chunks', async () => {
  // The text comes in the first bytes (or split over two writes), then a trickle that never ends.
  const srv = await countingServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    if (req.url === '/split') {
      res.write('status: al');
      setTimeout(() => res.write('l good\n'), 50);
    } else res.write('status: all good\n');
    const t = setInterval(() => res.write('.'), 50);
    res.on('close', () => clearInterval(t));
  });
  const prober = new HttpProber(new TargetGuard(CheckNetworks.DEFAULT));
  try {
    for (const path of ['/at-once', '/split']) {
      const t0 = performance.now();
      const r = await prober.probe({ spec: httpSpec({ expectBody: 'all good' }), target: `${srv.url}${path}` }, AbortSignal.timeout(2_000));
      assert.deepEqual(r, { status: 'passing', output: 'HTTP 200 OK, body contains "all good"' }, path);
      assert.ok(performance.now() - t0 < 1_000, `${path}: the reading stopped at the match`);
    }
    await sleep(100);
    assert.equal(srv.open(), 0, 'the streams were closed');
  } finally {
    prober.close();
    srv.close();
  }
});

test('drains that wait count against maxBlockingQueriesPerNode; a refused one changes nothing', async () => {
  const node = await startNode({ limits: { maxBlockingQueriesPerNode: 2 } });
  try {
    await reg(node, 'web', 'w1', {});
    const idx = (await call(node.url, 'GET', '/v1/services/web')).body.revision;
    // Two blocking queries fill the budget.
    const waits = [0, 1].map(() => call(node.url, 'GET', `/v1/services/web?index=${idx}&wait=3s`));
    const t0 = Date.now();
    const waiting = async () => Number(/^switchboard_blocking_queries (\d+)/m.exec(await (await fetch(`${node.url}/metrics`)).text())?.[1]);
    while ((await waiting()) !== 2 && Date.now() - t0 < 3_000) await sleep(20);
    assert.equal(await waiting(), 2);
    const refused = await call(node.url, 'POST', '/v1/services/web/instances/w1/drain?wait=2s');
    assert.equal(refused.status, 429);
    assert.equal(refused.body.code, 'RATE_LIMITED');
    assert.equal(refused.body.limit, 'maxBlockingQueriesPerNode');
    assert.ok(refused.body.hint);
    assert.equal((await call(node.url, 'GET', '/v1/services/web/instances/w1')).body.status, 'up', 'the refused drain wrote nothing');
    // A drain that does not wait is not limited (and ends the blocking queries' wait).
    const now = await call(node.url, 'POST', '/v1/services/web/instances/w1/drain?wait=0s');
    assert.equal(now.status, 200);
    for (const w of await Promise.all(waits)) assert.equal(w.status, 200);
  } finally {
    await node.close();
  }
});

test('consumer reports: two distinct reporters turn an instance warning; one alone never does', async () => {
  const node = await startNode();
  try {
    await reg(node, 'api', 'a', {});
    const send = (body: unknown, id = 'a') => call(node.url, 'POST', `/v1/services/api/instances/${id}/reports`, body);
    const one = await send({ reporter: 'checkout-1', kind: 'timeout', detail: 'no answer in 2s' });
    assert.equal(one.status, 200);
    assert.deepEqual({ ...one.body, revision: 0 }, { revision: 0, reporters: 1, warning: false });
    await send({ reporter: 'checkout-1', kind: 'timeout' });
    assert.equal((await call(node.url, 'GET', '/v1/services/api/instances/a')).body.health, 'passing');
    const two = await send({ reporter: 'cart-7', kind: 'connect_refused' });
    assert.equal(two.body.warning, true);
    const inst = (await call(node.url, 'GET', '/v1/services/api/instances/a')).body;
    assert.equal(inst.health, 'warning');
    assert.equal(inst.checks[0].type, 'reports');
    assert.equal((await call(node.url, 'GET', '/v1/services/api?healthy=true')).body.instances.length, 1, 'deprioritised, not removed');
    assert.equal((await send({ reporter: 'x y', kind: 'timeout' })).body.field, 'reporter');
    assert.equal((await send({ reporter: 'x', kind: 'slow' })).body.field, 'kind');
    assert.equal((await send({ reporter: 'x', kind: 'timeout' }, 'nope')).body.code, 'INSTANCE_NOT_FOUND');
  } finally {
    await node.close();
  }
});

test('the OpenAPI document describes the new endpoints and fields', async () => {
  const node = await startNode();
  try {
    const doc = (await call(node.url, 'GET', '/v1/openapi.json')).body;
    for (const path of [
      '/v1/services/{service}/instances/{instanceId}/checks/{checkId}',
      '/v1/services/{service}/settings',
      '/v1/services/{service}/instances/{instanceId}/history',
      '/v1/services/{service}/instances/{instanceId}/drain',
      '/v1/services/{service}/instances/{instanceId}/reports',
    ]) assert.ok(doc.paths[path], path);
    const status = doc.paths['/v1/status'].get.responses['200'].content['application/json'].schema;
    assert.ok(status.properties.selfPreservation.properties.blockedLeases);
  } finally {
    await node.close();
  }
});
