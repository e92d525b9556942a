// Goal: self-preservation holds lapsed leases instead of evicting them when more than the
// threshold share of leases lapse within the window (for the node, or for one zone), never
// engages below the minimum number of leases (a two-instance setup expires normally), and
// releases when renewals come back or after the longest hold.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_LIMITS, validateInstanceInput, type Limits } from '@switchboard/protocol';
import { ManualClock } from '../../src/core/clock.js';
import { Registry } from '../../src/core/registry.js';

function setup(limits: Partial<Limits> = {}) {
  const clock = new ManualClock(0);
  const reg = new Registry({ epoch: 'e', limits: { ...DEFAULT_LIMITS, ...limits }, clock });
  return { clock, reg };
}

/** n leases of ttl 10 s, each with one instance `i<k>` (in `zone`, if given). */
function fleet(reg: Registry, n: number, prefix = 'i', zone?: string): string[] {
  const ids: string[] = [];
  for (let k = 0; k < n; k++) {
    const lease = `${prefix}${k}-lease`;
    reg.grantLease(lease, 10_000);
    reg.register({ namespace: 'default', service: 'svc', id: `${prefix}${k}`, input: validateInstanceInput({ address: '10.0.0.1', port: 80, leaseId: lease, ...(zone ? { zone } : {}) }, DEFAULT_LIMITS) });
    ids.push(lease);
  }
  return ids;
}

const instances = (reg: Registry) => reg.service('default', 'svc')?.instances.size ?? 0;
const reasons = (outs: ReturnType<Registry['expireDue']>) => outs.flatMap((o) => o.events.map((e) => e.reason));

test('below the minimum number of leases a lapsed lease simply expires', () => {
  const { reg, clock } = setup();
  const [a, b] = fleet(reg, 2);
  clock.advance(5_000);
  reg.keepAlive(b!);
  clock.advance(5_000);
  assert.deepEqual(reasons(reg.expireDue()), ['lease_expired']);
  assert.equal(reg.lease(a!), undefined);
  assert.equal(reg.selfPreservationStatus().engaged, false);
});

test('a mass lapse is held; renewals release it; the truly dead are then evicted', () => {
  const { reg, clock } = setup();
  const leases = fleet(reg, 20);
  clock.advance(5_000);
  for (const l of leases.slice(11)) reg.keepAlive(l); // 9 stay alive
  clock.advance(5_000);
  const outs = reg.expireDue();
  assert.deepEqual(reasons(outs), Array(11).fill('eviction_blocked'));
  assert.equal(instances(reg), 20, 'nothing was evicted');
  const st = reg.selfPreservationStatus();
  assert.equal(st.engaged, true);
  assert.equal(st.state, 'protecting');
  assert.equal(st.expiredInWindow, 11);
  assert.equal(st.leases, 20);
  assert.equal(st.blockedLeases, 11);
  assert.equal(st.blockedEvictions, 11);
  assert.match(st.reason!, /11 of 20 leases lapsed within 15s/);
  assert.deepEqual(reg.takeProtectionChanges().map((c) => [c.zone, c.engaged]), [[null, true]]);

  // more lapses while engaged are held too
  clock.advance(5_000);
  const more = reg.expireDue();
  assert.deepEqual(reasons(more), Array(9).fill('eviction_blocked'));
  assert.equal(instances(reg), 20);

  // renewals come back for all but 3: protection ends, and those 3 get their TTL once more
  for (const l of leases.slice(3)) reg.keepAlive(l);
  clock.advance(100);
  assert.deepEqual(reg.expireDue(), [], 'no eviction at the instant of release');
  assert.equal(reg.selfPreservationStatus().engaged, false);
  assert.equal(reg.selfPreservationStatus().blockedLeases, 3);
  assert.equal(reg.selfPreservationStatus().releasingLeases, 3);
  assert.deepEqual(reg.takeProtectionChanges().map((c) => [c.zone, c.engaged]), [[null, false]]);
  // one of them was only late: it renews within the grace and stays (the others keep renewing)
  const alive = leases.slice(2);
  for (let t = 1; t <= 9; t++) {
    clock.advance(1_000);
    for (const l of alive) reg.keepAlive(l);
    assert.deepEqual(reg.expireDue(), [], `the grace is the lease TTL, counted from the release (${t} s)`);
  }
  clock.advance(999);
  for (const l of alive) reg.keepAlive(l);
  assert.deepEqual(reg.expireDue(), []);
  clock.advance(1);
  assert.deepEqual(reasons(reg.expireDue()), ['lease_expired', 'lease_expired']);
  assert.equal(instances(reg), 18);
  assert.equal(reg.selfPreservationStatus().blockedLeases, 0);
});

