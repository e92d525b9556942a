// Goal: the SSE watch delivers every change in revision order with reasons, puts the id
// on the last event of each revision the stream delivers, and resumes exactly by
// fromRevision and by Last-Event-ID; positions it cannot resume get an explicit reset.
import { connect, type Socket } from 'node:net';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { call, SseReader, sleep, startNode, waitUntil } from '../helpers.js';

const reg = (u: string, svc: string, id: string, extra: Record<string, unknown> = {}) =>
  call(u, 'PUT', `/v1/services/${svc}/instances/${id}`, { address: '10.0.0.1', port: 80, ...extra });

/** A watch over a bare socket (no client library), with everything it received as text. */
async function rawWatch(url: string, service: string, version = '1.1'): Promise<{ socket: Socket; text: () => string; close: () => void }> {
  const socket = connect(Number(new URL(url).port), '127.0.0.1');
  let text = '';
  socket.setEncoding('latin1');
  socket.on('data', (d: string) => (text += d));
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.once('connect', () => resolve());
  });
  socket.write(`GET /v1/watch?service=${service} HTTP/${version}\r\nhost: test\r\naccept: text/event-stream\r\n\r\n`);
  return { socket, text: () => text, close: () => socket.destroy() };
}

test('a watcher sees every change in revision order, with reasons and ids', async () => {
  const node = await startNode();
  try {
    const u = node.url;
    const w = await SseReader.open(`${u}/v1/watch?service=shop`);
    const epoch = (await call(u, 'GET', '/v1/status')).body.epoch;
    const lease = (await call(u, 'POST', '/v1/leases', { ttlMs: 60_000 })).body.leaseId;
    await reg(u, 'shop', 'a', { leaseId: lease });
    await reg(u, 'shop', 'b', { leaseId: lease });
    await reg(u, 'other', 'z'); // not watched
    await reg(u, 'shop', 'p');
    await call(u, 'PUT', '/v1/services/shop/instances/p/status', { status: 'draining' });
    await call(u, 'DELETE', '/v1/services/shop/instances/p');
    await call(u, 'DELETE', `/v1/leases/${lease}`); // a and b in one revision
    await w.count(7);
    const got = w.events.map((e) => [e.event, e.json.instance.id, e.json.revision, e.json.reason ?? null, e.id ?? null]);
    assert.deepEqual(got, [
      ['put', 'a', 1, 'registered', `${epoch}:1`],
      ['put', 'b', 2, 'registered', `${epoch}:2`],
      ['put', 'p', 4, 'registered', `${epoch}:4`],
      ['put', 'p', 5, 'status_changed', `${epoch}:5`],
      ['delete', 'p', 6, 'deregistered', `${epoch}:6`],
      ['delete', 'a', 7, 'lease_revoked', null],
      ['delete', 'b', 7, 'lease_revoked', `${epoch}:7`],
    ]);
    for (const e of w.events) {
      assert.equal(e.json.epoch, epoch);
      assert.equal(e.json.service, 'shop');
      assert.equal(e.json.namespace, 'default');
    }
    assert.equal(w.events[3]!.json.instance.status, 'draining');
    w.close();
  } finally {
    await node.close();
  }
});

test('a filtered stream puts the id on the last event it delivers of a revision', async () => {
  const node = await startNode();
  try {
    const u = node.url;
    const w = await SseReader.open(`${u}/v1/watch?service=one`);
    const all = await SseReader.open(`${u}/v1/watch`);
    const r = await call(u, 'POST', '/v1/instances/batch', { instances: [
      { service: 'one', id: 'x', address: '10.0.0.1', port: 1 },
      { service: 'two', id: 'y', address: '10.0.0.2', port: 2 },
    ] });
    await w.count(1);
    await all.count(2);
    assert.equal(w.events[0]!.id, `${w.events[0]!.json.epoch}:${r.body.revision}`);
    assert.deepEqual(all.events.map((e) => e.id ?? null), [null, `${all.events[0]!.json.epoch}:${r.body.revision}`]);
    w.close();
    all.close();
  } finally {
    await node.close();
  }
});

