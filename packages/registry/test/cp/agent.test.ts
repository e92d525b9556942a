// Goal: the real `switchboard agent --mode cp` processes run as stateless front ends over
// etcd: three of them share one registry, a killed one loses nothing, and a new one
// starts from what etcd holds.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { call, waitUntil } from '../helpers.js';
import { createServer, type AddressInfo } from 'node:net';
import { run, spawnAgent, type AgentProcess } from '../integration/process.js';
import { EtcdCluster } from './etcd-cluster.js';
import { freshPrefix } from './nodes.js';

let etcd: EtcdCluster;
before(async () => {
  etcd = await EtcdCluster.start(3);
});
after(async () => {
  await etcd?.close();
});

test('three cp agents over one etcd share the registry; a node restart loses nothing', { timeout: 90_000 }, async () => {
  const prefix = freshPrefix();
  const args = (id: string): string[] => ['--mode', 'cp', '--etcd', etcd.endpoints.join(','), '--etcd-prefix', prefix, '--node-id', id];
  const agents: AgentProcess[] = [];
  try {
    for (const id of ['a1', 'a2', 'a3']) agents.push(await spawnAgent(args(id), {}, 30_000));
    const [a, b, c] = agents as [AgentProcess, AgentProcess, AgentProcess];
    const lease = await call(a.url, 'POST', '/v1/leases', { ttlMs: 10_000 });
    assert.equal(lease.status, 201);
    assert.equal((await call(a.url, 'PUT', '/v1/services/orders/instances/o1', { address: '10.1.0.1', port: 80, leaseId: lease.body.leaseId })).status, 200);
    assert.equal((await call(b.url, 'PUT', '/v1/services/orders/instances/o2', { address: '10.1.0.2', port: 80 })).status, 200);
    const seen = await call(c.url, 'GET', '/v1/services/orders?consistent=true');
    assert.deepEqual(seen.body.instances.map((i: { id: string }) => i.id).sort(), ['o1', 'o2']);
    const status = await call(c.url, 'GET', '/v1/status');
    assert.equal(status.body.mode, 'cp');
    assert.equal(status.body.cluster.store.reachable, true);
    assert.deepEqual(status.body.cluster.members.map((m: { id: string }) => m.id), ['a1', 'a2', 'a3']);
    // Started with port 0, each node announces the port it got, not ":0".
    const hostPort = (url: string) => new URL(url).host;
    await waitUntil(async () => {
      const members = (await call(c.url, 'GET', '/v1/status')).body.cluster.members as { address: string }[];
      return members.map((m) => m.address).join() === agents.map((x) => hostPort(x.url)).join();
    }, 5_000, 'every member to show its listening address');
    // A node dies: nothing is lost, the lease is kept alive through another node.
    a.child.kill('SIGKILL');
    await a.exited;
    assert.equal((await call(b.url, 'PUT', `/v1/leases/${lease.body.leaseId}/keepalive`)).status, 200);
    const fresh = await spawnAgent(args('a4'), {}, 30_000);
    agents.push(fresh);
    const r = await call(fresh.url, 'GET', '/v1/services/orders');
    assert.deepEqual(r.body.instances.map((i: { id: string }) => i.id).sort(), ['o1', 'o2']);
    // A clean stop exits 0.
    b.child.kill('SIGTERM');
    assert.equal(await b.exited, 0);
  } finally {
    for (const p of agents) p.child.kill('SIGKILL');
  }
});

test('a cp agent that cannot reach etcd at start names the cause in one warning, not a stack trace every second', { timeout: 30_000 }, async () => {
  const spare = createServer();
  await new Promise<void>((r) => spare.listen(0, '127.0.0.1', r));
  const port = (spare.address() as AddressInfo).port;
  await new Promise<void>((r) => spare.close(() => r()));
  // Nothing listens there: connection refused. Stopped after 8 s (it would give up after
  // 30 s): long enough for a start on a loaded machine, short of the 10 s repeat.
  const r = await run(['agent', '--mode', 'cp', '--node-id', 'lonely', '--http-addr', '127.0.0.1:0', '--log-format', 'json', '--etcd', `http://127.0.0.1:${port}`], {}, 8_000);
  const lines = r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { level: number; msg: string; err?: unknown });
  const warnings = lines.filter((l) => l.level >= 40);
  assert.equal(warnings.length, 1, JSON.stringify(warnings));
  assert.match(warnings[0]!.msg, new RegExp(`etcd at http://127.0.0.1:${port} cannot be read yet \\(.*ECONNREFUSED.*\\); trying again every second for up to 30 s`));
  assert.equal(warnings[0]!.err, undefined, 'no error object (stack) at warn level');
  assert.ok(!lines.some((l) => /may answer a watch progress request/.test(l.msg)), 'the note about etcd releases waits for a reachable etcd');
});
