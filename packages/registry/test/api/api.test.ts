// Goal: the REST API v1 behaves as api-v1.md says for a user on a real socket:
// registration with leases, listing with filters, ETags, blocking queries, lease expiry
// within TTL + 1 s, and the OpenAPI document.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { call, sleep, startNode, type TestNode } from '../helpers.js';

let node: TestNode;
before(async () => {
  node = await startNode();
});
after(async () => {
  await node.close();
});

test('three instances (two on one lease, one persistent) can be listed and filtered', async () => {
  const u = node.url;
  const lease = await call(u, 'POST', '/v1/leases', { ttlMs: 30_000 });
  assert.equal(lease.status, 201);
  assert.equal(lease.body.ttlMs, 30_000);
  const leaseId = lease.body.leaseId as string;
  const r1 = await call(u, 'PUT', '/v1/services/catalog/instances/c1', { address: '10.0.0.1', port: 8080, leaseId, zone: 'eu-1', version: '1.2.0', tags: ['primary', 'v1'] });
  const r2 = await call(u, 'PUT', '/v1/services/catalog/instances/c2', { address: '10.0.0.2', port: 8080, leaseId, zone: 'eu-2', version: '2.0.0', tags: ['v2'] });
  const r3 = await call(u, 'PUT', '/v1/services/catalog/instances/c3', { address: 'c3.internal', port: 9090, zone: 'eu-1', version: '1.4.1', tags: ['primary'], metadata: { build: '7' } });
  assert.deepEqual([r1.status, r2.status, r3.status], [200, 200, 200]);
  assert.ok(r1.body.revision < r2.body.revision && r2.body.revision < r3.body.revision);

  const all = await call(u, 'GET', '/v1/services/catalog');
  assert.equal(all.status, 200);
  assert.deepEqual(all.body.instances.map((i: any) => i.id), ['c1', 'c2', 'c3']);
  assert.equal(all.body.revision, r3.body.revision);
  assert.equal(all.headers.get('x-switchboard-index'), String(r3.body.revision));
  assert.equal(all.body.epoch, (await call(u, 'GET', '/v1/status')).body.epoch, 'the answer names its epoch');
  const c3 = all.body.instances[2];
  assert.deepEqual(c3, {
    id: 'c3', service: 'catalog', namespace: 'default', address: 'c3.internal', port: 9090, protocol: 'http', zone: 'eu-1', version: '1.4.1',
    tags: ['primary'], metadata: { build: '7' }, weight: 100, status: 'up', health: 'passing', checks: [], leaseId: null,
    createRevision: r3.body.revision, modRevision: r3.body.revision,
  });

  const ids = async (q: string) => (await call(u, 'GET', `/v1/services/catalog?${q}`)).body.instances.map((i: any) => i.id);
  assert.deepEqual(await ids('zone=eu-1'), ['c1', 'c3']);
  assert.deepEqual(await ids('tag=primary'), ['c1', 'c3']);
  assert.deepEqual(await ids('tag=primary&tag=v1'), ['c1']);
  assert.deepEqual(await ids('version=%5E1.0.0'), ['c1', 'c3']);
  assert.deepEqual(await ids('version=>=1.3 <3'), ['c2', 'c3']);
  await call(u, 'PUT', '/v1/services/catalog/instances/c2/status', { status: 'draining' });
  assert.deepEqual(await ids('healthy=true'), ['c1', 'c3']);
  assert.deepEqual(await ids('healthy=true&zone=eu-1&tag=primary&version=1.x'), ['c1', 'c3']);

  const list = await call(u, 'GET', '/v1/services');
  const cat = list.body.services.find((s: any) => s.name === 'catalog');
  assert.deepEqual({ instances: cat.instances, passing: cat.passing }, { instances: 3, passing: 2 });

  const unknown = await call(u, 'GET', '/v1/services/nothing-here');
  assert.equal(unknown.status, 200);
  assert.deepEqual(unknown.body.instances, []);

  const one = await call(u, 'GET', '/v1/services/catalog/instances/c2');
  assert.equal(one.body.status, 'draining');
  const revoked = await call(u, 'DELETE', `/v1/leases/${leaseId}`);
  assert.equal(revoked.status, 200);
  assert.deepEqual(await ids(''), ['c3']);
  assert.equal((await call(u, 'PUT', `/v1/leases/${leaseId}/keepalive`)).body.code, 'LEASE_NOT_FOUND');
});

