// Goal: a node's link to the writer node gives each forwarded write the outcome the
// writer's answer means: the revision; the writer's own refusal, as it is; "not made, make
// it here" for a refusal before running it; and 503 with Retry-After whenever the outcome
// cannot be known (no answer, a link that failed, an error code this node does not know,
// from a newer writer), never a 500 of this node. The writer here is a scripted WebSocket
// server on 127.0.0.1 that answers each request as the test tells it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';
import { SwitchboardError } from '@switchboard/protocol';
import { NotTaken, WriterLink } from '../../src/engines/cp/writer-link.js';
import { FORWARDED_WRITES_HEADER } from '../../src/engines/engine.js';
import { waitUntil } from '../helpers.js';

/** A writer that answers request `instanceId` x with `answers[x]` (given the request's id). */
async function scriptedWriter(answers: Record<string, (id: number) => unknown>): Promise<{ url: string; headers: string[]; budgets: unknown[]; closed: () => number; close(): Promise<void> }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((resolve) => wss.once('listening', resolve));
  const headers: string[] = [];
  const budgets: unknown[] = [];
  let closed = 0;
  wss.on('connection', (ws, req) => {
    headers.push(String(req.headers[FORWARDED_WRITES_HEADER]));
    ws.on('close', () => closed++);
    ws.on('message', (data) => {
      const m = JSON.parse(String(data)) as { id: number; instanceId: string; budgetMs: unknown };
      budgets.push(m.budgetMs);
      void Promise.resolve(answers[m.instanceId]?.(m.id)).then((a) => {
        if (a !== undefined && ws.readyState === ws.OPEN) ws.send(JSON.stringify(a));
      });
    });
  });
  return {
    url: `http://127.0.0.1:${(wss.address() as AddressInfo).port}`,
    headers,
    budgets,
    closed: () => closed,
    close: () =>
      new Promise<void>((resolve) => {
        for (const c of wss.clients) c.terminate();
        wss.close(() => resolve());
      }),
  };
}

const write = (instanceId: string) => ({ type: 'register' as const, namespace: 'default', service: 'pay', instanceId, instance: { address: '10.0.0.1', port: 1 } });

test('each answer of the writer becomes the outcome it means; an unknown error code is 503 and retry, not 500', { timeout: 30_000 }, async () => {
  const writer = await scriptedWriter({
    ok: (id) => ({ type: 'result', id, revision: 42 }),
    refused: (id) => ({ type: 'error', id, request: 'register', problem: { status: 400, code: 'INVALID_ARGUMENT', detail: 'port is out of range', hint: 'give a port from 1 to 65535', field: 'instance/port' } }),
    busy: (id) => ({ type: 'error', id, request: 'register', problem: { status: 429, code: 'RATE_LIMITED', detail: 'too many requests' } }),
    late: (id) => ({ type: 'error', id, request: 'register', problem: { status: 503, code: 'NOT_READY', detail: 'not made: the write could not be planned within the time its sending node waits for it' } }),
    newer: (id) => ({ type: 'error', id, request: 'register', problem: { status: 409, code: 'SOME_FUTURE_CODE', detail: 'a refusal this node has no name for' } }),
    silent: () => undefined,
  });
  const logs: string[] = [];
  const link = new WriterLink({ nodeId: 'n2', peer: { scheme: 'http', token: () => null }, timeoutMs: 1_000, handshakeTimeoutMs: 2_000, maxMessageBytes: 65_536, maxInflight: 8, retryMs: 1_000, refusedRetryMs: 60_000, log: (_l, m) => logs.push(m) });
  try {
    // The first write opens the link and is made locally (null); later ones go over it.
    assert.equal(link.send('n1', writer.url, write('ok')), null, 'no link yet: the caller writes itself');
    await waitUntil(() => link.writer === 'n1', 5_000, 'the link to be up');
    assert.deepEqual(writer.headers, ['n2'], 'the link names the sending node');

    assert.equal(await link.send('n1', writer.url, write('ok')), 42);
    assert.deepEqual(writer.budgets, [500], 'each write says it must be planned within half the time this node waits');

    const refused = await link.send('n1', writer.url, write('refused'))!.then(() => null, (e: unknown) => e);
    assert.ok(refused instanceof SwitchboardError, String(refused));
    assert.deepEqual([refused.code, refused.status, refused.field, refused.hint], ['INVALID_ARGUMENT', 400, 'instance/port', 'give a port from 1 to 65535'], 'the writer\'s refusal reaches the client as it is');

    const busy = await link.send('n1', writer.url, write('busy'))!.then(() => null, (e: unknown) => e);
    assert.ok(busy instanceof NotTaken, 'refused before it ran: the node makes it itself');
    const late = await link.send('n1', writer.url, write('late'))!.then(() => null, (e: unknown) => e);
    assert.ok(late instanceof NotTaken, 'not made (no etcd quorum at the writer, or its budget ran out): the node makes it itself');

    const newer = await link.send('n1', writer.url, write('newer'))!.then(() => null, (e: unknown) => e);
    assert.ok(newer instanceof SwitchboardError, String(newer));
    assert.equal(newer.code, 'STORE_UNAVAILABLE');
    assert.equal(newer.status, 503);
    assert.equal(newer.retryAfterSec, 1);
    assert.match(newer.message, /SOME_FUTURE_CODE/);
    assert.match(newer.message, /may have been made/);
    assert.equal(link.writer, 'n1', 'an answer, even one not understood, keeps the link');

    const silent = await link.send('n1', writer.url, write('silent'))!.then(() => null, (e: unknown) => e);
    assert.ok(silent instanceof SwitchboardError && silent.code === 'STORE_UNAVAILABLE' && /did not come/.test(silent.message), String(silent));
    assert.equal(link.lost, 1, 'only the unanswered write counts as lost');
  } finally {
    link.close();
    await writer.close();
  }
});

test('when the writer changes, the writes sent to the former one are still answered by it, and then its link ends', { timeout: 30_000 }, async () => {
  const slow = (revision: number) => (id: number) => new Promise((resolve) => setTimeout(() => resolve({ type: 'result', id, revision }), 300));
  const a = await scriptedWriter({ ok: (id) => ({ type: 'result', id, revision: 1 }), slow: slow(7) });
  const b = await scriptedWriter({ ok: (id) => ({ type: 'result', id, revision: 8 }) });
  const link = new WriterLink({ nodeId: 'n3', peer: { scheme: 'http', token: () => null }, timeoutMs: 5_000, handshakeTimeoutMs: 2_000, maxMessageBytes: 65_536, maxInflight: 8, retryMs: 1_000, refusedRetryMs: 60_000, log: () => undefined });
  try {
    link.send('n2', a.url, write('ok'));
    await waitUntil(() => link.writer === 'n2', 5_000, 'the link to n2');
    const pending = link.send('n2', a.url, write('slow'))!;
    // n1 joined: it writes from now on; the write on n2's link is not given up.
    assert.equal(link.send('n1', b.url, write('ok')), null, 'the new link is not up yet: written locally');
    await waitUntil(() => link.writer === 'n1', 5_000, 'the link to n1');
    assert.equal(await pending, 7, 'answered by the former writer, not 503');
    assert.equal(link.lost, 0);
    await waitUntil(() => a.closed() === 1, 5_000, 'the former writer\'s link to end once its writes were answered');
    assert.equal(await link.send('n1', b.url, write('ok')), 8);
  } finally {
    link.close();
    await Promise.all([a.close(), b.close()]);
  }
});
