// Goal: the server-side pick (GET /v1/services/{service}/pick, an extension) spreads picks
// as the SDK's balancers do, answers only instances that can take traffic, keeps a key on
// one instance (the same one an SDK view picks), honours filters, zone preference,
// fallbacks and exclusions, and answers every bad parameter with a 4xx that names it.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { ConsistentHashBalancer, type Instance } from '@switchboard/protocol';
import { Pickers } from '../../src/core/picker.js';
import { call, startNode, type TestNode } from '../helpers.js';

let node: TestNode;
before(async () => {
  node = await startNode();
  const u = node.url;
  const put = (id: string, body: object) => call(u, 'PUT', `/v1/services/shop/instances/${id}`, { address: '10.0.0.1', port: 8080, ...body });
  for (const [id, zone, weight] of [['a', 'eu-1', 100], ['b', 'eu-1', 100], ['c', 'eu-2', 100], ['d', 'eu-2', 300]] as const) {
    assert.equal((await put(id, { zone, weight, version: '1.0.0', tags: ['web'] })).status, 200);
  }
  assert.equal((await put('e', { zone: 'eu-1', weight: 0 })).status, 200, 'weight 0: never picked');
  assert.equal((await put('f', { zone: 'eu-1' })).status, 200);
  assert.equal((await call(u, 'PUT', '/v1/services/shop/instances/f/status', { status: 'draining' })).status, 200);
});
after(async () => {
  await node.close();
});

const pick = (q = '') => call(node.url, 'GET', `/v1/services/shop/pick${q ? `?${q}` : ''}`);
const ids = (r: { body: any }) => r.body.instances.map((i: Instance) => i.id);

test('round-robin (the default) cycles over the instances that can take traffic, and says what it chose among', async () => {
  const seen: string[] = [];
  for (let k = 0; k < 8; k++) {
    const r = await pick();
    assert.equal(r.status, 200);
    assert.equal(r.body.strategy, 'round-robin');
    assert.equal(r.body.candidates, 4, 'a, b, c, d: e has weight 0, f is draining');
    assert.equal(r.headers.get('cache-control'), 'no-store');
    assert.equal(r.body.instances.length, 1);
    assert.equal(r.body.instances[0].service, 'shop');
    seen.push(ids(r)[0]);
  }
  assert.deepEqual([...new Set(seen)].sort(), ['a', 'b', 'c', 'd']);
  for (let k = 4; k < 8; k++) assert.equal(seen[k], seen[k - 4], `a cycle of four: ${seen.join(',')}`);
});

