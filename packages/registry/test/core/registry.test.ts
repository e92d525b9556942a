// Goal: the pure core enforces the registry rules of api-v1.md on its own — revisions,
// idempotent re-registration, lease binding and expiry, admin status, limits — and
// replaying its entries (or its snapshot) rebuilds exactly the same state.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_LIMITS, SwitchboardError, validateInstanceInput, type Limits } from '@switchboard/protocol';
import { ManualClock } from '../../src/core/clock.js';
import { Registry, sameInput, type RegistrationItem } from '../../src/core/registry.js';
import type { Entry } from '../../src/core/entry.js';

function setup(limits: Limits = DEFAULT_LIMITS) {
  const clock = new ManualClock(1_000);
  const reg = new Registry({ epoch: 'e1', limits, clock });
  const log: Entry[] = [];
  const run = <T extends { entry: Entry | null }>(o: T): T => {
    if (o.entry) log.push(o.entry);
    return o;
  };
  return { clock, reg, log, run };
}

function item(service: string, id: string, body: Record<string, unknown> = {}, namespace = 'default'): RegistrationItem {
  return { namespace, service, id, input: validateInstanceInput({ address: '10.0.0.1', port: 8080, ...body }, DEFAULT_LIMITS) };
}

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof SwitchboardError, String(err));
    return err.code;
  }
  assert.fail('expected an error');
}

test('revisions grow by one per change; lease grants and keep-alives make none', () => {
  const { reg, run } = setup();
  assert.equal(run(reg.register(item('orders', 'a'))).revision, 1);
  const grant = run(reg.grantLease('L1', 5_000));
  assert.equal(grant.revision, 1);
  assert.deepEqual(grant.events, []);
  reg.keepAlive('L1');
  assert.equal(reg.revision, 1);
  assert.equal(run(reg.register(item('orders', 'b', { leaseId: 'L1' }))).revision, 2);
  assert.equal(reg.serviceRevision('default', 'orders'), 2);
  assert.equal(reg.serviceRevision('default', 'payments'), 0);
});

test('an identical re-registration changes nothing and answers the current modRevision', () => {
  const { reg, run } = setup();
  run(reg.register(item('orders', 'a', { tags: ['x'] })));
  run(reg.register(item('other', 'z')));
  const again = run(reg.register(item('orders', 'a', { tags: ['x'] })));
  assert.equal(again.entry, null);
  assert.deepEqual(again.events, []);
  assert.equal(again.revision, 1);
  assert.equal(reg.revision, 2);
  const changed = run(reg.register(item('orders', 'a', { tags: ['y'] })));
  assert.equal(changed.revision, 3);
  const inst = reg.instance('default', 'orders', 'a')!.instance;
  assert.equal(inst.createRevision, 1);
  assert.equal(inst.modRevision, 3);
});

test('a re-registration is a no-op exactly when every field of its input is the same, in the same order (as its JSON would say)', () => {
  const { reg, run } = setup();
  const base = { address: '10.0.0.1', port: 8080, zone: 'z1', version: '1.2.3', tags: ['a', 'b'], metadata: { m: '1', n: '2' }, weight: 50, protocol: 'grpc', checks: [{ type: 'tcp', interval: '10s' }] };
  run(reg.register(item('orders', 'a', base)));
  const rec = reg.instance('default', 'orders', 'a')!;
  const variants: Record<string, unknown>[] = [
    base,
    { ...base, address: '10.0.0.2' },
    { ...base, port: 8081 },
    { ...base, zone: null },
    { ...base, version: '1.2.4' },
    { ...base, tags: ['a'] },
    { ...base, tags: ['b', 'a'] },
    { ...base, tags: ['a', 'c'] },
    { ...base, metadata: { m: '1' } },
    { ...base, metadata: { n: '2', m: '1' } },
    { ...base, metadata: { m: '1', n: '3' } },
    { ...base, metadata: { m: '1', x: '2' } },
    { ...base, leaseId: 'lease-1' },
    { ...base, weight: 51 },
    { ...base, protocol: 'http' },
    { ...base, checks: [] },
    { ...base, checks: [{ type: 'tcp', interval: '20s' }] },
    { ...base, checks: [{ type: 'tcp', interval: '10s' }, { type: 'tcp', interval: '10s', id: 'second' }] },
  ];
  const stored = (r: typeof rec) => ({ address: r.instance.address, port: r.instance.port, leaseId: r.instance.leaseId, zone: r.instance.zone, version: r.instance.version, tags: r.instance.tags, metadata: r.instance.metadata, weight: r.instance.weight, protocol: r.instance.protocol, checks: r.specs });
  for (const v of variants) {
    const input = item('orders', 'a', v).input;
    const viaJson = JSON.stringify(input) === JSON.stringify(stored(rec));
    assert.equal(sameInput(rec, input), viaJson, JSON.stringify(v));
  }
  assert.equal(sameInput(rec, item('orders', 'a', base).input), true);
  assert.equal(variants.filter((v) => sameInput(rec, item('orders', 'a', v).input)).length, 2, 'the same input, and its metadata in another order (validation sorts the keys)');
});

