// Goal: three cp nodes over a real 3-member etcd behave as one registry: a write through
// one node is seen by a consistent read on another, a watch resumes on another node
// without gaps (etcd revisions, etcd's cluster id as epoch), leases are etcd leases
// (whole seconds, at least 2 s), and /v1/status and /metrics show the node's view of etcd;
// consistent reads go over etcd's JSON gateway, and over gRPC where it is not served or
// keeps failing where gRPC answers.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { SessionClient, SseReader, call, sleep, waitUntil } from '../helpers.js';
import { GatewayReader } from '../../src/engines/cp/gateway.js';
import { Store } from '../../src/engines/cp/store.js';
import { Etcd3 } from 'etcd3';
import { FaultProxy } from '../support/fault-proxy.js';
import { EtcdCluster } from './etcd-cluster.js';
import { freshPrefix, startCpNode, threeNodes as startThree, type CpNode } from './nodes.js';

let etcd: EtcdCluster;
before(async () => {
  etcd = await EtcdCluster.start(3);
});
after(async () => {
  await etcd?.close();
});

const threeNodes = (prefix?: string): Promise<CpNode[]> => startThree(etcd, prefix);

test('a registration through one node is seen by a consistent read on another', { timeout: 60_000 }, async () => {
  const nodes = await threeNodes();
  try {
    const [a, b, c] = nodes as [CpNode, CpNode, CpNode];
    for (let i = 0; i < 20; i++) {
      const w = await call(a.url, 'PUT', `/v1/services/pay/instances/i${i}`, { address: '10.0.0.1', port: 1000 + i });
      assert.equal(w.status, 200, JSON.stringify(w.body));
      const r = await call(i % 2 ? b.url : c.url, 'GET', '/v1/services/pay?consistent=true');
      assert.equal(r.status, 200);
      assert.ok(r.body.instances.some((x: { id: string }) => x.id === `i${i}`), `i${i} missing from a consistent read after its write`);
      assert.ok(r.body.revision >= w.body.revision);
      assert.equal(r.body.stale, undefined);
      const one = await call(i % 2 ? c.url : b.url, 'GET', `/v1/services/pay/instances/i${i}?consistent=true`);
      assert.equal(one.status, 200);
      assert.equal(one.body.modRevision, w.body.revision);
    }
    const list = await call(b.url, 'GET', '/v1/services?consistent=true');
    assert.deepEqual(list.body.services.map((s: { name: string; instances: number }) => [s.name, s.instances]), [['pay', 20]]);
    const d = await call(b.url, 'DELETE', '/v1/services/pay/instances/i3');
    assert.equal(d.status, 200);
    const r = await call(c.url, 'GET', '/v1/services/pay?consistent=true');
    assert.ok(!r.body.instances.some((x: { id: string }) => x.id === 'i3'));
    // The same answer everywhere, with etcd's cluster id as epoch.
    const s = await Promise.all(nodes.map((n) => call(n.url, 'GET', '/v1/status')));
    assert.equal(new Set(s.map((x) => x.body.epoch)).size, 1);
    assert.equal(s[0]?.body.mode, 'cp');
    const h = await call(c.url, 'GET', '/v1/services/pay/instances/i3/history');
    assert.equal(h.status, 200);
    assert.equal(h.body.history.at(-1).reason, 'deregistered');
    // Concurrent writes on one node share etcd transactions (nested, each with its guards).
    const before = (await call(a.url, 'GET', '/v1/status')).body.cluster.writeBatches;
    const burst = await Promise.all(Array.from({ length: 40 }, (_, i) => call(a.url, 'PUT', `/v1/services/burst/instances/b${i}`, { address: '10.0.2.1', port: 5000 + i })));
    assert.ok(burst.every((r) => r.status === 200), JSON.stringify(burst.find((r) => r.status !== 200)?.body));
    const after = (await call(a.url, 'GET', '/v1/status')).body.cluster.writeBatches;
    assert.equal(after.writes - before.writes, 40);
    // How many transactions depends on timing (a quick etcd may take each write before the
    // next arrives); the grouping itself is tested in batcher.test.ts against a slow etcd.
    console.log(`# 40 concurrent writes went to etcd in ${after.batches - before.batches} transactions`);
    const all = await call(c.url, 'GET', '/v1/services/burst?consistent=true');
    assert.equal(all.body.instances.length, 40);
    // A second registration that changes nothing is a no-op answering the same revision.
    const again = await call(a.url, 'PUT', '/v1/services/pay/instances/i0', { address: '10.0.0.1', port: 1000 });
    const first = await call(a.url, 'GET', '/v1/services/pay/instances/i0');
    assert.equal(again.body.revision, first.body.modRevision);
  } finally {
    await Promise.all(nodes.map((n) => n.close()));
  }
});

