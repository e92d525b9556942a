// Goal: tracing costs nothing when off (no SDK registered, no hooks in the app) and, when
// an OTLP endpoint is configured, exports a server span per API call under the caller's
// traceparent, with a storage.append child, and flushes on shutdown.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { call, startNode } from '../helpers.js';
import { spawnAgent } from '../integration/process.js';
import { startTracing, tracingEnabled, withSpan } from '../../src/telemetry/index.js';
import { otlpSpans, startReceiver } from './receivers.js';

const OTEL_GLOBAL = Symbol.for('opentelemetry.js.api.1');
const REGISTER = '/v1/services/:service/instances/:instanceId';

/** The app's own request hooks, read from Fastify's hook table. */
function hookCounts(app: FastifyInstance): Record<string, number> {
  const sym = Object.getOwnPropertySymbols(app).find((s) => s.description === 'fastify.hooks');
  assert.ok(sym, 'fastify keeps its hooks under the fastify.hooks symbol');
  const hooks = (app as unknown as Record<symbol, Record<string, unknown[]>>)[sym] as Record<string, unknown[]>;
  return { onRequest: hooks.onRequest!.length, preHandler: hooks.preHandler!.length, onResponse: hooks.onResponse!.length, onRequestAbort: hooks.onRequestAbort!.length };
}

test('off: no SDK registered, no hooks installed, withSpan is the function itself; on: four hooks', async () => {
  const off = await startNode();
  const receiver = await startReceiver();
  try {
    assert.equal((await call(off.url, 'PUT', '/v1/services/s/instances/a', { address: '10.0.0.1', port: 1 })).status, 200);
    assert.equal((globalThis as Record<symbol, unknown>)[OTEL_GLOBAL], undefined, 'nothing registered with the OpenTelemetry API');
    assert.equal(tracingEnabled(), false);
    const marker = {};
    assert.equal(withSpan('x', undefined, () => marker), marker, 'the result itself, synchronously');
    const p = Promise.resolve(1);
    assert.equal(withSpan('x', undefined, () => p), p, 'the same promise, not a wrapper');
    const without = hookCounts(off.app);
    assert.equal(without.preHandler, 0, 'the app alone has no preHandler hook');
    assert.equal(without.onRequestAbort, 0, 'the app alone has no abort hook');

    const tracing = await startTracing({ endpoint: `${receiver.url}/v1/traces`, serviceName: 'switchboard', serviceVersion: 'test', nodeId: 'n1', logger: pino({ level: 'silent' }) });
    try {
      assert.ok((globalThis as Record<symbol, unknown>)[OTEL_GLOBAL], 'the SDK registered itself');
      assert.equal(tracingEnabled(), true);
      const bare = (await import('fastify')).default();
      await bare.ready();
      const before = hookCounts(bare);
      await bare.close();
      const app = (await import('fastify')).default();
      tracing.instrument(app);
      await app.ready();
      const after = hookCounts(app);
      for (const k of Object.keys(before)) assert.equal(after[k], before[k]! + 1, `one ${k} hook when on`);
      await app.close();
      // The app built without tracing still has none of them.
      assert.deepEqual(hookCounts(off.app), without);

      // withSpan: nested spans are parent and child; a rejection marks the span failed
      // and is passed on unchanged.
      const boom = new Error('etcd is gone');
      const got = await withSpan('peer.replicate', { 'switchboard.peer': 'n2' }, async () => {
        await assert.rejects(withSpan('etcd.txn', undefined, async () => Promise.reject(boom)), (e) => e === boom);
        return 42;
      });
      assert.equal(got, 42);
    } finally {
      await tracing.shutdown();
    }
    assert.equal(tracingEnabled(), false, 'off again after shutdown');
    const spans = otlpSpans(receiver.received);
    const outer = spans.find((x) => x.name === 'peer.replicate');
    const inner = spans.find((x) => x.name === 'etcd.txn');
    assert.ok(outer && inner, `exported on shutdown; got ${JSON.stringify(spans.map((x) => x.name))}`);
    assert.equal(inner.parentSpanId, outer.spanId);
    assert.equal(inner.traceId, outer.traceId);
    assert.equal(outer.attributes['switchboard.peer'], 'n2');
    assert.equal(inner.status.code, 2, 'STATUS_CODE_ERROR');
    assert.notEqual(outer.status.code, 2);
  } finally {
    await off.close();
    await receiver.close();
  }
});

