// Goal: each built-in balancer distributes as specified: smooth WRR's exact nginx sequence,
// even round-robin, p2c and least-outstanding prefer less loaded instances, consistent
// hashing moves only the removed instance's keys, zone preference spills over below its
// healthy share, warning instances are deprioritised, and retries exclude tried instances.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Instance } from '@switchboard/protocol';
import {
  hash32,
  ConsistentHashBalancer,
  LeastOutstandingBalancer,
  LoadTracker,
  PowerOfTwoChoicesBalancer,
  RandomBalancer,
  RoundRobinBalancer,
  WeightedRoundRobinBalancer,
  ZoneAwareBalancer,
  createBalancer,
  preferPassing,
  type Balancer,
} from '../src/index.js';
import { inst } from './helpers.js';

/** A seeded PRNG (mulberry32) so that distribution tests are reproducible. */
function seeded(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function feed(b: Balancer, list: Instance[], load = new LoadTracker()): LoadTracker {
  b.update(list, { all: list, load });
  return load;
}

function counts(b: Balancer, n: number, key?: (i: number) => string): Map<string, number> {
  const m = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const p = b.pick(key ? { key: key(i) } : undefined);
    assert.ok(p);
    m.set(p.id, (m.get(p.id) ?? 0) + 1);
  }
  return m;
}

test('smooth weighted round-robin: weights 5,1,1 give a,a,b,a,c,a,a and repeat', () => {
  const b = new WeightedRoundRobinBalancer();
  feed(b, [inst('a', { weight: 5 }), inst('b', { weight: 1 }), inst('c', { weight: 1 })]);
  const seq = Array.from({ length: 14 }, () => b.pick()!.id);
  assert.deepEqual(seq, ['a', 'a', 'b', 'a', 'c', 'a', 'a', 'a', 'a', 'b', 'a', 'c', 'a', 'a']);
});

test('smooth weighted round-robin is proportional and keeps its state across unrelated updates', () => {
  const b = new WeightedRoundRobinBalancer();
  const list = [inst('a', { weight: 300 }), inst('b', { weight: 100 })];
  feed(b, list);
  const c = counts(b, 4000);
  assert.equal(c.get('a'), 3000);
  assert.equal(c.get('b'), 1000);
  // Two picks into the cycle, an update that keeps a and b must not restart it.
  const fresh = new WeightedRoundRobinBalancer();
  feed(fresh, list);
  const before = [fresh.pick()!.id, fresh.pick()!.id];
  feed(fresh, [...list]);
  const after = [fresh.pick()!.id, fresh.pick()!.id];
  assert.deepEqual([...before, ...after], ['a', 'a', 'b', 'a'], 'the same as an uninterrupted cycle');
});

test('round-robin visits every instance once per cycle', () => {
  const b = new RoundRobinBalancer({ random: seeded(1) });
  feed(b, ['a', 'b', 'c', 'd'].map((id) => inst(id)));
  const c = counts(b, 400);
  assert.deepEqual([...c.values()], [100, 100, 100, 100]);
  const cycle = new Set(Array.from({ length: 4 }, () => b.pick()!.id));
  assert.equal(cycle.size, 4);
});

test('random is roughly uniform', () => {
  const b = new RandomBalancer({ random: seeded(7) });
  feed(b, ['a', 'b', 'c', 'd'].map((id) => inst(id)));
  for (const n of counts(b, 40_000).values()) assert.ok(Math.abs(n - 10_000) < 600, `got ${n}`);
});

test('power of two choices prefers less loaded instances and never the most loaded of two', () => {
  const b = new PowerOfTwoChoicesBalancer({ random: seeded(3) });
  const load = feed(b, ['a', 'b', 'c', 'd'].map((id) => inst(id)));
  // Outstanding: a=0, b=1, c=2, d=3.
  for (const [id, n] of [['b', 1], ['c', 2], ['d', 3]] as const) for (let i = 0; i < n; i++) load.begin(id);
  const c = counts(b, 12_000);
  assert.equal(c.get('d') ?? 0, 0, 'the most loaded instance loses every comparison');
  assert.ok((c.get('a') ?? 0) > (c.get('b') ?? 0) && (c.get('b') ?? 0) > (c.get('c') ?? 0), JSON.stringify([...c]));
  // Expected shares with distinct pairs: a wins 3/6 pairs, b 2/6, c 1/6.
  assert.ok(Math.abs((c.get('a') ?? 0) - 6000) < 400);
});

test('least outstanding picks the least loaded and spreads ties', () => {
  const b = new LeastOutstandingBalancer();
  const load = feed(b, ['a', 'b', 'c'].map((id) => inst(id)));
  load.begin('a');
  load.begin('b');
  assert.deepEqual([...counts(b, 30).keys()], ['c']);
  load.end('a');
  load.end('b');
  const c = counts(b, 30);
  assert.deepEqual([...c.values()], [10, 10, 10]);
});

