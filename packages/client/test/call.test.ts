// Goal: the view's call path does what the SDK promises without any registry involved:
// idempotent requests are retried on another instance (a request that never left is
// retried whatever its method), failing instances are ejected by their circuit breaker and
// probed again after the cool-down, typed errors come out (NO_INSTANCE, CIRCUIT_OPEN,
// BULKHEAD_FULL, RETRY_BUDGET_EXHAUSTED, TIMEOUT), filters apply, and changes() yields.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { Agent } from 'undici';
import type { Instance } from '@switchboard/protocol';
import { BulkheadFullError, CircuitOpenError, NoInstanceError, RetryBudgetExhaustedError, TimeoutError, UpstreamError } from '../src/errors.js';
import type { FeedChange } from '../src/feed.js';
import { ServiceFeed } from '../src/feed.js';
import { Endpoints, RegistryHttp } from '../src/registry-http.js';
import { ServiceView, type ServiceOptions, type ViewChange } from '../src/view.js';
import { RoundRobinBalancer } from '../src/index.js';
import { freePort, inst, nameServer, offlineFeed, sleep } from './helpers.js';

const dispatcher = new Agent({ keepAliveTimeout: 1_000 });
after(() => dispatcher.close());

function view(instances: Instance[], opts: ServiceOptions = {}): ServiceView {
  const v = new ServiceView(offlineFeed(), opts, { dispatcher, onClose: () => undefined });
  put(v, instances);
  return v;
}

function put(v: ServiceView, instances: Instance[], revision = 2): void {
  v.onChanges(instances.map((i): FeedChange => ({ type: 'put', instance: i, previous: undefined, revision })));
}

test('a GET that gets 503 or a refused connection is retried on another instance', async () => {
  const a = await nameServer('a');
  const b = await nameServer('b');
  const dead = await freePort();
  try {
    const v = view([inst('a', { port: a.port }), inst('b', { port: b.port }), inst('dead', { port: dead })], { balancer: 'round-robin', circuitBreaker: false });
    const bodies: string[] = [];
    for (let i = 0; i < 30; i++) {
      const res = await v.fetch('/x?status-a=503');
      assert.equal(res.status, 200);
      bodies.push(await res.text());
    }
    assert.ok(bodies.every((x) => x === 'b'), 'only b answers 200');
    assert.ok(a.hits() > 0, 'a was tried (and its 503 retried)');
    for (const id of ['a', 'b', 'dead']) assert.equal(v.load.outstanding(id), 0);
  } finally {
    await a.close();
    await b.close();
  }
});

test('a POST is not retried once sent, but is retried when the connection was refused', async () => {
  const a = await nameServer('a');
  const dead = await freePort();
  try {
    const v = view([inst('a', { port: a.port })], { circuitBreaker: false });
    const res = await v.fetch('/x?status=503', { method: 'POST', body: '{}' });
    assert.equal(res.status, 503);
    assert.equal(a.hits(), 1, 'one attempt only');
    await res.text();

    const v2 = view([inst('a', { port: a.port }), inst('dead', { port: dead })], { balancer: 'round-robin', circuitBreaker: false });
    for (let i = 0; i < 6; i++) {
      const r = await v2.fetch('/x', { method: 'POST', body: 'x' });
      assert.equal(await r.text(), 'a');
    }
    const only = view([inst('dead', { port: dead })], { circuitBreaker: false });
    await assert.rejects(only.fetch('/x'), (e: unknown) => e instanceof UpstreamError && e.code === 'UPSTREAM_FAILED');
  } finally {
    await a.close();
  }
});

