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

/** A check of key `default/<id>/i#h` that runs every hour with a timeout of one hour. */
function hourly(id: string): ScheduledCheck {
  const spec = validateInstanceInput({ address: '10.0.0.1', port: 80, checks: [{ id: 'h', type: 'tcp', interval: '1h', timeout: '1h', jitter: '0s' }] }, DEFAULT_LIMITS).checks[0] as CheckSpec;
  return { key: `default/${id}/i#h`, namespace: 'default', service: id, instanceId: 'i', checkId: 'h', spec, specKey: JSON.stringify(spec), target: '10.0.0.1:80' };
}

async function waitFor(what: string, pred: () => boolean, ms = 2_000): Promise<void> {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

test('removing a check aborts its running probe and frees its slot at once: a target that never answers starves no other check', async () => {
  const aborted: string[] = [];
  const results: string[] = [];
  const s = new CheckScheduler({
    maxConcurrent: 1,
    random: () => 0,
    probe: (c, signal) =>
      c.service === 'ok'
        ? Promise.resolve<CheckResult>({ status: 'passing', output: 'open' })
        : new Promise<CheckResult>((resolve) => signal.addEventListener('abort', () => (aborted.push(c.key), resolve({ status: 'critical', output: 'cancelled' })))),
    onResult: (c) => results.push(c.service),
  });
  try {
    s.upsert(hourly('evil'), 0);
    await waitFor('the probe of evil to run', () => s.stats().running === 1);
    s.remove('default/evil/i#h');
    assert.deepEqual(aborted, ['default/evil/i#h'], 'the probe was told to stop');
    assert.equal(s.stats().running, 0, 'its slot is free at once');
    s.upsert(hourly('ok'), 0);
    await waitFor('the check of ok to run', () => results.length > 0);
    assert.deepEqual(results, ['ok'], 'the removed check reported nothing');
    assert.equal(s.stats().timeouts, 0, 'a removed run is not a timeout');
  } finally {
    s.close();
  }
});

test('one check never has two probes in flight: added again while its removed run still ends, it waits for that run', async () => {
  let inFlight = 0;
  let most = 0;
  let starts = 0;
  const finishers: (() => void)[] = [];
  const s = new CheckScheduler({
    maxConcurrent: 8,
    random: () => 0,
    // A probe that does not honour its abort: it ends only when the test says so.
    probe: () => {
      starts++;
      most = Math.max(most, ++inFlight);
      return new Promise<CheckResult>((resolve) => finishers.push(() => (inFlight--, resolve({ status: 'critical', output: 'late' }))));
    },
    onResult: () => undefined,
  });
  try {
    const c = hourly('web');
    s.upsert(c, 0);
    await waitFor('the first probe', () => starts === 1);
    for (let i = 0; i < 5; i++) {
      s.remove(c.key);
      s.upsert(c, 0);
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(starts, 1, 'no second probe while the first is still in flight');
    assert.equal(s.stats().running, 0, 'the removed run holds no slot');
    assert.equal(s.stats().queued, 1, 'the check added again waits, counted once');
    (finishers.shift() as () => void)();
    await waitFor('the second probe, once the first ended', () => starts === 2);
    assert.equal(most, 1);
    assert.equal(s.stats().running, 1);
  } finally {
    for (const f of finishers) f();
    s.close();
  }
});

test('the queue holds live checks only: register/deregister cycles while every slot is busy leave nothing behind', async () => {
  const s = new CheckScheduler({
    maxConcurrent: 1,
    random: () => 0,
    probe: (_c, signal) => new Promise<CheckResult>((resolve) => signal.addEventListener('abort', () => resolve({ status: 'critical', output: 'cancelled' }))),
    onResult: () => undefined,
  });
  try {
    s.upsert(hourly('hog'), 0); // holds the only slot for its hour
    await waitFor('the hog to run', () => s.stats().running === 1);
    const c = hourly('cycled');
    for (let i = 0; i < 50; i++) {
      s.upsert(c, 0);
      await waitFor('the cycled check to come due', () => s.stats().queued === 1);
      s.remove(c.key);
      assert.equal(s.stats().queued, 0, `cycle ${i}: a removed check leaves the queue`);
    }
    assert.deepEqual([s.stats().scheduled, s.stats().running], [1, 1]);
  } finally {
    s.close();
  }
});
