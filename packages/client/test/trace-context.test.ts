// Goal: with an OpenTelemetry SDK in the application, the SDK's requests to the registry
// and its fetches to services carry the active span as a W3C traceparent; without an
// active span nothing is added, and a traceparent the caller set is kept. A registry
// started with --otlp-endpoint makes its server span a child of the application's span.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { trace } from '@opentelemetry/api';
import { InMemorySpanExporter, NodeTracerProvider, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-node';
import { connect } from '../src/index.js';
import { Endpoints, RegistryHttp } from '../src/registry-http.js';
import { traceHeaders } from '../src/trace-context.js';
import { rest, spawnAgent, waitFor } from './helpers.js';

test('traceparent is injected from the active span into registry calls and service fetches', async () => {
  // Without an SDK registered, there is nothing to inject.
  assert.deepEqual(traceHeaders(), {});
  const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(new InMemorySpanExporter())] });
  provider.register();
  const tracer = trace.getTracer('test');

  const seen: IncomingHttpHeaders[] = [];
  const service = createServer((req, res) => {
    seen.push(req.headers);
    res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
  });
  await new Promise<void>((r) => service.listen(0, '127.0.0.1', r));
  const port = (service.address() as AddressInfo).port;
  const exported: any[] = [];
  const collector = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      exported.push(JSON.parse(body));
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((r) => collector.listen(0, '127.0.0.1', r));
  const collectorUrl = `http://127.0.0.1:${(collector.address() as AddressInfo).port}/v1/traces`;
  const agent = await spawnAgent(['--dev', '--otlp-endpoint', collectorUrl]);
  const registry = new RegistryHttp(new Endpoints([agent.url]));
  let appSpan = { traceId: '', spanId: '' };
  const client = await connect({ endpoints: [agent.url] });
  const http = new RegistryHttp(new Endpoints([`http://127.0.0.1:${port}`]));
  try {
    assert.equal((await rest(agent.url, 'PUT', '/v1/services/traced/instances/t1', { address: '127.0.0.1', port })).status, 200);
    const view = client.service('traced');
    await waitFor(() => view.instances().length === 1, 5_000, 'the instance in the view');

    // No active span: no header.
    await (await view.fetch('/plain')).text();
    await http.call(`http://127.0.0.1:${port}`, { method: 'GET', path: '/v1/status' });
    assert.equal(seen.length, 2);
    assert.ok(seen.every((h) => h.traceparent === undefined));

    await tracer.startActiveSpan('checkout', async (span) => {
      const { traceId, spanId } = span.spanContext();
      const expected = `00-${traceId}-${spanId}-01`;
      await (await view.fetch('/traced', { headers: { accept: 'application/json' } })).text();
      assert.equal(seen.at(-1)!.traceparent, expected, 'view.fetch carries the active span');
      assert.equal(seen.at(-1)!.accept, 'application/json', "the caller's headers are kept");
      await http.call(`http://127.0.0.1:${port}`, { method: 'GET', path: '/v1/status' });
      assert.equal(seen.at(-1)!.traceparent, expected, 'registry calls carry the active span');
      const own = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
      await (await view.fetch('/own', { headers: { traceparent: own } })).text();
      assert.equal(seen.at(-1)!.traceparent, own, 'a traceparent the caller set is not replaced');
      assert.equal((await registry.any({ method: 'GET', path: '/v1/services/traced' })).status, 200);
      // A registration goes over the session: the request message carries the context.
      await client.register({ service: 'traced-reg', id: 'r1', address: '127.0.0.1', port: 1 });
      assert.equal(client.lease?.transport, 'websocket');
      appSpan = { traceId, spanId };
      span.end();
    });
    // The registry exports its spans when it stops (SIGTERM flushes them).
    await agent.kill('SIGTERM');
    const spans = exported.flatMap((e) => e.resourceSpans.flatMap((rs: any) => rs.scopeSpans.flatMap((ss: any) => ss.spans)));
    const server = spans.find((x: any) => x.name === 'GET /v1/services/:service' && x.traceId === appSpan.traceId);
    assert.ok(server, `the registry's span joined the application's trace; got ${JSON.stringify(spans.map((x: any) => [x.name, x.traceId]))}`);
    assert.equal(server.parentSpanId, appSpan.spanId);
    const registered = spans.find((x: any) => x.name === 'SESSION /v1/session#register' && x.traceId === appSpan.traceId);
    assert.ok(registered, `the registration over the session joined the application's trace; got ${JSON.stringify(spans.map((x: any) => [x.name, x.traceId]))}`);
    assert.equal(registered.parentSpanId, appSpan.spanId);
  } finally {
    await client.close();
    await agent.kill();
    await provider.shutdown();
    service.closeAllConnections();
    await new Promise<void>((r) => service.close(() => r()));
    collector.closeAllConnections();
    await new Promise<void>((r) => collector.close(() => r()));
  }
});
