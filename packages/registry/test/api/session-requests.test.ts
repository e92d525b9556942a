// Goal: register, deregister and read over the session stream do what the REST calls do
// (same answers, same refusals, same effects), run concurrently, name their request in
// every answer, and are bounded per session; a refused request leaves the session and its
// lease as they were.
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SESSION_MAX_BUFFERED_BYTES, SESSION_MAX_INFLIGHT_REQUESTS } from '@switchboard/protocol';
import { SessionClient as Client, call, goneWithin, sleep, startNode } from '../helpers.js';

const instance = (extra: Record<string, unknown> = {}) => ({ address: '10.0.0.7', port: 8080, tags: ['a'], metadata: { v: '1' }, ...extra });

/** The largest send or receive buffer (bytes) the kernel gives a TCP socket. */
function socketBufferMax(name: 'tcp_rmem' | 'tcp_wmem'): number {
  return Number(readFileSync(`/proc/sys/net/ipv4/${name}`, 'utf8').trim().split(/\s+/)[2]);
}

/** The node's count of sessions once it is down to `n`, or after `ms`. */
async function sessionsDownTo(url: string, n: number, ms: number): Promise<number> {
  const t0 = Date.now();
  let count = (await call(url, 'GET', '/v1/status')).body.sessions;
  while (count > n && Date.now() - t0 < ms) {
    await sleep(50);
    count = (await call(url, 'GET', '/v1/status')).body.sessions;
  }
  return count;
}

async function metricsText(url: string): Promise<string> {
  return (await fetch(`${url}/metrics`)).text();
}

test('register, read and deregister over the session equal the REST calls', async () => {
  const node = await startNode({ limits: { sessionGraceMs: 200 } });
  try {
    const c = await Client.connect(node.url);
    c.send({ type: 'open', ttlMs: 10_000 });
    const { leaseId, maxMessageBytes } = await c.next('lease');
    assert.equal(maxMessageBytes, 65_536, 'the lease message announces the message limit');

    c.send({ type: 'register', id: 1, service: 'pay', instanceId: 'p-1', instance: instance({ leaseId }) });
    const r1 = await c.answer(1);
    assert.equal(r1.type, 'result');
    assert.ok(r1.type === 'result' && typeof r1.revision === 'number' && r1.revision > 0);
    // A second instance over REST, for comparison of the stored records.
    const rest = await call(node.url, 'PUT', '/v1/services/pay/instances/p-2', instance({ leaseId }));
    assert.equal(rest.status, 200);
    const restRead = await call(node.url, 'GET', '/v1/services/pay');
    const [viaSession, viaRest] = restRead.body.instances;
    assert.equal(viaSession.id, 'p-1');
    assert.equal(viaSession.leaseId, leaseId);
    const strip = ({ id, createRevision, modRevision, ...rest }: Record<string, unknown>) => (void id, void createRevision, void modRevision, rest);
    assert.deepEqual(strip(viaSession), strip(viaRest), 'the same record whichever way it was registered');

    c.send({ type: 'read', id: 2, service: 'pay' });
    const r2 = await c.answer(2);
    assert.ok(r2.type === 'result');
    assert.deepEqual(r2.answer, restRead.body, 'a read answers what GET /v1/services/{service} answers');

    c.send({ type: 'read', id: 3, service: 'pay', tag: ['zzz'] });
    const r3 = await c.answer(3);
    assert.ok(r3.type === 'result');
    assert.deepEqual((r3.answer as { instances: unknown[] }).instances, [], 'filters apply as in the query string');
    c.send({ type: 'read', id: 30, service: 'pay', fields: ['port', 'leaseId'] });
    const r30 = await c.answer(30);
    assert.ok(r30.type === 'result');
    assert.deepEqual(r30.answer, (await call(node.url, 'GET', '/v1/services/pay?fields=port,leaseId')).body, 'a projection answers as the query string\'s');
    assert.deepEqual((r30.answer as { instances: unknown[] }).instances, [{ id: 'p-1', port: 8080, leaseId }, { id: 'p-2', port: 8080, leaseId }]);

    c.send({ type: 'deregister', id: 4, service: 'pay', instanceId: 'p-1' });
    const r4 = await c.answer(4);
    assert.ok(r4.type === 'result' && r4.revision! > rest.body.revision);
    assert.deepEqual((await call(node.url, 'GET', '/v1/services/pay')).body.instances.map((i: { id: string }) => i.id), ['p-2']);

    // Counted on /metrics like the REST routes, under the session's path and the request type.
    const metrics = await metricsText(node.url);
    assert.match(metrics, /switchboard_http_requests_total\{method="SESSION",route="\/v1\/session#register",status="200"\} 1/);
    assert.match(metrics, /switchboard_http_requests_total\{method="SESSION",route="\/v1\/session#read",status="200"\} 3/);

    // Registered over the session or not, an instance of the lease goes with it when the process dies.
    c.ws.terminate();
    assert.ok((await goneWithin(node, 'pay', 3_000)) >= 0, 'gone after the grace');
  } finally {
    await node.close();
  }
});

