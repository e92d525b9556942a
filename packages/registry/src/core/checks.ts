/**
 * The check state machine. A check's shown state (in the instance, and so in entries and
 * snapshots) changes only after enough consecutive results agree (flap damping); every
 * other result only moves in-memory counters. Time rules (a ttl check that hears nothing,
 * a persistent instance that stays critical) are deadlines over the injected clock.
 * No timers, I/O or randomness: the scheduler in src/health runs the checks and feeds the
 * results in.
 */
import { formatDuration, type CheckResult, type CheckSpec, type CheckState, type Instance } from '@switchboard/protocol';
import { DeadlineHeap, type Deadline } from './deadlines.js';
import { AWAITING_FIRST_RESULT } from './health.js';

/** Consecutive results of one kind since the last result of the other kind. */
export interface CheckCounters {
  passes: number;
  /** Warning and critical results both count as failures. */
  failures: number;
}

/**
 * Applies one result and returns the state to show, or null when the shown state stays.
 *
 * - A passing result shows `passing` once `passingThreshold` passes in a row are seen.
 * - A failing result (warning or critical) shows itself once `criticalThreshold` failures
 *   in a row are seen; past that point each failing result shows its own status, so a
 *   check moves between warning and critical without waiting again.
 * - The output shown is that of the result that changed the state; when a streak reaches
 *   its threshold the output is refreshed even if the status stays. Other outputs are not
 *   recorded: only state changes make entries.
 * - A new check starts critical with "awaiting the first result". Its first failing result
 *   replaces that output at once, before any threshold (the status stays critical): the
 *   check says why it is critical from its first failure, not an interval later, and being
 *   critical by a result is what starts the `deregisterCriticalAfter` clock (CheckBook.sync).
 *   A passing result below `passingThreshold` leaves the placeholder: shown critical with
 *   "HTTP 200 OK" would read as a contradiction, and would start that clock for a check
 *   that has not failed.
 */
export function nextCheckState(spec: CheckSpec, shown: CheckState, c: CheckCounters, result: CheckResult): CheckState | null {
  let reached: boolean;
  if (result.status === 'passing') {
    c.passes++;
    c.failures = 0;
    if (c.passes < spec.passingThreshold) return null;
    reached = c.passes === spec.passingThreshold;
  } else {
    c.failures++;
    c.passes = 0;
    if (c.failures < spec.criticalThreshold) {
      return shown.status === 'critical' && shown.output === AWAITING_FIRST_RESULT && result.output !== AWAITING_FIRST_RESULT ? { ...shown, output: result.output } : null;
    }
    reached = c.failures === spec.criticalThreshold;
  }
  if (shown.status === result.status && (!reached || shown.output === result.output)) return null;
  return { ...shown, status: result.status, output: result.output };
}

/** Shortens an output to `max` characters, marking the cut. */
export function clipOutput(text: string, max: number): string {
  return text.length <= max ? text : text.slice(0, Math.max(0, max - 1)) + '…';
}

export interface TrackedCheck {
  readonly instanceKey: string;
  readonly id: string;
  spec: CheckSpec;
  /** The spec as JSON: a result computed under another spec is dropped. */
  specKey: string;
  counters: CheckCounters;
  /** ttl checks: when the last report runs out; null once it has (or for other types). */
  ttlDeadline: number | null;
  /** Since when the shown status is critical; null while it is not. */
  criticalSince: number | null;
  /** The instance has no lease, so `deregisterCriticalAfter` applies. */
  persistent: boolean;
}

/** A time rule that came due. */
export type CheckDeadline =
  /** A ttl check heard no report within its TTL. */
  | { kind: 'ttl'; check: TrackedCheck }
  /** A persistent instance's check stayed critical for `deregisterCriticalAfterMs`. */
  | { kind: 'critical'; check: TrackedCheck };

const specKeyOf = (spec: CheckSpec): string => JSON.stringify(spec);

/** Every check of every instance on this node, with its counters and deadlines. */
export class CheckBook {
  private readonly byInstance = new Map<string, Map<string, TrackedCheck>>();
  private count = 0;
  private readonly deadlines = new DeadlineHeap<CheckDeadline>(
    (d) => this.stands(d),
    () => this.liveDeadlines(),
    () => this.count,
  );

  get size(): number {
    return this.count;
  }

  get(instanceKey: string, checkId: string): TrackedCheck | undefined {
    return this.byInstance.get(instanceKey)?.get(checkId);
  }

  checksOf(instanceKey: string): ReadonlyMap<string, TrackedCheck> | undefined {
    return this.byInstance.get(instanceKey);
  }

