// Goal: anti-entropy under a steady stream of writes compares only what has settled. A
// round that waited its longest while batches were in flight must not exchange the
// versions of every service that changed in the meantime (that cost a tenth of each
// node's CPU under load), and it must still repair a record a lost batch never delivered.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { PeerMessage } from '../../src/engines/ap/transport.js';
import { converged } from '../sim/clients.js';
import { World, input, type SimNode } from '../sim/world.js';

/** Runs the world until every node agrees, for at most `boundMs` simulated, then asserts it. */
async function convergeWithin(world: World, boundMs = 3_000): Promise<void> {
  const t0 = world.now;
  while (converged(world) !== null && world.now - t0 < boundMs) await world.sched.run(25);
  assert.equal(converged(world), null);
}

interface PeerSync {
  syncedMsAgo: number | null;
  cutSyncedMsAgo: number | null;
  mustRebuild: boolean;
}

/** A node's `peerSync` status: peer id -> what it knows of the synchronisation with it. */
function peerSync(n: SimNode): [string, PeerSync][] {
  return Object.entries((n.engine.cluster() as unknown as { peerSync: Record<string, PeerSync> }).peerSync);
}

/** Calls `seen` with every message the network is asked to send (before the send). */
function tap(world: World, seen: (from: string, msg: { type: string; entries?: unknown[] }) => void): void {
  const send = world.net.send.bind(world.net);
  world.net.send = (from: string, to: string, msg: PeerMessage): boolean => {
    seen(from, msg as unknown as { type: string; entries?: unknown[] });
    return send(from, to, msg);
  };
}

/** b hands a record (as a's table held it) back to a in a replication batch. */
async function handBack(world: World, rec: Record<string, unknown>, seq: number): Promise<void> {
  const { at: _at, ...wire } = rec;
  world.net.send('b', 'a', { type: 'ap_batch', seq, rev: 1, records: [wire] } as never);
  await world.sched.run(50);
}

async function underLoad(drop: number): Promise<{ world: World; versionEntries: number; missingOld: string[] }> {
  const world = new World({ seed: 11, nodes: 3, limits: { apAntiEntropyMaxDeferMs: 400 } });
  await world.start();
  await world.sched.run(1_000);
  world.net.faults = { minDelayMs: 10, maxDelayMs: 40, drop, duplicate: 0 };
  let versionEntries = 0;
  tap(world, (_from, m) => {
    if (m.type === 'ap_versions') versionEntries += m.entries?.length ?? 0;
  });
  const a = world.node('a').engine;
  const written: { key: string; at: number }[] = [];
  const start = world.now;
  const loadMs = 4_000;
  // One persistent registration every 4 ms on a, over 8 services.
  for (let t = 0, k = 0; t < loadMs; t += 4, k++) {
    world.sched.at(start + t, () => {
      const service = `s${k % 8}`;
      written.push({ key: `default/${service}/i${k}`, at: world.now });
      void a.register({ namespace: 'default', service, id: `i${k}`, input: input('10.0.0.1', 1000 + (k % 50_000), null) }).catch(() => undefined);
    });
  }
  await world.sched.run(loadMs);
  // While the load still runs: every record written more than a second ago is on b and c.
  const missingOld: string[] = [];
  for (const id of ['b', 'c']) {
    const table = world.node(id).engine.table;
    for (const w of written) if (world.now - w.at > 1_000 && !table.get(w.key)) missingOld.push(`${id} ${w.key}`);
  }
  return { world, versionEntries, missingOld };
}

test('rounds under load compare only settled records: no versions exchanged for what is in flight', async () => {
  const { world, versionEntries, missingOld } = await underLoad(0);
  try {
    const rounds = world.live().reduce((s, n) => s + n.engine.stats.antiEntropyRounds, 0);
    const settling = world.live().reduce((s, n) => s + n.engine.stats.antiEntropySettling, 0);
    assert.ok(rounds >= 6, `rounds ran under the load (${rounds})`);
    assert.ok(settling > 0, 'services were left to settle');
    assert.equal(versionEntries, 0, 'no record versions exchanged for in-flight records');
    assert.deepEqual(missingOld, []);
    await convergeWithin(world);
  } finally {
    await world.close();
  }
});

