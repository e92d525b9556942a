/**
 * Self-preservation: when many leases lapse at once, the likelier cause is the network
 * (the registry cut off from its clients), not a fleet that died together; evicting them
 * all would empty the registry just when clients most need it. So when the share of leases
 * lapsing within a window passes a threshold (for the whole node, or for one zone), lapsed
 * leases are held ("blocked") instead of evicted, until renewals bring the share back down.
 *
 * It needs a minimum number of leases: a laptop with two instances must still expire the
 * one that stopped, instead of raising Eureka's famous alarm. And a lease is held at most
 * `maxHoldMs`, so that a fleet that really died is eventually let go.
 *
 * When protection ends, a held lease is not evicted at once: it gets its TTL once more,
 * counted from the release. Protection ends as soon as enough holders have renewed, and
 * the others are often just as alive, a few hundred milliseconds behind (a process
 * resuming, a connection being re-opened); evicting them at that instant would throw away
 * exactly the instances self-preservation was holding for. A holder that really died
 * is evicted one TTL after the release.
 *
 * Pure: time comes in as `now`, lease counts from the registry.
 */
import type { SelfPreservationScope } from '@switchboard/protocol';

export interface SelfPreservationConfig {
  windowMs: number;
  /** Percentage (0..100) of leases that must lapse within the window; 100 never engages. */
  thresholdPercent: number;
  minLeases: number;
  /** 0: hold as long as protection is engaged. */
  maxHoldMs: number;
}

interface Lapse {
  at: number;
  zones: readonly string[];
  /** The lease was evicted (it no longer counts among the live leases). */
  evicted: boolean;
}

interface Held {
  since: number;
  zones: readonly string[];
  ttlMs: number;
  /** When protection stopped covering it (it then has `ttlMs` to renew); null while protected. */
  releasedAt: number | null;
}

/** An engagement that started or ended, for the log and the metrics. */
export interface ProtectionChange {
  zone: string | null;
  engaged: boolean;
  reason: string;
}

interface ScopeState {
  since: number | null;
  lapsed: number;
  leases: number;
}

export class SelfPreservation {
  /** Leases that lapsed within the window, in lapse order. */
  private readonly recent = new Map<string, Lapse>();
  /** Leases held past their deadline, in the order they were blocked. */
  private readonly held = new Map<string, Held>();
  private global: ScopeState = { since: null, lapsed: 0, leases: 0 };
  private zones = new Map<string, ScopeState>();
  /** Evictions blocked since start. */
  blockedEvictions = 0;

  constructor(readonly config: SelfPreservationConfig) {}

  /** Something to count: recent lapses or held leases (evaluate also while engaged, to release). */
  get active(): boolean {
    return this.recent.size > 0 || this.held.size > 0;
  }

  get engaged(): boolean {
    if (this.global.since !== null) return true;
    for (const z of this.zones.values()) if (z.since !== null) return true;
    return false;
  }

  get heldCount(): number {
    return this.held.size;
  }

  /** The ids of the held leases. */
  heldIds(): string[] {
    return [...this.held.keys()];
  }

  isHeld(leaseId: string): boolean {
    return this.held.has(leaseId);
  }

  /** A lease ran out of time (it is still in the lease table). */
  lapsed(leaseId: string, zones: readonly string[], now: number): void {
    this.recent.delete(leaseId);
    this.recent.set(leaseId, { at: now, zones, evicted: false });
  }

  /** A lapsed lease is held instead of evicted. */
  block(leaseId: string, zones: readonly string[], now: number, ttlMs: number): void {
    this.held.set(leaseId, { since: now, zones, ttlMs, releasedAt: null });
    this.blockedEvictions++;
  }

  /** A held lease was kept alive again: renewals are coming back. */
  renewed(leaseId: string): void {
    this.held.delete(leaseId);
    this.recent.delete(leaseId);
  }

  /** A lease left the table (evicted, revoked). */
  ended(leaseId: string): void {
    this.held.delete(leaseId);
    const lapse = this.recent.get(leaseId);
    if (lapse) lapse.evicted = true;
  }

