/**
 * An entry is one atomic step of the registry: what the write-ahead log stores and what
 * replay applies. Every change in one entry shares one revision. Lease grants change no
 * revision but are logged so that a restart knows the lease.
 */
import type { CheckSpec, DeleteReason, Instance, PutReason, ServiceSettings } from '@switchboard/protocol';
import type { HistorySnapshotItem } from './history.js';
import type { StoredRecord } from './replica.js';
import type { SettingsRecord } from './replica-settings.js';

/**
 * ap mode: what a put or delete means for replication. `v`/`o`: a replicated record of
 * version `v` owned by `o` (a delete is a tombstone); `view`: a change of this node's view
 * only (an owner became unreachable or came back), never replicated.
 */
export type ReplMeta = { v: string; o: string } | { view: true };

export type Change =
  /** `reason` and `detail` are absent in entries of older versions. */
  | { op: 'put'; instance: Instance; specs: CheckSpec[]; reason?: PutReason; detail?: string; repl?: ReplMeta }
  | { op: 'delete'; namespace: string; service: string; id: string; reason: DeleteReason; detail?: string; repl?: ReplMeta }
  | { op: 'lease_grant'; leaseId: string; ttlMs: number }
  | { op: 'lease_end'; leaseId: string; reason: 'lease_expired' | 'lease_revoked' }
  /** A service's settings; all null removes them. */
  | { op: 'settings'; namespace: string; service: string; settings: ServiceSettings; repl?: ReplMeta }
  /** ap mode: replicated records this node keeps but does not show (tombstones of absent instances, hidden records). */
  | { op: 'replica'; records: StoredRecord[] }
  /**
   * ap mode: records this node dropped from its replica table, each at the version it had:
   * tombstones it collected (`collected`, remembered so that it refuses them and what they
   * deleted), or records a rebuild dropped. Replay drops them again.
   */
  | { op: 'replica_forget'; records: { key: string; v: string; collected: boolean }[] };

export interface Entry {
  /** The store revision after this entry (unchanged when it has no put or delete). */
  revision: number;
  changes: Change[];
  /** Wall-clock time the entry was made (ms since the epoch), for history; absent in older entries. */
  at?: number;
}

/** Everything needed to rebuild the core at one revision. */
export interface Snapshot {
  format: 1;
  epoch: string;
  revision: number;
  leases: { leaseId: string; ttlMs: number }[];
  instances: { instance: Instance; specs: CheckSpec[] }[];
  /** Revisions of services that have no instances now, so that revisions never go back. */
  emptyServices: { namespace: string; service: string; revision: number }[];
  /**
   * Revisions of services with instances: a service's last change may be a delete or a
   * settings change, newer than any instance it still has. Absent in older snapshots.
   */
  serviceRevisions?: { namespace: string; service: string; revision: number }[];
  /** Absent in snapshots of older versions. */
  serviceSettings?: { namespace: string; service: string; settings: ServiceSettings }[];
  /** Absent in snapshots of older versions. */
  histories?: HistorySnapshotItem[];
  /**
   * The revision answered for services forgotten once empty (more than the registry keeps),
   * so that their revisions never go back either. Absent in older snapshots (0).
   */
  forgottenRevision?: number;
  /** ap mode: the replicated records (live, hidden and tombstones). */
  replica?: StoredRecord[];
  /** ap mode: the versions of the service settings (replica-settings.ts). */
  replicaSettings?: SettingsRecord[];
}

/**
 * About how many bytes of changes one entry made of many changes at once carries (a lease
 * held by self-preservation, an ap reconcile when a peer becomes unreachable, the records of
 * a removed member): such work is logged as several entries, so that none comes near the
 * log's largest record (64 MiB). The estimate counts characters; JSON escaping (a control
 * character takes six) keeps even the worst case far below the largest record.
 */
export const ENTRY_TARGET_BYTES = 4 * 1024 * 1024;

type SizedInstance = Pick<Instance, 'address' | 'zone' | 'version' | 'leaseId' | 'tags' | 'metadata'> & { checks: readonly { id: string; output?: string | null }[] };

/** The estimated JSON size of an instance and its check specs (no serialisation). */
export function approxInstanceBytes(i: SizedInstance | undefined, specs: readonly CheckSpec[] | undefined): number {
  let n = 160;
  if (i) {
    n += i.address.length + (i.zone?.length ?? 0) + (i.version?.length ?? 0) + (i.leaseId?.length ?? 0);
    for (const t of i.tags) n += t.length + 2;
    for (const k in i.metadata) n += k.length + (i.metadata[k] as string).length + 4;
    for (const c of i.checks) n += 64 + c.id.length + (c.output?.length ?? 0);
  }
  for (const c of specs ?? []) n += 200 + (c.target?.length ?? 0) + (c.expectBody?.length ?? 0);
  return n;
}

/** The estimated JSON size of a replicated record. */
export function approxRecordBytes(r: StoredRecord | Omit<StoredRecord, 'at'>): number {
  return approxInstanceBytes(r.i, r.specs) + r.namespace.length + r.service.length + r.id.length + r.v.length + r.o.length + (r.detail?.length ?? 0);
}

function approxChangeBytes(c: Change): number {
  switch (c.op) {
    case 'put':
      return approxInstanceBytes(c.instance, c.specs) + c.instance.namespace.length + c.instance.service.length + c.instance.id.length + (c.detail?.length ?? 0);
    case 'delete':
      return 120 + c.namespace.length + c.service.length + c.id.length + (c.detail?.length ?? 0);
    case 'replica':
      return c.records.reduce((n, r) => n + approxRecordBytes(r), 0);
    case 'replica_forget':
      return c.records.reduce((n, r) => n + 40 + r.key.length + r.v.length, 0);
    default:
      return 200;
  }
}

/**
 * Splits changes, in order, into runs of about `maxBytes` each (at least one change per
 * run; a `replica` change is split by its records). Each run becomes one entry. `sizeOf`
 * gives a change's size where the caller knows it exactly (default: estimated).
 */
export function sliceChanges(changes: Change[], maxBytes = ENTRY_TARGET_BYTES, sizeOf: (c: Change) => number = approxChangeBytes): Change[][] {
  const out: Change[][] = [];
  let cur: Change[] = [];
  let bytes = 0;
  const add = (c: Change, size: number): void => {
    if (cur.length > 0 && bytes + size > maxBytes) {
      out.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(c);
    bytes += size;
  };
  for (const c of changes) {
    if (c.op !== 'replica') {
      add(c, sizeOf(c));
      continue;
    }
    let part: StoredRecord[] = [];
    let partBytes = 0;
    for (const r of c.records) {
      const size = approxRecordBytes(r);
      if (part.length > 0 && bytes + partBytes + size > maxBytes) {
        add({ op: 'replica', records: part }, partBytes);
        part = [];
        partBytes = 0;
        // The run is full: the next records start a new one.
        if (cur.length > 0) {
          out.push(cur);
          cur = [];
          bytes = 0;
        }
      }
      part.push(r);
      partBytes += size;
    }
    if (part.length > 0) add({ op: 'replica', records: part }, partBytes);
  }
  if (cur.length > 0) out.push(cur);
  return out;
}