test('consecutive failures eject an instance; after the cool-down one probe is let through', async () => {
  const a = await nameServer('a');
  const b = await nameServer('b');
  try {
    const v = view([inst('a', { port: a.port }), inst('b', { port: b.port })], { balancer: 'round-robin', circuitBreaker: { failureThreshold: 2, cooldownMs: 300 } });
    for (let i = 0; i < 10; i++) await (await v.fetch('/x?status-a=500', { retry: false })).text();
    assert.equal(v.circuitState('a'), 'open');
    const hitsWhileOpen = a.hits();
    for (let i = 0; i < 10; i++) assert.equal(v.pick()!.id, 'b');
    for (let i = 0; i < 10; i++) await (await v.fetch('/x')).text();
    assert.equal(a.hits(), hitsWhileOpen, 'an ejected instance takes no calls');
    await sleep(350);
    assert.equal(v.circuitState('a'), 'half-open');
    assert.ok([...Array(4)].some(() => v.pick()?.id === 'a'), 'half-open: pickable for a probe');
    // A healthy probe closes the circuit.
    for (let i = 0; i < 4; i++) await (await v.fetch('/x')).text();
    assert.equal(v.circuitState('a'), 'closed');
  } finally {
    await a.close();
    await b.close();
  }
});

test('typed errors: NO_INSTANCE, CIRCUIT_OPEN, BULKHEAD_FULL, RETRY_BUDGET_EXHAUSTED, TIMEOUT', async () => {
  const a = await nameServer('a');
  const dead = await freePort();
  try {
    await assert.rejects(view([]).fetch('/x'), (e: unknown) => e instanceof NoInstanceError && e.code === 'NO_INSTANCE');
    await assert.rejects(view([inst('a', { port: a.port, status: 'draining' }), inst('c', { health: 'critical' })]).fetch('/x'), NoInstanceError);

    const ejecting = view([inst('dead', { port: dead })], { circuitBreaker: { failureThreshold: 1, cooldownMs: 60_000 } });
    await assert.rejects(ejecting.fetch('/x'), UpstreamError);
    await assert.rejects(ejecting.fetch('/x'), (e: unknown) => e instanceof CircuitOpenError && e.code === 'CIRCUIT_OPEN' && e.ejected === 1);

    const narrow = view([inst('a', { port: a.port })], { bulkhead: { maxConcurrent: 1, maxQueued: 0 } });
    const slow = narrow.fetch('/x?delay-a=200');
    await assert.rejects(narrow.fetch('/x'), (e: unknown) => e instanceof BulkheadFullError && e.code === 'BULKHEAD_FULL');
    await (await slow).text();

    const broke = view([inst('dead', { port: dead }), inst('dead2', { port: dead })], { circuitBreaker: false, retry: { budget: { ratio: 0, minRetriesPerSecond: 0 } } });
    await assert.rejects(broke.fetch('/x'), (e: unknown) => e instanceof RetryBudgetExhaustedError && e.code === 'RETRY_BUDGET_EXHAUSTED');

    const started = Date.now();
    await assert.rejects(view([inst('a', { port: a.port })]).fetch('/x?delay-a=2000', { timeoutMs: 100 }), (e: unknown) => e instanceof TimeoutError && e.code === 'TIMEOUT');
    assert.ok(Date.now() - started < 1_000);
    const ac = new AbortController();
    const p = view([inst('a', { port: a.port })]).fetch('/x?delay-a=2000', { signal: ac.signal });
    ac.abort(new Error('caller gave up'));
    await assert.rejects(p, /caller gave up/);
  } finally {
    await a.close();
  }
});

test('filters (zone, tags, version range, healthy) and weight 0 decide membership and picks', () => {
  const all = [
    inst('a', { zone: 'eu-1', tags: ['primary', 'ssd'], version: '2.1.0' }),
    inst('b', { zone: 'eu-1', tags: ['primary'], version: '1.9.0' }),
    inst('c', { zone: 'us-1', tags: ['primary', 'ssd'], version: '2.0.0-rc.1' }),
    inst('d', { zone: 'eu-1', tags: ['ssd'], version: null, status: 'draining' }),
    inst('e', { zone: 'eu-1', weight: 0 }),
  ];
  const ids = (o: ServiceOptions) => view(all, o).instances().map((i) => i.id).sort();
  assert.deepEqual(ids({ zone: 'eu-1' }), ['a', 'b', 'd', 'e']);
  assert.deepEqual(ids({ tags: ['ssd', 'primary'] }), ['a', 'c']);
  assert.deepEqual(ids({ version: '>=2.0.0-0' }), ['a', 'c']);
  assert.deepEqual(ids({ healthy: true }), ['a', 'b', 'c', 'e']);
  const v = view(all);
  const picked = new Set(Array.from({ length: 50 }, () => v.pick()!.id));
  assert.deepEqual([...picked].sort(), ['a', 'b', 'c'], 'draining and weight 0 are never picked');
  assert.throws(() => view(all, { version: 'not a range' }), /version range/);
});

