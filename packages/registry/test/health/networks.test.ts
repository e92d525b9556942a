// Goal: the network policy of check targets (checkDenyNetworks, checkAllowNetworks) decides
// on addresses, not names: deny wins over allow, IPv4-mapped IPv6 and the unspecified
// address are caught, a name is resolved once per connection with every address checked,
// and the connection goes only to what was checked (no DNS rebinding between check and
// connect). A refused probe never connects: it returns at once, whatever its timeout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { LookupAddress } from 'node:dns';
import { Server, ServerCredentials, type ServerUnaryCall, type sendUnaryData } from '@grpc/grpc-js';
import { validateInstanceInput, DEFAULT_LIMITS, type CheckSpec } from '@switchboard/protocol';
import { GrpcProber, HEALTH_CHECK_METHOD } from '../../src/health/grpc.js';
import { HttpProber } from '../../src/health/http.js';
import { CheckNetworks, DEFAULT_DENY_NETWORKS, TargetDenied, TargetGuard, embeddedIPv4, logDenials, numericIPv4, parseNetwork, targetHost } from '../../src/health/networks.js';
import { tcpProbe } from '../../src/health/tcp.js';

const spec = (type: 'http' | 'tcp' | 'grpc', timeout = '10s'): CheckSpec => (validateInstanceInput({ address: '10.0.0.1', port: 1, checks: [{ type, timeout, interval: '10s' }] }, DEFAULT_LIMITS).checks[0] as CheckSpec);

/** A TCP server on `host` that counts the connections it accepts (and closes them). */
async function counting(host = '127.0.0.1'): Promise<{ port: number; connections: () => number; close(): void }> {
  let n = 0;
  const srv = net.createServer((s) => {
    n++;
    s.destroy();
  });
  await new Promise<void>((r) => srv.listen(0, host, r));
  return { port: (srv.address() as AddressInfo).port, connections: () => n, close: () => srv.close() };
}

/** A resolver that answers from a script, one answer per call, and counts the calls. */
function scripted(answers: string[][]): { resolver: ConstructorParameters<typeof TargetGuard>[1]; calls: () => number } {
  let calls = 0;
  return {
    calls: () => calls,
    resolver: (_host, _opts, cb) => {
      const list = answers[Math.min(calls++, answers.length - 1)] as string[];
      setImmediate(() => cb(null, list.map((address): LookupAddress => ({ address, family: net.isIP(address) }))));
    },
  };
}

test('networks: CIDR or one address, IPv4 or IPv6; anything else is not a network', () => {
  for (const ok of ['10.0.0.0/8', '169.254.0.0/16', '0.0.0.0/0', '10.0.0.5', 'fe80::/10', '::1', '::/0', '::ffff:127.0.0.0/104']) assert.ok(parseNetwork(ok), ok);
  for (const bad of ['', '10.0.0.0/33', 'fe80::/129', '10.0.0/8', '10.0.0.0/', '10.0.0.0/-1', 'localhost', '10.0.0.0/8/8', 'fe80::1%eth0', '1.2.3.4/0x8', ' /8']) assert.equal(parseNetwork(bad), null, bad);
  assert.throws(() => new CheckNetworks(['10.0.0.0/40'], []), /not a network/);
});

