// Goal: recovery tells a torn final write (cut off with a log line naming file, offset and
// bytes) from damage to acknowledged data (open fails naming file, offset and the repair
// command), and `switchboard storage repair` then keeps exactly what preceded the damage.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync, truncateSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { FILE_HEADER_BYTES } from '../../src/storage/file-header.js';
import { segmentFileName } from '../../src/storage/layout.js';
import { appendEach, captureLogger, entries, flipByte, frameOffsets, freshEpoch, rebuild, segmentFiles, storage, storageCli, tempDir } from './fixtures.js';

async function writeLog(dir: string, n: number): Promise<string> {
  const s = storage(dir);
  await s.open(freshEpoch);
  await appendEach(s, entries(1, n));
  await s.close();
  return join(dir, segmentFiles(dir)[0]!);
}

test('a record cut short at the end is a torn tail: cut off and logged with file, offset and bytes', async () => {
  const t = tempDir('rec-torn');
  try {
    const seg = await writeLog(t.dir, 10);
    const { offsets, size } = frameOffsets(seg);
    const last = offsets[9]!;
    truncateSync(seg, last + 11); // mid-record
    const logger = captureLogger();
    const s = storage(t.dir, { logger });
    const rec = await s.open(freshEpoch);
    assert.deepEqual(rec.entries, entries(1, 9));
    const line = logger.lines.find((l) => l.level === 'warn' && /torn/.test(l.msg));
    assert.ok(line, 'a warning says the tail was cut off');
    assert.equal(line.obj.file, seg);
    assert.equal(line.obj.offset, last);
    assert.equal(line.obj.bytesDropped, 11);
    assert.equal(statSync(seg).size, last);
    assert.ok(size > last);
    // The log goes on from there.
    await appendEach(s, entries(10, 12));
    await s.close();
    const s2 = storage(t.dir);
    assert.deepEqual((await s2.open(freshEpoch)).entries, entries(1, 12));
    await s2.close();
  } finally {
    t.remove();
  }
});

test('a bad checksum in the last record with nothing after it is a torn tail', async () => {
  const t = tempDir('rec-torn-crc');
  try {
    const seg = await writeLog(t.dir, 5);
    const { offsets } = frameOffsets(seg);
    flipByte(seg, offsets[4]! + 30);
    const s = storage(t.dir);
    assert.deepEqual((await s.open(freshEpoch)).entries, entries(1, 4));
    await s.close();
  } finally {
    t.remove();
  }
});

test('damage inside the final write, with more frames of that write after it, is still a torn tail', async () => {
  const t = tempDir('rec-torn-batch');
  try {
    const s = storage(t.dir);
    await s.open(freshEpoch);
    await appendEach(s, entries(1, 3));
    await Promise.all(entries(4, 10).map((e) => s.append(e))); // one write
    await s.close();
    const seg = join(t.dir, segmentFiles(t.dir)[0]!);
    const { offsets } = frameOffsets(seg);
    flipByte(seg, offsets[5]! + 20); // inside the last write, frames 7-10 still valid
    const s2 = storage(t.dir);
    assert.deepEqual((await s2.open(freshEpoch)).entries, entries(1, 5));
    await s2.close();
  } finally {
    t.remove();
  }
});

