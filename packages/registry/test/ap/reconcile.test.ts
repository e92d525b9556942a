// Goal: when a peer that owns many records becomes unreachable, a node flags them all
// unconfirmed (and unflags them all when it is back), in slices of at most 500 changes a
// turn, so that the node keeps answering meanwhile; no record is missed by the slicing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_LIMITS, validateInstanceInput } from '@switchboard/protocol';
import { ApEngine } from '../../src/engines/ap/engine.js';
import { MemoryStorage } from '../../src/storage/storage.js';
import { LoopbackNet, eventually } from './loopback.js';

test('a peer with 1,200 records going away and coming back: every record flagged and unflagged, in slices', { timeout: 30_000 }, async () => {
  const limits = { ...DEFAULT_LIMITS, apAntiEntropyIntervalMs: 100, apOwnerGraceMs: 60_000 };
  const clock = { now: () => performance.now() };
  const net = new LoopbackNet(['a', 'b']);
  const open = (id: string) => ApEngine.open({ nodeId: id, storage: new MemoryStorage(), transport: net.transport(id), limits, clock, activeChecks: false });
  const a = await open('a');
  const b = await open('b');
  try {
    await eventually('ready', () => (a.ready && b.ready ? true : undefined));
    const N = 1_200;
    const items = Array.from({ length: N }, (_, i) => ({ namespace: 'default', service: `svc${i % 7}`, id: `i${i}`, input: validateInstanceInput({ address: '10.0.0.1', port: 1000 + i }, DEFAULT_LIMITS) }));
    for (let i = 0; i < N; i += 100) await b.registerBatch(items.slice(i, i + 100));
    await eventually('a has them', () => (a.registry.instanceCount === N ? true : undefined), 10_000);
    const flagged = () => items.filter((x) => a.registry.instance('default', x.service, x.id)?.instance.unconfirmed === true).length;

    // Each slice is one entry, so one revision on a; the event loop turns between slices.
    const revisions: number[] = [];
    const sampler = setInterval(() => revisions.push(a.registry.revision), 0);
    const before = a.registry.revision;
    net.setCut('a', 'b', true);
    await eventually('all flagged', () => (flagged() === N ? true : undefined), 10_000);
    clearInterval(sampler);
    assert.equal(a.registry.revision - before, Math.ceil(N / 500), 'one revision per slice of 500');
    assert.ok(new Set(revisions).size >= 3, `the event loop turned between slices (revisions seen: ${[...new Set(revisions)].join(', ')})`);

    net.setCut('a', 'b', false);
    await eventually('all unflagged', () => (flagged() === 0 ? true : undefined), 10_000);
    assert.equal(a.registry.instanceCount, N);
  } finally {
    for (const e of [a, b]) await e.close();
  }
});
