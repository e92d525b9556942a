// Unit tests of the validators of api-v1.md: names, addresses, versions, durations, and
// every limit exactly at its value and one past it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DEFAULT_LIMITS,
  SwitchboardError,
  formatDuration,
  isAddress,
  isIPv4,
  isIPv6,
  parseDuration,
  completeCheckSpec,
  validateBatch,
  validateCheckReport,
  validateConsumerReport,
  validateServiceSettings,
  validateInstanceId,
  validateInstanceInput,
  validateLabel,
  validateLeaseRequest,
  validateStatusBody,
  validateVersion,
  validateVersionRange,
  type ErrorCode,
  type Limits,
} from '../src/index.js';

const L: Limits = DEFAULT_LIMITS;
const base = { address: '10.0.0.5', port: 8080 };

/** Asserts that fn throws a SwitchboardError with this code (and field / limit). */
function throwsCode(fn: () => unknown, code: ErrorCode, expect: { field?: string; limit?: string } = {}): SwitchboardError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof SwitchboardError, `expected a SwitchboardError ${code}, got ${String(caught)}`);
  const e = caught as SwitchboardError;
  assert.equal(e.code, code, e.message);
  assert.ok(e.hint && e.hint.length > 0, 'every validation error has a hint');
  if (expect.field !== undefined) assert.equal(e.field, expect.field);
  if (code === 'LIMIT_EXCEEDED') {
    assert.ok(expect.limit, 'test must name the limit');
    assert.equal(e.limit, expect.limit);
    assert.ok(e.message.includes(expect.limit as string), `detail "${e.message}" names ${expect.limit}`);
  }
  return e;
}

const input = (extra: Record<string, unknown>) => validateInstanceInput({ ...base, ...extra }, L);

test('IPv4 literals', () => {
  for (const ok of ['0.0.0.0', '10.0.0.5', '127.0.0.1', '255.255.255.255', '192.168.1.10']) assert.ok(isIPv4(ok), ok);
  for (const bad of ['256.0.0.1', '1.2.3', '1.2.3.4.5', '01.2.3.4', '1.2.3.04', ' 1.2.3.4', '1.2.3.4 ', '', '1..2.3', 'a.b.c.d', '-1.2.3.4']) {
    assert.ok(!isIPv4(bad), bad);
  }
});

test('IPv6 literals', () => {
  const ok = ['::', '::1', '1::', '1:2:3:4:5:6:7:8', 'fe80::1', '2001:db8::', '2001:DB8:0:0:8:800:200C:417A', '1:2:3:4:5:6:7::', '::ffff:10.0.0.5', '1:2:3:4:5:6:1.2.3.4', '64:ff9b::192.0.2.33'];
  for (const a of ok) assert.ok(isIPv6(a), a);
  const bad = [
    '1:2:3:4:5:6:7:8:9',
    '1:2:3:4:5:6:7:8::',
    '1::2::3',
    ':::',
    ':1:2:3:4:5:6:7',
    '1:2:3:4:5:6:7:',
    '12345::',
    'g::1',
    '1.2.3.4::', // an IPv4 part must end the address
    '::1.2.3.4:1',
    '1:2:3:4:5:6:7:1.2.3.4', // 7 groups + IPv4 = 9 slots
    '::1.2.3',
    '::256.1.1.1',
    'fe80::1%eth0',
    '[::1]',
    '',
    '1.2.3.4',
  ];
  for (const a of bad) assert.ok(!isIPv6(a), a);
});