test('admin status starts up, changes only through setStatus, and survives re-registration', () => {
  const { reg, run } = setup();
  run(reg.register(item('orders', 'a')));
  run(reg.setStatus('default', 'orders', 'a', 'draining'));
  run(reg.register(item('orders', 'a', { port: 9090 })));
  const inst = reg.instance('default', 'orders', 'a')!.instance;
  assert.equal(inst.status, 'draining');
  assert.equal(inst.port, 9090);
  assert.equal(reg.setStatus('default', 'orders', 'a', 'draining').entry, null);
  assert.equal(code(() => reg.setStatus('default', 'orders', 'nope', 'up')), 'INSTANCE_NOT_FOUND');
});

test('instances bound to a lease vanish together when it expires, in one revision, with the reason', () => {
  const { reg, clock, run } = setup();
  run(reg.grantLease('L1', 3_000));
  run(reg.register(item('orders', 'a', { leaseId: 'L1' })));
  run(reg.register(item('payments', 'b', { leaseId: 'L1' }, 'shop')));
  run(reg.register(item('orders', 'p')));
  clock.advance(2_999);
  assert.deepEqual(reg.expireDue(), []);
  reg.keepAlive('L1');
  clock.advance(2_999);
  assert.deepEqual(reg.expireDue(), []);
  clock.advance(1);
  const [expired] = reg.expireDue();
  assert.ok(expired);
  assert.equal(expired.revision, 4);
  assert.deepEqual(expired.events.map((e) => [e.type, e.instance.id, e.reason, e.revision]), [
    ['delete', 'a', 'lease_expired', 4],
    ['delete', 'b', 'lease_expired', 4],
  ]);
  assert.equal(reg.lease('L1'), undefined);
  assert.equal(code(() => reg.keepAlive('L1')), 'LEASE_NOT_FOUND');
  assert.ok(reg.instance('default', 'orders', 'p'), 'persistent instance stays');
  assert.equal(reg.instanceCount, 1);
});

test('a keep-alive after the lease\'s deadline, before the expiry tick ended it, is LEASE_NOT_FOUND and renews nothing', () => {
  const { reg, clock, run } = setup();
  run(reg.grantLease('L1', 1_000));
  run(reg.register(item('orders', 'a', { leaseId: 'L1' })));
  clock.advance(999);
  reg.keepAlive('L1'); // in time: a full TTL from now
  clock.advance(1_000); // the deadline is now, the tick has not run yet
  assert.equal(code(() => reg.keepAlive('L1')), 'LEASE_NOT_FOUND');
  clock.advance(50);
  assert.equal(code(() => reg.keepAlive('L1')), 'LEASE_NOT_FOUND');
  assert.deepEqual(reg.expireDue().flatMap((o) => o.events.map((e) => [e.instance.id, e.reason])), [['a', 'lease_expired']], 'the tick still ends it');
  assert.equal(reg.lease('L1'), undefined);
});

test('revoking a lease deregisters its instances with reason lease_revoked', () => {
  const { reg, run } = setup();
  run(reg.grantLease('L1', 10_000));
  run(reg.register(item('orders', 'a', { leaseId: 'L1' })));
  const out = run(reg.revokeLease('L1'));
  assert.equal(out.events[0]?.reason, 'lease_revoked');
  assert.equal(code(() => reg.revokeLease('L1')), 'LEASE_NOT_FOUND');
  // A lease with no instances ends without a revision.
  run(reg.grantLease('L2', 10_000));
  assert.equal(run(reg.revokeLease('L2')).revision, reg.revision);
});