test('fields= answers only the chosen instance fields (id always), filters and caches per projection, and names a wrong field', async () => {
  const u = node.url;
  await call(u, 'PUT', '/v1/services/proj/instances/p2', { address: '10.0.9.2', port: 82, zone: 'z2', tags: ['t'] });
  await call(u, 'PUT', '/v1/services/proj/instances/p1', { address: '10.0.9.1', port: 81, zone: 'z1', metadata: { m: '1' } });
  const get = (q: string) => call(u, 'GET', `/v1/services/proj?${q}`);
  const ep = await get('fields=address,port');
  assert.equal(ep.status, 200);
  assert.deepEqual(ep.body.instances, [
    { id: 'p1', address: '10.0.9.1', port: 81 },
    { id: 'p2', address: '10.0.9.2', port: 82 },
  ]);
  const full = await get('');
  assert.equal(ep.body.revision, full.body.revision);
  assert.equal(ep.headers.get('etag'), full.headers.get('etag'), 'the same revision: the same ETag');
  assert.equal(full.body.instances[0].metadata.m, '1', 'a projection does not change the full answer cached beside it');
  // Repeated or comma-separated, in any order, with spaces or duplicates: the answers' order.
  assert.deepEqual((await get('fields=port&fields=%20zone,id,port')).body.instances, [{ id: 'p1', port: 81, zone: 'z1' }, { id: 'p2', port: 82, zone: 'z2' }]);
  assert.deepEqual((await get('fields=metadata&zone=z1')).body.instances, [{ id: 'p1', metadata: { m: '1' } }], 'filters apply before the projection');
  assert.deepEqual((await get('fields=')).body, full.body, 'an empty projection is the full answer');
  // A change is seen through the projection too (the cache is per revision).
  await call(u, 'PUT', '/v1/services/proj/instances/p1', { address: '10.0.9.11', port: 81, zone: 'z1', metadata: { m: '1' } });
  assert.equal((await get('fields=address')).body.instances[0].address, '10.0.9.11');
  const bad = await get('fields=address,adress');
  assert.equal(bad.status, 400);
  assert.equal(bad.body.code, 'INVALID_ARGUMENT');
  assert.equal(bad.body.field, 'fields');
  assert.match(bad.body.detail, /"adress"/);
  assert.match(bad.body.hint, /did you mean address\?/);
  assert.match(bad.body.hint, /modRevision/, 'the hint lists the fields to choose from');
});

test('namespaces separate services of the same name', async () => {
  const u = node.url;
  await call(u, 'PUT', '/v1/services/billing/instances/b1?namespace=team-a', { address: '10.1.0.1', port: 1 });
  await call(u, 'PUT', '/v1/services/billing/instances/b2?namespace=team-b', { address: '10.1.0.2', port: 2 });
  const a = await call(u, 'GET', '/v1/services/billing?namespace=team-a');
  assert.deepEqual(a.body.instances.map((i: any) => [i.id, i.namespace]), [['b1', 'team-a']]);
  const d = await call(u, 'GET', '/v1/services/billing');
  assert.deepEqual(d.body.instances, []);
  const list = await call(u, 'GET', '/v1/services?namespace=team-b');
  assert.deepEqual(list.body.services.map((s: any) => s.name), ['billing']);
});