test('addresses: hostnames and IP literals, at most 253 characters', () => {
  for (const ok of ['localhost', 'orders.internal', 'a-b.example.com', 'example.com.', 'A.B.C', 'x', '10.0.0.5', '::1', 'fe80::1', 'a1.b2']) assert.ok(isAddress(ok), ok);
  for (const bad of ['', ' ', 'my host', 'http://10.0.0.5', '10.0.0.5:8080', '-a.com', 'a-.com', 'a..b', '.a', 'a_b.com', 'a/b', '999.1.1.1', '1.2.3', '1.2.3.4.', 'a'.repeat(64) + '.com', '1.2.3.4::', 'ünicode.de']) {
    assert.ok(!isAddress(bad), JSON.stringify(bad));
  }
  const label = (c: string, n: number) => c.repeat(n);
  const at253 = [label('a', 63), label('b', 63), label('c', 63), label('d', 61)].join('.');
  assert.equal(at253.length, 253);
  assert.ok(isAddress(at253));
  const at254 = [label('a', 63), label('b', 63), label('c', 63), label('d', 62)].join('.');
  assert.ok(!isAddress(at254));
  assert.deepEqual(input({ address: at253 }).address, at253);
  throwsCode(() => input({ address: at254 }), 'LIMIT_EXCEEDED', { field: 'address', limit: 'maxAddressLength' });
  throwsCode(() => input({ address: 'my host' }), 'INVALID_ARGUMENT', { field: 'address' });
  throwsCode(() => input({ address: 42 }), 'INVALID_ARGUMENT', { field: 'address' });
  const missing = throwsCode(() => validateInstanceInput({ port: 80 }, L), 'INVALID_ARGUMENT', { field: 'address' });
  assert.match(missing.message, /address is required/);
});

test('ports and weights at their edges', () => {
  assert.equal(input({ port: 1 }).port, 1);
  assert.equal(input({ port: 65535 }).port, 65535);
  for (const bad of [0, 65536, -1, 1.5, '8080', null, true, Number.NaN]) throwsCode(() => input({ port: bad }), 'INVALID_ARGUMENT', { field: 'port' });
  throwsCode(() => validateInstanceInput({ address: 'a' }, L), 'INVALID_ARGUMENT', { field: 'port' });
  assert.equal(input({}).weight, 100);
  assert.equal(input({ weight: 0 }).weight, 0);
  assert.equal(input({ weight: 10000 }).weight, 10000);
  for (const bad of [-1, 10001, '10', 1.5]) throwsCode(() => input({ weight: bad }), 'INVALID_ARGUMENT', { field: 'weight' });
});

test('DNS labels (service names, namespaces, zones)', () => {
  for (const ok of ['a', '0', 'orders', 'a-b', 'a1', 'a'.repeat(63), '1a']) assert.equal(validateLabel(ok, 'service', 'service name'), ok);
  for (const bad of ['', 'A', 'Orders', 'a_b', '-a', 'a-', 'a.b', 'a b', 'a'.repeat(64), 'é', 5, null, undefined]) {
    throwsCode(() => validateLabel(bad, 'service', 'service name'), 'INVALID_ARGUMENT', { field: 'service' });
  }
  throwsCode(() => input({ zone: 'EU-west' }), 'INVALID_ARGUMENT', { field: 'zone' });
  assert.equal(input({ zone: 'eu-west-1' }).zone, 'eu-west-1');
});

test('instance ids: 1-128 characters of A-Za-z0-9._:-', () => {
  for (const ok of ['a', 'A.b_c:d-e', 'x'.repeat(128), '10.0.0.5:8080']) assert.equal(validateInstanceId(ok), ok);
  for (const bad of ['', 'x'.repeat(129), 'a/b', 'a b', 'a%2Fb', 'é', 7, null, '.', '..']) throwsCode(() => validateInstanceId(bad), 'INVALID_ARGUMENT', { field: 'instanceId' });
  for (const ok of ['...', '.a', 'a..']) assert.equal(validateInstanceId(ok), ok, 'only the path segments "." and ".." are refused');
  throwsCode(() => validateInstanceId('..', 'checkId'), 'INVALID_ARGUMENT', { field: 'checkId' });
});