test('refused requests answer with the REST refusal and the request id; the session and its lease stay', async () => {
  const node = await startNode();
  try {
    const c = await Client.connect(node.url);
    c.send({ type: 'open', ttlMs: 10_000 });
    const { leaseId } = await c.next('lease');
    const cases: [unknown, string, string | undefined][] = [
      [{ type: 'register', id: 10, service: 'svc', instanceId: 'a', instance: { port: 1 } }, 'INVALID_ARGUMENT', 'instance/address'],
      [{ type: 'register', id: 11, service: 'svc', instanceId: 'a' }, 'INVALID_ARGUMENT', 'instance'],
      [{ type: 'register', id: 12, service: 'Bad Name', instanceId: 'a', instance: instance() }, 'INVALID_ARGUMENT', 'service'],
      [{ type: 'register', id: 13, service: 'svc', instanceId: 'a', instance: instance({ leaseId: 'ffffffffffffffff' }) }, 'LEASE_NOT_FOUND', undefined],
      [{ type: 'register', id: 14, service: 'svc', instanceId: 'a', instance: instance({ checks: [{ type: 'tcp', target: '169.254.169.254:80', interval: '10s' }] }) }, 'CHECK_TARGET_DENIED', 'instance/checks/0/target'],
      [{ type: 'deregister', id: 15, service: 'svc', instanceId: 'nobody' }, 'INSTANCE_NOT_FOUND', undefined],
      [{ type: 'read', id: 16, service: 'svc', healthy: 'yes' }, 'INVALID_ARGUMENT', 'healthy'],
      [{ type: 'read', id: 17, service: 'svc', tag: 'a' }, 'INVALID_ARGUMENT', 'tag'],
      [{ type: 'read', id: 40, service: 'svc', fields: 'address' }, 'INVALID_ARGUMENT', 'fields'],
      [{ type: 'read', id: 41, service: 'svc', fields: ['address', 'nope'] }, 'INVALID_ARGUMENT', 'fields'],
      [{ type: 'read', id: 18, service: 'svc', namespace: 7 }, 'INVALID_ARGUMENT', 'namespace'],
      [{ type: 'register', id: 19, service: 'svc', instanceId: 'a', instance: instance({ prot: 'http' }), strict: true }, 'UNKNOWN_FIELD', undefined],
    ];
    for (const [msg, code, field] of cases) {
      c.send(msg);
      const a = await c.answer((msg as { id: number }).id);
      assert.equal(a.type, 'error', JSON.stringify(msg));
      assert.ok(a.type === 'error');
      assert.equal(a.problem.code, code, `${JSON.stringify(msg)}: ${a.problem.detail}`);
      assert.equal(a.request, (msg as { type: string }).type);
      if (field !== undefined) assert.equal(a.problem.field, field, JSON.stringify(a.problem));
      assert.ok(a.problem.hint, `${code} has a hint`);
    }
    // Without an id there is nothing to name: the error says so, without an id.
    c.send({ type: 'register', service: 'svc', instanceId: 'a', instance: instance() });
    const noId = await c.next('error');
    assert.equal(noId.problem.code, 'INVALID_ARGUMENT');
    assert.equal(noId.problem.field, 'id');
    assert.equal(noId.request, 'register');
    assert.equal(noId.id, undefined);
    // Unknown fields are ignored and listed, as REST lists them in `warnings`.
    c.send({ type: 'register', id: 20, service: 'svc', instanceId: 'a', instance: instance({ leaseId, protocl: 'http' }), colour: 'red' });
    const warned = await c.answer(20);
    assert.ok(warned.type === 'result');
    assert.equal(warned.warnings?.length, 2, JSON.stringify(warned));
    assert.match(warned.warnings!.join('\n'), /"colour"/);
    assert.match(warned.warnings!.join('\n'), /"instance\/protocl".*did you mean "protocol"/);
    assert.equal(node.engine.registry.instance('default', 'svc', 'a')?.instance.leaseId, leaseId);
    // A read or deregister lists them too (a blocking query's `index` is not one of a read's fields).
    c.send({ type: 'read', id: 21, service: 'svc', index: 42 });
    const read = await c.answer(21);
    assert.ok(read.type === 'result');
    assert.match(read.warnings?.join('\n') ?? '', /"index"/);
    assert.equal((read.answer as { instances: unknown[] }).instances.length, 1);
    // Nothing was written by the refusals, and the lease is still kept by this session.
    assert.equal((await call(node.url, 'GET', '/v1/services/svc')).body.instances.length, 1);
    c.send({ type: 'keepalive', seq: 1 });
    assert.equal((await c.next('ack')).seq, 1);
    assert.equal(c.closed, false);
  } finally {
    await node.close();
  }
});

