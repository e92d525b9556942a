// Goal: a log record made from the instances' cached JSON (entryJson) parses to exactly
// the entry it stands for, whatever the entry holds, and recovery gives those entries
// back; string payloads are framed like byte payloads; snapshots reuse the JSON too.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Entry, Snapshot } from '../../src/core/entry.js';
import { SNAPSHOT_CHUNK_BYTES, SNAPSHOT_CHUNK_ITEMS, readSnapshotFile, writeSnapshotFile } from '../../src/storage/snapshot.js';
import { FILE_HEADER_BYTES } from '../../src/storage/file-header.js';
import { DEFAULT_LIMITS } from '@switchboard/protocol';
import { BATCH_END, FRAME_HEADER_BYTES, MAX_FRAME_PAYLOAD_BYTES, decodeFrame, encodeFrame, writeFrame } from '../../src/storage/record.js';
import { entryJson, setEntryJson } from '../../src/storage/wal.js';
import { freshEpoch, instance, putEntry, storage, tempDir } from './fixtures.js';

function mixedEntry(revision: number): Entry {
  const a = instance('a"é\u2028', revision);
  a.metadata = { quote: 'he said "hi"\n', unicode: 'zoë ✓ 😀' };
  a.tags = ['x', 'y'];
  const b = instance('b', revision, 'api');
  return {
    revision,
    at: 1_700_000_000_123,
    changes: [
      { op: 'put', instance: a, specs: [{ id: 'http-0', type: 'http', target: 'http://127.0.0.1:1/h', intervalMs: 10_000, timeoutMs: 2000 } as never], reason: 'registered' },
      { op: 'delete', namespace: 'default', service: 'web', id: 'gone', reason: 'deregistered' },
      { op: 'put', instance: b, specs: [], reason: 'updated', detail: 'weight' },
      { op: 'lease_grant', leaseId: 'l1', ttlMs: 10_000 },
      { op: 'settings', namespace: 'default', service: 'web', settings: { protectThreshold: 0.5 } },
      // ap mode: replicated puts carry their version, or mark a change of the view only.
      { op: 'put', instance: instance('c', revision), specs: [], reason: 'updated', detail: 'from b', repl: { v: '0001\u00a0x', o: 'b"' } },
      { op: 'put', instance: instance('d', revision), specs: [], repl: { view: true } },
    ],
  };
}

test('entryJson parses to the entry, with cached instance JSON or without', () => {
  for (const entry of [mixedEntry(3), putEntry(9), { revision: 4, changes: [] } as Entry]) {
    const cachedAll = entryJson(entry, (c) => JSON.stringify(c.instance));
    const cachedNone = entryJson(entry, () => undefined);
    assert.deepEqual(JSON.parse(cachedAll), JSON.parse(JSON.stringify(entry)));
    assert.deepEqual(JSON.parse(cachedNone), JSON.parse(JSON.stringify(entry)));
  }
  // The cached text is used as it is (that is the point: no second serialisation).
  const e = putEntry(5);
  const text = entryJson(e, () => '{"marker":true}');
  assert.deepEqual(JSON.parse(text).changes[0].instance, { marker: true });
});

test('a string payload is framed exactly like its UTF-8 bytes', () => {
  const text = JSON.stringify(mixedEntry(2));
  const bytes = Buffer.from(text, 'utf8');
  const buf = Buffer.alloc(FRAME_HEADER_BYTES + bytes.length);
  assert.equal(writeFrame(buf, 0, 77, BATCH_END, text), buf.length);
  assert.deepEqual(buf, encodeFrame(77, BATCH_END, bytes));
  const d = decodeFrame(buf, 0);
  assert.equal(d.kind, 'frame');
  assert.throws(() => writeFrame(Buffer.alloc(FRAME_HEADER_BYTES + bytes.length - 1), 0, 1, 0, text), /no room/);
  // Cut in the middle of a 4-byte character: the write stops short of the buffer's end.
  const emoji = '{"a":"😀"}';
  assert.throws(() => writeFrame(Buffer.alloc(FRAME_HEADER_BYTES + Buffer.byteLength(emoji) - 3), 0, 1, 0, emoji), /no room/);
});

test('entries logged with their JSON given are recovered as the same entries', async () => {
  const t = tempDir('entry-json');
  try {
    const s = storage(t.dir);
    await s.open(freshEpoch);
    const written = [mixedEntry(1), putEntry(2), mixedEntry(3)];
    const appended: Promise<void>[] = [];
    for (const e of written) {
      setEntryJson(e, entryJson(e, (c) => JSON.stringify(c.instance)));
      appended.push(s.append(e));
    }
    // Text handed over for another entry than the one appended is not used for it.
    const other = putEntry(4);
    setEntryJson(mixedEntry(99), '{"revision":99,"changes":[]}');
    appended.push(s.append(other));
    written.push(other);
    await Promise.all(appended);
    await s.close();
    const s2 = storage(t.dir);
    const rec = await s2.open(() => assert.fail('the directory keeps its epoch'));
    assert.deepEqual(rec.entries, JSON.parse(JSON.stringify(written)));
    await s2.close();
  } finally {
    t.remove();
  }
});

test('a snapshot written with the instances\' cached JSON reads back as the same snapshot', async () => {
  const t = tempDir('snap-json');
  try {
    const instances = [mixedEntry(1), putEntry(2), putEntry(3)].flatMap((e) => e.changes).filter((c) => c.op === 'put').map((c) => ({ instance: c.instance, specs: c.specs }));
    const snap: Snapshot = { format: 1, epoch: 'ep1', revision: 3, leases: [{ leaseId: 'l1', ttlMs: 10_000 }], instances, emptyServices: [], serviceRevisions: [], serviceSettings: [], histories: [] };
    const known = new Map(instances.slice(0, 2).map((i) => [i.instance, JSON.stringify(i.instance)])); // the others are serialised
    let asked = 0;
    const file = await writeSnapshotFile(t.dir, 7, snap, 2, (i) => (asked++, known.get(i)));
    assert.equal(asked, instances.length);
    const back = await readSnapshotFile(t.dir, file.name, 7);
    assert.deepEqual(back.snapshot, JSON.parse(JSON.stringify(snap)));
  } finally {
    t.remove();
  }
});