test('versions are semver versions, build metadata included', () => {
  for (const ok of ['1.2.3', '0.0.0', '2.0.0-rc.1', '1.2.3+build.5', '1.2.3-alpha.1+001', '10.20.30']) assert.equal(validateVersion(ok, 'version', L), ok);
  for (const bad of ['v1.2.3', '1.2', '1', '=1.2.3', ' 1.2.3', '1.2.3 ', '01.2.3', '1.2.3-', '1.2.3+', 'latest', '', 1, null]) {
    throwsCode(() => validateVersion(bad, 'version', L), 'INVALID_ARGUMENT', { field: 'version' });
  }
  const at64 = '1.0.0-' + 'a'.repeat(58);
  assert.equal(at64.length, 64);
  assert.equal(validateVersion(at64, 'version', L), at64);
  throwsCode(() => validateVersion(at64 + 'a', 'version', L), 'LIMIT_EXCEEDED', { field: 'version', limit: 'maxVersionLength' });
});

test('version ranges use npm semver syntax', () => {
  for (const ok of ['^1.2.0', '>=2 <3', '1.x', '*', '~1.4', '1.2.3 - 2.0.0', '^1 || ^2']) assert.equal(validateVersionRange(ok), ok);
  for (const bad of ['abc', '>=a', '1 -', 'latest', '!1', '^^1']) throwsCode(() => validateVersionRange(bad), 'INVALID_ARGUMENT', { field: 'version' });
});

test('durations', () => {
  assert.equal(parseDuration('500ms'), 500);
  assert.equal(parseDuration('30s'), 30_000);
  assert.equal(parseDuration('5m'), 300_000);
  assert.equal(parseDuration('1h'), 3_600_000);
  assert.equal(parseDuration('0s'), 0);
  for (const bad of ['5', '10x', '1.5s', '-1s', '', 's', 'ms', '5 m', '5M', '1d', '1e3ms', '0x10s', '1234567890123s']) assert.equal(parseDuration(bad), undefined, bad);
  assert.equal(parseDuration(5 as unknown as string), undefined);
  assert.equal(parseDuration(null as unknown as string), undefined);
  assert.equal(formatDuration(300_000), '5m');
  assert.equal(formatDuration(1500), '1500ms');
  assert.equal(formatDuration(30_000), '30s');
  assert.equal(formatDuration(0), '0ms');
  for (const ms of [1, 999, 1000, 60_000, 3_600_000, 5_400_000]) assert.equal(parseDuration(formatDuration(ms)), ms);
});

test('protocol and admin status are closed sets', () => {
  assert.equal(input({}).protocol, 'http');
  for (const p of ['http', 'https', 'grpc', 'tcp']) assert.equal(input({ protocol: p }).protocol, p);
  for (const bad of ['ftp', 'HTTP', '', 1]) throwsCode(() => input({ protocol: bad }), 'INVALID_ARGUMENT', { field: 'protocol' });
  assert.equal(validateStatusBody({ status: 'draining' }), 'draining');
  throwsCode(() => validateStatusBody({ status: 'down' }), 'INVALID_ARGUMENT', { field: 'status' });
  assert.match(throwsCode(() => validateStatusBody({}), 'INVALID_ARGUMENT', { field: 'status' }).message, /status is required/);
  throwsCode(() => validateStatusBody([]), 'INVALID_ARGUMENT', { field: 'body' });
});

