/**
 * ap mode: what a member removed from the cluster leaves behind (docs/ap.md, "Removing a
 * member"). Every node decides alone, from the record and the members it knows, and they
 * all decide alike, so that the removal needs no coordination:
 *  - a lease-bound record of a removed owner is dropped: its lease lived on that node and
 *    nothing anywhere can keep it alive. Every node writes the same tombstone for it
 *    (`expiryVersion` of the record, owner and reason alike), so that they agree without
 *    exchanging it and a stale copy from a node that has not heard yet loses by version;
 *  - a persistent one is adopted by exactly one remaining member, chosen by rendezvous
 *    hashing of the record key: that node re-stamps it as its own and replicates it;
 *  - tombstones stay as they are and are collected as any other.
 *
 * Pure: no I/O, no clock.
 */
import { expiryVersion, recordKey, type ReplicaRecord } from './replica.js';
import { rendezvousOwner } from './rendezvous.js';

/**
 * The member that adopts the record of `key`: rendezvous hashing over the remaining
 * members (removing a further member moves only that member's share); part of the
 * cluster protocol, so every node computes it alike.
 */
export const adopterOf = rendezvousOwner;

/** What a node does with a record: keep it, drop it, adopt it, or wait for the adopter's version. */
export type RemovedOwnerAction = 'keep' | 'drop' | 'adopt' | 'wait';

/** The tombstone every node writes for a dropped lease-bound record of a removed owner. */
export function removedTombstone(r: { namespace: string; service: string; id: string; v: string; o: string }): ReplicaRecord {
  return { namespace: r.namespace, service: r.service, id: r.id, v: expiryVersion(r.v), o: r.o, del: 'owner_removed', detail: `owner ${r.o} was removed from the cluster; the instance's lease lived there` };
}

/**
 * The merge rule for records of removed owners, applied to every record a node holds when
 * it learns a removal and to every record it merges afterwards (a peer that has not heard
 * of the removal yet may still send them). `members`: the remaining members this node
 * knows, itself included.
 */
export function removedOwnerAction(
  r: { namespace: string; service: string; id: string; o: string; del?: unknown; i?: { leaseId: string | null } },
  removed: { has(id: string): boolean },
  self: string,
  members: Iterable<string>,
): RemovedOwnerAction {
  if (!removed.has(r.o) || r.del || !r.i) return 'keep';
  if (r.i.leaseId !== null) return 'drop';
  return adopterOf(recordKey(r), members) === self ? 'adopt' : 'wait';
}

/**
 * The version an adopted record takes: just after the version it adopts and before any
 * other write made after it, since it only changes who owns the same registration. A
 * deregistration or re-registration made anywhere meanwhile (a node that had not heard of
 * the removal yet, a side of a partition) keeps winning, so adoption never brings back a
 * deleted instance; and it sorts before the expiry tombstone of the same incarnation
 * (`expiryVersion`, suffix "+"). Two nodes that adopted the same record (they disagreed on
 * the members for a while) made versions that differ by node id: the greater wins everywhere.
 */
export function adoptionVersion(v: string, node: string): string {
  return `${v}!${node}`;
}
