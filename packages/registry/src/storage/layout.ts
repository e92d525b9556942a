/**
 * Names of the files in a data directory. Sequence numbers are zero-padded to 20 digits
 * so that names sort in sequence order.
 *
 *   meta.json                    format and epoch of the directory
 *   LOCK                         pid of the process that has the directory open
 *   wal-<first LSN>.log          log segments
 *   snap-<last LSN>.snap         snapshots (".tmp" while being written)
 *   damaged-<time>/              what `switchboard storage repair` moved aside
 *   removed-members.json         ap mode: members removed from the cluster (engines/ap/removed.ts)
 */
export const META_FILE = 'meta.json';
export const REMOVED_MEMBERS_FILE = 'removed-members.json';
export const LOCK_FILE = 'LOCK';
export const TEMP_SUFFIX = '.tmp';

const SEGMENT_RE = /^wal-(\d{20})\.log$/;
const SNAPSHOT_RE = /^snap-(\d{20})\.snap$/;

const pad = (seq: number): string => String(seq).padStart(20, '0');

export const segmentFileName = (firstLsn: number): string => `wal-${pad(firstLsn)}.log`;
export const snapshotFileName = (lsn: number): string => `snap-${pad(lsn)}.snap`;

/** A directory name for moved-aside files that sorts by time and is valid everywhere. */
export function damagedDirName(now: Date): string {
  return `damaged-${now.toISOString().replace(/[:.]/g, '-')}`;
}

export interface NamedFile {
  name: string;
  seq: number;
}

export interface DataFiles {
  /** By first LSN, ascending. */
  segments: NamedFile[];
  /** By LSN, ascending. */
  snapshots: NamedFile[];
  /** Leftovers of interrupted atomic writes. */
  temps: string[];
}

export function classifyFiles(names: string[]): DataFiles {
  const out: DataFiles = { segments: [], snapshots: [], temps: [] };
  for (const name of names) {
    const seg = SEGMENT_RE.exec(name);
    const snap = SNAPSHOT_RE.exec(name);
    if (seg) out.segments.push({ name, seq: Number(seg[1]) });
    else if (snap) out.snapshots.push({ name, seq: Number(snap[1]) });
    else if (name.endsWith(TEMP_SUFFIX)) out.temps.push(name);
  }
  out.segments.sort((a, b) => a.seq - b.seq);
  out.snapshots.sort((a, b) => a.seq - b.seq);
  return out;
}