test('tags: at most 64, each at most 128 characters', () => {
  const tags = (n: number) => Array.from({ length: n }, (_, i) => `t${i}`);
  assert.equal(input({ tags: tags(64) }).tags.length, 64);
  throwsCode(() => input({ tags: tags(65) }), 'LIMIT_EXCEEDED', { field: 'tags', limit: 'maxTagsPerInstance' });
  assert.deepEqual(input({ tags: ['x'.repeat(128)] }).tags, ['x'.repeat(128)]);
  throwsCode(() => input({ tags: ['ok', 'x'.repeat(129)] }), 'LIMIT_EXCEEDED', { field: 'tags/1', limit: 'maxTagLength' });
  // Characters, as the contract says, not UTF-16 units: 128 emoji are 256 units.
  assert.deepEqual(input({ tags: ['🚀'.repeat(128)] }).tags, ['🚀'.repeat(128)]);
  throwsCode(() => input({ tags: ['🚀'.repeat(129)] }), 'LIMIT_EXCEEDED', { field: 'tags/0', limit: 'maxTagLength' });
  assert.deepEqual(Object.keys(input({ metadata: { ['é'.repeat(20) + '🚀'.repeat(100)]: 'v' } }).metadata).length, 1, 'a metadata key of 120 characters');
  throwsCode(() => input({ tags: 'a,b' }), 'INVALID_ARGUMENT', { field: 'tags' });
  throwsCode(() => input({ tags: ['a', 1] }), 'INVALID_ARGUMENT', { field: 'tags/1' });
  throwsCode(() => input({ tags: [''] }), 'INVALID_ARGUMENT', { field: 'tags/0' });
  assert.deepEqual(input({ tags: null }).tags, []);
});

test('metadata: at most 64 keys of 128 characters and 16 KiB in total', () => {
  const keys = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, 'v']));
  assert.equal(Object.keys(input({ metadata: keys(64) }).metadata).length, 64);
  throwsCode(() => input({ metadata: keys(65) }), 'LIMIT_EXCEEDED', { field: 'metadata', limit: 'maxMetadataKeys' });
  assert.ok(input({ metadata: { ['k'.repeat(128)]: 'v' } }));
  throwsCode(() => input({ metadata: { ['k'.repeat(129)]: 'v' } }), 'LIMIT_EXCEEDED', { limit: 'maxMetadataKeyLength' });
  // Total bytes are key + value, in UTF-8.
  assert.ok(input({ metadata: { k: 'v'.repeat(16 * 1024 - 1) } }));
  throwsCode(() => input({ metadata: { k: 'v'.repeat(16 * 1024) } }), 'LIMIT_EXCEEDED', { field: 'metadata', limit: 'maxMetadataBytes' });
  assert.ok(input({ metadata: { k: 'é'.repeat((16 * 1024 - 2) / 2), l: '' } }));
  throwsCode(() => input({ metadata: { k: 'é'.repeat((16 * 1024) / 2) } }), 'LIMIT_EXCEEDED', { limit: 'maxMetadataBytes' });
  throwsCode(() => input({ metadata: ['a'] }), 'INVALID_ARGUMENT', { field: 'metadata' });
  throwsCode(() => input({ metadata: 'a=b' }), 'INVALID_ARGUMENT', { field: 'metadata' });
  throwsCode(() => input({ metadata: { a: 1 } }), 'INVALID_ARGUMENT', { field: 'metadata/a' });
  throwsCode(() => input({ metadata: { a: null } }), 'INVALID_ARGUMENT', { field: 'metadata/a' });
  throwsCode(() => input({ metadata: { '': 'v' } }), 'INVALID_ARGUMENT');
});

test('metadata keys that name Object.prototype members are kept as data', () => {
  const raw = JSON.parse('{"address": "10.0.0.5", "port": 80, "metadata": {"__proto__": "x", "constructor": "y"}}');
  const md = validateInstanceInput(raw, L).metadata;
  assert.equal(Object.getPrototypeOf(md), Object.prototype);
  assert.deepEqual(Object.keys(md).sort(), ['__proto__', 'constructor']);
  assert.equal(JSON.stringify(md), '{"__proto__":"x","constructor":"y"}');
});

