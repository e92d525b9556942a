// Goal: consumers keep working through provider and registry failures, with real processes
// (registry agent and providers are child processes, killed for real): calls are spread by
// the chosen strategy; a SIGKILLed provider stops being picked and in-flight calls succeed
// elsewhere; a SIGTERMed provider drains; a registry killed and restarted with its data dir
// is recovered from by both sides without user code; a consumer that starts while the
// registry is down serves its snapshot; a failover to a node of another epoch relists and
// the view is never empty on the way.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type ServiceView } from '../../src/index.js';
import { rest, sleep, spawnAgent, spawnProvider, waitFor, type ProviderProcess } from '../helpers.js';

async function idOf(view: ServiceView, path = '/'): Promise<string> {
  const res = await view.fetch(path);
  assert.equal(res.status, 200);
  return ((await res.json()) as { id: string }).id;
}

async function tally(view: ServiceView, n: number): Promise<Map<string, number>> {
  const m = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const id = await idOf(view);
    m.set(id, (m.get(id) ?? 0) + 1);
  }
  return m;
}

test('calls are spread by the chosen strategy: round-robin evenly, weighted 3:1', async () => {
  const agent = await spawnAgent(['--dev']);
  const providers: ProviderProcess[] = [];
  const client = await connect({ endpoints: [agent.url] });
  try {
    providers.push(await spawnProvider({ SB_ENDPOINTS: agent.url, SB_SERVICE: 'orders', SB_ID: 'p1', SB_WEIGHT: '300' }));
    providers.push(await spawnProvider({ SB_ENDPOINTS: agent.url, SB_SERVICE: 'orders', SB_ID: 'p2', SB_WEIGHT: '100' }));
    const rr = client.service('orders', { balancer: 'round-robin' });
    await waitFor(() => rr.instances().length === 2, 5_000, 'two instances');
    assert.deepEqual([...(await tally(rr, 100)).entries()].sort(), [['p1', 50], ['p2', 50]]);
    const weighted = client.service('orders', { balancer: 'weighted' });
    assert.deepEqual([...(await tally(weighted, 100)).entries()].sort(), [['p1', 75], ['p2', 25]]);
    const viaUrl = await client.fetch('http://orders/');
    assert.equal(viaUrl.status, 200);
    await viaUrl.text();
  } finally {
    await client.close();
    await Promise.all(providers.map((p) => p.kill()));
    await agent.kill();
  }
});

test('a provider killed with SIGKILL: calls in flight are retried elsewhere, and it is no longer picked', async () => {
  const agent = await spawnAgent(['--dev']);
  const client = await connect({ endpoints: [agent.url] });
  const p1 = await spawnProvider({ SB_ENDPOINTS: agent.url, SB_SERVICE: 'pay', SB_ID: 'k1' });
  const p2 = await spawnProvider({ SB_ENDPOINTS: agent.url, SB_SERVICE: 'pay', SB_ID: 'k2' });
  try {
    const view = client.service('pay', { balancer: 'round-robin' });
    await waitFor(() => view.instances().length === 2, 5_000, 'two instances');
    let stop = false;
    let ok = 0;
    const failures: unknown[] = [];
    const worker = async () => {
      while (!stop) {
        try {
          await idOf(view, '/?delay=30');
          ok++;
        } catch (err) {
          failures.push(err);
        }
      }
    };
    const workers = Array.from({ length: 8 }, worker);
    // Calls are counted, not timed: a loaded machine may make few calls per 100 ms, so
    // the test waits (bounded) for enough calls before the kill and after the removal.
    await waitFor(() => ok >= 30 || failures.length > 0, 10_000, '30 calls before the kill');
    await p1.kill('SIGKILL');
    await waitFor(() => view.instances().every((i) => i.id !== 'k1'), 5_000, 'k1 to leave the view');
    const afterRemoval = ok;
    await waitFor(() => ok >= afterRemoval + 30 || failures.length > 0, 10_000, '30 calls after the removal');
    stop = true;
    await Promise.all(workers);
    assert.deepEqual(failures, [], 'every call succeeded');
    assert.ok(ok > 50, `calls made: ${ok}`);
    for (let i = 0; i < 20; i++) assert.equal(view.pick()?.id, 'k2');
  } finally {
    await client.close();
    await p1.kill();
    await p2.kill();
    await agent.kill();
  }
});