test('a flipped byte in the middle of the log fails open naming file, offset and repair; repair keeps what came before', async () => {
  const t = tempDir('rec-corrupt');
  try {
    const seg = await writeLog(t.dir, 50);
    const { offsets } = frameOffsets(seg);
    const bad = offsets[20]!;
    flipByte(seg, bad + 25);
    const s = storage(t.dir);
    await assert.rejects(s.open(freshEpoch), (err: Error) => {
      assert.match(err.message, new RegExp(`${segmentFileName(1)} at byte ${bad}\\b`));
      assert.ok(err.message.includes(`switchboard storage repair --data-dir ${t.dir}`), err.message);
      return true;
    });
    assert.ok(!existsSync(join(t.dir, 'LOCK')), 'a failed open releases the lock');

    const inspect = await storageCli(['inspect', '--data-dir', t.dir]);
    assert.equal(inspect.code, 1);
    assert.match(inspect.stdout, /DAMAGED at wal-\d+\.log byte \d+/);

    const sizeBefore = statSync(seg).size;
    const repair = await storageCli(['repair', '--data-dir', t.dir]);
    assert.equal(repair.code, 0, repair.stderr);
    assert.match(repair.stdout, new RegExp(`cut ${segmentFileName(1)} at byte ${bad}`));
    const damaged = readdirSync(t.dir).filter((n) => n.startsWith('damaged-'));
    assert.equal(damaged.length, 1);
    const saved = readdirSync(join(t.dir, damaged[0]!));
    assert.deepEqual(saved, [`${segmentFileName(1)}.from-${bad}`]);
    assert.equal(statSync(join(t.dir, damaged[0]!, saved[0]!)).size, sizeBefore - bad, 'the bytes from the damage on are saved aside');
    assert.equal(statSync(seg).size, bad, 'the segment is cut at the damage');

    // Revisions 21-50 were acknowledged once: the node continues above them, so that no
    // watch position or ETag a client holds is given to another change.
    assert.match(repair.stdout, /revisions continue from \d+/);
    const s2 = storage(t.dir);
    const rec = await s2.open(freshEpoch);
    assert.deepEqual(rec.entries, entries(1, 20), 'every record before the damage is kept');
    assert.ok((rec.revisionFloor ?? 0) > 50, `revision floor ${rec.revisionFloor}`);
    assert.ok(rebuild(rec).revision > 50, 'the registry starts above every revision the moved records had');
    await appendEach(s2, entries(21, 22));
    await s2.close();
    const after = await storageCli(['inspect', '--data-dir', t.dir]);
    assert.equal(after.code, 0);
    const s3 = storage(t.dir);
    assert.equal((await s3.open(freshEpoch)).revisionFloor, rec.revisionFloor, 'the floor is kept in meta.json');
    await s3.close();
  } finally {
    t.remove();
  }
});

test('a missing first segment: open refuses; repair moves every later segment aside once and the directory opens above their revisions', async () => {
  const t = tempDir('rec-missing-first');
  try {
    const s = storage(t.dir, { segmentMaxBytes: 1 });
    await s.open(freshEpoch);
    await appendEach(s, entries(1, 6));
    await s.close();
    const segments = segmentFiles(t.dir);
    assert.ok(segments.length >= 3, `one segment per record (${segments.length})`);
    unlinkSync(join(t.dir, segments[0]!));
    await assert.rejects(storage(t.dir).open(freshEpoch), /LSN 1 is the next one needed/);
    const repair = await storageCli(['repair', '--data-dir', t.dir]);
    assert.equal(repair.code, 0, repair.stderr);
    const damaged = readdirSync(t.dir).filter((n) => n.startsWith('damaged-'));
    assert.deepEqual(readdirSync(join(t.dir, damaged[0]!)).sort(), segments.slice(1), 'each later segment moved aside, once');
    const s2 = storage(t.dir);
    const rec = await s2.open(freshEpoch);
    assert.deepEqual(rec.entries, []);
    assert.ok((rec.revisionFloor ?? 0) >= 6, `revision floor ${rec.revisionFloor}`);
    await s2.close();
  } finally {
    t.remove();
  }
});

test('damage in an older segment is never a torn tail', async () => {
  const t = tempDir('rec-old-seg');
  try {
    const s = storage(t.dir, { segmentMaxBytes: 2_048 });
    await s.open(freshEpoch);
    await appendEach(s, entries(1, 40));
    await s.close();
    const segs = segmentFiles(t.dir);
    assert.ok(segs.length >= 3);
    const first = join(t.dir, segs[0]!);
    const { offsets } = frameOffsets(first);
    truncateSync(first, offsets[offsets.length - 1]! + 5); // looks torn, but later segments exist
    await assert.rejects(storage(t.dir).open(freshEpoch), new RegExp(`${segs[0]} at byte ${offsets[offsets.length - 1]}`));
    assert.equal((await storageCli(['repair', '--data-dir', t.dir])).code, 0);
    const s2 = storage(t.dir);
    assert.deepEqual((await s2.open(freshEpoch)).entries, entries(1, offsets.length - 1));
    await s2.close();
  } finally {
    t.remove();
  }
});

