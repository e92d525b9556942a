// Goal: in ap mode consumer reports are counted by the instance's owner, so that two
// consumers reporting through different nodes turn the instance `warning` (and the
// warning replicates); when the owner cannot be reached the node that took the report
// counts it itself.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { call } from '../helpers.js';
import { LoopbackNet, eventually, startApNode, type ApTestNode } from './loopback.js';

const health = async (n: ApTestNode, id: string) => (await call(n.url, 'GET', `/v1/services/pay/instances/${id}`)).body.health as string;

test('reports through different nodes add up at the owner; without the owner the taking node counts', { timeout: 30_000 }, async () => {
  const net = new LoopbackNet(['a', 'b', 'c']);
  const nodes = [await startApNode(net, 'a'), await startApNode(net, 'b'), await startApNode(net, 'c')];
  const [a, b, c] = nodes as [ApTestNode, ApTestNode, ApTestNode];
  try {
    for (const n of nodes) await eventually(`${n.id} ready`, () => (n.engine.ready ? true : undefined));
    assert.equal((await call(a.url, 'PUT', '/v1/services/pay/instances/p1', { address: '10.0.0.1', port: 80 })).status, 200);
    await eventually('p1 on b and c', async () => ((await call(b.url, 'GET', '/v1/services/pay/instances/p1')).status === 200 && (await call(c.url, 'GET', '/v1/services/pay/instances/p1')).status === 200 ? true : undefined));

    const first = await call(b.url, 'POST', '/v1/services/pay/instances/p1/reports', { reporter: 'checkout-1', kind: 'timeout' });
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assert.deepEqual([first.body.reporters, first.body.warning], [1, false]);
    const second = await call(c.url, 'POST', '/v1/services/pay/instances/p1/reports', { reporter: 'checkout-2', kind: 'connect_refused' });
    assert.deepEqual([second.body.reporters, second.body.warning], [2, true], 'the owner counted both reporters');
    for (const n of nodes) await eventually(`warning on ${n.id}`, async () => ((await health(n, 'p1')) === 'warning' ? true : undefined), 3_000);

    // The owner of p2 is cut off from b: b counts the reports it takes itself.
    assert.equal((await call(a.url, 'PUT', '/v1/services/pay/instances/p2', { address: '10.0.0.2', port: 80 })).status, 200);
    await eventually('p2 on b', async () => ((await call(b.url, 'GET', '/v1/services/pay/instances/p2')).status === 200 ? true : undefined));
    net.setCut('a', 'b', true);
    await call(b.url, 'POST', '/v1/services/pay/instances/p2/reports', { reporter: 'checkout-1', kind: 'timeout' });
    const local = await call(b.url, 'POST', '/v1/services/pay/instances/p2/reports', { reporter: 'checkout-2', kind: 'timeout' });
    assert.deepEqual([local.body.reporters, local.body.warning], [2, true]);
    // An unknown instance is still a 404, wherever it is asked.
    assert.equal((await call(c.url, 'POST', '/v1/services/pay/instances/nope/reports', { reporter: 'checkout-1', kind: 'timeout' })).status, 404);
  } finally {
    for (const n of nodes) await n.close();
  }
});
