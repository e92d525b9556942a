// Goal: an ap node keeps on its own disk what it wrote and what it learned (records,
// tombstones, records it hides), through the log and through snapshots; after a restart
// it shows the other nodes' records flagged until it reaches them, and then converges.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_LIMITS, validateInstanceInput } from '@switchboard/protocol';
import { ApEngine } from '../../src/engines/ap/engine.js';
import { FileStorage } from '../../src/storage/file-storage.js';
import { MemoryStorage } from '../../src/storage/storage.js';
import { LoopbackNet, eventually } from './loopback.js';

const limits = { ...DEFAULT_LIMITS, apAntiEntropyIntervalMs: 100, apCatchUpTimeoutMs: 60_000 };
const clock = { now: () => performance.now() };
const item = (service: string, id: string, leaseId: string | null = null) => ({ namespace: 'default', service, id, input: validateInstanceInput({ address: '10.0.0.9', port: 80, leaseId }, DEFAULT_LIMITS) });

for (const snapshotEveryRecords of [100_000, 3]) {
  test(`a restarted node recovers its records and what it learned (${snapshotEveryRecords === 3 ? 'from snapshots' : 'from the log'})`, { timeout: 30_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sb-ap-'));
    const net = new LoopbackNet(['a', 'b']);
    const a = await ApEngine.open({ nodeId: 'a', storage: new MemoryStorage(), transport: net.transport('a'), limits, clock, activeChecks: false });
    let b = await ApEngine.open({ nodeId: 'b', storage: new FileStorage({ dataDir: dir, snapshotEveryRecords }), transport: net.transport('b'), limits, clock, activeChecks: false });
    try {
      await eventually('ready', () => (a.ready && b.ready ? true : undefined));
      const lease = await a.grantLease(60_000);
      await a.register(item('web', 'leased', lease.leaseId));
      await a.register(item('web', 'persistent'));
      await a.register(item('web', 'doomed'));
      await b.register(item('api', 'own'));
      await eventually('b learned a', () => (b.registry.instance('default', 'web', 'doomed') ? true : undefined));
      await a.deregister('default', 'web', 'doomed');
      await eventually('b learned the delete', () => (b.table.get('default/web/doomed')?.del ? true : undefined));
      const before = b.table.get('default/web/leased')?.v;
      await b.close();

      net.setCut('a', 'b', true);
      b = await ApEngine.open({ nodeId: 'b', storage: new FileStorage({ dataDir: dir, snapshotEveryRecords }), transport: net.transport('b'), limits, clock, activeChecks: false });
      assert.equal(b.ready, false, 'not ready before the catch-up');
      assert.equal(b.table.get('default/web/leased')?.v, before, 'the learned version survived');
      assert.equal(b.table.get('default/web/doomed')?.del, 'deregistered', 'the tombstone survived');
      assert.equal(b.registry.instance('default', 'web', 'doomed'), undefined);
      assert.equal(b.registry.instance('default', 'api', 'own')?.instance.owner, 'b');
      const leased = b.registry.instance('default', 'web', 'leased')?.instance;
      assert.equal(leased?.owner, 'a');
      assert.equal(leased?.unconfirmed, true, 'a is not reachable yet');

      await a.register(item('web', 'while-b-was-down'));
      net.setCut('a', 'b', false);
      await eventually('b caught up', () => (b.ready && b.registry.instance('default', 'web', 'while-b-was-down') ? true : undefined));
      await eventually('flag cleared', () => (b.registry.instance('default', 'web', 'leased')?.instance.unconfirmed === undefined ? true : undefined));
      assert.equal(a.registry.instance('default', 'api', 'own')?.instance.owner, 'b');
    } finally {
      await a.close();
      await b.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
}

test('a cut that flags more records than one log record holds is logged in parts; the node writes on, and restarts with them', { timeout: 120_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'sb-ap-'));
  const net = new LoopbackNet(['a', 'b']);
  const a = await ApEngine.open({ nodeId: 'a', storage: new MemoryStorage(), transport: net.transport('a'), limits, clock, activeChecks: false });
  let b = await ApEngine.open({ nodeId: 'b', storage: new FileStorage({ dataDir: dir }), transport: net.transport('b'), limits, clock, activeChecks: false });
  try {
    await eventually('ready', () => (a.ready && b.ready ? true : undefined));
    // 700 persistent instances of a with 16 KiB of metadata in control characters: about
    // 96 KiB of JSON each. When a becomes unreachable, b flags all of them at once: 67 MB,
    // more than one log record may hold (64 MiB).
    const metadata = { blob: '\u0001'.repeat(16 * 1024 - 4) };
    for (let k = 0; k < 700; k += 50) {
      await a.registerBatch(Array.from({ length: 50 }, (_, j) => ({ namespace: 'default', service: 'wide', id: `w${k + j}`, input: validateInstanceInput({ address: '10.0.0.9', port: 80, metadata }, DEFAULT_LIMITS) })));
    }
    await eventually('b has them all', () => (b.registry.service('default', 'wide')?.instances.size === 700 ? true : undefined), 60_000);
    net.setCut('a', 'b', true);
    await eventually('b flagged them', () => ([...(b.registry.service('default', 'wide')?.instances.values() ?? [])].every((r) => r.instance.unconfirmed === true) ? true : undefined), 60_000);
    // The log took every part: b still writes.
    await b.register(item('api', 'after-the-cut'));
    assert.ok(b.registry.instance('default', 'api', 'after-the-cut'));
    await b.close();
    b = await ApEngine.open({ nodeId: 'b', storage: new FileStorage({ dataDir: dir }), transport: net.transport('b'), limits, clock, activeChecks: false });
    assert.equal(b.registry.service('default', 'wide')?.instances.size, 700);
    assert.ok(b.registry.instance('default', 'api', 'after-the-cut'));
  } finally {
    await a.close();
    await b.close();
    await rm(dir, { recursive: true, force: true });
  }
});
