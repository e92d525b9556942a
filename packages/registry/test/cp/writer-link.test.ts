// Goal: a node's link to the writer node gives each forwarded write the outcome the
// writer's answer means: the revision; the writer's own refusal, as it is; "not made, make
// it here" for a refusal before running it; and 503 with Retry-After whenever the outcome
// cannot be known (no answer, a link that failed, an error code this node does not know,
// from a newer writer), never a 500 of this node. The writer here is a scripted WebSocket
// server on 127.0.0.1 that answers each request as the test tells it. A write the node
// gave up on is never planned later: its planBy is on the writer's clock, so a write that
// arrives late has no time left.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';
import { SwitchboardError } from '@switchboard/protocol';
import { NotTaken, WriterLink } from '../../src/engines/cp/writer-link.js';
import { FORWARDED_WRITES_HEADER } from '../../src/engines/engine.js';
import { FaultProxy } from '../support/fault-proxy.js';
import { waitUntil } from '../helpers.js';

/** A write as the scripted writer got it: its planBy, and when it arrived, on the writer's clock. */
interface Arrival {
  instanceId: string;
  planBy: unknown;
  budgetMs: unknown;
  arrivedAt: number;
}

/**
 * A writer that answers request `instanceId` x with `answers[x]` (given the request's id).
 * Its clock runs `clockOffsetMs` ahead of this process's (another process's clock has
 * another origin); it tells it when a link opens, as a node does, unless `clockOffsetMs`
 * is null (a node of a version before clock readings). `staleClockMs`: that first reading
 * as if it had taken so long to come. Its answers carry `at`, as a node's do.
 */