test('a late keep-alive: refused when nothing holds the lease, renews it when self-preservation holds it or is engaged for it', () => {
  const { reg, clock } = setup();
  const leases = fleet(reg, 20);
  clock.advance(5_000);
  for (const l of leases.slice(11)) reg.keepAlive(l); // 9 stay alive, deadline 15 s
  clock.advance(5_000);
  // Past the deadline of the 11, before the tick, protection not engaged yet: expired.
  assert.throws(() => reg.keepAlive(leases[0]!), { code: 'LEASE_NOT_FOUND' });
  assert.deepEqual(reasons(reg.expireDue()), Array(11).fill('eviction_blocked'), 'the tick holds the 11 (the refused one too)');
  // A held lease, past its deadline, is renewed by its client's keep-alive.
  assert.deepEqual(reg.keepAlive(leases[0]!), { leaseId: leases[0], ttlMs: 10_000 });
  assert.equal(reg.selfPreservationStatus().blockedLeases, 10);
  // One of the 9 runs out while protection is engaged; its keep-alive arrives before the
  // tick that would hold it: renewed, as it would have been once held.
  clock.set(15_000);
  assert.deepEqual(reg.keepAlive(leases[11]!), { leaseId: leases[11], ttlMs: 10_000 });
  assert.equal(reg.lease(leases[11]!)!.expiresAt, 25_000);
  assert.deepEqual(reasons(reg.expireDue()), Array(8).fill('eviction_blocked'), 'the other 8 are held, the renewed one is not');
  assert.equal(instances(reg), 20);
});

test('staggered lapses: evictions go on until the share passes the threshold', () => {
  const { reg, clock } = setup();
  const leases = fleet(reg, 20);
  // every second one more stops renewing, so that they lapse one at a time
  const dead = new Set<string>();
  const seen: (string | undefined)[] = [];
  for (let second = 1; second <= 25; second++) {
    clock.set(second * 1_000);
    if (second <= 12) dead.add(leases[second - 1]!);
    for (const l of leases) if (!dead.has(l)) reg.keepAlive(l);
    seen.push(...reasons(reg.expireDue()));
  }
  // 10 of 20 is not above 50%: the 11th lapse engages
  assert.deepEqual(seen.slice(0, 10), Array(10).fill('lease_expired'));
  assert.deepEqual(seen.slice(10), ['eviction_blocked', 'eviction_blocked']);
});

test('a zone that loses most of its leases is protected on its own', () => {
  const { reg, clock } = setup();
  const a = fleet(reg, 10, 'a', 'zone-a');
  const b = fleet(reg, 20, 'b', 'zone-b');
  clock.advance(5_000);
  for (const l of [...a.slice(6), ...b]) reg.keepAlive(l);
  clock.advance(5_000);
  assert.deepEqual(reasons(reg.expireDue()), Array(6).fill('eviction_blocked'));
  const st = reg.selfPreservationStatus();
  assert.equal(st.engaged, true);
  assert.equal(st.expiredInWindow, 6, 'globally 6 of 30 is below the threshold');
  assert.deepEqual(st.zones.map((z) => [z.zone, z.engaged, z.expiredInWindow, z.leases]), [['zone-a', true, 6, 10]]);
  assert.match(st.reason!, /zone zone-a: 6 of 10/);
});

test('held leases whose processes came back under new leases end, and the zone releases', () => {
  const { reg, clock } = setup({ selfPreservationMaxHoldMs: 0 }); // no hold limit: only the counts release it
  const a = fleet(reg, 10, 'a', 'zone-a');
  const b = fleet(reg, 30, 'b', 'zone-b');
  clock.advance(5_000);
  for (const l of [...a.slice(6), ...b]) reg.keepAlive(l);
  clock.advance(5_000);
  assert.deepEqual(reasons(reg.expireDue()), Array(6).fill('eviction_blocked'));
  assert.equal(reg.selfPreservationStatus().engaged, true);
  // The six processes restart: new leases, the same instance ids.
  for (let k = 0; k < 6; k++) {
    reg.grantLease(`new${k}`, 10_000);
    reg.register({ namespace: 'default', service: 'svc', id: `a${k}`, input: validateInstanceInput({ address: '10.0.0.1', port: 80, leaseId: `new${k}`, zone: 'zone-a' }, DEFAULT_LIMITS) });
  }
  const alive = [...a.slice(6), ...b, ...Array.from({ length: 6 }, (_, k) => `new${k}`)];
  for (let t = 0; t < 15; t++) {
    clock.advance(1_000);
    for (const l of alive) reg.keepAlive(l);
    reg.expireDue();
  }
  assert.equal(reg.selfPreservationStatus().engaged, false, 'the zone released: its old leases held nothing any more');
  assert.equal(reg.selfPreservationStatus().blockedLeases, 0);
  // A zone-a lease that really dies now expires within its TTL.
  const dead = a[6]!;
  const stillAlive = alive.filter((l) => l !== dead);
  let gone = -1;
  for (let t = 1; t <= 20 && gone < 0; t++) {
    clock.advance(1_000);
    for (const l of stillAlive) reg.keepAlive(l);
    if (reasons(reg.expireDue()).includes('lease_expired')) gone = t;
  }
  assert.ok(gone > 0 && gone <= 11, `the dead lease expired after ${gone} s`);
});

