// Goal: multi-node failover of the SDK against real registry processes. Each standalone
// agent has its own epoch, exactly like the nodes of an ap cluster, so these tests cover
// what a client of an ap cluster relies on: the node it uses is killed, and without any
// user code the provider opens a lease on another node and registers its instances again
// there (the write gap is measured), while a consumer's view keeps serving and relists
// from the new node. Nodes that answer 503 NOT_READY or 429 with Retry-After are left
// alone for as long as they ask.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { connect, type LeaseChange } from '../../src/index.js';
import { RegistryHttp, Endpoints } from '../../src/registry-http.js';
import { RateLimitedError, RegistryUnavailableError } from '../../src/errors.js';
import { rest, sleep, spawnAgent, waitFor, type Agent } from '../helpers.js';

const instancesOf = async (url: string, service: string) => (await rest(url, 'GET', `/v1/services/${service}`)).body.instances as { id: string; leaseId: string | null }[];

test('the node a provider uses is killed: its instances are registered on another node within the bound, and a view keeps serving and relists', async () => {
  const agents: Agent[] = await Promise.all([spawnAgent(['--dev']), spawnAgent(['--dev']), spawnAgent(['--dev'])]);
  const urls = agents.map((a) => a.url);
  // The comma-separated form of connect().
  const provider = await connect(urls.join(','), { leaseTtlMs: 3_000, backoff: { initialMs: 20, maxMs: 200 } });
  const consumer = await connect(urls, { backoff: { initialMs: 20, maxMs: 200 } });
  const leases: LeaseChange[] = [];
  provider.on('lease', (c: LeaseChange) => leases.push(c));
  try {
    await provider.register({ service: 'ledger', id: 'l1', address: '127.0.0.1', port: 9501 });
    await provider.register({ service: 'ledger', id: 'l2', address: '127.0.0.1', port: 9502 });
    const first = provider.lease!;
    const victim = agents.find((a) => a.url === first.endpoint)!;
    const view = consumer.service('ledger');
    await waitFor(() => view.instances().length === 2, 5_000, 'the view');
    let emptied = false;
    view.on('change', () => (emptied ||= view.instances().length === 0));

    const killedAt = performance.now();
    await victim.kill('SIGKILL');
    const others = agents.filter((a) => a !== victim);
    let gapMs = 0;
    await waitFor(async () => {
      for (const o of others) if ((await instancesOf(o.url, 'ledger').catch(() => [])).length === 2) return true;
      return false;
    }, 10_000, 'both instances on another node');
    gapMs = performance.now() - killedAt;
    console.log(`# failover: instances registered again on another node ${gapMs.toFixed(0)} ms after the kill`);
    // Target 0.5 s; the bound leaves room for a loaded machine.
    assert.ok(gapMs < 3_000, `re-registered after ${gapMs} ms`);
    const now = provider.lease!;
    assert.notEqual(now.endpoint, first.endpoint);
    assert.notEqual(now.epoch, first.epoch);
    assert.equal(leases.at(-1)?.kind, 'new', 'a new lease on a node of another epoch');

    // The view follows a live node: it relisted there (the new lease shows), and was never empty.
    await waitFor(() => view.instances().length === 2 && view.instances().every((i) => i.leaseId === now.leaseId), 10_000, 'the view relisted from a live node');
    assert.equal(emptied, false, 'the view was never empty');
    await waitFor(() => view.stale === false, 5_000, 'the view fresh');
  } finally {
    await provider.close();
    await consumer.close();
    await Promise.all(agents.map((a) => a.kill()));
  }
});

