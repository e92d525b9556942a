/**
 * An entry is one atomic step of the registry: what the write-ahead log stores and what
 * replay applies. Every change in one entry shares one revision. Lease grants change no
 * revision but are logged so that a restart knows the lease.
 */
import type { CheckSpec, DeleteReason, Instance } from '@switchboard/protocol';

export type Change =
  | { op: 'put'; instance: Instance; specs: CheckSpec[] }
  | { op: 'delete'; namespace: string; service: string; id: string; reason: DeleteReason }
  | { op: 'lease_grant'; leaseId: string; ttlMs: number }
  | { op: 'lease_end'; leaseId: string; reason: 'lease_expired' | 'lease_revoked' };

export interface Entry {
  /** The store revision after this entry (unchanged when it has no put or delete). */
  revision: number;
  changes: Change[];
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
}