test('the policy: deny wins over allow, an empty allow list allows everything not denied, mapped and unspecified addresses are caught', () => {
  const p = new CheckNetworks(['127.0.0.0/8', '10.9.0.0/16'], []);
  assert.deepEqual(p.denial('127.0.0.1'), { address: '127.0.0.1', network: '127.0.0.0/8' });
  assert.equal(p.denial('10.8.0.1'), null, 'not denied, no allow list: allowed');
  assert.deepEqual(p.denial('::1'), { address: '::1', network: '127.0.0.0/8' }, 'loopback is the node itself in either family');
  // IPv4-mapped IPv6, in every spelling, is the IPv4 address it maps.
  for (const mapped of ['::ffff:127.0.0.1', '::ffff:7f00:1', '0:0:0:0:0:ffff:7f00:1', '::FFFF:127.0.0.1']) assert.equal(p.denial(mapped)?.network, '127.0.0.0/8', mapped);
  // 0.0.0.0 and :: connect to the node itself: they count as loopback.
  assert.equal(p.denial('0.0.0.0')?.network, '127.0.0.0/8');
  assert.equal(p.denial('::ffff:0.0.0.0')?.network, '127.0.0.0/8');
  assert.equal(new CheckNetworks(['::1/128'], []).denial('::')?.network, '::1/128');

  const allow = new CheckNetworks(['10.9.0.0/16'], ['10.0.0.0/8', 'fd00::/8']);
  assert.equal(allow.denial('10.1.2.3'), null);
  assert.equal(allow.denial('fd12::1'), null);
  assert.deepEqual(allow.denial('192.168.1.1'), { address: '192.168.1.1', network: null }, 'outside the allow list');
  assert.deepEqual(allow.denial('10.9.0.1'), { address: '10.9.0.1', network: '10.9.0.0/16' }, 'deny wins over allow');
  assert.equal(allow.denial('::ffff:10.1.2.3'), null, 'a mapped address inside the allow list');
  assert.deepEqual(allow.denial('0.0.0.0'), { address: '0.0.0.0', network: null }, 'the unspecified address reaches loopback, outside the allow list');

  const open = new CheckNetworks([], []);
  assert.equal(open.denial('169.254.169.254'), null, 'an empty deny list denies nothing');
  assert.deepEqual(JSON.parse(JSON.stringify(allow)), { deny: ['10.9.0.0/16'], allow: ['10.0.0.0/8', 'fd00::/8'] });
});

test('loopback is the node itself in either family: denying 127.0.0.0/8 denies ::1, denying ::1/128 denies 127.0.0.0/8; an allow list is not widened', () => {
  const v4 = new CheckNetworks(['127.0.0.0/8'], []);
  for (const a of ['::1', '0:0:0:0:0:0:0:1', '::', '::ffff:127.0.0.1', '127.0.0.1']) assert.equal(v4.denial(a)?.network, '127.0.0.0/8', a);
  const v6 = new CheckNetworks(['::1/128'], []);
  for (const a of ['127.0.0.1', '127.1.2.3', '::ffff:127.0.0.1', '0.0.0.0', '::1']) assert.equal(v6.denial(a)?.network, '::1/128', a);
  // ::1 is checked as 127.0.0.1, the address a loopback entry most often names.
  assert.equal(new CheckNetworks(['127.0.0.1'], []).denial('::1')?.network, '127.0.0.1');
  assert.equal(new CheckNetworks(['127.0.0.2'], []).denial('::1'), null, 'one other loopback address is not the node itself');
  for (const a of ['::2', '128.0.0.1', '126.255.255.255', 'fe80::1']) assert.equal(v4.denial(a), null, a);
  // An allow list allows what it names: 127.0.0.1 stays allowed, ::1 is not added.
  const allow = new CheckNetworks([], ['127.0.0.1/32']);
  assert.equal(allow.denial('127.0.0.1'), null);
  assert.deepEqual(allow.denial('::1'), { address: '::1', network: null });
});

test('the default policy denies link-local in both families, the metadata services among them, in their mapped forms too', () => {
  assert.deepEqual([...DEFAULT_DENY_NETWORKS], ['169.254.0.0/16', 'fe80::/10', '100.100.100.200/32', '168.63.129.16/32', 'fd00:ec2::254/128', 'fd20:ce::254/128']);
  const p = CheckNetworks.DEFAULT;
  for (const a of ['169.254.169.254', '169.254.0.1', '::ffff:169.254.169.254', '::ffff:a9fe:a9fe', 'fe80::1', 'fe80::a9fe:a9fe', 'FE80::1%eth0']) assert.notEqual(p.denial(a), null, a);
  for (const a of ['127.0.0.1', '10.0.0.1', '::1', 'fd00:ec2::1', '169.255.0.1', '8.8.8.8']) assert.equal(p.denial(a), null, a);
});