test('re-sending an identical registration answers the same modRevision and makes no change', async () => {
  const u = node.url;
  const body = { address: '10.2.0.1', port: 80, tags: ['a'] };
  const first = await call(u, 'PUT', '/v1/services/idem/instances/i1', body);
  const before = (await call(u, 'GET', '/v1/status')).body.revision;
  const again = await call(u, 'PUT', '/v1/services/idem/instances/i1', body);
  assert.equal(again.body.revision, first.body.revision);
  assert.equal((await call(u, 'GET', '/v1/status')).body.revision, before);
});

test('ETag and If-None-Match answer 304 until the service changes', async () => {
  const u = node.url;
  await call(u, 'PUT', '/v1/services/etag/instances/e1', { address: '10.3.0.1', port: 80 });
  const first = await call(u, 'GET', '/v1/services/etag');
  const etag = first.headers.get('etag')!;
  assert.match(etag, /^".+\.\d+"$/);
  const same = await call(u, 'GET', '/v1/services/etag', undefined, { 'if-none-match': etag });
  assert.equal(same.status, 304);
  await call(u, 'PUT', '/v1/services/etag/instances/e2', { address: '10.3.0.2', port: 80 });
  const changed = await call(u, 'GET', '/v1/services/etag', undefined, { 'if-none-match': etag });
  assert.equal(changed.status, 200);
  assert.notEqual(changed.headers.get('etag'), etag);
  const inst = await call(u, 'GET', '/v1/services/etag/instances/e1');
  assert.equal((await call(u, 'GET', '/v1/services/etag/instances/e1', undefined, { 'if-none-match': inst.headers.get('etag')! })).status, 304);
});

test('a blocking query returns as soon as the service changes, and at the end of its wait otherwise', async () => {
  const u = node.url;
  const w = await call(u, 'PUT', '/v1/services/blocking/instances/x1', { address: '10.4.0.1', port: 80 });
  const index = w.body.revision as number;
  let t0 = Date.now();
  const timedOut = await call(u, 'GET', `/v1/services/blocking?index=${index}&wait=300ms`);
  const waited = Date.now() - t0;
  assert.ok(waited >= 280 && waited < 2_000, `waited ${waited} ms`);
  assert.equal(timedOut.headers.get('x-switchboard-index'), String(index));

  t0 = Date.now();
  const pending = call(u, 'GET', `/v1/services/blocking?index=${index}&wait=30s`);
  await sleep(200);
  // A change elsewhere does not wake it.
  await call(u, 'PUT', '/v1/services/elsewhere/instances/y', { address: '10.4.0.9', port: 80 });
  await sleep(100);
  const change = await call(u, 'PUT', '/v1/services/blocking/instances/x2', { address: '10.4.0.2', port: 80 });
  const changedAt = Date.now();
  const answer = await pending;
  assert.ok(Date.now() - changedAt < 500, 'answered promptly after the change');
  assert.ok(Date.now() - t0 >= 300);
  assert.equal(answer.body.revision, change.body.revision);
  assert.equal(answer.headers.get('x-switchboard-index'), String(change.body.revision));
  assert.equal(answer.body.instances.length, 2);

  // An index already passed answers at once.
  t0 = Date.now();
  await call(u, 'GET', `/v1/services/blocking?index=${index}&wait=30s`);
  assert.ok(Date.now() - t0 < 500);
});

test('a lease that is not kept alive expires within its TTL plus one second', async () => {
  const u = node.url;
  const ttlMs = 1_500;
  const lease = (await call(u, 'POST', '/v1/leases', { ttlMs })).body.leaseId;
  await call(u, 'PUT', '/v1/services/expiry/instances/k1', { address: '10.5.0.1', port: 80, leaseId: lease });
  // Keep it alive twice, then stop.
  await sleep(700);
  assert.equal((await call(u, 'PUT', `/v1/leases/${lease}/keepalive`)).status, 200);
  await sleep(700);
  const ka = await call(u, 'PUT', `/v1/leases/${lease}/keepalive`);
  assert.deepEqual(ka.body, { leaseId: lease, ttlMs });
  const lastKeepAlive = Date.now();
  assert.equal((await call(u, 'GET', '/v1/services/expiry')).body.instances.length, 1, 'alive while kept alive');
  let goneAt = 0;
  while (Date.now() - lastKeepAlive < ttlMs + 3_000) {
    const r = await call(u, 'GET', '/v1/services/expiry');
    if (r.body.instances.length === 0) {
      goneAt = Date.now();
      break;
    }
    await sleep(25);
  }
  assert.ok(goneAt > 0, 'instance removed');
  const after = goneAt - lastKeepAlive;
  assert.ok(after >= ttlMs - 50, `not before the TTL (${after} ms)`);
  assert.ok(after <= ttlMs + 1_000, `within TTL + 1 s (${after} ms)`);
});

