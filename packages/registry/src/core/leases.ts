/**
 * The lease table: TTLs, deadlines and the instances bound to each lease. Deadlines are
 * kept in a min-heap with lazy deletion: a keep-alive pushes a new deadline and the old
 * one is skipped when it surfaces.
 */
import { DeadlineHeap } from './deadlines.js';

export interface Lease {
  readonly id: string;
  readonly ttlMs: number;
  expiresAt: number;
  /** Keys (`namespace/service/id`) of the instances bound to this lease. */
  readonly instances: Set<string>;
  /** Its session closed without a hand-over: when it runs out, the connection was lost. */
  detached: boolean;
  /** Held past its deadline by self-preservation since then; null when not held. */
  blockedSince: number | null;
}

export class LeaseTable {
  private readonly leases = new Map<string, Lease>();
  private readonly heap = new DeadlineHeap<string>(
    (d) => {
      const lease = this.leases.get(d.item);
      return lease !== undefined && lease.expiresAt === d.at && lease.blockedSince === null;
    },
    () => [...this.leases.values()].filter((l) => l.blockedSince === null).map((l) => ({ at: l.expiresAt, item: l.id })),
    () => this.leases.size,
  );

  get size(): number {
    return this.leases.size;
  }

  get(id: string): Lease | undefined {
    return this.leases.get(id);
  }

  values(): IterableIterator<Lease> {
    return this.leases.values();
  }

  add(id: string, ttlMs: number, now: number): Lease {
    const lease: Lease = { id, ttlMs, expiresAt: now + ttlMs, instances: new Set(), detached: false, blockedSince: null };
    this.leases.set(id, lease);
    this.heap.push(lease.expiresAt, id);
    return lease;
  }

  /** A keep-alive: a full TTL from now; a lease held by self-preservation is released. */
  renew(lease: Lease, now: number): void {
    lease.expiresAt = now + lease.ttlMs;
    lease.detached = false;
    lease.blockedSince = null;
    this.heap.push(lease.expiresAt, lease.id);
  }

  /** Brings a lease's deadline forward to `at` (never later than it already is). */
  shorten(lease: Lease, at: number): void {
    lease.detached = true;
    if (at >= lease.expiresAt || lease.blockedSince !== null) return;
    lease.expiresAt = at;
    this.heap.push(at, lease.id);
  }

  /** Keeps a lease past its deadline (self-preservation); it has no deadline until renewed. */
  block(lease: Lease, now: number): void {
    lease.blockedSince = now;
  }

  remove(id: string): Lease | undefined {
    const lease = this.leases.get(id);
    this.leases.delete(id);
    return lease;
  }

  /** The earliest live deadline, or undefined when there is none. */
  nextDeadline(): number | undefined {
    return this.heap.peek()?.at;
  }

  /** Leases whose deadline is at or before now, in deadline order. Does not remove them. */
  due(now: number): Lease[] {
    const out: Lease[] = [];
    const seen = new Set<string>();
    for (const d of this.heap.popDue(now)) {
      if (seen.has(d.item)) continue;
      seen.add(d.item);
      out.push(this.leases.get(d.item) as Lease);
    }
    return out;
  }

  /** Gives every lease a fresh full TTL from now (after a restart). */
  renewAll(now: number): void {
    this.heap.clear();
    for (const lease of this.leases.values()) this.renew(lease, now);
  }
}
