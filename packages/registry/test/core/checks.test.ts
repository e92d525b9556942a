// Goal: the check state machine of the core flips a check's shown state only after the
// configured number of consecutive results (flap damping), records only state changes as
// entries, times ttl checks and critical persistent instances over the injected clock, and
// rebuilds the same state on replay.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_LIMITS, validateInstanceInput, type CheckResult, type CheckSpec, type CheckState } from '@switchboard/protocol';
import { nextCheckState, type CheckCounters } from '../../src/core/checks.js';
import { ManualClock } from '../../src/core/clock.js';
import type { Entry } from '../../src/core/entry.js';
import { Registry, type RegistrationItem } from '../../src/core/registry.js';

const pass: CheckResult = { status: 'passing', output: 'HTTP 200 OK' };
const fail: CheckResult = { status: 'critical', output: 'HTTP 500 Internal Server Error' };
const warn: CheckResult = { status: 'warning', output: 'HTTP 429 Too Many Requests' };

function spec(extra: Record<string, unknown> = {}): CheckSpec {
  return validateInstanceInput({ address: '10.0.0.1', port: 80, checks: [{ id: 'c', type: 'http', ...extra }] }, DEFAULT_LIMITS).checks[0] as CheckSpec;
}

/** Feeds results one by one; returns the shown status after each (null: unchanged). */
function feed(s: CheckSpec, start: CheckState, results: CheckResult[]): (string | null)[] {
  const c: CheckCounters = { passes: 0, failures: 0 };
  let shown = start;
  return results.map((r) => {
    const next = nextCheckState(s, shown, c, r);
    if (next) shown = next;
    return next ? next.status : null;
  });
}

const initial: CheckState = { id: 'c', type: 'http', status: 'critical', output: 'awaiting the first result' };
const passing: CheckState = { id: 'c', type: 'http', status: 'passing', output: 'HTTP 200 OK' };

test('flap damping: a state flips only after the threshold of consecutive results', () => {
  const s = spec({ passingThreshold: 2, criticalThreshold: 3 });
  // one failure (or two) between passes never flips a passing check
  assert.deepEqual(feed(s, passing, [fail, pass, fail, fail, pass, fail, fail, fail]), [null, null, null, null, null, null, null, 'critical']);
  // back to passing takes two passes in a row
  const critical: CheckState = { ...passing, status: 'critical', output: fail.output };
  assert.deepEqual(feed(s, critical, [pass, fail, pass, pass]), [null, null, null, 'passing']);
});

test('defaults: the first pass shows passing, the second failure in a row shows critical', () => {
  const s = spec();
  assert.equal(s.passingThreshold, 1);
  assert.equal(s.criticalThreshold, 2);
  assert.deepEqual(feed(s, initial, [pass, fail, fail, fail, pass]), ['passing', null, 'critical', null, 'passing']);
});

test('past the threshold each failing result shows its own status; 429 counts as failing', () => {
  const s = spec({ criticalThreshold: 2 });
  assert.deepEqual(feed(s, passing, [warn, warn, fail, warn, pass]), [null, 'warning', 'critical', 'warning', 'passing']);
});

test('reaching a threshold refreshes the output even when the status stays', () => {
  const s = spec({ criticalThreshold: 2 });
  const c: CheckCounters = { passes: 0, failures: 0 };
  const stale: CheckState = { ...initial, output: 'no report within 30s (ttl)' }; // e.g. counters started over
  assert.equal(nextCheckState(s, stale, c, fail), null);
  const next = nextCheckState(s, stale, c, fail);
  assert.deepEqual(next, { ...initial, output: fail.output });
  // later failures with another output change nothing: only state changes make entries
  assert.equal(nextCheckState(s, next!, c, { status: 'critical', output: 'connection refused' }), null);
});

