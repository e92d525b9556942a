/**
 * The check scheduler of one node. Each active check runs every `interval`, moved by a
 * random jitter so that checks registered together do not fire together. At most
 * `maxConcurrent` run at once; the others queue in the order they came due, each at most
 * once (a check still queued or running when it comes due again is not queued twice).
 * Every run is time-boxed by its timeout whether or not the probe honours its signal, so a
 * slow target holds a slot for at most its timeout and never blocks the others.
 *
 * A removed check's run is aborted and its slot freed at once: a client that registers and
 * deregisters an instance whose target never answers must not fill the slots with probes of
 * instances that no longer exist. One check key never has two probes in flight: a check
 * added again while its previous run still ends waits for that run.
 */
import { formatDuration, type CheckResult, type CheckSpec } from '@switchboard/protocol';
import { DeadlineHeap } from '../core/deadlines.js';
import { critical, describeError } from './runner.js';

export interface ScheduledCheck {
  /** `<namespace>/<service>/<instance>#<check>` */
  readonly key: string;
  readonly namespace: string;
  readonly service: string;
  readonly instanceId: string;
  readonly checkId: string;
  readonly spec: CheckSpec;
  /** The spec as JSON: results are reported with it, so that stale ones can be dropped. */
  readonly specKey: string;
  /** http: a URL; tcp, grpc: host:port. */
  readonly target: string;
}

export interface SchedulerOptions {
  maxConcurrent: number;
  probe: (check: ScheduledCheck, signal: AbortSignal) => Promise<CheckResult>;
  onResult: (check: ScheduledCheck, result: CheckResult) => void;
  /** Monotonic milliseconds; default performance.now(). */
  now?: () => number;
  /** Uniform in [0, 1); default Math.random (injected by tests). */
  random?: () => number;
}

interface Slot {
  check: ScheduledCheck;
  nextAt: number;
  /** blocked: due, but the run of a removed slot of the same key has not ended yet. */
  state: 'waiting' | 'queued' | 'blocked' | 'running';
  /** While running: aborts the probe and frees its run slot (once). */
  stop: (() => void) | null;
}

export interface SchedulerStats {
  scheduled: number;
  running: number;
  queued: number;
  runs: Record<CheckResult['status'], number>;
  timeouts: number;
}

export class CheckScheduler {
  private readonly slots = new Map<string, Slot>();
  private readonly heap = new DeadlineHeap<Slot>(
    (d) => this.slots.get(d.item.check.key) === d.item && d.item.state === 'waiting' && d.item.nextAt === d.at,
    () => [...this.slots.values()].filter((s) => s.state === 'waiting').map((s) => ({ at: s.nextAt, item: s })),
    () => this.slots.size,
  );
  /** Due slots waiting for a free run slot, oldest first; a removed slot leaves it at once. */
  private readonly queue = new Set<Slot>();
  /** Due slots waiting for the run of their key's removed slot to end. */
  private readonly blocked = new Set<Slot>();
  /** The slot whose run is in progress, by check key (also after that slot was removed). */
  private readonly inFlight = new Map<string, Slot>();
  private running = 0;
  private timer: NodeJS.Timeout | null = null;
  private timerAt = Infinity;
  private closed = false;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly runs = { passing: 0, warning: 0, critical: 0 };
  private timeouts = 0;

  constructor(private readonly opts: SchedulerOptions) {
    this.now = opts.now ?? (() => performance.now());
    this.random = opts.random ?? Math.random;
  }

  stats(): SchedulerStats {
    return { scheduled: this.slots.size, running: this.running, queued: this.queue.size + this.blocked.size, runs: { ...this.runs }, timeouts: this.timeouts };
  }

  has(key: string): boolean {
    return this.slots.has(key);
  }

  get(key: string): ScheduledCheck | undefined {
    return this.slots.get(key)?.check;
  }

  /**
   * Adds a check, or replaces it when its spec or target changed. Its first run comes
   * within `spreadMs` (a random point in it): small for a new instance, so that it is seen
   * to work soon; a whole interval when a node starts with many, so that they spread out.
   */
  upsert(check: ScheduledCheck, spreadMs: number): void {
    if (this.closed) return;
    const slot = this.slots.get(check.key);
    if (slot && slot.check.specKey === check.specKey && slot.check.target === check.target) return;
    if (slot && slot.state !== 'waiting') {
      slot.check = check; // the run in progress reports under its old spec and is dropped
      return;
    }
    const fresh: Slot = { check, nextAt: this.now() + this.random() * spreadMs, state: 'waiting', stop: null };
    this.slots.set(check.key, fresh);
    this.heap.push(fresh.nextAt, fresh);
    this.arm();
  }