test('leases are etcd leases: whole seconds, at least 2 s, instances go with them', { timeout: 60_000 }, async () => {
  const nodes = await threeNodes();
  try {
    const [a, b, c] = nodes as [CpNode, CpNode, CpNode];
    const small = await call(a.url, 'POST', '/v1/leases', { ttlMs: 1000 });
    assert.equal(small.status, 201, JSON.stringify(small.body));
    assert.equal(small.body.ttlMs, 2000);
    const odd = await call(a.url, 'POST', '/v1/leases', { ttlMs: 4500 });
    assert.equal(odd.body.ttlMs, 5000);
    // Registered through another node than the one that granted the lease.
    const reg = await call(b.url, 'PUT', '/v1/services/web/instances/w1', { address: '10.0.0.2', port: 80, leaseId: small.body.leaseId });
    assert.equal(reg.status, 200, JSON.stringify(reg.body));
    const keep = await call(c.url, 'PUT', `/v1/leases/${small.body.leaseId}/keepalive`);
    assert.equal(keep.status, 200);
    assert.equal(keep.body.ttlMs, 2000);
    const watch = await SseReader.open(`${c.url}/v1/watch?service=web`);
    try {
      // No more keep-alives: etcd expires the lease and every node sees the delete.
      await watch.until(() => watch.events.some((e) => e.event === 'delete'), 15_000, 'lease expiry');
      const del = watch.events.find((e) => e.event === 'delete');
      assert.equal(del?.json.reason, 'lease_expired');
    } finally {
      watch.close();
    }
    const gone = await call(a.url, 'PUT', `/v1/leases/${small.body.leaseId}/keepalive`);
    assert.equal(gone.status, 404);
    assert.equal(gone.body.code, 'LEASE_NOT_FOUND');
    const late = await call(a.url, 'PUT', '/v1/services/web/instances/w2', { address: '10.0.0.2', port: 80, leaseId: small.body.leaseId });
    assert.equal(late.status, 404);
    // Revocation, through yet another node, reads lease_revoked.
    await call(a.url, 'PUT', '/v1/services/web/instances/w3', { address: '10.0.0.3', port: 80, leaseId: odd.body.leaseId });
    const rv = await call(b.url, 'DELETE', `/v1/leases/${odd.body.leaseId}`);
    assert.equal(rv.status, 200, JSON.stringify(rv.body));
    await call(c.url, 'GET', '/v1/services/web?consistent=true');
    const h = await call(c.url, 'GET', '/v1/services/web/instances/w3/history');
    assert.equal(h.body.history.at(-1).reason, 'lease_revoked');
  } finally {
    await Promise.all(nodes.map((n) => n.close()));
  }
});

test('a watch moved to another node resumes without gaps', { timeout: 60_000 }, async () => {
  const prefix = freshPrefix();
  const nodes = await threeNodes(prefix);
  try {
    const [a, b, c] = nodes as [CpNode, CpNode, CpNode];
    const w1 = await SseReader.open(`${a.url}/v1/watch?service=api`);
    for (let i = 0; i < 5; i++) await call(c.url, 'PUT', `/v1/services/api/instances/x${i}`, { address: '10.0.1.1', port: 2000 + i });
    await w1.count(5);
    const lastId = w1.events.at(-1)?.id as string;
    w1.close();
    // Written while no one watches.
    for (let i = 5; i < 10; i++) await call(c.url, 'PUT', `/v1/services/api/instances/x${i}`, { address: '10.0.1.1', port: 2000 + i });
    await call(a.url, 'DELETE', '/v1/services/api/instances/x0');
    const w2 = await SseReader.open(`${b.url}/v1/watch?service=api`, { 'last-event-id': lastId });
    try {
      await w2.count(6);
      assert.deepEqual(w2.events.map((e) => e.event), ['put', 'put', 'put', 'put', 'put', 'delete']);
      assert.deepEqual(w2.events.slice(0, 5).map((e) => e.json.instance.id), ['x5', 'x6', 'x7', 'x8', 'x9']);
      const revs = w2.events.map((e) => e.json.revision as number);
      assert.ok(revs[0] as number > Number(lastId.split(':')[1]));
      assert.deepEqual([...revs].sort((x, y) => x - y), revs);
      // A node started after all of it has the same history to resume from.
      const late = await startCpNode(etcd.endpoints, 'n4', prefix);
      try {
        const w3 = await SseReader.open(`${late.url}/v1/watch?service=api`, { 'last-event-id': lastId });
        try {
          await w3.count(6);
          assert.deepEqual(w3.events.map((e) => e.id ?? ''), w2.events.map((e) => e.id ?? ''));
          assert.deepEqual(w3.events.map((e) => e.data), w2.events.map((e) => e.data));
        } finally {
          w3.close();
        }
      } finally {
        await late.close();
      }
    } finally {
      w2.close();
    }
  } finally {
    await Promise.all(nodes.map((n) => n.close()));
  }
});