test('changes(): yields added/updated/removed, ends on close, collapses a backlog into resync', async () => {
  const v = view([inst('a')]);
  const it = v.changes({ initial: true });
  put(v, [inst('b')]);
  put(v, [inst('a', { status: 'draining', modRevision: 3 })], 3);
  v.onChanges([{ type: 'delete', instance: inst('b'), previous: inst('b'), revision: 4, reason: 'lease_expired' }]);
  const seen: ViewChange[] = [];
  for (let i = 0; i < 4; i++) seen.push((await it.next()).value as ViewChange);
  assert.deepEqual(seen.map((c) => c.type), ['added', 'added', 'updated', 'removed']);
  assert.equal((seen[3] as { reason: string }).reason, 'lease_expired');

  const slow = v.changes({ maxQueued: 3 });
  for (let i = 0; i < 10; i++) put(v, [inst(`x${i}`)]);
  const first = (await slow.next()).value as ViewChange;
  assert.equal(first.type, 'resync');
  assert.equal((first as { instances: readonly Instance[] }).instances.length, 11);
  v.close();
  let rest = 0;
  while (!(await it.next()).done) rest++;
  assert.equal(rest, 10, 'what was queued before close is still delivered, then the iterator ends');
  assert.equal((await slow.next()).done, true);
});

test('a request the caller cannot build (a GET with a body) fails at once and opens no circuit', async () => {
  const a = await nameServer('a');
  const b = await nameServer('b');
  try {
    const v = view([inst('a', { port: a.port }), inst('b', { port: b.port })], { circuitBreaker: { failureThreshold: 1, cooldownMs: 60_000 } });
    for (let i = 0; i < 5; i++) await assert.rejects(v.fetch('/x', { method: 'GET', body: 'not allowed' }), (e: unknown) => e instanceof TypeError && !(e instanceof UpstreamError));
    assert.equal(v.circuitState('a'), 'closed');
    assert.equal(v.circuitState('b'), 'closed');
    assert.equal(a.hits() + b.hits(), 0, 'nothing was sent');
    assert.equal(await (await v.fetch('/x')).text().then((t) => t === 'a' || t === 'b'), true);
  } finally {
    await a.close();
    await b.close();
  }
});

test('an instance that fails TLS is a failing instance: retried elsewhere, counted by its breaker', async () => {
  const plain = await nameServer('plain');
  const good = await nameServer('good');
  try {
    // https against a plain HTTP server: fetch fails with a TypeError whose cause is the TLS error.
    const v = view([inst('tls', { port: plain.port, protocol: 'https' }), inst('good', { port: good.port })], { balancer: 'round-robin', circuitBreaker: { failureThreshold: 1, cooldownMs: 60_000 } });
    for (let i = 0; i < 6; i++) assert.equal(await (await v.fetch('/x')).text(), 'good');
    assert.equal(v.circuitState('tls'), 'open');
    const only = view([inst('tls', { port: plain.port, protocol: 'https' })]);
    await assert.rejects(only.fetch('/x'), UpstreamError);
  } finally {
    await plain.close();
    await good.close();
  }
});