test('rounds under load still repair what a lost batch never delivered', async () => {
  const { world, versionEntries, missingOld } = await underLoad(0.05);
  try {
    assert.ok(world.net.stats.dropped > 0);
    assert.ok(versionEntries > 0, 'the lost records were found by comparing versions');
    assert.deepEqual(missingOld, [], 'repaired while the load ran, not only after it');
    world.net.faults = { minDelayMs: 1, maxDelayMs: 3, drop: 0, duplicate: 0 };
    await convergeWithin(world);
  } finally {
    await world.close();
  }
});

async function churn(pages: boolean): Promise<void> {
  // pages: 8 services in digests of 2, so that every round covers a quarter of the key range.
  const world = new World({ seed: 5, nodes: 3, limits: { apAntiEntropyMaxDeferMs: 400, apTombstoneMinMs: 500, apTombstoneMaxMs: 60_000, apDigestMaxServices: pages ? 2 : 100 } });
  await world.start();
  await world.sched.run(1_000);
  world.net.faults = { minDelayMs: 10, maxDelayMs: 40, drop: 0, duplicate: 0 };
  const start = world.now;
  const loadMs = 6_000;
  const deleted: string[] = [];
  // On a and b in turn: an instance every 4 ms, deregistered 50 ms later.
  for (let t = 0, k = 0; t < loadMs; t += 4, k++) {
    const node = world.node(k % 2 === 0 ? 'a' : 'b').engine;
    const service = `s${k % 8}`;
    world.sched.at(start + t, () => void node.register({ namespace: 'default', service, id: `i${k}`, input: input('10.0.0.1', 1000 + k, null) }).catch(() => undefined));
    world.sched.at(start + t + 50, () => {
      deleted.push(`default/${service}/i${k}`);
      void node.deregister('default', service, `i${k}`).catch(() => undefined);
    });
  }
  try {
    await world.sched.run(loadMs);
    for (const n of world.live()) {
      assert.ok(n.engine.stats.tombstonesCollected > 500, `${n.id} collected ${n.engine.stats.tombstonesCollected} tombstones while the writes went on`);
      for (const [peer, s] of peerSync(n)) {
        assert.equal(s.mustRebuild, false, `${n.id} owes ${peer} a rebuild`);
        // A pass of four pages, one round per peer every other interval, each put off while batches fly.
        assert.ok(s.cutSyncedMsAgo !== null && s.cutSyncedMsAgo < (pages ? 5_000 : 2_000), `${n.id} matched ${peer} up to a cut recently (${s.cutSyncedMsAgo} ms ago)`);
      }
    }
    await convergeWithin(world);
    for (const n of world.live()) for (const key of deleted) assert.equal(n.engine.registry.instance('default', key.split('/')[1] as string, key.split('/')[2] as string), undefined, `${key} came back on ${n.id}`);
    // Quiet now: once every node collected its tombstones, passes match whole.
    const stale = (): string | null => {
      for (const n of world.live()) {
        for (const [peer, s] of peerSync(n)) {
          if (s.syncedMsAgo === null || s.syncedMsAgo > 2_000) return `${n.id} found ${peer} in sync ${s.syncedMsAgo} ms ago`;
        }
      }
      return null;
    };
    const quiet = world.now;
    while (stale() !== null && world.now - quiet < 8_000) await world.sched.run(100);
    assert.equal(stale(), null);
  } finally {
    await world.close();
  }
}

test('under writes that never pause, tombstones are still collected, and no peer is marked as owing a rebuild', () => churn(false));

test('the same with more services than one digest holds: a pass of pages in order shows a peer in sync', () => churn(true));

