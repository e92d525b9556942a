// Goal: an operator removes a member that is gone for good from a cluster of three real
// agent processes (real TCP peer links on 127.0.0.1): its persistent instance is taken over
// by a remaining node and confirmed everywhere, its lease-bound instance is dropped
// everywhere, it leaves every node's member list (its peer_unreachable alert resolves), the API refuses the wrong removals with
// stable codes, the removed node, restarted from its data directory, is refused by the
// others and says why in its log, and a remaining node restarted with --peers still naming
// it keeps it removed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ApCluster, getJson, putJson } from '../support/ap-cluster.js';
import { call, waitUntil } from '../helpers.js';

/** Time for a node to see a dead peer (its links reset at once; missed pings are the fallback), with margin for a loaded machine. */
const DETECT_MS = 15_000;
/** Time for a removal to reach and settle on every node. */
const SETTLE_MS = 15_000;

async function members(url: string): Promise<{ id: string; reachable: boolean; self: boolean }[]> {
  return (await getJson(url, '/v1/status')).cluster.members;
}

/** The subjects of the peer_unreachable alerts active on a node. */
async function unreachableAlerts(url: string): Promise<string[]> {
  const active = ((await getJson(url, '/v1/status')).alerts?.active ?? []) as { alert: string; subject: string }[];
  return active.filter((e) => e.alert === 'peer_unreachable').map((e) => e.subject);
}

async function instance(url: string, service: string, id: string): Promise<any> {
  const r = await call(url, 'GET', `/v1/services/${service}/instances/${id}`);
  return r.status === 200 ? r.body : undefined;
}