test('calls that time out waiting for the first answer leave no waiter behind, and wait inside the bulkhead', async () => {
  const endpoints = new Endpoints(['http://127.0.0.1:9']);
  const feed = new ServiceFeed({ namespace: 'default', service: 'never', endpoints, http: new RegistryHttp(endpoints), backoff: {}, cacheDir: undefined, watchIdleTimeoutMs: 45_000, emptyViewGraceMs: 30_000, snapshotIntervalMs: 1_000, onError: () => undefined });
  const v = new ServiceView(feed, { bulkhead: { maxConcurrent: 1, maxQueued: 1 } }, { dispatcher, onClose: () => undefined });
  const calls = [v.fetch('/x', { timeoutMs: 150 }), v.fetch('/x', { timeoutMs: 150 })];
  await assert.rejects(v.fetch('/x', { timeoutMs: 150 }), BulkheadFullError);
  for (const c of calls) await assert.rejects(c);
  for (let i = 0; i < 5; i++) await assert.rejects(v.ready({ timeoutMs: 20 }));
  assert.equal(feed.readyWaiting, 0);
  v.close();
  await feed.close();
});

test('an instance that leaves and comes back while a call to it runs is probed again after its new circuit opens', async () => {
  const v = view([inst('a')], { circuitBreaker: { failureThreshold: 1, cooldownMs: 100 }, bulkhead: false });
  const reset = (): Error => Object.assign(new Error('reset'), { code: 'ECONNRESET' });
  let failFirst: (err: Error) => void = () => undefined;
  const first = v.call(() => new Promise((_, reject) => (failFirst = reject))).catch(() => 'failed');
  await sleep(5);
  // Deregistered and registered again (or filtered out and back) while the call runs: the
  // instance gets a new breaker, and the old one's verdict must not hold its timer slot.
  v.onChanges([{ type: 'delete', instance: inst('a'), previous: inst('a'), revision: 3, reason: 'deregistered' }]);
  put(v, [inst('a')], 4);
  failFirst(reset());
  assert.equal(await first, 'failed');
  await assert.rejects(v.call(async () => Promise.reject(reset())));
  assert.equal(v.circuitState('a'), 'open');
  await sleep(400);
  assert.equal(v.pick()?.id, 'a', 'picked again once its cool-down is over');
  assert.equal(await v.call(async (i) => `ok from ${i.id}`), 'ok from a');
  assert.equal(v.circuitState('a'), 'closed');
  v.close();
});

test('a half-open trial whose classify throws frees its slot: the error reaches the caller, the instance is probed again', async () => {
  const v = view([inst('a')], { circuitBreaker: { failureThreshold: 1, cooldownMs: 100 }, bulkhead: false });
  await assert.rejects(v.call(async () => Promise.reject(Object.assign(new Error('reset'), { code: 'ECONNRESET' }))));
  await sleep(250);
  assert.equal(v.circuitState('a'), 'half-open');
  const discarded: unknown[] = [];
  const classify = (o: { result: { reply?: { code: string } } } | { error: unknown }) => ({ ok: 'result' in o && (o.result.reply as { code: string }).code === 'OK', retryable: false, failure: false });
  await assert.rejects(v.call(async () => ({}), {}, classify, (r) => discarded.push(r)), TypeError);
  assert.equal(discarded.length, 1, 'the result classify choked on is discarded');
  assert.equal(v.pick()?.id, 'a', 'the trial slot is free again');
  assert.equal(await v.call(async (i) => `ok from ${i.id}`), 'ok from a');
  v.close();
});