test('a provider stopped with SIGTERM drains: draining first (not picked), then deregistered, exit 0', async () => {
  const agent = await spawnAgent(['--dev']);
  const client = await connect({ endpoints: [agent.url] });
  const p1 = await spawnProvider({ SB_ENDPOINTS: agent.url, SB_SERVICE: 'cart', SB_ID: 'c1', SB_DRAIN_MS: '600' });
  const p2 = await spawnProvider({ SB_ENDPOINTS: agent.url, SB_SERVICE: 'cart', SB_ID: 'c2' });
  try {
    const view = client.service('cart');
    await waitFor(() => view.instances().length === 2, 5_000, 'two instances');
    const statuses: string[] = [];
    view.on('change', (c) => {
      if (c.type !== 'resync' && c.instance.id === 'c1') statuses.push(c.type === 'removed' ? 'removed' : c.instance.status);
    });
    p1.child.kill('SIGTERM');
    await waitFor(() => statuses.includes('draining'), 3_000, 'c1 draining');
    for (let i = 0; i < 20; i++) assert.equal(view.pick()?.id, 'c2');
    assert.equal(await p1.exited, 0);
    await waitFor(() => statuses.includes('removed'), 3_000, 'c1 removed');
    assert.deepEqual(statuses, ['draining', 'removed']);
  } finally {
    await client.close();
    await p1.kill();
    await p2.kill();
    await agent.kill();
  }
});

test('the registry is killed and restarted with its data dir: provider and consumer recover by themselves', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sb-client-'));
  // Port 0 for the first start (a port picked as free could be taken before the agent binds it).
  let agent = await spawnAgent(['--data-dir', join(dir, 'data')]);
  const port = agent.port;
  const client = await connect({ endpoints: [agent.url], backoff: { initialMs: 20, maxMs: 200 } });
  const p1 = await spawnProvider({ SB_ENDPOINTS: agent.url, SB_SERVICE: 'stock', SB_ID: 's1' });
  let p2: ProviderProcess | undefined;
  try {
    const view = client.service('stock');
    await waitFor(() => view.instances().length === 1, 5_000, 'the instance');
    const events: string[] = [];
    view.on('stale', () => events.push('stale'));
    view.on('fresh', () => events.push('fresh'));
    await agent.kill('SIGKILL');
    await waitFor(() => view.stale, 5_000, 'the view to say it is stale');
    assert.equal(view.instances().length, 1, 'the last known view is kept');
    assert.equal(await idOf(view), 's1', 'and calls still reach the provider');
    agent = await spawnAgent(['--data-dir', join(dir, 'data')], { port });
    await waitFor(() => !view.stale, 10_000, 'the view to be fresh again');
    assert.deepEqual(events, ['stale', 'fresh']);
    // The provider resumed its lease on the restarted node (same epoch: nothing to redo).
    await p1.waitLine(/^LEASE resumed/, 10_000);
    p2 = await spawnProvider({ SB_ENDPOINTS: agent.url, SB_SERVICE: 'stock', SB_ID: 's2' });
    await waitFor(() => view.instances().length === 2, 5_000, 'the watch to deliver a registration made after the restart');
    await sleep(3_500); // longer than the providers' lease TTL (3 s): their leases are alive
    assert.equal((await rest(agent.url, 'GET', '/v1/services/stock')).body.instances.length, 2);
  } finally {
    await client.close();
    await p1.kill();
    await p2?.kill();
    await agent.kill();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a consumer started while the registry is down serves its snapshot (cacheDir)', async () => {
  const cacheDir = mkdtempSync(join(tmpdir(), 'sb-cache-'));
  const agent = await spawnAgent(['--dev']);
  const p1 = await spawnProvider({ SB_ENDPOINTS: agent.url, SB_SERVICE: 'search', SB_ID: 'q1' });
  try {
    const first = await connect({ endpoints: [agent.url], cacheDir });
    const v1 = first.service('search');
    await waitFor(() => v1.instances().length === 1, 5_000, 'the instance');
    await first.close(); // writes the last snapshot
    await agent.kill('SIGKILL');

    const second = await connect({ endpoints: [agent.url], cacheDir, backoff: { initialMs: 20, maxMs: 100 } });
    const v2 = second.service('search');
    const staleEvent = new Promise((r) => v2.once('stale', r));
    await v2.ready({ timeoutMs: 2_000 });
    assert.deepEqual(v2.instances().map((i) => i.id), ['q1']);
    await staleEvent;
    assert.equal(v2.stale, true);
    assert.equal(await idOf(v2), 'q1');
    await second.close();

    const empty = await connect({ endpoints: [agent.url], cacheDir: join(cacheDir, 'none') });
    await assert.rejects(empty.service('search').ready({ timeoutMs: 300 }), (e: unknown) => (e as { code?: string }).code === 'REGISTRY_UNAVAILABLE');
    await empty.close();
  } finally {
    await p1.kill();
    await agent.kill();
    rmSync(cacheDir, { recursive: true, force: true });
  }
});

