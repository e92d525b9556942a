// Goal: the node's alerts follow the engine's cluster status: an unreachable peer and an
// unreachable etcd each fire once and resolve once (the store once it has settled), reach the webhook in order, and show
// in /v1/status while active.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_LIMITS, type ClusterStatus } from '@switchboard/protocol';
import pino from 'pino';
import { Alerts } from '../../src/alerts/index.js';
import { STORE_SETTLE_MS } from '../../src/alerts/rules.js';
import { build } from '../../src/api/app.js';
import { StandaloneEngine } from '../../src/engines/standalone.js';
import { MemoryStorage } from '../../src/storage/storage.js';
import { call, sleep } from '../helpers.js';
import { startReceiver } from './receivers.js';

test('an unreachable peer and an unreachable store fire once and resolve once', async () => {
  const rx = await startReceiver();
  const limits = { ...DEFAULT_LIMITS, alertEvaluateIntervalMs: 50 };
  const engine = await StandaloneEngine.open({ nodeId: 'n1', storage: new MemoryStorage(), limits, clock: { now: () => performance.now() } });
  let cluster: ClusterStatus = {
    ready: true,
    members: [
      { id: 'n1', address: '127.0.0.1:7701', self: true, reachable: true, lastSeenMs: 0 },
      { id: 'n2', address: '127.0.0.1:7702', self: false, reachable: true, lastSeenMs: 20 },
    ],
    store: { kind: 'etcd', endpoints: ['http://127.0.0.1:2379'], reachable: true, leader: '1', revision: 5, viewRevision: 5, lagMs: 0, lastContactMs: 10 },
  };
  // The standalone engine stands in for a clustered one: only cluster() matters here.
  (engine as unknown as { cluster: () => ClusterStatus }).cluster = () => cluster;
  // A wall clock the test moves on: the store resolves only after STORE_SETTLE_MS back.
  let offset = 0;
  const alerts = new Alerts({ engine, webhooks: [`${rx.url}/a`], limits, logger: pino({ level: 'silent' }), clock: { now: () => Date.now() + offset } });
  const app = await build({ engine, limits, version: 'test', alerts });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  try {
    await sleep(200);
    assert.equal(rx.received.length, 0);
    cluster = { ...cluster, members: [cluster.members[0]!, { ...cluster.members[1]!, reachable: false, lastSeenMs: 4_000 }], store: { ...cluster.store!, reachable: false } };
    await rx.until((r) => r.length >= 2, 5_000, 'two firing messages');
    const status = (await call(url, 'GET', '/v1/status')).body;
    assert.deepEqual(status.alerts.active.map((a: { alert: string; subject: string }) => `${a.alert}:${a.subject}`).sort(), ['peer_unreachable:n2', 'store_unreachable:store']);
    await sleep(300);
    assert.equal(rx.received.length, 2, 'once per episode');
    const peer = rx.received.find((r) => r.body.alert === 'peer_unreachable')!.body;
    assert.deepEqual([peer.status, peer.severity, peer.details.member, peer.details.address, peer.node.id], ['firing', 'warning', 'n2', '127.0.0.1:7702', 'n1']);
    assert.equal(rx.received.find((r) => r.body.alert === 'store_unreachable')!.body.severity, 'critical');

    cluster = { ...cluster, members: [cluster.members[0]!, { ...cluster.members[1]!, reachable: true }], store: { ...cluster.store!, reachable: true } };
    await rx.until((r) => r.length >= 3, 5_000, 'the peer resolved');
    await sleep(300);
    assert.deepEqual(rx.received.slice(2).map((r) => [r.body.status, r.body.alert]), [['resolved', 'peer_unreachable']], 'the store not yet: it has not settled');
    offset += STORE_SETTLE_MS;
    await rx.until((r) => r.length >= 4, 5_000, 'two resolved messages');
    await sleep(300);
    assert.equal(rx.received.length, 4);
    for (const r of rx.received.slice(2)) {
      const firing = rx.received.find((f) => f.body.status === 'firing' && f.body.alert === r.body.alert)!;
      assert.equal(r.body.status, 'resolved');
      assert.equal(r.body.episodeId, firing.body.episodeId);
      assert.deepEqual(r.body.details.resolution, { reachable: true });
    }
    assert.deepEqual((await call(url, 'GET', '/v1/status')).body.alerts.active, []);
  } finally {
    alerts.close();
    await app.shutdown();
    await engine.close();
    await rx.close();
  }
});
