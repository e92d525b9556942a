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
  b.observe(5_400, 1_600);
  assert.equal(b.offsetAt(1_600), 4_000 - 600 * MAX_CLOCK_DRIFT);
  // One that came quickly says more: taken.
  b.observe(6_010, 2_000);
  assert.equal(b.offsetAt(2_000), 4_010);
  b.observe(Number.NaN, 2_100);
  assert.equal(b.offsetAt(2_000), 4_010, 'a reading that is not a number changes nothing');
});

/**
 * Two clocks, seeded: this node's (`local`, the simulation's time) and the writer's, which
 * runs at a rate that changes at random within MAX_CLOCK_DRIFT of this one's (a time
 * daemon slewing it). The writer emits a reading now and then; each arrives after a delay,
 * in order (one connection): mostly quick, sometimes held by a stalled connection.
 */
function simulate(seed: number, steps: number, check: (b: ClockBound, local: number, writer: number, sinceReadingMs: number) => void, opts: { everyMs?: number; stalls?: boolean } = {}): void {
  const rng = new Rng(seed);
  const b = new ClockBound();
  let local = rng.int(0, 1e6);
  let writer = rng.int(-1e9, 1e9);
  let rate = 1;
  let nextReading = local;
  let lastArrival = local;
  let lastObserved = Number.NEGATIVE_INFINITY;
  const inFlight: { at: number; arrives: number }[] = [];
  for (let i = 0; i < steps; i++) {
    if (rng.chance(0.05)) rate = 1 + (rng.next() * 2 - 1) * MAX_CLOCK_DRIFT * 0.99;
    // Quiet spells of up to 10 minutes, when readings are not periodic.
    const dt = opts.everyMs === undefined && rng.chance(0.01) ? rng.next() * 600_000 : rng.next() * 200;
    local += dt;
    writer += dt * rate;
    if (local >= nextReading) {
      const delay = opts.stalls && rng.chance(0.03) ? rng.next() * 10_000 : rng.next() * 2;
      lastArrival = Math.max(lastArrival, local + delay);
      inFlight.push({ at: writer, arrives: lastArrival });
      nextReading = local + (opts.everyMs ?? rng.next() * 5_000);
    }
    while (inFlight.length > 0 && inFlight[0]!.arrives <= local) {
      const r = inFlight.shift()!;
      b.observe(r.at, r.arrives);
      lastObserved = r.arrives;
    }
    if (b.known) check(b, local, writer, local - lastObserved);
  }
}

test('seeded: over hours of drifting clocks, quiet spells and stalled readings, the bound is never ahead of the writer\'s clock', () => {
  for (const seed of [1, 2, 3, 42, 1234, 99_999]) {
    simulate(seed, 50_000, (b, local, writer) => {
      const bound = b.remoteAt(local);
      assert.ok(bound <= writer + 1e-6, `seed ${seed}: the bound ${bound} is ahead of the writer's clock ${writer}`);
    }, { stalls: true });
  }
});

test('seeded: with a reading every second over a quick link, the bound stays within 0.4 s of the writer\'s clock even at the most drift allowed (a write keeps at least 4.1 of its 4.5 s)', () => {
  for (const seed of [7, 8, 9]) {
    let worst = 0;
    simulate(seed, 50_000, (b, local, writer, since) => {
      const slack = writer - b.remoteAt(local);
      assert.ok(slack >= -1e-6, `seed ${seed}: ahead of the writer's clock by ${-slack} ms`);
      if (since <= 1_010) worst = Math.max(worst, slack);
    }, { everyMs: 1_000 });
    assert.ok(worst < 2 * 1_010 * MAX_CLOCK_DRIFT + 4, `seed ${seed}: up to ${worst.toFixed(1)} ms below the writer's clock`);
    assert.ok(worst > 0, 'below the writer\'s clock by the readings\' delays and the drift allowance, never on it');
  }
});