test('moving an instance to another lease unbinds it from the first', () => {
  const { reg, clock, run } = setup();
  run(reg.grantLease('L1', 1_000));
  run(reg.grantLease('L2', 60_000));
  run(reg.register(item('orders', 'a', { leaseId: 'L1' })));
  run(reg.register(item('orders', 'a', { leaseId: 'L2' })));
  clock.advance(1_000);
  const out = reg.expireDue();
  assert.equal(out.length, 1);
  assert.deepEqual(out[0]?.events, []);
  assert.ok(reg.instance('default', 'orders', 'a'));
});

test('registering on an unknown lease is LEASE_NOT_FOUND and changes nothing', () => {
  const { reg } = setup();
  assert.equal(code(() => reg.register(item('orders', 'a', { leaseId: 'ghost' }))), 'LEASE_NOT_FOUND');
  assert.equal(reg.revision, 0);
  assert.equal(reg.instanceCount, 0);
});

test('a batch is all or nothing and shares one revision', () => {
  const { reg, run } = setup();
  run(reg.grantLease('L1', 10_000));
  const out = run(reg.registerBatch([item('a', '1'), item('b', '2', { leaseId: 'L1' })]));
  assert.equal(out.revision, 1);
  assert.deepEqual(out.events.map((e) => e.revision), [1, 1]);
  assert.equal(code(() => reg.registerBatch([item('a', '3'), item('b', '4', { leaseId: 'ghost' })])), 'LEASE_NOT_FOUND');
  assert.equal(reg.instance('default', 'a', '3'), undefined);
  assert.equal(reg.revision, 1);
});

test('limits: instances per lease, leases per node and instances per node', () => {
  const limits = { ...DEFAULT_LIMITS, maxInstancesPerLease: 2, maxLeasesPerNode: 1, maxInstancesPerNode: 3 };
  const { reg, run } = setup(limits);
  run(reg.grantLease('L1', 10_000));
  assert.equal(code(() => reg.grantLease('L2', 10_000)), 'LIMIT_EXCEEDED');
  run(reg.register(item('s', '1', { leaseId: 'L1' })));
  run(reg.register(item('s', '2', { leaseId: 'L1' })));
  assert.equal(code(() => reg.register(item('s', '3', { leaseId: 'L1' }))), 'LIMIT_EXCEEDED');
  run(reg.register(item('s', '1', { leaseId: 'L1', port: 1 }))); // re-registration is no new binding
  run(reg.register(item('s', '3')));
  assert.equal(code(() => reg.register(item('s', '4'))), 'LIMIT_EXCEEDED');
});

test('a deleted service keeps its revision so that blocking queries never go back', () => {
  const { reg, run } = setup();
  run(reg.register(item('orders', 'a')));
  run(reg.deregister('default', 'orders', 'a'));
  assert.equal(reg.serviceRevision('default', 'orders'), 2);
  assert.deepEqual(reg.listServices('default'), []);
  assert.equal(reg.serviceCount, 0);
});

test('new checks start critical; a kept check keeps its state', () => {
  const { reg, run } = setup();
  run(reg.register(item('orders', 'a', { checks: [{ type: 'tcp', id: 'c1' }] })));
  const inst = reg.instance('default', 'orders', 'a')!.instance;
  assert.equal(inst.health, 'critical');
  assert.deepEqual(inst.checks.map((c) => [c.id, c.type, c.status]), [['c1', 'tcp', 'critical']]);
  run(reg.register(item('orders', 'b')));
  assert.equal(reg.instance('default', 'orders', 'b')!.instance.health, 'passing');
});

test('replaying the entries, or the snapshot, rebuilds the same state', () => {
  const { reg, clock, run, log } = setup();
  run(reg.grantLease('L1', 5_000));
  run(reg.grantLease('L2', 50_000));
  run(reg.registerBatch([item('a', '1', { leaseId: 'L1' }), item('a', '2', { leaseId: 'L2' }), item('b', '3')]));
  run(reg.setStatus('default', 'b', '3', 'out_of_service'));
  run(reg.deregister('default', 'a', '2'));
  clock.advance(5_000);
  for (const o of reg.expireDue()) run(o);
  run(reg.register(item('c', '9', { metadata: { k: 'v' }, version: '1.2.3', zone: 'eu-1' })));

  const replayed = new Registry({ epoch: 'e1', limits: DEFAULT_LIMITS, clock });
  for (const e of log) replayed.apply(JSON.parse(JSON.stringify(e)) as Entry);
  assert.deepEqual(replayed.snapshot(), reg.snapshot());

  const restored = Registry.fromSnapshot(JSON.parse(JSON.stringify(reg.snapshot())), { limits: DEFAULT_LIMITS, clock });
  assert.deepEqual(restored.snapshot(), reg.snapshot());
  assert.equal(restored.revision, reg.revision);
  assert.equal(restored.serviceRevision('default', 'a'), reg.serviceRevision('default', 'a'));
  assert.ok(restored.lease('L2'));
});

