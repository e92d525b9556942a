// Goal: three rules of an ap node's life that only show across nodes and over time, each
// found by a reproducer: a record of a lease that ended on its node is ended wherever it
// was changed meanwhile (no instance of a dead client comes back); self-preservation that
// ran its longest hold does not start again while the partition lasts (no flapping of the
// held records); a starting node whose peer answers but whose records are slow to arrive
// waits for them before it says ready.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_LIMITS, validateInstanceInput, type Limits } from '@switchboard/protocol';
import { ApEngine } from '../../src/engines/ap/engine.js';
import type { ProtectionChange } from '../../src/core/self-preservation.js';
import { MemoryStorage } from '../../src/storage/storage.js';
import { LoopbackNet, eventually } from './loopback.js';

const clock = { now: () => performance.now() };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const input = (port: number, leaseId: string | null = null) => validateInstanceInput({ address: '10.0.0.1', port, leaseId }, DEFAULT_LIMITS);

function open(net: LoopbackNet, id: string, limits: Limits, extra: { onProtectionChange?: (c: ProtectionChange) => void; onEvent?: (e: string, f: Record<string, unknown>) => void } = {}): Promise<ApEngine> {
  return ApEngine.open({ nodeId: id, storage: new MemoryStorage(), transport: net.transport(id), limits, clock, activeChecks: false, expiryTickMs: 50, ...extra });
}

test('a status change made on another node while the owner\'s lease ended does not keep the dead client\'s instance', { timeout: 30_000 }, async () => {
  const limits = { ...DEFAULT_LIMITS, apAntiEntropyIntervalMs: 200, apCatchUpTimeoutMs: 500, apOwnerGraceMs: 30_000 };
  const net = new LoopbackNet(['a', 'b']);
  const a = await open(net, 'a', limits);
  const b = await open(net, 'b', limits);
  try {
    await eventually('both ready', () => (a.ready && b.ready ? true : undefined));
    const { leaseId } = await a.grantLease(1_000);
    await a.register({ namespace: 'default', service: 'svc', id: 'x', input: input(80, leaseId) });
    await eventually('x on b', () => b.registry.instance('default', 'svc', 'x'));
    net.setCut('a', 'b', true);
    // An operator drains x through b while its owner is cut off; its client then dies.
    await b.setStatus('default', 'svc', 'x', 'draining');
    await eventually('the lease expired on a', () => (a.registry.instance('default', 'svc', 'x') ? undefined : true));
    net.setCut('a', 'b', false);
    // b's change is newer than a's expiry; a, whose lease it is, ends it again on arrival.
    await eventually('x gone on both nodes', () => (a.registry.instance('default', 'svc', 'x') || b.registry.instance('default', 'svc', 'x') ? undefined : true), 8_000);
    for (const e of [a, b]) assert.equal(e.table.get('default/svc/x')?.del, 'lease_expired');
    assert.equal((a.cluster() as unknown as { replication: { orphansEnded: number } }).replication.orphansEnded, 1);
  } finally {
    await a.close();
    await b.close();
  }
});

test('cluster self-preservation that ran its longest hold does not start again while the partition lasts', { timeout: 30_000 }, async () => {
  const limits = { ...DEFAULT_LIMITS, apAntiEntropyIntervalMs: 100, apOwnerGraceMs: 300, apCatchUpTimeoutMs: 1_000, selfPreservationMaxHoldMs: 1_000, selfPreservationMinLeases: 2 };
  const changes: ProtectionChange[] = [];
  const net = new LoopbackNet(['a', 'b', 'c']);
  const a = await open(net, 'a', limits, { onProtectionChange: (c) => changes.push(c) });
  const b = await open(net, 'b', limits);
  const c = await open(net, 'c', limits);
  const leases: [ApEngine, string][] = [];
  const keep = setInterval(() => {
    for (const [e, l] of leases) e.keepAlive(l).catch(() => undefined);
  }, 200);
  try {
    await eventually('all ready', () => (a.ready && b.ready && c.ready ? true : undefined));
    for (const [e, n] of [[b, 'b'], [c, 'c']] as const) {
      for (let i = 0; i < 3; i++) {
        const { leaseId } = await e.grantLease(60_000);
        leases.push([e, leaseId]);
        await e.register({ namespace: 'default', service: 'svc', id: `${n}${i}`, input: input(1_000 + i, leaseId) });
      }
    }
    await eventually('a sees all six', () => (a.registry.instanceCount === 6 ? true : undefined));
    net.setCut('a', 'b', true);
    net.setCut('a', 'c', true);
    await eventually('protection engaged', () => (changes.some((x) => x.engaged) ? true : undefined));
    await eventually('released after its longest hold', () => (changes.some((x) => !x.engaged) ? true : undefined), 5_000);
    const counts = new Set<number>();
    const until = performance.now() + 2_500;
    while (performance.now() < until) {
      counts.add(a.registry.instanceCount);
      await sleep(10);
    }
    assert.deepEqual(changes.map((x) => x.engaged), [true, false], 'engaged once, released once');
    assert.deepEqual([...counts], [0], 'the held records stay released');
  } finally {
    clearInterval(keep);
    for (const e of [a, b, c]) await e.close();
  }
});

test('a starting node whose peer answers, but whose records come slowly, is ready only once it has them', { timeout: 30_000 }, async () => {
  const limits = { ...DEFAULT_LIMITS, apAntiEntropyIntervalMs: 200, apCatchUpTimeoutMs: 2_000 };
  const net = new LoopbackNet(['a', 'b']);
  // Records to b take 3 s (a large registry over a slow link); digests and answers do not.
  const deliver = net.deliver.bind(net);
  net.deliver = (from: string, to: string, bytes: string): void => {
    const type = (JSON.parse(bytes) as { type: string }).type;
    if (to === 'b' && (type === 'ap_give' || type === 'ap_push')) setTimeout(() => deliver(from, to, bytes), 3_000);
    else deliver(from, to, bytes);
  };
  net.setCut('a', 'b', true);
  const a = await open(net, 'a', limits);
  let b: ApEngine | undefined;
  try {
    await eventually('a ready', () => (a.ready ? true : undefined));
    await a.registerBatch(Array.from({ length: 50 }, (_, i) => ({ namespace: 'default', service: 'svc', id: `i${i}`, input: input(1_000 + i) })));
    await sleep(300);
    let readyWith = -1;
    let reason = '';
    b = await open(net, 'b', limits, {
      onEvent: (e, f) => {
        if (e !== 'ready') return;
        readyWith = (b as ApEngine | undefined)?.registry.instanceCount ?? -1;
        reason = String(f.reason);
      },
    });
    net.setCut('a', 'b', false);
    await eventually('b ready', () => (b?.ready ? true : undefined), 15_000);
    await sleep(50);
    assert.equal(b.registry.instanceCount, 50, `ready (${reason}) with all of a's instances`);
    assert.ok(readyWith === -1 || readyWith === 50, `ready with ${readyWith} instances: ${reason}`);
    assert.match(reason, /caught up from a/);
  } finally {
    await b?.close();
    await a.close();
  }
});
