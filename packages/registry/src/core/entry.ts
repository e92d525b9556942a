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
  /** ap mode: the replicated records (live, hidden and tombstones). */
  replica?: StoredRecord[];
  /** ap mode: the versions of the service settings (replica-settings.ts). */
  replicaSettings?: SettingsRecord[];
}
