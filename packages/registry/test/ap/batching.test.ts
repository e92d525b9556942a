// Goal: replication batches follow Nagle's rule. A change made while no batch is
// unacknowledged goes to the peers at once; changes made while one is gather, and go as
// soon as it is acknowledged (apBatchDelayMs only bounds the wait when acknowledgements are
// slow), so that a peer learns of a write about one round trip after it, not one delay.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { PeerMessage } from '../../src/engines/ap/transport.js';
import { World, input } from '../sim/world.js';

test('changes gathered behind an unacknowledged batch go when it is acknowledged, not after apBatchDelayMs', async () => {
  // A delay far longer than a round trip (the fake network takes 1 to 3 ms each way).
  const world = new World({ seed: 11, nodes: 3, limits: { apBatchDelayMs: 2_000, apAntiEntropyIntervalMs: 60_000 } });
  await world.start();
  try {
    const batches: { at: number; records: number }[] = [];
    const send = world.net.send.bind(world.net);
    world.net.send = (from: string, to: string, msg: PeerMessage): boolean => {
      if (from === 'a' && to === 'b' && msg.type === 'ap_batch') batches.push({ at: world.now, records: (msg.records as unknown[]).length });
      return send(from, to, msg);
    };
    const a = world.node('a').engine;
    const b = world.node('b').engine;
    const lease = (await a.grantLease(10_000)).leaseId;
    await world.sched.run(20);
    batches.length = 0;
    const t0 = world.now;
    // The first goes out at once; the two after it find that batch unacknowledged.
    await a.register({ namespace: 'default', service: 'web', id: 'first', input: input('10.0.0.1', 80, lease) });
    await world.sched.run(0);
    assert.equal(batches.length, 1, 'the first change went out at once');
    await a.register({ namespace: 'default', service: 'web', id: 'second', input: input('10.0.0.2', 80, lease) });
    await a.register({ namespace: 'default', service: 'web', id: 'third', input: input('10.0.0.3', 80, lease) });
    while (!b.registry.instance('default', 'web', 'third') && world.now - t0 < 3_000) await world.sched.run(1);
    const took = world.now - t0;
    assert.ok(b.registry.instance('default', 'web', 'second'), 'b has the second instance');
    assert.ok(took < 100, `b had the third instance ${took} ms after the write (apBatchDelayMs is 2,000)`);
    // Two batches, not three: the gathered changes went together.
    assert.deepEqual(batches.map((x) => x.records), [1, 2]);
  } finally {
    await world.close();
  }
});
