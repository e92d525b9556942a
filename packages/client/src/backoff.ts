/**
 * Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And
 * Jitter"): each wait is uniform in [0, min(maxMs, initialMs * multiplier^attempt)].
 * Full jitter spreads the reconnects of many clients after a registry restart instead of
 * bringing them back in waves.
 */

/**
 * Backoff settings.
 *
 * @example
 * const opts: BackoffOptions = { initialMs: 50, maxMs: 5_000 };
 */
export interface BackoffOptions {
  /** Cap of the first wait. Default 100 ms: a restarting node is often back that fast. */
  initialMs?: number;
  /** Cap of every wait. Default 10 s: a client never waits longer than this to retry a registry. */
  maxMs?: number;
  /** Growth of the cap per attempt. Default 2. */
  multiplier?: number;
}

/**
 * The registry reconnection backoff: 100 ms doubling to 10 s, full jitter.
 *
 * @example
 * await connect({ endpoints, backoff: { ...DEFAULT_BACKOFF, maxMs: 30_000 } });
 */
export const DEFAULT_BACKOFF: Required<BackoffOptions> = Object.freeze({ initialMs: 100, maxMs: 10_000, multiplier: 2 });

/**
 * The settings with defaults for those not given (an option set to `undefined` is not
 * given); throws a RangeError for settings no backoff can follow, so that a client
 * refuses them when it is made rather than its reconnect loop when it first waits.
 */
export function backoffSettings(opts: BackoffOptions = {}): Required<BackoffOptions> {
  const s = {
    initialMs: opts.initialMs ?? DEFAULT_BACKOFF.initialMs,
    maxMs: opts.maxMs ?? DEFAULT_BACKOFF.maxMs,
    multiplier: opts.multiplier ?? DEFAULT_BACKOFF.multiplier,
  };
  if (!(s.initialMs > 0) || !(s.maxMs >= s.initialMs) || !(s.multiplier >= 1)) {
    throw new RangeError(`backoff needs initialMs > 0, maxMs >= initialMs and multiplier >= 1 (got initialMs ${s.initialMs}, maxMs ${s.maxMs}, multiplier ${s.multiplier})`);
  }
  return s;
}

/**
 * One backoff sequence; `reset()` after a success.
 *
 * @example
 * const b = new Backoff({ initialMs: 100, maxMs: 10_000 });
 * for (;;) {
 *   try { return await connectOnce(); } catch { await sleep(b.next()); }
 * }
 */
export class Backoff {
  private readonly opts: Required<BackoffOptions>;
  private n = 0;

  constructor(opts: BackoffOptions = {}, private readonly random: () => number = Math.random) {
    this.opts = backoffSettings(opts);
  }

  /** How many waits were handed out since the last reset. */
  get attempt(): number {
    return this.n;
  }

  /** The cap of the next wait, before jitter. */
  ceilingMs(): number {
    const { initialMs, maxMs, multiplier } = this.opts;
    return Math.min(maxMs, initialMs * Math.pow(multiplier, Math.min(this.n, 64)));
  }

  /** The next wait in milliseconds (full jitter). */
  next(): number {
    const cap = this.ceilingMs();
    this.n++;
    return Math.floor(this.random() * cap);
  }

  reset(): void {
    this.n = 0;
  }
}