test('checks: at most 8, with a known type and valid durations', () => {
  const check = { type: 'tcp', interval: '10s' };
  assert.equal(input({ checks: Array.from({ length: 8 }, (_, i) => ({ ...check, id: `c${i}` })) }).checks.length, 8);
  throwsCode(() => input({ checks: Array.from({ length: 9 }, (_, i) => ({ ...check, id: `c${i}` })) }), 'LIMIT_EXCEEDED', { field: 'checks', limit: 'maxChecksPerInstance' });
  throwsCode(() => input({ checks: {} }), 'INVALID_ARGUMENT', { field: 'checks' });
  throwsCode(() => input({ checks: ['tcp'] }), 'INVALID_ARGUMENT', { field: 'checks/0' });
  throwsCode(() => input({ checks: [{ type: 'icmp' }] }), 'INVALID_ARGUMENT', { field: 'checks/0/type' });
  throwsCode(() => input({ checks: [{ type: 'http', interval: '10x' }] }), 'INVALID_ARGUMENT', { field: 'checks/0/interval' });
  throwsCode(() => input({ checks: [{ type: 'http', interval: 10 }] }), 'INVALID_ARGUMENT', { field: 'checks/0/interval' });
  throwsCode(() => input({ checks: [{ type: 'http', interval: '50ms' }] }), 'INVALID_ARGUMENT', { field: 'checks/0/interval' });
  throwsCode(() => input({ checks: [{ ...check, id: 'a' }, { ...check, id: 'a' }] }), 'INVALID_ARGUMENT', { field: 'checks' });
  assert.equal(input({ checks: [{ type: 'http', interval: '100ms' }] }).checks[0]?.intervalMs, 100);
});

test('check specs: defaults, thresholds, and old specs completed the same way', () => {
  const [http, ttl] = input({ checks: [{ type: 'http' }, { type: 'ttl' }] }).checks;
  assert.deepEqual(http, { id: 'http-0', type: 'http', target: null, intervalMs: 10_000, timeoutMs: 2_000, ttlMs: null, jitterMs: 1_000, expectBody: null, grpcService: null, passingThreshold: 1, criticalThreshold: 2, deregisterCriticalAfterMs: null });
  assert.equal(ttl?.criticalThreshold, 1, 'a ttl report is the service\'s own verdict');
  const old = { id: 'h', type: 'http', target: null, intervalMs: 10_000, timeoutMs: 2_000, ttlMs: null } as unknown as Parameters<typeof completeCheckSpec>[0];
  assert.equal(JSON.stringify(completeCheckSpec(old)), JSON.stringify({ ...http, id: 'h' }), 'same fields in the same order');
  const full = input({ checks: [{ type: 'grpc', target: '[::1]:9090', grpcService: 'a.B', jitter: '0s', passingThreshold: 3, criticalThreshold: 5, deregisterCriticalAfter: '10m' }] }).checks[0];
  assert.deepEqual([full?.jitterMs, full?.passingThreshold, full?.criticalThreshold, full?.deregisterCriticalAfterMs, full?.grpcService], [0, 3, 5, 600_000, 'a.B']);
  throwsCode(() => input({ checks: [{ type: 'grpc', target: '[::1]' }] }), 'INVALID_ARGUMENT', { field: 'checks/0/target' });
  // An http target with port 0, or with user:password@ (never sent), is refused; the
  // refusal does not echo the credentials.
  for (const target of ['http://10.0.0.5:0/health', 'https://[::1]:00/']) throwsCode(() => input({ checks: [{ type: 'http', target }] }), 'INVALID_ARGUMENT', { field: 'checks/0/target' });
  for (const target of ['http://admin:s3cret@10.0.0.5:8080/health', 'https://token@10.0.0.5/', 'http://:s3cret@10.0.0.5/']) {
    const e = throwsCode(() => input({ checks: [{ type: 'tcp', target: '10.0.0.5:1' }, { type: 'http', target }] }), 'INVALID_ARGUMENT', { field: 'checks/1/target' });
    assert.doesNotMatch(e.message + e.hint, /s3cret|token/, target);
    assert.match(e.hint ?? '', /no credentials/);
  }
  assert.equal(input({ checks: [{ type: 'http', target: 'http://10.0.0.5:8080/health?user=a' }] }).checks[0]?.target, 'http://10.0.0.5:8080/health?user=a');
  throwsCode(() => input({ checks: [{ type: 'http', criticalThreshold: 101 }] }), 'INVALID_ARGUMENT', { field: 'checks/0/criticalThreshold' });
});

