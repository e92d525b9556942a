// Goal: consumer failure reports map errors to the registry's kinds carefully (a caller's
// own abort or a name-resolution error is never blamed on the instance), send at most one
// report per instance per interval, and never hold more than maxPending in flight.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TimeoutError } from '../src/errors.js';
import type { RegistryHttp, RequestSpec } from '../src/registry-http.js';
import { FailureReporter, failureKindOf } from '../src/reports.js';

const live = new AbortController().signal;
const withCode = (code: string) => Object.assign(new Error(code), { code });

test('error kinds: refused, connect timeout, timeout, reset, tls; caller aborts and DNS are not reported', () => {
  assert.equal(failureKindOf(withCode('ECONNREFUSED'), live)?.kind, 'connect_refused');
  assert.equal(failureKindOf(new TypeError('fetch failed', { cause: withCode('ECONNREFUSED') }), live)?.kind, 'connect_refused');
  assert.equal(failureKindOf(withCode('UND_ERR_CONNECT_TIMEOUT'), live)?.kind, 'connect_timeout');
  assert.equal(failureKindOf(withCode('UND_ERR_HEADERS_TIMEOUT'), live)?.kind, 'timeout');
  assert.equal(failureKindOf(withCode('ECONNRESET'), live)?.kind, 'reset');
  assert.equal(failureKindOf(withCode('UND_ERR_SOCKET'), live)?.kind, 'reset');
  assert.equal(failureKindOf(withCode('ERR_TLS_CERT_ALTNAME_INVALID'), live)?.kind, 'tls_error');
  assert.equal(failureKindOf(withCode('EPROTO'), live)?.kind, 'other');
  assert.equal(failureKindOf(withCode('ENOTFOUND'), live), undefined);
  assert.equal(failureKindOf(new Error('user code'), live), undefined);
  const timedOut = AbortSignal.abort(new TimeoutError('attempt', 100));
  assert.equal(failureKindOf(new Error('aborted'), timedOut)?.kind, 'timeout');
  const caller = new AbortController();
  caller.abort(new Error('navigated away'));
  assert.equal(failureKindOf(new Error('aborted'), caller.signal, caller.signal), undefined);
  assert.equal(failureKindOf(withCode('ECONNRESET'), live, caller.signal), undefined, 'after the caller aborted, nothing is blamed');
});

test('reporter: one report per instance per interval, bounded in flight, counted', async () => {
  let t = 1_000;
  const clock = { now: () => t };
  const sent: RequestSpec[] = [];
  const pending: (() => void)[] = [];
  const http = {
    any: (spec: RequestSpec) => {
      sent.push(spec);
      return new Promise((resolve) => pending.push(() => resolve({ status: 200, body: {}, headers: {}, endpoint: 'x' })));
    },
  } as unknown as RegistryHttp;
  const r = new FailureReporter(http, clock, { minIntervalMs: 5_000, maxPending: 2, reporterId: 'c-1' });
  r.report('default', 'orders', 'o1', 'http_5xx', 'HTTP 500');
  r.report('default', 'orders', 'o1', 'reset');
  assert.equal(sent.length, 1);
  assert.deepEqual(sent[0]?.body, { reporter: 'c-1', kind: 'http_5xx', detail: 'HTTP 500' });
  assert.equal(sent[0]?.path, '/v1/services/orders/instances/o1/reports');
  r.report('default', 'orders', 'o2', 'timeout');
  r.report('default', 'orders', 'o3', 'timeout'); // two in flight: dropped
  assert.deepEqual({ ...r.snapshot() }, { reporterId: 'c-1', sent: 0, failed: 0, dropped: 1, deduplicated: 1, pending: 2 });
  for (const p of pending.splice(0)) p();
  await new Promise((res) => setImmediate(res));
  assert.equal(r.snapshot().sent, 2);
  assert.equal(r.snapshot().pending, 0);
  t += 5_000;
  r.report('default', 'orders', 'o1', 'reset'); // interval over: reported again
  assert.equal(sent.length, 3);
  r.close();
  r.report('default', 'orders', 'o4', 'reset');
  assert.equal(sent.length, 3, 'nothing after close');
});
