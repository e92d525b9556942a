// Goal: appends are durable and ordered, group commit shares fsyncs among concurrent
// appends, the pending-bytes bound delays rather than drops, segments rotate by size, and
// a failed fsync fails the append and every later one. On Linux the segments are written
// with O_DSYNC (the write is the fsync), both new ones and a continued one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { constants, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { FileHandle } from 'node:fs/promises';
import { appendEach, entries, freshEpoch, storage, tempDir } from './fixtures.js';

test('entries appended are recovered in order with the same epoch', async () => {
  const t = tempDir('wal-basic');
  try {
    const s = storage(t.dir);
    const rec0 = await s.open(freshEpoch);
    assert.deepEqual(rec0.entries, []);
    const written = entries(1, 20);
    await appendEach(s, written);
    await s.close();
    const s2 = storage(t.dir);
    const rec = await s2.open(() => assert.fail('an existing directory keeps its epoch'));
    assert.equal(rec.epoch, rec0.epoch);
    assert.deepEqual(rec.entries, written);
    await s2.close();
  } finally {
    t.remove();
  }
});

test('group commit: 500 concurrent appends share far fewer fsyncs and resolve in order', async () => {
  const t = tempDir('wal-group');
  try {
    const s = storage(t.dir);
    await s.open(freshEpoch);
    const before = s.stats.fsyncs;
    const order: number[] = [];
    const all = entries(1, 500).map((e) => s.append(e).then(() => order.push(e.revision)));
    await Promise.all(all);
    const fsyncs = s.stats.fsyncs - before;
    assert.ok(fsyncs <= 50, `500 concurrent appends used ${fsyncs} fsyncs`);
    assert.equal(s.stats.writes, fsyncs, 'one write per fsync');
    assert.deepEqual(order, entries(1, 500).map((e) => e.revision), 'resolved strictly in append order');
    // Appends that arrive during an fsync form the next batch.
    const first = s.append(entries(501, 501)[0]!);
    await new Promise((r) => setImmediate(r));
    const later = entries(502, 600).map((e) => s.append(e));
    await Promise.all([first, ...later]);
    assert.ok(s.stats.fsyncs - before - fsyncs <= 3, 'the 99 appends during one fsync share the next');
    await s.close();
    const s2 = storage(t.dir);
    assert.equal((await s2.open(freshEpoch)).entries.length, 600);
    await s2.close();
  } finally {
    t.remove();
  }
});

/** The open flags of this process's descriptors on files under `dir` (Linux /proc). */
function openFlagsUnder(dir: string): number[] {
  const out: number[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    let target: string;
    try {
      target = readlinkSync(join('/proc/self/fd', fd));
    } catch {
      continue; // closed meanwhile (the readdir's own descriptor)
    }
    if (!target.startsWith(dir)) continue;
    const flags = /^flags:\s+([0-7]+)$/m.exec(readFileSync(join('/proc/self/fdinfo', fd), 'utf8'))?.[1];
    if (flags) out.push(parseInt(flags, 8));
  }
  return out;
}

test('on Linux, segments are written with O_DSYNC: one durable write per group commit, new and continued segments', { skip: process.platform !== 'linux' && 'reads /proc' }, async () => {
  const t = tempDir('wal-dsync');
  try {
    for (const round of ['new', 'continued']) {
      const s = storage(t.dir);
      await s.open(freshEpoch);
      await appendEach(s, round === 'new' ? entries(1, 5) : entries(6, 10));
      const flags = openFlagsUnder(t.dir);
      assert.ok(flags.length > 0, `the ${round} segment is open`);
      for (const f of flags) assert.ok((f & constants.O_DSYNC) !== 0, `the ${round} segment is open with O_DSYNC (flags ${f.toString(8)})`);
      await s.close();
    }
    const s = storage(t.dir);
    assert.equal((await s.open(freshEpoch)).entries.length, 10);
    await s.close();
  } finally {
    t.remove();
  }
});

test('maxPendingBytes: appends beyond the bound wait, none is lost', async () => {
  const t = tempDir('wal-bound');
  try {
    const s = storage(t.dir, { maxPendingBytes: 2_000, maxBatchBytes: 1_500 });
    await s.open(freshEpoch);
    await Promise.all(entries(1, 300).map((e) => s.append(e)));
    assert.ok(s.stats.deferredAppends > 0, 'some appends found the queue full');
    assert.ok(s.stats.writes >= 300 * 300 / 1_500 / 2, 'batches were capped by maxBatchBytes');
    await s.close();
    const s2 = storage(t.dir);
    assert.deepEqual((await s2.open(freshEpoch)).entries, entries(1, 300));
    await s2.close();
  } finally {
    t.remove();
  }
});

test('segments rotate at segmentMaxBytes and replay across all of them', async () => {
  const t = tempDir('wal-rotate');
  try {
    const s = storage(t.dir, { segmentMaxBytes: 4_096 });
    await s.open(freshEpoch);
    await appendEach(s, entries(1, 100));
    await s.close();
    const segs = readdirSync(t.dir).filter((n) => n.startsWith('wal-'));
    assert.ok(segs.length >= 5, `expected several segments, got ${segs.join(', ')}`);
    const s2 = storage(t.dir, { segmentMaxBytes: 4_096 });
    assert.deepEqual((await s2.open(freshEpoch)).entries, entries(1, 100));
    await appendEach(s2, entries(101, 110));
    await s2.close();
    const s3 = storage(t.dir);
    assert.deepEqual((await s3.open(freshEpoch)).entries, entries(1, 110));
    await s3.close();
  } finally {
    t.remove();
  }
});

test('an fsync failure rejects that append and every later one', async () => {
  const t = tempDir('wal-fsync');
  try {
    let failNext = false;
    const sync = async (fh: FileHandle): Promise<void> => {
      if (failNext) throw Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
      await fh.datasync();
    };
    const s = storage(t.dir, { sync });
    await s.open(freshEpoch);
    await s.append(entries(1, 1)[0]!);
    failNext = true;
    const [a, b] = [s.append(entries(2, 2)[0]!), s.append(entries(3, 3)[0]!)];
    await assert.rejects(a, /fsync failed: EIO/);
    await assert.rejects(b, /fsync failed/);
    await assert.rejects(s.append(entries(4, 4)[0]!), /fsync failed/, 'the log stays failed: no retry after a failed fsync');
    await s.close();
  } finally {
    t.remove();
  }
});

test('appends taken into a batch with one that cannot be encoded are rejected with it, not left waiting', async () => {
  const t = tempDir('wal-encode');
  try {
    // Encoding deferred (the queue is over maxPendingBytes), then an entry over the largest record.
    const s = storage(t.dir, { maxPendingBytes: 1 });
    await s.open(freshEpoch);
    const [a, b] = entries(1, 2);
    const huge = entries(3, 3)[0]!;
    (huge.changes[0] as { instance: { metadata: Record<string, string> } }).instance.metadata = { note: 'x'.repeat(65 * 1024 * 1024) };
    const settled = (p: Promise<unknown>) => Promise.race([p.then(() => 'resolved', () => 'rejected'), new Promise((r) => setTimeout(() => r('pending'), 5_000))]);
    const [ra, rb, rc] = await Promise.all([s.append(a!), s.append(b!), s.append(huge)].map(settled));
    assert.deepEqual([ra, rb, rc].map((x) => x !== 'pending'), [true, true, true], `settled: ${ra}, ${rb}, ${rc}`);
    assert.equal(rc, 'rejected');
    await s.close().catch(() => undefined);
  } finally {
    t.remove();
  }
});