test('batch registration is all or nothing and names the bad item', async () => {
  const u = node.url;
  const ok = await call(u, 'POST', '/v1/instances/batch', { instances: [
    { service: 'batch-a', id: 'a1', address: '10.6.0.1', port: 1 },
    { service: 'batch-b', id: 'b1', address: '10.6.0.2', port: 2, namespace: 'other' },
  ] });
  assert.equal(ok.status, 200);
  assert.equal((await call(u, 'GET', '/v1/services/batch-b?namespace=other')).body.instances[0].modRevision, ok.body.revision);
  const bad = await call(u, 'POST', '/v1/instances/batch', { instances: [
    { service: 'batch-a', id: 'a2', address: '10.6.0.3', port: 3 },
    { service: 'batch-a', id: 'a3', address: '10.6.0.4', port: 70000 },
  ] });
  assert.equal(bad.status, 400);
  assert.equal(bad.body.field, 'instances/1/port');
  assert.deepEqual((await call(u, 'GET', '/v1/services/batch-a')).body.instances.map((i: any) => i.id), ['a1']);
});

test('a blocking query is counted but not timed: its wait would fill the route\'s latency histogram', async () => {
  const u = node.url;
  const metric = async (name: string, labels: string) => Number(new RegExp(`^${name}\\{${labels}\\} (\\d+)`, 'm').exec(await (await fetch(u + '/metrics')).text())?.[1] ?? 0);
  const route = 'method="GET",route="/v1/services/:service"';
  const counted = await metric('switchboard_http_requests_total', `${route},status="200"`);
  const timed = await metric('switchboard_http_request_duration_seconds_count', route);
  const index = (await call(u, 'GET', '/v1/services/blocking')).body.revision;
  assert.equal((await call(u, 'GET', `/v1/services/blocking?index=${index}&wait=200ms`)).status, 200);
  assert.equal(await metric('switchboard_http_requests_total', `${route},status="200"`), counted + 2);
  assert.equal(await metric('switchboard_http_request_duration_seconds_count', route), timed + 1, 'only the plain read is timed');
});

test('status, health, readiness, metrics and the OpenAPI document', async () => {
  const u = node.url;
  const s = await call(u, 'GET', '/v1/status');
  assert.equal(s.body.mode, 'standalone');
  assert.equal(typeof s.body.epoch, 'string');
  assert.equal(typeof s.body.revision, 'number');
  assert.equal((await call(u, 'GET', '/healthz')).status, 200);
  assert.equal((await call(u, 'GET', '/readyz')).status, 200);
  const m = await fetch(u + '/metrics');
  const text = await m.text();
  assert.match(text, /^switchboard_instances \d+$/m);
  assert.match(text, /switchboard_http_requests_total\{/);
  const doc = (await call(u, 'GET', '/v1/openapi.json')).body;
  assert.equal(doc.openapi, '3.0.3');
  for (const p of ['/v1/leases', '/v1/leases/{leaseId}/keepalive', '/v1/services/{service}/instances/{instanceId}', '/v1/instances/batch', '/v1/services', '/v1/services/{service}', '/v1/watch', '/v1/status']) {
    assert.ok(doc.paths[p], `OpenAPI has ${p}`);
  }
  assert.ok(doc.paths['/v1/services/{service}/instances/{instanceId}'].put.requestBody);
});
