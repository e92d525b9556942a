/**
 * A read-only report on a data directory, for `switchboard storage inspect`. It may run
 * while an agent has the directory open; it then sees the files as of that moment.
 */
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { LOCK_FILE, classifyFiles, type NamedFile } from './layout.js';
import { pidAlive } from './lock.js';
import { readMeta } from './meta.js';
import { epochFromFiles } from './recovery.js';
import { scanLog, type Damage } from './scan.js';
import { SnapshotDamageError, readSnapshotFile } from './snapshot.js';

export interface SnapshotReport {
  file: string;
  lsn: number;
  bytes: number | null;
  revision: number | null;
  instances: number | null;
  leases: number | null;
  damage: string | null;
}

export interface SegmentReport {
  file: string;
  firstLsn: number;
  lastLsn: number | null;
  records: number | null;
  bytes: number | null;
  /** Wholly covered by the snapshot recovery would use: not read. */
  covered: boolean;
  damage: Damage | null;
}

export interface InspectReport {
  dir: string;
  epoch: string | null;
  lock: { pid: number | null; running: boolean } | null;
  snapshots: SnapshotReport[];
  /** The newest intact snapshot: where recovery starts (after a repair, if the newest is damaged). */
  recoverFrom: string | null;
  segments: SegmentReport[];
  /** Records recovery would replay after the snapshot. */
  replayRecords: number;
  lastLsn: number;
  /** The revision the node would have after recovery. */
  revision: number;
  /** ok; torn-tail (recovery cuts it off by itself); damaged (repair needed). */
  state: 'ok' | 'torn-tail' | 'damaged';
  damage: Damage | null;
}

async function lockOf(dir: string): Promise<InspectReport['lock']> {
  try {
    const pid = Number.parseInt(await readFile(join(dir, LOCK_FILE), 'utf8'), 10);
    return Number.isInteger(pid) && pid > 0 ? { pid, running: pidAlive(pid) } : { pid: null, running: false };
  } catch {
    return null;
  }
}

async function inspectSnapshot(dir: string, f: NamedFile): Promise<SnapshotReport> {
  try {
    const s = await readSnapshotFile(dir, f.name, f.seq);
    return { file: f.name, lsn: f.seq, bytes: s.bytes, revision: s.snapshot.revision, instances: s.snapshot.instances.length, leases: s.snapshot.leases.length, damage: null };
  } catch (err) {
    if (!(err instanceof SnapshotDamageError)) throw err;
    return { file: f.name, lsn: f.seq, bytes: null, revision: null, instances: null, leases: null, damage: err.message };
  }
}

export async function inspectDataDir(dir: string): Promise<InspectReport> {
  const files = classifyFiles(await readdir(dir));
  const meta = await readMeta(dir);
  const epoch = meta?.epoch ?? (await epochFromFiles(dir, files));
  const snapshots: SnapshotReport[] = [];
  for (const f of files.snapshots) snapshots.push(await inspectSnapshot(dir, f));
  const newest = snapshots[snapshots.length - 1] ?? null;
  const snapDamage: Damage | null = newest?.damage ? { file: newest.file, offset: 0, bytes: 0, reason: newest.damage, torn: false } : null;
  // The log is read from the newest intact snapshot: where recovery starts after a repair.
  const base = [...snapshots].reverse().find((s) => s.damage === null) ?? null;
  let revision = base?.revision ?? 0;
  let replayRecords = 0;
  const scan = await scanLog(dir, files.segments, base?.lsn ?? 0, epoch, (f) => {
    replayRecords++;
    revision = Math.max(revision, (JSON.parse(f.payload.toString('utf8')) as { revision: number }).revision);
  });
  const segments: SegmentReport[] = [
    ...scan.covered.map((f) => ({ file: f.name, firstLsn: f.seq, lastLsn: null, records: null, bytes: null, covered: true, damage: null })),
    ...scan.segments.map((s) => ({ file: s.name, firstLsn: s.header?.seq ?? 0, lastLsn: s.lastLsn, records: s.records, bytes: s.size, covered: false, damage: s.damage })),
    ...scan.unread.map((f) => ({ file: f.name, firstLsn: f.seq, lastLsn: null, records: null, bytes: null, covered: false, damage: null })),
  ];
  const damage = snapDamage ?? scan.damage;
  const state = damage === null ? 'ok' : damage.torn ? 'torn-tail' : 'damaged';
  // A repair's floor (meta.json) raises the revision the node starts at.
  revision = Math.max(revision, meta?.revisionFloor ?? 0);
  return { dir, epoch, lock: await lockOf(dir), snapshots, recoverFrom: base?.file ?? null, segments, replayRecords, lastLsn: scan.lastLsn, revision, state, damage };
}