test('resuming by fromRevision and by Last-Event-ID gives exactly the missed events', async () => {
  const node = await startNode();
  try {
    const u = node.url;
    const first = await SseReader.open(`${u}/v1/watch?service=svc`);
    for (let i = 1; i <= 3; i++) await reg(u, 'svc', `i${i}`);
    await first.count(3);
    const lastId = first.events[2]!.id!;
    first.close();
    await sleep(50);
    // Missed while disconnected: revisions 4..6 (one is a delete).
    await reg(u, 'svc', 'i4');
    await call(u, 'DELETE', '/v1/services/svc/instances/i1');
    await reg(u, 'svc', 'i5');

    const byId = await SseReader.open(`${u}/v1/watch?service=svc&fromRevision=1`, { 'last-event-id': lastId });
    await byId.count(3);
    await reg(u, 'svc', 'i6');
    await byId.count(4);
    assert.deepEqual(byId.events.map((e) => [e.event, e.json.instance.id, e.json.revision]), [
      ['put', 'i4', 4], ['delete', 'i1', 5], ['put', 'i5', 6], ['put', 'i6', 7],
    ]);

    const epoch = first.events[0]!.json.epoch;
    const byRev = await SseReader.open(`${u}/v1/watch?service=svc&fromRevision=5&epoch=${epoch}`);
    await byRev.count(3);
    await sleep(100);
    assert.deepEqual(byRev.events.map((e) => e.json.revision), [5, 6, 7]);

    const live = await SseReader.open(`${u}/v1/watch?service=svc`);
    await sleep(100);
    assert.equal(live.events.length, 0, 'no fromRevision: only changes after the request');
    for (const r of [byId, byRev, live]) r.close();
  } finally {
    await node.close();
  }
});

test('another epoch or a position older than the retained log gets reset, then live events', async () => {
  const node = await startNode({ limits: { retainedEvents: 3 } });
  try {
    const u = node.url;
    for (let i = 1; i <= 6; i++) await reg(u, 'r', `i${i}`);
    const { epoch, revision } = (await call(u, 'GET', '/v1/status')).body;

    const old = await SseReader.open(`${u}/v1/watch?service=r&fromRevision=2`);
    await old.count(1);
    assert.equal(old.events[0]!.event, 'reset');
    assert.deepEqual(old.events[0]!.json, { epoch, revision });
    assert.equal(old.events[0]!.id, undefined, 'no id: a drop before relisting is reset again');

    const retained = await SseReader.open(`${u}/v1/watch?service=r&fromRevision=4`);
    await retained.count(3);
    assert.deepEqual(retained.events.map((e) => e.json.revision), [4, 5, 6]);

    const otherEpoch = await SseReader.open(`${u}/v1/watch?service=r`, { 'last-event-id': 'someotherepoch:3' });
    const otherQuery = await SseReader.open(`${u}/v1/watch?service=r&fromRevision=4&epoch=nope`);
    await otherEpoch.count(1);
    await otherQuery.count(1);
    assert.equal(otherEpoch.events[0]!.event, 'reset');
    assert.equal(otherQuery.events[0]!.event, 'reset');

    await reg(u, 'r', 'i7');
    await old.count(2);
    await otherEpoch.count(2);
    assert.equal(old.events[1]!.json.revision, revision + 1);
    assert.equal(otherEpoch.events[1]!.json.revision, revision + 1);
    for (const r of [old, retained, otherEpoch, otherQuery]) r.close();
  } finally {
    await node.close();
  }
});

test('idle streams get keep-alive comments; shutdown ends streams cleanly', async () => {
  const node = await startNode({ heartbeatMs: 100 });
  const u = node.url;
  const w = await SseReader.open(`${u}/v1/watch`);
  await w.until(() => w.comments >= 3, 3_000, 'keep-alive comments');
  const t0 = Date.now();
  await node.close();
  await w.until(() => w.ended, 3_000, 'end of stream');
  assert.ok(Date.now() - t0 < 3_000);
});

test('a lease expiry reaches watchers with reason lease_expired', async () => {
  const node = await startNode();
  try {
    const u = node.url;
    const w = await SseReader.open(`${u}/v1/watch?service=exp`);
    const lease = (await call(u, 'POST', '/v1/leases', { ttlMs: 1_000 })).body.leaseId;
    await reg(u, 'exp', 'e1', { leaseId: lease });
    await reg(u, 'exp', 'e2', { leaseId: lease });
    await w.count(4, 4_000);
    assert.deepEqual(w.events.slice(2).map((e) => [e.event, e.json.reason, e.json.revision]), [
      ['delete', 'lease_expired', 3],
      ['delete', 'lease_expired', 3],
    ]);
    w.close();
  } finally {
    await node.close();
  }
});

