// Goal: an ap cluster of three real agent processes keeps answering and accepting writes
// on both sides of a real network cut between them (fault proxies on every peer link),
// and converges once the cut heals: every node then answers the same, within a bound.
// Registrations made on each side, and a deregistration made on one side of the cut of a
// record the other side still holds, all end up the same everywhere.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ApCluster, del, getJson, idsOn, putJson, reachablePeers, until } from '../support/ap-cluster.js';

/** Time for a node to see a cut peer as unreachable: peerPingIntervalMs x peerMissedPings is 2 s; margin for a loaded machine. */
const DETECT_MS = 10_000;
/** Convergence after the heal; the target is 2 s, the bound leaves room for a loaded machine. */
const CONVERGE_MS = 15_000;

const inst = (port: number) => ({ address: '127.0.0.1', port });

test('a partitioned ap cluster serves and accepts writes on both sides, and converges after the heal', async (t) => {
  const c = await ApCluster.start(['a', 'b', 'c']);
  try {
    const [a, b, cc] = [c.node('a'), c.node('b'), c.node('c')];
    await until(async () => (await reachablePeers(a.url)).length === 2 && (await reachablePeers(b.url)).length === 2 && (await reachablePeers(cc.url)).length === 2, DETECT_MS, 'a full mesh');

    assert.equal((await putJson(a.url, '/v1/services/pay/instances/before', inst(9000))).status, 200);
    await until(async () => (await idsOn(cc.url, 'pay')).includes('before'), 5_000, 'the first record everywhere');

    c.partition(['a'], ['b', 'c']);
    const detected = await until(async () => (await reachablePeers(a.url)).length === 0 && !(await reachablePeers(b.url)).includes('a'), DETECT_MS, 'the cut seen on both sides');
    t.diagnostic(`cut detected in ${detected.toFixed(0)} ms`);

    // Both sides take writes during the cut.
    assert.equal((await putJson(a.url, '/v1/services/pay/instances/left', inst(9001))).status, 200);
    assert.equal((await putJson(b.url, '/v1/services/pay/instances/right-b', inst(9002))).status, 200);
    assert.equal((await putJson(cc.url, '/v1/services/pay/instances/right-c', inst(9003))).status, 200);
    assert.equal(await del(b.url, '/v1/services/pay/instances/before'), 200);

    // Both sides serve reads: the majority side replicates among itself, the lone node keeps its view.
    const right = JSON.stringify(['right-b', 'right-c']);
    await until(async () => JSON.stringify(await idsOn(b.url, 'pay')) === right && JSON.stringify(await idsOn(cc.url, 'pay')) === right, 5_000, 'b and c agree during the cut');
    assert.deepEqual(await idsOn(a.url, 'pay'), ['before', 'left']);

    const healedAt = performance.now();
    c.heal();
    const want = JSON.stringify(['left', 'right-b', 'right-c']);
    await until(async () => {
      const all = await Promise.all([a, b, cc].map((n) => idsOn(n.url, 'pay')));
      return all.every((ids) => JSON.stringify(ids) === want);
    }, CONVERGE_MS, `every node to answer ${want}`);
    const converged = performance.now() - healedAt;
    t.diagnostic(`converged ${converged.toFixed(0)} ms after the heal`);
    // Same records, not only the same ids: one more look at a field that differs per record.
    const ports = await Promise.all([a, b, cc].map(async (n) => (await getJson(n.url, "/v1/services/pay")).instances.map((i: { port: number }) => i.port).sort()));
    assert.deepEqual(ports, [[9001, 9002, 9003], [9001, 9002, 9003], [9001, 9002, 9003]]);
  } finally {
    await c.stop();
  }
});

test('a node killed and restarted with its data catches up with what was written meanwhile', async (t) => {
  const c = await ApCluster.start(['a', 'b', 'c'], { durable: true });
  try {
    const [a, b] = [c.node('a'), c.node('b')];
    await until(async () => (await reachablePeers(a.url)).length === 2, DETECT_MS, 'a linked');
    for (let i = 0; i < 20; i++) assert.equal((await putJson(a.url, `/v1/services/mail/instances/m${i}`, inst(9100 + i))).status, 200);
    await until(async () => (await idsOn(c.node('c').url, 'mail')).length === 20, 5_000, 'c has the first 20');

    await c.kill('c');
    for (let i = 20; i < 40; i++) assert.equal((await putJson(b.url, `/v1/services/mail/instances/m${i}`, inst(9100 + i))).status, 200);
    for (let i = 0; i < 5; i++) assert.equal(await del(a.url, `/v1/services/mail/instances/m${i}`), 200);

    const restarted = await c.startNode('c');
    const took = await until(async () => (await idsOn(restarted.url, 'mail')).length === 35, CONVERGE_MS, 'c caught up (35 records)');
    t.diagnostic(`restarted node caught up in ${took.toFixed(0)} ms`);
    const ids = await idsOn(restarted.url, 'mail');
    assert.ok(!ids.includes('m0') && ids.includes('m5') && ids.includes('m39'));
    assert.deepEqual(ids, await idsOn(a.url, 'mail'));
  } finally {
    await c.stop();
  }
});

test('a silent cut (bytes stop, nothing is reset) is found by missed pings, and writes on both sides converge after it', async (t) => {
  const c = await ApCluster.start(['a', 'b', 'c']);
  try {
    const [a, b, cc] = [c.node('a'), c.node('b'), c.node('c')];
    await until(async () => (await reachablePeers(a.url)).length === 2 && (await reachablePeers(b.url)).length === 2, DETECT_MS, 'a full mesh');
    c.partition(['a', 'b'], ['c'], 'silent');
    const detected = await until(async () => (await reachablePeers(cc.url)).length === 0 && JSON.stringify(await reachablePeers(a.url)) === '["b"]', DETECT_MS, 'the silent cut seen');
    // Found by missed pings, not by a reset: about peerPingIntervalMs (500) x peerMissedPings (4) after the cut.
    assert.ok(detected >= 1_000, `unreachable after ${detected} ms: too early for missed pings (no reset was sent)`);
    t.diagnostic(`silent cut detected in ${detected.toFixed(0)} ms`);
    assert.equal((await putJson(a.url, '/v1/services/dns/instances/ab', inst(9201))).status, 200);
    assert.equal((await putJson(cc.url, '/v1/services/dns/instances/c', inst(9202))).status, 200);
    await until(async () => JSON.stringify(await idsOn(b.url, 'dns')) === '["ab"]', 5_000, 'b has the write of its side');
    assert.deepEqual(await idsOn(cc.url, 'dns'), ['c']);
    c.heal();
    const took = await until(async () => {
      const all = await Promise.all([a, b, cc].map((n) => idsOn(n.url, 'dns')));
      return all.every((ids) => JSON.stringify(ids) === '["ab","c"]');
    }, CONVERGE_MS, 'every node to answer ab and c');
    t.diagnostic(`converged ${took.toFixed(0)} ms after the heal`);
  } finally {
    await c.stop();
  }
});
