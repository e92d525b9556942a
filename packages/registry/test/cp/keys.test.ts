// Goal: the etcd key layout parses back what it builds (and nothing else), lease ids
// round-trip to etcd's int64 ids, and rendezvous hashing spreads checks evenly and moves
// only the checks of a node that leaves.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rendezvousOwner as ownerOf } from '../../src/core/rendezvous.js';
import { barrierKeyOf, heardKeyOf, progressAnswersAreOrdered, instanceKeyOf, leaseIdFromEtcd, leaseIdToEtcd, leaseKeyOf, nodeKeyOf, parseKey, prefixEnd, settingsKeyOf, whyKeyOf } from '../../src/engines/cp/keys.js';

const L = { prefix: '/switchboard/' };

test('keys parse back to what they name', () => {
  assert.deepEqual(parseKey(L, instanceKeyOf(L, 'default', 'pay', 'i-1')), { kind: 'instance', namespace: 'default', service: 'pay', id: 'i-1' });
  assert.deepEqual(parseKey(L, leaseKeyOf(L, '694da21a6190bc1b')), { kind: 'lease', leaseId: '694da21a6190bc1b' });
  assert.deepEqual(parseKey(L, settingsKeyOf(L, 'ns', 'pay')), { kind: 'settings', namespace: 'ns', service: 'pay' });
  assert.deepEqual(parseKey(L, nodeKeyOf(L, 'sb-1')), { kind: 'node', nodeId: 'sb-1' });
  assert.deepEqual(parseKey(L, heardKeyOf(L, 'ns', 'pay', 'i', 'hb')), { kind: 'heard', namespace: 'ns', service: 'pay', id: 'i', checkId: 'hb' });
  assert.deepEqual(parseKey(L, whyKeyOf(L)), { kind: 'why' });
  for (const k of ['/other/instances/a/b/c', '/switchboard/instances/a/b', '/switchboard/instances/a//c', '/switchboard/leases/', '/switchboard/why/x', '/switchboard/unknown/x', '/switchboard/heard/a/b/c']) {
    assert.deepEqual(parseKey(L, k), { kind: 'other' }, k);
  }
});

test('prefix ranges and lease ids', () => {
  assert.equal(prefixEnd('/switchboard/').toString(), '/switchboard0');
  assert.equal(leaseIdFromEtcd('7587899181378878491'), '694da21a6190bc1b');
  assert.equal(leaseIdToEtcd('694da21a6190bc1b'), '7587899181378878491');
  assert.equal(leaseIdToEtcd('not-hex'), null);
  assert.equal(leaseIdToEtcd('1'.repeat(17)), null);
});

test('rendezvous hashing: stable, balanced, and a leaving node moves only its own keys', () => {
  const nodes = ['n1', 'n2', 'n3'];
  const keys = Array.from({ length: 3000 }, (_, i) => `default/svc/i${i}`);
  const owner = new Map(keys.map((k) => [k, ownerOf(k, nodes)]));
  const counts = nodes.map((n) => [...owner.values()].filter((o) => o === n).length);
  for (const c of counts) assert.ok(c > 800 && c < 1200, `unbalanced: ${counts.join('/')}`);
  assert.equal(ownerOf('default/svc/i1', [...nodes].reverse()), owner.get('default/svc/i1'), 'independent of order');
  let moved = 0;
  for (const k of keys) {
    const now = ownerOf(k, ['n1', 'n3']);
    if (owner.get(k) !== 'n2') assert.equal(now, owner.get(k));
    else moved++;
  }
  assert.equal(moved, counts[1]);
  assert.equal(ownerOf('x', []), undefined);
});

test('progress answers are trusted only on etcd releases that order them with events', () => {
  for (const v of ['3.4.23', '3.4.30', '3.5.0', '3.5.12', '3.3.27', 'unknown', '']) assert.equal(progressAnswersAreOrdered(v), false, v);
  for (const v of ['3.4.31', '3.4.34', '3.5.13', '3.5.21', '3.6.0', '3.6.4']) assert.equal(progressAnswersAreOrdered(v), true, v);
  // The barrier key is under the prefix (the view's watch sees it) and is no registry key.
  const l = { prefix: '/sb/' };
  assert.equal(barrierKeyOf(l, 'n1'), '/sb/barrier/n1');
  assert.deepEqual(parseKey(l, barrierKeyOf(l, 'n1')), { kind: 'other' });
});