test('removing a dead member: its records settled on every node, the member gone, the removed node refused', { timeout: 120_000 }, async (t) => {
  const cl = await ApCluster.start(['a', 'b', 'c'], { durable: true });
  try {
    const [a, b, c] = [cl.node('a'), cl.node('b'), cl.node('c')];
    const meshed = async (url: string) => (await members(url)).filter((m) => !m.self && m.reachable).length === 2;
    await waitUntil(async () => (await meshed(a.url)) && (await meshed(b.url)) && (await meshed(c.url)), DETECT_MS, 'a full mesh', { retryErrors: true });

    // On c: a persistent instance and a lease-bound one.
    assert.equal((await putJson(c.url, '/v1/services/db/instances/kept', { address: '127.0.0.1', port: 5432 })).status, 200);
    const lease = await call(c.url, 'POST', '/v1/leases', { ttlMs: 120_000 });
    assert.equal(lease.status, 201);
    assert.equal((await putJson(c.url, '/v1/services/web/instances/leased', { address: '127.0.0.1', port: 8080, leaseId: lease.body.leaseId })).status, 200);
    await waitUntil(async () => {
      for (const n of [a, b]) if (!(await instance(n.url, 'db', 'kept')) || !(await instance(n.url, 'web', 'leased'))) return false;
      return true;
    }, SETTLE_MS, 'a and b learned the instances of c', { retryErrors: true });

    await cl.kill('c', 'SIGKILL');
    // Flagged while its owner is away (the lease-bound one may also be hidden after the grace).
    await waitUntil(async () => {
      for (const n of [a, b]) {
        if ((await instance(n.url, 'db', 'kept'))?.unconfirmed !== true) return false;
        const leased = await instance(n.url, 'web', 'leased');
        if (leased && leased.unconfirmed !== true) return false;
      }
      return true;
    }, DETECT_MS, 'a and b flag the instances of c', { retryErrors: true });
    await waitUntil(async () => (await unreachableAlerts(a.url)).includes('c'), DETECT_MS, 'peer_unreachable firing for c on a', { retryErrors: true });

    // Wrong removals: stable codes and a hint.
    const reachable = await call(a.url, 'DELETE', '/v1/cluster/members/b');
    assert.equal(reachable.status, 409);
    assert.equal(reachable.body.code, 'MEMBER_REACHABLE');
    assert.match(reachable.body.hint, /stop the node first/);
    const self = await call(a.url, 'DELETE', '/v1/cluster/members/a');
    assert.equal(self.status, 409);
    assert.equal(self.body.code, 'MEMBER_IS_SELF');
    const unknown = await call(a.url, 'DELETE', '/v1/cluster/members/zz');
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.code, 'MEMBER_NOT_FOUND');
    const invalid = await call(a.url, 'DELETE', '/v1/cluster/members/a%20b');
    assert.equal(invalid.status, 400);
    assert.equal(invalid.body.code, 'INVALID_ARGUMENT');
    assert.equal(invalid.body.field, 'id');

    const removed = await call(a.url, 'DELETE', '/v1/cluster/members/c');
    assert.equal(removed.status, 200, JSON.stringify(removed.body));
    assert.equal(removed.body.member, 'c');
    assert.equal(removed.body.dropped, 1);
    assert.equal(removed.body.adopted + removed.body.adoptedElsewhere, 1);
    assert.deepEqual(removed.body.notified, ['b']);
    t.diagnostic(`removal: ${JSON.stringify(removed.body)}`);

    const took = await waitUntil(async () => {
      for (const n of [a, b]) {
        if ((await members(n.url)).some((m) => m.id === 'c')) return false;
        const kept = await instance(n.url, 'db', 'kept');
        if (!kept || kept.unconfirmed !== undefined || (kept.owner !== 'a' && kept.owner !== 'b')) return false;
        if (await instance(n.url, 'web', 'leased')) return false;
      }
      return true;
    }, SETTLE_MS, 'c gone from a and b, its persistent instance adopted and confirmed, its lease-bound one dropped', { retryErrors: true });
    t.diagnostic(`settled on a and b ${took} ms after the removal`);
    await waitUntil(async () => !(await unreachableAlerts(a.url)).includes('c') && !(await unreachableAlerts(b.url)).includes('c'), DETECT_MS, 'peer_unreachable for c resolved on a and b', { retryErrors: true });
    const ownerOnA = (await instance(a.url, 'db', 'kept')).owner;
    assert.equal((await instance(b.url, 'db', 'kept')).owner, ownerOnA, 'one adopter, the same on both');
    assert.deepEqual((await getJson(b.url, '/v1/status')).cluster.removedMembers, ['c']);

    const again = await call(a.url, 'DELETE', '/v1/cluster/members/c');
    assert.equal(again.status, 404);
    assert.equal(again.body.code, 'MEMBER_NOT_FOUND');
    assert.equal((await call(b.url, 'DELETE', '/v1/cluster/members/c')).status, 404, 'b knows too');

    // c comes back from its data directory, with its old --peers: refused, and it says why.
    await cl.startNode('c');
    await waitUntil(() => /was removed from the cluster/.test(cl.node('c').agent?.output() ?? ''), DETECT_MS, 'c logging that it was removed');
    await waitUntil(() => /REMOVED/.test(a.agent?.output() ?? '') && /REMOVED/.test(b.agent?.output() ?? ''), DETECT_MS, 'a and b refusing c');
    const onC = await members(cl.node('c').url);
    assert.ok(onC.every((m) => m.self || !m.reachable), `c linked to a peer: ${JSON.stringify(onC)}`);
    for (const n of [a, b]) {
      assert.ok(!(await members(n.url)).some((m) => m.id === 'c'), `${n.id} lists c again`);
      assert.equal(await instance(n.url, 'web', 'leased'), undefined, `${n.id} shows the lease-bound instance again`);
      assert.equal((await instance(n.url, 'db', 'kept'))?.owner, ownerOnA);
    }

    // a restarts with its old --peers, which still name c: the removal holds, and a says so once.
    await cl.kill('a', 'SIGTERM');
    await cl.startNode('a');
    const log = cl.node('a').agent?.output() ?? '';
    assert.equal(log.match(/--peers names member c, which was removed/g)?.length, 1, log);
    await waitUntil(async () => (await members(cl.node('a').url)).some((m) => m.id === 'b' && m.reachable), DETECT_MS, 'a back with b', { retryErrors: true });
    assert.ok(!(await members(cl.node('a').url)).some((m) => m.id === 'c'));
    assert.deepEqual((await getJson(cl.node('a').url, '/v1/status')).cluster.removedMembers, ['c']);
    assert.equal((await instance(cl.node('a').url, 'db', 'kept'))?.owner, ownerOnA);
    assert.equal(await instance(cl.node('a').url, 'web', 'leased'), undefined);
  } finally {
    await cl.stop();
  }
});
