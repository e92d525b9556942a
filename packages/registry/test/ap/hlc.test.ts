// Goal: versions of the hybrid logical clock sort like time, always grow, exceed any
// version they replace, ignore wall-clock steps while the node runs, and are not dragged
// ahead by a peer whose clock is far in the future.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../../src/core/clock.js';
import { HybridClock, decodeVersion, encodeVersion, versionMs } from '../../src/core/hlc.js';
import { expiryVersion } from '../../src/core/replica.js';

const T0 = 1_700_000_000_000;

function clock(node: string, mono = new ManualClock(0), wall = T0) {
  return { mono, hlc: new HybridClock({ node, wallAtStart: wall, monotonic: mono, maxOffsetMs: 10_000 }) };
}

test('versions encode, decode and sort like (time, counter, node)', () => {
  const v = encodeVersion({ physical: T0, logical: 5, node: 'a' });
  assert.deepEqual(decodeVersion(v), { physical: T0, logical: 5, node: 'a' });
  assert.equal(versionMs(v), T0);
  assert.ok(encodeVersion({ physical: T0, logical: 6, node: 'a' }) > v);
  assert.ok(encodeVersion({ physical: T0 + 1, logical: 0, node: 'a' }) > encodeVersion({ physical: T0, logical: 9999, node: 'z' }));
  assert.ok(encodeVersion({ physical: T0, logical: 5, node: 'b' }) > v, 'the node id breaks ties');
});

test('now() always grows, also when the time stands still', () => {
  const { mono, hlc } = clock('a');
  const seen: string[] = [];
  for (let i = 0; i < 1000; i++) seen.push(hlc.now());
  mono.advance(5);
  seen.push(hlc.now());
  for (let i = 1; i < seen.length; i++) assert.ok((seen[i] as string) > (seen[i - 1] as string));
  assert.equal(versionMs(seen.at(-1) as string), T0 + 5);
});

test('a wall clock stepped while the node runs does not move its versions', () => {
  let wall = T0;
  const mono = new ManualClock(0);
  const hlc = new HybridClock({ node: 'a', wallAtStart: wall, monotonic: mono, maxOffsetMs: 10_000 });
  wall += 3_600_000; // read once at start: the step is never seen
  mono.advance(10);
  assert.equal(versionMs(hlc.now()), T0 + 10);
  assert.equal(wall - T0, 3_600_000);
});

test('a version from a peer is followed, unless it is too far ahead', () => {
  const { hlc } = clock('a');
  const near = encodeVersion({ physical: T0 + 5_000, logical: 3, node: 'b' });
  assert.equal(hlc.observe(near), true);
  assert.ok(hlc.now() > near);
  const far = encodeVersion({ physical: T0 + 3_600_000, logical: 0, node: 'c' });
  assert.equal(hlc.observe(far), false);
  assert.equal(hlc.rejected, 1);
  assert.ok(versionMs(hlc.now()) < T0 + 10_000, 'the clock was not dragged ahead');
  // A write that replaces the far record still gets a greater version.
  const replacing = hlc.after(far);
  assert.ok(replacing > far);
  assert.equal(decodeVersion(replacing).node, 'a');
});

test('an expiry version lies just after its incarnation and before any later write', () => {
  const { hlc } = clock('a');
  const put = hlc.now();
  const expiry = expiryVersion(put);
  assert.ok(expiry > put);
  const { hlc: other } = clock('b');
  other.observe(put);
  const takeover = other.after(put);
  assert.ok(takeover > expiry, 'a write made after seeing the incarnation beats its expiry');
});
