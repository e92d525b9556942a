// Goal: every malformed, oversized or wrong request gets the right application/problem+json
// answer of api-v1.md (status, code, type, title, detail and a hint; LIMIT_EXCEEDED names
// its limit), never a 5xx, Fastify's own error shape or a crash; and the node still works
// afterwards. Most requests go through inject(); what inject cannot send (broken HTTP,
// truncated bodies, huge headers, chunked uploads) goes over a raw socket.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { DEFAULT_LIMITS, ERRORS, INSTANCE_FIELDS, MAX_FIELD_WARNINGS, PROBLEM_TYPE_PREFIX, SwitchboardError, capWarnings, unknownFieldWarnings, validateInstanceInput, type ErrorCode } from '@switchboard/protocol';
import { build, type SwitchboardApp } from '../../src/api/app.js';
import { StandaloneEngine } from '../../src/engines/standalone.js';
import { MemoryStorage } from '../../src/storage/storage.js';

const L = DEFAULT_LIMITS;
const JSON_CT = { 'content-type': 'application/json' };
const REG = { address: '10.0.0.5', port: 8080 };
const EXISTING = '/v1/services/orders/instances/o-1';

let engine: StandaloneEngine;
let app: SwitchboardApp;
let port: number;

before(async () => {
  engine = await StandaloneEngine.open({ nodeId: 't', storage: new MemoryStorage(), limits: L, clock: { now: () => performance.now() } });
  app = await build({ engine, limits: L, version: 'test' });
  await app.listen({ host: '127.0.0.1', port: 0 });
  port = (app.server.address() as net.AddressInfo).port;
  const res = await app.inject({ method: 'PUT', url: EXISTING, headers: JSON_CT, payload: JSON.stringify(REG) });
  assert.equal(res.statusCode, 200, res.body);
});

after(async () => {
  await app.shutdown();
  await engine.close();
});

// ---- expectations ----

interface Expect {
  status: number;
  code: ErrorCode;
  /** The `field` the problem must name. */
  field?: string;
  /** LIMIT_EXCEEDED and PAYLOAD_TOO_LARGE: the limit named in `limit` and the detail. */
  limit?: string;
  /** 405: the Allow header, exactly. */
  allow?: string;
  /** A substring the detail must hold. */
  detail?: string;
}

interface Answer {
  status: number;
  headers: Record<string, unknown>;
  body: string;
}

function assertProblem(res: Answer, want: Expect, what: string): void {
  assert.equal(res.status, want.status, `${what}: status (body ${res.body.slice(0, 300)})`);
  const ct = String(res.headers['content-type'] ?? '');
  assert.ok(ct.startsWith('application/problem+json'), `${what}: content-type ${ct}`);
  let p: Record<string, unknown>;
  try {
    p = JSON.parse(res.body) as Record<string, unknown>;
  } catch {
    assert.fail(`${what}: body is not JSON: ${res.body.slice(0, 200)}`);
  }
  assert.equal(p.code, want.code, `${what}: code (detail ${String(p.detail)})`);
  assert.equal(p.status, want.status, `${what}: status in the body`);
  assert.equal(p.type, PROBLEM_TYPE_PREFIX + want.code, `${what}: type`);
  assert.equal(p.title, ERRORS[want.code].title, `${what}: title`);
  assert.equal(typeof p.detail, 'string', `${what}: detail`);
  assert.ok((p.detail as string).length > 0, `${what}: empty detail`);
  assert.equal(typeof p.hint, 'string', `${what}: hint`);
  assert.ok((p.hint as string).trim().length > 0, `${what}: empty hint`);
  for (const leaked of ['error', 'message', 'statusCode']) assert.ok(!(leaked in p), `${what}: Fastify's "${leaked}" leaked`);
  if (want.field !== undefined) assert.equal(p.field, want.field, `${what}: field`);
  if (want.code === 'LIMIT_EXCEEDED' || want.code === 'PAYLOAD_TOO_LARGE') {
    assert.ok(want.limit, `${what}: the case must say which limit`);
    assert.equal(p.limit, want.limit, `${what}: limit`);
    assert.ok((p.detail as string).includes(want.limit as string), `${what}: detail "${String(p.detail)}" must name ${want.limit}`);
  }
  if (want.allow !== undefined) assert.equal(res.headers.allow, want.allow, `${what}: Allow`);
  if (want.detail !== undefined) assert.ok((p.detail as string).includes(want.detail), `${what}: detail "${String(p.detail)}" lacks "${want.detail}"`);
}

// ---- the battery (inject) ----

interface Case extends Expect {
  name: string;
  method: 'GET' | 'PUT' | 'POST' | 'DELETE' | 'PATCH' | 'HEAD' | 'OPTIONS';
  url: string;
  /** An object (or number) is sent as JSON; a string or Buffer as is, declared as JSON unless `headers` say otherwise. */
  body?: unknown;
  headers?: Record<string, string>;
}

const bad = (field: string, extra: Partial<Expect> = {}): Expect => ({ status: 400, code: 'INVALID_ARGUMENT', field, ...extra });
const limit = (name: string, field?: string): Expect => ({ status: 400, code: 'LIMIT_EXCEEDED', limit: name, ...(field !== undefined && { field }) });
const put = (name: string, body: unknown, want: Expect, url = '/v1/services/orders/instances/o-2'): Case => ({ name, method: 'PUT', url, body, ...want });
const reg = (name: string, extra: Record<string, unknown>, want: Expect): Case => put(name, { ...REG, ...extra }, want);
const lease = (name: string, body: unknown, want: Expect): Case => ({ name, method: 'POST', url: '/v1/leases', body, ...want });
const batch = (name: string, body: unknown, want: Expect): Case => ({ name, method: 'POST', url: '/v1/instances/batch', body, ...want });
const get = (name: string, url: string, want: Expect, headers?: Record<string, string>): Case => ({ name, method: 'GET', url, ...want, ...(headers && { headers }) });
const item = (i: number, extra: Record<string, unknown> = {}) => ({ service: 'orders', id: `b-${i}`, ...REG, ...extra });
const n = <T>(count: number, f: (i: number) => T): T[] => Array.from({ length: count }, (_, i) => f(i));
const address254 = ['a'.repeat(63), 'b'.repeat(63), 'c'.repeat(63), 'd'.repeat(62)].join('.');

