// Goal: replication messages stay near apMessageMaxBytes however large the instances are
// (a batch of big instances is split, and so is a catch-up), and everything arrives.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_LIMITS, validateInstanceInput } from '@switchboard/protocol';
import { ApEngine } from '../../src/engines/ap/engine.js';
import { MemoryStorage } from '../../src/storage/storage.js';
import { LoopbackNet, eventually } from './loopback.js';

test('batches and repairs of large instances are split by size', { timeout: 30_000 }, async () => {
  const limits = { ...DEFAULT_LIMITS, apMessageMaxBytes: 256 * 1024, apAntiEntropyIntervalMs: 100 };
  const clock = { now: () => performance.now() };
  const net = new LoopbackNet(['a', 'b', 'c']);
  const sizes = new Map<string, number[]>();
  net.onSend = (_from, _to, bytes) => {
    const type = (JSON.parse(bytes) as { type: string }).type;
    const list = sizes.get(type) ?? [];
    list.push(bytes.length);
    sizes.set(type, list);
  };
  net.setCut('a', 'c', true);
  net.setCut('b', 'c', true);
  const open = (id: string) => ApEngine.open({ nodeId: id, storage: new MemoryStorage(), transport: net.transport(id), limits, clock, activeChecks: false });
  const a = await open('a');
  const b = await open('b');
  const c = await open('c');
  try {
    await eventually('a and b ready', () => (a.ready && b.ready ? true : undefined));
    // 200 instances with 12 KiB of metadata each: about 2.5 MB in one write.
    const metadata: Record<string, string> = {};
    for (let k = 0; k < 12; k++) metadata[`key${k}`] = 'x'.repeat(1000);
    const items = Array.from({ length: 200 }, (_, i) => ({ namespace: 'default', service: 'big', id: `i${i}`, input: validateInstanceInput({ address: '10.0.0.1', port: 1000 + i, metadata }, DEFAULT_LIMITS) }));
    await a.registerBatch(items);
    await eventually('b has them', () => (b.registry.instanceCount === 200 ? true : undefined), 10_000);
    const batches = sizes.get('ap_batch') ?? [];
    assert.ok(batches.length >= 8, `${batches.length} batches`);
    for (const n of batches) assert.ok(n < limits.apMessageMaxBytes * 1.25, `a batch of ${n} bytes`);
    // c catches up through anti-entropy: answers are split too.
    net.setCut('a', 'c', false);
    net.setCut('b', 'c', false);
    await eventually('c caught up', () => (c.ready && c.registry.instanceCount === 200 ? true : undefined), 10_000);
    const gives = [...(sizes.get('ap_give') ?? []), ...(sizes.get('ap_push') ?? [])];
    assert.ok(gives.length >= 8, `${gives.length} repair messages`);
    for (const n of gives) assert.ok(n < limits.apMessageMaxBytes * 1.25, `a repair message of ${n} bytes`);
  } finally {
    for (const e of [a, b, c]) await e.close();
  }
});
