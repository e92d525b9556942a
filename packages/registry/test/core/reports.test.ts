// Goal: consumer reports turn an instance `warning` only when enough distinct reporters
// reported it within the window (one reporter alone never changes anything), the warning
// clears when the reports age out or an own check turns passing, the number of reporters
// remembered is bounded, and a restart keeps the warning for one more window only.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_LIMITS, validateInstanceInput, type Limits } from '@switchboard/protocol';
import { ManualClock } from '../../src/core/clock.js';
import type { Entry } from '../../src/core/entry.js';
import { Registry } from '../../src/core/registry.js';

function setup(limits: Partial<Limits> = {}) {
  const clock = new ManualClock(0);
  const reg = new Registry({ epoch: 'e', limits: { ...DEFAULT_LIMITS, ...limits }, clock });
  const log: Entry[] = [];
  const run = <T extends { entry: Entry | null }>(o: T): T => {
    if (o.entry) log.push(o.entry);
    return o;
  };
  run(reg.register({ namespace: 'default', service: 'api', id: 'a', input: validateInstanceInput({ address: '10.0.0.1', port: 80, checks: [{ id: 't', type: 'ttl', ttl: '1h' }] }, DEFAULT_LIMITS) }));
  run(reg.reportCheck('default', 'api', 'a', 't', { status: 'passing', output: '' }));
  return { clock, reg, log, run };
}

const health = (reg: Registry) => reg.instance('default', 'api', 'a')!.instance.health;
const report = (reg: Registry, reporter: string, kind: 'timeout' | 'connect_refused' = 'timeout') => reg.reportInstance('default', 'api', 'a', { reporter, kind, detail: null });

test('one reporter, however often, changes nothing; a second distinct one turns it warning', () => {
  const { reg, run } = setup();
  for (let i = 0; i < 10; i++) assert.equal(run(report(reg, 'c1').outcome).entry, null);
  assert.equal(health(reg), 'passing');
  const r = report(reg, 'c2', 'connect_refused');
  assert.equal(r.reporters, 2);
  assert.equal(r.warning, true);
  assert.equal(r.outcome.events[0]?.reason, 'reported');
  assert.equal(health(reg), 'warning');
  const check = reg.instance('default', 'api', 'a')!.instance.checks.find((c) => c.type === 'reports');
  assert.deepEqual(check, { id: 'consumer-reports', type: 'reports', status: 'warning', output: 'reported by 2 consumers within 30s: timeout, connect_refused' });
  assert.equal(report(reg, 'c3').outcome.entry, null, 'more reports while warning make no entry');
});

test('the warning clears when the reports leave the window', () => {
  const { reg, run, clock } = setup();
  report(reg, 'c1');
  clock.advance(10_000);
  run(report(reg, 'c2').outcome);
  clock.advance(20_000); // c1 is now 30 s old
  assert.deepEqual(reg.healthDue(), []);
  clock.advance(1);
  const [out] = reg.healthDue().map(run);
  assert.equal(out?.events[0]?.reason, 'reported');
  assert.equal(health(reg), 'passing');
  assert.match(reg.history('default', 'api', 'a')!.entries.at(-1)!.detail!, /consumer reports cleared/);
});

test('reports older than the window do not add up', () => {
  const { reg, clock } = setup();
  report(reg, 'c1');
  clock.advance(30_001);
  assert.equal(report(reg, 'c2').reporters, 1);
  assert.equal(health(reg), 'passing');
});

test('an own check turning passing clears the warning', () => {
  const { reg, run } = setup();
  run(reg.reportCheck('default', 'api', 'a', 't', { status: 'critical', output: 'stuck' }));
  report(reg, 'c1');
  run(report(reg, 'c2').outcome);
  assert.equal(health(reg), 'critical');
  const out = run(reg.reportCheck('default', 'api', 'a', 't', { status: 'passing', output: 'ok again' }));
  assert.equal(out.events[0]?.instance.health, 'passing');
  assert.equal(report(reg, 'c3').reporters, 1, 'earlier reports were forgotten');
});

test('the reporters remembered per instance are bounded', () => {
  const { reg } = setup({ maxReportersPerInstance: 3 });
  for (let i = 0; i < 50; i++) assert.ok(report(reg, `c${i}`).reporters <= 3);
});

test('after a restart the warning stays for one window, then clears', () => {
  const { reg, log, run, clock } = setup();
  report(reg, 'c1');
  run(report(reg, 'c2').outcome);
  const restarted = new Registry({ epoch: 'e', limits: DEFAULT_LIMITS, clock });
  for (const e of log) restarted.apply(JSON.parse(JSON.stringify(e)) as Entry);
  assert.equal(restarted.instance('default', 'api', 'a')!.instance.health, 'warning');
  clock.advance(29_999);
  assert.deepEqual(restarted.healthDue(), []);
  clock.advance(1);
  assert.equal(restarted.healthDue().length, 1);
  assert.equal(restarted.instance('default', 'api', 'a')!.instance.health, 'passing');
});