test('status and metrics show the view of etcd', { timeout: 60_000 }, async () => {
  const prefix = freshPrefix();
  const nodes = await threeNodes(prefix);
  try {
    const [a] = nodes as [CpNode, CpNode, CpNode];
    await call(a.url, 'PUT', '/v1/services/s/instances/one', { address: '10.0.0.1', port: 1 });
    assert.equal((await call(a.url, 'GET', '/v1/services/s?consistent=true')).status, 200);
    await sleep(700);
    const st = await call(a.url, 'GET', '/v1/status');
    // The quorum read of the consistent read went over etcd's JSON gateway (docs/cp.md).
    assert.equal(st.body.cluster.consistentReadsVia, 'json_gateway');
    const store = st.body.cluster.store;
    assert.equal(store.kind, 'etcd');
    assert.equal(store.reachable, true);
    assert.ok(store.revision > 0 && store.viewRevision >= store.revision - 5, JSON.stringify(store));
    assert.match(String(store.leader), /^[0-9a-f]+$/);
    assert.deepEqual(st.body.cluster.members.map((m: { id: string }) => m.id), ['n1', 'n2', 'n3']);
    const m = await fetch(`${a.url}/metrics`).then((r) => r.text());
    assert.match(m, /switchboard_etcd_round_trip_seconds_bucket\{.*method="txn"/);
    assert.match(m, /^switchboard_etcd_round_trip_seconds_count\{method="range_json",outcome="ok"\} [1-9]/m);
    assert.match(m, /^switchboard_etcd_reachable 1$/m);
    assert.match(m, /^switchboard_etcd_view_lag_revisions \d+$/m);
  } finally {
    await Promise.all(nodes.map((n) => n.close()));
  }
});

test('active health checks are split across live nodes and move when a node leaves', { timeout: 90_000 }, async () => {
  const server: Server = createServer((sock) => sock.end());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  const prefix = freshPrefix();
  const nodes = await Promise.all(['h1', 'h2', 'h3'].map((id) => startCpNode(etcd.endpoints, id, prefix, { activeChecks: true })));
  const N = 30;
  const scheduled = (list: CpNode[]): number[] => list.map((n) => n.engine.checkStats().scheduled);
  const until = async (pred: () => boolean, what: string, ms = 20_000): Promise<void> => {
    const end = Date.now() + ms;
    while (!pred()) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await sleep(100);
    }
  };
  try {
    for (let i = 0; i < N; i++) {
      const r = await call((nodes[i % 3] as CpNode).url, 'PUT', `/v1/services/checked/instances/c${i}`, { address: '127.0.0.1', port, checks: [{ id: 'tcp', type: 'tcp', interval: '500ms' }] });
      assert.equal(r.status, 200, JSON.stringify(r.body));
    }
    // Every check runs on exactly one node, and each node runs some.
    await until(() => scheduled(nodes).reduce((a, x) => a + x, 0) === N, `${N} checks scheduled once in all`);
    const split = scheduled(nodes);
    assert.ok(split.every((x) => x > 0), `split ${split.join('/')}`);
    // Results are written by the owners: all instances pass.
    await until(() => (nodes[0] as CpNode).engine.registry.service('default', 'checked')?.instances.size === N && [...((nodes[0] as CpNode).engine.registry.service('default', 'checked')?.instances.values() ?? [])].every((r) => r.instance.health === 'passing'), 'every instance passing');
    // A node leaves: the two others take its checks.
    await (nodes[0] as CpNode).close();
    const rest = nodes.slice(1);
    await until(() => scheduled(rest).reduce((a, x) => a + x, 0) === N, 'the checks of the node that left to move');
    assert.ok(scheduled(rest).every((x) => x > split[0]! / 4));
    // The checked service goes away: the remaining owners mark every instance critical.
    await new Promise((r) => server.close(r));
    await until(() => [...((rest[0] as CpNode).engine.registry.service('default', 'checked')?.instances.values() ?? [])].every((r) => r.instance.health === 'critical'), 'every instance critical', 30_000);
    const status = await call((rest[0] as CpNode).url, 'GET', '/v1/status');
    assert.equal(status.body.cluster.members.length, 2);
  } finally {
    server.close();
    await Promise.all(nodes.map((n) => n.close()));
  }
});

