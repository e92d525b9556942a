// Goal: the replica table keeps, per key, the record with the greatest version whatever
// the order and number of deliveries, and its per-service digests are equal exactly when
// two tables hold the same records.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ReplicaTable, fnv1a, type ReplicaRecord } from '../../src/core/replica.js';
import { Rng } from '../sim/world.js';

function rec(id: string, v: string, over: Partial<ReplicaRecord> = {}): ReplicaRecord {
  return { namespace: 'default', service: 'svc', id, v, o: 'a', i: { id, service: 'svc', namespace: 'default', address: '10.0.0.1', port: 1, protocol: 'http', zone: null, version: null, tags: [], metadata: {}, weight: 1, status: 'up', health: 'passing', checks: [], leaseId: null }, specs: [], ...over };
}

function shuffled<T>(xs: T[], seed: number): T[] {
  const out = [...xs];
  let s = seed;
  for (let i = out.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

test('merge keeps the greatest version, in any order, any number of times', () => {
  const all: ReplicaRecord[] = [];
  for (let k = 0; k < 20; k++) for (let v = 1; v <= 5; v++) all.push(v === 5 && k % 3 === 0 ? rec(`i${k}`, `v${v}`, { del: 'deregistered', i: undefined }) : rec(`i${k}`, `v${v}`));
  const tables = [1, 2, 3].map((seed) => {
    const t = new ReplicaTable();
    for (const r of shuffled([...all, ...all.slice(0, 30)], seed)) t.merge(r, 0);
    return t;
  });
  for (const t of tables) {
    assert.equal(t.size, 20);
    assert.equal(t.tombstones, 7);
    for (let k = 0; k < 20; k++) assert.equal(t.get(`default/svc/i${k}`)?.v, 'v5');
    assert.deepEqual(t.digest('default/svc'), tables[0]?.digest('default/svc'));
  }
  assert.equal(tables[0]?.merge(rec('i1', 'v4'), 0), 'older');
  assert.equal(tables[0]?.merge(rec('i1', 'v5'), 0), 'same');
});

test('digests differ when one record differs and follow removals', () => {
  const a = new ReplicaTable();
  const b = new ReplicaTable();
  for (const t of [a, b]) for (let k = 0; k < 50; k++) t.merge(rec(`i${k}`, 'v1'), 0);
  assert.deepEqual(a.digest('default/svc'), b.digest('default/svc'));
  b.merge(rec('i7', 'v2'), 0);
  assert.notDeepEqual(a.digest('default/svc'), b.digest('default/svc'));
  a.merge(rec('i7', 'v2'), 0);
  assert.deepEqual(a.digest('default/svc'), b.digest('default/svc'));
  a.merge(rec('i8', 'v2', { del: 'deregistered', i: undefined }), 0);
  b.merge(rec('i8', 'v2', { del: 'deregistered', i: undefined }), 0);
  assert.equal(a.collect((r) => r.del !== undefined).length, 1);
  assert.notDeepEqual(a.digest('default/svc'), b.digest('default/svc'));
  b.remove('default/svc/i8');
  assert.deepEqual(a.digest('default/svc'), b.digest('default/svc'));
  assert.equal(a.digest('default/svc')?.count, 49);
  for (let k = 0; k < 50; k++) a.remove(`default/svc/i${k}`);
  assert.equal(a.digest('default/svc'), undefined);
  assert.deepEqual(a.serviceKeys(), []);
});

test('a digest up to a cut leaves out exactly the records younger than the cut', () => {
  const a = new ReplicaTable();
  const b = new ReplicaTable();
  for (const t of [a, b]) for (let k = 0; k < 20; k++) t.merge(rec(`i${k}`, `v${String(k).padStart(2, '0')}`), 0);
  // Nothing above the cut: the digest of the whole service.
  assert.deepEqual(a.digestUpTo('default/svc', 'v99'), a.digest('default/svc'));
  // a has newer records (in flight to b): the services differ, their parts up to the cut do not.
  a.merge(rec('i20', 'v50'), 0);
  a.merge(rec('i3', 'v51'), 0);
  a.merge(rec('i4', 'v52', { del: 'deregistered', i: undefined }), 0);
  assert.notDeepEqual(a.digest('default/svc'), b.digest('default/svc'));
  assert.deepEqual(b.digestUpTo('default/svc', 'v49'), b.digest('default/svc'));
  // i3 and i4 moved above the cut on a only: on b they still count.
  const cutA = a.digestUpTo('default/svc', 'v49');
  assert.equal(cutA?.count, 18);
  for (const k of ['i3', 'i4']) b.remove(`default/svc/${k}`);
  assert.deepEqual(cutA, b.digest('default/svc'));
  // A record older than the cut that b lacks still shows.
  a.merge(rec('i30', 'v10'), 0);
  assert.notDeepEqual(a.digestUpTo('default/svc', 'v49'), b.digest('default/svc'));
  // A service with only young records: nothing up to the cut.
  a.merge(rec('j1', 'v60', { service: 'other' }), 0);
  assert.deepEqual(a.digestUpTo('default/other', 'v49'), { a: 0, b: 0, count: 0 });
  assert.equal(a.digestUpTo('default/none', 'v49'), undefined);
});

test('digests up to a cut are the same whether the records were settled or not', () => {
  // Random puts, deletes, removals and settles; every cut's digest against one computed
  // from scratch over the records the table holds.
  const rng = new Rng(7);
  const rnd = (n: number): number => rng.int(0, n - 1);
  const t = new ReplicaTable();
  const v = (n: number): string => `v${String(n).padStart(4, '0')}`;
  const brute = (service: string, cut: string): { a: number; b: number; count: number } | undefined => {
    const held = t.serviceRecords(service);
    if (held.length === 0) return undefined;
    const other = new ReplicaTable();
    for (const r of held) if (r.v <= cut) other.merge(r, 0);
    return other.digest(service) ?? { a: 0, b: 0, count: 0 };
  };
  let clock = 0;
  let settled = 0;
  for (let step = 0; step < 3_000; step++) {
    clock++;
    const service = `s${rnd(3)}`;
    const id = `i${rnd(40)}`;
    const op = rnd(10);
    if (op < 6) t.merge(rec(id, v(clock), { service }), 0);
    else if (op < 8) t.merge(rec(id, v(clock), { service, del: 'deregistered', i: undefined }), 0);
    else if (op < 9) t.remove(`default/${service}/${id}`);
    else {
      settled = Math.max(settled, clock - rnd(50));
      t.settle(v(settled));
    }
    if (step % 7 === 0) {
      for (const s of ['s0', 's1', 's2']) {
        // Cuts above the settled one (the young records walked) and below it (the whole service walked).
        for (const cut of [v(clock - rnd(30)), v(settled + rnd(5)), v(Math.max(0, settled - 1 - rnd(20)))]) {
          assert.deepEqual(t.digestUpTo(`default/${s}`, cut), brute(`default/${s}`, cut), `step ${step} ${s} cut ${cut} settled ${settled}`);
        }
      }
    }
  }
});

test("a service's digest is the XOR of two FNV-1a hashes of each record (nodes of every version must agree)", () => {
  const t = new ReplicaTable();
  t.merge(rec('i1', 'v1'), 0);
  t.merge(rec('i2', 'v2', { del: 'deregistered', i: undefined }), 0);
  // FNV-1a itself: the published value of "a" (and a node of any version computes the same).
  assert.equal(fnv1a('a', 0x811c9dc5), 0xe40c292c);
  const h = fnv1a;
  const r1 = 'default/svc/i1\u0000v1\u0000p';
  const r2 = 'default/svc/i2\u0000v2\u0000d';
  assert.deepEqual(t.digest('default/svc'), { a: (h(r1, 0x811c9dc5) ^ h(r2, 0x811c9dc5)) >>> 0, b: (h(r1, 0x2b1f6a3d) ^ h(r2, 0x2b1f6a3d)) >>> 0, count: 2 });
});

test('restore from a snapshot gives the same table, every record dated from the restore', () => {
  const a = new ReplicaTable();
  for (let k = 0; k < 10; k++) a.merge(rec(`i${k}`, `v${k}`, k % 4 === 0 ? { del: 'lease_expired', i: undefined } : {}), k);
  const b = ReplicaTable.restore(JSON.parse(JSON.stringify(a.snapshot())), 5_000);
  assert.deepEqual(b.digest('default/svc'), a.digest('default/svc'));
  assert.equal(b.tombstones, a.tombstones);
  // A tombstone's age counts from the restore: the time the node was down is not counted.
  assert.deepEqual([...b.values()].map((r) => r.at), Array(10).fill(5_000));
});

test('service keys stay sorted and follow services that appear and go, through merges, removals and collection', () => {
  const t = new ReplicaTable();
  const live = new Set<string>(); // the service keys of the records held, found by hand
  let s = 7;
  const next = (n: number) => (s = (s * 1103515245 + 12345) % 2 ** 31) % n;
  for (let step = 0; step < 2_000; step++) {
    const svc = `s${next(40)}`;
    const key = `default/${svc}/i${next(5)}`;
    const op = next(10);
    if (op < 6) t.merge(rec(key.split('/')[2] as string, `v${step}`, { service: svc, ...(op === 5 ? { del: 'deregistered', i: undefined } : {}) }), 0);
    else if (op < 9) t.remove(key);
    else t.collect((r) => r.service === svc);
    live.clear();
    for (const r of t.values()) live.add(`${r.namespace}/${r.service}`);
    assert.deepEqual(t.serviceKeys(), [...live].sort(), `after step ${step}`);
  }
});