test('requests run concurrently, each answered once; more than the limit at once are refused, not queued', async () => {
  const node = await startNode();
  try {
    const c = await Client.connect(node.url);
    // Requests need no lease: persistent instances and reads.
    const n = 100;
    for (let i = 0; i < n; i++) c.send({ type: 'register', id: i, service: 'many', instanceId: `m-${i}`, instance: instance() });
    const answers = await Promise.all(Array.from({ length: n }, (_, i) => c.answer(i)));
    assert.ok(answers.every((a) => a.type === 'result'), JSON.stringify(answers.find((a) => a.type !== 'result')));
    assert.equal(new Set(answers.map((a) => (a.type === 'result' ? a.revision : -1))).size, n, 'one revision each');
    assert.equal((await call(node.url, 'GET', '/v1/services/many')).body.instances.length, n);

    // Writes held up in the engine (a slow disk): the session's running requests reach the limit.
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const register = node.engine.register.bind(node.engine);
    node.engine.register = async (item) => {
      await gate;
      return register(item);
    };
    const over = 20;
    const total = SESSION_MAX_INFLIGHT_REQUESTS + over;
    for (let i = 0; i < total; i++) c.send({ type: 'register', id: 1000 + i, service: 'held', instanceId: `h-${i}`, instance: instance() });
    const refused = [];
    for (let i = 0; i < over; i++) refused.push(await c.next('error'));
    assert.ok(refused.every((e) => e.problem.code === 'RATE_LIMITED' && e.problem.limit === 'sessionMaxInflightRequests'), JSON.stringify(refused[0]));
    assert.deepEqual(refused.map((e) => e.id), Array.from({ length: over }, (_, i) => 1000 + SESSION_MAX_INFLIGHT_REQUESTS + i), 'the requests beyond the limit');
    assert.equal(c.inbox.filter((m) => m.type === 'result').length, 0, 'the others are still running');
    release();
    const done = await Promise.all(Array.from({ length: SESSION_MAX_INFLIGHT_REQUESTS }, (_, i) => c.answer(1000 + i)));
    assert.ok(done.every((a) => a.type === 'result'));
    assert.equal((await call(node.url, 'GET', '/v1/services/held')).body.instances.length, SESSION_MAX_INFLIGHT_REQUESTS);
    // Below the limit again: taken.
    c.send({ type: 'read', id: 5000, service: 'held' });
    assert.equal((await c.answer(5000)).type, 'result');
  } finally {
    await node.close();
  }
});