const cases: Case[] = [
  // routing
  get('unknown route', '/nope', { status: 404, code: 'NOT_FOUND' }),
  get('unknown route under /v1', '/v1/nothing/here', { status: 404, code: 'NOT_FOUND' }),
  get('known path with a trailing slash', '/v1/status/', { status: 404, code: 'NOT_FOUND' }),
  get('double slash in a static part', '/v1//services', { status: 404, code: 'NOT_FOUND' }),
  { name: 'POST on a GET route', method: 'POST', url: '/v1/status', body: {}, status: 405, code: 'METHOD_NOT_ALLOWED', allow: 'GET, HEAD' },
  { name: 'PATCH on an instance', method: 'PATCH', url: EXISTING, body: {}, status: 405, code: 'METHOD_NOT_ALLOWED', allow: 'PUT, DELETE, GET, HEAD' },
  { name: 'DELETE on the service list', method: 'DELETE', url: '/v1/services', status: 405, code: 'METHOD_NOT_ALLOWED', allow: 'GET, HEAD' },
  get('GET on the lease collection', '/v1/leases', { status: 405, code: 'METHOD_NOT_ALLOWED', allow: 'POST' }),
  get('GET on the status of an instance', `${EXISTING}/status`, { status: 405, code: 'METHOD_NOT_ALLOWED', allow: 'PUT' }),
  { name: 'OPTIONS on the watch', method: 'OPTIONS', url: '/v1/watch', status: 405, code: 'METHOD_NOT_ALLOWED', allow: 'GET, HEAD' },
  get('a path segment longer than the router takes', `/v1/services/${'a'.repeat(2000)}`, bad('path')),
  get('invalid percent-encoding in the path', '/v1/services/orders/instances/%zz', bad('path')),

  // media types and bodies
  { ...put('text/plain body', 'address=10.0.0.5', { status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' }), headers: { 'content-type': 'text/plain' } },
  { ...put('a body with no content-type', JSON.stringify(REG), { status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' }), headers: {} },
  { ...put('form-encoded body', 'address=10.0.0.5&port=80', { status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' }), headers: { 'content-type': 'application/x-www-form-urlencoded' } },
  { ...put('application/jsonx', JSON.stringify(REG), { status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' }), headers: { 'content-type': 'application/jsonx' } },
  { ...put('JSON declared as latin1', JSON.stringify(REG), { status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' }), headers: { 'content-type': 'application/json; charset=latin1' } },
  { ...put('gzip content-encoding', JSON.stringify(REG), { status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' }), headers: { ...JSON_CT, 'content-encoding': 'gzip' } },
  { ...lease('text/plain lease request', '{"ttlMs": 10000}', { status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' }), headers: { 'content-type': 'text/plain' } },
  { ...put('text/plain on the status call', 'draining', { status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' }, `${EXISTING}/status`), headers: { 'content-type': 'text/plain' } },
  { ...put('malformed JSON', '{"address": "10.0.0.5", "port": ', bad('body')) },
  { ...put('JSON with a trailing comma', '{"address": "10.0.0.5", "port": 80,}', bad('body')) },
  { ...put('invalid UTF-8 in the body', Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]), bad('body')) },
  { ...put('Content-Length larger than the body', JSON.stringify(REG), bad('body')), headers: { ...JSON_CT, 'content-length': '5' } },
  put('JSON array body', [REG], bad('body')),
  put('JSON number body', 42, bad('body')),
  put('JSON string body', '"not an object"', bad('body')),
  { ...put('JSON null body', 'null', bad('body')) },
  { ...put('empty body on PUT instance', '', bad('body', { detail: 'needs a JSON object body' })) },
  { ...put('whitespace body on PUT instance', ' \n ', bad('body')) },
  { ...lease('empty body on POST /v1/leases', '', bad('body')) },
  { ...put('deeply nested JSON instead of an object', '['.repeat(100_000) + ']'.repeat(100_000), bad('body')) },
  { name: 'body over 1 MiB', method: 'POST', url: '/v1/instances/batch', body: JSON.stringify({ instances: [], pad: 'x'.repeat(L.maxBodyBytes) }), headers: JSON_CT, status: 413, code: 'PAYLOAD_TOO_LARGE', limit: 'maxBodyBytes' },

  // address and port
  put('missing address', { port: 80 }, bad('address', { detail: 'address is required' })),
  put('missing port', { address: '10.0.0.5' }, bad('port', { detail: 'port is required' })),
  reg('port 0', { port: 0 }, bad('port')),
  reg('port 65536', { port: 65536 }, bad('port')),
  reg('port as a string', { port: '8080' }, bad('port')),
  reg('port 1.5', { port: 1.5 }, bad('port')),
  reg('port null', { port: null }, bad('port')),
  reg('address of 254 characters', { address: address254 }, limit('maxAddressLength', 'address')),
  reg('address with a space', { address: 'my host' }, bad('address')),
  reg('address that is a URL', { address: 'http://10.0.0.5' }, bad('address')),
  reg('address with a port', { address: '10.0.0.5:8080' }, bad('address')),
  reg('address 999.1.1.1', { address: '999.1.1.1' }, bad('address')),
  reg('address with an IPv4 part before ::', { address: '1.2.3.4::' }, bad('address')),
  reg('address as a number', { address: 10 }, bad('address')),
  reg('address empty', { address: '' }, bad('address')),

  // names in the path and the query
  put('uppercase service name', REG, bad('service'), '/v1/services/Orders/instances/o-2'),
  put('service name with an underscore', REG, bad('service'), '/v1/services/my_svc/instances/o-2'),
  put('service name of 64 characters', REG, bad('service'), `/v1/services/${'s'.repeat(64)}/instances/o-2`),
  put('service name with a leading dash', REG, bad('service'), '/v1/services/-orders/instances/o-2'),
  put('empty service name (//)', REG, bad('service'), '/v1/services//instances/o-2'),
  put('instance id of 129 characters', REG, bad('instanceId'), `/v1/services/orders/instances/${'i'.repeat(129)}`),
  put('instance id with an encoded slash', REG, bad('instanceId'), '/v1/services/orders/instances/a%2Fb'),
  put('instance id with a space', REG, bad('instanceId'), '/v1/services/orders/instances/a%20b'),
  put('empty instance id', REG, bad('instanceId'), '/v1/services/orders/instances/'),
  put('uppercase namespace', REG, bad('namespace'), '/v1/services/orders/instances/o-2?namespace=Prod'),
  put('namespace given twice', REG, bad('namespace'), '/v1/services/orders/instances/o-2?namespace=a&namespace=b'),
  get('namespace with a dot on the list', '/v1/services?namespace=a.b', bad('namespace')),

  // the other fields of a registration
  reg('zone not a DNS label', { zone: 'EU_west' }, bad('zone')),
  reg('zone as a number', { zone: 1 }, bad('zone')),
  reg('version v1.2.3', { version: 'v1.2.3' }, bad('version')),
  reg('version 1.2', { version: '1.2' }, bad('version')),
  reg('version of 65 characters', { version: '1.0.0-' + 'a'.repeat(59) }, limit('maxVersionLength', 'version')),
  reg('weight -1', { weight: -1 }, bad('weight')),
  reg('weight 10001', { weight: 10001 }, bad('weight')),
  reg('weight as a string', { weight: '10' }, bad('weight')),
  reg('protocol ftp', { protocol: 'ftp' }, bad('protocol')),
  reg('tags not an array', { tags: 'a,b' }, bad('tags')),
  reg('a tag that is not a string', { tags: ['a', 2] }, bad('tags/1')),
  reg('65 tags', { tags: n(65, (i) => `t${i}`) }, limit('maxTagsPerInstance', 'tags')),
  reg('a tag of 129 characters', { tags: ['t'.repeat(129)] }, limit('maxTagLength', 'tags/0')),
  reg('metadata not an object', { metadata: ['a=b'] }, bad('metadata')),
  reg('metadata with a number value', { metadata: { build: 42 } }, bad('metadata/build')),
  reg('metadata with 65 keys', { metadata: Object.fromEntries(n(65, (i) => `k${i}`).map((k) => [k, 'v'])) }, limit('maxMetadataKeys', 'metadata')),
  reg('metadata over 16 KiB', { metadata: { blob: 'x'.repeat(16 * 1024) } }, limit('maxMetadataBytes', 'metadata')),
  reg('metadata key of 129 characters', { metadata: { ['k'.repeat(129)]: 'v' } }, limit('maxMetadataKeyLength')),
  reg('checks not an array', { checks: { type: 'http' } }, bad('checks')),
  reg('check of an unknown type', { checks: [{ type: 'icmp' }] }, bad('checks/0/type')),
  reg('check with a bad interval', { checks: [{ type: 'tcp', interval: '10x' }] }, bad('checks/0/interval')),
  reg('check with a numeric interval', { checks: [{ type: 'tcp', interval: 10 }] }, bad('checks/0/interval')),
  reg('nine checks', { checks: n(9, (i) => `c${i}`).map((id) => ({ id, type: 'tcp' })) }, limit('maxChecksPerInstance', 'checks')),
  reg('leaseId not a string', { leaseId: 7 }, bad('leaseId')),
  reg('unknown leaseId', { leaseId: 'no-such-lease' }, { status: 404, code: 'LEASE_NOT_FOUND' }),

  // leases
  lease('ttlMs missing', {}, bad('ttlMs', { detail: 'ttlMs is required' })),
  lease('ttlMs not an integer', { ttlMs: 1500.5 }, bad('ttlMs')),
  lease('ttlMs as a string', { ttlMs: '10000' }, bad('ttlMs')),
  lease('ttlMs too big for a double', '{"ttlMs": 1e400}', bad('ttlMs')),
  lease('ttlMs below the minimum', { ttlMs: L.leaseTtlMinMs - 1 }, limit('leaseTtlMinMs', 'ttlMs')),
  lease('ttlMs above the maximum', { ttlMs: L.leaseTtlMaxMs + 1 }, limit('leaseTtlMaxMs', 'ttlMs')),
  lease('lease request as an array', [10000], bad('body')),
  { name: 'keepalive of an unknown lease', method: 'PUT', url: '/v1/leases/no-such-lease/keepalive', status: 404, code: 'LEASE_NOT_FOUND' },
  { name: 'revoke of an unknown lease', method: 'DELETE', url: '/v1/leases/no-such-lease', status: 404, code: 'LEASE_NOT_FOUND' },
  { name: 'keepalive of a lease id with a space', method: 'PUT', url: '/v1/leases/a%20b/keepalive', ...bad('leaseId') },

  // instances
  get('GET of an unknown instance', '/v1/services/orders/instances/nope', { status: 404, code: 'INSTANCE_NOT_FOUND' }),
  get('GET of an instance in another namespace', `${EXISTING}?namespace=other`, { status: 404, code: 'INSTANCE_NOT_FOUND' }),
  { name: 'DELETE of an unknown instance', method: 'DELETE', url: '/v1/services/orders/instances/nope', status: 404, code: 'INSTANCE_NOT_FOUND' },
  { name: 'removing a cluster member from a standalone node', method: 'DELETE', url: '/v1/cluster/members/sb-3', status: 409, code: 'UNSUPPORTED_MODE' },
  put('status of an unknown instance', { status: 'draining' }, { status: 404, code: 'INSTANCE_NOT_FOUND' }, '/v1/services/orders/instances/nope/status'),
  put('status "down"', { status: 'down' }, bad('status'), `${EXISTING}/status`),
  put('status missing', {}, bad('status', { detail: 'status is required' }), `${EXISTING}/status`),
  put('status body a JSON string', '"draining"', bad('body'), `${EXISTING}/status`),

  // batches
  batch('batch with no items', { instances: [] }, bad('instances')),
  batch('batch with instances not an array', { instances: { a: 1 } }, bad('instances')),
  batch('batch with no instances field', {}, bad('instances')),
  batch('batch body an array', [item(0)], bad('body')),
  batch('batch over the item limit', { instances: n(L.maxBatchItems + 1, (i) => String(i)).map((_, i) => item(i)) }, limit('maxBatchItems', 'instances')),
  batch('batch with one bad port', { instances: [item(0), item(1, { port: 0 })] }, bad('instances/1/port', { detail: 'instances/1' })),
  batch('batch with an item that is not an object', { instances: [item(0), 5] }, bad('instances/1', { detail: 'instances/1' })),
  batch('batch with a bad service name', { instances: [item(0, { service: 'Bad' })] }, bad('instances/0/service')),
  batch('batch with an item without id', { instances: [{ service: 'orders', ...REG }] }, bad('instances/0/id')),
  batch('batch with a bad tag', { instances: [item(0), item(1), item(2, { tags: [1] })] }, bad('instances/2/tags/0', { detail: 'instances/2' })),
  batch('batch with too many tags in an item', { instances: [item(0, { tags: n(65, String) })] }, limit('maxTagsPerInstance', 'instances/0/tags')),
  batch('batch with a duplicate id', { instances: [item(0), item(1), item(0)] }, bad('instances/2/id', { detail: 'twice' })),
  batch('batch with an unknown lease', { instances: [item(0, { leaseId: 'no-such-lease' })] }, { status: 404, code: 'LEASE_NOT_FOUND' }),

  // discovery queries
  get('blocking index -1', '/v1/services/orders?index=-1', bad('index')),
  get('blocking index abc', '/v1/services/orders?index=abc', bad('index')),
  get('blocking index given twice', '/v1/services/orders?index=1&index=2', bad('index')),
  get('wait without a unit', '/v1/services/orders?index=1&wait=5', bad('wait')),
  get('wait 10x', '/v1/services/orders?index=1&wait=10x', bad('wait')),
  get('wait over 5m', '/v1/services/orders?index=1&wait=6m', limit('blockingWaitMaxMs', 'wait')),
  get('bad version range', '/v1/services/orders?version=not-a-range', bad('version')),
  get('version range given twice', '/v1/services/orders?version=1.x&version=2.x', bad('version')),
  get('healthy=yes', '/v1/services/orders?healthy=yes', bad('healthy')),
  get('consistent=1', '/v1/services/orders?consistent=1', bad('consistent')),
  get('zone filter not a DNS label', '/v1/services/orders?zone=EU', bad('zone')),
  get('too many tag filters', `/v1/services/orders?${n(L.maxQueryTags + 1, (i) => `tag=t${i}`).join('&')}`, limit('maxQueryTags', 'tag')),
  get('bad service name on discovery', '/v1/services/Orders', bad('service')),

  // watch
  get('watch fromRevision -1', '/v1/watch?fromRevision=-1', bad('fromRevision')),
  get('watch fromRevision abc', '/v1/watch?fromRevision=abc', bad('fromRevision')),
  get('watch fromRevision given twice', '/v1/watch?fromRevision=1&fromRevision=2', bad('fromRevision')),
  get('watch with a bad Last-Event-ID', '/v1/watch', bad('Last-Event-ID'), { 'last-event-id': 'garbage' }),
  get('watch with a Last-Event-ID without revision', '/v1/watch', bad('Last-Event-ID'), { 'last-event-id': 'epoch:' }),
  get('watch with too many services', `/v1/watch?${n(L.maxWatchServices + 1, (i) => `service=s${i}`).join('&')}`, limit('maxWatchServices', 'service')),
  get('watch of a bad service name', '/v1/watch?service=ok&service=Not_OK', bad('service')),
  get('watch with a bad namespace', '/v1/watch?namespace=A', bad('namespace')),
];

test('the battery covers at least sixty kinds of bad input', () => {
  assert.ok(cases.length >= 60, `only ${cases.length} cases`);
  assert.equal(new Set(cases.map((c) => c.name)).size, cases.length, 'case names are unique');
});

test('every bad request gets the right problem+json', async (t) => {
  for (const c of cases) {
    await t.test(c.name, async () => {
      const isObject = c.body !== undefined && typeof c.body !== 'string' && !Buffer.isBuffer(c.body);
      const payload = c.body === undefined ? undefined : isObject ? JSON.stringify(c.body) : (c.body as string | Buffer);
      const headers = c.headers ?? (c.body === undefined ? {} : JSON_CT);
      const res = await app.inject({ method: c.method, url: c.url, headers, ...(payload !== undefined && { payload }) });
      assertProblem({ status: res.statusCode, headers: res.headers, body: res.body }, c, c.name);
    });
  }
  // Nothing in the battery changed the registry.
  const list = await app.inject({ method: 'GET', url: '/v1/services/orders' });
  assert.deepEqual(JSON.parse(list.body).instances.map((i: { id: string }) => i.id), ['o-1']);
});

test('HEAD of an unknown route answers 404 problem headers without a body', async () => {
  const res = await app.inject({ method: 'HEAD', url: '/nope' });
  assert.equal(res.statusCode, 404);
  assert.ok(String(res.headers['content-type']).startsWith('application/problem+json'));
});

// ---- what the contract says to ignore ----

test('unknown body fields and unknown query parameters are ignored', async () => {
  const body = { ...REG, color: 'blue', nested: { deep: [1, { x: null }] }, instances: 'ignored', status: 'nonsense' };
  const res = await app.inject({ method: 'PUT', url: '/v1/services/ignore/instances/i-1?foo=bar&flag&%zz=1&tags=x', headers: JSON_CT, payload: JSON.stringify(body) });
  assert.equal(res.statusCode, 200, res.body);
  const one = await app.inject({ method: 'GET', url: '/v1/services/ignore/instances/i-1?unknown=1&x[]=2' });
  assert.equal(one.statusCode, 200, one.body);
  const inst = JSON.parse(one.body);
  assert.equal(inst.status, 'up');
  assert.ok(!('color' in inst));
  const list = await app.inject({ method: 'GET', url: '/v1/services/ignore?whatever=1&sort=desc&limit=5' });
  assert.equal(list.statusCode, 200, list.body);
  const all = await app.inject({ method: 'GET', url: '/v1/services?page=2' });
  assert.equal(all.statusCode, 200, all.body);
  const leaseRes = await app.inject({ method: 'POST', url: '/v1/leases?x=1', headers: JSON_CT, payload: JSON.stringify({ ttlMs: 5000, extra: true }) });
  assert.equal(leaseRes.statusCode, 201, leaseRes.body);
  const status = await app.inject({ method: 'PUT', url: '/v1/services/ignore/instances/i-1/status?y=2', headers: JSON_CT, payload: JSON.stringify({ status: 'draining', reason: 'deploy' }) });
  assert.equal(status.statusCode, 200, status.body);
  const batchRes = await app.inject({ method: 'POST', url: '/v1/instances/batch?z=3', headers: JSON_CT, payload: JSON.stringify({ instances: [item(0, { service: 'ignore', extra: 1 })], comment: 'x' }) });
  assert.equal(batchRes.statusCode, 200, batchRes.body);
});

test('ignored fields and parameters are said to be: writes list them in warnings, every route in a Switchboard-Warning header, with the field meant when one is close', async () => {
  // A Consul habit (ttl) and misspellings: the contract ignores them, the answer says so.
  const body = { ...REG, leaseID: 'abc', Zone: 'eu-1', tag: ['x'], ttl: '10s', checks: [{ type: 'tcp', Interval: '5s' }] };
  const res = await app.inject({ method: 'PUT', url: '/v1/services/warned/instances/w-1?namespce=x', headers: JSON_CT, payload: JSON.stringify(body) });
  assert.equal(res.statusCode, 200, res.body);
  const answer = JSON.parse(res.body);
  assert.deepEqual(answer.warnings, [
    'unknown query parameter "namespce" ignored: did you mean "namespace"?',
    'unknown field "leaseID" ignored: did you mean "leaseId"?',
    'unknown field "Zone" ignored: did you mean "zone"?',
    'unknown field "tag" ignored: did you mean "tags"?',
    'unknown field "ttl" ignored: a lease carries the TTL: create one with POST /v1/leases {"ttlMs": 10000} and register with "leaseId"; without it the instance is persistent',
    'unknown field "checks/0/Interval" ignored: did you mean "interval"?',
  ]);
  assert.match(res.headers['switchboard-warning'] as string, /unknown query parameter "namespce" ignored/);
  // Still ignored: the instance is persistent, in no zone, without tags.
  const inst = JSON.parse((await app.inject({ method: 'GET', url: '/v1/services/warned/instances/w-1' })).body);
  assert.deepEqual([inst.leaseId, inst.zone, inst.tags], [null, null, []]);
  const read = await app.inject({ method: 'GET', url: '/v1/services/warned?helthy=true' });
  assert.equal(read.statusCode, 200);
  assert.equal(read.headers['switchboard-warning'], 'unknown query parameter "helthy" ignored: did you mean "healthy"?');
  const lease = await app.inject({ method: 'POST', url: '/v1/leases', headers: JSON_CT, payload: JSON.stringify({ ttlMs: 5000, ttl: '5s' }) });
  assert.deepEqual(JSON.parse(lease.body).warnings, ['unknown field "ttl" ignored: did you mean "ttlMs"?']);
  const batch = await app.inject({ method: 'POST', url: '/v1/instances/batch', headers: JSON_CT, payload: JSON.stringify({ instances: [item(0, { service: 'warned', wieght: 5 })], extra: 1 }) });
  assert.deepEqual(JSON.parse(batch.body).warnings, ['unknown field "extra" ignored', 'unknown field "instances/0/wieght" ignored: did you mean "weight"?']);
  // Nothing unknown: no warnings, no header.
  const clean = await app.inject({ method: 'PUT', url: '/v1/services/warned/instances/w-2', headers: JSON_CT, payload: JSON.stringify(REG) });
  assert.deepEqual(Object.keys(JSON.parse(clean.body)), ['revision']);
  assert.equal(clean.headers['switchboard-warning'], undefined);
  // Many unknown fields: at most ten lines; a name that is not printable ASCII is masked in the header.
  const many = Object.fromEntries(Array.from({ length: 25 }, (_, i) => [`x${i}`, i]));
  const capped = await app.inject({ method: 'PUT', url: '/v1/services/warned/instances/w-3', headers: JSON_CT, payload: JSON.stringify({ ...REG, ...many }) });
  const lines = JSON.parse(capped.body).warnings as string[];
  assert.equal(lines.length, 10);
  assert.equal(lines[9], '16 more unknown fields ignored');
  const odd = await app.inject({ method: 'GET', url: `/v1/services/warned?${encodeURIComponent('z\u00e9\r\n')}=1` });
  assert.equal(odd.statusCode, 200);
  assert.match(odd.headers['switchboard-warning'] as string, /^unknown query parameter "z\?\\r\\n" ignored$/);
});

test('Switchboard-Strict: true refuses unknown fields and parameters (400 UNKNOWN_FIELD) before anything is written', async () => {
  const STRICT = { ...JSON_CT, 'switchboard-strict': 'true' };
  const expectRefused = (res: { statusCode: number; body: string }, detail: RegExp): void => {
    assert.equal(res.statusCode, 400, res.body);
    const p = JSON.parse(res.body);
    assert.equal(p.code, 'UNKNOWN_FIELD');
    assert.match(p.detail, detail);
    assert.match(p.hint, /without Switchboard-Strict/);
  };
  const before = JSON.parse((await app.inject({ method: 'GET', url: '/v1/status' })).body).revision;
  expectRefused(await app.inject({ method: 'PUT', url: '/v1/services/strict/instances/s-1', headers: STRICT, payload: JSON.stringify({ ...REG, leaseID: 'x' }) }), /unknown field "leaseID" ignored: did you mean "leaseId"\?/);
  expectRefused(await app.inject({ method: 'PUT', url: '/v1/services/strict/instances/s-1?namespce=x', headers: STRICT, payload: JSON.stringify(REG) }), /unknown query parameter "namespce"/);
  expectRefused(await app.inject({ method: 'GET', url: '/v1/services/strict?helthy=true', headers: { 'switchboard-strict': '1' } }), /"helthy" ignored: did you mean "healthy"\?/);
  expectRefused(await app.inject({ method: 'POST', url: '/v1/leases', headers: STRICT, payload: JSON.stringify({ ttlMs: 5000, ttl: '5s' }) }), /"ttl"/);
  expectRefused(await app.inject({ method: 'POST', url: '/v1/instances/batch', headers: STRICT, payload: JSON.stringify({ instances: [item(0, { service: 'strict', wieght: 5 })] }) }), /instances\/0\/wieght/);
  // Nothing was written: no instance, no lease, no new revision.
  assert.equal((await app.inject({ method: 'GET', url: '/v1/services/strict/instances/s-1' })).statusCode, 404);
  assert.equal(JSON.parse((await app.inject({ method: 'GET', url: '/v1/status' })).body).revision, before);
  // Known fields only: strict changes nothing; without the header (or with false) unknown ones are ignored.
  assert.equal((await app.inject({ method: 'PUT', url: '/v1/services/strict/instances/s-1', headers: STRICT, payload: JSON.stringify(REG) })).statusCode, 200);
  const lax = await app.inject({ method: 'PUT', url: '/v1/services/strict/instances/s-2', headers: { ...JSON_CT, 'switchboard-strict': 'false' }, payload: JSON.stringify({ ...REG, leaseID: 'x' }) });
  assert.equal(lax.statusCode, 200, lax.body);
  assert.equal(JSON.parse(lax.body).warnings.length, 1);
});

test('strict covers every write (leases, check reports, consumer reports, settings, drains), and consistent=true is a parameter of every read', async () => {
  const STRICT = { ...JSON_CT, 'switchboard-strict': 'true' };
  const refused = (res: { statusCode: number; body: string }, detail: RegExp): void => {
    assert.equal(res.statusCode, 400, res.body);
    assert.equal(JSON.parse(res.body).code, 'UNKNOWN_FIELD');
    assert.match(JSON.parse(res.body).detail, detail);
  };
  assert.equal((await app.inject({ method: 'PUT', url: '/v1/services/strict2/instances/h-1', headers: JSON_CT, payload: JSON.stringify({ ...REG, checks: [{ id: 't', type: 'ttl', ttl: '30s' }] }) })).statusCode, 200);
  const before = JSON.parse((await app.inject({ method: 'GET', url: '/v1/status' })).body).revision;
  refused(await app.inject({ method: 'POST', url: '/v1/leases?bogus=1', headers: STRICT, payload: JSON.stringify({ ttlMs: 5000 }) }), /query parameter "bogus"/);
  refused(await app.inject({ method: 'DELETE', url: '/v1/leases/0123456789abcdef?bogus=1', headers: STRICT }), /query parameter "bogus"/);
  refused(await app.inject({ method: 'PUT', url: '/v1/services/strict2/instances/h-1/checks/t', headers: STRICT, payload: JSON.stringify({ status: 'pass', ouput: 'db ok' }) }), /"ouput" ignored: did you mean "output"\?/);
  refused(await app.inject({ method: 'PUT', url: '/v1/services/strict2/settings', headers: STRICT, payload: JSON.stringify({ protectThreshold: 0.5, bogus: 1 }) }), /"bogus"/);
  refused(await app.inject({ method: 'POST', url: '/v1/services/strict2/instances/h-1/reports', headers: STRICT, payload: JSON.stringify({ reporter: 'r1', kind: 'timeout', detial: 'x' }) }), /"detial" ignored: did you mean "detail"\?/);
  refused(await app.inject({ method: 'POST', url: '/v1/services/strict2/instances/h-1/drain?wait=0s', headers: STRICT, payload: JSON.stringify({ reason: 'deploy' }) }), /"reason"/);
  assert.equal(JSON.parse((await app.inject({ method: 'GET', url: '/v1/status' })).body).revision, before, 'nothing was written');
  // Without strict: done, and the answers list what was ignored.
  const warned = async (method: 'PUT' | 'POST', url: string, payload: unknown): Promise<string[]> => {
    const res = await app.inject({ method, url, headers: JSON_CT, payload: JSON.stringify(payload) });
    assert.equal(res.statusCode < 300, true, res.body);
    return JSON.parse(res.body).warnings;
  };
  assert.deepEqual(await warned('PUT', '/v1/services/strict2/instances/h-1/checks/t', { status: 'pass', ouput: 'db ok' }), ['unknown field "ouput" ignored: did you mean "output"?']);
  assert.equal((await warned('PUT', '/v1/services/strict2/settings', { protectThreshold: 0.5, bogus: 1 })).length, 1);
  assert.equal((await warned('POST', '/v1/services/strict2/instances/h-1/reports', { reporter: 'r1', kind: 'timeout', bogus: 1 })).length, 1);
  assert.equal((await warned('POST', '/v1/services/strict2/instances/h-1/drain?wait=0s', { reason: 'deploy' })).length, 1);
  // consistent=true on every read: taken, even strict; a value that is not a boolean is refused.
  for (const url of ['/v1/services', '/v1/services/strict2', '/v1/services/strict2/instances/h-1', '/v1/services/strict2/settings', '/v1/services/strict2/instances/h-1/history']) {
    const res = await app.inject({ method: 'GET', url: `${url}?consistent=true`, headers: { 'switchboard-strict': 'true' } });
    assert.equal(res.statusCode, 200, `${url}: ${res.body}`);
    assert.equal(res.headers['switchboard-warning'], undefined, url);
    assert.equal((await app.inject({ method: 'GET', url: `${url}?consistent=maybe` })).statusCode, 400, url);
  }
  assert.equal((await app.inject({ method: 'GET', url: '/v1/watch?consistent=maybe' })).statusCode, 400);
});

test('field names that are names of Object.prototype get plain warnings; a session instance that is no object is named as the instance', async () => {
  const res = await app.inject({ method: 'PUT', url: '/v1/services/protos/instances/p-1?constructor=1', headers: JSON_CT, payload: '{"address":"10.0.0.5","port":1,"constructor":1,"toString":2,"__proto__":{}}' });
  assert.equal(res.statusCode, 200, res.body);
  const warnings: string[] = JSON.parse(res.body).warnings;
  assert.deepEqual(warnings, ['unknown query parameter "constructor" ignored', 'unknown field "constructor" ignored', 'unknown field "toString" ignored', 'unknown field "__proto__" ignored']);
  assert.throws(() => validateInstanceInput([], L, 'instance'), (err: SwitchboardError) => err.field === 'instance' && /instance must be a JSON object, not an array/.test(err.message));
  assert.throws(() => validateInstanceInput('x', L), (err: SwitchboardError) => err.field === 'body');
});

test('many unknown fields cost a near-match search for the ten shown only; the rest are counted', () => {
  const body: Record<string, number> = { adress: 1 };
  for (let i = 0; i < 50_000; i++) body[`k${i}`] = i;
  const out = unknownFieldWarnings(body, INSTANCE_FIELDS);
  assert.equal(out.length, 50_001);
  assert.equal(out[0], 'unknown field "adress" ignored: did you mean "address"?');
  assert.equal(new Set(out.slice(MAX_FIELD_WARNINGS)).size, 1, 'past the ten shown, one line that names nothing');
  const capped = capWarnings(out);
  assert.equal(capped.length, MAX_FIELD_WARNINGS);
  assert.equal(capped.at(-1), `${50_001 - MAX_FIELD_WARNINGS + 1} more unknown fields ignored`);
});

test('values exactly at each limit are accepted', async () => {
  const address253 = ['a'.repeat(63), 'b'.repeat(63), 'c'.repeat(63), 'd'.repeat(61)].join('.');
  // 64 metadata keys, one of 128 characters, of exactly 16 KiB together (keys and values).
  const small = n<[string, string]>(63, (i) => [`k${i}`, 'v']);
  const used = small.reduce((sum, [k, v]) => sum + k.length + v.length, 0);
  const metadata = Object.fromEntries([...small, ['z'.repeat(128), 'v'.repeat(L.maxMetadataBytes - used - 128)]]);
  const body = {
    address: address253,
    port: 65535,
    weight: 10000,
    version: '1.0.0-' + 'a'.repeat(58),
    tags: [...n(63, (i) => `t${i}`), 't'.repeat(128)],
    metadata,
    checks: n(8, (i) => ({ id: `c${i}`, type: 'tcp', interval: '1h' })),
  };
  const res = await app.inject({ method: 'PUT', url: `/v1/services/${'s'.repeat(63)}/instances/${'i'.repeat(128)}`, headers: JSON_CT, payload: JSON.stringify(body) });
  assert.equal(res.statusCode, 200, res.body);
  for (const ttlMs of [L.leaseTtlMinMs, L.leaseTtlMaxMs]) {
    const r = await app.inject({ method: 'POST', url: '/v1/leases', headers: JSON_CT, payload: JSON.stringify({ ttlMs }) });
    assert.equal(r.statusCode, 201, r.body);
  }
  const b = await app.inject({ method: 'POST', url: '/v1/instances/batch', headers: JSON_CT, payload: JSON.stringify({ instances: n(L.maxBatchItems, String).map((_, i) => item(i, { service: 'edge' })) }) });
  assert.equal(b.statusCode, 200, b.body);
  const w = await app.inject({ method: 'GET', url: '/v1/services/edge?index=0&wait=5m' });
  assert.equal(w.statusCode, 200, w.body);
  const tags = await app.inject({ method: 'GET', url: `/v1/services/edge?${n(L.maxQueryTags, (i) => `tag=t${i}`).join('&')}` });
  assert.equal(tags.statusCode, 200, tags.body);
});

test('a version with build metadata and a metadata key named __proto__ are kept', async () => {
  const payload = '{"address": "::ffff:10.0.0.9", "port": 80, "version": "1.2.3+build.7", "metadata": {"__proto__": "x", "constructor": "y"}}';
  const res = await app.inject({ method: 'PUT', url: '/v1/services/proto/instances/p-1', headers: JSON_CT, payload });
  assert.equal(res.statusCode, 200, res.body);
  const inst = JSON.parse((await app.inject({ method: 'GET', url: '/v1/services/proto/instances/p-1' })).body);
  assert.equal(inst.version, '1.2.3+build.7');
  assert.deepEqual(Object.entries(inst.metadata).sort(), [['__proto__', 'x'], ['constructor', 'y']]);
});

// ---- raw sockets: what inject cannot send ----

interface RawAnswer extends Answer {
  raw: string;
}

/** Sends `chunks` on a fresh connection and reads until the server closes it. */
/** The head of the answer to `request` (for a stream, which does not end), read until its blank line. */
function rawHead(request: string, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let got = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer head within ${timeoutMs} ms; got ${got.slice(0, 200)}`));
    }, timeoutMs);
    socket.on('error', () => undefined);
    socket.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      const end = got.indexOf('\r\n\r\n');
      if (end < 0) return;
      clearTimeout(timer);
      socket.destroy();
      resolve(got.slice(0, end + 2));
    });
    socket.on('connect', () => socket.write(request));
  });
}

function rawExchange(chunks: (string | Buffer)[], opts: { halfClose?: boolean; timeoutMs?: number } = {}): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const received: Buffer[] = [];
    let answered = false;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer within ${opts.timeoutMs ?? 5000} ms; got ${Buffer.concat(received).toString('latin1').slice(0, 200)}`));
    }, opts.timeoutMs ?? 5000);
    socket.on('data', (d: Buffer) => {
      answered = true;
      received.push(d);
    });
    // The server may reset the connection while we still write: that is fine once it answered.
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      const raw = Buffer.concat(received).toString('utf8');
      const [head = '', ...rest] = raw.split('\r\n\r\n');
      const [statusLine = '', ...headerLines] = head.split('\r\n');
      const headers: Record<string, string> = {};
      for (const line of headerLines) {
        const i = line.indexOf(':');
        if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
      }
      resolve({ raw, status: Number(statusLine.split(' ')[1]), headers, body: rest.join('\r\n\r\n') });
    });
    socket.on('connect', async () => {
      for (const c of chunks) {
        if (answered || socket.destroyed) break;
        await new Promise<void>((done) => socket.write(c, () => done()));
      }
      if (opts.halfClose !== false && !socket.destroyed) socket.end();
    });
  });
}

const rawCases: { name: string; chunks: () => (string | Buffer)[]; want: Expect }[] = [
  {
    name: 'a body shorter than its Content-Length (connection half-closed)',
    chunks: () => ['PUT /v1/services/orders/instances/t-1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"address": "10.0.0.5",'],
    want: bad('body'),
  },
  { name: 'not HTTP at all', chunks: () => ['HELLO THERE\r\n\r\n'], want: bad('request') },
  { name: 'an HTTP/1.1 request without a Host header', chunks: () => ['GET /v1/status HTTP/1.1\r\nConnection: close\r\n\r\n'], want: bad('Host') },
  { name: 'an unknown HTTP version', chunks: () => ['GET /v1/status HTTP/9.9\r\nHost: x\r\n\r\n'], want: bad('request') },
  { name: 'a header line without a colon', chunks: () => ['GET /v1/status HTTP/1.1\r\nHost: x\r\nthis is not a header\r\n\r\n'], want: bad('request') },
  { name: 'invalid percent-encoding in the path', chunks: () => ['GET /v1/services/orders/instances/%E0%A4%A HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'], want: bad('path') },
  { name: 'a header over the header size limit', chunks: () => [`GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(32 * 1024)}\r\n\r\n`], want: limit('maxHeaderSize', 'headers') },
  {
    name: 'both Content-Length and Transfer-Encoding',
    chunks: () => ['POST /v1/leases HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 16\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
    want: bad('body'),
  },
  {
    name: 'an Expect other than 100-continue',
    chunks: () => ['PUT /v1/services/orders/instances/t-3 HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}'],
    want: bad('Expect'),
  },
  { name: 'a Content-Length that is not a number', chunks: () => ['POST /v1/leases HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ten\r\n\r\n{}'], want: bad('body') },
  {
    name: 'a malformed chunk size',
    chunks: () => ['POST /v1/leases HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n'],
    want: bad('body'),
  },
  {
    name: 'a chunked body over 1 MiB',
    chunks: () => {
      const piece = 'x'.repeat(64 * 1024);
      const out: string[] = ['POST /v1/instances/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n'];
      for (let i = 0; i < 24; i++) out.push(`${piece.length.toString(16)}\r\n${piece}\r\n`);
      out.push('0\r\n\r\n');
      return out;
    },
    want: { status: 413, code: 'PAYLOAD_TOO_LARGE', limit: 'maxBodyBytes' },
  },
  {
    name: 'a body with an Upgrade the server does not take',
    chunks: () => ['POST /v1/leases HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: foo\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}'],
    want: bad('upgrade'),
  },
];

test('requests that inject cannot make, over a real socket', async (t) => {
  for (const c of rawCases) {
    await t.test(c.name, async () => {
      const res = await rawExchange(c.chunks());
      assert.ok(res.raw.startsWith('HTTP/1.1 '), `${c.name}: not an HTTP answer: ${res.raw.slice(0, 200)}`);
      assertProblem(res, c.want, c.name);
    });
  }
});

test('an Upgrade the server does not take (h2c, or a websocket on a plain route) is ignored: the request is served', async () => {
  const h2c = await rawExchange(['GET /v1/services/orders HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n'], { halfClose: false });
  assert.equal(h2c.status, 200, h2c.raw.slice(0, 300));
  assert.equal(JSON.parse(h2c.body).service, 'orders');
  assert.equal(h2c.headers.connection, 'close');
  const ws = await rawExchange(['GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n'], { halfClose: false });
  assert.equal(ws.status, 200, ws.raw.slice(0, 300));
  assert.equal(typeof JSON.parse(ws.body).revision, 'number');
  // A watch stream so asked for is served too, and also says Connection: close.
  const watch = await rawHead('GET /v1/watch?service=orders HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
  assert.match(watch, /^HTTP\/1\.1 200/);
  assert.match(watch, /\r\nconnection: close\r\n/i);
  assert.match(watch, /text\/event-stream/);
  const missing = await rawExchange(['GET /v1/nothing HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n'], { halfClose: false });
  assert.equal(missing.status, 404);
  assert.match(String(missing.headers['content-type']), /problem\+json/);
});

test('an Upgrade request refused before any route (Switchboard-Strict, no Host) has its connection ended after the answer', async () => {
  const connections = (): Promise<number> => new Promise((resolve, reject) => app.server.getConnections((err, n) => (err ? reject(err) : resolve(n))));
  const before = await connections();
  const requests = [
    'GET /v1/services?bogus=1 HTTP/1.1\r\nHost: x\r\nSwitchboard-Strict: true\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n',
    'GET /v1/services HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n',
  ];
  // Each waits for the server to close (rawExchange resolves on close): it must, after the answer.
  const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => rawExchange([requests[i % 2] as string], { halfClose: false, timeoutMs: 3_000 })));
  for (const a of answers) {
    assert.equal(a.status, 400, a.raw.slice(0, 300));
    assert.match(String(a.headers['content-type']), /problem\+json/);
  }
  const t0 = Date.now();
  while ((await connections()) > before && Date.now() - t0 < 3_000) await new Promise((r) => setTimeout(r, 20));
  assert.ok((await connections()) <= before, `${await connections()} connections open, ${before} before`);
});

test('a blocking query sent with an Upgrade gives its slot back when the client leaves', async () => {
  const index = JSON.parse((await rawExchange(['GET /v1/services/orders HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'])).body).revision;
  const waiting = async () => Number(/^switchboard_blocking_queries (\d+)/m.exec((await rawExchange(['GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'])).body)?.[1]);
  const socket = net.connect(port, '127.0.0.1');
  await new Promise<void>((r) => socket.once('connect', () => r()));
  socket.on('error', () => undefined);
  socket.write(`GET /v1/services/orders?index=${index}&wait=8s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n`);
  const t0 = Date.now();
  while ((await waiting()) !== 1 && Date.now() - t0 < 3_000) await new Promise((r) => setTimeout(r, 20));
  assert.equal(await waiting(), 1, 'the query waits');
  socket.destroy();
  const t1 = Date.now();
  while ((await waiting()) !== 0 && Date.now() - t1 < 3_000) await new Promise((r) => setTimeout(r, 20));
  assert.equal(await waiting(), 0);
  assert.ok(Date.now() - t1 < 2_000, `released ${Date.now() - t1} ms after the client left`);
});

test('an HTTP/1.0 request, which has no Host header to give, is served', async () => {
  const res = await rawExchange(['GET /v1/status HTTP/1.0\r\n\r\n']);
  assert.equal(res.status, 200, res.raw.slice(0, 300));
  assert.equal(typeof JSON.parse(res.body).revision, 'number');
});

test('a truncated body on a connection that stays open does not block other clients', async () => {
  const socket = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve) => socket.on('connect', () => resolve()));
  socket.on('error', () => undefined);
  socket.write('PUT /v1/services/orders/instances/t-2 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"address"');
  const res = await fetch(`http://127.0.0.1:${port}/v1/status`);
  assert.equal(res.status, 200);
  socket.destroy();
});

// ---- afterwards the node still works ----

test('after the battery the node answers /v1/status and takes a normal registration', async () => {
  const status = await fetch(`http://127.0.0.1:${port}/v1/status`);
  assert.equal(status.status, 200);
  const s = (await status.json()) as { nodeId: string; mode: string };
  assert.equal(s.nodeId, 't');
  assert.equal(s.mode, 'standalone');

  const leaseRes = await fetch(`http://127.0.0.1:${port}/v1/leases`, { method: 'POST', headers: JSON_CT, body: JSON.stringify({ ttlMs: 10_000 }) });
  assert.equal(leaseRes.status, 201);
  const { leaseId } = (await leaseRes.json()) as { leaseId: string };
  const put1 = await fetch(`http://127.0.0.1:${port}/v1/services/after/instances/a-1`, { method: 'PUT', headers: JSON_CT, body: JSON.stringify({ ...REG, leaseId, tags: ['ok'] }) });
  assert.equal(put1.status, 200);
  const got = await fetch(`http://127.0.0.1:${port}/v1/services/after/instances/a-1`);
  assert.equal(got.status, 200);
  const inst = (await got.json()) as { leaseId: string; tags: string[] };
  assert.equal(inst.leaseId, leaseId);
  assert.deepEqual(inst.tags, ['ok']);
  const ka = await fetch(`http://127.0.0.1:${port}/v1/leases/${leaseId}/keepalive`, { method: 'PUT' });
  assert.equal(ka.status, 200);
});