test('a new check takes its first failure\'s output at once, before the threshold; a pass below its threshold leaves the placeholder', () => {
  const s = spec({ criticalThreshold: 2, passingThreshold: 2 });
  const c: CheckCounters = { passes: 0, failures: 0 };
  const first = nextCheckState(s, initial, c, warn);
  assert.deepEqual(first, { ...initial, status: 'critical', output: warn.output }, 'the status stays as the thresholds decide');
  assert.deepEqual(nextCheckState(s, first!, c, fail), { ...initial, output: fail.output }, 'the threshold refreshes it as before');
  const c2: CheckCounters = { passes: 0, failures: 0 };
  assert.equal(nextCheckState(s, initial, c2, pass), null, 'one pass of two: still awaiting');
  assert.deepEqual(nextCheckState(s, initial, c2, fail), { ...initial, output: fail.output });
});

function setup() {
  const clock = new ManualClock(1_000);
  const reg = new Registry({ epoch: 'e1', limits: DEFAULT_LIMITS, clock, wallClock: { now: () => 1_700_000_000_000 + clock.now() } });
  const log: Entry[] = [];
  const run = <T extends { entry: Entry | null }>(o: T): T => {
    if (o.entry) log.push(o.entry);
    return o;
  };
  return { clock, reg, log, run };
}

function item(id: string, body: Record<string, unknown>): RegistrationItem {
  return { namespace: 'default', service: 'web', id, input: validateInstanceInput({ address: '10.0.0.1', port: 8080, ...body }, DEFAULT_LIMITS) };
}

test('only state changes become entries, with reason and detail', () => {
  const { reg, run, log } = setup();
  run(reg.register(item('a', { checks: [{ id: 'h', type: 'http', interval: '1s' }] })));
  const specKey = reg.trackedCheck('default', 'web', 'a', 'h')!.specKey;
  const results = [pass, pass, pass, fail, fail, fail, pass];
  const revisions = results.map((r) => run(reg.recordCheckResult('default', 'web', 'a', 'h', specKey, r)));
  assert.deepEqual(revisions.map((o) => o.entry !== null), [true, false, false, false, true, false, true]);
  const put = revisions[4]!.events[0]!;
  assert.equal(put.reason, 'check_failed');
  assert.equal(put.instance.health, 'critical');
  assert.equal(log.length, 4);
  const hist = reg.history('default', 'web', 'a')!;
  assert.deepEqual(hist.entries.map((e) => [e.reason, e.health, e.detail]), [
    ['registered', 'critical', '10.0.0.1:8080, persistent'],
    ['check_passed', 'passing', 'h passing: HTTP 200 OK'],
    ['check_failed', 'critical', 'h critical: HTTP 500 Internal Server Error'],
    ['check_passed', 'passing', 'h passing: HTTP 200 OK'],
  ]);
  assert.equal(hist.entries[0]!.at, new Date(1_700_000_001_000).toISOString());
});

test('a result computed under an older spec is dropped', () => {
  const { reg, run } = setup();
  run(reg.register(item('a', { checks: [{ id: 'h', type: 'http', interval: '1s' }] })));
  const old = reg.trackedCheck('default', 'web', 'a', 'h')!.specKey;
  run(reg.register(item('a', { checks: [{ id: 'h', type: 'http', interval: '2s' }] })));
  assert.equal(run(reg.recordCheckResult('default', 'web', 'a', 'h', old, pass)).entry, null);
  const fresh = reg.trackedCheck('default', 'web', 'a', 'h')!.specKey;
  assert.notEqual(run(reg.recordCheckResult('default', 'web', 'a', 'h', fresh, pass)).entry, null);
});

test('a ttl check turns critical when no report arrives within its TTL; the instance stays', () => {
  const { reg, run, clock } = setup();
  run(reg.register(item('a', { checks: [{ id: 't', type: 'ttl', ttl: '10s' }] })));
  run(reg.reportCheck('default', 'web', 'a', 't', { status: 'passing', output: 'fine' }));
  assert.equal(reg.instance('default', 'web', 'a')!.instance.health, 'passing');
  clock.advance(9_000);
  run(reg.reportCheck('default', 'web', 'a', 't', { status: 'passing', output: 'still fine' })); // restarts the TTL
  assert.equal(reg.nextCheckDeadline(), clock.now() + 10_000);
  clock.advance(9_999);
  assert.deepEqual(reg.healthDue(), []);
  clock.advance(1);
  const [out] = reg.healthDue().map(run);
  assert.equal(out?.events[0]?.reason, 'check_failed');
  const inst = reg.instance('default', 'web', 'a')!.instance;
  assert.deepEqual(inst.checks[0], { id: 't', type: 'ttl', status: 'critical', output: 'no report within 10s (ttl)' });
  clock.advance(60_000);
  assert.deepEqual(reg.healthDue(), [], 'one expiry per silence');
  assert.ok(reg.instance('default', 'web', 'a'), 'a ttl check never removes the instance');
  run(reg.reportCheck('default', 'web', 'a', 't', { status: 'warning', output: 'degraded' }));
  assert.equal(reg.instance('default', 'web', 'a')!.instance.health, 'warning');
});