test('ttl checks: reports through any node restart the TTL; the owner turns a silent check critical', { timeout: 60_000 }, async () => {
  const nodes = await threeNodes();
  try {
    const [a, b, c] = nodes as [CpNode, CpNode, CpNode];
    const reg = await call(a.url, 'PUT', '/v1/services/beat/instances/b1', { address: '10.0.0.9', port: 9, checks: [{ id: 'hb', type: 'ttl', ttl: '2s' }] });
    assert.equal(reg.status, 200, JSON.stringify(reg.body));
    const health = async (): Promise<{ health: string; output: string }> => {
      const r = await call(c.url, 'GET', '/v1/services/beat?consistent=true');
      const i = r.body.instances[0];
      return { health: i.health, output: i.checks[0].output };
    };
    // Reports every 500 ms through two different nodes keep it passing past several TTLs.
    const until = Date.now() + 5000;
    let n = 0;
    while (Date.now() < until) {
      const r = await call(n++ % 2 ? a.url : b.url, 'PUT', '/v1/services/beat/instances/b1/checks/hb', { status: 'passing', output: 'alive' });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      await sleep(500);
    }
    assert.equal((await health()).health, 'passing');
    // Silence: the owner turns it critical after the TTL.
    const silent = Date.now();
    let h = await health();
    while (h.health !== 'critical' && Date.now() - silent < 10_000) {
      await sleep(200);
      h = await health();
    }
    assert.equal(h.health, 'critical');
    assert.equal(h.output, 'no report within 2s (ttl)');
    assert.ok(Date.now() - silent >= 1500, 'not before the TTL');
    // A persistent instance critical for its deregisterCriticalAfter is deregistered by the owner.
    await call(b.url, 'PUT', '/v1/services/beat/instances/gone', { address: '10.0.0.9', port: 10, checks: [{ id: 'hb', type: 'ttl', ttl: '1s', deregisterCriticalAfter: '2s' }] });
    const registered = Date.now();
    let left = true;
    while (left && Date.now() - registered < 15_000) {
      await sleep(250);
      left = (await call(c.url, 'GET', '/v1/services/beat?consistent=true')).body.instances.some((i: { id: string }) => i.id === 'gone');
    }
    assert.equal(left, false, 'deregistered after staying critical');
    assert.ok(Date.now() - registered >= 1500);
    const hist = await call(c.url, 'GET', '/v1/services/beat/instances/gone/history');
    assert.equal(hist.body.history.at(-1).reason, 'critical_timeout');
    const bad = await call(b.url, 'PUT', '/v1/services/beat/instances/b1/checks/nope', { status: 'passing' });
    assert.equal(bad.status, 404);
    assert.equal(bad.body.code, 'CHECK_NOT_FOUND');
  } finally {
    await Promise.all(nodes.map((n) => n.close()));
  }
});

test('consumer reports: two reporters warn an instance everywhere; the warning clears when they stop', { timeout: 60_000 }, async () => {
  const prefix = freshPrefix();
  const nodes = await Promise.all(['r1', 'r2'].map((id) => startCpNode(etcd.endpoints, id, prefix, { limits: { reportWindowMs: 1500 } })));
  try {
    const [a, b] = nodes as [CpNode, CpNode];
    await call(a.url, 'PUT', '/v1/services/flaky/instances/f1', { address: '10.0.0.7', port: 7 });
    const one = await call(a.url, 'POST', '/v1/services/flaky/instances/f1/reports', { reporter: 'c1', kind: 'timeout' });
    assert.equal(one.status, 200, JSON.stringify(one.body));
    assert.equal(one.body.warning, false);
    const two = await call(a.url, 'POST', '/v1/services/flaky/instances/f1/reports', { reporter: 'c2', kind: 'http_5xx' });
    assert.equal(two.body.warning, true);
    assert.equal(two.body.reporters, 2);
    const seen = await call(b.url, 'GET', '/v1/services/flaky?consistent=true');
    assert.equal(seen.body.instances[0].health, 'warning');
    const quiet = Date.now();
    let health = 'warning';
    while (health === 'warning' && Date.now() - quiet < 15_000) {
      await sleep(250);
      health = (await call(b.url, 'GET', '/v1/services/flaky?consistent=true')).body.instances[0].health;
    }
    assert.equal(health, 'passing');
    const h = await call(b.url, 'GET', '/v1/services/flaky/instances/f1/history');
    assert.match(h.body.history.at(-1).detail, /consumer reports cleared/);
  } finally {
    await Promise.all(nodes.map((n) => n.close()));
  }
});

