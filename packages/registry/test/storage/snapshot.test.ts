// Goal: a snapshot plus the log after it rebuilds exactly the state before a restart;
// snapshots cut the log at the exact entry, trim what two snapshots cover, survive a crash
// at any step (temporary file, damaged newest snapshot), and are due after the named limits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, ftruncateSync, openSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FileStorage } from '../../src/storage/file-storage.js';
import { snapshotFileName } from '../../src/storage/layout.js';
import type { Registry } from '../../src/core/registry.js';
import { flipByte, freshEpoch, rebuild, registry, segmentFiles, storage, storageCli, tempDir } from './fixtures.js';

/** Drives real commands through a registry and appends every outcome, as the engine does. */
function drive(reg: Registry, s: FileStorage, from: number, to: number): Promise<void>[] {
  const acks: Promise<void>[] = [];
  const persist = (o: { entry: unknown }): void => {
    if (o.entry) acks.push(s.append(o.entry as never));
  };
  const svc = (k: number): string => `svc-${k % 7}`;
  for (let i = from; i <= to; i++) {
    if (i % 10 === 0) persist(reg.grantLease(`lease-${i}`, 10_000));
    const leaseId = i % 4 === 0 ? (reg.lease(`lease-${i - (i % 10)}`)?.id ?? null) : null;
    persist(reg.register({ namespace: 'default', service: svc(i), id: `i${i}`, input: { address: '10.0.0.1', port: 1000 + i, leaseId, zone: null, version: null, tags: ['t'], metadata: {}, weight: 100, protocol: 'http', checks: [] } }));
    if (i % 5 === 0 && reg.instance('default', svc(i - 3), `i${i - 3}`)) persist(reg.deregister('default', svc(i - 3), `i${i - 3}`));
    if (i % 9 === 0) persist(reg.setStatus('default', svc(i), `i${i}`, 'draining'));
    if (i % 30 === 0) persist(reg.revokeLease(`lease-${i - 10}`));
  }
  return acks;
}

function files(dir: string): { segments: string[]; snapshots: string[] } {
  const names = readdirSync(dir);
  return { segments: segmentFiles(dir), snapshots: names.filter((n) => n.endsWith('.snap')).sort() };
}

/** The size in bytes of the newest snapshot file in `dir`. */
function newestSnapshotBytes(dir: string): number {
  return statSync(join(dir, files(dir).snapshots.at(-1)!)).size;
}

test('snapshot + trim + replay equals the state before, across three snapshots', async () => {
  const t = tempDir('snap-replay');
  try {
    const s = storage(t.dir, { segmentMaxBytes: 8_192 });
    const rec0 = await s.open(freshEpoch);
    const { reg } = registry(rec0.epoch);
    for (let round = 0; round < 3; round++) {
      const acks = drive(reg, s, round * 300 + 1, round * 300 + 300);
      await s.writeSnapshot(reg.snapshot()); // same tick as the snapshot was taken
      await Promise.all(acks);
    }
    await Promise.all(drive(reg, s, 901, 950)); // after the last snapshot
    const before = reg.snapshot();
    await s.close();
    const f = files(t.dir);
    assert.equal(f.snapshots.length, 2, `the newest two snapshots are kept: ${f.snapshots.join(', ')}`);
    const oldest = Number(f.snapshots[0]!.slice(5, 25));
    assert.ok(Number(f.segments[0]!.slice(4, 24)) <= oldest + 1, 'the log is kept from the older snapshot on');
    assert.ok(Number(f.segments[1]?.slice(4, 24) ?? Infinity) > oldest + 1, 'segments covered by the older snapshot are trimmed');

    const s2 = storage(t.dir);
    const rec = await s2.open(freshEpoch);
    assert.ok(rec.snapshot, 'recovery starts from a snapshot');
    assert.equal(rec.epoch, rec0.epoch);
    assert.deepEqual(rebuild(rec).snapshot(), before);
    await s2.close();
  } finally {
    t.remove();
  }
});