test('the default policy denies the metadata and platform endpoints outside link-local: Alibaba Cloud, Azure, AWS and Google Cloud over IPv6', () => {
  const p = CheckNetworks.DEFAULT;
  const denied: [string, string][] = [
    ['100.100.100.200', '100.100.100.200/32'], // Alibaba Cloud metadata
    ['::ffff:100.100.100.200', '100.100.100.200/32'],
    ['168.63.129.16', '168.63.129.16/32'], // Azure wireserver
    ['::ffff:a83f:8110', '168.63.129.16/32'],
    ['fd00:ec2::254', 'fd00:ec2::254/128'], // AWS IMDS over IPv6
    ['FD00:EC2:0:0:0:0:0:254', 'fd00:ec2::254/128'],
    ['fd20:ce::254', 'fd20:ce::254/128'], // Google Cloud metadata over IPv6
  ];
  for (const [a, network] of denied) assert.deepEqual(p.denial(a), { address: a, network }, a);
  for (const a of ['100.100.100.201', '100.64.0.1', '168.63.129.17', 'fd00:ec2::253', 'fd20:ce::1', 'fd00::254']) assert.equal(p.denial(a), null, a);
});

test('an IPv6 address that carries an IPv4 address to a translator (NAT64 64:ff9b::/96, 6to4 2002::/16) is denied with the IPv4 address it carries', () => {
  assert.equal(embeddedIPv4('64:ff9b::a9fe:a9fe'), '169.254.169.254');
  assert.equal(embeddedIPv4('64:ff9b::169.254.169.254'), '169.254.169.254');
  assert.equal(embeddedIPv4('2002:a9fe:a9fe::1'), '169.254.169.254');
  assert.equal(embeddedIPv4('2002:a9fe:a9fe:1:2:3:4:5'), '169.254.169.254');
  for (const none of ['64:ff9b:1::a9fe:a9fe', '64:ff9b::1:a9fe:a9fe', 'fe80::a9fe:a9fe', '::ffff:a9fe:a9fe', '2001:db8::1', '169.254.169.254']) assert.equal(embeddedIPv4(none), null, none);

  const p = CheckNetworks.DEFAULT;
  const denied: [string, string][] = [
    ['64:ff9b::a9fe:a9fe', '169.254.0.0/16'],
    ['64:ff9b::169.254.169.254', '169.254.0.0/16'],
    ['64:FF9B:0:0:0:0:A9FE:A9FE', '169.254.0.0/16'],
    ['2002:a9fe:a9fe::', '169.254.0.0/16'],
    ['64:ff9b::6464:64c8', '100.100.100.200/32'],
    ['2002:a83f:8110::1', '168.63.129.16/32'],
  ];
  for (const [a, network] of denied) assert.deepEqual(p.denial(a), { address: a, network }, a);
  for (const a of ['64:ff9b::808:808', '2002:808:808::1', '64:ff9b::a00:1']) assert.equal(p.denial(a), null, a);
  assert.equal(new CheckNetworks(['10.0.0.0/8'], []).denial('64:ff9b::a00:1')?.network, '10.0.0.0/8');
  // Only denial widens: an allowed IPv4 network does not allow the NAT64 addresses of its members.
  const allow = new CheckNetworks([], ['10.0.0.0/8']);
  assert.deepEqual(allow.denial('64:ff9b::a00:1'), { address: '64:ff9b::a00:1', network: null });
  assert.equal(new CheckNetworks([], ['64:ff9b::/96']).denial('64:ff9b::a00:1'), null);
});

test('the host of a check target: the URL host of http targets, the host of host:port otherwise', () => {
  assert.equal(targetHost('http', 'http://169.254.169.254/latest/meta-data/'), '169.254.169.254');
  assert.equal(targetHost('http', 'https://[::ffff:169.254.169.254]:8443/x'), '::ffff:a9fe:a9fe', 'the URL parser normalises the literal');
  assert.equal(targetHost('http', 'http://0251.0376.0251.0376/'), '169.254.169.254', 'other IPv4 spellings are normalised');
  assert.equal(targetHost('tcp', '[fe80::1]:22'), 'fe80::1');
  assert.equal(targetHost('grpc', 'orders.internal:9090'), 'orders.internal');
  assert.equal(targetHost('tcp', 'nonsense'), null);
});

