// Goal: service settings (the protect threshold) set on one ap node reach every node: at
// once when the peers are reachable, through anti-entropy when a node was cut off, with
// the newer write winning when both sides changed them, and they survive a restart
// (from the log and from a snapshot) with their versions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_LIMITS } from '@switchboard/protocol';
import { ApEngine } from '../../src/engines/ap/engine.js';
import { FileStorage } from '../../src/storage/file-storage.js';
import { MemoryStorage } from '../../src/storage/storage.js';
import { call } from '../helpers.js';
import { LoopbackNet, eventually, startApNode } from './loopback.js';

const threshold = (e: ApEngine, service: string) => e.registry.serviceSettings('default', service)?.protectThreshold ?? null;

test('settings set on one node reach the others, also after a cut, and the newer write wins', { timeout: 30_000 }, async () => {
  const net = new LoopbackNet(['a', 'b', 'c']);
  const nodes = [await startApNode(net, 'a'), await startApNode(net, 'b'), await startApNode(net, 'c')];
  const [a, b, c] = nodes as [(typeof nodes)[0], (typeof nodes)[0], (typeof nodes)[0]];
  try {
    for (const n of nodes) await eventually(`${n.id} ready`, () => (n.engine.ready ? true : undefined));
    // One healthy instance of four, on every node; the answers are cached there.
    for (const [k, health] of ['passing', 'critical', 'critical', 'critical'].entries()) {
      await call(a.url, 'PUT', `/v1/services/pay/instances/p${k}`, { address: '10.0.0.1', port: 80 + k, checks: [{ id: 'self', type: 'ttl', ttlMs: 60_000 }] });
      await call(a.url, 'PUT', `/v1/services/pay/instances/p${k}/checks/self`, { status: health === 'passing' ? 'pass' : 'fail', output: 'x' });
    }
    const narrow = await eventually('the state on c', async () => {
      const r = await call(c.url, 'GET', '/v1/services/pay?healthy=true');
      const all = await call(c.url, 'GET', '/v1/services/pay');
      return all.body.instances.length === 4 && all.body.instances.filter((i: { health: string }) => i.health === 'critical').length === 3 ? r : undefined;
    }, 3_000);
    assert.equal(narrow.body.instances.length, 1);
    const etag = narrow.headers.get('etag');
    assert.ok(etag);
    assert.equal((await call(a.url, 'PUT', '/v1/services/pay/settings', { protectThreshold: 0.5 })).status, 200);
    for (const n of [b, c]) {
      await eventually(`the threshold on ${n.id}`, async () => ((await call(n.url, 'GET', '/v1/services/pay/settings')).body.protectThreshold === 0.5 ? true : undefined), 3_000);
    }
    // The answers of another node follow it at once: a new revision, not the cached answer.
    const widened = await call(c.url, 'GET', '/v1/services/pay?healthy=true', undefined, { 'if-none-match': etag });
    assert.equal(widened.status, 200, 'a settings change from a peer changes the answer (no 304)');
    assert.equal(widened.body.protected, true);
    assert.equal(widened.body.instances.length, 4);
    assert.ok(widened.body.revision > narrow.body.revision);

    // c is cut off; both sides change the settings; the later write (on c) wins everywhere.
    net.setCut('a', 'c', true);
    net.setCut('b', 'c', true);
    await call(a.url, 'PUT', '/v1/services/pay/settings', { protectThreshold: 0.3 });
    await new Promise((r) => setTimeout(r, 20));
    await call(c.url, 'PUT', '/v1/services/pay/settings', { protectThreshold: 0.8 });
    await call(c.url, 'PUT', '/v1/services/cart/settings', { protectThreshold: 0.25 });
    await eventually('0.3 on b', () => (threshold(b.engine, 'pay') === 0.3 ? true : undefined), 3_000);
    assert.equal(threshold(c.engine, 'pay'), 0.8);
    net.setCut('a', 'c', false);
    net.setCut('b', 'c', false);
    for (const n of nodes) {
      await eventually(`the newer settings on ${n.id}`, () => (threshold(n.engine, 'pay') === 0.8 && threshold(n.engine, 'cart') === 0.25 ? true : undefined), 5_000);
    }
    // Turned off on one node: off everywhere.
    await call(b.url, 'PUT', '/v1/services/cart/settings', { protectThreshold: null });
    for (const n of nodes) await eventually(`cart off on ${n.id}`, () => (threshold(n.engine, 'cart') === null ? true : undefined), 3_000);
    const status = await call(a.url, 'GET', '/v1/status');
    assert.equal(status.body.cluster.replication.settings, 2);
  } finally {
    for (const n of nodes) await n.close();
  }
});

for (const snapshotEveryRecords of [100_000, 2]) {
  test(`a restarted node keeps the settings and their versions (${snapshotEveryRecords === 2 ? 'from snapshots' : 'from the log'})`, { timeout: 30_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sb-ap-settings-'));
    const limits = { ...DEFAULT_LIMITS, apAntiEntropyIntervalMs: 100, apCatchUpTimeoutMs: 60_000 };
    const clock = { now: () => performance.now() };
    const net = new LoopbackNet(['a', 'b']);
    const a = await ApEngine.open({ nodeId: 'a', storage: new MemoryStorage(), transport: net.transport('a'), limits, clock, activeChecks: false });
    const open = () => ApEngine.open({ nodeId: 'b', storage: new FileStorage({ dataDir: dir, snapshotEveryRecords }), transport: net.transport('b'), limits, clock, activeChecks: false });
    let b = await open();
    try {
      await eventually('ready', () => (a.ready && b.ready ? true : undefined));
      await a.setServiceSettings('default', 'web', { protectThreshold: 0.4 });
      await b.setServiceSettings('default', 'api', { protectThreshold: 0.6 });
      await a.setServiceSettings('default', 'db', { protectThreshold: 0.7 });
      await eventually('b learned a', () => (threshold(b, 'web') === 0.4 && threshold(b, 'db') === 0.7 ? true : undefined));
      const before = b.settingsTable.all().map((r) => [r.service, r.v]).sort();
      await b.close();
      net.setCut('a', 'b', true);
      b = await open();
      assert.deepEqual(b.settingsTable.all().map((r) => [r.service, r.v]).sort(), before, 'the versions came back from disk');
      assert.equal(threshold(b, 'web'), 0.4);
      assert.equal(threshold(b, 'api'), 0.6);
      // An older value from a peer does not undo them; a newer one does.
      await b.setServiceSettings('default', 'web', { protectThreshold: 0.9 });
      net.setCut('a', 'b', false);
      await eventually('a took the newer web', () => (threshold(a, 'web') === 0.9 ? true : undefined));
      assert.equal(threshold(b, 'web'), 0.9);
    } finally {
      await a.close();
      await b.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
}
