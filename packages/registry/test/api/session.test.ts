// Goal: the session stream keeps one lease alive over one connection; a connection that
// closes without a hand-over ends the lease after the short grace; a hand-over (resume on
// a new connection first) never looks like a crash; silence with an open socket is caught
// by the TTL; bad messages get an error and the session stays.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SessionClient as Client, call, goneWithin, instanceCount, sleep, startNode } from '../helpers.js';


test('keep-alives over the session keep the lease past its TTL; a dropped connection ends it after the grace', async () => {
  const node = await startNode({ limits: { sessionGraceMs: 500 } });
  try {
    const c = await Client.connect(node.url);
    c.send({ type: 'open', ttlMs: 1_000 });
    const lease = await c.next('lease');
    assert.equal(lease.ttlMs, 1_000);
    assert.equal(lease.graceMs, 500);
    assert.equal(lease.epoch, (await call(node.url, 'GET', '/v1/status')).body.epoch);
    await call(node.url, 'PUT', '/v1/services/sess/instances/a', { address: '10.0.0.1', port: 1, leaseId: lease.leaseId });
    for (let seq = 1; seq <= 6; seq++) {
      await sleep(300);
      c.send({ type: 'keepalive', seq });
      assert.equal((await c.next('ack')).seq, seq);
    }
    assert.equal(await instanceCount(node, 'sess'), 1, 'alive after 1.8 s of a 1 s TTL');
    c.ws.terminate(); // the process died: no close message
    const gone = await goneWithin(node, 'sess', 3_000);
    assert.ok(gone >= 0 && gone < 1_000, `gone ${gone} ms after the connection dropped`);
  } finally {
    await node.close();
  }
});

test('a hand-over to a new connection keeps the lease; the old connection is told it was replaced', async () => {
  const node = await startNode({ limits: { sessionGraceMs: 200 } });
  try {
    const a = await Client.connect(node.url);
    a.send({ type: 'open', ttlMs: 5_000 });
    const { leaseId } = await a.next('lease');
    await call(node.url, 'PUT', '/v1/services/handover/instances/h', { address: '10.0.0.1', port: 1, leaseId });
    const b = await Client.connect(node.url);
    b.send({ type: 'resume', leaseId });
    assert.equal((await b.next('lease')).leaseId, leaseId);
    assert.equal((await a.next('replaced')).leaseId, leaseId);
    await sleep(600);
    assert.ok(a.closed);
    assert.equal(await instanceCount(node, 'handover'), 1, 'the old connection closing did not end the lease');
    b.send({ type: 'keepalive', seq: 1 });
    await b.next('ack');
    b.send({ type: 'close', revoke: true });
    assert.ok((await goneWithin(node, 'handover', 1_000)) >= 0, 'close with revoke deregisters at once');
  } finally {
    await node.close();
  }
});

test('silence on an open connection is caught by the TTL, and the session is told', async () => {
  const node = await startNode();
  try {
    const c = await Client.connect(node.url);
    c.send({ type: 'open', ttlMs: 1_000 });
    const { leaseId } = await c.next('lease');
    await call(node.url, 'PUT', '/v1/services/silent/instances/s', { address: '10.0.0.1', port: 1, leaseId });
    const ended = await c.next('ended', 3_000);
    assert.deepEqual(ended, { type: 'ended', leaseId, reason: 'lease_expired' });
    assert.equal(await instanceCount(node, 'silent'), 0);
    c.send({ type: 'keepalive', seq: 9 });
    const noLease = await c.next('error');
    assert.equal(noLease.problem.code, 'INVALID_ARGUMENT', 'no lease any more');
    assert.deepEqual([noLease.request, noLease.seq], ['keepalive', 9], 'the error names the message that failed');
    c.send({ type: 'resume', leaseId });
    assert.equal((await c.next('error')).problem.code, 'LEASE_NOT_FOUND');
  } finally {
    await node.close();
  }
});

test('a close without revoke leaves the lease to its TTL', async () => {
  const node = await startNode({ limits: { sessionGraceMs: 100 } });
  try {
    const c = await Client.connect(node.url);
    c.send({ type: 'open', ttlMs: 2_000 });
    const { leaseId } = await c.next('lease');
    await call(node.url, 'PUT', '/v1/services/detached/instances/d', { address: '10.0.0.1', port: 1, leaseId });
    c.send({ type: 'close', revoke: false });
    await sleep(500);
    assert.equal(await instanceCount(node, 'detached'), 1);
    assert.equal((await call(node.url, 'PUT', `/v1/leases/${leaseId}/keepalive`)).status, 200);
  } finally {
    await node.close();
  }
});

