// Goal: snapshots are written atomically (no temp file left, a reader never sees a torn
// file) and a damaged or foreign snapshot is ignored rather than trusted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSnapshot, snapshotPath, writeSnapshot, type ServiceSnapshot } from '../src/snapshot.js';
import { inst } from './helpers.js';

test('write, read back, overwrite; damaged files are ignored', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sb-snap-'));
  try {
    const snap: ServiceSnapshot = { format: 1, namespace: 'default', service: 'orders', epoch: 'e1', revision: 7, savedAt: new Date().toISOString(), instances: [inst('a')] };
    await Promise.all([writeSnapshot(dir, snap), writeSnapshot(dir, { ...snap, revision: 8 }), writeSnapshot(dir, { ...snap, revision: 9 })]);
    const back = await readSnapshot(dir, 'default', 'orders');
    assert.ok(back && [7, 8, 9].includes(back.revision));
    assert.deepEqual(back.instances.map((i) => i.id), ['a']);
    assert.deepEqual(readdirSync(dir), ['default~orders.json'], 'no temp file left behind');
    assert.equal(await readSnapshot(dir, 'default', 'payments'), undefined);
    writeFileSync(snapshotPath(dir, 'default', 'orders'), '{"format":1,"namespace":"default","service":"orders","revision":7,"instances":[{"id":');
    assert.equal(await readSnapshot(dir, 'default', 'orders'), undefined, 'torn file');
    writeFileSync(snapshotPath(dir, 'default', 'orders'), JSON.stringify({ ...snap, service: 'other' }));
    assert.equal(await readSnapshot(dir, 'default', 'orders'), undefined, 'another service');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