test('a client that reads none of its answers is refused, then cut off; the node and other clients carry on', async () => {
  const node = await startNode();
  try {
    // A service whose answer is about 150 KB.
    const instances = Array.from({ length: 500 }, (_, i) => ({ service: 'big', id: `b-${i}`, address: '10.0.0.9', port: 1000 + i, metadata: { pad: 'x'.repeat(200) } }));
    assert.equal((await call(node.url, 'POST', '/v1/instances/batch', { instances })).status, 200);
    const answerBytes = Buffer.byteLength(JSON.stringify((await call(node.url, 'GET', '/v1/services/big')).body));
    assert.ok(answerBytes > 100_000, `${answerBytes} bytes`);
    const c = await Client.connect(node.url);
    c.ws.pause(); // reads nothing from here on
    // More answers than the kernel's socket buffers and the queue hold, then requests that
    // are only refused (a refusal is small: it takes many to fill the queue a second time).
    const sent = SESSION_MAX_INFLIGHT_REQUESTS + 15_000;
    for (let i = 0; i < sent; i++) c.send({ type: 'read', id: i, service: 'big' });
    assert.equal(await sessionsDownTo(node.url, 0, 15_000), 0, 'the session was cut');
    const metrics = await metricsText(node.url);
    const answered = Number(/switchboard_http_requests_total\{method="SESSION",route="\/v1\/session#read",status="200"\} (\d+)/.exec(metrics)?.[1] ?? 0);
    const refused = Number(/switchboard_http_requests_total\{method="SESSION",route="\/v1\/session#read",status="429"\} (\d+)/.exec(metrics)?.[1] ?? 0);
    assert.ok(refused > 0, `requests were refused before the cut (${answered} answered)`);
    // The answers made were bounded by the limit (plus what the kernel's buffers of the two
    // ends took), not by what was asked: the reads sent together, let in while nothing was
    // queued yet, are checked again before their answers are made.
    const kernel = socketBufferMax('tcp_rmem') + socketBufferMax('tcp_wmem');
    const bound = kernel + 2 * SESSION_MAX_BUFFERED_BYTES + answerBytes;
    assert.ok(answered * answerBytes <= bound, `${answered} answers of ${answerBytes} bytes, more than ${bound}`);
    const d = await Client.connect(node.url);
    d.send({ type: 'read', id: 1, service: 'big' });
    assert.equal((await d.answer(1)).type, 'result', 'another client is served');
  } finally {
    await node.close();
  }
});

test('requests without a valid id are bounded like the others: a client that reads none of their refusals is cut off', async () => {
  const node = await startNode();
  try {
    const probe = await Client.connect(node.url);
    probe.send({ type: 'read' });
    const refusal = await probe.next('error');
    assert.equal(refusal.problem.field, 'id');
    const refusalBytes = Buffer.byteLength(JSON.stringify(refusal));
    const c = await Client.connect(node.url);
    c.ws.pause(); // reads nothing from here on
    // Twice what the kernel's buffers and twice the queue's limit hold in refusals.
    const kernel = socketBufferMax('tcp_rmem') + socketBufferMax('tcp_wmem');
    const sent = Math.ceil((2 * (kernel + 2 * SESSION_MAX_BUFFERED_BYTES)) / refusalBytes);
    for (let i = 0; i < sent; i++) c.send('{"type":"read"}');
    assert.equal(await sessionsDownTo(node.url, 1, 20_000), 1, `the flooding session was cut (${sent} requests sent)`);
    const refused = Number(/switchboard_http_requests_total\{method="SESSION",route="\/v1\/session#read",status="400"\} (\d+)/.exec(await metricsText(node.url))?.[1] ?? 0);
    assert.ok(refused > 1 && refused < sent, `the refusals are counted (${refused}), and the cut came before all ${sent} were refused`);
    probe.send({ type: 'read', id: 1, service: 'none' });
    assert.equal((await probe.answer(1)).type, 'result', 'another client is served');
  } finally {
    await node.close();
  }
});

