// Goal: group commit sends writes that arrive during a transaction in flight as one etcd
// transaction of nested guarded ones, keeps writes to the same key in separate batches,
// maps each nested outcome back to its writer, and fails a whole batch together.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type * as RPC from 'etcd3';
import { QueueFull, TxnBatcher, type GuardedTxn, type TxnOutcome } from '../../src/engines/cp/batcher.js';

const put = (key: string): GuardedTxn => ({ compare: [{ key: Buffer.from(key), target: 'Version', result: 'Equal', version: 0 }], success: [{ request_put: { key: Buffer.from(key), value: Buffer.from('v') } }] });
const leased = (key: string, lease: string): GuardedTxn => ({ compare: [{ key: Buffer.from(lease), target: 'Version', result: 'Greater', version: 0 }], success: [{ request_put: { key: Buffer.from(key), value: Buffer.from('v') } }] });

function fakeEtcd(): { sent: RPC.ITxnRequest[]; release: (fail?: boolean) => void; send: (t: RPC.ITxnRequest) => Promise<RPC.ITxnResponse> } {
  const sent: RPC.ITxnRequest[] = [];
  const pending: { resolve: (r: RPC.ITxnResponse) => void; reject: (e: unknown) => void; req: RPC.ITxnRequest }[] = [];
  let rev = 100;
  return {
    sent,
    send: (req) => {
      sent.push(req);
      return new Promise((resolve, reject) => pending.push({ resolve, reject, req }));
    },
    release: (fail = false) => {
      const p = pending.shift();
      if (!p) throw new Error('nothing in flight');
      if (fail) return p.reject(new Error('Unavailable'));
      rev++;
      const nested = p.req.success?.[0]?.request_txn !== undefined;
      // Nested writes of odd index "fail their guard" in this fake.
      const responses = nested ? (p.req.success ?? []).map((_, i) => ({ response_txn: { succeeded: i % 2 === 0 } })) : [];
      p.resolve({ header: { revision: String(rev) }, succeeded: true, responses } as unknown as RPC.ITxnResponse);
    },
  };
}

test('writes that arrive while one is in flight go out together, each with its own outcome', async () => {
  const etcd = fakeEtcd();
  const b = new TxnBatcher({ send: etcd.send, maxWrites: 64, maxTxnOps: 128, maxBytes: 1 << 20, maxInFlight: 1, maxQueued: 100 });
  const first = b.submit(put('/a'));
  assert.equal(etcd.sent.length, 1);
  assert.equal(etcd.sent[0]?.compare?.length, 1, 'a lone write is sent as a plain guarded transaction');
  const rest = [b.submit(put('/b')), b.submit(leased('/c', '/lease')), b.submit(leased('/d', '/lease')), b.submit(put('/b'))];
  etcd.release();
  assert.deepEqual(await first, { succeeded: true, revision: 101 });
  await new Promise((r) => setImmediate(r));
  // /b twice cannot share a batch; two writes reading the same lease key can.
  assert.equal(etcd.sent.length, 2);
  const nested = etcd.sent[1]?.success?.map((op) => op.request_txn?.success?.[0]?.request_put?.key?.toString());
  assert.deepEqual(nested, ['/b', '/c', '/d']);
  assert.deepEqual(etcd.sent[1]?.compare, []);
  etcd.release();
  assert.deepEqual(await rest[0], { succeeded: true, revision: 102 });
  assert.deepEqual(await rest[1], { succeeded: false, revision: 102 });
  assert.deepEqual(await rest[2], { succeeded: true, revision: 102 });
  await new Promise((r) => setImmediate(r));
  assert.equal(etcd.sent.length, 3, 'the second write of /b goes in the next batch');
  etcd.release(true);
  await assert.rejects(rest[3] as Promise<unknown>, /Unavailable/);
  assert.equal(b.batches, 3);
  assert.equal(b.writes, 5);
});

test('a write that writes a key another one in the batch reads waits for the next batch', async () => {
  const etcd = fakeEtcd();
  const b = new TxnBatcher({ send: etcd.send, maxWrites: 2, maxTxnOps: 128, maxBytes: 1 << 20, maxInFlight: 1, maxQueued: 100 });
  void b.submit(put('/x'));
  const reads = b.submit(leased('/y', '/l'));
  const writesRead = b.submit(put('/l'));
  const third = b.submit(put('/z'));
  etcd.release();
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(etcd.sent[1]?.success?.map((op) => op.request_txn?.success?.[0]?.request_put?.key?.toString()), ['/y', '/z'], 'at most maxWrites, /l waits');
  etcd.release();
  await Promise.all([reads, third]);
  await new Promise((r) => setImmediate(r));
  assert.equal(etcd.sent[2]?.success?.[0]?.request_put?.key?.toString(), '/l');
  etcd.release();
  await writesRead;
});