test('a snapshot encoded instance by instance is byte for byte the one serialised whole, across buffer refills and a chunk larger than the buffer', async () => {
  const t = tempDir('snap-pieces');
  try {
    // About 3 MB of instances with multi-byte text (the write buffer holds 1 MiB), and one
    // instance of 1.5 MB, which needs a larger buffer for its chunk.
    const instances: Snapshot['instances'] = [];
    for (let k = 0; k < 2_500; k++) {
      const i = instance(`i-${k}`, k + 1);
      i.metadata = { note: `zoë ✓ 😀 ${k} `.repeat(40 + (k % 17)) };
      instances.push({ instance: i, specs: k % 3 === 0 ? [{ id: 'tcp-0', type: 'tcp', target: '127.0.0.1:9', intervalMs: 10_000, timeoutMs: 2000 } as never] : [] });
    }
    const big = instance('big', 2_501);
    big.metadata = { blob: 'é'.repeat(750_000) };
    instances.splice(1_234, 0, { instance: big, specs: [] });
    const snap: Snapshot = { format: 1, epoch: 'ep1', revision: 2_501, leases: [{ leaseId: 'l1', ttlMs: 10_000 }], instances, emptyServices: [], serviceRevisions: [], serviceSettings: [], histories: [] };
    const cached = new Map(instances.filter((_, k) => k % 5 !== 0).map((i) => [i.instance, JSON.stringify(i.instance)]));
    mkdirSync(join(t.dir, 'a'));
    mkdirSync(join(t.dir, 'b'));
    const whole = await writeSnapshotFile(join(t.dir, 'a'), 11, snap, 300);
    const pieces = await writeSnapshotFile(join(t.dir, 'b'), 11, snap, 300, (i) => cached.get(i));
    assert.ok(pieces.bytes > 3_000_000, `the snapshot spans several buffers (${pieces.bytes} bytes)`);
    assert.equal(pieces.bytes, whole.bytes);
    assert.ok(readFileSync(join(t.dir, 'b', pieces.name)).equals(readFileSync(join(t.dir, 'a', whole.name))), 'the same bytes');
    const back = await readSnapshotFile(join(t.dir, 'b'), pieces.name, 11);
    assert.deepEqual(back.snapshot, JSON.parse(JSON.stringify(snap)));
  } finally {
    t.remove();
  }
});

test('an instances chunk larger than the largest frame fails the snapshot and leaves no file behind', async () => {
  const t = tempDir('snap-too-large');
  try {
    const huge = instance('huge', 1);
    huge.metadata = { blob: 'x'.repeat(MAX_FRAME_PAYLOAD_BYTES) };
    const instances: Snapshot['instances'] = [{ instance: instance('small', 2), specs: [] }, { instance: huge, specs: [] }];
    const snap: Snapshot = { format: 1, epoch: 'ep1', revision: 2, leases: [], instances, emptyServices: [], serviceRevisions: [], serviceSettings: [], histories: [] };
    await assert.rejects(writeSnapshotFile(t.dir, 3, snap, 1000, (i) => JSON.stringify(i)), /exceeds the largest frame/);
    assert.deepEqual(readdirSync(t.dir), [], 'the temporary file is removed');
  } finally {
    t.remove();
  }
});

test('a list too large for one frame at the item count is cut by bytes: 700 instances of 16 KiB of control characters snapshot and read back', async () => {
  const t = tempDir('snap-bytes');
  try {
    const meta = { k: '\u0001'.repeat(DEFAULT_LIMITS.maxMetadataBytes - 1) }; // 6 bytes of JSON each: about 98 KB an instance
    const instances: Snapshot['instances'] = [];
    for (let k = 0; k < 700; k++) {
      const i = instance(`i-${k}`, k + 1);
      i.metadata = meta;
      instances.push({ instance: i, specs: [] });
    }
    const snap: Snapshot = { format: 1, epoch: 'ep1', revision: 700, leases: [], instances, emptyServices: [], serviceRevisions: [], serviceSettings: [], histories: [] };
    const file = await writeSnapshotFile(t.dir, 5, snap, SNAPSHOT_CHUNK_ITEMS, (i) => JSON.stringify(i));
    assert.ok(file.bytes > MAX_FRAME_PAYLOAD_BYTES, `more than one frame could hold (${file.bytes} bytes)`);
    const buf = readFileSync(join(t.dir, file.name));
    const itemBytes = Buffer.byteLength(JSON.stringify(instances[0]));
    let largest = 0;
    for (let at = FILE_HEADER_BYTES; at < buf.length; ) {
      const d = decodeFrame(buf, at);
      assert.equal(d.kind, 'frame');
      if (d.kind !== 'frame') break;
      largest = Math.max(largest, d.frame.payload.length);
      at = d.frame.end;
    }
    assert.ok(largest <= SNAPSHOT_CHUNK_BYTES + itemBytes + 64, `no frame holds much more than SNAPSHOT_CHUNK_BYTES (${largest})`);
    const back = await readSnapshotFile(t.dir, file.name, 5);
    assert.equal(back.snapshot.instances.length, 700);
    assert.deepEqual(back.snapshot.instances[699], JSON.parse(JSON.stringify(instances[699])));
  } finally {
    t.remove();
  }
});