test('on: the agent exports a server span per call under the incoming traceparent, flushed on SIGTERM', async () => {
  const receiver = await startReceiver();
  const agent = await spawnAgent(['--dev', '--node-id', 'trace-node', '--otlp-endpoint', `${receiver.url}/v1/traces`]);
  try {
    const traceId = randomBytes(16).toString('hex');
    const parentId = randomBytes(8).toString('hex');
    const traceparent = `00-${traceId}-${parentId}-01`;
    assert.equal((await call(agent.url, 'PUT', '/v1/services/orders/instances/o1', { address: '10.0.0.1', port: 8080 }, { traceparent })).status, 200);
    assert.equal((await call(agent.url, 'GET', '/v1/services/missing/instances/x', undefined, { traceparent })).status, 404);
    // A session WebSocket: its span ends when the connection does.
    const { WebSocket } = await import('ws');
    const ws = new WebSocket(agent.url.replace('http', 'ws') + '/v1/session', { headers: { traceparent } });
    await new Promise<void>((resolve, reject) => ws.once('open', () => resolve()).once('error', reject));
    // Requests over the session: a server span each, under the trace context the message carries.
    const answers: { id: number; type: string }[] = [];
    ws.on('message', (d) => answers.push(JSON.parse(d.toString())));
    ws.send(JSON.stringify({ type: 'register', id: 1, service: 'orders', instanceId: 'o2', instance: { address: '10.0.0.2', port: 8080 }, traceparent }));
    ws.send(JSON.stringify({ type: 'deregister', id: 2, service: 'orders', instanceId: 'nobody', traceparent }));
    const t0 = Date.now();
    while (answers.length < 2 && Date.now() - t0 < 3_000) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(answers.map((a) => [a.id, a.type]).sort(), [[1, 'result'], [2, 'error']]);
    ws.close();
    await new Promise<void>((resolve) => ws.once('close', () => resolve()));
    await new Promise((r) => setTimeout(r, 100));
    agent.child.kill('SIGTERM');
    assert.equal(await agent.exited, 0);
    // Shutdown exported what was still buffered.
    const spans = otlpSpans(receiver.received);
    assert.ok(receiver.received.every((r) => r.path === '/v1/traces' && /application\/json/.test(String(r.headers['content-type']))));
    const server = spans.filter((s) => s.traceId === traceId && s.parentSpanId === parentId);
    const put = server.find((s) => s.name === `PUT ${REGISTER}`);
    assert.ok(put, `a span named after the route; got ${JSON.stringify(spans.map((s) => s.name))}`);
    assert.equal(put.kind, 2, 'SPAN_KIND_SERVER');
    assert.equal(put.attributes['http.route'], REGISTER);
    assert.equal(put.attributes['http.request.method'], 'PUT');
    assert.equal(put.attributes['http.response.status_code'], 200);
    assert.equal(put.attributes['url.path'], '/v1/services/orders/instances/o1');
    assert.equal(put.resource['service.name'], 'switchboard');
    assert.equal(put.resource['service.instance.id'], 'trace-node');
    const append = spans.find((s) => s.name === 'storage.append' && s.parentSpanId === put.spanId);
    assert.ok(append, 'the append of the write is a child of its request span');
    assert.equal(append.traceId, traceId);
    const get = server.find((s) => s.name === 'GET /v1/services/:service/instances/:instanceId');
    assert.ok(get);
    assert.equal(get.attributes['http.response.status_code'], 404);
    assert.notEqual(get.status.code, 2, 'a 4xx is not a server error');
    const session = server.find((s) => s.name === 'GET /v1/session');
    assert.ok(session, `the session's span ended and was exported; got ${JSON.stringify(server.map((s) => s.name))}`);
    assert.equal(session.attributes['http.response.status_code'], 101);
    const sessionPut = server.find((s) => s.name === 'SESSION /v1/session#register');
    assert.ok(sessionPut, `a span for the register request; got ${JSON.stringify(server.map((s) => s.name))}`);
    assert.equal(sessionPut.kind, 2, 'SPAN_KIND_SERVER');
    assert.equal(sessionPut.attributes['rpc.method'], 'register');
    assert.ok(spans.some((s) => s.name === 'storage.append' && s.parentSpanId === sessionPut.spanId), 'its append is its child');
    const refused = server.find((s) => s.name === 'SESSION /v1/session#deregister');
    assert.ok(refused);
    assert.equal(refused.attributes['error.type'], 'INSTANCE_NOT_FOUND');
    assert.notEqual(refused.status.code, 2, 'a refusal is not a server error');
  } finally {
    agent.child.kill('SIGKILL');
    await receiver.close();
  }
});
