/**
 * Resilience primitives of the call path, each a small state machine over an injected
 * clock: a retry budget (Finagle / Envoy style), a per-instance circuit breaker with
 * half-open probing, and a per-service bulkhead with a bounded queue.
 */
import { BulkheadFullError } from './errors.js';
import { systemClock, type Clock } from './time.js';

/**
 * Retry budget settings. Retries are allowed while, over the last `windowMs`,
 * retries < minRetriesPerSecond * windowMs/1000 + ratio * requests.
 *
 * @example
 * new RetryBudget({ ratio: 0.1, minRetriesPerSecond: 5 });
 */
export interface RetryBudgetOptions {
  /** Share of requests that may be retried. Default 0.2 (Finagle's default). */
  ratio?: number;
  /** Retries always allowed per second, for clients that send few requests. Default 10. */
  minRetriesPerSecond?: number;
  /** The sliding window. Default 10 s (ten 1-second buckets). */
  windowMs?: number;
  clock?: Clock;
}

/** Buckets of a sliding window. */
const WINDOW_BUCKETS = 10;

/**
 * A retry budget: retries are capped at a share of requests plus a small floor, so that
 * when a service is failing, retries cannot multiply its load (a retry storm); a fixed
 * attempt count alone would triple it.
 *
 * @example
 * const budget = new RetryBudget();
 * budget.recordRequest();
 * if (!budget.tryRetry()) throw new RetryBudgetExhaustedError('orders', lastError);
 */
export class RetryBudget {
  private readonly ratio: number;
  private readonly floor: number;
  private readonly bucketMs: number;
  private readonly clock: Clock;
  private readonly stamps = new Float64Array(WINDOW_BUCKETS).fill(-1);
  private readonly requests = new Float64Array(WINDOW_BUCKETS);
  private readonly retries = new Float64Array(WINDOW_BUCKETS);

  constructor(opts: RetryBudgetOptions = {}) {
    this.ratio = opts.ratio ?? 0.2;
    const windowMs = opts.windowMs ?? 10_000;
    this.floor = (opts.minRetriesPerSecond ?? 10) * (windowMs / 1000);
    this.bucketMs = windowMs / WINDOW_BUCKETS;
    this.clock = opts.clock ?? systemClock;
    if (!(this.ratio >= 0) || !(this.floor >= 0) || !(windowMs > 0)) throw new RangeError('retry budget needs ratio >= 0, minRetriesPerSecond >= 0 and windowMs > 0');
  }

  private bucket(): number {
    const stamp = Math.floor(this.clock.now() / this.bucketMs);
    const i = stamp % WINDOW_BUCKETS;
    if (this.stamps[i] !== stamp) {
      this.stamps[i] = stamp;
      this.requests[i] = 0;
      this.retries[i] = 0;
    }
    return i;
  }

  private sums(): { requests: number; retries: number } {
    const now = Math.floor(this.clock.now() / this.bucketMs);
    let requests = 0;
    let retries = 0;
    for (let i = 0; i < WINDOW_BUCKETS; i++) {
      if (now - (this.stamps[i] as number) < WINDOW_BUCKETS) {
        requests += this.requests[i] as number;
        retries += this.retries[i] as number;
      }
    }
    return { requests, retries };
  }

  /** Counts one original request (not a retry). */
  recordRequest(): void {
    const i = this.bucket();
    this.requests[i] = (this.requests[i] as number) + 1;
  }

  /** Takes one retry from the budget; false when it is spent. */
  tryRetry(): boolean {
    const i = this.bucket();
    const { requests, retries } = this.sums();
    if (retries + 1 > this.floor + this.ratio * requests) return false;
    this.retries[i] = (this.retries[i] as number) + 1;
    return true;
  }

  /** Retries still allowed now. */
  available(): number {
    const { requests, retries } = this.sums();
    return Math.max(0, Math.floor(this.floor + this.ratio * requests - retries));
  }
}

/**
 * States of a circuit breaker.
 *
 * @example
 * if (view.circuitState('orders-1') === 'open') console.warn('orders-1 is ejected');
 */
export type CircuitState = 'closed' | 'open' | 'half-open';

/**
 * Circuit breaker settings (outlier ejection of one instance).
 *
 * @example
 * new CircuitBreaker({ failureThreshold: 3, cooldownMs: 2_000 });
 */
export interface CircuitBreakerOptions {
  /** Consecutive failures that open the circuit. Default 5 (Envoy's consecutive_5xx). */
  failureThreshold?: number;
  /** How long an opened circuit stays open before a probe. Default 5 s. */
  cooldownMs?: number;
  /** Cool-down cap: each failed probe doubles the cool-down up to this. Default 60 s. */
  maxCooldownMs?: number;
  /** Calls let through at once while half-open. Default 1. */
  halfOpenProbes?: number;
  clock?: Clock;
}

/**
 * A circuit breaker: `closed` counts consecutive failures; at the threshold it opens and
 * the instance is ejected; after the cool-down it is `half-open` and lets `halfOpenProbes`
 * calls through: a success closes it, a failure opens it again with twice the cool-down.
 * A verdict may name the `generation` its call was admitted in: a call admitted before the
 * circuit last opened or closed (one still running from a closed circuit, when a half-open
 * probe is out) then does not decide the new state.
 *
 * @example
 * const cb = new CircuitBreaker({ failureThreshold: 2 });
 * if (cb.tryAcquire()) {
 *   try { await callIt(); cb.onSuccess(); } catch (e) { cb.onFailure(); throw e; }
 * }
 */
