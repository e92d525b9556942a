// Goal: replication batches follow Nagle's rule. A change made while no batch is
// unacknowledged goes to the peers at once; changes made while one is gather, and go as
// soon as it is acknowledged (apBatchDelayMs only bounds the wait when acknowledgements are
// slow), so that a peer learns of a write about one round trip after it, not one delay.
// A lost acknowledgement, or one owed by a peer that went down, must not hold them back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ApEngine } from '../../src/engines/ap/engine.js';
import type { PeerMessage } from '../../src/engines/ap/transport.js';
import { World, input } from '../sim/world.js';

/**
 * Three nodes with a long apBatchDelayMs (the fake network takes 1 to 3 ms each way), a
 * lease on a, and `put(id)` registering one instance of `web` on a with it; runs `body`,
 * then closes the world.
 */
async function onCluster(seed: number, antiEntropyMs: number, body: (c: { world: World; b: ApEngine; put(id: string): Promise<void> }) => Promise<void>): Promise<void> {
  const world = new World({ seed, nodes: 3, limits: { apBatchDelayMs: 2_000, apAntiEntropyIntervalMs: antiEntropyMs } });
  await world.start();
  try {
    const a = world.node('a').engine;
    const lease = (await a.grantLease(10_000)).leaseId;
    await world.sched.run(20);
    let n = 0;
    const put = async (id: string): Promise<void> => {
      await a.register({ namespace: 'default', service: 'web', id, input: input(`10.0.0.${++n}`, 80, lease) });
    };
    await body({ world, b: world.node('b').engine, put });
  } finally {
    await world.close();
  }
}

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

const has = (b: ApEngine, id: string): boolean => b.registry.instance('default', 'web', id) !== undefined;

test('changes gathered behind an unacknowledged batch go when it is acknowledged, not after apBatchDelayMs', async () => {
  await onCluster(11, 60_000, async ({ world, b, put }) => {
    const batches: number[] = [];
    const send = world.net.send.bind(world.net);
    world.net.send = (from: string, to: string, msg: PeerMessage): boolean => {
      if (from === 'a' && to === 'b' && msg.type === 'ap_batch') batches.push((msg.records as unknown[]).length);
      return send(from, to, msg);
    };
    // The first goes out at once; the two after it find that batch unacknowledged.
    await put('first');
    await world.sched.run(0);
    assert.equal(batches.length, 1, 'the first change went out at once');
    await put('second');
    await put('third');
    const took = await timeUntil(world, () => has(b, 'third'));
    assert.ok(has(b, 'second'), 'b has the second instance');
    assert.ok(took < 100, `b had the third instance ${took} ms after the write (apBatchDelayMs is 2,000)`);
    // Two batches, not three: the gathered changes went together.
    assert.deepEqual(batches, [1, 2]);
  });
});

test('a lost acknowledgement does not hold later changes back for good', async () => {
  await onCluster(12, 400, async ({ world, b, put }) => {
    let dropping = true;
    dropAcks(world, (_from, to) => dropping && to === 'a');
    await put('lost-ack');
    assert.ok((await timeUntil(world, () => has(b, 'lost-ack'))) < 100, 'b has the first instance');
    dropping = false;
    // Longer than an anti-entropy interval later, the unacknowledged batch counts as lost.
    await world.sched.run(500);
    await put('later');
    const took = await timeUntil(world, () => has(b, 'later'));
    assert.ok(took < 100, `b had the later instance ${took} ms after the write (apBatchDelayMs is 2,000)`);
  });
});

test('changes gathered behind a batch only a peer that went down still owed go at once', async () => {
  await onCluster(13, 60_000, async ({ world, b, put }) => {
    // c never acknowledges: the first batch waits for c alone once b has acknowledged it.
    dropAcks(world, (from) => from === 'c');
    await put('first');
    await world.sched.run(0);
    await put('second');
    await world.sched.run(10);
    assert.ok(!has(b, 'second'), 'the second change waits behind the batch c owes');
    world.net.setCut('a', 'c', true);
    const took = await timeUntil(world, () => has(b, 'second'));
    // The link's loss is noticed within 20 ms (the fake network's detection delay).
    assert.ok(took < 100, `b had the second instance ${took} ms after c's link was cut (apBatchDelayMs is 2,000)`);
  });
});