test('consistent hashing: stable per key, balanced, and removing an instance moves only its keys', () => {
  const ids = Array.from({ length: 10 }, (_, i) => `node-${i}`);
  const b = new ConsistentHashBalancer();
  feed(b, ids.map((id) => inst(id)));
  const keys = Array.from({ length: 20_000 }, (_, i) => `user-${i}`);
  const before = new Map(keys.map((k) => [k, b.pick({ key: k })!.id]));
  assert.equal(b.pick({ key: 'user-42' })!.id, before.get('user-42'));
  const perNode = new Map<string, number>();
  for (const id of before.values()) perNode.set(id, (perNode.get(id) ?? 0) + 1);
  for (const n of perNode.values()) assert.ok(n > 2_000 * 0.6 && n < 2_000 * 1.4, `unbalanced: ${[...perNode.values()]}`);

  feed(b, ids.filter((id) => id !== 'node-3').map((id) => inst(id)));
  let moved = 0;
  for (const k of keys) {
    const now = b.pick({ key: k })!.id;
    if (now !== before.get(k)) {
      moved++;
      assert.equal(before.get(k), 'node-3', `key ${k} moved from ${before.get(k)} to ${now}`);
    }
  }
  assert.equal(moved, perNode.get('node-3'));
  assert.ok(moved / keys.length < 0.15, `moved ${moved}`);
  // A retry walks the ring to another instance.
  const first = b.pick({ key: 'user-1' })!.id;
  const second = b.pick({ key: 'user-1', exclude: new Set([first]) })!.id;
  assert.notEqual(second, first);
});

test('zone preference stays local while enough local instances are healthy, then spills over', () => {
  const all = [
    inst('l1', { zone: 'eu-1' }),
    inst('l2', { zone: 'eu-1' }),
    inst('l3', { zone: 'eu-1' }),
    inst('l4', { zone: 'eu-1' }),
    inst('r1', { zone: 'us-1' }),
    inst('r2', { zone: 'us-1' }),
  ];
  const b = new ZoneAwareBalancer(() => new RoundRobinBalancer(), { zone: 'eu-1', minHealthyShare: 0.5 });
  const load = new LoadTracker();
  b.update(all, { all, load });
  assert.ok([...counts(b, 100).keys()].every((id) => id.startsWith('l')));
  // 2 of 4 local instances pickable: share 0.5, still local.
  b.update(all.filter((i) => i.id !== 'l1' && i.id !== 'l2'), { all, load });
  assert.deepEqual([...counts(b, 100).keys()].sort(), ['l3', 'l4']);
  // 1 of 4: below the share, every healthy instance of every zone takes calls.
  b.update(all.filter((i) => i.id === 'l4' || i.zone === 'us-1'), { all, load });
  assert.deepEqual([...counts(b, 90).keys()].sort(), ['l4', 'r1', 'r2']);
  assert.equal(b.localOnly, false);
  // A retry that tried every local candidate goes to another zone.
  b.update(all, { all, load });
  const ex = new Set(['l1', 'l2', 'l3', 'l4']);
  assert.ok(b.pick({ exclude: ex })!.id.startsWith('r'));
});

test('warning instances are deprioritised while enough instances pass', () => {
  const list = [inst('a'), inst('b'), inst('w', { health: 'warning' })];
  assert.deepEqual(preferPassing(list).map((i) => i.id), ['a', 'b']);
  // 1 passing of 3: sending everything to it would overload it; all are used.
  const few = [inst('a'), inst('w1', { health: 'warning' }), inst('w2', { health: 'warning' })];
  assert.equal(preferPassing(few).length, 3);
  for (const name of ['round-robin', 'random', 'weighted', 'least-outstanding', 'p2c', 'consistent-hash'] as const) {
    const b = createBalancer(name);
    feed(b, list);
    for (let i = 0; i < 50; i++) assert.notEqual(b.pick({ key: `k${i}` })!.id, 'w', name);
    // A retry that excluded every passing instance may still use the warning one.
    assert.equal(b.pick({ key: 'k', exclude: new Set(['a', 'b']) })!.id, 'w', name);
    assert.equal(b.pick({ exclude: new Set(['a', 'b', 'w']) }), undefined, name);
  }
});

test('an empty balancer picks nothing; unknown names are refused', () => {
  for (const name of ['round-robin', 'random', 'weighted', 'least-outstanding', 'p2c', 'consistent-hash'] as const) {
    const b = createBalancer(name);
    feed(b, []);
    assert.equal(b.pick(), undefined);
  }
  assert.throws(() => createBalancer('fastest' as never), /unknown balancer/);
});

test('consistent hashing: the bucket index finds the same ring point as a plain search', () => {
  for (const n of [1, 2, 7, 40]) {
    const b = new ConsistentHashBalancer({ pointsPerInstance: 30 });
    const list = Array.from({ length: n }, (_, i) => inst(`i${i}`, { weight: 50 + i * 25 }));
    feed(b, list);
    const ring = b as unknown as { points: Uint32Array; owners: Int32Array };
    for (let k = 0; k < 5_000; k++) {
      const key = `k${k}`;
      const h = hash32(key);
      let at = ring.points.findIndex((p) => p >= h);
      if (at < 0) at = 0;
      assert.equal(b.pick({ key })!.id, list[ring.owners[at]!]!.id, `n=${n} key=${key}`);
    }
  }
});