test('a tombstone made while a node was cut off longer than apTombstoneMinMs reaches it after the heal, and everyone collects it', async () => {
  const world = new World({ seed: 3, nodes: 3, limits: { apTombstoneMinMs: 2_000, apTombstoneMaxMs: 30_000 } });
  await world.start();
  await world.sched.run(500);
  world.net.partition(['a', 'b'], ['c']);
  await world.sched.run(200);
  const a = world.node('a').engine;
  // c never sees this instance: it comes and goes while c is away.
  await a.register({ namespace: 'default', service: 'p', id: 'brief', input: input('10.0.0.1', 80, null) });
  await world.sched.run(500);
  await a.deregister('default', 'p', 'brief');
  await world.sched.run(world.limits.apTombstoneMinMs + 1_000);
  world.net.healAll();
  try {
    // Well within apTombstoneMaxMs: collected because every node held it, not because it got too old.
    const healed = world.now;
    const held = (): string[] => world.live().filter((n) => n.engine.table.get('default/p/brief') !== undefined).map((n) => n.id);
    while (held().length > 0 && world.now - healed < 10_000) await world.sched.run(100);
    assert.deepEqual(held(), [], 'the tombstone is collected everywhere');
    for (const n of world.live()) {
      assert.equal(n.engine.registry.instance('default', 'p', 'brief'), undefined);
      for (const [peer, s] of peerSync(n)) assert.equal(s.mustRebuild, false, `${n.id} owes ${peer} a rebuild`);
    }
    await world.sched.run(2_000);
    assert.equal(converged(world), null);
  } finally {
    await world.close();
  }
});

test('anti-entropy digests and answers wait until what they show is durable', async () => {
  const world = new World({ seed: 9, nodes: 2 });
  await world.start();
  await world.sched.run(1_000);
  const b = world.node('b');
  // b's disk stops answering: what b merges from now on is in memory only.
  const held: (() => void)[] = [];
  const append = b.storage.append.bind(b.storage);
  b.storage.append = (entry) => new Promise<void>((resolve) => held.push(() => void append(entry).then(resolve)));
  const fromB: string[] = [];
  tap(world, (from, m) => {
    if (from === 'b') fromB.push(m.type);
  });
  try {
    await world.node('a').engine.register({ namespace: 'default', service: 'p', id: 'x', input: input('10.0.0.1', 80, null) });
    await world.sched.run(5 * world.limits.apAntiEntropyIntervalMs);
    assert.ok(b.engine.table.get('default/p/x'), 'b merged the record (in memory)');
    assert.ok(held.length > 0, "b's write is held");
    for (const type of ['ap_digest', 'ap_reply', 'ap_versions', 'ap_ack']) assert.ok(!fromB.includes(type), `b sent ${type} while its disk held the record back`);
    b.storage.append = append;
    for (const release of held.splice(0)) release();
    await world.sched.run(5 * world.limits.apAntiEntropyIntervalMs);
    assert.ok(fromB.includes('ap_ack') && (fromB.includes('ap_reply') || fromB.includes('ap_digest')), `b speaks again: ${[...new Set(fromB)].join(', ')}`);
    assert.equal(converged(world), null);
  } finally {
    await world.close();
  }
});