test('ttl check reports, service settings and consumer reports', () => {
  assert.deepEqual(validateCheckReport({ status: 'fail', output: 'disk full' }, L), { status: 'critical', output: 'disk full' });
  assert.deepEqual(validateCheckReport({ status: 'warn' }, L), { status: 'warning', output: '' });
  throwsCode(() => validateCheckReport({ status: 'up' }, L), 'INVALID_ARGUMENT', { field: 'status' });
  throwsCode(() => validateCheckReport({ status: 'pass', output: 'x'.repeat(L.maxCheckOutputLength + 1) }, L), 'LIMIT_EXCEEDED', { field: 'output', limit: 'maxCheckOutputLength' });
  assert.deepEqual(validateServiceSettings({ protectThreshold: 1 }), { protectThreshold: 1 });
  assert.deepEqual(validateServiceSettings({ protectThreshold: null }), { protectThreshold: null });
  throwsCode(() => validateServiceSettings({ protectThreshold: 0 }), 'INVALID_ARGUMENT', { field: 'protectThreshold' });
  assert.deepEqual(validateConsumerReport({ reporter: 'c-1', kind: 'timeout' }, L), { reporter: 'c-1', kind: 'timeout', detail: null });
  throwsCode(() => validateConsumerReport({ reporter: 'c 1', kind: 'timeout' }, L), 'INVALID_ARGUMENT', { field: 'reporter' });
  assert.equal(validateConsumerReport({ reporter: '.', kind: 'timeout' }, L).reporter, '.', 'a body field, not a path segment');
  throwsCode(() => validateConsumerReport({ reporter: 'c', kind: 'oops' }, L), 'INVALID_ARGUMENT', { field: 'kind' });
});

test('lease TTL exactly at and one past each limit', () => {
  assert.equal(validateLeaseRequest({ ttlMs: L.leaseTtlMinMs }, L), L.leaseTtlMinMs);
  assert.equal(validateLeaseRequest({ ttlMs: L.leaseTtlMaxMs }, L), L.leaseTtlMaxMs);
  throwsCode(() => validateLeaseRequest({ ttlMs: L.leaseTtlMinMs - 1 }, L), 'LIMIT_EXCEEDED', { field: 'ttlMs', limit: 'leaseTtlMinMs' });
  throwsCode(() => validateLeaseRequest({ ttlMs: L.leaseTtlMaxMs + 1 }, L), 'LIMIT_EXCEEDED', { field: 'ttlMs', limit: 'leaseTtlMaxMs' });
  for (const bad of ['10000', 1500.5, null, Number.POSITIVE_INFINITY]) throwsCode(() => validateLeaseRequest({ ttlMs: bad }, L), 'INVALID_ARGUMENT', { field: 'ttlMs' });
  assert.match(throwsCode(() => validateLeaseRequest({}, L), 'INVALID_ARGUMENT', { field: 'ttlMs' }).message, /ttlMs is required/);
  throwsCode(() => validateLeaseRequest(undefined, L), 'INVALID_ARGUMENT', { field: 'body' });
  throwsCode(() => validateLeaseRequest(10000, L), 'INVALID_ARGUMENT', { field: 'body' });
});

test('lease ids in a registration', () => {
  assert.equal(input({ leaseId: 'abc123' }).leaseId, 'abc123');
  assert.equal(input({ leaseId: null }).leaseId, null);
  for (const bad of [123, '', 'a b', 'x'.repeat(129)]) throwsCode(() => input({ leaseId: bad }), 'INVALID_ARGUMENT', { field: 'leaseId' });
});

