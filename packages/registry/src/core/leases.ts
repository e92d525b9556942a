/**
 * The lease table: TTLs, deadlines and the instances bound to each lease. Deadlines are
 * kept in a min-heap with lazy deletion: a keep-alive pushes a new deadline and the old
 * one is skipped when it surfaces.
 */

export interface Lease {
  readonly id: string;
  readonly ttlMs: number;
  expiresAt: number;
  /** Keys (`namespace/service/id`) of the instances bound to this lease. */
  readonly instances: Set<string>;
}

interface Deadline {
  at: number;
  leaseId: string;
}

export class LeaseTable {
  private readonly leases = new Map<string, Lease>();
  private readonly heap: Deadline[] = [];

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
    const lease: Lease = { id, ttlMs, expiresAt: now + ttlMs, instances: new Set() };
    this.leases.set(id, lease);
    this.push({ at: lease.expiresAt, leaseId: id });
    return lease;
  }

  renew(lease: Lease, now: number): void {
    lease.expiresAt = now + lease.ttlMs;
    this.push({ at: lease.expiresAt, leaseId: lease.id });
  }

  /** Brings a lease's deadline forward to `at` (never later than it already is). */
  shorten(lease: Lease, at: number): void {
    if (at >= lease.expiresAt) return;
    lease.expiresAt = at;
    this.push({ at, leaseId: lease.id });
  }

  remove(id: string): Lease | undefined {
    const lease = this.leases.get(id);
    this.leases.delete(id);
    return lease;
  }

  /** The earliest live deadline, or undefined when there is no lease. */
  nextDeadline(): number | undefined {
    this.dropStale();
    return this.heap[0]?.at;
  }

  /** Leases whose deadline is at or before now, in deadline order. Does not remove them. */
  due(now: number): Lease[] {
    const out: Lease[] = [];
    const seen = new Set<string>();
    for (;;) {
      this.dropStale();
      const top = this.heap[0];
      if (!top || top.at > now) break;
      this.pop();
      const lease = this.leases.get(top.leaseId) as Lease;
      if (!seen.has(lease.id)) {
        seen.add(lease.id);
        out.push(lease);
      }
    }
    return out;
  }

  /** Gives every lease a fresh full TTL from now (after a restart). */
  renewAll(now: number): void {
    this.heap.length = 0;
    for (const lease of this.leases.values()) this.renew(lease, now);
  }

  private dropStale(): void {
    for (;;) {
      const top = this.heap[0];
      if (!top) return;
      const lease = this.leases.get(top.leaseId);
      if (lease && lease.expiresAt === top.at) return;
      this.pop();
    }
  }

  private push(d: Deadline): void {
    // Frequent keep-alives leave stale deadlines behind; rebuild before they pile up.
    if (this.heap.length > 4 * this.leases.size + 1024) this.rebuild();
    const h = this.heap;
    h.push(d);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if ((h[p] as Deadline).at <= d.at) break;
      h[i] = h[p] as Deadline;
      i = p;
    }
    h[i] = d;
  }

  private rebuild(): void {
    this.heap.length = 0;
    const live = [...this.leases.values()].map((l) => ({ at: l.expiresAt, leaseId: l.id }));
    live.sort((a, b) => a.at - b.at); // a sorted array is a valid min-heap
    for (const d of live) this.heap.push(d);
  }

  private pop(): void {
    const h = this.heap;
    const last = h.pop() as Deadline;
    if (h.length === 0) return;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= h.length) break;
      const r = l + 1;
      const c = r < h.length && (h[r] as Deadline).at < (h[l] as Deadline).at ? r : l;
      if ((h[c] as Deadline).at >= last.at) break;
      h[i] = h[c] as Deadline;
      i = c;
    }
    h[i] = last;
  }
}
