/**
 * Time for the SDK: an injectable clock, unref'd timers (background work never keeps a
 * process alive) and deadlines as AbortSignals.
 */
import { TimeoutError } from './errors.js';

/**
 * A monotonic clock in milliseconds. Tests inject a fake one.
 *
 * @example
 * let t = 0;
 * const clock: Clock = { now: () => t };
 * const breaker = new CircuitBreaker({ clock });
 */
export interface Clock {
  now(): number;
}

/**
 * The real monotonic clock (`performance.now()`).
 *
 * @example
 * const started = systemClock.now();
 */
export const systemClock: Clock = { now: () => performance.now() };

/** @internal An unref'd setTimeout: it never keeps the process alive. */
export function unrefTimer(fn: () => void, ms: number): NodeJS.Timeout {
  const t = setTimeout(fn, ms);
  t.unref();
  return t;
}

/** @internal Resolves after `ms` (an unref'd timer), or rejects with the signal's reason on abort. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = (): void => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    const t = unrefTimer(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** @internal A signal that aborts with a TimeoutError after `ms` or when `parent` aborts; call `done()` after. */
export function deadline(what: string, ms: number | undefined, parent?: AbortSignal): { signal: AbortSignal; done: () => void } {
  if (ms === undefined && parent) return { signal: parent, done: () => undefined };
  const ac = new AbortController();
  const onAbort = (): void => ac.abort(parent!.reason);
  if (parent?.aborted) ac.abort(parent.reason);
  else parent?.addEventListener('abort', onAbort, { once: true });
  const t = ms === undefined ? undefined : unrefTimer(() => ac.abort(new TimeoutError(what, ms)), ms);
  return {
    signal: ac.signal,
    done: () => {
      if (t) clearTimeout(t);
      parent?.removeEventListener('abort', onAbort);
    },
  };
}

/**
 * @internal Keeps the process alive while `p` is pending. The SDK's own timers are unref'd, so a
 * user who awaits a call (register, ready, drain) while the registry is down would
 * otherwise see the process exit mid-await; background work never holds the process.
 */
export function holdProcess<T>(p: Promise<T>): Promise<T> {
  const hold = setInterval(() => undefined, 1 << 30);
  return p.finally(() => clearInterval(hold));
}