test('the consumer fails over to a node of another epoch: it relists, and its view is never empty', async () => {
  const a = await spawnAgent(['--dev']);
  const b = await spawnAgent(['--dev']);
  const endpoints = `${a.url},${b.url}`;
  const p1 = await spawnProvider({ SB_ENDPOINTS: endpoints, SB_SERVICE: 'mail', SB_ID: 'm1' });
  const client = await connect({ endpoints: [a.url, b.url], backoff: { initialMs: 20, maxMs: 200 } });
  try {
    const view = client.service('mail');
    await waitFor(() => view.instances().length === 1, 5_000, 'the instance');
    let emptied = false;
    view.on('change', () => (emptied ||= view.instances().length === 0));
    await a.kill('SIGKILL');
    await p1.waitLine(/^LEASE new \S+/, 10_000);
    await waitFor(async () => (await rest(b.url, 'GET', '/v1/services/mail')).body.instances.length === 1, 10_000, 'm1 on b');
    // The view now follows b: a change made on b reaches it.
    await rest(b.url, 'PUT', '/v1/services/mail/instances/m1/status', { status: 'out_of_service' });
    await waitFor(() => view.instances()[0]?.status === 'out_of_service', 10_000, 'the view to follow b');
    assert.equal(emptied, false, 'the view was never empty');
    assert.equal(view.stale, false);
  } finally {
    await client.close();
    await p1.kill();
    await a.kill();
    await b.kill();
  }
});

test('the registry restarts without its data (new epoch, empty): the view holds its instances until the provider is back', async () => {
  let agent = await spawnAgent(['--dev']);
  const port = agent.port;
  const p1 = await spawnProvider({ SB_ENDPOINTS: agent.url, SB_SERVICE: 'news', SB_ID: 'n1' });
  const client = await connect({ endpoints: [agent.url], backoff: { initialMs: 20, maxMs: 200 } });
  try {
    const view = client.service('news');
    await waitFor(() => view.instances().length === 1, 5_000, 'the instance');
    let emptied = false;
    view.on('change', () => (emptied ||= view.instances().length === 0));
    await agent.kill('SIGKILL');
    agent = await spawnAgent(['--dev'], { port });
    // The provider finds its lease unknown there, opens a new one and registers again.
    await p1.waitLine(/^REREGISTERED 1/, 10_000);
    await waitFor(async () => (await rest(agent.url, 'GET', '/v1/services/news')).body.instances.length === 1, 5_000, 'n1 registered again');
    await waitFor(() => !view.stale && view.instances()[0]?.leaseId !== null, 10_000, 'the view to follow the new epoch');
    assert.equal(emptied, false, 'the view was never empty');
    assert.equal(await idOf(view), 'n1');
  } finally {
    await client.close();
    await p1.kill();
    await agent.kill();
  }
});
