/** How check results combine into an instance's health. */
import type { CheckSpec, CheckState, Health } from '@switchboard/protocol';

const RANK: Record<Health, number> = { passing: 0, warning: 1, critical: 2 };

/** The worst of the checks' states; an instance with no checks is passing. */
export function combinedHealth(checks: readonly CheckState[]): Health {
  let worst: Health = 'passing';
  for (const c of checks) if (RANK[c.status] > RANK[worst]) worst = c.status;
  return worst;
}

/**
 * Check states for a (re-)registration: a check that keeps its id and type keeps its
 * state; a new check starts critical until its first result, as Consul's do, so that
 * traffic never reaches an instance before it has been seen to work.
 */
export function initialCheckStates(specs: readonly CheckSpec[], previous: readonly CheckState[]): CheckState[] {
  return specs.map((spec) => {
    const old = previous.find((c) => c.id === spec.id && c.type === spec.type);
    return old ?? { id: spec.id, type: spec.type, status: 'critical', output: AWAITING_FIRST_RESULT };
  });
}

/** The output of a check that has had no result yet. */
export const AWAITING_FIRST_RESULT = 'awaiting the first result';