test('bad messages get an error and the session stays usable', async () => {
  const node = await startNode();
  try {
    const c = await Client.connect(node.url);
    for (const bad of ['not json', '[]', '{"type":"dance"}', '{"type":"open","ttlMs":5}', '{"type":"open","ttlMs":"10s"}', '{"type":"resume","leaseId":"../x"}', '{"type":"keepalive","seq":1}']) {
      c.send(bad);
      const err = await c.next('error');
      assert.ok(['INVALID_ARGUMENT', 'LIMIT_EXCEEDED'].includes(err.problem.code), `${bad}: ${err.problem.code}`);
      assert.ok(err.problem.hint, `${bad} has a hint`);
    }
    c.send('x'.repeat(70_000)); // over maxSessionMessageBytes (64 KiB): the socket is closed
    const t0 = Date.now();
    while (!c.closed && Date.now() - t0 < 3_000) await sleep(20);
    assert.ok(c.closed);
    assert.equal(c.closeCode, 1009, 'closed with the code that says the message was too big');
    const d = await Client.connect(node.url);
    d.send({ type: 'open', ttlMs: 5_000 });
    await d.next('lease');
    d.send({ type: 'open', ttlMs: 5_000 });
    assert.equal((await d.next('error')).problem.code, 'INVALID_ARGUMENT');
    assert.equal((await call(node.url, 'GET', '/v1/status')).status, 200);
  } finally {
    await node.close();
  }
});

test('shutdown says goaway and leaves the lease intact', async () => {
  const node = await startNode({ limits: { sessionGraceMs: 100 } });
  const c = await Client.connect(node.url);
  c.send({ type: 'open', ttlMs: 60_000 });
  const { leaseId } = await c.next('lease');
  const lease = node.engine.registry.lease(leaseId)!;
  const before = lease.expiresAt;
  await node.close();
  await c.next('goaway');
  assert.equal(lease.expiresAt, before, 'no grace applied on a node shutdown');
});

test('messages sent together are handled one at a time: five opens grant one lease; a flood is cut off', async () => {
  const node = await startNode({ limits: { sessionGraceMs: 300 } });
  try {
    const leasesBefore = (await call(node.url, 'GET', '/v1/status')).body.leases;
    const c = await Client.connect(node.url);
    for (let i = 0; i < 5; i++) c.send({ type: 'open', ttlMs: 60_000 });
    const lease = await c.next('lease');
    for (let i = 0; i < 4; i++) assert.equal((await c.next('error')).problem.code, 'INVALID_ARGUMENT');
    await sleep(100);
    assert.equal(c.inbox.filter((m) => m.type === 'lease').length, 0, 'no second lease');
    assert.equal((await call(node.url, 'GET', '/v1/status')).body.leases, leasesBefore + 1);
    // The connection drops: its one lease ends after the grace (none is left for its TTL).
    c.ws.terminate();
    const t0 = Date.now();
    while ((await call(node.url, 'GET', '/v1/status')).body.leases !== leasesBefore && Date.now() - t0 < 3_000) await sleep(20);
    assert.equal((await call(node.url, 'GET', '/v1/status')).body.leases, leasesBefore, `lease ${lease.leaseId} ended after the grace`);

    const d = await Client.connect(node.url);
    d.send({ type: 'open', ttlMs: 60_000 });
    await d.next('lease');
    for (let seq = 1; seq <= 500; seq++) d.send({ type: 'keepalive', seq });
    const t1 = Date.now();
    while (!d.closed && Date.now() - t1 < 3_000) await sleep(20);
    assert.ok(d.closed, 'a client that never waits for answers is cut off');
    assert.ok(d.inbox.some((m) => m.type === 'error' && m.problem.code === 'RATE_LIMITED'), JSON.stringify(d.inbox.filter((m) => m.type === 'error').slice(0, 2)));
    assert.equal((await call(node.url, 'GET', '/v1/status')).status, 200);
  } finally {
    await node.close();
  }
});