  /** Stops a check: a queued run is dropped, a running one aborted and its slot freed now. */
  remove(key: string): void {
    const slot = this.slots.get(key);
    if (!slot) return;
    this.slots.delete(key);
    this.queue.delete(slot);
    this.blocked.delete(slot);
    if (slot.state === 'running') {
      slot.stop?.();
      this.pump();
    }
  }

  close(): void {
    this.closed = true;
    for (const slot of this.inFlight.values()) slot.stop?.();
    this.slots.clear();
    this.queue.clear();
    this.blocked.clear();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private arm(): void {
    if (this.closed) return;
    const next = this.heap.peek();
    if (!next) return;
    if (this.timer && next.at >= this.timerAt) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = next.at;
    this.timer = setTimeout(() => this.fire(), Math.max(0, next.at - this.now()));
    this.timer.unref();
  }

  private fire(): void {
    this.timer = null;
    this.timerAt = Infinity;
    if (this.closed) return;
    for (const d of this.heap.popDue(this.now())) {
      if (d.item.state !== 'waiting') continue;
      d.item.state = 'queued';
      this.queue.add(d.item);
    }
    this.pump();
    this.arm();
  }

  private pump(): void {
    if (this.closed) return;
    for (const slot of this.queue) {
      if (this.running >= this.opts.maxConcurrent) break;
      this.queue.delete(slot);
      if (this.inFlight.has(slot.check.key)) {
        // Removed and added again while its run still ends (a probe that does not honour
        // its abort): this one starts when that run is over, never beside it.
        slot.state = 'blocked';
        this.blocked.add(slot);
        continue;
      }
      void this.run(slot);
    }
  }

  private async run(slot: Slot): Promise<void> {
    const key = slot.check.key;
    slot.state = 'running';
    this.running++;
    this.inFlight.set(key, slot);
    const ac = new AbortController();
    let freed = false;
    slot.stop = () => {
      ac.abort();
      if (freed) return;
      freed = true;
      this.running--;
    };
    const check = slot.check;
    const started = this.now();
    const result = await this.timeBoxed(check, ac);
    if (!freed) {
      freed = true;
      this.running--;
    }
    slot.stop = null;
    if (this.inFlight.get(key) === slot) this.inFlight.delete(key);
    const next = this.slots.get(key);
    if (next && next !== slot && next.state === 'blocked') {
      this.blocked.delete(next);
      next.state = 'queued';
      this.queue.add(next);
    }
    if (!this.closed && next === slot) {
      this.runs[result.status]++;
      // A run against a target the check no longer has (the instance's address changed
      // while it ran, its spec staying the same) says nothing about the new one, which is
      // checked at once instead of an interval later.
      const moved = slot.check.target !== check.target;
      try {
        if (!moved) this.opts.onResult(check, result);
      } finally {
        if (moved) this.rescheduleAt(slot, this.now());
        else this.reschedule(slot, started);
      }
    }
    this.pump();
    this.arm();
  }

  private timeBoxed(check: ScheduledCheck, ac: AbortController): Promise<CheckResult> {
    return new Promise<CheckResult>((resolve) => {
      const timer = setTimeout(() => {
        if (!ac.signal.aborted) this.timeouts++; // not a check removed meanwhile
        resolve(critical(`timed out after ${formatDuration(check.spec.timeoutMs)}`));
        ac.abort();
      }, check.spec.timeoutMs);
      this.opts
        .probe(check, ac.signal)
        .catch((err: unknown) => critical(describeError(err)))
        .then((r) => {
          clearTimeout(timer);
          resolve(r);
        });
    });
  }

  /** The next run: one interval after this one started, moved by the jitter. */
  private reschedule(slot: Slot, started: number): void {
    const { intervalMs, jitterMs } = slot.check.spec;
    const offset = (this.random() * 2 - 1) * jitterMs;
    this.rescheduleAt(slot, Math.max(this.now(), started + intervalMs + offset));
  }

  private rescheduleAt(slot: Slot, at: number): void {
    slot.nextAt = at;
    slot.state = 'waiting';
    this.heap.push(slot.nextAt, slot);
  }
}
