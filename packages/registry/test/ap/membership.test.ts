// Goal: what a removed member leaves behind is decided alike on every node without any
// coordination: exactly one remaining member adopts each persistent record (and removing a
// further member moves only its share), lease-bound records become one tombstone that every
// node writes identically, and adoption never wins over a write made after the record.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HybridClock } from '../../src/core/hlc.js';
import { adopterOf, adoptionVersion, removedOwnerAction, removedTombstone } from '../../src/core/membership.js';
import { ReplicaTable, expiryVersion, recordKey, type ReplicaRecord } from '../../src/core/replica.js';

function rec(id: string, v: string, o: string, leaseId: string | null): ReplicaRecord {
  return { namespace: 'default', service: 'svc', id, v, o, i: { id, service: 'svc', namespace: 'default', address: '10.0.0.1', port: 1, protocol: 'http', zone: null, version: null, tags: [], metadata: {}, weight: 1, status: 'up', health: 'passing', checks: [], leaseId, owner: o }, specs: [] };
}

test('the adopter is one of the members, the same whatever the order they are listed in', () => {
  const members = ['a', 'b', 'd', 'e'];
  const count = new Map<string, number>();
  for (let k = 0; k < 2_000; k++) {
    const key = `default/svc/i-${k}`;
    const chosen = adopterOf(key, members) as string;
    assert.ok(members.includes(chosen));
    assert.equal(adopterOf(key, [...members].reverse()), chosen);
    count.set(chosen, (count.get(chosen) ?? 0) + 1);
  }
  // Spread over every member (a rough balance: each gets a fair share).
  for (const m of members) assert.ok((count.get(m) ?? 0) > 300, `${m} adopts ${count.get(m)} of 2000`);
  assert.equal(adopterOf('x', []), undefined);
});

test('removing a further member moves only the records that member adopted', () => {
  const before = ['a', 'b', 'd'];
  const after = ['a', 'b'];
  for (let k = 0; k < 500; k++) {
    const key = `default/svc/i-${k}`;
    const was = adopterOf(key, before);
    if (was !== 'd') assert.equal(adopterOf(key, after), was, `${key} moved from ${was}`);
  }
});

test('the merge rule: keep others, drop lease-bound, adopt persistent on exactly one node', () => {
  const removed = new Set(['c']);
  const members = ['a', 'b'];
  assert.equal(removedOwnerAction(rec('x', '1', 'a', 'L1'), removed, 'a', members), 'keep', 'a live owner');
  assert.equal(removedOwnerAction({ ...rec('x', '1', 'c', 'L1'), i: undefined, del: 'deregistered' }, removed, 'a', members), 'keep', 'a tombstone');
  assert.equal(removedOwnerAction(rec('x', '1', 'c', 'L1'), removed, 'a', members), 'drop');
  assert.equal(removedOwnerAction(rec('x', '1', 'c', 'L1'), removed, 'b', members), 'drop');
  for (let k = 0; k < 200; k++) {
    const r = rec(`p-${k}`, '1', 'c', null);
    const actions = members.map((m) => removedOwnerAction(r, removed, m, members));
    assert.equal(actions.filter((x) => x === 'adopt').length, 1, `exactly one adopter of p-${k}: ${actions}`);
    assert.equal(actions.filter((x) => x === 'wait').length, 1);
  }
});

test('every node writes the same tombstone for a dropped record; a stale copy loses to it, a newer write wins', () => {
  const r = rec('x', '0000000000a0000@c', 'c', 'L1');
  const t1 = removedTombstone(r);
  // As another node makes it: from the record as its table holds it (stored-only fields must not leak in).
  const held = new ReplicaTable();
  held.merge(r, 5);
  const t2 = removedTombstone(held.get(recordKey(r)) as ReplicaRecord);
  assert.deepEqual(t1, t2);
  assert.equal(t1.v, expiryVersion(r.v));
  assert.equal(t1.del, 'owner_removed');
  const table = new ReplicaTable();
  table.merge(t1, 0);
  assert.equal(table.merge(r, 1), 'older', 'the stale copy from a node that has not heard loses');
  const clock = new HybridClock({ node: 'b', wallAtStart: 0, monotonic: { now: () => 0 }, maxOffsetMs: 1_000 });
  assert.equal(table.merge({ ...r, v: clock.after(r.v), o: 'b' }, 2), 'applied', 'a registration made after it wins');
});

test('an adoption sorts after what it adopts, before the incarnation expiry and any later write', () => {
  const v = '0000000000a0003@c';
  const mine = adoptionVersion(v, 'a');
  assert.ok(mine > v);
  assert.ok(mine < expiryVersion(v), 'a critical_timeout decided by the owner still wins');
  const clock = new HybridClock({ node: 'b', wallAtStart: 0, monotonic: { now: () => 0 }, maxOffsetMs: 1_000 });
  assert.ok(clock.after(v) > mine, 'a deregistration made anywhere after the record wins');
  // Two nodes that both adopted: one winner, the same everywhere.
  const theirs = adoptionVersion(v, 'b');
  assert.notEqual(mine, theirs);
  assert.ok(theirs > mine);
  // A further removal of the adopter: adopted again, still after.
  assert.ok(adoptionVersion(theirs, 'a') > theirs);
});
