// Goal: consumers tell the registry about instances that fail them, and providers drain
// behind the registry's barrier, against a real agent process: an instance answering 500
// is reported by each consumer (at most once per window); one consumer alone changes
// nothing, two turn it `warning`; `reportFailures: false` sends nothing. drain() returns
// as soon as the watcher was sent `draining`, long before waitMs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { connect, type SwitchboardClient } from '../../src/index.js';
import { rest, spawnAgent, waitFor } from '../helpers.js';

async function failingServer(): Promise<{ port: number; hits: () => number; close(): Promise<void> }> {
  let hits = 0;
  const server = createServer((_req, res) => {
    hits++;
    res.writeHead(500, { 'content-type': 'application/json' }).end('{"error":"broken"}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    hits: () => hits,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

async function fetch500(client: SwitchboardClient): Promise<void> {
  const view = client.service('ledger');
  await waitFor(() => view.instances().length === 1, 5_000, 'the instance in the view');
  const res = await view.fetch('/', { retry: false });
  assert.equal(res.status, 500);
  await res.text();
}

test('an instance answering 500: one consumer reports it without effect, a second turns it warning; reports are deduplicated and can be turned off', { timeout: 60_000 }, async () => {
  const agent = await spawnAgent(['--dev']);
  const upstream = await failingServer();
  const provider = await connect({ endpoints: [agent.url], reportFailures: false });
  const a = await connect({ endpoints: [agent.url], reportFailures: { minIntervalMs: 60_000 } });
  const b = await connect({ endpoints: [agent.url] });
  const off = await connect({ endpoints: [agent.url], reportFailures: false });
  try {
    await provider.register({ service: 'ledger', id: 'l1', address: '127.0.0.1', port: upstream.port });
    const health = async () => (await rest(agent.url, 'GET', '/v1/services/ledger/instances/l1')).body.health as string;
    assert.equal(await health(), 'passing');

    assert.equal(off.failureReports, null);
    await fetch500(off);
    await fetch500(a);
    await waitFor(() => a.failureReports?.sent === 1, 5_000, 'the first report accepted');
    assert.notEqual(a.failureReports?.reporterId, b.failureReports?.reporterId);
    // Same consumer again within minIntervalMs: not sent again.
    await fetch500(a);
    assert.equal(a.failureReports?.deduplicated, 1);
    assert.equal(a.failureReports?.sent, 1);
    assert.equal(await health(), 'passing', 'one reporter alone changes nothing');

    await fetch500(b);
    await waitFor(() => b.failureReports?.sent === 1, 5_000, 'the second report accepted');
    await waitFor(async () => (await health()) === 'warning', 5_000, 'the instance at warning');
    const seen = a.service('ledger').instances().find((i) => i.id === 'l1');
    await waitFor(() => a.service('ledger').instances().find((i) => i.id === 'l1')?.health === 'warning', 5_000, `warning in the view (was ${seen?.health})`);
    assert.equal(upstream.hits(), 4);
    assert.equal(a.failureReports?.failed, 0);
    assert.equal(a.failureReports?.dropped, 0);
  } finally {
    await Promise.all([a.close(), b.close(), off.close(), provider.close()]);
    await upstream.close();
    await agent.kill();
  }
});

test('a connection refused is reported too, and never changes what the caller gets', { timeout: 60_000 }, async () => {
  const agent = await spawnAgent(['--dev']);
  const provider = await connect({ endpoints: [agent.url], reportFailures: false });
  const a = await connect({ endpoints: [agent.url] });
  try {
    const gone = await failingServer();
    const port = gone.port;
    await gone.close();
    await provider.register({ service: 'refused', id: 'r1', address: '127.0.0.1', port });
    const view = a.service('refused');
    await waitFor(() => view.instances().length === 1, 5_000, 'the instance in the view');
    await assert.rejects(view.fetch('/', { retry: false }), (err: Error) => err.name !== 'AssertionError');
    await waitFor(() => a.failureReports?.sent === 1, 5_000, 'the report accepted');
    assert.equal(a.failureReports?.failed, 0);
  } finally {
    await Promise.all([a.close(), provider.close()]);
    await agent.kill();
  }
});

test('drain() returns once the watcher was sent draining, well before waitMs, then deregisters', { timeout: 60_000 }, async () => {
  const agent = await spawnAgent(['--dev']);
  const provider = await connect({ endpoints: [agent.url] });
  const consumer = await connect({ endpoints: [agent.url] });
  try {
    await provider.register({ service: 'drainme', id: 'd1', address: '127.0.0.1', port: 9 });
    const view = consumer.service('drainme');
    await waitFor(() => view.instances().length === 1, 5_000, 'the instance in the view');
    let sawDraining: number | undefined;
    view.on('change', () => {
      if (sawDraining === undefined && view.instances().find((i) => i.id === 'd1')?.status === 'draining') sawDraining = Date.now();
    });
    const waitMs = 20_000;
    const t0 = Date.now();
    await provider.drain({ waitMs });
    const took = Date.now() - t0;
    assert.ok(sawDraining !== undefined, 'the watcher saw draining by the time drain() returned');
    assert.ok(took < waitMs / 2, `drain took ${took} ms, waitMs ${waitMs}`);
    await waitFor(() => view.instances().length === 0, 10_000, 'the instance deregistered');
  } finally {
    await Promise.all([consumer.close(), provider.close()]);
    await agent.kill();
  }
});

test('drain() on a registry without the drain endpoint (404) falls back to waiting waitMs', { timeout: 60_000 }, async () => {
  const agent = await spawnAgent(['--dev']);
  // An older registry: every request goes through to the agent except the drain barrier.
  let drainCalls = 0;
  const proxy = createServer((req, res) => {
    if (req.method === 'POST' && /\/drain(\?|$)/.test(req.url ?? '')) {
      drainCalls++;
      req.resume();
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"code":"NOT_FOUND","title":"Not found","status":404,"detail":"no route"}');
      return;
    }
    const up = request({ host: '127.0.0.1', port: agent.port, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
  const provider = await connect({ endpoints: [url], session: 'rest' });
  try {
    await provider.register({ service: 'olddrain', id: 'o1', address: '127.0.0.1', port: 9 });
    const waitMs = 1_500;
    const t0 = Date.now();
    await provider.drain({ waitMs });
    const took = Date.now() - t0;
    assert.equal(drainCalls, 1);
    assert.ok(took >= waitMs - 50, `drain took ${took} ms, expected about waitMs ${waitMs}`);
    const after = await rest(agent.url, 'GET', '/v1/services/olddrain/instances/o1');
    assert.equal(after.status, 404, 'deregistered after the wait');
  } finally {
    await provider.close();
    proxy.closeAllConnections();
    await new Promise<void>((r) => proxy.close(() => r()));
    await agent.kill();
  }
});