test('streams of other services never see a write; a stream of two services sees both', async () => {
  const node = await startNode();
  try {
    const u = node.url;
    const baseline = node.engine.hub.subscriberCount; // the node's own health monitor
    const a = await SseReader.open(`${u}/v1/watch?service=alpha`);
    const ab = await SseReader.open(`${u}/v1/watch?service=alpha&service=beta`);
    const b = await SseReader.open(`${u}/v1/watch?service=beta`);
    const c = await SseReader.open(`${u}/v1/watch?service=gamma`);
    await call(u, 'POST', '/v1/instances/batch', { instances: [
      { service: 'alpha', id: 'a1', address: '10.0.0.1', port: 1 },
      { service: 'beta', id: 'b1', address: '10.0.0.2', port: 2 },
    ] });
    await reg(u, 'beta', 'b2');
    await ab.count(3);
    await a.count(1);
    await b.count(2);
    await sleep(100);
    assert.deepEqual(a.events.map((e) => e.json.instance.id), ['a1']);
    assert.deepEqual(ab.events.map((e) => e.json.instance.id), ['a1', 'b1', 'b2']);
    assert.deepEqual(b.events.map((e) => e.json.instance.id), ['b1', 'b2']);
    assert.equal(c.events.length, 0);
    assert.equal(ab.events[0]!.id, undefined, 'a1 is not the last event of its revision on this stream');
    for (const r of [a, ab, b, c]) r.close();
    for (let i = 0; i < 100 && node.engine.hub.subscriberCount > baseline; i++) await sleep(20);
    assert.equal(node.engine.hub.subscriberCount, baseline, 'closed streams unsubscribe');
  } finally {
    await node.close();
  }
});

test('a watcher that stops reading is cut off at maxWatchBufferBytes; the others get every event', async () => {
  const node = await startNode({ limits: { maxWatchBufferBytes: 1024 * 1024 } });
  let stalled: Awaited<ReturnType<typeof rawWatch>> | undefined;
  try {
    const u = node.url;
    const reader = await SseReader.open(`${u}/v1/watch?service=slow`);
    stalled = await rawWatch(u, 'slow');
    await waitUntil(() => stalled!.text().includes(': watching'), 3_000, 'the stalled stream open');
    // From here on it reads nothing.
    stalled.socket.pause();
    const cut = async () => /^switchboard_watch_streams_cut_total 1$/m.test(await (await fetch(`${u}/metrics`)).text());
    const big = 'x'.repeat(8 * 1024);
    let writes = 0;
    const deadline = Date.now() + 20_000;
    // The kernel's socket buffers take a few MB before the node queues anything itself.
    // Batches of 20 (about 170 kB a change): well under the limit, so the reading watcher
    // is never cut for one change that its socket has not taken yet.
    while (!(await cut()) && Date.now() < deadline && writes < 1_000) {
      const instances = Array.from({ length: 20 }, (_, i) => ({ service: 'slow', id: `i${i}`, address: '10.0.0.1', port: 80, metadata: { pad: big, n: String(writes) } }));
      assert.equal((await call(u, 'POST', '/v1/instances/batch', { instances })).status, 200);
      writes++;
    }
    assert.ok(await cut(), `the stalled stream was not cut after ${writes} batches of 20 events`);
    assert.ok(writes < 1_000);
    const metrics = await (await fetch(`${u}/metrics`)).text();
    assert.match(metrics, /^switchboard_watch_streams_cut_total 1$/m);
    await reader.count(writes * 20);
    const got = reader.events.map((e) => `${e.json.instance.id}/${e.json.instance.metadata.n}`);
    const want = Array.from({ length: writes }, (_, w) => Array.from({ length: 20 }, (_, i) => `i${i}/${w}`)).flat();
    assert.deepEqual(got, want, 'the reading watcher got every event once, in order');
    assert.equal(reader.ended, false);
    reader.close();
  } finally {
    stalled?.close();
    await node.close();
  }
});