async function scriptedWriter(answers: Record<string, (id: number) => unknown>, clockOffsetMs: number | null = 1_000_000, staleClockMs = 0): Promise<{ url: string; port: number; headers: string[]; arrivals: Arrival[]; closed: () => number; close(): Promise<void> }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((resolve) => wss.once('listening', resolve));
  const headers: string[] = [];
  const arrivals: Arrival[] = [];
  const clock = (): number => performance.now() + (clockOffsetMs ?? 0);
  let closed = 0;
  wss.on('connection', (ws, req) => {
    headers.push(String(req.headers[FORWARDED_WRITES_HEADER]));
    if (clockOffsetMs !== null) ws.send(JSON.stringify({ type: 'clock', at: clock() - staleClockMs }));
    ws.on('close', () => closed++);
    ws.on('message', (data) => {
      const m = JSON.parse(String(data)) as { id: number; instanceId: string; planBy: unknown; budgetMs: unknown };
      arrivals.push({ instanceId: m.instanceId, planBy: m.planBy, budgetMs: m.budgetMs, arrivedAt: clock() });
      void Promise.resolve(answers[m.instanceId]?.(m.id)).then((a) => {
        if (a !== undefined && ws.readyState === ws.OPEN) ws.send(JSON.stringify(clockOffsetMs === null ? a : { ...(a as object), at: clock() }));
      });
    });
  });
  const port = (wss.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    headers,
    arrivals,
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
    const [first] = writer.arrivals;
    assert.equal(typeof first?.planBy, 'number');
    const left = (first!.planBy as number) - first!.arrivedAt;
    assert.ok(left <= 500 && left > 100, `each write must be planned within half the time this node waits, by planBy on the writer's clock (${left.toFixed(1)} ms left at its arrival over a quick link)`);
    assert.equal(first!.budgetMs, 500, 'and within that half of its arrival (budgetMs), whichever comes first');

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

test('a write that reaches the writer late has no time left: its planBy is on the writer\'s clock, not counted from its arrival', { timeout: 30_000 }, async () => {
  const writer = await scriptedWriter({
    ok: (id) => ({ type: 'result', id, revision: 3 }),
    // As a node answers a write whose planBy has passed.
    late: (id) => ({ type: 'error', id, request: 'register', problem: { status: 503, code: 'NOT_READY', detail: 'not made: the write could not be planned within the time its sending node waits for it' } }),
  });
  const proxy = await FaultProxy.start({ host: '127.0.0.1', port: writer.port });
  const url = `http://${proxy.address}`;
  const link = new WriterLink({ nodeId: 'n2', peer: { scheme: 'http', token: () => null }, timeoutMs: 2_000, handshakeTimeoutMs: 2_000, maxMessageBytes: 65_536, maxInflight: 8, retryMs: 1_000, refusedRetryMs: 60_000, log: () => undefined });
  try {
    link.send('n1', url, write('ok'));
    await waitUntil(() => link.writer === 'n1', 5_000, 'the link to be up');
    assert.equal(await link.send('n1', url, write('ok')), 3);
    // The connection stops carrying bytes for 1.5 s, with the write in it.
    proxy.stall();
    const sent = link.send('n1', url, write('late'))!;
    await new Promise((r) => setTimeout(r, 1_500));
    proxy.restore();
    const outcome = await sent.then(() => null, (e: unknown) => e);
    assert.ok(outcome instanceof NotTaken, `refused as not made, so this node makes it itself: ${String(outcome)}`);
    const late = writer.arrivals.find((a) => a.instanceId === 'late')!;
    const over = late.arrivedAt - (late.planBy as number);
    assert.ok(over >= 300, `it arrived past its planBy (by ${over.toFixed(0)} ms), so the writer plans nothing for it`);
  } finally {
    link.close();
    await proxy.close();
    await writer.close();
  }
});

test('the bound on the writer\'s clock is taken from its answers too: a first reading that came late costs only the writes before the next answer', { timeout: 30_000 }, async () => {
  // The first reading as if it had taken 3 s to come: this node's bound is 3 s behind.
  const writer = await scriptedWriter({ ok: (id) => ({ type: 'result', id, revision: 5 }) }, 1_000_000, 3_000);
  const link = new WriterLink({ nodeId: 'n2', peer: { scheme: 'http', token: () => null }, timeoutMs: 1_000, handshakeTimeoutMs: 2_000, maxMessageBytes: 65_536, maxInflight: 8, retryMs: 1_000, refusedRetryMs: 60_000, log: () => undefined });
  try {
    link.send('n1', writer.url, write('ok'));
    await waitUntil(() => link.writer === 'n1', 5_000, 'the link to be up');
    assert.equal(await link.send('n1', writer.url, write('ok')), 5);
    assert.equal(await link.send('n1', writer.url, write('ok')), 5);
    const [first, second] = writer.arrivals.map((a) => (a.planBy as number) - a.arrivedAt);
    assert.ok(first! < -2_000, `planned by a time already past on the writer's clock (${first!.toFixed(0)} ms): safe, and made locally`);
    assert.ok(second! <= 500 && second! > 100, `after the first answer's reading, half the wait again (${second!.toFixed(1)} ms)`);
  } finally {
    link.close();
    await writer.close();
  }
});

test('a writer that tells no clock (an earlier version) gets writes with budgetMs alone once the handshake time has passed, and the node says so', { timeout: 30_000 }, async () => {
  const writer = await scriptedWriter({ ok: (id) => ({ type: 'result', id, revision: 1 }) }, null);
  const logs: string[] = [];
  const link = new WriterLink({ nodeId: 'n2', peer: { scheme: 'http', token: () => null }, timeoutMs: 2_000, handshakeTimeoutMs: 1_500, maxMessageBytes: 65_536, maxInflight: 8, retryMs: 100, refusedRetryMs: 60_000, log: (_l, m) => logs.push(m) });
  try {
    assert.equal(link.send('n1', writer.url, write('ok')), null, 'no link yet');
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(link.send('n1', writer.url, write('ok')), null, 'the socket is open, but the writer has told no clock yet: made here');
    await waitUntil(() => link.writer === 'n1', 5_000, 'the link to be up without a clock');
    assert.match(logs.join('\n'), /told no clock.*budgetMs alone/);
    assert.equal(await link.send('n1', writer.url, write('ok')), 1);
    assert.deepEqual(writer.arrivals.map((a) => [a.planBy, a.budgetMs]), [[undefined, 1_000]], 'budgetMs, counted from its arrival, as before');
  } finally {
    link.close();
    await writer.close();
  }
});

test('a writer that said goaway is not written to again on that link, whatever it sends after; a link that answers no write is ended even while its clock readings come', { timeout: 30_000 }, async () => {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((resolve) => wss.once('listening', resolve));
  let conns = 0;
  wss.on('connection', (ws) => {
    conns++;
    const clock = () => ws.readyState === ws.OPEN && ws.send(JSON.stringify({ type: 'clock', at: performance.now() + 5_000 }));
    clock();
    // Readings every 100 ms; writes are never answered.
    const t = setInterval(clock, 100);
    ws.on('close', () => clearInterval(t));
    ws.on('message', (data) => {
      const m = JSON.parse(String(data)) as { instanceId: string };
      if (m.instanceId === 'bye') ws.send(JSON.stringify({ type: 'goaway' }));
    });
  });
  const url = `http://127.0.0.1:${(wss.address() as AddressInfo).port}`;
  const logs: string[] = [];
  const link = new WriterLink({ nodeId: 'n2', peer: { scheme: 'http', token: () => null }, timeoutMs: 800, handshakeTimeoutMs: 2_000, maxMessageBytes: 65_536, maxInflight: 8, retryMs: 60_000, refusedRetryMs: 60_000, log: (_l, m) => logs.push(m) });
  try {
    link.send('n1', url, write('first'));
    await waitUntil(() => link.writer === 'n1', 5_000, 'the link to be up');
    // Unanswered while readings keep coming: ended once the wait is over, not kept for ever.
    const silent = await link.send('n1', url, write('silent'))!.then(() => null, (e: unknown) => e);
    assert.ok(silent instanceof SwitchboardError && silent.code === 'STORE_UNAVAILABLE', String(silent));
    await waitUntil(() => logs.some((l) => /answered no write/.test(l)), 5_000, 'the link ended');
    assert.equal(link.writer, null);
  } finally {
    link.close();
  }
  const link2 = new WriterLink({ nodeId: 'n3', peer: { scheme: 'http', token: () => null }, timeoutMs: 5_000, handshakeTimeoutMs: 2_000, maxMessageBytes: 65_536, maxInflight: 8, retryMs: 60_000, refusedRetryMs: 60_000, log: () => undefined });
  try {
    link2.send('n1', url, write('first'));
    await waitUntil(() => link2.writer === 'n1', 5_000, 'the link to be up');
    void link2.send('n1', url, write('bye'))?.catch(() => undefined);
    await waitUntil(() => link2.writer === null, 5_000, 'goaway to close the link for new writes');
    // Clock readings keep coming for another half second: the link stays closed to writes.
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(link2.writer, null, 'a reading after goaway does not reopen it');
    assert.equal(link2.send('n1', url, write('after')), null, 'made here');
  } finally {
    link2.close();
    for (const c of wss.clients) c.terminate();
    await new Promise<void>((resolve) => wss.close(() => resolve()));
  }
  assert.ok(conns >= 2);
});
