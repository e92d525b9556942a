/**
 * A linearizability checker for the histories the cp tests record: per key, a register
 * that holds a value or nothing, changed by register (write) and deregister (delete) and
 * read by consistent reads. It follows Wing & Gong's search (try every operation that may
 * come next, in real-time order, against the sequential model), with Lowe's memo of
 * (operations linearized, state) so that the same situation is never searched twice.
 * Pure code: no I/O, no clock.
 *
 * An operation whose outcome is unknown (the client got no answer, or a 503 after the
 * request may have reached etcd) may have taken effect at any time after it was called, or
 * never: the search tries both.
 *
 * Histories are checked per key (registers are independent, so a history is linearizable
 * iff each key's is) and each key's history is bounded (`maxOpsPerKey`): the search is
 * exponential in the worst case.
 */

export type Value = string | null;

export interface HistoryOp {
  key: string;
  kind: 'write' | 'delete' | 'read';
  /** write: the value written. */
  value?: string;
  /** When the call started and when its answer came (any monotonic unit). */
  call: number;
  /**
   * Infinity (or absent) when the outcome is unknown: no answer came, or an error after the
   * request may have reached etcd, which can still commit it after the answer.
   */
  ret?: number;
  /**
   * write: 'ok' | 'unknown'; delete: 'ok' (it was there) | 'not_found' | 'unknown';
   * read: 'ok' with `observed`. Definite failures (the write surely did nothing) are left
   * out of the history by the recorder.
   */
  result: 'ok' | 'not_found' | 'unknown';
  /** read: what it saw (null: absent). */
  observed?: Value;
}

export interface CheckResult {
  ok: boolean;
  /** Keys whose history cannot be linearized. */
  anomalies: { key: string; ops: HistoryOp[] }[];
  /** Keys checked and operations seen. */
  keys: number;
  ops: number;
}

export const DEFAULT_MAX_OPS_PER_KEY = 64;

/** Checks a whole history (every key). */
export function checkHistory(history: readonly HistoryOp[], maxOpsPerKey = DEFAULT_MAX_OPS_PER_KEY): CheckResult {
  const byKey = new Map<string, HistoryOp[]>();
  for (const op of history) {
    let list = byKey.get(op.key);
    if (!list) byKey.set(op.key, (list = []));
    list.push(op);
  }
  const anomalies: CheckResult['anomalies'] = [];
  for (const [key, ops] of byKey) {
    if (ops.length > maxOpsPerKey) throw new Error(`key ${key} has ${ops.length} operations; the checker takes at most ${maxOpsPerKey} per key`);
    if (!linearizableKey(ops)) anomalies.push({ key, ops });
  }
  return { ok: anomalies.length === 0, anomalies, keys: byKey.size, ops: history.length };
}

interface Op {
  readonly kind: HistoryOp['kind'];
  readonly value: Value;
  readonly call: number;
  readonly ret: number;
  readonly result: HistoryOp['result'];
  readonly observed: Value;
}

/** The sequential model: the new state when `op` may run on `state`, else undefined. */
function step(state: Value, op: Op, takesEffect: boolean): Value | undefined {
  switch (op.kind) {
    case 'write':
      return takesEffect ? op.value : state;
    case 'delete':
      if (op.result === 'unknown') return takesEffect ? null : state;
      if (op.result === 'ok') return state !== null ? null : undefined;
      return state === null ? null : undefined; // not_found
    case 'read':
      return state === op.observed ? state : undefined;
  }
}

/** Wing & Gong with memoization, for one key's history starting from an absent key. */
export function linearizableKey(history: readonly HistoryOp[], initial: Value = null): boolean {
  const ops: Op[] = history
    .map((h) => ({ kind: h.kind, value: h.value ?? null, call: h.call, ret: h.ret ?? Infinity, result: h.result, observed: h.observed ?? null }))
    .sort((a, b) => a.call - b.call);
  const n = ops.length;
  if (n === 0) return true;
  const seen = new Set<string>();
  const done = new Array<boolean>(n).fill(false);
  const search = (state: Value, left: number): boolean => {
    if (left === 0) return true;
    const memo = `${done.map((d) => (d ? '1' : '0')).join('')}|${state === null ? '\u0000' : state}`;
    if (seen.has(memo)) return false;
    seen.add(memo);
    // The operations that may come next: called before every pending one returned.
    let minRet = Infinity;
    let allUnknown = true;
    for (let i = 0; i < n; i++) {
      if (done[i]) continue;
      minRet = Math.min(minRet, (ops[i] as Op).ret);
      if ((ops[i] as Op).result !== 'unknown') allUnknown = false;
    }
    // Only unknown operations left: each may simply never have happened.
    if (allUnknown) return true;
    for (let i = 0; i < n; i++) {
      if (done[i]) continue;
      const op = ops[i] as Op;
      if (op.call > minRet) break; // sorted by call: no later one can come next either
      const effects = op.result === 'unknown' ? [true, false] : [true];
      for (const takesEffect of effects) {
        const next = step(state, op, takesEffect);
        if (next === undefined) continue;
        done[i] = true;
        const ok = search(next, left - 1);
        done[i] = false;
        if (ok) return true;
      }
    }
    return false;
  };
  return search(initial, n);
}