test('an HTTP/1.0 watcher gets the frames as a plain body, an HTTP/1.1 one as chunks of the same frames', async () => {
  const node = await startNode();
  try {
    const old = await rawWatch(node.url, 'old', '1.0');
    const cur = await rawWatch(node.url, 'old');
    await waitUntil(() => old.text().includes(': watching') && cur.text().includes(': watching'), 3_000, 'both streams open');
    // Not only ASCII: a chunk's size counts bytes, not characters.
    for (const id of ['a', 'b']) await reg(node.url, 'old', id, { metadata: { city: 'Zürich €' } });
    const frames = (t: string): string[] => [...t.matchAll(/^data: (.*)$/gm)].map((m) => JSON.parse(m[1] as string).instance.id);
    await waitUntil(() => frames(old.text()).length === 2 && cur.text().includes('"id":"b"'), 3_000, 'both events on both streams', { retryErrors: true });
    const oldBody = old.text().slice(old.text().indexOf('\r\n\r\n') + 4);
    assert.doesNotMatch(old.text(), /transfer-encoding: chunked/i);
    assert.match(oldBody, /^: watching\n\nevent: put\nid: [^\n]+\ndata: [^\n]+\n\nevent: put\nid: [^\n]+\ndata: [^\n]+\n\n$/, 'plain SSE, no chunk sizes');
    assert.match(cur.text(), /transfer-encoding: chunked/i);
    // Unchunked, the HTTP/1.1 body is the same frames.
    let body = cur.text().slice(cur.text().indexOf('\r\n\r\n') + 4);
    let plain = '';
    for (;;) {
      const eol = body.indexOf('\r\n');
      if (eol < 0) break;
      const size = parseInt(body.slice(0, eol), 16);
      plain += body.slice(eol + 2, eol + 2 + size);
      body = body.slice(eol + 2 + size + 2);
    }
    assert.equal(plain, oldBody);
    old.close();
    cur.close();
  } finally {
    await node.close();
  }
});

test('a position past every revision of the epoch gets reset, not a stream that waits for it; HEAD answers at once', async () => {
  const node = await startNode();
  try {
    const u = node.url;
    for (let i = 1; i <= 3; i++) await reg(u, 'ahead', `i${i}`);
    const { epoch, revision } = (await call(u, 'GET', '/v1/status')).body;
    // Positions from a registry since restarted empty (no epoch given, or the same one).
    const byQuery = await SseReader.open(`${u}/v1/watch?service=ahead&fromRevision=${revision + 50}`);
    const byId = await SseReader.open(`${u}/v1/watch?service=ahead`, { 'last-event-id': `${epoch}:${revision + 40}` });
    // The next revision is a position like any other: it waits for it. So is the one after a
    // settings write, which takes a revision without a watch event.
    const next = await SseReader.open(`${u}/v1/watch?service=ahead&fromRevision=${revision + 1}`);
    assert.equal((await call(u, 'PUT', '/v1/services/other/settings', { protectThreshold: 0.5 })).status, 200);
    const afterSettings = (await call(u, 'GET', '/v1/status')).body.revision;
    assert.equal(afterSettings, revision + 1);
    const settled = await SseReader.open(`${u}/v1/watch?service=ahead&fromRevision=${afterSettings + 1}`);
    await byQuery.count(1);
    await byId.count(1);
    assert.equal(byQuery.events[0]!.event, 'reset');
    assert.equal(byId.events[0]!.event, 'reset');
    assert.deepEqual(byQuery.events[0]!.json, { epoch, revision });
    await reg(u, 'ahead', 'i4');
    await byQuery.count(2);
    await byId.count(2);
    await next.count(1);
    await settled.count(1);
    assert.equal(byQuery.events[1]!.json.revision, revision + 2, 'live events after the reset');
    assert.equal(next.events[0]!.event, 'put');
    assert.equal(next.events[0]!.json.revision, revision + 2);
    assert.equal(settled.events[0]!.event, 'put', 'no reset for the position after a settings write');
    for (const r of [byQuery, byId, next, settled]) r.close();

    const head = await fetch(`${u}/v1/watch?service=ahead`, { method: 'HEAD', signal: AbortSignal.timeout(2_000) });
    assert.equal(head.status, 200);
    assert.match(head.headers.get('content-type') ?? '', /^text\/event-stream/);
    let watchers = -1;
    await waitUntil(async () => (watchers = (await call(u, 'GET', '/v1/status')).body.watchers) === 0, 5_000, 'no watch stream left', { detail: () => `watchers ${watchers}` });
    const bad = await fetch(`${u}/v1/watch?service=Not_A_Name`, { method: 'HEAD', signal: AbortSignal.timeout(2_000) });
    assert.equal(bad.status, 400);
  } finally {
    await node.close();
  }
});