test('a snapshot taken while appends are in flight covers exactly the entries before it', async () => {
  const t = tempDir('snap-cut');
  try {
    const s = storage(t.dir);
    const { epoch } = await s.open(freshEpoch);
    const { reg } = registry(epoch);
    const early = drive(reg, s, 1, 40); // not yet durable
    const snapPromise = s.writeSnapshot(reg.snapshot());
    const late = drive(reg, s, 41, 60);
    await Promise.all([...early, ...late, snapPromise]);
    const before = reg.snapshot();
    await s.close();
    const s2 = storage(t.dir);
    const rec = await s2.open(freshEpoch);
    assert.ok(rec.snapshot && rec.entries.length > 0);
    assert.ok(rec.entries.every((e) => e.revision > rec.snapshot!.revision || e.changes.every((c) => c.op.startsWith('lease'))), 'the log after the snapshot holds only later entries');
    assert.deepEqual(rebuild(rec).snapshot(), before);
    await s2.close();
  } finally {
    t.remove();
  }
});

test('a crash while writing a snapshot leaves a directory that recovers (temporary file ignored)', async () => {
  const t = tempDir('snap-crash');
  try {
    const s = storage(t.dir);
    const { epoch } = await s.open(freshEpoch);
    const { reg } = registry(epoch);
    await Promise.all(drive(reg, s, 1, 100));
    const before = reg.snapshot();
    await s.close();
    writeFileSync(join(t.dir, snapshotFileName(999) + '.tmp'), 'half a snapshot');
    const s2 = storage(t.dir);
    const rec = await s2.open(freshEpoch);
    assert.equal(rec.snapshot, null);
    assert.deepEqual(rebuild(rec).snapshot(), before);
    assert.ok(!readdirSync(t.dir).some((n) => n.endsWith('.tmp')), 'the leftover is removed');
    await s2.close();
  } finally {
    t.remove();
  }
});

test('a damaged newest snapshot fails open; repair moves it aside and the older one plus the log recover everything', async () => {
  const t = tempDir('snap-damaged');
  try {
    const s = storage(t.dir);
    const { epoch } = await s.open(freshEpoch);
    const { reg } = registry(epoch);
    await Promise.all(drive(reg, s, 1, 100));
    await s.writeSnapshot(reg.snapshot());
    await Promise.all(drive(reg, s, 101, 200));
    await s.writeSnapshot(reg.snapshot());
    await Promise.all(drive(reg, s, 201, 220));
    const before = reg.snapshot();
    await s.close();
    const newest = files(t.dir).snapshots[1]!;
    flipByte(join(t.dir, newest), 200);
    await assert.rejects(storage(t.dir).open(freshEpoch), (err: Error) => {
      assert.ok(err.message.includes(newest) && err.message.includes('storage repair --data-dir'), err.message);
      return true;
    });
    const r = await storageCli(['repair', '--data-dir', t.dir]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`moved aside into .*damaged-.*: ${newest}`));
    const s2 = storage(t.dir);
    const rec = await s2.open(freshEpoch);
    assert.deepEqual(rebuild(rec).snapshot(), before);
    await s2.close();
  } finally {
    t.remove();
  }
});

test('snapshotDue after snapshotEveryRecords records or snapshotEveryBytes bytes, counting replayed ones', async () => {
  const t = tempDir('snap-due');
  try {
    const s = storage(t.dir, { snapshotEveryRecords: 50, snapshotEveryBytes: 1_000_000 });
    const { epoch } = await s.open(freshEpoch);
    const { reg } = registry(epoch);
    const acks: Promise<void>[] = [];
    let n = 0;
    while (!s.snapshotDue()) {
      acks.push(...drive(reg, s, ++n, n));
      assert.ok(n < 100);
    }
    await Promise.all(acks);
    assert.ok(s.stats.appends >= 50);
    await s.writeSnapshot(reg.snapshot());
    assert.equal(s.snapshotDue(), false);
    await Promise.all(drive(reg, s, 1000, 1299)); // more records after the snapshot, more bytes than it has
    await s.close();
    const probe = storage(t.dir);
    const replayed = (await probe.open(freshEpoch)).entries.length;
    await probe.close();
    assert.ok(replayed >= 300);
    const s2 = storage(t.dir, { snapshotEveryRecords: replayed + 1 });
    await s2.open(freshEpoch);
    assert.equal(s2.snapshotDue(), false, 'one record short of due');
    await s2.close();
    const s3 = storage(t.dir, { snapshotEveryRecords: replayed });
    await s3.open(freshEpoch);
    assert.equal(s3.snapshotDue(), true, 'the replayed records count toward the next snapshot');
    await s3.close();
    const s4 = storage(t.dir, { snapshotEveryRecords: 1_000, snapshotEveryBytes: 500 });
    await s4.open(freshEpoch);
    assert.equal(s4.snapshotDue(), true, 'and so do their bytes');
    await s4.close();
  } finally {
    t.remove();
  }
});