/** A node that refuses everything with `status` and Retry-After, counting the requests. */
async function refusingNode(status: 429 | 503, retryAfterSec: number): Promise<{ url: string; hits: number[]; close(): Promise<void> }> {
  const hits: number[] = [];
  const code = status === 429 ? 'RATE_LIMITED' : 'NOT_READY';
  const server: Server = createServer((req, res) => {
    hits.push(performance.now());
    req.resume();
    res.writeHead(status, { 'content-type': 'application/problem+json', 'retry-after': String(retryAfterSec) });
    res.end(JSON.stringify({ type: `urn:switchboard:error:${code}`, title: code, status, code, detail: 'busy' }));
  });
  server.on('upgrade', (_req, socket) => {
    hits.push(performance.now());
    socket.end(`HTTP/1.1 ${status} Busy\r\nretry-after: ${retryAfterSec}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    hits,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

test('a node answering 503 NOT_READY with Retry-After: the provider registers on another node and does not ask it again before the wait', async () => {
  const busy = await refusingNode(503, 3);
  const agent = await spawnAgent(['--dev']);
  const client = await connect([busy.url, agent.url], { leaseTtlMs: 3_000, backoff: { initialMs: 20, maxMs: 100 } });
  try {
    const t0 = performance.now();
    await client.register({ service: 'quota', id: 'q1', address: '127.0.0.1', port: 9601 });
    assert.ok(performance.now() - t0 < 3_000, 'did not wait for the busy node');
    assert.equal((await instancesOf(agent.url, 'quota')).length, 1);
    assert.equal(client.lease?.endpoint, agent.url);
    const view = client.service('quota');
    await waitFor(() => view.instances().length === 1, 5_000, 'the view from the healthy node');
    const firstHit = busy.hits[0]!;
    await sleep(1_000);
    assert.ok(busy.hits.every((h) => h - firstHit < 200), `the busy node was asked again within its Retry-After: ${busy.hits.map((h) => Math.round(h - firstHit)).join(',')}`);
  } finally {
    await client.close();
    await agent.kill();
    await busy.close();
  }
});

test('429 with Retry-After: requests go to the other node meanwhile, and with no other node the client waits the time asked', async () => {
  const busy = await refusingNode(429, 1);
  const agent = await spawnAgent(['--dev']);
  const endpoints = new Endpoints([busy.url, agent.url]);
  const http = new RegistryHttp(endpoints, { requestTimeoutMs: 3_000 });
  const alone = new RegistryHttp(new Endpoints([busy.url]), { requestTimeoutMs: 3_000 });
  try {
    // A 429 is the node's answer, not an outage: the first call surfaces it...
    await assert.rejects(http.any({ method: 'GET', path: '/v1/status' }), RateLimitedError);
    assert.equal(busy.hits.length, 1);
    // ...and until its Retry-After passes, calls go to the other node without asking it.
    for (let i = 0; i < 5; i++) assert.equal((await http.any({ method: 'GET', path: '/v1/status' })).endpoint, agent.url);
    assert.equal(busy.hits.length, 1);

    await assert.rejects(alone.any({ method: 'GET', path: '/v1/status' }), RateLimitedError);
    const t0 = performance.now();
    await assert.rejects(alone.any({ method: 'GET', path: '/v1/status' }), RateLimitedError);
    const waited = performance.now() - t0;
    assert.ok(waited >= 900, `asked again after ${waited} ms, before the 1 s Retry-After`);
    // A wait longer than the request may take is not waited: the call fails at once.
    const slow = new RegistryHttp(new Endpoints([busy.url]), { requestTimeoutMs: 200 });
    await assert.rejects(slow.any({ method: 'GET', path: '/v1/status' }), RateLimitedError);
    const t1 = performance.now();
    await assert.rejects(slow.any({ method: 'GET', path: '/v1/status' }), RegistryUnavailableError);
    assert.ok(performance.now() - t1 < 150, 'no wait beyond the request timeout');
    await slow.close();
  } finally {
    await http.close();
    await alone.close();
    await agent.kill();
    await busy.close();
  }
});

test('Endpoints: a cooling node goes last, the soonest usable first, and waitMs says how long until one may be asked', () => {
  let now = 0;
  const e = new Endpoints(['http://a:1', 'http://b:1', 'http://c:1', 'http://a:1/'], () => now);
  assert.deepEqual(e.list, ['http://a:1', 'http://b:1', 'http://c:1'], 'duplicates collapse');
  e.coolDown('http://a:1', 2_000);
  e.coolDown('http://b:1', 1_000);
  assert.deepEqual(e.order(), ['http://c:1', 'http://b:1', 'http://a:1']);
  assert.equal(e.waitMs(), 0);
  e.coolDown('http://c:1', 500);
  assert.equal(e.waitMs(), 500);
  now = 1_200;
  assert.deepEqual(e.order(), ['http://b:1', 'http://c:1', 'http://a:1']);
  assert.equal(e.waitMs(), 0);
  e.coolDown('http://c:1', 10 * 60_000);
  assert.equal(e.coolingMs('http://c:1'), 60_000, 'a Retry-After is capped at MAX_RETRY_AFTER_MS');
});

test('connect() takes one address, a comma-separated list, an array, options, or SWITCHBOARD_ADDR', async () => {
  const lists: string[][] = [];
  for (const c of [
    await connect('http://10.0.0.1:7700'),
    await connect('http://10.0.0.1:7700, http://10.0.0.2:7700/'),
    await connect(['http://10.0.0.1:7700', 'http://10.0.0.2:7700,http://10.0.0.3:7700'], { leaseTtlMs: 5_000 }),
    await connect({ endpoints: ['http://10.0.0.1:7700'] }),
  ]) {
    lists.push([...c.endpoints.list]);
    await c.close();
  }
  assert.deepEqual(lists, [
    ['http://10.0.0.1:7700'],
    ['http://10.0.0.1:7700', 'http://10.0.0.2:7700'],
    ['http://10.0.0.1:7700', 'http://10.0.0.2:7700', 'http://10.0.0.3:7700'],
    ['http://10.0.0.1:7700'],
  ]);
  const saved = process.env.SWITCHBOARD_ADDR;
  process.env.SWITCHBOARD_ADDR = 'http://10.0.0.7:7700,http://10.0.0.8:7700';
  try {
    const c = await connect();
    assert.deepEqual([...c.endpoints.list], ['http://10.0.0.7:7700', 'http://10.0.0.8:7700']);
    await c.close();
  } finally {
    if (saved === undefined) delete process.env.SWITCHBOARD_ADDR;
    else process.env.SWITCHBOARD_ADDR = saved;
  }
  await assert.rejects(connect(''), RangeError);
});
