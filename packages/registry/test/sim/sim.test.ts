// Goal: the ap replication code converges under delay, loss, duplication, reordering,
// partitions (swizzle-clogging), restarts and clock skew, with one scenario per pitfall
// of the design; every failure names its seed, which replays exactly with run.js.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SCENARIOS, SimFailure } from './scenarios.js';

/** Fixed seeds, few enough to stay well under a minute on a loaded machine. */
const SEEDS: Record<string, number[]> = {
  chaos: [1, 2, 3, 4, 5, 6],
  'expiry-racing-failover': [1, 2, 3, 4],
  'clock-jump': [1, 2],
  'tombstone-collection': [1, 2],
  'losing-a-peer': [1, 2],
  'cluster-self-preservation': [1, 2],
  'restart-catch-up': [1, 2],
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
});
