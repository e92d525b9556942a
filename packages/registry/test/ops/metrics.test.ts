// Goal: /metrics on a real agent (durable storage) reports what happened, with the right
// values: requests by route and status with their latency histogram, instances and leases
// by namespace and state (the namespaces capped, the rest under "_other"), events published by type and reason, lease ends by reason,
// watch streams, write-ahead-log group commits and the process's own metrics.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SseReader, call } from '../helpers.js';
import { spawnAgent } from '../integration/process.js';
import { parseProm, type PromText } from './prom.js';
import { DEFAULT_LIMITS } from '@switchboard/protocol';
import { build } from '../../src/api/app.js';
import { MAX_METRIC_NAMESPACES, OTHER_NAMESPACES } from '../../src/api/metrics.js';
import { StandaloneEngine } from '../../src/engines/standalone.js';
import { MemoryStorage } from '../../src/storage/storage.js';

async function scrape(url: string): Promise<PromText> {
  const res = await fetch(url + '/metrics');
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  return parseProm(await res.text());
}

const REGISTER = '/v1/services/:service/instances/:instanceId';

test('metrics after registrations, a watch and a lease expiry', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sb-metrics-'));
  const agent = await spawnAgent(['--data-dir', dir]);
  let watch: SseReader | undefined;
  try {
    watch = await SseReader.open(`${agent.url}/v1/watch`);
    const lease = await call(agent.url, 'POST', '/v1/leases', { ttlMs: 3000 });
    assert.equal(lease.status, 201);
    const leaseId = lease.body.leaseId as string;
    for (const id of ['o1', 'o2']) {
      assert.equal((await call(agent.url, 'PUT', `/v1/services/orders/instances/${id}`, { address: '10.0.0.1', port: 8080, leaseId })).status, 200);
    }
    assert.equal((await call(agent.url, 'PUT', '/v1/services/db/instances/d1?namespace=ops', { address: '10.0.0.2', port: 5432 })).status, 200);
    assert.equal((await call(agent.url, 'PUT', '/v1/services/db/instances/d1/status?namespace=ops', { status: 'draining' })).status, 200);
    assert.equal((await call(agent.url, 'GET', '/v1/services/nope')).status, 200);
    await watch.count(2);

    const before = await scrape(agent.url);
    assert.equal(before.value('switchboard_namespace_instances', { namespace: 'default', health: 'passing', status: 'up' }), 2);
    assert.equal(before.value('switchboard_namespace_instances', { namespace: 'ops', health: 'passing', status: 'draining' }), 1);
    assert.equal(before.value('switchboard_namespace_leases', { namespace: 'default', state: 'active' }), 1);
    assert.equal(before.value('switchboard_instances'), 3, 'the unlabelled total is kept');
    assert.equal(before.value('switchboard_leases'), 1);
    assert.equal(before.value('switchboard_watch_streams'), 1);

    // The lease is not kept alive: both of its instances go, announced as deletes.
    await watch.until(() => watch!.events.filter((e) => e.json.type === 'delete').length === 2, 15_000, 'two deletes');
    const m = await scrape(agent.url);

    assert.equal(m.types.get('switchboard_http_requests_total'), 'counter');
    assert.equal(m.types.get('switchboard_http_request_duration_seconds'), 'histogram');
    assert.equal(m.value('switchboard_http_requests_total', { method: 'PUT', route: REGISTER, status: '200' }), 3);
    assert.equal(m.value('switchboard_http_requests_total', { method: 'POST', route: '/v1/leases', status: '201' }), 1);
    assert.equal(m.value('switchboard_http_requests_total', { method: 'GET', route: '/v1/services/:service', status: '200' }), 1);
    assert.equal(m.value('switchboard_http_requests_total', { method: 'GET', route: '/metrics', status: '200' }), 1, 'the first scrape');
    const buckets = m.find('switchboard_http_request_duration_seconds_bucket', { method: 'PUT', route: REGISTER });
    assert.equal(buckets.length, 11);
    for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i]!.value >= buckets[i - 1]!.value, 'buckets are cumulative');
    assert.equal(m.value('switchboard_http_request_duration_seconds_bucket', { method: 'PUT', route: REGISTER, le: '+Inf' }), 3);
    assert.equal(m.value('switchboard_http_request_duration_seconds_count', { method: 'PUT', route: REGISTER }), 3);
    const sum = m.value('switchboard_http_request_duration_seconds_sum', { method: 'PUT', route: REGISTER });
    assert.ok(sum > 0 && sum < 3 * 5, `latency sum ${sum}`);
    assert.equal(m.find('switchboard_http_request_duration_seconds_count', { route: '/v1/watch' }).length, 0, 'streams are not timed');
    assert.equal(m.value('switchboard_http_requests_total', { method: 'GET', route: '/v1/watch', status: '200' }), 1, 'a stream is counted when it opens');

    assert.equal(m.value('switchboard_events_published_total', { type: 'put', reason: 'registered' }), 3);
    assert.equal(m.value('switchboard_events_published_total', { type: 'put', reason: 'status_changed' }), 1);
    assert.equal(m.value('switchboard_events_published_total', { type: 'delete', reason: 'lease_expired' }), 2);
    assert.equal(m.value('switchboard_events_published_total', { type: 'delete', reason: 'deregistered' }), 0);
    assert.equal(m.sum('switchboard_events_published_total'), 6);
    assert.equal(m.value('switchboard_lease_ends_total', { reason: 'lease_expired' }), 1);
    assert.equal(m.value('switchboard_lease_ends_total', { reason: 'lease_revoked' }), 0);

    assert.equal(m.sum('switchboard_namespace_instances', { namespace: 'default' }), 0);
    assert.equal(m.value('switchboard_namespace_instances', { namespace: 'ops', health: 'passing', status: 'draining' }), 1);
    assert.equal(m.sum('switchboard_namespace_leases'), 0);
    assert.equal(m.value('switchboard_instances'), 1);
    assert.equal(m.value('switchboard_watch_streams'), 1);
    assert.equal(m.value('switchboard_watch_events_sent_total'), watch.events.length, 'every event the stream was sent');
    assert.equal(watch.events.length, 4, 'the watch without service= saw the four events of its namespace (default), not those of ops');
    assert.equal(m.value('switchboard_self_preservation_engaged'), 0);

    // Six records reached the log (lease, three registrations, the status, the expiry),
    // in at least one and at most six group commits, each with one fsync.
    const commits = m.value('switchboard_wal_fsync_duration_seconds_count');
    assert.ok(commits >= 1 && commits <= 6, `${commits} group commits`);
    assert.equal(m.value('switchboard_wal_batch_records_count'), commits);
    assert.equal(m.value('switchboard_wal_batch_records_sum'), 6);
    assert.equal(m.value('switchboard_wal_fsync_duration_seconds_bucket', { le: '+Inf' }), commits);
    assert.ok(m.value('switchboard_wal_fsync_duration_seconds_sum') > 0);
    assert.ok(m.value('switchboard_wal_written_bytes_total') > 6 * 20);

    assert.ok(m.value('switchboard_process_process_resident_memory_bytes') > 10 * 1024 * 1024);
    assert.ok(m.find('switchboard_process_nodejs_eventloop_lag_seconds').length === 1);
  } finally {
    watch?.close();
    agent.child.kill('SIGKILL');
    await agent.exited;
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the namespace series are capped: the MAX_METRIC_NAMESPACES namespaces with the most instances, the rest summed under "_other"', async () => {
  const engine = await StandaloneEngine.open({ nodeId: 't', storage: new MemoryStorage(), limits: DEFAULT_LIMITS, clock: { now: () => performance.now() } });
  const app = await build({ engine, limits: DEFAULT_LIMITS, version: 'test', dashboardDir: null });
  try {
    const put = async (ns: string, id: string, leaseId?: string): Promise<void> => {
      const res = await app.inject({ method: 'PUT', url: `/v1/services/web/instances/${id}?namespace=${ns}`, headers: { 'content-type': 'application/json' }, payload: JSON.stringify({ address: '10.0.0.1', port: 80, ...(leaseId ? { leaseId } : {}) }) });
      assert.equal(res.statusCode, 200, res.body);
    };
    const lease = async (): Promise<string> => JSON.parse((await app.inject({ method: 'POST', url: '/v1/leases', headers: { 'content-type': 'application/json' }, payload: '{"ttlMs":30000}' })).body).leaseId;
    // MAX_METRIC_NAMESPACES namespaces of two instances and 5 of one: the 5 are folded.
    const ns = (i: number): string => `ns-${String(i).padStart(3, '0')}`;
    for (let i = 0; i < MAX_METRIC_NAMESPACES; i++) for (const id of ['a', 'b']) await put(ns(i), id);
    const small = await lease();
    for (let i = MAX_METRIC_NAMESPACES; i < MAX_METRIC_NAMESPACES + 5; i++) await put(ns(i), 'a', small);
    const big = await lease();
    await put(ns(0), 'c', big);
    const m = parseProm((await app.inject({ method: 'GET', url: '/metrics' })).body);
    const labels = (name: string): Set<string> => new Set(m.find(name).map((s) => s.labels.namespace as string));
    const instances = labels('switchboard_namespace_instances');
    assert.equal(instances.size, MAX_METRIC_NAMESPACES + 1);
    assert.ok(instances.has(OTHER_NAMESPACES) && instances.has(ns(0)) && instances.has(ns(MAX_METRIC_NAMESPACES - 1)) && !instances.has(ns(MAX_METRIC_NAMESPACES)));
    assert.equal(m.sum('switchboard_namespace_instances', { namespace: OTHER_NAMESPACES }), 5);
    assert.equal(m.value('switchboard_namespace_instances', { namespace: ns(0), health: 'passing', status: 'up' }), 3);
    assert.equal(m.sum('switchboard_namespace_instances'), MAX_METRIC_NAMESPACES * 2 + 6, 'the sum is every instance');
    // A lease with instances in five folded namespaces counts once under "_other".
    assert.deepEqual([...labels('switchboard_namespace_leases')].sort(), [OTHER_NAMESPACES, ns(0)].sort());
    assert.equal(m.value('switchboard_namespace_leases', { namespace: OTHER_NAMESPACES, state: 'active' }), 1);
    assert.equal(m.value('switchboard_namespace_leases', { namespace: ns(0), state: 'active' }), 1);
  } finally {
    await app.shutdown();
    await engine.close();
  }
});