test('writes beyond the queue limit are refused at once', async () => {
  const etcd = fakeEtcd();
  const b = new TxnBatcher({ send: etcd.send, maxWrites: 64, maxTxnOps: 128, maxBytes: 1 << 20, maxInFlight: 1, maxQueued: 2 });
  void b.submit(put('/a')); // in flight
  void b.submit(put('/b'));
  void b.submit(put('/c'));
  await assert.rejects(b.submit(put('/d')), QueueFull);
});

test('a large write shares a batch only within etcd\'s limit for nested transactions, and goes alone when it must', async () => {
  const etcd = fakeEtcd();
  // etcd: a nested transaction in a batch of n writes may hold at most maxTxnOps - n operations.
  const b = new TxnBatcher({ send: etcd.send, maxWrites: 64, maxTxnOps: 10, maxBytes: 1 << 20, maxInFlight: 1, maxQueued: 100 });
  const many = (prefix: string, n: number): GuardedTxn => ({
    compare: Array.from({ length: n }, (_, i) => ({ key: Buffer.from(`${prefix}${i}`), target: 'Version' as const, result: 'Equal' as const, version: 0 })),
    success: Array.from({ length: n }, (_, i) => ({ request_put: { key: Buffer.from(`${prefix}${i}`), value: Buffer.from('v') } })),
  });
  void b.submit(put('/first')); // in flight
  const big = b.submit(many('/big/', 9)); // 9 operations: with anything else nested, over 10 - 2
  const mid = b.submit(many('/mid/', 7));
  const small = [b.submit(put('/s1')), b.submit(put('/s2'))];
  const tick = () => new Promise((r) => setImmediate(r));
  etcd.release();
  await tick();
  // big is first in the queue: nothing else fits beside it (9 > 10 - 2), so it goes alone.
  const second = etcd.sent[1]!;
  assert.equal(second.compare?.length, 9, 'the large write alone, as a plain transaction');
  etcd.release();
  await tick();
  // Then mid and the two small ones together (7 <= 10 - 3).
  const third = etcd.sent[2]!;
  assert.equal(third.success?.length, 3);
  for (const op of third.success ?? []) {
    const nested = op.request_txn!;
    assert.ok(Math.max(nested.compare?.length ?? 0, nested.success?.length ?? 0) <= 10 - 3);
  }
  etcd.release();
  await Promise.all([big, mid, ...small]);
});

test('when a batch fails because etcd is out of reach, the writes still queued are refused at once', async () => {
  const etcd = fakeEtcd();
  const b = new TxnBatcher({ send: etcd.send, maxWrites: 1, maxTxnOps: 128, maxBytes: 1 << 20, maxInFlight: 1, maxQueued: 100, unreachable: (e) => (e as Error).message === 'Unavailable' });
  const first = b.submit(put('/a'));
  const queued = [b.submit(put('/b')), b.submit(put('/c')), b.submit(put('/d'))];
  etcd.release(true);
  await assert.rejects(first, /Unavailable/);
  for (const q of queued) await assert.rejects(q, /Unavailable/);
  assert.equal(etcd.sent.length, 1, 'nothing else was sent');
});

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));
const nestedKeys = (req: RPC.ITxnRequest | undefined): (string | undefined)[] => (req?.success ?? []).map((op) => (op.request_txn?.success?.[0] ?? op).request_put?.key?.toString());

/** A batcher with a hold over the fake etcd, and the first write answered while a second one waits. */
async function answeredWithOneWaiting(holdMs: number): Promise<{ etcd: ReturnType<typeof fakeEtcd>; b: TxnBatcher; waiting: Promise<TxnOutcome> }> {
  const etcd = fakeEtcd();
  const b = new TxnBatcher({ send: etcd.send, maxWrites: 64, maxTxnOps: 128, maxBytes: 1 << 20, maxInFlight: 1, maxQueued: 100, holdMs });
  const first = b.submit(put('/a'));
  const waiting = b.submit(put('/b'));
  etcd.release();
  await first;
  return { etcd, b, waiting };
}