test('reports into a check that is unknown or not a ttl check are refused', () => {
  const { reg, run } = setup();
  run(reg.register(item('a', { checks: [{ id: 'h', type: 'http' }] })));
  const code = (fn: () => unknown) => {
    try {
      fn();
    } catch (err) {
      return (err as { code: string }).code;
    }
    return 'none';
  };
  assert.equal(code(() => reg.reportCheck('default', 'web', 'a', 'nope', pass)), 'CHECK_NOT_FOUND');
  assert.equal(code(() => reg.reportCheck('default', 'web', 'a', 'h', pass)), 'INVALID_ARGUMENT');
  assert.equal(code(() => reg.reportCheck('default', 'web', 'zz', 'h', pass)), 'INSTANCE_NOT_FOUND');
});

test('a persistent instance critical for deregisterCriticalAfter is deregistered; a leased one is not', () => {
  const { reg, run, clock } = setup();
  const checks = [{ id: 'h', type: 'http', deregisterCriticalAfter: '30s', criticalThreshold: 1 }];
  run(reg.grantLease('L', 3_600_000));
  run(reg.register(item('p', { checks })));
  run(reg.register(item('e', { checks, leaseId: 'L' })));
  const key = (id: string) => reg.trackedCheck('default', 'web', id, 'h')!.specKey;
  clock.advance(20_000);
  run(reg.recordCheckResult('default', 'web', 'p', 'h', key('p'), pass)); // passing resets the clock
  clock.advance(20_000);
  assert.deepEqual(reg.healthDue(), []);
  run(reg.recordCheckResult('default', 'web', 'p', 'h', key('p'), fail));
  clock.advance(29_999);
  assert.deepEqual(reg.healthDue(), []);
  clock.advance(1);
  const outs = reg.healthDue().map(run);
  assert.deepEqual(outs.map((o) => [o.events[0]?.type, o.events[0]?.instance.id, o.events[0]?.reason]), [['delete', 'p', 'critical_timeout']]);
  assert.ok(reg.instance('default', 'web', 'e'), 'an instance bound to a lease goes with its lease instead');
  assert.match(reg.history('default', 'web', 'p')!.entries.at(-1)!.detail!, /h critical for longer than 30s/);
  assert.equal(reg.history('default', 'web', 'p')!.exists, false);
});

test('deregisterCriticalAfter counts from the first critical result, not from a check never probed; a leased instance turned persistent starts the count then', () => {
  const { reg, run, clock } = setup();
  const checks = [{ id: 'h', type: 'http', interval: '10m', deregisterCriticalAfter: '2s', criticalThreshold: 1 }];
  run(reg.register(item('slow', { checks })));
  clock.advance(60_000); // the first probe of a 10 m interval may come a minute later
  assert.deepEqual(reg.healthDue(), [], 'awaiting its first result, the instance stays');
  const key = (id: string) => reg.trackedCheck('default', 'web', id, 'h')!.specKey;
  run(reg.recordCheckResult('default', 'web', 'slow', 'h', key('slow'), fail));
  clock.advance(1_999);
  assert.deepEqual(reg.healthDue(), []);
  clock.advance(1);
  assert.deepEqual(reg.healthDue().map(run).map((o) => o.events[0]?.reason), ['critical_timeout']);

  // Critical for a minute while leased (the field does nothing then), then registered
  // again without its lease: removed 2 s later, not at once.
  run(reg.grantLease('L', 3_600_000));
  run(reg.register(item('moved', { checks, leaseId: 'L' })));
  run(reg.recordCheckResult('default', 'web', 'moved', 'h', key('moved'), fail));
  clock.advance(60_000);
  run(reg.register(item('moved', { checks })));
  clock.advance(1_000);
  assert.deepEqual(reg.healthDue(), [], 'not removed on turning persistent');
  clock.advance(1_000);
  assert.deepEqual(reg.healthDue().map(run).map((o) => o.events[0]?.instance.id), ['moved']);
});

