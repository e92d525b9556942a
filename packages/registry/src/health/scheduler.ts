/**
 * The check scheduler of one node. Each active check runs every `interval`, moved by a
 * random jitter so that checks registered together do not fire together. At most
 * `maxConcurrent` run at once; the others queue in the order they came due, each at most
 * once (a check still queued or running when it comes due again is not queued twice).
 * Every run is time-boxed by its timeout whether or not the probe honours its signal, so a
 * slow target holds a slot for at most its timeout and never blocks the others.
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
  state: 'waiting' | 'queued' | 'running';
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
  /** Due slots waiting for a free run slot, oldest first (`head` is the next to run). */
  private queue: Slot[] = [];
  private head = 0;
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
    return { scheduled: this.slots.size, running: this.running, queued: this.queue.length - this.head, runs: { ...this.runs }, timeouts: this.timeouts };
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
    const fresh: Slot = { check, nextAt: this.now() + this.random() * spreadMs, state: 'waiting' };
    this.slots.set(check.key, fresh);
    this.heap.push(fresh.nextAt, fresh);
    this.arm();
  }

  remove(key: string): void {
    this.slots.delete(key);
  }

  close(): void {
    this.closed = true;
    this.slots.clear();
    this.queue = [];
    this.head = 0;
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
      this.queue.push(d.item);
    }
    this.pump();
    this.arm();
  }

  private pump(): void {
    while (this.running < this.opts.maxConcurrent && this.head < this.queue.length) {
      const slot = this.queue[this.head++] as Slot;
      if (this.slots.get(slot.check.key) !== slot) continue; // removed while queued
      void this.run(slot);
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }

  private async run(slot: Slot): Promise<void> {
    slot.state = 'running';
    this.running++;
    const check = slot.check;
    const started = this.now();
    const result = await this.timeBoxed(check);
    this.running--;
    if (!this.closed && this.slots.get(check.key) === slot) {
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

  private timeBoxed(check: ScheduledCheck): Promise<CheckResult> {
    const ac = new AbortController();
    return new Promise<CheckResult>((resolve) => {
      const timer = setTimeout(() => {
        this.timeouts++;
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