test('a session that drops without a hand-over ends its lease after the grace, unless it is resumed on any node', { timeout: 60_000 }, async () => {
  const nodes = await threeNodes();
  try {
    const [a, b, c] = nodes as [CpNode, CpNode, CpNode];
    const watch = await SseReader.open(`${c.url}/v1/watch?service=crash`);
    // A provider on a dies (its socket closes with no close message): gone long before the 10 s TTL.
    const s1 = await SessionClient.connect(a.url);
    s1.send({ type: 'open', ttlMs: 10_000 });
    const l1 = await s1.next('lease', 5_000);
    assert.equal((await call(a.url, 'PUT', '/v1/services/crash/instances/dead', { address: '10.0.0.1', port: 1, leaseId: l1.leaseId })).status, 200);
    await watch.until(() => watch.events.some((e) => e.event === 'put'), 5_000, 'the put');
    const t0 = Date.now();
    s1.ws.terminate();
    await watch.until(() => watch.events.some((e) => e.event === 'delete'), 5_000, 'the delete');
    const gone = Date.now() - t0;
    console.log(`# a dropped session's instance was gone on another node ${gone} ms later (grace 500 ms, TTL 10 s)`);
    assert.ok(gone < 2_500, `gone after ${gone} ms`);
    const del = watch.events.find((e) => e.event === 'delete')!;
    assert.equal(del.json.reason, 'connection_lost');

    // A provider whose connection to a drops resumes its lease on b within the grace: it stays.
    const s2 = await SessionClient.connect(a.url);
    s2.send({ type: 'open', ttlMs: 10_000 });
    const l2 = await s2.next('lease', 5_000);
    assert.equal((await call(a.url, 'PUT', '/v1/services/crash/instances/alive', { address: '10.0.0.2', port: 2, leaseId: l2.leaseId })).status, 200);
    s2.ws.terminate();
    const s3 = await SessionClient.connect(b.url);
    s3.send({ type: 'resume', leaseId: l2.leaseId });
    assert.equal((await s3.next('lease', 5_000)).leaseId, l2.leaseId);
    await sleep(2_000);
    const alive = await call(b.url, 'GET', '/v1/services/crash?consistent=true');
    assert.deepEqual(alive.body.instances.map((i: { id: string }) => i.id), ['alive'], 'the resumed lease was not ended');
    // The resumed session on b now drops too: b ends it after the grace.
    s3.ws.terminate();
    await watch.until(() => watch.events.filter((e) => e.event === 'delete').length === 2, 5_000, 'the second delete');
    s1.ws.close();
    watch.close();
  } finally {
    await Promise.all(nodes.map((n) => n.close()));
  }
});

test('consumer reports through different nodes are counted by one node and turn the instance warning everywhere', { timeout: 60_000 }, async () => {
  const nodes = await threeNodes();
  try {
    const [a, b, c] = nodes as [CpNode, CpNode, CpNode];
    // Every node knows the others' addresses (announced after listening).
    for (const n of nodes) {
      const members = async () => (await call(n.url, 'GET', '/v1/status')).body.cluster.members as { address: string }[];
      await waitUntil(async () => (await members()).filter((m) => !m.address.endsWith(':0')).length >= 3, 5_000, `${n.engine.nodeId} to know every address`);
    }
    assert.equal((await call(a.url, 'PUT', '/v1/services/pay/instances/r1', { address: '10.0.0.1', port: 80 })).status, 200);
    const first = await call(b.url, 'POST', '/v1/services/pay/instances/r1/reports', { reporter: 'checkout-1', kind: 'timeout' });
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assert.deepEqual([first.body.reporters, first.body.warning], [1, false]);
    const second = await call(c.url, 'POST', '/v1/services/pay/instances/r1/reports', { reporter: 'checkout-2', kind: 'connect_refused' });
    assert.equal(second.status, 200, JSON.stringify(second.body));
    assert.deepEqual([second.body.reporters, second.body.warning], [2, true], 'one node counted both reporters');
    for (const n of nodes) {
      const r = await call(n.url, 'GET', '/v1/services/pay/instances/r1?consistent=true');
      assert.equal(r.body.health, 'warning', `warning on ${n.url}`);
    }
  } finally {
    await Promise.all(nodes.map((n) => n.close()));
  }
});