test('tcp and grpc targets in another spelling of IPv4 are the address, as http targets are; names stay names', () => {
  const spelled: [string, string][] = [
    ['0x7f.1:80', '127.0.0.1'],
    ['0x7f000001:80', '127.0.0.1'],
    ['0x7F.0.0.1:80', '127.0.0.1'],
    ['0xa9.0xfe.0xa9.0xfe:50051', '169.254.169.254'],
    ['0xa9.0xfea9fe:80', '169.254.169.254'],
    ['1.0x7f:80', '1.0.0.127'],
  ];
  for (const [target, address] of spelled) {
    assert.equal(targetHost('tcp', target), address, target);
    assert.equal(targetHost('grpc', target), address, target);
  }
  for (const name of ['db.0x7f', 'beef', 'cafe.internal', 'add.0x1', 'orders']) assert.equal(targetHost('tcp', `${name}:80`), name, name);
  assert.equal(numericIPv4('127.0.0.1'), null, 'already the address');
  assert.equal(numericIPv4('::1'), null);
  assert.equal(numericIPv4('0x7f.1'), '127.0.0.1');
  assert.equal(numericIPv4('a@127.0.0.1'), null, 'only the characters of a number');
});

test('the default policy refuses 169.254.169.254 before connecting, for http, tcp and grpc, at once and counted', async () => {
  const guard = new TargetGuard(CheckNetworks.DEFAULT);
  const httpProber = new HttpProber(guard);
  const grpcProber = new GrpcProber(guard);
  const signal = new AbortController().signal; // never aborted: a probe that connected would wait its 10 s
  try {
    const t0 = performance.now();
    const results = await Promise.all([
      httpProber.probe({ spec: spec('http'), target: 'http://169.254.169.254/latest/meta-data/' }, signal),
      tcpProbe(guard)({ spec: spec('tcp'), target: '169.254.169.254:80' }, signal),
      grpcProber.probe({ spec: spec('grpc'), target: '[::ffff:169.254.169.254]:50051' }, signal),
      tcpProbe(guard)({ spec: spec('tcp'), target: '[fe80::1]:22' }, signal),
    ]);
    const ms = performance.now() - t0;
    assert.deepEqual(results, [
      { status: 'critical', output: 'target http://169.254.169.254/latest/meta-data/ is in a denied network (169.254.0.0/16, checkDenyNetworks): not probed' },
      { status: 'critical', output: 'target 169.254.169.254:80 is in a denied network (169.254.0.0/16, checkDenyNetworks): not probed' },
      { status: 'critical', output: 'target [::ffff:169.254.169.254]:50051 is in a denied network (169.254.0.0/16, checkDenyNetworks): not probed' },
      { status: 'critical', output: 'target [fe80::1]:22 is in a denied network (fe80::/10, checkDenyNetworks): not probed' },
    ]);
    assert.ok(ms < 1_000, `refused before connecting (took ${Math.round(ms)} ms)`);
    assert.equal(guard.denied, 4);
  } finally {
    httpProber.close();
    grpcProber.close();
  }
});

test('a name is resolved once per probe, every address is checked, and the connection goes to the checked address only', async () => {
  const good = await counting('127.0.0.1');
  const other = await counting('127.0.0.2');
  // The allow list is 127.0.0.1 alone; the name answers 127.0.0.1 first, then a list with
  // 127.0.0.2 in it, then 127.0.0.2 alone (a rebinding name).
  const dns = scripted([['127.0.0.1'], ['127.0.0.1', '127.0.0.2'], ['127.0.0.2']]);
  const guard = new TargetGuard(new CheckNetworks([], ['127.0.0.1/32']), dns.resolver);
  const probe = tcpProbe(guard);
  const signal = new AbortController().signal;
  try {
    const first = await probe({ spec: spec('tcp'), target: `rebind.test:${good.port}` }, signal);
    assert.deepEqual(first, { status: 'passing', output: `TCP connect to rebind.test:${good.port} succeeded` });
    assert.equal(dns.calls(), 1, 'one resolution for one probe');
    assert.equal(good.connections(), 1);
    const mixed = await probe({ spec: spec('tcp'), target: `rebind.test:${good.port}` }, signal);
    assert.equal(mixed.output, `target rebind.test:${good.port} resolves to an address outside the allowed networks (checkAllowNetworks): not probed`, 'one address outside is enough');
    const moved = await probe({ spec: spec('tcp'), target: `rebind.test:${other.port}` }, signal);
    assert.equal(moved.status, 'critical');
    assert.equal(dns.calls(), 3);
    assert.equal(good.connections(), 1, 'no connection after the refusals');
    assert.equal(other.connections(), 0, 'the address outside the allow list was never connected to');
    assert.equal(guard.denied, 2);
  } finally {
    good.close();
    other.close();
  }
});