  /**
   * Brings the book in line with an instance as just put: new checks start counting, a
   * check whose spec changed starts its counts over, removed checks are forgotten, and the
   * critical clock follows the shown states.
   */
  sync(instanceKey: string, instance: Instance, specs: readonly CheckSpec[], now: number): void {
    let mine = this.byInstance.get(instanceKey);
    if (specs.length === 0) {
      if (mine) this.drop(instanceKey);
      return;
    }
    if (!mine) this.byInstance.set(instanceKey, (mine = new Map()));
    const wanted = new Set(specs.map((s) => s.id));
    for (const id of mine.keys()) {
      if (!wanted.has(id)) {
        mine.delete(id);
        this.count--;
      }
    }
    const persistent = instance.leaseId === null;
    for (const spec of specs) {
      const key = specKeyOf(spec);
      let t = mine.get(spec.id);
      let changed = true;
      if (!t || t.spec.type !== spec.type) {
        if (!t) this.count++;
        t = { instanceKey, id: spec.id, spec, specKey: key, counters: { passes: 0, failures: 0 }, ttlDeadline: null, criticalSince: null, persistent };
        mine.set(spec.id, t);
        if (spec.type === 'ttl' && spec.ttlMs !== null) this.armTtl(t, now);
      } else if (t.specKey !== key) {
        t.spec = spec;
        t.specKey = key;
        t.counters = { passes: 0, failures: 0 };
        if (spec.type === 'ttl' && spec.ttlMs !== null) this.armTtl(t, now);
      } else {
        changed = t.persistent !== persistent;
      }
      const becamePersistent = persistent && !t.persistent;
      t.persistent = persistent;
      // Critical by a result: a check that has had none yet ("awaiting the first result") is
      // not counted, so that a healthy instance is never removed before it was probed.
      const shown = instance.checks.find((c) => c.id === spec.id);
      const critical = shown?.status === 'critical' && shown.output !== AWAITING_FIRST_RESULT;
      if (!critical) t.criticalSince = null;
      else if (t.criticalSince === null || becamePersistent) {
        // A leased instance that turns persistent starts the count now: the field did
        // nothing while it had a lease, and it would otherwise be removed at once.
        t.criticalSince = now;
        this.armCritical(t);
      } else if (changed) this.armCritical(t); // deregisterCriticalAfter or the lease changed
    }
  }

  /** The instance is gone: forget its checks (their deadlines lapse with them). */
  drop(instanceKey: string): void {
    const mine = this.byInstance.get(instanceKey);
    if (!mine) return;
    this.count -= mine.size;
    this.byInstance.delete(instanceKey);
  }

  /** A report arrived for a ttl check: its TTL starts again. */
  heard(t: TrackedCheck, now: number): void {
    this.armTtl(t, now);
  }

  /** The next time rule to look at, for the driver's timer. */
  nextDeadline(): number | undefined {
    return this.deadlines.peek()?.at;
  }

  /** Time rules due at `now`, each once; a ttl deadline is spent when it comes due. */
  due(now: number): CheckDeadline[] {
    const out: CheckDeadline[] = [];
    // The same deadline may have been pushed twice.
    const seen = { ttl: new Set<TrackedCheck>(), critical: new Set<TrackedCheck>() };
    for (const d of this.deadlines.popDue(now)) {
      if (seen[d.item.kind].has(d.item.check)) continue;
      seen[d.item.kind].add(d.item.check);
      if (d.item.kind === 'ttl') d.item.check.ttlDeadline = null;
      out.push(d.item);
    }
    return out;
  }

  private armTtl(t: TrackedCheck, now: number): void {
    t.ttlDeadline = now + (t.spec.ttlMs as number);
    this.deadlines.push(t.ttlDeadline, { kind: 'ttl', check: t });
  }

  private armCritical(t: TrackedCheck): void {
    const after = t.spec.deregisterCriticalAfterMs;
    if (t.persistent && after !== null && t.criticalSince !== null) this.deadlines.push(t.criticalSince + after, { kind: 'critical', check: t });
  }

  private stands(d: Deadline<CheckDeadline>): boolean {
    const t = d.item.check;
    if (this.get(t.instanceKey, t.id) !== t) return false;
    if (d.item.kind === 'ttl') return t.ttlDeadline === d.at;
    const after = t.spec.deregisterCriticalAfterMs;
    return t.persistent && after !== null && t.criticalSince !== null && t.criticalSince + after === d.at;
  }

  private *liveDeadlines(): Iterable<Deadline<CheckDeadline>> {
    for (const mine of this.byInstance.values()) {
      for (const t of mine.values()) {
        if (t.ttlDeadline !== null) yield { at: t.ttlDeadline, item: { kind: 'ttl', check: t } };
        const after = t.spec.deregisterCriticalAfterMs;
        if (t.persistent && after !== null && t.criticalSince !== null) yield { at: t.criticalSince + after, item: { kind: 'critical', check: t } };
      }
    }
  }
}

/** What a due time rule asks of the instance as it is shown now. */
export type DueAction =
  /** Show this state of the check (a ttl check that heard nothing turns critical). */
  | { kind: 'show'; state: CheckState }
  /** Deregister the persistent instance (reason `critical_timeout`), saying why. */
  | { kind: 'deregister'; detail: string };

/**
 * The rule of a deadline that came due, against the instance as shown; null when the
 * instance already shows it (or the rule no longer applies). A lapsed ttl also counts as
 * failures, so a late report must pass `passingThreshold` times before the check passes.
 */
export function dueAction(due: CheckDeadline, instance: Instance): DueAction | null {
  const t = due.check;
  const shown = instance.checks.find((c) => c.id === t.id);
  if (!shown) return null;
  if (due.kind === 'ttl') {
    t.counters = { passes: 0, failures: Math.max(t.counters.failures, t.spec.criticalThreshold) };
    const output = ttlExpiredOutput(t.spec);
    return shown.status !== 'critical' || shown.output !== output ? { kind: 'show', state: { ...shown, status: 'critical', output } } : null;
  }
  if (shown.status !== 'critical' || instance.leaseId !== null) return null;
  return { kind: 'deregister', detail: `${t.id} critical for longer than ${formatDuration(t.spec.deregisterCriticalAfterMs ?? 0)}: ${shown.output}` };
}

/** The output of a ttl check that heard nothing in time. */
function ttlExpiredOutput(spec: CheckSpec): string {
  return `no report within ${formatDuration(spec.ttlMs ?? 0)} (ttl)`;
}