test('where etcd does not serve its JSON gateway, consistent reads make their quorum reads over gRPC', { timeout: 60_000 }, async () => {
  const plain = await EtcdCluster.start(1, 30_000, { extraArgs: ['--enable-grpc-gateway=false'] });
  const warnings: string[] = [];
  let node: CpNode | null = null;
  try {
    node = await startCpNode(plain.endpoints, 'g1', freshPrefix(), { log: (level, msg) => level === 'warn' && warnings.push(msg) });
    assert.equal((await call(node.url, 'PUT', '/v1/services/s/instances/one', { address: '10.0.0.1', port: 1 })).status, 200);
    for (let i = 0; i < 3; i++) {
      const read = await call(node.url, 'GET', '/v1/services/s?consistent=true');
      assert.equal(read.status, 200, JSON.stringify(read.body));
      assert.deepEqual(read.body.instances.map((x: { id: string }) => x.id), ['one']);
    }
    assert.equal((await call(node.url, 'GET', '/v1/status')).body.cluster.consistentReadsVia, 'grpc');
    assert.equal(warnings.filter((w) => /JSON gateway/.test(w)).length, 1, warnings.join('\n'));
  } finally {
    await node?.close();
    await plain.close();
  }
});

test('a gateway that keeps failing where gRPC answers: each read is answered over gRPC, and after three failures the node stays on gRPC', { timeout: 30_000 }, async () => {
  // A fake member that answers every gateway call with an error page (a proxy in front of etcd that passes only gRPC, say).
  const proxy = createHttpServer((_req, res) => {
    res.writeHead(503, { 'content-type': 'text/html' });
    res.end('<html>Service Unavailable</html>');
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  const gatewayUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
  const dropped: Error[] = [];
  const store = new Store({ endpoints: etcd.endpoints, callTimeoutMs: 2000, breakerOpenMs: 50, gateway: new GatewayReader({ endpoints: [gatewayUrl], breakerOpenMs: 50 }), onGatewayMissing: (err) => dropped.push(err) });
  try {
    const key = Buffer.from(freshPrefix());
    const read = async (): Promise<void> => assert.ok((await store.consistentRevision(key, 2000)).revision > 0, 'answered over gRPC');
    await read(); // strike 1
    await read(); // the gateway's breaker is open: not tried, no strike
    assert.equal(store.consistentReadsVia, 'json_gateway');
    await sleep(60);
    await read(); // strike 2
    assert.equal(store.consistentReadsVia, 'json_gateway');
    await sleep(60);
    await read(); // strike 3
    assert.equal(store.consistentReadsVia, 'grpc');
    assert.equal(dropped.length, 1);
    assert.match(dropped[0]?.message ?? '', /3 quorum reads in a row/);
  } finally {
    store.close();
    proxy.closeAllConnections();
    await new Promise((r) => proxy.close(r));
  }
});

test('a gateway that refuses what gRPC answers (an auth proxy in front of it): the node goes to gRPC at once', { timeout: 30_000 }, async () => {
  const proxy = createHttpServer((_req, res) => {
    res.writeHead(401, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ code: 16, message: 'proxy: login required' }));
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  const dropped: Error[] = [];
  const store = new Store({ endpoints: etcd.endpoints, callTimeoutMs: 2000, breakerOpenMs: 50, gateway: new GatewayReader({ endpoints: [`http://127.0.0.1:${(proxy.address() as AddressInfo).port}`], breakerOpenMs: 50 }), onGatewayMissing: (err) => dropped.push(err) });
  try {
    assert.ok((await store.consistentRevision(Buffer.from(freshPrefix()), 2000)).revision > 0);
    assert.equal(store.consistentReadsVia, 'grpc');
    assert.match(dropped[0]?.message ?? '', /login required/);
  } finally {
    store.close();
    proxy.closeAllConnections();
    await new Promise((r) => proxy.close(r));
  }
});

test("consistent reads make their quorum reads at etcd's leader, even when a follower is listed first", { timeout: 60_000 }, async () => {
  // A leader change in the middle (a loaded machine can miss heartbeats) spoils a round: try again.
  let outcome = '';
  for (let round = 0; round < 3; round++) {
    const leader = await etcd.waitLeader();
    const followers = [0, 1, 2].filter((i) => i !== leader);
    const node = await startCpNode([...followers, leader].map((i) => etcd.endpoint(i)), `l${round}`, freshPrefix());
    try {
      await waitUntil(async () => (await call(node.url, 'GET', '/v1/status')).body.cluster.consistentReadsLeader === etcd.endpoint(leader), 10_000, 'the node to find the leader among its endpoints');
      const before = await Promise.all([0, 1, 2].map((i) => etcd.rangesServed(i)));
      for (let i = 0; i < 40; i++) assert.equal((await call(node.url, 'GET', '/v1/services/none?consistent=true')).status, 200);
      const after = await Promise.all([0, 1, 2].map((i) => etcd.rangesServed(i)));
      const served = after.map((n, i) => n - (before[i] as number));
      outcome = `ranges served: ${served.join(', ')} (leader ${leader})`;
      if ((await etcd.waitLeader()) !== leader) continue;
      // The prober's own reads (gRPC, every 500 ms) may land anywhere: a few.
      assert.ok((served[leader] as number) >= 40, outcome);
      for (const f of followers) assert.ok((served[f] as number) <= 10, outcome);
      return;
    } finally {
      await node.close();
    }
  }
  assert.fail(`etcd's leader changed in every round; last: ${outcome}`);
});

test('a node whose watch fell behind etcd compaction reloads all it holds: instances, leases, nodes, settings; watchers in the gap get a reset', { timeout: 90_000 }, async () => {
  const prefix = freshPrefix();
  const member = new URL(etcd.endpoint(0));
  const proxy = await FaultProxy.start({ host: member.hostname, port: Number(member.port) });
  const b = await startCpNode(etcd.endpoints, 'b', prefix);
  const c = await startCpNode(etcd.endpoints, 'c', prefix);
  const a = await startCpNode([`http://${proxy.address}`], 'a', prefix);
  const client = new Etcd3({ hosts: etcd.endpoints });
  try {
    const lease = (await call(b.url, 'POST', '/v1/leases', { ttlMs: 60_000 })).body.leaseId as string;
    for (const [id, body] of [['leased', { leaseId: lease }], ['gone', {}], ['kept', {}]] as const) {
      assert.equal((await call(b.url, 'PUT', `/v1/services/k/instances/${id}`, { address: '10.0.0.1', port: 80, ...body })).status, 200);
    }
    assert.equal((await call(b.url, 'PUT', '/v1/services/k/settings', { protectThreshold: 0.5 })).status, 200);
    const ids = async (n: CpNode) => ((await call(n.url, 'GET', '/v1/services/k')).body.instances as { id: string }[]).map((i) => i.id).sort();
    const members = async (n: CpNode) => ((await call(n.url, 'GET', '/v1/status')).body.cluster.members as { id: string }[]).map((m) => m.id);
    await waitUntil(async () => (await ids(a)).length === 3 && (await members(a)).length === 3, 10_000, 'a sees everything');
    assert.equal((await call(a.url, 'GET', '/v1/services/k/settings')).body.protectThreshold, 0.5);
    const position = (await call(a.url, 'GET', '/v1/status')).body.revision as number;

    proxy.cut();
    // In the gap: the lease revoked (its instance goes), an instance deregistered, the
    // settings cleared, a node gone.
    assert.equal((await call(b.url, 'DELETE', `/v1/leases/${lease}`)).status, 200);
    assert.equal((await call(b.url, 'DELETE', '/v1/services/k/instances/gone')).status, 200);
    assert.equal((await call(b.url, 'PUT', '/v1/services/k/settings', { protectThreshold: null })).status, 200);
    await c.close();
    // etcd forgets the history a would need to resume.
    const now = (await client.get(`${prefix}none`).exec()).header.revision;
    await client.kv.compact({ revision: now, physical: true });
    proxy.restore();

    await waitUntil(async () => JSON.stringify(await ids(a)) === '["kept"]', 20_000, 'a drops the instances deleted in the gap');
    await waitUntil(async () => JSON.stringify(await members(a)) === '["a","b"]', 10_000, 'a drops the node that left in the gap');
    assert.equal((await call(a.url, 'GET', '/v1/services/k/settings')).body.protectThreshold, null, 'settings cleared in the gap');
    const leases = async (n: CpNode) => (await call(n.url, 'GET', '/v1/status')).body.leases as number;
    assert.equal(await leases(a), await leases(b), 'the revoked lease is gone from a too');
    // A watch that resumes on a from a position inside the gap is told to relist.
    const w = await SseReader.open(`${a.url}/v1/watch?service=k&fromRevision=${position + 1}`);
    await w.count(1);
    assert.equal(w.events[0]!.event, 'reset');
    w.close();
  } finally {
    client.close();
    await a.close();
    await b.close();
    await c.close();
    await proxy.close();
  }
});

test('a batch registration as large as one etcd transaction allows, sent among other writes, succeeds; a larger one is a 400', { timeout: 60_000 }, async () => {
  const [a, b, c] = (await threeNodes()) as [CpNode, CpNode, CpNode];
  try {
    const lease = (await call(a.url, 'POST', '/v1/leases', { ttlMs: 60_000 })).body.leaseId as string;
    const batch = (n: number, tag: string) => ({ instances: Array.from({ length: n }, (_, i) => ({ service: 'big', id: `${tag}${i}`, address: '10.0.0.1', port: 1000 + i, leaseId: lease })) });
    // 127 instances on one lease: 128 guards, etcd's limit. Other writes queued with it go in
    // other transactions (nested beside them it would pass etcd's limit).
    const others = Array.from({ length: 8 }, (_, i) => call(a.url, 'PUT', `/v1/services/small/instances/s${i}`, { address: '10.0.0.2', port: 80 }));
    const [big, ...rest] = await Promise.all([call(a.url, 'POST', '/v1/instances/batch', batch(127, 'x')), ...others]);
    assert.equal(big.status, 200, JSON.stringify(big.body));
    for (const r of rest) assert.equal(r.status, 200, JSON.stringify(r.body));
    const tooMany = await call(a.url, 'POST', '/v1/instances/batch', batch(128, 'y'));
    assert.equal(tooMany.status, 400, JSON.stringify(tooMany.body));
    assert.equal(tooMany.body.limit, 'maxTxnOps');
    assert.ok(tooMany.body.hint);
    assert.equal((await call(b.url, 'GET', '/v1/services/big?consistent=true')).body.instances.length, 127);
  } finally {
    await Promise.all([a, b, c].map((n) => n.close()));
  }
});

test('a node whose key is missing while its lease lives writes it again, so the others list it', { timeout: 60_000 }, async () => {
  const prefix = freshPrefix();
  const [a, b, c] = (await threeNodes(prefix)) as [CpNode, CpNode, CpNode];
  const client = new Etcd3({ hosts: etcd.endpoints });
  try {
    const members = async (n: CpNode) => ((await call(n.url, 'GET', '/v1/status')).body.cluster.members as { id: string }[]).map((m) => m.id);
    await waitUntil(async () => (await members(b)).length === 3, 10_000, 'b lists all three');
    // The key goes (as when the put after a new lease failed) while the lease is kept alive.
    await client.delete().key(`${prefix}nodes/n1`).exec();
    await waitUntil(async () => !(await members(b)).includes('n1'), 5_000, 'b sees n1 gone');
    await waitUntil(async () => (await members(b)).includes('n1'), 10_000, 'n1 writes its key again');
  } finally {
    client.close();
    await Promise.all([a, b, c].map((n) => n.close()));
  }
});

test('check run counters keep counting when the live nodes change (the checks move)', { timeout: 60_000 }, async () => {
  const prefix = freshPrefix();
  const target = createServer((s) => s.destroy());
  await new Promise<void>((r) => target.listen(0, '127.0.0.1', r));
  const port = (target.address() as AddressInfo).port;
  const a = await startCpNode(etcd.endpoints, 'a', prefix, { activeChecks: true });
  let b: CpNode | undefined;
  try {
    for (let i = 0; i < 6; i++) {
      assert.equal((await call(a.url, 'PUT', `/v1/services/chk/instances/c${i}`, { address: '127.0.0.1', port, checks: [{ type: 'tcp', interval: '100ms' }] })).status, 200);
    }
    const runs = async () => {
      const text = await (await fetch(`${a.url}/metrics`)).text();
      return [...text.matchAll(/^switchboard_check_runs_total\{status="\w+"\} (\d+)/gm)].reduce((n, m) => n + Number(m[1]), 0);
    };
    await waitUntil(async () => (await runs()) >= 20, 10_000, 'a runs checks');
    const before = await runs();
    b = await startCpNode(etcd.endpoints, 'b', prefix, { activeChecks: true }); // a's monitor restarts
    const members = async () => ((await call(a.url, 'GET', '/v1/status')).body.cluster.members as unknown[]).length;
    await waitUntil(async () => (await members()) === 2, 10_000, 'a sees b');
    await sleep(500);
    const after = await runs();
    assert.ok(after >= before, `the counter went from ${before} to ${after}`);
  } finally {
    await b?.close();
    await a.close();
    target.close();
  }
});