test('a standalone node ignores the header of a cp node\'s forwarded-writes link: the session is a client\'s', async () => {
  const node = await startNode();
  try {
    const c = await Client.connect(node.url, { 'x-switchboard-forwarded-writes': 'n9' });
    c.send({ type: 'register', id: 1, service: 'fw', instanceId: 'f-1', instance: instance(), planBy: 0, budgetMs: 10 });
    const r = await c.answer(1);
    assert.ok(r.type === 'result', JSON.stringify(r));
    assert.match(r.warnings?.join('\n') ?? '', /planBy/, 'planBy is an unknown field of a client\'s request');
    assert.equal((r as { at?: unknown }).at, undefined, 'no clock in its results');
    c.send({ type: 'open', ttlMs: 5000 });
    assert.equal((await c.next('lease')).ttlMs, 5000, 'a lease can be opened on it');
    assert.equal(c.inbox.some((m) => m.type === 'clock'), false, 'no clock was sent');
  } finally {
    await node.close();
  }
});

test('a node that shuts down, or a session another connection took over, answers the requests running before it closes', async () => {
  const node = await startNode({ limits: { sessionGraceMs: 200 } });
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const register = node.engine.register.bind(node.engine);
  node.engine.register = async (item) => {
    if (item.service === 'held') await gate;
    return register(item);
  };
  let closed = false;
  try {
    // Replaced: the old connection gets `replaced`, then its running request's answer, then the close.
    const a = await Client.connect(node.url);
    a.send({ type: 'open', ttlMs: 10_000 });
    const { leaseId } = await a.next('lease');
    a.send({ type: 'register', id: 1, service: 'held', instanceId: 'h1', instance: instance({ leaseId }) });
    await sleep(50);
    const b = await Client.connect(node.url);
    b.send({ type: 'resume', leaseId });
    await b.next('lease');
    await a.next('replaced');
    a.send({ type: 'register', id: 2, service: 'other', instanceId: 'o1', instance: instance({ leaseId }) });
    const refused = await a.answer(2);
    assert.ok(refused.type === 'error' && refused.problem.code === 'NOT_READY', 'a replaced session takes no new request');
    await sleep(200);
    assert.equal(a.closed, false, 'kept open while its request runs');
    release();
    const answered = await a.answer(1);
    assert.equal(answered.type, 'result');
    const t0 = Date.now();
    while (!a.closed && Date.now() - t0 < 3_000) await sleep(10);
    assert.ok(a.closed, 'closed once answered');

    // Shutdown: the same for a request running when it starts.
    let release2!: () => void;
    const gate2 = new Promise<void>((r) => (release2 = r));
    node.engine.register = async (item) => {
      if (item.service === 'held2') await gate2;
      return register(item);
    };
    b.send({ type: 'register', id: 3, service: 'held2', instanceId: 'h2', instance: instance({ leaseId }) });
    await sleep(50);
    let shutDown = false;
    const shutdown = node.app.shutdown().then(() => (shutDown = true));
    await b.next('goaway');
    await sleep(200);
    assert.equal(shutDown, false, 'the shutdown waits for the running request');
    release2();
    assert.equal((await b.answer(3)).type, 'result', 'answered before the connection closed');
    await shutdown;
    assert.equal(node.engine.registry.instance('default', 'held2', 'h2')?.instance.leaseId, leaseId);
    closed = true;
    await node.engine.close();
  } finally {
    release();
    if (!closed) await node.close();
  }
});