test('lease deadlines: the next deadline follows keep-alives, and a restart renews all', () => {
  const { reg, clock, run } = setup();
  run(reg.grantLease('L1', 2_000));
  run(reg.grantLease('L2', 3_000));
  assert.equal(reg.nextLeaseDeadline(), 3_000);
  clock.advance(1_500);
  reg.keepAlive('L1');
  assert.equal(reg.nextLeaseDeadline(), 4_000);
  for (let i = 0; i < 10_000; i++) reg.keepAlive('L1'); // stale deadlines do not pile up
  clock.advance(10_000);
  reg.renewAllLeases();
  assert.equal(reg.nextLeaseDeadline(), clock.now() + 2_000);
});

test('each service keeps its up and healthy counts as instances come, change and go (checked against a scan)', () => {
  const { reg, clock, run } = setup();
  let seed = 7;
  const rand = (n: number) => {
    seed = (seed * 1_103_515_245 + 12_345) & 0x7fffffff;
    return seed % n;
  };
  const lease = 'l1';
  const statuses = ['up', 'draining', 'out_of_service'] as const;
  const check = (step: number) => {
    for (const svc of reg.listServices()) {
      const all = [...svc.instances.values()].map((r) => r.instance);
      assert.equal(svc.up, all.filter((i) => i.status === 'up').length, `up of ${svc.name} after step ${step}`);
      assert.equal(svc.healthy, all.filter((i) => i.status === 'up' && i.health !== 'critical').length, `healthy of ${svc.name} after step ${step}`);
    }
  };
  for (let step = 0; step < 600; step++) {
    const service = `s${rand(3)}`;
    const id = `i${rand(8)}`;
    const exists = reg.instance('default', service, id) !== undefined;
    switch (rand(5)) {
      case 0:
        if (!reg.lease(lease)) run(reg.grantLease(lease, 10_000));
        run(reg.register(item(service, id, { checks: [{ id: 'self', type: 'ttl', ttlMs: 5_000 }], ...(rand(2) ? { leaseId: lease } : {}) })));
        break;
      case 1:
        if (exists) run(reg.setStatus('default', service, id, statuses[rand(3)]!));
        break;
      case 2:
        if (exists) run(reg.reportCheck('default', service, id, 'self', { status: (['passing', 'warning', 'critical'] as const)[rand(3)]!, output: 'x' }));
        break;
      case 3:
        if (exists) run(reg.deregister('default', service, id));
        break;
      case 4:
        clock.advance(rand(4_000));
        reg.expireDue();
        reg.healthDue();
        if (rand(4) === 0 && reg.lease(lease)) reg.keepAlive(lease);
        break;
    }
    check(step);
  }
});

test('a node restored from a snapshot forgets the same empty services as the node that wrote it', () => {
  const clock = new ManualClock(1_000);
  const reg = new Registry({ epoch: 'e1', limits: DEFAULT_LIMITS, clock });
  const input = validateInstanceInput({ address: '10.0.0.1', port: 80 }, DEFAULT_LIMITS);
  const n = 10_001; // one more than the registry keeps
  for (let k = 0; k < n; k++) reg.register({ namespace: 'default', service: `s${k}`, id: 'i', input });
  for (let k = n - 1; k >= 0; k--) reg.deregister('default', `s${k}`, 'i'); // emptied newest first
  const restored = Registry.fromSnapshot(JSON.parse(JSON.stringify(reg.snapshot())), { limits: DEFAULT_LIMITS, clock });
  for (const r of [reg, restored]) {
    r.register({ namespace: 'default', service: 'late', id: 'i', input });
    r.deregister('default', 'late', 'i');
  }
  for (const svc of ['s0', 's1', `s${n - 1}`, `s${n - 2}`, 'never-seen']) {
    assert.equal(restored.serviceRevision('default', svc), reg.serviceRevision('default', svc), svc);
  }
});