test('bodies must be JSON objects', () => {
  for (const raw of [undefined, null]) throwsCode(() => validateInstanceInput(raw, L), 'INVALID_ARGUMENT', { field: 'body' });
  for (const raw of [[], 42, 'x', true]) throwsCode(() => validateInstanceInput(raw, L), 'INVALID_ARGUMENT', { field: 'body' });
  // Unknown fields are ignored.
  assert.equal(validateInstanceInput({ ...base, color: 'blue', nested: { a: [1] } }, L).port, 8080);
});

test('batches: at most 1000 items; every failure names its item', () => {
  const item = (i: number, extra: Record<string, unknown> = {}) => ({ service: 'orders', id: `o-${i}`, ...base, ...extra });
  const items = (n: number) => Array.from({ length: n }, (_, i) => item(i));
  assert.equal(validateBatch({ instances: items(1000) }, L, 'default').length, 1000);
  throwsCode(() => validateBatch({ instances: items(1001) }, L, 'default'), 'LIMIT_EXCEEDED', { field: 'instances', limit: 'maxBatchItems' });
  throwsCode(() => validateBatch({ instances: [] }, L, 'default'), 'INVALID_ARGUMENT', { field: 'instances' });
  throwsCode(() => validateBatch({ instances: {} }, L, 'default'), 'INVALID_ARGUMENT', { field: 'instances' });
  throwsCode(() => validateBatch({}, L, 'default'), 'INVALID_ARGUMENT', { field: 'instances' });
  throwsCode(() => validateBatch([], L, 'default'), 'INVALID_ARGUMENT', { field: 'body' });

  const cases: [unknown, ErrorCode, string, string?][] = [
    [[item(0), item(1, { port: 0 })], 'INVALID_ARGUMENT', 'instances/1/port'],
    [[item(0), 5], 'INVALID_ARGUMENT', 'instances/1'],
    [[null], 'INVALID_ARGUMENT', 'instances/0'],
    [[item(0, { service: 'Orders' })], 'INVALID_ARGUMENT', 'instances/0/service'],
    [[{ ...base, id: 'x' }], 'INVALID_ARGUMENT', 'instances/0/service'],
    [[{ ...base, service: 'a' }], 'INVALID_ARGUMENT', 'instances/0/id'],
    [[item(0, { namespace: 'BAD' })], 'INVALID_ARGUMENT', 'instances/0/namespace'],
    [[item(0), item(1), item(2, { metadata: { a: 1 } })], 'INVALID_ARGUMENT', 'instances/2/metadata/a'],
    [[item(0, { tags: Array(65).fill('t') })], 'LIMIT_EXCEEDED', 'instances/0/tags', 'maxTagsPerInstance'],
    [[item(0), item(0)], 'INVALID_ARGUMENT', 'instances/1/id'],
  ];
  for (const [instances, code, field, limit] of cases) {
    const e = throwsCode(() => validateBatch({ instances }, L, 'default'), code, limit ? { field, limit } : { field });
    const index = field.split('/')[1];
    assert.ok(e.message.startsWith(`instances/${index}: `), `detail "${e.message}" names the item`);
  }
  // The same id in two namespaces is two instances; a null namespace is the default.
  assert.equal(validateBatch({ instances: [item(0), item(0, { namespace: 'other' })] }, L, 'default').length, 2);
  assert.equal(validateBatch({ instances: [item(0, { namespace: null })] }, L, 'ns1')[0]?.namespace, 'ns1');
});

test('problems carry type, title, status, detail, code and hint', () => {
  const e = throwsCode(() => input({ tags: Array(65).fill('t') }), 'LIMIT_EXCEEDED', { field: 'tags', limit: 'maxTagsPerInstance' });
  const p = e.toProblem();
  assert.equal(p.type, 'urn:switchboard:error:LIMIT_EXCEEDED');
  assert.equal(p.title, 'Limit exceeded');
  assert.equal(p.status, 400);
  assert.equal(p.code, 'LIMIT_EXCEEDED');
  assert.equal(p.limit, 'maxTagsPerInstance');
  assert.ok(p.detail.includes('maxTagsPerInstance'));
  assert.ok(p.hint);
});
