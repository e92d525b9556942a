// Goal: the linearizability checker accepts histories that have a legal order and catches
// planted anomalies (a stale read, a lost acknowledged write, a resurrected delete, a
// read that sees a write before it was made), also with unknown outcomes in the mix.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkHistory, linearizableKey, type HistoryOp } from '../../src/core/linearizability.js';

const w = (value: string, call: number, ret: number | undefined, result: HistoryOp['result'] = 'ok'): HistoryOp => ({ key: 'k', kind: 'write', value, call, ...(ret === undefined ? {} : { ret }), result });
const d = (call: number, ret: number | undefined, result: HistoryOp['result'] = 'ok'): HistoryOp => ({ key: 'k', kind: 'delete', call, ...(ret === undefined ? {} : { ret }), result });
const r = (observed: string | null, call: number, ret: number): HistoryOp => ({ key: 'k', kind: 'read', call, ret, result: 'ok', observed });

test('sequential histories that follow the model pass', () => {
  assert.equal(linearizableKey([w('a', 0, 1), r('a', 2, 3), d(4, 5), r(null, 6, 7), d(8, 9, 'not_found')]), true);
});

test('a stale read after an acknowledged write is caught', () => {
  assert.equal(linearizableKey([w('a', 0, 1), w('b', 2, 3), r('a', 4, 5)]), false);
});

test('a read that sees a value before its write was called is caught', () => {
  assert.equal(linearizableKey([r('a', 0, 1), w('a', 2, 3)]), false);
});

test('concurrent operations may be ordered either way', () => {
  // The read overlaps the write: it may see the old or the new value.
  assert.equal(linearizableKey([w('a', 0, 1), w('b', 2, 6), r('a', 3, 4), r('b', 5, 7)]), true);
  assert.equal(linearizableKey([w('a', 0, 1), w('b', 2, 6), r('b', 3, 4), r('a', 5, 7)]), false, 'once b was seen, a cannot come back');
});

test('a delete acknowledged as done but the value read again afterwards is caught', () => {
  assert.equal(linearizableKey([w('a', 0, 1), d(2, 3), r('a', 4, 5)]), false);
  assert.equal(linearizableKey([w('a', 0, 1), d(2, 3, 'not_found')]), false, 'not_found while the key held a value');
});

test('unknown outcomes may or may not have taken effect, but only after their call', () => {
  assert.equal(linearizableKey([w('a', 0, undefined, 'unknown'), r('a', 5, 6), r('a', 7, 8)]), true);
  assert.equal(linearizableKey([w('a', 0, undefined, 'unknown'), r(null, 5, 6)]), true);
  assert.equal(linearizableKey([r('a', 0, 1), w('a', 2, undefined, 'unknown')]), false);
  // An unknown write cannot take effect twice: a, then absent, then a again needs another write.
  assert.equal(linearizableKey([w('a', 0, undefined, 'unknown'), r('a', 1, 2), d(3, 4), r('a', 5, 6)]), false);
});

test('checkHistory checks each key on its own and names the bad one', () => {
  const ok: HistoryOp[] = [w('a', 0, 1), r('a', 2, 3)].map((o) => ({ ...o, key: 'good' }));
  const bad: HistoryOp[] = [w('a', 0, 1), w('b', 2, 3), r('a', 4, 5)].map((o) => ({ ...o, key: 'bad' }));
  const res = checkHistory([...ok, ...bad]);
  assert.equal(res.ok, false);
  assert.deepEqual(res.anomalies.map((a) => a.key), ['bad']);
  assert.equal(res.keys, 2);
  assert.equal(checkHistory(ok).ok, true);
  assert.throws(() => checkHistory(Array.from({ length: 10 }, (_, i) => r(null, i, i + 0.5)), 5), /at most 5/);
});

test('a larger random history from a real sequential register passes, and a planted anomaly in it is caught', () => {
  let seed = 7;
  const rand = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const ops: HistoryOp[] = [];
  let state: string | null = null;
  let t = 0;
  // Sequential ground truth, then each op's interval widened (by up to 8 either side, 10 apart) so that neighbours overlap.
  for (let i = 0; i < 40; i++) {
    const at = (t += 10);
    const x = rand();
    const call = at - rand() * 8;
    const ret = at + rand() * 8;
    if (x < 0.4) {
      state = `v${i}`;
      ops.push(w(state, call, ret));
    } else if (x < 0.6) {
      ops.push(d(call, ret, state === null ? 'not_found' : 'ok'));
      state = null;
    } else ops.push(r(state, call, ret));
  }
  assert.equal(linearizableKey(ops), true);
  const reads = ops.filter((o) => o.kind === 'read' && o.observed !== null);
  const victim = reads[reads.length - 1] as HistoryOp;
  const planted = ops.map((o) => (o === victim ? { ...o, observed: 'never-written' } : o));
  assert.equal(linearizableKey(planted), false);
});