test('after a batch is answered, the next waits for its writers to write again, so that both cohorts share one transaction', async () => {
  const etcd = fakeEtcd();
  const b = new TxnBatcher({ send: etcd.send, maxWrites: 64, maxTxnOps: 128, maxBytes: 1 << 20, maxInFlight: 1, maxQueued: 100, holdMs: 60_000 });
  const first = b.submit(put('/a1'));
  const queued = [b.submit(put('/b1')), b.submit(put('/c1'))];
  etcd.release();
  await first;
  await tick();
  assert.equal(etcd.sent.length, 1, "the two queued writes wait for the answered one's writer");
  const again = b.submit(put('/a2'));
  assert.equal(etcd.sent.length, 2, 'its writer is back: all three go');
  assert.deepEqual(nestedKeys(etcd.sent[1]), ['/b1', '/c1', '/a2']);
  etcd.release();
  await Promise.all([...queued, again]);
  await tick();
  // One cohort of three now: nothing queued when it was answered, and the next batch
  // waits until all three are back.
  const next = [b.submit(put('/a3')), b.submit(put('/b3'))];
  await tick();
  assert.equal(etcd.sent.length, 2);
  next.push(b.submit(put('/c3')));
  assert.equal(etcd.sent.length, 3);
  assert.deepEqual(nestedKeys(etcd.sent[2]), ['/a3', '/b3', '/c3']);
  etcd.release();
  await Promise.all(next);
  assert.equal(b.held, 3, 'each answered batch started a hold');
  assert.equal(b.holdsTimedOut, 0);
});

test('a held batch goes after holdMs when the answered writers do not write again', async () => {
  const { etcd, b, waiting: second } = await answeredWithOneWaiting(40);
  const answeredAt = performance.now();
  await tick();
  assert.equal(etcd.sent.length, 1);
  while (etcd.sent.length < 2 && performance.now() - answeredAt < 5_000) await new Promise((r) => setTimeout(r, 2));
  const waited = performance.now() - answeredAt;
  assert.equal(etcd.sent.length, 2, 'the held write went');
  assert.ok(waited >= 35, `it went after ${waited.toFixed(1)} ms, before the 40 ms hold ended`);
  assert.ok(waited < 1_000, `it waited ${waited.toFixed(0)} ms for a 40 ms hold`);
  etcd.release();
  assert.equal((await second).succeeded, true);
  assert.equal(b.holdsTimedOut, 1);
});

test('a lone writer is never held, and holdMs 0 never holds', async () => {
  for (const holdMs of [60_000, 0]) {
    const etcd = fakeEtcd();
    const b = new TxnBatcher({ send: etcd.send, maxWrites: 64, maxTxnOps: 128, maxBytes: 1 << 20, maxInFlight: 1, maxQueued: 100, holdMs });
    for (let i = 0; i < 3; i++) {
      const w = b.submit(put(`/k${i}`));
      assert.equal(etcd.sent.length, i + 1, `write ${i} went at once (holdMs ${holdMs})`);
      etcd.release();
      await w;
      await tick();
    }
    assert.equal(b.held, 0);
    if (holdMs === 0) {
      const w = b.submit(put('/x'));
      const queued = b.submit(put('/y'));
      etcd.release();
      await w;
      await tick();
      assert.equal(etcd.sent.length, 5, 'with holdMs 0 the queued write goes as soon as the batch before it is answered');
      etcd.release();
      await queued;
    }
  }
});

test('no hold when the queue already holds what it would wait for (maxWrites)', async () => {
  const etcd = fakeEtcd();
  const b = new TxnBatcher({ send: etcd.send, maxWrites: 3, maxTxnOps: 128, maxBytes: 1 << 20, maxInFlight: 1, maxQueued: 100, holdMs: 60_000 });
  const first = b.submit(put('/a'));
  const queued = ['/b', '/c', '/d'].map((k) => b.submit(put(k)));
  etcd.release();
  await first;
  await tick();
  assert.equal(etcd.sent.length, 2, 'a full batch waits for nobody');
  assert.deepEqual(nestedKeys(etcd.sent[1]), ['/b', '/c', '/d']);
  assert.equal(b.held, 0);
  etcd.release();
  await Promise.all(queued);
});

test('closing refuses the writes held or queued (they were never sent) and sends nothing more', async () => {
  const { etcd, b, waiting: held } = await answeredWithOneWaiting(60_000);
  await tick();
  assert.equal(b.held, 1, 'the queued write is held');
  b.close(new Error('shutting down'));
  await assert.rejects(held, /shutting down/);
  await assert.rejects(b.submit(put('/c')), QueueFull);
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(etcd.sent.length, 1, 'nothing more was sent');
});

test('a batch that fails starts no hold: the writes queued behind it go at once', async () => {
  const etcd = fakeEtcd();
  const b = new TxnBatcher({ send: etcd.send, maxWrites: 64, maxTxnOps: 128, maxBytes: 1 << 20, maxInFlight: 1, maxQueued: 100, holdMs: 60_000, unreachable: () => false });
  const first = b.submit(put('/a'));
  const queued = [b.submit(put('/b')), b.submit(put('/c'))];
  etcd.release(true);
  await assert.rejects(first, /Unavailable/);
  await tick();
  assert.equal(etcd.sent.length, 2, 'the queued writes went without waiting for the failed one\'s writer');
  assert.equal(b.held, 0);
  etcd.release();
  for (const q of queued) assert.equal(typeof (await q).revision, 'number');
});