test('HTTP probes connect to the address their lookup checked; the Host header keeps the name', async () => {
  const hosts: string[] = [];
  const srv = http.createServer((req, res) => {
    hosts.push(String(req.headers.host));
    res.end('ok');
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as AddressInfo).port;
  const dns = scripted([['127.0.0.1'], ['169.254.169.254']]);
  const guard = new TargetGuard(CheckNetworks.DEFAULT, dns.resolver);
  const prober = new HttpProber(guard);
  const signal = new AbortController().signal;
  try {
    const ok = await prober.probe({ spec: spec('http'), target: `http://svc.test:${port}/health` }, signal);
    assert.deepEqual(ok, { status: 'passing', output: 'HTTP 200 OK' });
    assert.deepEqual(hosts, [`svc.test:${port}`]);
    const rebound = await prober.probe({ spec: spec('http'), target: `http://svc.test:${port}/health` }, signal);
    assert.deepEqual(rebound, { status: 'critical', output: `target http://svc.test:${port}/health resolves to an address in a denied network (checkDenyNetworks): not probed` });
    assert.equal(dns.calls(), 2, 'each probe resolved once');
    assert.equal(hosts.length, 1);
  } finally {
    prober.close();
    srv.closeAllConnections();
    srv.close();
  }
});

test('gRPC probes resolve the name before each probe and call the checked address', async () => {
  let calls = 0;
  const server = new Server();
  server.register(HEALTH_CHECK_METHOD, (_c: ServerUnaryCall<Buffer, number>, cb: sendUnaryData<number>) => (calls++, cb(null, 1)), (s: number) => Buffer.from([0x08, s]), (b: Buffer) => b, 'unary');
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  const dns = scripted([['127.0.0.1'], ['127.0.0.1'], ['169.254.169.254']]);
  const guard = new TargetGuard(CheckNetworks.DEFAULT, dns.resolver);
  const prober = new GrpcProber(guard);
  const signal = new AbortController().signal;
  const target = `rpc.test:${port}`;
  try {
    for (let i = 0; i < 2; i++) assert.deepEqual(await prober.probe({ spec: spec('grpc', '5s'), target }, signal), { status: 'passing', output: `grpc.health.v1 Check of the server at ${target}: SERVING` });
    const moved = await prober.probe({ spec: spec('grpc', '5s'), target }, signal);
    assert.deepEqual(moved, { status: 'critical', output: `target ${target} resolves to an address in a denied network (checkDenyNetworks): not probed` });
    assert.deepEqual([dns.calls(), calls, guard.denied], [3, 2, 1], 'one resolution per probe; the refused one made no call');
  } finally {
    prober.close();
    server.forceShutdown();
  }
});

test('gRPC: a name answered round-robin never closes a channel under another check\'s call in flight', async () => {
  // The same server on 127.0.0.1 and 127.0.0.2, answering after 200 ms; the name alternates.
  const servers: Server[] = [];
  let port = 0;
  for (const ip of ['127.0.0.1', '127.0.0.2']) {
    const server = new Server();
    server.register(HEALTH_CHECK_METHOD, (_c: ServerUnaryCall<Buffer, number>, cb: sendUnaryData<number>) => void setTimeout(() => cb(null, 1), 200), (s: number) => Buffer.from([0x08, s]), (b: Buffer) => b, 'unary');
    port = await new Promise<number>((resolve, reject) => server.bindAsync(`${ip}:${port}`, ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
    servers.push(server);
  }
  let n = 0;
  const guard = new TargetGuard(CheckNetworks.DEFAULT, (_h, _o, cb) => setImmediate(() => cb(null, [{ address: n++ % 2 ? '127.0.0.2' : '127.0.0.1', family: 4 }])));
  const prober = new GrpcProber(guard);
  const signal = new AbortController().signal;
  const target = `rr.test:${port}`;
  try {
    for (let round = 0; round < 3; round++) {
      const a = prober.probe({ spec: spec('grpc', '5s'), target }, signal);
      await new Promise((r) => setTimeout(r, 50)); // a's call is in flight on the channel to the first address
      const b = prober.probe({ spec: spec('grpc', '5s'), target }, signal);
      assert.deepEqual((await Promise.all([a, b])).map((r) => r.status), ['passing', 'passing'], `round ${round}: ${JSON.stringify(await a)}`);
    }
    assert.equal(prober.size, 1, 'the channel to the address no longer answered was closed once idle');
  } finally {
    prober.close();
    for (const s of servers) s.forceShutdown();
  }
});

test('a refused name: the output names neither the address it resolved to nor the denied network; the node is told both', async () => {
  const told: TargetDenied[] = [];
  const dns = scripted([['10.0.0.7', '10.9.0.1'], ['192.168.1.5']]);
  const guard = new TargetGuard(new CheckNetworks(['10.9.0.0/16'], ['10.0.0.0/8']), dns.resolver, (r) => told.push(r));
  const probe = tcpProbe(guard);
  const signal = new AbortController().signal;
  const denied = await probe({ spec: spec('tcp'), target: 'vault.internal:8200' }, signal);
  const outside = await probe({ spec: spec('tcp'), target: 'vault.internal:8200' }, signal);
  const literal = await probe({ spec: spec('tcp'), target: '10.9.0.1:8200' }, signal);
  assert.deepEqual([denied.output, outside.output, literal.output], [
    'target vault.internal:8200 resolves to an address in a denied network (checkDenyNetworks): not probed',
    'target vault.internal:8200 resolves to an address outside the allowed networks (checkAllowNetworks): not probed',
    'target 10.9.0.1:8200 is in a denied network (10.9.0.0/16, checkDenyNetworks): not probed', // the target said the address
  ]);
  assert.deepEqual(told.map((r) => r.detail()), [
    'vault.internal resolves to 10.9.0.1, in a denied network (10.9.0.0/16, checkDenyNetworks)',
    'vault.internal resolves to 192.168.1.5, outside the allowed networks (checkAllowNetworks)',
    '10.9.0.1 is in a denied network (10.9.0.0/16, checkDenyNetworks)',
  ]);
  assert.equal(guard.denied, 3);
  for (const r of told.slice(0, 2)) assert.doesNotMatch(r.message, /10\.9|192\.168/, 'the error carries the output\'s words, not the details');

  const lines: { msg: string; host: string; address: string; network: string | null }[] = [];
  logDenials({ debug: (fields: object, msg: string) => lines.push({ ...(fields as { host: string; address: string; network: string | null }), msg }) } as never)(told[0] as TargetDenied);
  assert.deepEqual(lines, [{ host: 'vault.internal', address: '10.9.0.1', network: '10.9.0.0/16', msg: 'check not probed: vault.internal resolves to 10.9.0.1, in a denied network (10.9.0.0/16, checkDenyNetworks)' }]);
});

test('a name that does not resolve is a lookup failure, not a refusal', async () => {
  const guard = new TargetGuard(CheckNetworks.DEFAULT, (_h, _o, cb) => setImmediate(() => cb(Object.assign(new Error('getaddrinfo ENOTFOUND nowhere.test'), { code: 'ENOTFOUND' }), [])));
  const r = await tcpProbe(guard)({ spec: spec('tcp'), target: 'nowhere.test:80' }, new AbortController().signal);
  assert.deepEqual(r, { status: 'critical', output: 'TCP connect to nowhere.test:80: host name does not resolve (ENOTFOUND)' });
  assert.equal(guard.denied, 0);
});