test('a held lease is let go after selfPreservationMaxHoldMs', () => {
  const { reg, clock } = setup({ selfPreservationMaxHoldMs: 60_000 });
  const leases = fleet(reg, 10);
  clock.advance(5_000);
  for (const l of leases.slice(8)) reg.keepAlive(l);
  clock.advance(5_000);
  assert.equal(reasons(reg.expireDue()).length, 8);
  for (let t = 0; t < 59; t++) {
    clock.advance(1_000);
    for (const l of leases.slice(8)) reg.keepAlive(l);
    assert.deepEqual(reg.expireDue(), []);
  }
  clock.advance(1_000);
  assert.deepEqual(reasons(reg.expireDue()), Array(8).fill('lease_expired'));
  assert.equal(instances(reg), 2);
});

test('a threshold of 100% turns self-preservation off', () => {
  const { reg, clock } = setup({ selfPreservationThresholdPercent: 100 });
  fleet(reg, 20);
  clock.advance(10_000);
  assert.deepEqual(reasons(reg.expireDue()), Array(20).fill('lease_expired'));
});

test('when every held lease is renewed, protection ends', () => {
  const { reg, clock } = setup();
  const leases = fleet(reg, 10);
  clock.advance(10_000);
  assert.equal(reasons(reg.expireDue()).length, 10);
  assert.equal(reg.selfPreservationStatus().engaged, true);
  for (const l of leases) reg.keepAlive(l);
  assert.deepEqual(reg.expireDue(), []);
  assert.equal(reg.selfPreservationStatus().engaged, false);
  assert.equal(reg.selfPreservationStatus().blockedLeases, 0);
});

test('a lease whose session closed ends with reason connection_lost', () => {
  const { reg, clock } = setup();
  const [a] = fleet(reg, 1);
  reg.detachLease(a!, 500);
  clock.advance(499);
  assert.deepEqual(reg.expireDue(), []);
  clock.advance(1);
  assert.deepEqual(reasons(reg.expireDue()), ['connection_lost']);
});

test('a held lease with large instances is logged as several entries, none near the log\'s largest record', () => {
  const { reg, clock } = setup();
  const leases = fleet(reg, 20);
  // One lease with 700 instances of 16 KiB metadata in control characters: each is about
  // 96 KiB of JSON, 67 MB in all, more than one log record may hold (64 MiB).
  reg.grantLease('big', 10_000);
  const metadata = { blob: '\u0001'.repeat(16 * 1024 - 4) };
  for (let k = 0; k < 700; k++) reg.register({ namespace: 'default', service: 'wide', id: `w${k}`, input: validateInstanceInput({ address: '10.0.0.1', port: 80, leaseId: 'big', metadata }, DEFAULT_LIMITS) });
  clock.advance(5_000);
  for (const l of leases.slice(12)) reg.keepAlive(l);
  clock.advance(5_000);
  const outs = reg.expireDue();
  const held = outs.filter((o) => o.events.some((e) => e.instance.service === 'wide'));
  assert.ok(held.length >= 10, `${held.length} entries`);
  assert.equal(held.flatMap((o) => o.events).length, 700, 'every instance held');
  let total = 0;
  for (const o of held) {
    const bytes = Buffer.byteLength(JSON.stringify(o.entry));
    total += bytes;
    assert.ok(bytes < 8 * 1024 * 1024, `an entry of ${bytes} bytes`);
  }
  assert.ok(total > 64 * 1024 * 1024, 'one entry would not have fit');
  const revisions = held.map((o) => o.revision);
  assert.deepEqual(revisions, [...revisions].sort((x, y) => x - y), 'one revision each, in order');
  assert.equal(new Set(revisions).size, held.length);
});
