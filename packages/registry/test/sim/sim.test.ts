// Goal: the ap replication code converges under delay, loss, duplication, reordering,
// partitions (swizzle-clogging), restarts and clock skew, with one scenario per pitfall
// of the design; every failure names its seed, which replays exactly with run.js.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SCENARIOS, SimFailure } from './scenarios.js';

/** Fixed seeds, few enough to stay well under a minute on a loaded machine. */
const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i + 1);
const SEEDS: Record<string, number[]> = {
  chaos: range(30),
  'lossy-links': range(20),
  'expiry-racing-failover': range(30),
  'clock-jump': range(10),
  'tombstone-collection': range(20),
  'losing-a-peer': range(20),
  'cluster-self-preservation': range(20),
  'restart-catch-up': range(20),
  'owner-reasserts': range(20),
  'member-removed': range(20),
  'long-split': range(10),
};

for (const [name, seeds] of Object.entries(SEEDS)) {
  test(`simulation: ${name}`, { timeout: 60_000 }, async () => {
    for (const seed of seeds) {
      try {
        const r = await SCENARIOS[name]!(seed);
        assert.ok(r.convergedMs <= r.boundMs);
      } catch (err) {
        if (err instanceof SimFailure) assert.fail(`${err.message}\n  last events:\n  ${err.trace.slice(-40).join('\n  ')}`);
        throw err;
      }
    }
  });
}

test('simulation: the same seed replays the same run', { timeout: 30_000 }, async () => {
  const a = await SCENARIOS.chaos!(7);
  const b = await SCENARIOS.chaos!(7);
  assert.deepEqual(a, b);
  const c = await SCENARIOS.chaos!(8);
  assert.notEqual(a.fingerprint, c.fingerprint, 'another seed makes another run');
});

test('simulation harness: a background error and simulated time that stops are failures, not hangs or unnamed crashes', async () => {
  const { Scheduler, MAX_TIMERS_PER_INSTANT } = await import('./world.js');
  const stuck = new Scheduler();
  const rearm = (): void => void stuck.at(stuck.clock.now(), rearm);
  stuck.at(stuck.clock.now() + 10, rearm);
  await assert.rejects(stuck.run(1_000), new RegExp(`simulated time stopped at \\d+ ms: ${MAX_TIMERS_PER_INSTANT} timers`));
  const failing = new Scheduler();
  failing.at(failing.clock.now() + 5, () => void Promise.reject(new Error('boom in a chain nobody awaits')).catch((err: unknown) => failing.fail(err)));
  await assert.rejects(failing.run(100), /boom in a chain nobody awaits/);
});