export class CircuitBreaker {
  private st: CircuitState = 'closed';
  private failures = 0;
  private probes = 0;
  private openUntil = 0;
  private cooldown: number;
  private gen = 0;
  private readonly opts: Required<Omit<CircuitBreakerOptions, 'clock'>>;
  private readonly clock: Clock;

  constructor(opts: CircuitBreakerOptions = {}) {
    this.opts = { failureThreshold: 5, cooldownMs: 5_000, maxCooldownMs: 60_000, halfOpenProbes: 1, ...stripUndefined(opts) };
    this.clock = opts.clock ?? systemClock;
    this.cooldown = this.opts.cooldownMs;
  }

  /** The state now (an open circuit whose cool-down passed reads as half-open). */
  get state(): CircuitState {
    if (this.st === 'open' && this.clock.now() >= this.openUntil) {
      this.st = 'half-open';
      this.probes = 0;
    }
    return this.st;
  }

  /** Counts the circuit's openings and closings; read it when a call is admitted. */
  get generation(): number {
    return this.gen;
  }

  /** When an open circuit turns half-open (clock time). */
  get reopensAt(): number {
    return this.openUntil;
  }

  /** Whether a call may go to the instance now (takes nothing). */
  canPass(): boolean {
    const s = this.state;
    return s === 'closed' || (s === 'half-open' && this.probes < this.opts.halfOpenProbes);
  }

  /** Starts a call: false when the circuit refuses it; a half-open circuit counts a probe. */
  tryAcquire(): boolean {
    if (!this.canPass()) return false;
    if (this.st === 'half-open') this.probes++;
    return true;
  }

  /** A call succeeded (`admittedIn`: the generation it was admitted in, if known). */
  onSuccess(admittedIn?: number): void {
    if (this.stale(admittedIn)) return;
    if (this.st === 'half-open') {
      this.st = 'closed';
      this.gen++;
      this.cooldown = this.opts.cooldownMs;
      this.probes = 0;
    }
    this.failures = 0;
  }

  onFailure(admittedIn?: number): void {
    if (this.stale(admittedIn)) return;
    const s = this.state;
    if (s === 'half-open') {
      this.cooldown = Math.min(this.opts.maxCooldownMs, this.cooldown * 2);
      return this.open();
    }
    if (s === 'open') return;
    this.failures++;
    if (this.failures >= this.opts.failureThreshold) this.open();
  }

  /** A call that ended without a verdict (cancelled by the caller): frees its probe slot. */
  onIgnored(admittedIn?: number): void {
    if (this.stale(admittedIn)) return;
    if (this.st === 'half-open' && this.probes > 0) this.probes--;
  }

  private stale(admittedIn: number | undefined): boolean {
    return admittedIn !== undefined && admittedIn !== this.gen;
  }

  private open(): void {
    this.st = 'open';
    this.gen++;
    this.failures = 0;
    this.probes = 0;
    this.openUntil = this.clock.now() + this.cooldown;
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([k, v]) => v !== undefined && k !== 'clock')) as Partial<T>;
}

/**
 * Bulkhead settings.
 *
 * @example
 * client.service('orders', { bulkhead: { maxConcurrent: 32, maxQueued: 64 } });
 */
export interface BulkheadOptions {
  /** Calls in flight at once. Default 64. */
  maxConcurrent?: number;
  /** Calls waiting for a slot; one more fails with BULKHEAD_FULL. Default 256. */
  maxQueued?: number;
}

interface Waiter {
  grant: () => void;
  fail: (err: unknown) => void;
}

/**
 * A bulkhead: at most `maxConcurrent` calls run, at most `maxQueued` wait (FIFO); beyond
 * that a call fails at once with BulkheadFullError instead of piling up, so one slow
 * dependency cannot take every socket and all the memory of the process.
 *
 * @example
 * const bh = new Bulkhead('orders', { maxConcurrent: 2, maxQueued: 10 });
 * const release = await bh.acquire(signal);
 * try { await work(); } finally { release(); }
 */
export class Bulkhead {
  readonly maxConcurrent: number;
  readonly maxQueued: number;
  private running = 0;
  private readonly queue: Waiter[] = [];

  constructor(
    readonly service: string,
    opts: BulkheadOptions = {},
  ) {
    this.maxConcurrent = opts.maxConcurrent ?? 64;
    this.maxQueued = opts.maxQueued ?? 256;
    if (!(this.maxConcurrent >= 1) || !(this.maxQueued >= 0)) throw new RangeError('bulkhead needs maxConcurrent >= 1 and maxQueued >= 0');
  }

  get active(): number {
    return this.running;
  }

  get queued(): number {
    return this.queue.length;
  }

  /** Waits for a slot; resolves with the function that frees it (call it exactly once). */
  acquire(signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.running < this.maxConcurrent) {
      this.running++;
      return Promise.resolve(this.releaser());
    }
    if (this.queue.length >= this.maxQueued) return Promise.reject(new BulkheadFullError(this.service, this.maxConcurrent, this.maxQueued));
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        const i = this.queue.indexOf(w);
        if (i >= 0) this.queue.splice(i, 1);
        reject(signal!.reason);
      };
      const w: Waiter = {
        grant: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve(this.releaser());
        },
        fail: reject,
      };
      this.queue.push(w);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  private releaser(): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const next = this.queue.shift();
      if (next) next.grant(); // the slot passes on; `running` stays
      else this.running--;
    };
  }
}
