// Goal: the check scheduler reports a run's result only for the target it ran against: a
// run still in progress when the instance's address (its default target) changes is not
// counted for the new address.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_LIMITS, validateInstanceInput, type CheckResult, type CheckSpec } from '@switchboard/protocol';
import { CheckScheduler, type ScheduledCheck } from '../../src/health/scheduler.js';

test('a result from the old target is dropped when the target changed during the run', async () => {
  const spec = validateInstanceInput({ address: '10.0.0.1', port: 80, checks: [{ id: 'h', type: 'tcp', interval: '1s' }] }, DEFAULT_LIMITS).checks[0] as CheckSpec;
  const check = (target: string): ScheduledCheck => ({ key: 'default/web/i#h', namespace: 'default', service: 'web', instanceId: 'i', checkId: 'h', spec, specKey: JSON.stringify(spec), target });
  const results: [string, CheckResult['status']][] = [];
  let finish: ((r: CheckResult) => void) | null = null;
  const s = new CheckScheduler({
    maxConcurrent: 4,
    random: () => 0,
    probe: (c) => new Promise<CheckResult>((resolve) => (finish = (r) => resolve(r))).then((r) => ({ ...r, output: `${c.target}: ${r.output}` })),
    onResult: (c, r) => results.push([c.target, r.status]),
  });
  try {
    s.upsert(check('10.0.0.1:80'), 0);
    const t0 = Date.now();
    while (finish === null && Date.now() - t0 < 2_000) await new Promise((r) => setTimeout(r, 5));
    assert.ok(finish, 'the first run started');
    s.upsert(check('10.0.0.2:80'), 0); // the address changed while it runs
    (finish as (r: CheckResult) => void)({ status: 'critical', output: 'refused' });
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(results, [], 'the old address\'s result is not counted');
    // The new address is checked at once, not an interval (1 s) later.
    const t1 = Date.now();
    while (results.length === 0 && Date.now() - t1 < 800) {
      (finish as ((r: CheckResult) => void) | null)?.({ status: 'passing', output: 'open' });
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.deepEqual(results, [['10.0.0.2:80', 'passing']]);
  } finally {
    s.close();
  }
});
