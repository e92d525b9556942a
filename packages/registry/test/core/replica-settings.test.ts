// Goal: settings registers merge last-writer-wins in any order; settings a node kept
// before they were replicated are adopted with the lowest version (a real write wins over
// them, two nodes that disagree converge on one); removal registers are collected only
// once they are older than the given bound.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { versionMs } from '../../src/core/hlc.js';
import { SettingsReplica, type SettingsRecord } from '../../src/core/replica-settings.js';

const rec = (service: string, v: string, t: number | null, o = 'a'): SettingsRecord => ({ namespace: 'default', service, v, o, settings: { protectThreshold: t } });

test('merging is order-independent; the greater version wins; digests say whether tables agree', () => {
  const writes = [rec('pay', '000mwy0000010000@a', 0.5), rec('pay', '000mwy0000020000@b', 0.7), rec('cart', '000mwy0000010000@b', null), rec('pay', '000mwy0000015000@c', 0.2)];
  const x = new SettingsReplica();
  const y = new SettingsReplica();
  for (const w of writes) x.merge(w);
  for (const w of [...writes].reverse()) y.merge(w);
  for (const w of writes) assert.equal(y.merge(w), false, 'merging again changes nothing');
  assert.equal(x.get('default', 'pay')?.settings.protectThreshold, 0.7);
  assert.equal(x.digest(), y.digest());
  y.merge(rec('pay', '000mwy0000030000@a', 0.9));
  assert.notEqual(x.digest(), y.digest());
});

test('unversioned settings lose to any real write, and two nodes converge on the greater node id', () => {
  const a = new SettingsReplica();
  const b = new SettingsReplica();
  a.adoptUnversioned([{ namespace: 'default', service: 'pay', settings: { protectThreshold: 0.3 } }], 'a');
  b.adoptUnversioned([{ namespace: 'default', service: 'pay', settings: { protectThreshold: 0.6 } }], 'b');
  for (const r of b.all()) a.merge(r);
  for (const r of a.all()) b.merge(r);
  assert.equal(a.get('default', 'pay')?.settings.protectThreshold, 0.6);
  assert.equal(a.digest(), b.digest());
  assert.equal(a.merge(rec('pay', '000mwy0000010000@a', 0.1)), true, 'a real write wins');
  // A service that already has a register keeps it.
  assert.equal(a.adoptUnversioned([{ namespace: 'default', service: 'pay', settings: { protectThreshold: 0.9 } }], 'a'), 0);
});

test('removal registers are collected once older than the bound; live settings never are', () => {
  const t = new SettingsReplica();
  t.merge(rec('gone', '000mwy0000010000@a', null));
  t.merge(rec('kept', '000mwy0000010000@a', 0.5));
  const at = versionMs('000mwy0000010000@a');
  assert.equal(t.collectRemoved(at, versionMs), 0, 'not older than the bound yet');
  assert.equal(t.collectRemoved(at + 1, versionMs), 1);
  assert.deepEqual(t.all().map((r) => r.service), ['kept']);
});