  /** Whether a lease of these zones is to be held rather than evicted. */
  protects(zones: readonly string[]): boolean {
    if (this.global.since !== null) return true;
    return zones.some((z) => this.zones.get(z)?.since != null);
  }

  /**
   * Recomputes the shares and (dis)engages. `leases` counts the live leases (held ones
   * included), `leasesIn(zone)` those with an instance in the zone.
   */
  evaluate(now: number, leases: number, leasesIn: (zone: string) => number): ProtectionChange[] {
    const cutoff = now - this.config.windowMs;
    for (const [id, lapse] of this.recent) {
      if (lapse.at > cutoff) break;
      this.recent.delete(id);
    }
    const counts = new Map<string, { lapsed: number; evicted: number }>();
    let lapsed = 0;
    let evicted = 0;
    const count = (zones: readonly string[], gone: boolean): void => {
      lapsed++;
      if (gone) evicted++;
      for (const z of zones) {
        let c = counts.get(z);
        if (!c) counts.set(z, (c = { lapsed: 0, evicted: 0 }));
        c.lapsed++;
        if (gone) c.evicted++;
      }
    };
    for (const lapse of this.recent.values()) count(lapse.zones, lapse.evicted);
    for (const [id, h] of this.held) if (!this.recent.has(id)) count(h.zones, false);

    const changes: ProtectionChange[] = [];
    this.global = this.judge(null, this.global, lapsed, leases + evicted, now, changes);
    const next = new Map<string, ScopeState>();
    for (const [zone, c] of counts) next.set(zone, this.judge(zone, this.zones.get(zone), c.lapsed, leasesIn(zone) + c.evicted, now, changes));
    for (const [zone, old] of this.zones) {
      if (!next.has(zone) && old.since !== null) changes.push({ zone, engaged: false, reason: `zone ${zone}: no lapsed leases left` });
    }
    this.zones = next;
    return changes;
  }

  /**
   * Held leases to evict now: held for `maxHoldMs`, or no longer protected for a whole
   * TTL (the release grace; see the top of this file).
   */
  releasable(now: number): string[] {
    const out: string[] = [];
    const { maxHoldMs } = this.config;
    for (const [id, h] of this.held) {
      if (maxHoldMs > 0 && now - h.since >= maxHoldMs) {
        out.push(id);
      } else if (this.protects(h.zones)) {
        h.releasedAt = null;
      } else {
        h.releasedAt ??= now;
        if (now - h.releasedAt >= h.ttlMs) out.push(id);
      }
    }
    return out;
  }

  /** Held leases that protection no longer covers and that are in their release grace. */
  get releasingCount(): number {
    let n = 0;
    for (const h of this.held.values()) if (h.releasedAt !== null) n++;
    return n;
  }

  /** The state of the node and of each zone that has lapsed leases. */
  scopes(): { global: SelfPreservationScope & { sinceMs: number | null }; zones: (SelfPreservationScope & { sinceMs: number | null })[] } {
    const view = (zone: string | null, s: ScopeState) => ({ zone, engaged: s.since !== null, since: null, sinceMs: s.since, expiredInWindow: s.lapsed, leases: s.leases });
    return { global: view(null, this.global), zones: [...this.zones].filter(([, s]) => s.since !== null).map(([z, s]) => view(z, s)) };
  }

  private judge(zone: string | null, prev: ScopeState | undefined, lapsed: number, leases: number, now: number, changes: ProtectionChange[]): ScopeState {
    const { minLeases, thresholdPercent, windowMs } = this.config;
    const over = leases >= minLeases && lapsed * 100 > thresholdPercent * leases;
    const where = zone === null ? '' : `zone ${zone}: `;
    const what = `${where}${lapsed} of ${leases} leases lapsed within ${windowMs / 1000}s (threshold ${thresholdPercent}%, at least ${minLeases} leases)`;
    const wasEngaged = prev?.since != null;
    if (over && !wasEngaged) changes.push({ zone, engaged: true, reason: what });
    if (!over && wasEngaged) changes.push({ zone, engaged: false, reason: `${what}: back within the threshold` });
    return { since: over ? (prev?.since ?? now) : null, lapsed, leases };
  }
}