test('a segment whose header was being written when the process died is removed', async () => {
  const t = tempDir('rec-torn-header');
  try {
    await writeLog(t.dir, 5);
    const next = join(t.dir, segmentFileName(6));
    writeFileSync(next, Buffer.alloc(FILE_HEADER_BYTES - 20, 0x41));
    const logger = captureLogger();
    const s = storage(t.dir, { logger });
    assert.deepEqual((await s.open(freshEpoch)).entries, entries(1, 5));
    assert.ok(logger.lines.some((l) => l.level === 'warn' && l.obj.file === next));
    await appendEach(s, entries(6, 7));
    await s.close();
    const s2 = storage(t.dir);
    assert.deepEqual((await s2.open(freshEpoch)).entries, entries(1, 7));
    await s2.close();
  } finally {
    t.remove();
  }
});

test('a second open of a directory in use fails naming the pid; a dead owner\'s lock is taken over', async () => {
  const t = tempDir('rec-lock');
  try {
    const s = storage(t.dir);
    await s.open(freshEpoch);
    await assert.rejects(storage(t.dir).open(freshEpoch), new RegExp(`in use by process ${process.pid}`));
    await s.close();
    writeFileSync(join(t.dir, 'LOCK'), '2147483646\n'); // no such process
    const logger = captureLogger();
    const s2 = storage(t.dir, { logger });
    await s2.open(freshEpoch);
    assert.ok(logger.lines.some((l) => /stale/.test(l.msg) && l.obj.pid === 2147483646));
    assert.equal(readFileSync(join(t.dir, 'LOCK'), 'utf8').split('\n')[0], String(process.pid));
    await s2.close();
    assert.ok(!existsSync(join(t.dir, 'LOCK')), 'close removes the lock');
  } finally {
    t.remove();
  }
});

test('a lock of another PID namespace (a container) counts while its owner refreshes it, even with our pid; a stale one is taken over; a node whose lock is taken writes no more', async () => {
  const t = tempDir('rec-lock-ns');
  const timing = { heartbeatMs: 100, staleMs: 600 };
  const lockPath = join(t.dir, 'LOCK');
  // Another container's agent: pid 1 in its namespace may be our own pid number too.
  const foreign = (token: string): string => `${process.pid}\n${JSON.stringify({ pidNs: 'pid:[1]', boot: readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(), host: hostname(), token })}\n`;
  let refreshing: NodeJS.Timeout | undefined;
  try {
    writeFileSync(lockPath, foreign('theirs'));
    refreshing = setInterval(() => utimesSync(lockPath, new Date(), new Date()), 50);
    const t0 = Date.now();
    await assert.rejects(storage(t.dir, { lockTiming: timing }).open(freshEpoch), /in use by process \d+ in another PID namespace/);
    assert.ok(Date.now() - t0 >= timing.staleMs, 'it waited for the lock to go stale first');
    clearInterval(refreshing);
    const old = new Date(Date.now() - 60_000);
    utimesSync(lockPath, old, old);
    const logger = captureLogger();
    const s = storage(t.dir, { logger, lockTiming: timing });
    await s.open(freshEpoch);
    assert.ok(logger.lines.some((l) => /stale data directory lock: not refreshed/.test(l.msg)), JSON.stringify(logger.lines));
    await appendEach(s, entries(1, 2));
    // Its lock is refreshed while it runs.
    const before = statSync(lockPath).mtimeMs;
    await sleep(3 * timing.heartbeatMs);
    assert.ok(statSync(lockPath).mtimeMs > before, 'the lock is refreshed');
    // Another process takes the directory (it judged this node stopped): no more writes here.
    writeFileSync(lockPath, foreign('another'));
    await sleep(3 * timing.heartbeatMs);
    await assert.rejects(s.append(entries(3, 3)[0]!), /lock .* was taken by process/);
    await s.close();
    assert.equal(JSON.parse(readFileSync(lockPath, 'utf8').split('\n')[1]!).token, 'another', 'close leaves the other process its lock');
  } finally {
    clearInterval(refreshing);
    t.remove();
  }
});