test('deregisterCriticalAfter of a new check that never passes counts from its first failure, whatever criticalThreshold', () => {
  const { reg, run, clock } = setup();
  const checks = [{ id: 'h', type: 'http', interval: '10s', deregisterCriticalAfter: '15s' }]; // criticalThreshold 2
  run(reg.register(item('never', { checks })));
  const key = reg.trackedCheck('default', 'web', 'never', 'h')!.specKey;
  clock.advance(1_000);
  run(reg.recordCheckResult('default', 'web', 'never', 'h', key, fail));
  assert.equal(reg.instance('default', 'web', 'never')!.instance.checks[0]!.output, fail.output, 'the first failure says why at once');
  clock.advance(10_000);
  run(reg.recordCheckResult('default', 'web', 'never', 'h', key, fail)); // the threshold: critical by the thresholds
  clock.advance(4_999);
  assert.deepEqual(reg.healthDue(), []);
  clock.advance(1);
  assert.deepEqual(reg.healthDue().map(run).map((o) => o.events[0]?.reason), ['critical_timeout'], '15 s after the first failure, not after the second');
});

test('replay rebuilds check states, histories and settings', () => {
  const { reg, run, log, clock } = setup();
  run(reg.register(item('a', { checks: [{ id: 'h', type: 'http' }, { id: 't', type: 'ttl', ttl: '5s' }] })));
  run(reg.recordCheckResult('default', 'web', 'a', 'h', reg.trackedCheck('default', 'web', 'a', 'h')!.specKey, pass));
  run(reg.reportCheck('default', 'web', 'a', 't', { status: 'passing', output: 'ok' }));
  run(reg.setServiceSettings('default', 'web', { protectThreshold: 0.4 }));
  run(reg.setStatus('default', 'web', 'a', 'draining', 'drained'));
  clock.advance(5_000);
  reg.healthDue().map(run);
  run(reg.register(item('b', {})));
  run(reg.deregister('default', 'web', 'b'));

  const replayed = new Registry({ epoch: 'e1', limits: DEFAULT_LIMITS, clock });
  for (const e of log) replayed.apply(JSON.parse(JSON.stringify(e)) as Entry);
  assert.deepEqual(replayed.snapshot(), reg.snapshot());
  assert.deepEqual(replayed.serviceSettings('default', 'web'), { protectThreshold: 0.4 });
  assert.deepEqual(replayed.history('default', 'web', 'a')!.entries.map((e) => e.reason), ['registered', 'check_passed', 'check_passed', 'drained', 'check_failed']);
  assert.equal(replayed.history('default', 'web', 'b')!.exists, false);

  const restored = Registry.fromSnapshot(JSON.parse(JSON.stringify(reg.snapshot())), { limits: DEFAULT_LIMITS, clock });
  assert.deepEqual(restored.snapshot(), reg.snapshot());
  assert.equal(restored.serviceRevision('default', 'web'), reg.serviceRevision('default', 'web'));
});

test('histories are bounded per instance and in number of deleted instances', () => {
  const limits = { ...DEFAULT_LIMITS, maxHistoryPerInstance: 3, maxDeletedHistories: 2 };
  const clock = new ManualClock(0);
  const reg = new Registry({ epoch: 'e', limits, clock });
  for (let i = 0; i < 5; i++) reg.register(item('a', { port: 1000 + i }));
  assert.deepEqual(reg.history('default', 'web', 'a')!.entries.map((e) => e.revision), [3, 4, 5]);
  for (const id of ['x', 'y', 'z']) {
    reg.register(item(id, {}));
    reg.deregister('default', 'web', id);
  }
  assert.equal(reg.history('default', 'web', 'x'), undefined, 'the oldest deleted history is forgotten');
  assert.equal(reg.history('default', 'web', 'z')!.exists, false);
});