test('a peer that owed a rebuild stops owing it under writes that never pause, once it matched up to a cut', async () => {
  const world = new World({ seed: 4, nodes: 3, limits: { apTombstoneMinMs: 500, apTombstoneMaxMs: 3_000, apAntiEntropyMaxDeferMs: 400 } });
  await world.start();
  const a = world.node('a').engine;
  await a.register({ namespace: 'default', service: 'p', id: 'gone', input: input('10.0.0.1', 80, null) });
  await world.sched.run(1_000);
  assert.ok(world.node('c').engine.registry.instance('default', 'p', 'gone'), 'c has p/gone');
  world.net.partition(['a', 'b'], ['c']);
  await world.sched.run(200);
  await a.deregister('default', 'p', 'gone');
  // Kept longer than apTombstoneMaxMs: a and b collect the tombstone without c, and c owes them a rebuild.
  await world.sched.run(world.limits.apTombstoneMaxMs + 2_000);
  const owes = (): string[] => world.live().flatMap((n) => peerSync(n).filter(([, s]) => s.mustRebuild).map(([p]) => `${n.id}->${p}`));
  assert.ok(owes().length > 0, 'c owes a rebuild');
  world.net.healAll();
  const start = world.now;
  for (let t = 0, k = 0; t < 5_000; t += 4, k++) {
    world.sched.at(start + t, () => void a.register({ namespace: 'default', service: `s${k % 8}`, id: `i${k}`, input: input('10.0.0.2', 1000 + k, null) }).catch(() => undefined));
  }
  try {
    while (owes().length > 0 && world.now - start < 4_000) await world.sched.run(100);
    assert.deepEqual(owes(), [], 'nobody owes a rebuild any more, while the writes go on');
    const rebuilds = world.node('c').engine.stats.rebuilds;
    await world.sched.run(1_000);
    assert.equal(world.node('c').engine.stats.rebuilds, rebuilds, 'c rebuilds no more');
    for (const n of world.live()) assert.equal(n.engine.registry.instance('default', 'p', 'gone'), undefined, `p/gone came back on ${n.id}`);
    await world.sched.runUntil(start + 5_000);
    await convergeWithin(world);
    for (const n of world.live()) assert.equal(n.engine.registry.instance('default', 'p', 'gone'), undefined, `p/gone came back on ${n.id}`);
  } finally {
    await world.close();
  }
});

/**
 * Two nodes; p/x registered on a and deregistered; returns once both collected its
 * tombstone, with copies of the live record and of the tombstone as a held them.
 */
async function collectedOnBoth(seed: number): Promise<{ world: World; live: Record<string, unknown>; tomb: Record<string, unknown> }> {
  const world = new World({ seed, nodes: 2, limits: { apTombstoneMinMs: 500, apTombstoneMaxMs: 30_000 } });
  await world.start();
  await world.sched.run(500);
  const a = world.node('a').engine;
  await a.register({ namespace: 'default', service: 'p', id: 'x', input: input('10.0.0.1', 80, null) });
  await world.sched.run(500);
  const live = JSON.parse(JSON.stringify(a.table.get('default/p/x'))) as Record<string, unknown>;
  await a.deregister('default', 'p', 'x');
  const tomb = JSON.parse(JSON.stringify(a.table.get('default/p/x'))) as Record<string, unknown>;
  const gone = (): boolean => world.live().every((n) => n.engine.table.get('default/p/x') === undefined);
  const t0 = world.now;
  while (!gone() && world.now - t0 < 5_000) await world.sched.run(100);
  assert.ok(gone(), 'both collected the tombstone');
  return { world, live, tomb };
}

test('a node takes back neither a tombstone it collected nor the record that tombstone deleted', async () => {
  const { world, live, tomb } = await collectedOnBoth(6);
  try {
    const a = world.node('a').engine;
    // A peer that never learned of the delete (one that owes a rebuild, or fed by one) hands
    // back the old record, then the tombstone: a takes neither.
    for (const [seq, rec] of [[9_001, live], [9_002, tomb]] as const) {
      await handBack(world, rec, seq);
      assert.equal(a.table.get('default/p/x'), undefined, `a took back ${rec.del ? 'the tombstone' : 'the deleted record'}`);
      assert.equal(a.registry.instance('default', 'p', 'x'), undefined);
    }
    // A newer registration of the same key is taken as usual.
    await world.node('b').engine.register({ namespace: 'default', service: 'p', id: 'x', input: input('10.0.0.2', 81, null) });
    await world.sched.run(200);
    assert.equal(a.registry.instance('default', 'p', 'x')?.instance.port, 81);
  } finally {
    await world.close();
  }
});