test('a watch without service= streams and replays the services of its own namespace only', async () => {
  const node = await startNode();
  try {
    const u = node.url;
    await reg(u, 'orders', 'a0', {});
    await call(u, 'PUT', '/v1/services/orders/instances/t0?namespace=team-a', { address: '10.0.0.1', port: 80 });
    const live = await SseReader.open(`${u}/v1/watch?namespace=team-a`);
    const dflt = await SseReader.open(`${u}/v1/watch`);
    await call(u, 'PUT', '/v1/services/pay/instances/t1?namespace=team-a', { address: '10.0.0.1', port: 80 });
    await call(u, 'PUT', '/v1/services/pay/instances/b1?namespace=team-b', { address: '10.0.0.1', port: 80 });
    await reg(u, 'billing', 'd1');
    await live.count(1);
    await dflt.count(1);
    await sleep(100);
    assert.deepEqual(live.events.map((e) => `${e.json.namespace}/${e.json.instance.id}`), ['team-a/t1']);
    assert.deepEqual(dflt.events.map((e) => `${e.json.namespace}/${e.json.instance.id}`), ['default/d1']);
    const replay = await SseReader.open(`${u}/v1/watch?namespace=team-a&fromRevision=1`);
    await replay.count(2);
    await sleep(100);
    assert.deepEqual(replay.events.map((e) => `${e.json.namespace}/${e.json.instance.id}`), ['team-a/t0', 'team-a/t1']);
    for (const r of [live, dflt, replay]) r.close();
  } finally {
    await node.close();
  }
});

test('a replay larger than maxWatchBufferBytes is a reset (the client relists), and replayed events are counted as sent', async () => {
  const node = await startNode({ limits: { maxWatchBufferBytes: 64 * 1024 } });
  try {
    const u = node.url;
    const note = 'x'.repeat(1000);
    for (let i = 0; i < 100; i++) await reg(u, 'big', `i${i}`, { metadata: { note } });
    const small = await SseReader.open(`${u}/v1/watch?service=big&fromRevision=95`);
    await small.count(6);
    assert.deepEqual(small.events.map((e) => e.event), ['put', 'put', 'put', 'put', 'put', 'put']);
    const metrics = await (await fetch(`${u}/metrics`)).text();
    assert.match(metrics, /^switchboard_watch_events_sent_total 6$/m, 'the replayed events count as sent');
    const large = await SseReader.open(`${u}/v1/watch?service=big&fromRevision=1`);
    await large.count(1);
    assert.equal(large.events[0]?.event, 'reset', 'about 100 KB of replay against a 64 KiB buffer');
    await reg(u, 'big', 'late');
    await large.count(2);
    assert.equal(large.events[1]?.json.instance.id, 'late', 'the stream goes on after the reset');
    small.close();
    large.close();
  } finally {
    await node.close();
  }
});

test('watches and blocking queries pipelined behind another request end when the client closes the connection', async () => {
  const node = await startNode({ limits: { maxWatchStreamsPerClient: 5 } });
  try {
    const u = node.url;
    const status = async () => (await call(u, 'GET', '/v1/status')).body;
    await reg(u, 'slow', 'a');
    const rev = (await call(u, 'GET', '/v1/services/slow')).body.revision;
    const socket = connect(Number(new URL(u).port), '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.once('connect', () => resolve());
    });
    socket.on('data', () => undefined);
    // A blocking query first, then five watches and a blocking query queued behind it.
    let text = `GET /v1/services/slow?index=${rev}&wait=60s HTTP/1.1\r\nhost: t\r\n\r\n`;
    for (let i = 0; i < 5; i++) text += `GET /v1/watch?service=s${i} HTTP/1.1\r\nhost: t\r\naccept: text/event-stream\r\n\r\n`;
    text += `GET /v1/services/slow?index=${rev}&wait=60s HTTP/1.1\r\nhost: t\r\n\r\n`;
    socket.write(text);
    await waitUntil(async () => (await status()).watchers === 5, 5_000, 'five pipelined watches open');
    socket.destroy();
    await waitUntil(async () => (await status()).watchers === 0 && node.engine.hub.waiting === 0, 5_000, 'streams and queries of the closed connection ended');
    const again = await SseReader.open(`${u}/v1/watch?service=slow`);
    again.close();
  } finally {
    await node.close();
  }
});
