// Polling for a condition in tests. It imports nothing, so that the harness modules beside
// it (loaded by the client's tests and the benchmark too) can use it without pulling in
// the registry.

export interface WaitOptions {
  /** Time between polls, 50 ms unless given: shorter where the time it took is measured. */
  intervalMs?: number;
  /**
   * A throw of `pred` counts as "not yet" instead of failing the wait, and the last one is
   * named on timeout: for polls over the network while a node restarts or is cut off.
   */
  retryErrors?: boolean;
  /** Appended to the timeout message: what the caller saw last (a log, a count). */
  detail?: () => string;
}

/**
 * Polls `pred` until it holds; fails naming `what` after `timeoutMs`. Resolves with the
 * time it took, in whole ms.
 */
export async function waitUntil(pred: () => Promise<boolean> | boolean, timeoutMs: number, what: string, opts: WaitOptions = {}): Promise<number> {
  const intervalMs = opts.intervalMs ?? 50;
  const t0 = performance.now();
  let lastErr: unknown;
  for (;;) {
    try {
      if (await pred()) return Math.round(performance.now() - t0);
    } catch (err) {
      if (!opts.retryErrors) throw err;
      lastErr = err;
    }
    if (performance.now() - t0 > timeoutMs) {
      const last = lastErr ? ` (last error: ${(lastErr as Error).message})` : '';
      const detail = opts.detail ? `\n${opts.detail()}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last}${detail}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