test('a snapshot is not due before the log since the last one is as large as it, also after a restart', async () => {
  const t = tempDir('snap-ratio');
  try {
    const limits = { snapshotEveryRecords: 20, snapshotEveryBytes: 64 * 1024 * 1024 };
    const s = storage(t.dir, limits);
    const { epoch } = await s.open(freshEpoch);
    const { reg } = registry(epoch);
    await Promise.all(drive(reg, s, 1, 3000)); // a registry of a few thousand instances
    await s.writeSnapshot(reg.snapshot());
    const snapBytes = newestSnapshotBytes(t.dir);
    const at = s.stats.bytesEncoded;
    let n = 0;
    let lastBefore = 0;
    const acks: Promise<void>[] = [];
    while (!s.snapshotDue()) {
      lastBefore = s.stats.bytesEncoded - at;
      acks.push(...drive(reg, s, 5000 + n, 5000 + n));
      n++;
      assert.ok(n < 100_000);
    }
    await Promise.all(acks);
    const grown = s.stats.bytesEncoded - at;
    assert.ok(n > 20 * 5, `due after ${n} commands, far more than snapshotEveryRecords`);
    assert.ok(lastBefore < snapBytes && grown >= snapBytes, `due once the log (${grown} bytes) reached the snapshot's ${snapBytes} bytes, not before (${lastBefore})`);
    await s.close();
    // After a restart the loaded snapshot's size counts the same way.
    const s2 = storage(t.dir, limits);
    await s2.open(freshEpoch);
    assert.equal(s2.snapshotDue(), true, 'the replayed log is as large as the snapshot');
    await s2.close();
    const s3 = storage(t.dir, { ...limits, snapshotEveryRecords: 1 });
    const rec = await s3.open(freshEpoch);
    assert.ok(rec.entries.length > 20);
    const reg3 = rebuild(rec);
    await s3.writeSnapshot(reg3.snapshot());
    await Promise.all(drive(reg3, s3, 90_001, 90_002));
    assert.equal(s3.snapshotDue(), false, 'past the record limit of 1, but the log since the snapshot is far smaller than it');
    await s3.close();
    // snapshotEveryBytes bounds the log whatever the last snapshot's size.
    const s4 = storage(t.dir, { snapshotEveryRecords: 1_000_000, snapshotEveryBytes: 2_000 });
    const reg4 = rebuild(await s4.open(freshEpoch));
    await s4.writeSnapshot(reg4.snapshot());
    const snap4Bytes = newestSnapshotBytes(t.dir);
    assert.ok(snap4Bytes > 2_000 * 10, `the snapshot (${snap4Bytes} bytes) is far larger than snapshotEveryBytes`);
    const at4 = s4.stats.bytesEncoded;
    let m = 0;
    while (!s4.snapshotDue()) {
      await Promise.all(drive(reg4, s4, 91_000 + m, 91_000 + m));
      m++;
      assert.ok(m < 10_000);
    }
    const grown4 = s4.stats.bytesEncoded - at4;
    assert.ok(grown4 >= 2_000 && grown4 < snap4Bytes, `due at snapshotEveryBytes (${grown4} bytes of log), before the log reached the size of the snapshot written just before (${snap4Bytes} bytes)`);
    await s4.close();
  } finally {
    t.remove();
  }
});

