// Goal: a data directory keeps its epoch for life and its revision counter continues
// across restarts (through the log and through snapshots); a lost meta.json is rebuilt
// from the data files; --dev (memory) is a new epoch at every start.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_LIMITS } from '@switchboard/protocol';
import { StandaloneEngine } from '../../src/engines/standalone.js';
import { createStorage } from '../../src/storage/index.js';
import type { Storage } from '../../src/storage/storage.js';
import { captureLogger, storage, tempDir } from './fixtures.js';

const input = { address: '10.0.0.1', port: 8080, leaseId: null, zone: null, version: null, tags: [], metadata: {}, weight: 100, protocol: 'http' as const, checks: [] };

function engine(s: Storage): Promise<StandaloneEngine> {
  return StandaloneEngine.open({ nodeId: 't', storage: s, limits: DEFAULT_LIMITS, clock: { now: () => performance.now() }, onFatal: (err) => assert.fail(String(err)) });
}

test('epoch and revision continue across reopen, through the log and through a snapshot', async () => {
  const t = tempDir('epoch');
  try {
    const dataDir = join(t.dir, 'data'); // created by open, mode 0700
    const e1 = await engine(createStorage({ dev: false, dataDir, logger: captureLogger() }));
    assert.equal(statSync(dataDir).mode & 0o777, 0o700);
    const epoch = e1.registry.epoch;
    for (let i = 0; i < 5; i++) await e1.register({ namespace: 'default', service: 'web', id: `a${i}`, input });
    assert.equal(e1.registry.revision, 5);
    await e1.close();

    const e2 = await engine(storage(dataDir, { snapshotEveryRecords: 3 }));
    assert.equal(e2.registry.epoch, epoch);
    assert.equal(e2.registry.revision, 5);
    assert.equal(await e2.register({ namespace: 'default', service: 'web', id: 'b', input }), 6);
    await e2.grantLease(5_000); // logged, no revision
    for (let i = 0; i < 4; i++) await e2.deregister('default', 'web', `a${i}`); // snapshots fire in between
    await e2.close();

    rmSync(join(dataDir, 'meta.json'));
    const logger = captureLogger();
    const e3 = await engine(storage(dataDir, { logger }));
    assert.equal(e3.registry.epoch, epoch, 'rebuilt from the data files');
    assert.ok(logger.lines.some((l) => /meta.json is missing/.test(l.msg)));
    assert.equal(e3.registry.revision, 10);
    assert.equal(e3.registry.leaseCount, 1);
    assert.deepEqual([...e3.registry.service('default', 'web')!.instances.keys()].sort(), ['a4', 'b']);
    assert.equal(await e3.register({ namespace: 'default', service: 'web', id: 'c', input }), 11);
    await e3.close();
  } finally {
    t.remove();
  }
});

test('--dev storage is a new epoch at every start', async () => {
  const a = await engine(createStorage({ dev: true, dataDir: 'unused' }));
  const b = await engine(createStorage({ dev: true, dataDir: 'unused' }));
  assert.notEqual(a.registry.epoch, b.registry.epoch);
  assert.equal(a.durable, false);
  await a.close();
  await b.close();
});
