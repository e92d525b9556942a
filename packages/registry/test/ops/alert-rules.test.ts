// Goal: the alert rules open one episode per condition and close it once, over an injected
// clock; webhook delivery retries with capped backoff, keeps order, and is bounded.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AlertMessage, ClusterStatus } from '@switchboard/protocol';
import { ManualClock } from '../../src/core/clock.js';
import { AlertRules, MAX_ALERT_SERVICES, SERVICE_GONE_MS, STORE_SETTLE_MS, retryDelayMs, type AlertInputs, type ServiceObservation } from '../../src/alerts/rules.js';
import { Webhook, displayUrl, type DeliveryResult } from '../../src/alerts/webhooks.js';
import { waitUntil } from '../helpers.js';
import { startReceiver } from './receivers.js';

const T0 = Date.UTC(2026, 0, 1, 12, 0, 0);
const calm: AlertInputs['selfPreservation'] = { state: 'normal', reason: null, since: null, blockedLeases: 0, expiredInWindow: 0, leases: 10, zones: [] };

function rules(): { rules: AlertRules; clock: ManualClock } {
  const clock = new ManualClock(T0);
  let n = 0;
  return { rules: new AlertRules({ clock, newId: () => `ep${++n}` }), clock };
}

const svc = (healthy: number, instances: number, lastRemoval?: ServiceObservation['lastRemoval'], up = instances): ServiceObservation => ({
  namespace: 'default',
  service: 'orders',
  healthy,
  instances,
  up,
  ...(lastRemoval ? { lastRemoval } : {}),
});

test('a service that had a healthy instance fires once when it has none, and resolves once', () => {
  const { rules: r, clock } = rules();
  assert.deepEqual(r.evaluate({ services: [svc(2, 2)], selfPreservation: calm }), []);
  clock.advance(5_000);
  const fired = r.evaluate({ services: [svc(0, 2)], selfPreservation: calm });
  assert.equal(fired.length, 1);
  assert.equal(fired[0]!.status, 'firing');
  const ep = fired[0]!.episode;
  assert.deepEqual([ep.alert, ep.severity, ep.subject, ep.episodeId, ep.startedAt, ep.resolvedAt], ['service_unavailable', 'critical', 'default/orders', 'ep1', new Date(T0 + 5_000).toISOString(), null]);
  assert.equal(ep.details.instances, 2);
  // Still down: nothing new, also when other services change and nothing changes at all.
  assert.deepEqual(r.evaluate({ services: [svc(0, 1)], selfPreservation: calm }), []);
  assert.deepEqual(r.evaluate({ services: [], selfPreservation: calm }), []);
  assert.equal(r.active().length, 1);
  clock.advance(7_000);
  const resolved = r.evaluate({ services: [svc(1, 1)], selfPreservation: calm });
  assert.equal(resolved.length, 1);
  assert.equal(resolved[0]!.status, 'resolved');
  assert.equal(resolved[0]!.episode.episodeId, 'ep1');
  assert.equal(resolved[0]!.episode.startedAt, ep.startedAt);
  assert.equal(resolved[0]!.episode.resolvedAt, new Date(T0 + 12_000).toISOString());
  assert.deepEqual(r.active(), []);
  // A new episode gets a new id.
  assert.equal(r.evaluate({ services: [svc(0, 0, 'connection_lost')], selfPreservation: calm })[0]!.episode.episodeId, 'ep2');
});

