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

/** Runs the world until `done`, for at most `boundMs` simulated; returns the time it took. */
async function timeUntil(world: World, done: () => boolean, boundMs = 3_000): Promise<number> {
  const t0 = world.now;
  while (!done() && world.now - t0 < boundMs) await world.sched.run(1);
  return world.now - t0;
}

/** Drops the acknowledgements `drop` chooses (the link stays up: the message is lost). */
function dropAcks(world: World, drop: (from: string, to: string) => boolean): void {
  const send = world.net.send.bind(world.net);
  world.net.send = (from: string, to: string, msg: PeerMessage): boolean => (msg.type === 'ap_ack' && drop(from, to) ? true : send(from, to, msg));
}

test('a lost acknowledgement does not hold later changes back for good', async () => {
  const world = new World({ seed: 12, nodes: 3, limits: { apBatchDelayMs: 2_000, apAntiEntropyIntervalMs: 400 } });
  await world.start();
  try {
    const a = world.node('a').engine;
    const b = world.node('b').engine;
    const lease = (await a.grantLease(10_000)).leaseId;
    await world.sched.run(20);
    let dropping = true;
    dropAcks(world, (_from, to) => dropping && to === 'a');
    await a.register({ namespace: 'default', service: 'web', id: 'lost-ack', input: input('10.0.0.1', 80, lease) });
    assert.ok((await timeUntil(world, () => b.registry.instance('default', 'web', 'lost-ack') !== undefined)) < 100, 'b has the first instance');
    dropping = false;
    // Longer than an anti-entropy interval later, the unacknowledged batch counts as lost.
    await world.sched.run(500);
    await a.register({ namespace: 'default', service: 'web', id: 'later', input: input('10.0.0.2', 80, lease) });
    const took = await timeUntil(world, () => b.registry.instance('default', 'web', 'later') !== undefined);
    assert.ok(took < 100, `b had the later instance ${took} ms after the write (apBatchDelayMs is 2,000)`);
  } finally {
    await world.close();
  }
});

test('changes gathered behind a batch only a peer that went down still owed go at once', async () => {
  const world = new World({ seed: 13, nodes: 3, limits: { apBatchDelayMs: 2_000, apAntiEntropyIntervalMs: 60_000 } });
  await world.start();
  try {
    const a = world.node('a').engine;
    const b = world.node('b').engine;
    const lease = (await a.grantLease(10_000)).leaseId;
    await world.sched.run(20);
    // c never acknowledges: the first batch waits for c alone once b has acknowledged it.
    dropAcks(world, (from) => from === 'c');
    await a.register({ namespace: 'default', service: 'web', id: 'first', input: input('10.0.0.1', 80, lease) });
    await world.sched.run(0);
    await a.register({ namespace: 'default', service: 'web', id: 'second', input: input('10.0.0.2', 80, lease) });
    await world.sched.run(10);
    assert.equal(b.registry.instance('default', 'web', 'second'), undefined, 'the second change waits behind the batch c owes');
    world.net.setCut('a', 'c', true);
    const took = await timeUntil(world, () => b.registry.instance('default', 'web', 'second') !== undefined);
    // The link's loss is noticed within 20 ms (the fake network's detection delay).
    assert.ok(took < 100, `b had the second instance ${took} ms after c's link was cut (apBatchDelayMs is 2,000)`);
  } finally {
    await world.close();
  }
});