test('a restart neither replays collected tombstones back nor forgets that it collected them', async () => {
  const { world, live } = await collectedOnBoth(8);
  try {
    await world.restart('a', 100);
    const a = world.node('a').engine;
    assert.equal(a.table.get('default/p/x'), undefined, 'the log replayed the collected tombstone back');
    await world.sched.run(1_000);
    await handBack(world, live, 9_001);
    assert.equal(a.registry.instance('default', 'p', 'x'), undefined, 'after the restart, a took back the record the tombstone deleted');
    assert.equal(converged(world), null);
  } finally {
    await world.close();
  }
});

test('a key registered again after its tombstone was collected everywhere gets a version above it, whatever the clock that deleted it', async () => {
  // c's clock is 30 s ahead, beyond apMaxClockOffsetMs of the simulation: its versions are
  // not followed, so a's clock stays below the tombstone a writes from c's record.
  const world = new World({ seed: 7, nodes: 3, skews: { c: 30_000 } });
  await world.start();
  try {
    const E = (id: string) => world.node(id).engine;
    await world.sched.run(1_000);
    await E('c').register({ namespace: 'default', service: 'p', id: 'x', input: input('10.0.0.3', 80, null) });
    await world.sched.run(1_000);
    await E('a').deregister('default', 'p', 'x');
    const tombstone = E('a').table.get('default/p/x')!.v;
    const t0 = world.now;
    while (['a', 'b', 'c'].some((id) => E(id).table.get('default/p/x')) && world.now - t0 < 10_000) await world.sched.run(200);
    assert.ok(['a', 'b', 'c'].every((id) => !E(id).table.get('default/p/x')), 'the tombstone was collected everywhere');
    const lease = await E('a').grantLease(10_000);
    await E('a').register({ namespace: 'default', service: 'p', id: 'x', input: input('10.0.0.1', 81, lease.leaseId) });
    assert.ok(E('a').table.get('default/p/x')!.v > tombstone, 'the new incarnation is above the tombstone');
    for (let i = 0; i < 3; i++) {
      await world.sched.run(1_000);
      await E('a').keepAlive(lease.leaseId);
    }
    for (const id of ['b', 'c']) assert.ok(E(id).registry.instance('default', 'p', 'x'), `${id} took the new incarnation`);
  } finally {
    await world.close();
  }
});

test('a node that learned a tombstone later than the deleter keeps it for its own collection, so the peer that never had it stays owed', async () => {
  for (const seed of [1, 2, 3]) {
    const world = new World({ seed, nodes: 3 });
    await world.start();
    try {
      const E = (id: string) => world.node(id).engine;
      await world.sched.run(1_000);
      await E('a').register({ namespace: 'default', service: 'p', id: 'x', input: input('10.0.0.1', 80, null) });
      await world.sched.run(1_000);
      world.net.partition(['a'], ['b'], ['c']);
      await world.sched.run(300);
      await E('a').deregister('default', 'p', 'x');
      await world.sched.run(3_000);
      world.net.setCut('a', 'b', false); // b learns the tombstone 3 s after a; c never does
      await world.sched.run(world.limits.apTombstoneMaxMs + 3_000);
      // a collected it first (time ran out) and marked c; b collected it itself and marked c too.
      const owes = (id: string) => peerSync(world.node(id)).filter(([, s]) => s.mustRebuild).map(([p]) => p);
      assert.deepEqual(owes('b'), ['c'], `seed ${seed}: b counts c as owing`);
      await world.restart('a', 500); // a forgets its marks
      await world.sched.run(world.limits.apTombstoneMaxMs + 3_000);
      world.net.healAll();
      await world.sched.run(3_000);
      for (const id of ['a', 'b', 'c']) assert.equal(E(id).registry.instance('default', 'p', 'x'), undefined, `seed ${seed}: x came back on ${id}`);
    } finally {
      await world.close();
    }
  }
});
