// Goal: three ap nodes behind the real REST API (on real sockets, linked in-process) keep
// every existing route working: a write on one node is read on the others, watches on
// another node see it, a peer that becomes unreachable has its records flagged
// `unconfirmed` (an API extension) and confirmed again when it returns, an explicit
// deregistration anywhere removes the record everywhere, /v1/status shows the cluster,
// /readyz waits for the catch-up, and /metrics carries the replication metrics.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SseReader, call } from '../helpers.js';
import { LoopbackNet, eventually, startApNode, type ApTestNode } from './loopback.js';

async function cluster(): Promise<{ net: LoopbackNet; nodes: ApTestNode[]; close(): Promise<void> }> {
  const net = new LoopbackNet(['a', 'b', 'c']);
  const nodes = [await startApNode(net, 'a'), await startApNode(net, 'b'), await startApNode(net, 'c')];
  for (const n of nodes) await eventually(`${n.id} ready`, () => (n.engine.ready ? true : undefined));
  return { net, nodes, close: async () => { for (const n of nodes) await n.close(); } };
}

async function instanceOn(n: ApTestNode, service: string, id: string): Promise<any> {
  const r = await call(n.url, 'GET', `/v1/services/${service}/instances/${id}`);
  return r.status === 200 ? r.body : undefined;
}

test('a write on one node is read, watched and deregistered through the others', { timeout: 30_000 }, async () => {
  const { nodes, close } = await cluster();
  const [a, b, c] = nodes as [ApTestNode, ApTestNode, ApTestNode];
  try {
    const watch = await SseReader.open(`${c.url}/v1/watch?service=shop`);
    const lease = await call(a.url, 'POST', '/v1/leases', { ttlMs: 10_000 });
    assert.equal(lease.status, 201, JSON.stringify(lease.body));
    const put = await call(a.url, 'PUT', '/v1/services/shop/instances/s1', { address: '10.0.0.1', port: 8080, leaseId: lease.body.leaseId });
    assert.equal(put.status, 200, JSON.stringify(put.body));
    // Read-your-writes on the node written to.
    assert.equal((await instanceOn(a, 'shop', 's1')).owner, 'a');
    const onB = await eventually('s1 on b', () => instanceOn(b, 'shop', 's1'), 5_000);
    assert.equal(onB.owner, 'a');
    assert.equal(onB.leaseId, lease.body.leaseId);
    assert.equal(onB.unconfirmed, undefined);
    await watch.until(() => watch.events.some((e) => e.json.type === 'put' && e.json.instance.id === 's1'), 5_000, 'the put on c');
    // Leases are per node: a keep-alive sent to another node is told so, not that the
    // lease does not exist.
    const wrong = await call(b.url, 'PUT', `/v1/leases/${lease.body.leaseId}/keepalive`);
    assert.equal(wrong.status, 404);
    assert.equal(wrong.body.code, 'LEASE_NOT_FOUND');
    assert.match(wrong.body.detail, /is not held by this node \(b\): in ap mode a lease lives on the node that granted it/);
    assert.match(wrong.body.hint, /on the node that granted it/);
    assert.equal((await call(a.url, 'PUT', `/v1/leases/${lease.body.leaseId}/keepalive`)).status, 200);

    const del = await call(b.url, 'DELETE', '/v1/services/shop/instances/s1');
    assert.equal(del.status, 200, JSON.stringify(del.body));
    await eventually('s1 gone on a', async () => ((await instanceOn(a, 'shop', 's1')) === undefined ? true : undefined));
    await watch.until(() => watch.events.some((e) => e.json.type === 'delete' && e.json.instance.id === 's1'), 5_000, 'the delete on c');
    watch.close();
    // The history on a node that only learned the record names the owner's reasons.
    const hist = await call(c.url, 'GET', '/v1/services/shop/instances/s1/history');
    assert.equal(hist.status, 200);
    assert.deepEqual(hist.body.history.map((e: any) => e.reason), ['registered', 'deregistered']);

    const status = await call(b.url, 'GET', '/v1/status');
    assert.equal(status.body.mode, 'ap');
    assert.equal(status.body.cluster.ready, true);
    assert.deepEqual(status.body.cluster.members.map((m: any) => [m.id, m.self, m.reachable]), [['b', true, true], ['a', false, true], ['c', false, true]]);
    const metrics = await call(a.url, 'GET', '/metrics');
    assert.match(metrics.body, /switchboard_ap_replication_lag_seconds_count [1-9]/);
    assert.match(metrics.body, /switchboard_ap_peers_reachable 2/);
    assert.match(metrics.body, /switchboard_ap_batches_sent_total [1-9]/);
  } finally {
    await close();
  }
});

