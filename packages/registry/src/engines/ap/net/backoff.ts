/**
 * Reconnect waits of peer links: the cap doubles from `minMs` to `maxMs` per failed
 * attempt, and the wait is uniform in [cap/2, cap] ("equal jitter"): spread enough that
 * the nodes of a healed partition do not redial in lockstep, never so short that a
 * refusing peer is hammered.
 */
export function reconnectDelay(attempt: number, minMs: number, maxMs: number, random: () => number = Math.random): number {
  const cap = Math.min(maxMs, minMs * Math.pow(2, Math.min(attempt, 30)));
  return Math.round(cap / 2 + random() * (cap / 2));
}
