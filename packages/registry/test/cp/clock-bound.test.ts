// Goal: a node's bound on the writer's clock is never ahead of that clock, whatever the
// readings' delays and however the two clocks drift (within MAX_CLOCK_DRIFT), so a
// write's planBy is never later than the moment its sender stops waiting; and it is
// close to the truth when readings come quickly. Pure: a seeded simulation of two clocks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ClockBound, MAX_CLOCK_DRIFT } from '../../src/engines/cp/clock-bound.js';
import { Rng } from '../sim/world.js';

test('before any reading nothing is known; a reading bounds the other clock from below, a later and better one replaces it', () => {
  const b = new ClockBound();
  assert.equal(b.known, false);
  assert.equal(b.remoteAt(100), Number.NEGATIVE_INFINITY, 'no time on the writer\'s clock can be given yet');
  // The writer read 5,000 on its clock; this node got it when its own read 1,000: the
  // writer's clock is at least 4,000 ahead (the reading took some time to come).
  b.observe(5_000, 1_000);
  assert.equal(b.known, true);
  assert.equal(b.offsetAt(1_000), 4_000);
  // Aged by the most the clocks may drift apart meanwhile.
  assert.equal(b.offsetAt(11_000), 4_000 - 10_000 * MAX_CLOCK_DRIFT);
  assert.equal(b.remoteAt(11_000), 11_000 + 4_000 - 10_000 * MAX_CLOCK_DRIFT);
  // A reading that came slowly says less: kept out.
  b.observe(5_500, 1_600);
  assert.equal(b.offsetAt(1_600), 4_000 - 600 * MAX_CLOCK_DRIFT);
  // One that came quickly says more: taken.
  b.observe(6_010, 2_000);
  assert.equal(b.offsetAt(2_000), 4_010);
  b.observe(Number.NaN, 2_100);
  assert.equal(b.offsetAt(2_000), 4_010, 'a reading that is not a number changes nothing');
});

test('seeded: over hours of drifting clocks and delayed readings, the bound is never ahead of the writer\'s clock, and close to it', () => {
  for (const seed of [1, 2, 3, 42, 1234, 99_999]) {
    const rng = new Rng(seed);
    // The writer's clock: another origin, and a rate that differs by up to the most allowed.
    const origin = rng.int(-1e9, 1e9);
    const rate = 1 + (rng.next() * 2 - 1) * MAX_CLOCK_DRIFT * 0.99;
    const writerAt = (local: number) => origin + local * rate;
    const b = new ClockBound();
    let local = rng.int(0, 1e6);
    for (let i = 0; i < 20_000; i++) {
      // A reading taken now on the writer, arriving after a delay: mostly quick, sometimes
      // a stalled connection (up to 10 s).
      const delay = rng.chance(0.05) ? rng.next() * 10_000 : rng.next() * 2;
      b.observe(writerAt(local), local + delay);
      // Quiet spells: up to 10 minutes without a reading.
      local += rng.chance(0.01) ? rng.next() * 600_000 : rng.next() * 1_000;
      const bound = b.remoteAt(local);
      const truth = writerAt(local);
      assert.ok(bound <= truth + 1e-6, `seed ${seed}, step ${i}: the bound ${bound} is ahead of the writer's clock ${truth}`);
    }
    // Right after a quick reading the bound is within that reading's delay (0.5 ms) and
    // the drift of the moment: far from the seconds a write's budget has.
    b.observe(writerAt(local), local + 0.5);
    const slack = writerAt(local + 0.5) - b.remoteAt(local + 0.5);
    assert.ok(slack >= 0 && slack < 2, `seed ${seed}: ${slack} ms below the writer's clock after a quick reading`);
  }
});