test('a peer whose link was up when the node started is not counted down in the status', { timeout: 30_000 }, async () => {
  const net = new LoopbackNet(['a', 'b']);
  const a = await startApNode(net, 'a');
  // b's link to a is up before b's engine starts (as a TCP link can be).
  const link = net.transport('b');
  await new Promise((r) => setImmediate(r));
  assert.equal(link.peers()[0]?.reachable, true);
  const b = await startApNode(net, 'b', { transport: link });
  try {
    await eventually('b ready', () => (b.engine.ready ? true : undefined));
    await new Promise((r) => setTimeout(r, 100));
    const sync = (await call(b.url, 'GET', '/v1/status')).body.cluster.peerSync as Record<string, { downMs: number | null }>;
    assert.equal(sync.a?.downMs, null, JSON.stringify(sync));
  } finally {
    await b.close();
    await a.close();
  }
});

test('records of an unreachable peer are flagged unconfirmed, then confirmed when it returns', { timeout: 30_000 }, async () => {
  const { net, nodes, close } = await cluster();
  const [a, b] = nodes as [ApTestNode, ApTestNode, ApTestNode];
  try {
    const lease = await call(a.url, 'POST', '/v1/leases', { ttlMs: 30_000 });
    await call(a.url, 'PUT', '/v1/services/pay/instances/p1', { address: '10.0.0.2', port: 80, leaseId: lease.body.leaseId });
    await call(a.url, 'PUT', '/v1/services/pay/instances/p2', { address: '10.0.0.3', port: 80 });
    await eventually('p1 on b', () => instanceOn(b, 'pay', 'p1'));
    await eventually('p2 on b', () => instanceOn(b, 'pay', 'p2'));
    net.setCut('a', 'b', true);
    net.setCut('a', 'c', true);
    const flagged = await eventually('p1 flagged on b', async () => {
      const i = await instanceOn(b, 'pay', 'p1');
      return i?.unconfirmed === true ? i : undefined;
    });
    assert.equal(flagged.owner, 'a');
    const status = await call(b.url, 'GET', '/v1/status');
    assert.equal(status.body.cluster.members.find((m: any) => m.id === 'a').reachable, false);
    // Past the grace the lease-bound record is hidden; the persistent one stays, flagged.
    await eventually('p1 hidden on b', async () => ((await instanceOn(b, 'pay', 'p1')) === undefined ? true : undefined), 5_000);
    assert.equal((await instanceOn(b, 'pay', 'p2')).unconfirmed, true);
    // Both sides keep taking writes.
    const w = await call(b.url, 'PUT', '/v1/services/pay/instances/p3', { address: '10.0.0.4', port: 80 });
    assert.equal(w.status, 200);
    net.setCut('a', 'b', false);
    net.setCut('a', 'c', false);
    const back = await eventually('p1 back on b', async () => {
      const i = await instanceOn(b, 'pay', 'p1');
      return i && i.unconfirmed === undefined ? i : undefined;
    });
    assert.equal(back.owner, 'a');
    await eventually('p3 on a', () => instanceOn(a, 'pay', 'p3'));
  } finally {
    await close();
  }
});

test('a node that cannot reach any peer is not ready until the catch-up times out', { timeout: 30_000 }, async () => {
  const net = new LoopbackNet(['a', 'b']);
  net.setCut('a', 'b', true);
  const a = await startApNode(net, 'a', { limits: { apCatchUpTimeoutMs: 1_000 } });
  try {
    const r = await call(a.url, 'GET', '/readyz');
    assert.equal(r.status, 503);
    assert.equal(r.body.code, 'NOT_READY');
    await eventually('ready alone', async () => ((await call(a.url, 'GET', '/readyz')).status === 200 ? true : undefined), 5_000);
    const status = await call(a.url, 'GET', '/v1/status');
    assert.match(status.body.cluster.readyReason, /no peer answered/);
  } finally {
    await a.close();
  }
});
