/**
 * Most consumer reports a node has forwarded to the node that counts them and still waits
 * on (ap and cp); past it, a node counts new reports itself.
 */
export const MAX_FORWARDED_REPORTS = 1_024;

/**
 * Consumer reports: consumers tell the registry about the failures they see when calling
 * an instance. One consumer alone proves little (its own network, its own bug), so an
 * instance turns `warning` (deprioritised, never removed) only when at least `minReporters`
 * distinct reporters reported it within the window; the warning clears when the window
 * passes without enough of them, or when one of the instance's own checks turns passing.
 * Pure: time comes in as `now`.
 */
import { REPORTS_CHECK_ID, type CheckState, type ConsumerReport, type ReportKind } from '@switchboard/protocol';
import { DeadlineHeap } from './deadlines.js';

export interface ReportsConfig {
  windowMs: number;
  minReporters: number;
  maxReportersPerInstance: number;
}

interface Report {
  kind: ReportKind;
  at: number;
}

export class ReportBook {
  /** instance key -> reporter -> its latest report, oldest first */
  private readonly byInstance = new Map<string, Map<string, Report>>();
  /** When each warned instance must be looked at again. */
  private readonly recheckAt = new Map<string, number>();
  private readonly heap = new DeadlineHeap<string>(
    (d) => this.recheckAt.get(d.item) === d.at,
    () => [...this.recheckAt].map(([item, at]) => ({ at, item })),
    () => this.recheckAt.size,
  );

  constructor(readonly config: ReportsConfig) {}

  /** Records a report; returns the distinct reporters within the window. */
  add(key: string, r: ConsumerReport, now: number): number {
    let mine = this.byInstance.get(key);
    if (!mine) this.byInstance.set(key, (mine = new Map()));
    mine.delete(r.reporter);
    mine.set(r.reporter, { kind: r.kind, at: now });
    // The oldest reporter is forgotten first: a flood of ids cannot grow the book.
    while (mine.size > this.config.maxReportersPerInstance) mine.delete(mine.keys().next().value as string);
    return this.count(key, now);
  }

  /** Distinct reporters of the instance within the window (older reports are dropped). */
  count(key: string, now: number): number {
    const mine = this.byInstance.get(key);
    if (!mine) return 0;
    const cutoff = now - this.config.windowMs;
    for (const [reporter, r] of mine) if (r.at <= cutoff) mine.delete(reporter);
    if (mine.size === 0) this.byInstance.delete(key);
    return mine.size;
  }

  /** Enough reporters to warn. */
  warns(key: string, now: number): boolean {
    return this.count(key, now) >= this.config.minReporters;
  }

  /** The check state that shows the warning, listing kinds and reporters. */
  state(key: string, now: number): CheckState {
    const mine = this.byInstance.get(key);
    const n = this.count(key, now);
    const kinds = new Map<string, number>();
    for (const r of mine?.values() ?? []) kinds.set(r.kind, (kinds.get(r.kind) ?? 0) + 1);
    const list = [...kinds].map(([k, c]) => (c > 1 ? `${k} x${c}` : k)).join(', ');
    return { id: REPORTS_CHECK_ID, type: 'reports', status: 'warning', output: `reported by ${n} consumers within ${this.config.windowMs / 1000}s: ${list}` };
  }

  /** Looks at the instance again when its oldest counting report leaves the window. */
  watch(key: string, now: number): void {
    const mine = this.byInstance.get(key);
    const oldest = mine ? [...mine.values()].map((r) => r.at).sort((a, b) => b - a)[this.config.minReporters - 1] : undefined;
    const at = oldest === undefined ? now : oldest + this.config.windowMs + 1;
    this.recheckAt.set(key, at);
    this.heap.push(at, key);
  }

  /**
   * An instance that shows the warning but whose reports this book does not know (it was
   * restored after a restart): it keeps the warning for one more window.
   */
  restored(key: string, now: number): void {
    if (this.recheckAt.has(key) || this.byInstance.has(key)) return;
    this.recheckAt.set(key, now + this.config.windowMs);
    this.heap.push(now + this.config.windowMs, key);
  }

  /** Instances to look at again now. */
  due(now: number): string[] {
    const out = new Set<string>();
    for (const d of this.heap.popDue(now)) {
      this.recheckAt.delete(d.item);
      out.add(d.item);
    }
    return [...out];
  }

  /** The warning cleared (own checks recovered) or the instance is gone. */
  clear(key: string): void {
    this.byInstance.delete(key);
    this.recheckAt.delete(key);
  }
}