test("a 'change' listener that throws keeps neither the view's other listeners nor the feed's other views from the change", () => {
  const feed = offlineFeed();
  const v1 = new ServiceView(feed, {}, { dispatcher, onClose: () => undefined });
  const v2 = new ServiceView(feed, { healthy: true }, { dispatcher, onClose: () => undefined });
  const thrown: unknown[] = [];
  const heard: string[] = [];
  v1.on('change', (c: ViewChange) => {
    if (c.type === 'removed') throw new Error('a bug in a listener');
  });
  v1.on('change', (c: ViewChange) => heard.push(`${c.type} ${'instance' in c ? c.instance.id : ''}`));
  const emit = (changes: FeedChange[]): void => (feed as unknown as { emit(c: FeedChange[], persist: boolean): void }).emit(changes, false);
  const nextTick = process.nextTick;
  // The listener's error is thrown again on its own tick; caught here to be looked at.
  process.nextTick = ((fn: () => void) => {
    try {
      fn();
    } catch (err) {
      thrown.push(err);
    }
  }) as typeof process.nextTick;
  try {
    emit([{ type: 'put', instance: inst('a'), previous: undefined, revision: 2 }, { type: 'put', instance: inst('b'), previous: undefined, revision: 2 }]);
    emit([{ type: 'delete', instance: inst('a'), previous: inst('a'), revision: 3, reason: 'deregistered' }]);
    // A listener of the feed itself that throws (a bug of the SDK's) does not stop the others.
    const unsubscribe = feed.subscribe({ onChanges: () => { throw new Error('a bug in a feed listener'); }, onStale: () => undefined });
    const v3 = new ServiceView(feed, {}, { dispatcher, onClose: () => undefined });
    emit([{ type: 'delete', instance: inst('b'), previous: inst('b'), revision: 4, reason: 'deregistered' }]);
    unsubscribe();
    assert.deepEqual(v3.instances().map((i) => i.id), []);
  } finally {
    process.nextTick = nextTick;
  }
  assert.deepEqual(heard, ['added a', 'added b', 'removed a', 'removed b'], 'the second listener heard every change');
  assert.deepEqual(v2.instances().map((i) => i.id), [], 'the other view dropped both');
  // In the order the feed's listeners subscribed: v1, v2, the bad one, v3.
  assert.deepEqual(thrown.map((e) => (e as Error).message), ['a bug in a listener', 'a bug in a listener', 'a bug in a feed listener']);
  v1.close();
  v2.close();
});

test('preferZone with a balancer object is refused, naming the factory form; a factory works', () => {
  class Mine extends RoundRobinBalancer {}
  assert.throws(() => view([inst('a')], { preferZone: 'eu-1', balancer: new Mine() }), (err: Error) => err instanceof RangeError && /\(\) => new Mine\(\)/.test(err.message));
  const v = view([inst('a', { zone: 'eu-1' }), inst('b', { zone: 'eu-2' })], { preferZone: 'eu-1', balancer: () => new Mine() });
  assert.equal(v.balancerName, 'zone-aware(round-robin)');
  assert.equal(v.pick()?.id, 'a');
  v.close();
});

test('time a call waited in the bulkhead does not count against the instance when its deadline cuts the attempt short', async () => {
  const v = view([inst('a')], { circuitBreaker: { failureThreshold: 2, cooldownMs: 5_000 }, bulkhead: { maxConcurrent: 1, maxQueued: 10 }, timeoutMs: 200 });
  // Answers in 150 ms, within the 200 ms deadline; queued behind one another, the later
  // calls run out of time in the instance's hands (about 50 and 10 ms of it).
  const healthy = (_: Instance, { signal }: { signal: AbortSignal }): Promise<string> =>
    new Promise((resolve, reject) => {
      const t = setTimeout(() => resolve('ok'), 150);
      signal.addEventListener('abort', () => {
        clearTimeout(t);
        reject(signal.reason);
      });
    });
  const out: Promise<string>[] = [];
  for (let k = 0; k < 3; k++) {
    out.push(v.call(healthy).then((r) => r, (e: Error) => e.name));
    await sleep(5);
  }
  const results = await Promise.all(out);
  assert.equal(results[0], 'ok');
  assert.deepEqual(results, ['ok', 'TimeoutError', 'TimeoutError']);
  assert.equal(v.circuitState('a'), 'closed', 'the instance is not blamed for the queue');
  // An instance that takes the whole deadline is blamed: two such calls open its circuit.
  const hung = (_: Instance, { signal }: { signal: AbortSignal }): Promise<string> => new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason)));
  await assert.rejects(v.call(hung), TimeoutError);
  await assert.rejects(v.call(hung), TimeoutError);
  assert.equal(v.circuitState('a'), 'open');
  v.close();
});