test('weighted picks follow the weights; random covers every candidate', async () => {
  const counts = new Map<string, number>();
  for (let k = 0; k < 12; k++) {
    const id = ids(await pick('strategy=weighted'))[0];
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  assert.equal(counts.get('d'), 6, `d has half the weight: ${JSON.stringify([...counts])}`);
  const random = new Set<string>();
  for (let k = 0; k < 60; k++) random.add(ids(await pick('strategy=random'))[0]);
  assert.deepEqual([...random].sort(), ['a', 'b', 'c', 'd']);
});

test('a key stays on one instance, the one an SDK view with the same candidates picks', async () => {
  const list = (await call(node.url, 'GET', '/v1/services/shop?healthy=true')).body.instances.filter((i: Instance) => i.weight > 0);
  const sdk = new ConsistentHashBalancer();
  sdk.update(list, { all: list, load: { outstanding: () => 0 } });
  const owners = new Set<string>();
  for (const user of ['u1', 'u2', 'u3', 'u4', 'u5', 'u6', 'u7', 'u8']) {
    const first = ids(await pick(`strategy=consistent-hash&key=${user}`))[0];
    for (let k = 0; k < 3; k++) assert.equal(ids(await pick(`strategy=consistent-hash&key=${user}`))[0], first);
    assert.equal(first, sdk.pick({ key: user })?.id, `key ${user}`);
    owners.add(first as string);
  }
  assert.ok(owners.size >= 2, 'keys spread over instances');
});

test('count answers distinct fallbacks; exclude skips instances already tried; filters and zone preference narrow the pick', async () => {
  const four = await pick('count=16');
  assert.deepEqual([...ids(four)].sort(), ['a', 'b', 'c', 'd'], 'no more than there are, each once');
  const rest = await pick('count=4&exclude=a,b&exclude=c');
  assert.deepEqual(ids(rest), ['d']);
  assert.deepEqual(ids(await pick('strategy=consistent-hash&key=u1&count=2&exclude=' + ids(await pick('strategy=consistent-hash&key=u1'))[0])).length, 2);
  for (let k = 0; k < 6; k++) {
    assert.ok(['c', 'd'].includes(ids(await pick('zone=eu-2'))[0]));
    assert.ok(['a', 'b'].includes(ids(await pick('preferZone=eu-1'))[0]), 'eu-1 keeps picks while half of its instances can take traffic (a and b of a, b, e, f)');
  }
});

test('with count > 1 the sequence moves once per request: every instance is picked first in turn; fallbacks follow it', async () => {
  for (const strategy of ['round-robin', 'weighted']) {
    const firsts = new Set<string>();
    for (let k = 0; k < 12; k++) {
      const r = await pick(`strategy=${strategy}&count=2`);
      assert.equal(r.body.instances.length, 2);
      assert.notEqual(ids(r)[0], ids(r)[1]);
      firsts.add(ids(r)[0]);
    }
    assert.deepEqual([...firsts].sort(), ['a', 'b', 'c', 'd'], `${strategy}: ${[...firsts]}`);
  }
});

test('the balancers kept for picks are bounded by what they hold, not only by their number', () => {
  const pickers = new Pickers(Math.random, 1_000, 5_000);
  const filter = { healthy: true, zone: null, tags: [], version: null, fields: null };
  const instances = new Map(Array.from({ length: 10 }, (_, i) => [`i${i}`, { instance: { id: `i${i}`, service: 's', namespace: 'default', address: '10.0.0.1', port: 80, protocol: 'http', zone: `z${i % 3}`, version: null, tags: [], metadata: {}, weight: 100, status: 'up', health: 'passing', checks: [], leaseId: null, createRevision: 1, modRevision: 1 } }]));
  const svc = { name: 's', namespace: 'default', revision: 1, instances } as never;
  for (let z = 0; z < 20; z++) pickers.pick(svc, { namespace: 'default', service: 's', filter, strategy: 'consistent-hash', key: 'k', preferZone: `zone-${z}`, count: 1, exclude: [], protectThreshold: null });
  assert.ok(pickers.heldCost <= 5_000, `held ${pickers.heldCost} ring points`);
  assert.equal(pickers.size, 2, 'each ring of 10 instances × 100 points, twice for a zone preference, is 2,000: two kept');
});

test('no instance to pick is 503 NO_INSTANCE with Retry-After and a hint; a changed service is picked from at once', async () => {
  const none = await call(node.url, 'GET', '/v1/services/empty/pick');
  assert.equal(none.status, 503);
  assert.equal(none.body.code, 'NO_INSTANCE');
  assert.equal(none.headers.get('retry-after'), '1');
  assert.match(none.body.detail, /has no instance/);
  assert.match(none.body.hint, /GET \/v1\/services\/empty/);
  const filtered = await pick('tag=nope');
  assert.equal(filtered.status, 503);
  assert.match(filtered.body.detail, /matching tag=nope/);
  const excluded = await pick('exclude=a,b,c,d');
  assert.equal(excluded.status, 503);
  assert.match(excluded.body.detail, /excluded/);

  await call(node.url, 'PUT', '/v1/services/late/instances/x', { address: '10.0.0.9', port: 80 });
  await call(node.url, 'PUT', '/v1/services/late/instances/x/status', { status: 'out_of_service' });
  const down = await call(node.url, 'GET', '/v1/services/late/pick');
  assert.equal(down.status, 503);
  assert.match(down.body.detail, /none of the 1 instances/);
  await call(node.url, 'PUT', '/v1/services/late/instances/x/status', { status: 'up' });
  const up = await call(node.url, 'GET', '/v1/services/late/pick');
  assert.equal(up.status, 200);
  assert.deepEqual(ids(up), ['x']);
});

test('under a protect threshold, too few healthy instances widen the pick to every up instance, and the answer says so', async () => {
  const u = node.url;
  for (const id of ['g1', 'g2']) {
    const r = await call(u, 'PUT', `/v1/services/guarded/instances/${id}`, { address: '10.0.1.1', port: 80, checks: [{ id: 'beat', type: 'ttl', ttl: '30s' }] });
    assert.equal(r.status, 200);
  }
  const critical = await call(u, 'GET', '/v1/services/guarded/pick');
  assert.equal(critical.status, 503, 'both critical (awaiting their first report): nothing to pick');
  assert.match(critical.body.detail, /none of the 2 instances/);
  assert.equal((await call(u, 'PUT', '/v1/services/guarded/settings', { protectThreshold: 0.5 })).status, 200);
  const widened = await call(u, 'GET', '/v1/services/guarded/pick?count=2');
  assert.equal(widened.status, 200);
  assert.equal(widened.body.protected, true);
  assert.deepEqual(ids(widened).sort(), ['g1', 'g2']);
  assert.equal((await call(u, 'PUT', '/v1/services/guarded/instances/g1/checks/beat', { status: 'passing' })).status, 200);
  const one = await call(u, 'GET', '/v1/services/guarded/pick?count=2');
  assert.equal(one.status, 200);
  assert.equal(one.body.protected, undefined, 'half are healthy: the threshold is met');
  assert.deepEqual(ids(one), ['g1']);
});

test('bad parameters are 400s that name the parameter and say how to fix it', async () => {
  const cases: [string, string, string, RegExp][] = [
    ['strategy=fastest', 'INVALID_ARGUMENT', 'strategy', /use one of round-robin, random, weighted, consistent-hash/],
    ['strategy=p2c', 'INVALID_ARGUMENT', 'strategy', /SDK view/],
    ['count=0', 'INVALID_ARGUMENT', 'count', /count=1/],
    ['count=x', 'INVALID_ARGUMENT', 'count', /count=1/],
    ['count=17', 'LIMIT_EXCEEDED', 'count', /at most 16/],
    ['key=u1', 'INVALID_ARGUMENT', 'key', /strategy=consistent-hash/],
    [`strategy=consistent-hash&key=${'k'.repeat(1025)}`, 'LIMIT_EXCEEDED', 'key', /shorter key/],
    [`exclude=${Array.from({ length: 65 }, (_, i) => `i${i}`).join(',')}`, 'LIMIT_EXCEEDED', 'exclude', /already tried/],
    ['exclude=..', 'INVALID_ARGUMENT', 'exclude', /./],
    ['preferZone=EU_1', 'INVALID_ARGUMENT', 'preferZone', /./],
    ['strategy=random&strategy=weighted', 'INVALID_ARGUMENT', 'strategy', /once/],
  ];
  for (const [q, code, field, hint] of cases) {
    const r = await pick(q);
    assert.equal(r.status, 400, q);
    assert.equal(r.body.code, code, q);
    assert.equal(r.body.field, field, q);
    assert.match(r.body.hint, hint, q);
  }
  const strict = await call(node.url, 'GET', '/v1/services/shop/pick?healthy=false', undefined, { 'switchboard-strict': 'true' });
  assert.equal(strict.status, 400, 'healthy is not a parameter of a pick (only instances that can take traffic are picked)');
  assert.equal(strict.body.code, 'UNKNOWN_FIELD');
});

test('the balancers kept for picks are bounded, least recently used first out', () => {
  const pickers = new Pickers(Math.random, 3);
  const filter = { healthy: true, zone: null, tags: [], version: null, fields: null };
  for (const service of ['s1', 's2', 's3', 's4', 's5']) {
    pickers.pick(undefined, { namespace: 'default', service, filter, strategy: 'round-robin', count: 1, exclude: [], protectThreshold: null });
  }
  assert.equal(pickers.size, 3);
});