test('a service never seen healthy does not fire; a deregistered last instance retires it', () => {
  const { rules: r } = rules();
  assert.deepEqual(r.evaluate({ services: [svc(0, 3)], selfPreservation: calm }), [], 'never healthy');
  r.evaluate({ services: [svc(1, 1)], selfPreservation: calm });
  assert.deepEqual(r.evaluate({ services: [svc(0, 0, 'deregistered')], selfPreservation: calm }), [], 'retired on purpose');
  assert.deepEqual(r.evaluate({ services: [svc(0, 2)], selfPreservation: calm }), [], 'forgotten as healthy once retired');
  r.evaluate({ services: [svc(1, 1)], selfPreservation: calm });
  for (const reason of ['lease_expired', 'lease_revoked', 'connection_lost', 'critical_timeout'] as const) {
    const t = r.evaluate({ services: [svc(0, 0, reason)], selfPreservation: calm });
    assert.equal(t.length, 1, reason);
    assert.equal(t[0]!.episode.details.lastRemoval, reason);
    assert.match(t[0]!.episode.summary, new RegExp(reason));
    assert.equal(r.evaluate({ services: [svc(1, 1)], selfPreservation: calm })[0]!.status, 'resolved');
  }
  // An open episode ends when the service is then retired.
  r.evaluate({ services: [svc(0, 0, 'lease_expired')], selfPreservation: calm });
  const t = r.evaluate({ services: [svc(0, 0, 'deregistered')], selfPreservation: calm });
  assert.equal(t[0]!.status, 'resolved');
  assert.equal((t[0]!.episode.details.resolution as { retired: boolean }).retired, true);
});

