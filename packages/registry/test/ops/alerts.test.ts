// Goal: a real agent with an alert webhook. When the provider process of a service's last
// instance is killed (SIGKILL), the webhook gets exactly one firing message, even though
// it fails the first two attempts; when the instance registers again, exactly one resolved
// message of the same episode. /v1/status and /metrics show the alert and the deliveries.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { call, sleep } from '../helpers.js';
import { spawnAgent, spawnProvider, type ProviderProcess } from '../integration/process.js';
import { parseProm } from './prom.js';
import { startReceiver } from './receivers.js';

test('killing the last instance fires one alert, re-registering resolves it, through a flaky webhook', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sb-alerts-'));
  const rx = await startReceiver((n) => (n < 2 ? 500 : 204));
  const config = join(dir, 'config.json');
  writeFileSync(config, JSON.stringify({ limits: { alertRetryBaseMs: 100, alertRetryMaxMs: 400, alertEvaluateIntervalMs: 200 } }));
  const agent = await spawnAgent(['--dev', '--node-id', 'alert-node', '--config', config, '--alert-webhooks', `${rx.url}/hooks/switchboard`]);
  const providers: ProviderProcess[] = [];
  try {
    const p1 = await spawnProvider(agent.url, 'orders', 'o1', { ttlMs: 2_000, everyMs: 500 });
    providers.push(p1);
    await sleep(600); // evaluated at least once with a healthy instance
    assert.equal(rx.received.length, 0, 'nothing to report while the service is healthy');

    p1.child.kill('SIGKILL');
    const killedAt = Date.now();
    // The session's grace runs out (0.5 s), the instance goes (connection_lost), the next
    // evaluation fires, and the third attempt (after 100 + 200 ms of backoff) is accepted.
    await rx.until((r) => r.some((x) => x.status === 204), 10_000, 'the firing message accepted');
    const firingMs = Date.now() - killedAt;
    assert.ok(firingMs < 8_000, `fired ${firingMs} ms after the kill`);
    assert.deepEqual(rx.received.map((r) => [r.status, r.body.status]), [[500, 'firing'], [500, 'firing'], [204, 'firing']]);
    const firing = rx.received[2]!.body;
    assert.ok(rx.received.every((r) => r.path === '/hooks/switchboard' && r.body.episodeId === firing.episodeId), 'one episode, retried');
    assert.equal(firing.version, 1);
    assert.equal(firing.alert, 'service_unavailable');
    assert.equal(firing.severity, 'critical');
    assert.equal(firing.subject, 'default/orders');
    assert.equal(firing.resolvedAt, null);
    assert.equal(firing.details.lastRemoval, 'connection_lost');
    assert.deepEqual(firing.node, { id: 'alert-node', mode: 'standalone' });
    assert.ok(Date.parse(firing.startedAt) >= killedAt - 1_000 && Date.parse(firing.startedAt) <= Date.now());

    // The receiver records a request before it answers: the node counts it once it has read the answer.
    let during = await call(agent.url, 'GET', '/v1/status');
    for (let i = 0; i < 50 && during.body.alerts.webhooks[0].delivered < 1; i++) {
      await sleep(100);
      during = await call(agent.url, 'GET', '/v1/status');
    }
    assert.deepEqual(during.body.alerts.active.map((a: { alert: string; episodeId: string }) => [a.alert, a.episodeId]), [['service_unavailable', firing.episodeId]]);
    assert.deepEqual(during.body.alerts.webhooks, [{ url: `${rx.url}/hooks/switchboard`, pending: 0, delivered: 1, failed: 0, dropped: 0, lastError: 'the webhook answered 500', lastDeliveredAt: during.body.alerts.webhooks[0].lastDeliveredAt }]);

    await sleep(700);
    assert.equal(rx.received.length, 3, 'no second firing message while the service stays down');

    providers.push(await spawnProvider(agent.url, 'orders', 'o1', { ttlMs: 2_000, everyMs: 500 }));
    await rx.until((r) => r.length >= 4, 10_000, 'the resolved message');
    await sleep(700);
    assert.equal(rx.received.length, 4, 'exactly one resolved message');
    const resolved = rx.received[3]!;
    assert.equal(resolved.status, 204);
    assert.equal(resolved.body.status, 'resolved');
    assert.equal(resolved.body.episodeId, firing.episodeId);
    assert.equal(resolved.body.startedAt, firing.startedAt);
    assert.ok(Date.parse(resolved.body.resolvedAt) >= Date.parse(firing.startedAt));

    let after = await call(agent.url, 'GET', '/v1/status');
    for (let i = 0; i < 50 && after.body.alerts.webhooks[0].delivered < 2; i++) {
      await sleep(100);
      after = await call(agent.url, 'GET', '/v1/status');
    }
    assert.deepEqual(after.body.alerts.active, []);
    assert.equal(after.body.alerts.webhooks[0].delivered, 2);
    const m = parseProm(await (await fetch(`${agent.url}/metrics`)).text());
    assert.equal(m.value('switchboard_alerts_fired_total', { alert: 'service_unavailable' }), 1);
    assert.equal(m.value('switchboard_alerts_active', { alert: 'service_unavailable' }), 0);
    assert.equal(m.value('switchboard_alert_deliveries_total', { result: 'delivered' }), 2);
    assert.equal(m.value('switchboard_alert_deliveries_total', { result: 'retried' }), 2);
    assert.equal(m.value('switchboard_alert_deliveries_total', { result: 'failed' }), 0);
    assert.equal(m.value('switchboard_alert_deliveries_pending'), 0);
    assert.match(agent.output(), /alert firing: service default\/orders has no instance left/);
  } finally {
    for (const p of providers) p.child.kill('SIGKILL');
    agent.child.kill('SIGKILL');
    await agent.exited;
    await rx.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('revoking the lease of the last instance fires too; a deregistered service is retired', async () => {
  const rx = await startReceiver();
  const agent = await spawnAgent(['--dev', '--alert-webhooks', rx.url]);
  try {
    const lease = (await call(agent.url, 'POST', '/v1/leases', { ttlMs: 30_000 })).body.leaseId as string;
    assert.equal((await call(agent.url, 'PUT', '/v1/services/pay/instances/p1?namespace=shop', { address: '10.0.0.1', port: 1, leaseId: lease })).status, 200);
    await sleep(1_300);
    assert.equal((await call(agent.url, 'DELETE', `/v1/leases/${lease}`)).status, 200);
    await rx.until((r) => r.length >= 1, 5_000, 'the firing message');
    assert.equal(rx.received[0]!.body.subject, 'shop/pay');
    assert.equal(rx.received[0]!.body.details.lastRemoval, 'lease_revoked');
    // A deliberately deregistered service is retired, not down.
    assert.equal((await call(agent.url, 'PUT', '/v1/services/cart/instances/c1', { address: '10.0.0.1', port: 1 })).status, 200);
    await sleep(1_300);
    assert.equal((await call(agent.url, 'DELETE', '/v1/services/cart/instances/c1')).status, 200);
    await sleep(1_300);
    assert.deepEqual(rx.received.map((r) => [r.body.status, r.body.subject]), [['firing', 'shop/pay']]);
  } finally {
    agent.child.kill('SIGKILL');
    await agent.exited;
    await rx.close();
  }
});
