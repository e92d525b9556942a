// Goal: the resilience state machines behave as documented under an injected clock: the
// retry budget caps retries at ratio * requests + a floor over a sliding window; the
// circuit breaker goes closed -> open -> half-open (one probe) -> closed or back to open
// with a doubled cool-down; the bulkhead bounds running and queued calls with a typed error;
// backoff waits stay within full-jitter bounds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Backoff } from '../src/backoff.js';
import { SwitchboardClient } from '../src/client.js';
import { BulkheadFullError } from '../src/errors.js';
import { Bulkhead, CircuitBreaker, RetryBudget } from '../src/resilience.js';

function fakeClock(start = 0) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

test('retry budget: ratio of requests plus a floor, over a sliding window', () => {
  const clock = fakeClock(1_000_000);
  const budget = new RetryBudget({ ratio: 0.2, minRetriesPerSecond: 0, windowMs: 10_000, clock });
  assert.equal(budget.tryRetry(), false, 'no requests, no floor: no retries');
  for (let i = 0; i < 100; i++) budget.recordRequest();
  let allowed = 0;
  while (budget.tryRetry()) allowed++;
  assert.equal(allowed, 20);
  clock.advance(5_000);
  assert.equal(budget.tryRetry(), false, 'still inside the window');
  clock.advance(5_001);
  for (let i = 0; i < 10; i++) budget.recordRequest();
  assert.equal(budget.available(), 2, 'the old requests and retries left the window');

  const floor = new RetryBudget({ ratio: 0.2, minRetriesPerSecond: 1, windowMs: 10_000, clock });
  let n = 0;
  while (floor.tryRetry()) n++;
  assert.equal(n, 10, 'the floor allows minRetriesPerSecond * window seconds');
});

test('circuit breaker: closed -> open -> half-open probe -> open (doubled) -> half-open -> closed', () => {
  const clock = fakeClock();
  const cb = new CircuitBreaker({ failureThreshold: 3, cooldownMs: 1_000, maxCooldownMs: 3_000, clock });
  assert.equal(cb.state, 'closed');
  cb.onFailure();
  cb.onFailure();
  cb.onSuccess(); // a success resets the consecutive count
  cb.onFailure();
  cb.onFailure();
  assert.equal(cb.state, 'closed');
  cb.onFailure();
  assert.equal(cb.state, 'open');
  assert.equal(cb.tryAcquire(), false);
  clock.advance(999);
  assert.equal(cb.canPass(), false);
  clock.advance(1);
  assert.equal(cb.state, 'half-open');
  assert.equal(cb.tryAcquire(), true, 'one probe');
  assert.equal(cb.tryAcquire(), false, 'only one probe at a time');
  cb.onFailure();
  assert.equal(cb.state, 'open');
  clock.advance(1_999);
  assert.equal(cb.state, 'open', 'the cool-down doubled to 2 s');
  clock.advance(1);
  assert.equal(cb.tryAcquire(), true);
  cb.onFailure();
  clock.advance(3_000);
  assert.equal(cb.state, 'half-open', 'capped at maxCooldownMs (3 s, not 4 s)');
  assert.equal(cb.tryAcquire(), true);
  cb.onIgnored(); // a cancelled probe frees its slot without a verdict
  assert.equal(cb.tryAcquire(), true);
  cb.onSuccess();
  assert.equal(cb.state, 'closed');
  for (let i = 0; i < 3; i++) cb.onFailure();
  clock.advance(1_000);
  assert.equal(cb.state, 'half-open', 'a success resets the cool-down to 1 s');
});

test('bulkhead: bounded concurrency, bounded FIFO queue, typed error when full, abort leaves the queue', async () => {
  const bh = new Bulkhead('orders', { maxConcurrent: 2, maxQueued: 2 });
  const r1 = await bh.acquire();
  const r2 = await bh.acquire();
  const order: number[] = [];
  const q3 = bh.acquire().then((r) => (order.push(3), r));
  const ac = new AbortController();
  const q4 = bh.acquire(ac.signal);
  await assert.rejects(bh.acquire(), (e: unknown) => e instanceof BulkheadFullError && e.code === 'BULKHEAD_FULL' && e.limit === 'maxQueued');
  ac.abort(new Error('gave up'));
  await assert.rejects(q4, /gave up/);
  assert.equal(bh.queued, 1);
  const q5 = bh.acquire().then((r) => (order.push(5), r));
  r1();
  r1(); // releasing twice frees one slot only
  const r3 = await q3;
  assert.equal(bh.active, 2);
  r2();
  const r5 = await q5;
  assert.deepEqual(order, [3, 5]);
  r3();
  r5();
  assert.equal(bh.active, 0);
});

test('backoff: full jitter within a doubling, capped ceiling', () => {
  const hi = new Backoff({ initialMs: 100, maxMs: 1_000 }, () => 0.999999);
  const waits = Array.from({ length: 6 }, () => hi.next());
  assert.deepEqual(waits, [99, 199, 399, 799, 999, 999]);
  const lo = new Backoff({ initialMs: 100, maxMs: 1_000 }, () => 0);
  assert.equal(lo.next(), 0);
  hi.reset();
  assert.equal(hi.ceilingMs(), 100);
  assert.throws(() => new Backoff({ initialMs: 0 }));
});

test('backoff: an option set to undefined takes its default; settings no backoff can follow are refused when a client is made', () => {
  const b = new Backoff({ initialMs: 50, maxMs: undefined, multiplier: undefined }, () => 0.999999);
  assert.deepEqual(Array.from({ length: 3 }, () => b.next()), [49, 99, 199], 'maxMs and multiplier are the defaults (10 s, 2)');
  assert.throws(() => new SwitchboardClient({ endpoints: ['http://127.0.0.1:9'], backoff: { initialMs: 500, maxMs: 100 } }), (err: Error) => err instanceof RangeError && /maxMs >= initialMs/.test(err.message) && /maxMs 100/.test(err.message));
});

test('circuit breaker: a verdict from a call admitted before the circuit opened does not decide the half-open state', () => {
  const clock = fakeClock();
  const cb = new CircuitBreaker({ failureThreshold: 1, cooldownMs: 1_000, clock });
  assert.equal(cb.tryAcquire(), true);
  const slowCall = cb.generation; // a call still running when the circuit opens
  cb.onFailure(cb.generation);
  assert.equal(cb.state, 'open');
  clock.advance(1_000);
  assert.equal(cb.tryAcquire(), true, 'the probe');
  const probe = cb.generation;
  cb.onSuccess(slowCall);
  assert.equal(cb.state, 'half-open', 'the late success of the old call does not close it');
  cb.onFailure(slowCall);
  assert.equal(cb.state, 'half-open', 'nor does its late failure open it again');
  cb.onIgnored(slowCall);
  assert.equal(cb.tryAcquire(), false, 'nor free the probe slot');
  cb.onSuccess(probe);
  assert.equal(cb.state, 'closed');
  // Without a generation (the documented simple use) every verdict counts, as before.
  cb.onFailure();
  assert.equal(cb.state, 'open');
});