test('instances taken out of service on purpose do not fire; critical ones among them do', () => {
  const { rules: r } = rules();
  r.evaluate({ services: [svc(2, 2)], selfPreservation: calm });
  assert.deepEqual(r.evaluate({ services: [svc(0, 2, undefined, 0)], selfPreservation: calm }), [], 'both draining');
  const t = r.evaluate({ services: [svc(0, 2, undefined, 1)], selfPreservation: calm });
  assert.deepEqual(t.map((x) => x.status), ['firing'], 'one is up but critical');
  assert.match(t[0]!.episode.summary, /no healthy instance \(2 registered/);
  assert.deepEqual(r.evaluate({ services: [svc(0, 2, undefined, 0)], selfPreservation: calm }), [], 'stays open while drained');
  assert.deepEqual(r.evaluate({ services: [svc(1, 2, undefined, 1)], selfPreservation: calm }).map((x) => x.status), ['resolved']);
});

test('self-preservation, unreachable peers and an unreachable store are episodes too', () => {
  const { rules: r, clock } = rules();
  const protecting = { ...calm, state: 'protecting', reason: '8 of 10 leases lapsed', blockedLeases: 8, zones: [] } as AlertInputs['selfPreservation'];
  const sp = r.evaluate({ services: [], selfPreservation: protecting });
  assert.deepEqual(sp.map((t) => [t.status, t.episode.alert, t.episode.severity, t.episode.subject]), [['firing', 'self_preservation', 'warning', 'node']]);
  assert.equal(sp[0]!.episode.details.blockedLeases, 8);
  assert.deepEqual(r.evaluate({ services: [], selfPreservation: protecting }), []);
  assert.deepEqual(r.evaluate({ services: [], selfPreservation: calm }).map((t) => t.status), ['resolved']);

  const member = (id: string, reachable: boolean, self = false) => ({ id, address: `127.0.0.1:${id.length}`, self, reachable, lastSeenMs: reachable ? 10 : 9_000 });
  const cluster = (members: ReturnType<typeof member>[], storeReachable?: boolean): ClusterStatus => ({
    members,
    ready: true,
    ...(storeReachable === undefined ? {} : { store: { kind: 'etcd', endpoints: ['http://127.0.0.1:2379'], reachable: storeReachable, leader: null, revision: 1, viewRevision: 1, lagMs: 0, lastContactMs: 1 } }),
  });
  const down = r.evaluate({ services: [], selfPreservation: calm, cluster: cluster([member('n1', false, true), member('n2', false), member('n3', true)], false) });
  assert.deepEqual(down.map((t) => [t.status, t.episode.alert, t.episode.subject]).sort(), [['firing', 'peer_unreachable', 'n2'], ['firing', 'store_unreachable', 'store']], 'self is never a peer');
  assert.deepEqual(r.evaluate({ services: [], selfPreservation: calm, cluster: cluster([member('n1', true, true), member('n2', false), member('n3', false)], false) }).map((t) => [t.status, t.episode.subject]), [['firing', 'n3']]);
  const back = r.evaluate({ services: [], selfPreservation: calm, cluster: cluster([member('n1', true, true), member('n3', true)], true) });
  assert.deepEqual(back.map((t) => [t.status, t.episode.subject, t.episode.details.resolution]).sort(), [
    ['resolved', 'n2', { removed: true }],
    ['resolved', 'n3', { reachable: true }],
  ]);
  // The store resolves once it has stayed reachable for STORE_SETTLE_MS.
  clock.advance(STORE_SETTLE_MS);
  const settled = r.evaluate({ services: [], selfPreservation: calm, cluster: cluster([member('n1', true, true), member('n3', true)], true) });
  assert.deepEqual(settled.map((t) => [t.status, t.episode.subject, t.episode.details.resolution]), [['resolved', 'store', { reachable: true }]]);
  assert.deepEqual(r.active(), []);
});

test('an unreachable store that comes back for a moment stays one episode: it resolves only after STORE_SETTLE_MS reachable', () => {
  const { rules: r, clock } = rules();
  const cluster = (reachable: boolean): ClusterStatus => ({
    members: [{ id: 'n1', address: '127.0.0.1:7700', self: true, reachable: true, lastSeenMs: null }],
    ready: true,
    store: { kind: 'etcd', endpoints: ['http://127.0.0.1:2379'], reachable, leader: null, revision: 1, viewRevision: 1, lagMs: 0, lastContactMs: 1 },
  });
  const at = (reachable: boolean) => r.evaluate({ services: [], selfPreservation: calm, cluster: cluster(reachable) }).map((t) => t.status);
  assert.deepEqual(at(true), [], 'reachable from the start: nothing');
  assert.deepEqual(at(false), ['firing']);
  // Back for a second, then gone again, three times (a flapping etcd): no resolve, no new firing.
  for (let i = 0; i < 3; i++) {
    clock.advance(1_000);
    assert.deepEqual(at(true), [], `back for a moment (${i})`);
    clock.advance(1_000);
    assert.deepEqual(at(false), [], `gone again (${i})`);
  }
  // Back: the settle time counts from the last time it was seen back after a failure.
  clock.advance(1_000);
  assert.deepEqual(at(true), []);
  clock.advance(STORE_SETTLE_MS - 1);
  assert.deepEqual(at(true), [], 'not yet settled');
  clock.advance(1);
  const resolved = r.evaluate({ services: [], selfPreservation: calm, cluster: cluster(true) });
  assert.deepEqual(resolved.map((t) => [t.status, t.episode.episodeId, t.episode.details.resolution]), [['resolved', 'ep1', { reachable: true }]]);
  assert.deepEqual(r.active(), []);
  // A node that leaves cp (no store in its status) ends the episode at once.
  assert.deepEqual(at(false), ['firing']);
  assert.deepEqual(r.evaluate({ services: [], selfPreservation: calm }).map((t) => t.status), ['resolved']);
});

test('a service with no instance at all for SERVICE_GONE_MS is gone: its episode resolves ("gone": true) and it is forgotten', () => {
  const { rules: r, clock } = rules();
  const job = (i: number, healthy: number, instances: number, lastRemoval?: ServiceObservation['lastRemoval']): ServiceObservation => ({ ...svc(healthy, instances, lastRemoval), service: `job-${i}` });
  // 300 short-lived services, each ended by its lease (the SDK's graceful shutdown revokes it).
  r.evaluate({ services: Array.from({ length: 300 }, (_, i) => job(i, 1, 1)), selfPreservation: calm });
  const fired = r.evaluate({ services: Array.from({ length: 300 }, (_, i) => job(i, 0, 0, 'lease_revoked')), selfPreservation: calm });
  assert.equal(fired.filter((t) => t.status === 'firing').length, 300);
  // One that comes back (a redeploy) within the time keeps its episode until it is healthy.
  clock.advance(SERVICE_GONE_MS / 2);
  assert.deepEqual(r.evaluate({ services: [job(0, 0, 1)], selfPreservation: calm }), [], 'back, but critical');
  clock.advance(SERVICE_GONE_MS / 2 - 1);
  assert.deepEqual(r.evaluate({ services: [], selfPreservation: calm }), [], 'not gone yet');
  assert.equal(r.active().length, 300);
  clock.advance(1);
  const gone = r.evaluate({ services: [], selfPreservation: calm });
  assert.equal(gone.length, 299, 'every service without an instance resolves, the one with an instance does not');
  assert.ok(gone.every((t) => t.status === 'resolved' && t.episode.alert === 'service_unavailable'));
  assert.deepEqual(gone[0]!.episode.details.resolution, { instances: 0, gone: true });
  assert.equal(gone[0]!.episode.resolvedAt, new Date(T0 + SERVICE_GONE_MS).toISOString());
  assert.deepEqual(r.active().map((e) => e.subject), ['default/job-0']);
  // Forgotten: seen again without a healthy instance, it does not fire.
  assert.deepEqual(r.evaluate({ services: [job(1, 0, 2)], selfPreservation: calm }), []);
  // The one that came back with a critical instance is not gone however long it stays so.
  clock.advance(SERVICE_GONE_MS * 3);
  assert.deepEqual(r.evaluate({ services: [], selfPreservation: calm }), []);
  assert.deepEqual(r.evaluate({ services: [job(0, 1, 1)], selfPreservation: calm }).map((t) => t.status), ['resolved']);
});

test('the services the rules remember are bounded (MAX_ALERT_SERVICES): the longest empty go first, resolving as gone', () => {
  const { rules: r } = rules();
  const named = (name: string, healthy: number, instances: number, lastRemoval?: ServiceObservation['lastRemoval']): ServiceObservation => ({ ...svc(healthy, instances, lastRemoval), service: name });
  r.evaluate({ services: [named('down', 1, 1)], selfPreservation: calm });
  r.evaluate({ services: [named('down', 0, 0, 'lease_expired')], selfPreservation: calm });
  const many = Array.from({ length: MAX_ALERT_SERVICES }, (_, i) => named(`s-${i}`, 1, 1));
  const t = r.evaluate({ services: many, selfPreservation: calm });
  assert.deepEqual(t.map((x) => [x.status, x.episode.subject, x.episode.details.resolution]), [['resolved', 'default/down', { instances: 0, gone: true }]]);
  // Full of healthy services: the one seen healthy the longest ago is forgotten (no alert when it goes).
  r.evaluate({ services: [named('one-more', 1, 1)], selfPreservation: calm });
  assert.deepEqual(r.evaluate({ services: [named('s-0', 0, 0, 'lease_expired')], selfPreservation: calm }), [], 'forgotten');
  assert.equal(r.evaluate({ services: [named('s-1', 0, 0, 'lease_expired')], selfPreservation: calm }).length, 1, 'still remembered');
});

test('retry delays double from the base and stop at the cap', () => {
  assert.deepEqual([2, 3, 4, 5, 6, 7, 20].map((a) => retryDelayMs(a, 500, 30_000)), [500, 1000, 2000, 4000, 8000, 16000, 30000]);
  assert.equal(displayUrl('https://user:secret@hooks.example:8443/a/b?token=x'), 'https://hooks.example:8443/a/b');
});

const message = (status: 'firing' | 'resolved', episodeId: string): AlertMessage => ({
  version: 1,
  status,
  alert: 'service_unavailable',
  severity: 'critical',
  episodeId,
  subject: 'default/orders',
  summary: 's',
  startedAt: new Date(T0).toISOString(),
  resolvedAt: status === 'resolved' ? new Date(T0 + 1).toISOString() : null,
  details: {},
  node: { id: 'n1', mode: 'standalone' },
  sentAt: '',
});

const fast = { alertDeliveryAttempts: 4, alertMaxPending: 8, alertRetryBaseMs: 20, alertRetryMaxMs: 80, alertWebhookTimeoutMs: 2_000 };

test('a webhook that fails twice gets the message once, in order with the next one', async () => {
  const rx = await startReceiver((n) => (n < 2 ? 503 : 200));
  const results: DeliveryResult[] = [];
  const hook = new Webhook({ url: `${rx.url}/hook`, limits: fast, onResult: (r) => results.push(r) });
  try {
    const started = Date.now();
    hook.send(message('firing', 'e1'));
    hook.send(message('resolved', 'e1'));
    await rx.until((r) => r.length >= 4, 5_000, 'four requests');
    await waitUntil(() => results.length >= 4, 5_000, 'the fourth answer read');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(rx.received.length, 4, 'no request after both were delivered');
    assert.deepEqual(rx.received.map((r) => [r.status, r.body.status]), [[503, 'firing'], [503, 'firing'], [200, 'firing'], [200, 'resolved']]);
    assert.ok(Date.now() - started >= 20 + 40, 'waited the backoff between attempts');
    assert.deepEqual(results, ['retried', 'retried', 'delivered', 'delivered']);
    assert.equal(rx.received[0]!.headers['content-type'], 'application/json');
    assert.ok(!Number.isNaN(Date.parse(rx.received[2]!.body.sentAt)));
    assert.deepEqual({ ...hook.status(), lastDeliveredAt: null }, { url: `${rx.url}/hook`, pending: 0, delivered: 2, failed: 0, dropped: 0, lastError: 'the webhook answered 503', lastDeliveredAt: null });
  } finally {
    hook.close();
    await rx.close();
  }
});

test('delivery gives up after the last attempt, and a full queue drops the oldest waiting message', async () => {
  const rx = await startReceiver(() => 500);
  const results: DeliveryResult[] = [];
  const hook = new Webhook({ url: rx.url, limits: { ...fast, alertDeliveryAttempts: 3, alertMaxPending: 2, alertRetryBaseMs: 50, alertRetryMaxMs: 50 }, onResult: (r) => results.push(r) });
  try {
    hook.send(message('firing', 'a'));
    hook.send(message('firing', 'b'));
    hook.send(message('firing', 'c')); // queue full: b (waiting) is dropped, a (in flight) stays
    assert.deepEqual(results, ['dropped']);
    await rx.until((r) => r.length >= 6, 5_000, 'three attempts of a and of c');
    await waitUntil(() => hook.status().failed === 2, 5_000, 'both given up');
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(rx.received.map((r) => r.body.episodeId), ['a', 'a', 'a', 'c', 'c', 'c']);
    const s = hook.status();
    assert.deepEqual([s.pending, s.delivered, s.failed, s.dropped], [0, 0, 2, 1]);
    assert.equal(results.filter((r) => r === 'failed').length, 2);
  } finally {
    hook.close();
    await rx.close();
  }
});

test('with room for one message, the one in flight is kept and the new one dropped', async () => {
  const rx = await startReceiver();
  const dropped: string[] = [];
  const hook = new Webhook({ url: rx.url, limits: { ...fast, alertMaxPending: 1 }, onResult: (r, m) => r === 'dropped' && dropped.push(m.episodeId) });
  try {
    hook.send(message('firing', 'first'));
    hook.send(message('firing', 'second'));
    await waitUntil(() => hook.status().delivered === 1, 5_000, 'the first delivered');
    assert.deepEqual(dropped, ['second']);
    assert.deepEqual(rx.received.map((r) => r.body.episodeId), ['first']);
    assert.deepEqual([hook.status().pending, hook.status().dropped], [0, 1]);
  } finally {
    hook.close();
    await rx.close();
  }
});

test('an unreachable webhook is retried and reported with the connection error', async () => {
  const rx = await startReceiver();
  const url = rx.url;
  await rx.close(); // nothing listens there any more
  const hook = new Webhook({ url, limits: { ...fast, alertDeliveryAttempts: 2 } });
  try {
    hook.send(message('firing', 'x'));
    await waitUntil(() => hook.status().failed === 1, 5_000, 'the message given up');
    assert.equal(hook.status().failed, 1);
    assert.equal(hook.status().lastError, 'ECONNREFUSED');
  } finally {
    hook.close();
  }
});
