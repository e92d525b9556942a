// Goal: work that changes many instances at once is logged as several entries of bounded
// size (sliceChanges): changes keep their order, every run holds at least one change, a
// `replica` change is split by its records, and no run passes the target by much.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { CheckSpec, Instance } from '@switchboard/protocol';
import { ENTRY_TARGET_BYTES, approxRecordBytes, sliceChanges, type Change } from '../../src/core/entry.js';
import type { StoredRecord } from '../../src/core/replica.js';

const big = (n: number) => ({ blob: 'x'.repeat(n) });
function put(id: string, metaBytes: number): Change {
  const instance = { id, namespace: 'default', service: 'svc', address: '10.0.0.1', port: 80, protocol: 'http', zone: null, version: null, tags: [], metadata: big(metaBytes), weight: 100, status: 'up', health: 'passing', checks: [], leaseId: null, createRevision: 1, modRevision: 1 } as unknown as Instance;
  return { op: 'put', instance, specs: [] as CheckSpec[], reason: 'eviction_blocked' };
}
function record(id: string, metaBytes: number): StoredRecord {
  return { namespace: 'default', service: 'svc', id, v: '1', o: 'a', at: 0, i: { address: '10.0.0.1', port: 80, protocol: 'http', zone: null, version: null, tags: [], metadata: big(metaBytes), weight: 100, status: 'up', health: 'passing', checks: [], leaseId: null, owner: 'a' } as unknown as StoredRecord['i'] };
}

test('many changes: runs of about ENTRY_TARGET_BYTES, in order, none empty', () => {
  const changes = Array.from({ length: 1_000 }, (_, k) => put(`i${k}`, 16 * 1024));
  const runs = sliceChanges(changes);
  assert.ok(runs.length >= 4, `${runs.length} runs`);
  assert.deepEqual(runs.flat(), changes, 'every change once, in order');
  for (const run of runs) {
    assert.ok(run.length > 0);
    // The size is estimated from the fields (no serialisation): within a tenth of the JSON.
    assert.ok(JSON.stringify(run).length <= ENTRY_TARGET_BYTES * 1.1, `a run of ${JSON.stringify(run).length} bytes`);
  }
  assert.equal(sliceChanges(changes.slice(0, 3)).length, 1, 'small work stays one entry');
  assert.deepEqual(sliceChanges([]), []);
});

test('a change larger than the target is a run of its own; a replica change is split by its records', () => {
  const huge = put('huge', ENTRY_TARGET_BYTES + 1);
  const runs = sliceChanges([put('a', 10), huge, put('b', 10)]);
  assert.deepEqual(runs.map((r) => r.length), [1, 1, 1]);
  const records = Array.from({ length: 600 }, (_, k) => record(`r${k}`, 16 * 1024));
  const split = sliceChanges([put('first', 10), { op: 'replica', records }]);
  assert.ok(split.length >= 2);
  const back = split.flat().flatMap((c) => (c.op === 'replica' ? c.records : []));
  assert.deepEqual(back, records, 'every record once, in order');
  for (const run of split) assert.ok(run.reduce((n, c) => n + (c.op === 'replica' ? c.records.reduce((m, r) => m + approxRecordBytes(r), 0) : 0), 0) <= ENTRY_TARGET_BYTES);
});