test('the revision of services forgotten once empty survives a restart from a snapshot', async () => {
  const t = tempDir('snap-forgotten');
  try {
    const s = storage(t.dir);
    const rec0 = await s.open(freshEpoch);
    const { reg } = registry(rec0.epoch);
    const input = { address: '10.0.0.1', port: 80, leaseId: null, zone: null, version: null, tags: [], metadata: {}, weight: 100, protocol: 'http' as const, checks: [] };
    // More empty services than the registry keeps: the oldest are forgotten.
    const acks: Promise<unknown>[] = [];
    for (let k = 0; k < 10_050; k++) {
      for (const o of [reg.register({ namespace: 'default', service: `s${k}`, id: 'i', input }), reg.deregister('default', `s${k}`, 'i')]) if (o.entry) acks.push(s.append(o.entry));
    }
    await Promise.all(acks);
    const forgotten = reg.serviceRevision('default', 's0');
    assert.ok(forgotten > 0, 'a forgotten service answers the revision of the forgotten ones');
    assert.equal(reg.service('default', 's0'), undefined, 'a forgotten service is gone from every lookup');
    assert.equal(forgotten, reg.serviceRevision('default', 'never-seen'), 'and answers as a service never seen does');
    assert.ok(reg.service('default', 's10049'), 'the newest empty services are kept');
    await s.writeSnapshot(reg.snapshot());
    await s.close();
    const s2 = storage(t.dir);
    const rec = await s2.open(freshEpoch);
    assert.ok(rec.snapshot);
    assert.equal(rebuild(rec).serviceRevision('default', 's0'), forgotten, 'not 0 after the restart');
    assert.equal(rebuild(rec).serviceRevision('default', 'never-seen'), forgotten);
    await s2.close();
  } finally {
    t.remove();
  }
});

test('a snapshot holds the histories as they were at its cut: changes made while it is saved are replayed once, not twice', async () => {
  const t = tempDir('snap-history');
  try {
    const s = storage(t.dir);
    const rec0 = await s.open(freshEpoch);
    const { reg } = registry(rec0.epoch);
    await Promise.all(drive(reg, s, 1, 200));
    const live = reg.snapshot().instances.map((i) => i.instance);
    assert.ok(live.length > 100);
    const saved = s.writeSnapshot(reg.snapshot());
    // In the same tick, so before the snapshot is saved: each instance changes again, some
    // go (a deleted instance's history is kept apart) and some of those come back (and
    // continue the history they had).
    const acks: Promise<void>[] = [];
    live.forEach((i, k) => {
      const input = { address: i.address, port: i.port + 1, leaseId: i.leaseId, zone: null, version: null, tags: i.tags, metadata: {}, weight: 100, protocol: 'http' as const, checks: [] };
      const register = () => reg.register({ namespace: i.namespace, service: i.service, id: i.id, input });
      const outcomes = k % 8 === 0 ? [reg.deregister(i.namespace, i.service, i.id), register()] : k % 4 === 0 ? [reg.deregister(i.namespace, i.service, i.id)] : [register()];
      for (const o of outcomes) if (o.entry) acks.push(s.append(o.entry));
    });
    await saved;
    await Promise.all(acks);
    await s.close();
    const s2 = storage(t.dir);
    const rec = await s2.open(freshEpoch);
    assert.ok(rec.snapshot, 'recovery starts from the snapshot');
    assert.ok(rec.entries.length >= live.length, 'and replays the changes made after its cut');
    const back = rebuild(rec);
    for (const i of live) assert.deepEqual(back.history(i.namespace, i.service, i.id), reg.history(i.namespace, i.service, i.id), `the history of ${i.service}/${i.id}`);
    await s2.close();
  } finally {
    t.remove();
  }
});

test('a snapshot file past 2 GiB is read frame by frame: one that is damaged is reported as damage and repair moves it aside', async () => {
  const t = tempDir('snap-2gib');
  try {
    const s = storage(t.dir);
    await s.open(freshEpoch);
    await s.close();
    // Sparse: 2 GiB and one byte of zeros take no room. Read whole, such a file fails with
    // Node's ERR_FS_FILE_TOO_LARGE before it is even looked at, and repair could not move it.
    const fd = openSync(join(t.dir, snapshotFileName(1)), 'w');
    ftruncateSync(fd, 2 ** 31 + 1);
    closeSync(fd);
    await assert.rejects(storage(t.dir).open(freshEpoch), /snap-0+1\.snap at byte 0/);
    const r = await storageCli(['repair', '--data-dir', t.dir]);
    assert.equal(r.code, 0, r.stderr);
    const s2 = storage(t.dir);
    await s2.open(freshEpoch);
    await s2.close();
  } finally {
    t.remove();
  }
});
