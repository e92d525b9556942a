/** How check results combine into an instance's health. */
import { REPORTS_CHECK_ID, type CheckSpec, type CheckState, type Health } from '@switchboard/protocol';

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

/**
 * An instance's checks, health and history detail once one of its checks is in `state`.
 * A check of its own that recovers also ends the consumers' warning (`reportsCleared`):
 * whatever they saw was before the instance was seen to work again.
 */
export function withCheckState(checks: readonly CheckState[], checkId: string, state: CheckState): { checks: CheckState[]; health: Health; detail: string; reportsCleared: boolean } {
  let next = checks.map((c) => (c.id === checkId ? state : c));
  let detail = `${checkId} ${state.status}${state.output ? `: ${state.output}` : ''}`;
  const reportsCleared = state.status === 'passing' && next.some((c) => c.id === REPORTS_CHECK_ID);
  if (reportsCleared) {
    next = next.filter((c) => c.id !== REPORTS_CHECK_ID);
    detail += '; consumer reports cleared';
  }
  return { checks: next, health: combinedHealth(next), detail, reportsCleared };
}
