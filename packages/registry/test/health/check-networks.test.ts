// Goal: through the API, with real sockets on loopback, a node's checks never connect to a
// network its policy refuses (checkDenyNetworks, checkAllowNetworks): http, tcp and grpc
// checks of an instance there turn critical with an output that says why, no connection
// reaches the target, the refusals are counted in /metrics, and a registration whose check
// target is a refused IP literal is answered 400 CHECK_TARGET_DENIED (the instance's own
// address never is).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { Server, ServerCredentials, type ServerUnaryCall, type sendUnaryData } from '@grpc/grpc-js';
import pino from 'pino';
import { startAgent } from '../../src/cli/agent.js';
import { resolveConfig } from '../../src/cli/config.js';
import { HEALTH_CHECK_METHOD } from '../../src/health/grpc.js';
import { CheckNetworks } from '../../src/health/networks.js';
import { call, sleep, startNode, type TestNode } from '../helpers.js';
import { waitUntil } from '../support/wait.js';

/** Loopback in both families: what the tests deny, so that a probe that slips through reaches a counting server. */
const LOOPBACK = ['127.0.0.0/8', '::1/128'];

interface Counting {
  port: number;
  connections: () => number;
  close(): void;
}

/** A server on `host` that counts the connections it accepts: HTTP (answers 200) or bare TCP (closes at once). */
async function counting(kind: 'http' | 'tcp', host = '127.0.0.1'): Promise<Counting> {
  let n = 0;
  const srv = kind === 'http' ? http.createServer((_req, res) => res.end('ok')) : net.createServer((s) => s.destroy());
  srv.on('connection', () => n++);
  await new Promise<void>((r) => srv.listen(0, host, r));
  return {
    port: (srv.address() as AddressInfo).port,
    connections: () => n,
    close: () => {
      if (srv instanceof http.Server) srv.closeAllConnections();
      srv.close();
    },
  };
}

/** A gRPC server that answers SERVING and counts the health calls it gets. */
async function grpcServer(): Promise<{ port: number; calls: () => number; close(): void }> {
  let n = 0;
  const server = new Server();
  server.register(HEALTH_CHECK_METHOD, (_call: ServerUnaryCall<Buffer, number>, cb: sendUnaryData<number>) => (n++, cb(null, 1)), (s: number) => Buffer.from([0x08, s]), (b: Buffer) => b, 'unary');
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  return { port, calls: () => n, close: () => server.forceShutdown() };
}

const reg = (node: TestNode, svc: string, id: string, body: Record<string, unknown>) => call(node.url, 'PUT', `/v1/services/${svc}/instances/${id}`, { address: '127.0.0.1', port: 1, ...body });

async function output(node: Pick<TestNode, 'url'>, svc: string, id: string): Promise<string> {
  const i = (await call(node.url, 'GET', `/v1/services/${svc}/instances/${id}`)).body;
  return i.checks[0]?.output ?? '';
}

/** Waits for the instance's (first) check output to match. */
async function outputMatches(node: Pick<TestNode, 'url'>, svc: string, id: string, want: RegExp | string): Promise<void> {
  const ok = (o: string) => (typeof want === 'string' ? o === want : want.test(o));
  let last = '';
  await waitUntil(async () => ok((last = await output(node, svc, id))), 5_000, `${svc}/${id} output ${want}`, { detail: () => `last output: ${last}` });
}

const fast = (type: string, extra: Record<string, unknown> = {}) => [{ id: 'c', type, interval: '100ms', criticalThreshold: 1, ...extra }];

async function deniedCount(node: TestNode): Promise<number> {
  const m = /^switchboard_check_targets_denied_total (\d+)$/m.exec((await call(node.url, 'GET', '/metrics')).body as string);
  return Number(m?.[1] ?? NaN);
}

test('a denied network blocks http, tcp and grpc probes of an instance there: no connection, critical with the reason, counted', async () => {
  const node = await startNode({ checkNetworks: new CheckNetworks(LOOPBACK, []) });
  const web = await counting('http');
  const db = await counting('tcp');
  const rpc = await counting('tcp'); // a gRPC probe that got through would open a connection here
  try {
    // The instances register: their address may be legitimate, only their checks are not run.
    assert.equal((await reg(node, 'web', 'w', { port: web.port, checks: fast('http') })).status, 200);
    assert.equal((await reg(node, 'db', 'd', { port: db.port, checks: fast('tcp') })).status, 200);
    assert.equal((await reg(node, 'rpc', 'r', { port: rpc.port, checks: fast('grpc') })).status, 200);
    await outputMatches(node, 'web', 'w', `target http://127.0.0.1:${web.port}/ is in a denied network (127.0.0.0/8, checkDenyNetworks): not probed`);
    await outputMatches(node, 'db', 'd', `target 127.0.0.1:${db.port} is in a denied network (127.0.0.0/8, checkDenyNetworks): not probed`);
    await outputMatches(node, 'rpc', 'r', `target 127.0.0.1:${rpc.port} is in a denied network (127.0.0.0/8, checkDenyNetworks): not probed`);
    await sleep(300); // a few more runs
    assert.equal((await call(node.url, 'GET', '/v1/services/web/instances/w')).body.health, 'critical');
    assert.deepEqual([web.connections(), db.connections(), rpc.connections()], [0, 0, 0], 'no probe reached a target');
    assert.ok((await deniedCount(node)) >= 3, 'refusals are counted');
    // /v1/status shows the count too, next to the other check figures.
    const checks = (await call(node.url, 'GET', '/v1/status')).body.checks;
    assert.ok(Number.isInteger(checks.denied) && checks.denied >= 3, `status checks.denied: ${checks.denied}`);
    assert.ok((await deniedCount(node)) >= checks.denied, 'the same counter as /metrics');
  } finally {
    web.close();
    db.close();
    rpc.close();
    await node.close();
  }
});

test('a host name that resolves into a denied network is not probed (localhost)', async () => {
  const node = await startNode({ checkNetworks: new CheckNetworks(LOOPBACK, []) });
  const web = await counting('http');
  const db = await counting('tcp');
  try {
    // A name is not refused at registration: what it resolves to is checked at each probe.
    assert.equal((await reg(node, 'web', 'w', { checks: fast('http', { target: `http://localhost:${web.port}/health` }) })).status, 200);
    assert.equal((await reg(node, 'db', 'd', { checks: fast('tcp', { target: `localhost:${db.port}` }) })).status, 200);
    assert.equal((await reg(node, 'rpc', 'r', { checks: fast('grpc', { target: `localhost:${db.port}` }) })).status, 200);
    // Neither the address the name resolved to nor the network: whoever reads the registry
    // would learn what internal names resolve to.
    const reason = String.raw`resolves to an address in a denied network \(checkDenyNetworks\): not probed$`;
    await outputMatches(node, 'web', 'w', new RegExp(`^target http://localhost:${web.port}/health ${reason}`));
    await outputMatches(node, 'db', 'd', new RegExp(`^target localhost:${db.port} ${reason}`));
    await outputMatches(node, 'rpc', 'r', new RegExp(`^target localhost:${db.port} ${reason}`));
    await sleep(300);
    assert.deepEqual([web.connections(), db.connections()], [0, 0]);
  } finally {
    web.close();
    db.close();
    await node.close();
  }
});

test('the agent logs a refused probe at debug level with what its output leaves out: the address the name resolved to and the network', async () => {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write: (chunk, _enc, cb) => {
      for (const l of String(chunk).split('\n')) if (l !== '') lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  const cfg = resolveConfig([{ name: 'flag', values: { dev: true, httpAddr: '127.0.0.1:0', checkDenyNetworks: '127.0.0.0/8' } }]);
  const agent = await startAgent(cfg, pino({ level: 'debug' }, sink));
  try {
    assert.equal((await call(agent.url, 'PUT', '/v1/services/db/instances/d', { address: '10.0.0.1', port: 5432, checks: fast('tcp', { target: 'localhost:5432' }) })).status, 200);
    await outputMatches(agent, 'db', 'd', 'target localhost:5432 resolves to an address in a denied network (checkDenyNetworks): not probed');
    const line = lines.find((l) => l.component === 'checks' && l.host === 'localhost');
    assert.ok(line, 'a log line for the refusal');
    assert.equal(line.level, 20, 'debug');
    assert.match(String(line.address), /^(127\.0\.0\.1|::1)$/);
    assert.equal(line.network, '127.0.0.0/8');
    assert.match(String(line.msg), /^check not probed: localhost resolves to (127\.0\.0\.1|::1), in a denied network \(127\.0\.0\.0\/8, checkDenyNetworks\)$/);
  } finally {
    await agent.stop();
  }
});

test('an allow list: an instance outside it is not probed, one inside it is', async () => {
  const node = await startNode({ checkNetworks: new CheckNetworks([], ['127.0.0.1/32']) });
  const inside = await counting('tcp', '127.0.0.1');
  const outside = await counting('tcp', '127.0.0.2');
  const web = await counting('http', '127.0.0.1');
  const rpc = await grpcServer();
  try {
    assert.equal((await reg(node, 'db', 'in', { port: inside.port, checks: fast('tcp') })).status, 200);
    assert.equal((await reg(node, 'db', 'out', { address: '127.0.0.2', port: outside.port, checks: fast('tcp') })).status, 200);
    assert.equal((await reg(node, 'web', 'in', { port: web.port, checks: fast('http') })).status, 200);
    assert.equal((await reg(node, 'rpc', 'in', { checks: fast('grpc', { target: `127.0.0.1:${rpc.port}` }) })).status, 200);
    await outputMatches(node, 'db', 'in', `TCP connect to 127.0.0.1:${inside.port} succeeded`);
    await outputMatches(node, 'web', 'in', 'HTTP 200 OK');
    await outputMatches(node, 'rpc', 'in', new RegExp(`at 127\\.0\\.0\\.1:${rpc.port}: SERVING$`));
    await outputMatches(node, 'db', 'out', `target 127.0.0.2:${outside.port} is outside the allowed networks (checkAllowNetworks): not probed`);
    await sleep(300);
    assert.ok(inside.connections() > 0 && web.connections() > 0 && rpc.calls() > 0, 'the targets inside were probed');
    assert.equal(outside.connections(), 0, 'the target outside was not');
    // An explicit literal target outside the allow list is refused at registration.
    const r = await reg(node, 'db', 'lit', { checks: fast('tcp', { target: `127.0.0.2:${outside.port}` }) });
    assert.equal(r.status, 400);
    assert.equal(r.body.code, 'CHECK_TARGET_DENIED');
    assert.match(r.body.detail, /is outside the allowed networks \(checkAllowNetworks\)/);
  } finally {
    inside.close();
    outside.close();
    web.close();
    rpc.close();
    await node.close();
  }
});

test('an IPv4-mapped IPv6 address of a denied network is caught, as an instance address and as a target', async () => {
  const node = await startNode({ checkNetworks: new CheckNetworks(['127.0.0.0/8'], []) });
  const db = await counting('tcp'); // ::ffff:127.0.0.1 reaches it: the kernel maps it to 127.0.0.1
  try {
    assert.equal((await reg(node, 'db', 'm', { address: '::ffff:127.0.0.1', port: db.port, checks: fast('tcp') })).status, 200);
    await outputMatches(node, 'db', 'm', `target [::ffff:127.0.0.1]:${db.port} is in a denied network (127.0.0.0/8, checkDenyNetworks): not probed`);
    for (const [type, target] of [['tcp', `[::ffff:127.0.0.1]:${db.port}`], ['http', `http://[::ffff:7f00:1]:${db.port}/`], ['grpc', `[0:0:0:0:0:ffff:7f00:1]:${db.port}`]] as const) {
      const r = await reg(node, 'db', 'lit', { checks: fast(type, { target }) });
      assert.equal(r.status, 400, `${type} ${target}`);
      assert.equal(r.body.code, 'CHECK_TARGET_DENIED');
    }
    await sleep(300);
    assert.equal(db.connections(), 0);
  } finally {
    db.close();
    await node.close();
  }
});

test('denying 127.0.0.0/8 denies ::1 as well: a [::1] target is refused at registration, an instance on ::1 is not probed', async () => {
  const node = await startNode({ checkNetworks: new CheckNetworks(['127.0.0.0/8'], []) });
  try {
    for (const [type, target] of [['tcp', '[::1]:5432'], ['http', 'http://[::1]:8080/health'], ['grpc', '[0:0:0:0:0:0:0:1]:50051']] as const) {
      const r = await reg(node, 'db', 'lit', { checks: fast(type, { target }) });
      assert.equal(r.status, 400, `${type} ${target}`);
      assert.equal(r.body.code, 'CHECK_TARGET_DENIED');
      assert.match(r.body.detail, /in a denied network \(127\.0\.0\.0\/8, checkDenyNetworks\)/);
    }
    assert.equal((await reg(node, 'db', 'v6', { address: '::1', port: 5432, checks: fast('tcp') })).status, 200);
    await outputMatches(node, 'db', 'v6', 'target [::1]:5432 is in a denied network (127.0.0.0/8, checkDenyNetworks): not probed');
  } finally {
    await node.close();
  }
});

test('a tcp or grpc target in another spelling of a denied IPv4 address is refused at registration like the address; allowed ones register', async () => {
  const node = await startNode({ checkNetworks: new CheckNetworks(['127.0.0.0/8', ...CheckNetworks.DEFAULT.deny], []) });
  try {
    const refused: [string, string, string, string][] = [
      ['tcp', '0x7f.1:5432', '127.0.0.1', '127.0.0.0/8'],
      ['grpc', '0x7f000001:50051', '127.0.0.1', '127.0.0.0/8'],
      ['tcp', '0x7F.0.0.1:22', '127.0.0.1', '127.0.0.0/8'],
      ['grpc', '0xa9.0xfe.0xa9.0xfe:80', '169.254.169.254', '169.254.0.0/16'],
      ['http', 'http://0251.0376.0251.0376/latest/meta-data/', '169.254.169.254', '169.254.0.0/16'],
    ];
    for (const [type, target, address, network] of refused) {
      const r = await reg(node, 'db', 'd', { checks: fast(type, { target }) });
      assert.equal(r.status, 400, `${type} ${target}`);
      assert.equal(r.body.code, 'CHECK_TARGET_DENIED');
      assert.equal(r.body.field, 'checks/0/target');
      assert.equal(r.body.detail, `check target "${target}" (the address ${address}) is in a denied network (${network}, checkDenyNetworks): this node does not probe it`);
      assert.match(r.body.hint, /checkDenyNetworks, checkAllowNetworks/);
    }
    // All digits is no address and no name: refused as malformed, whatever the network.
    const digits = await reg(node, 'db', 'd', { checks: fast('tcp', { target: '2130706433:5432' }) });
    assert.deepEqual([digits.status, digits.body.code, digits.body.field], [400, 'INVALID_ARGUMENT', 'checks/0/target']);
    assert.equal(typeof digits.body.hint, 'string');
    // Another spelling of an address not denied registers, as the address would.
    assert.equal((await reg(node, 'db', 'ok', { checks: fast('tcp', { target: '0x0a.1:5432', interval: '1h' }) })).status, 200);
    assert.equal((await call(node.url, 'GET', '/v1/services/db/instances/d')).status, 404, 'nothing refused was registered');
  } finally {
    await node.close();
  }
});

test('a registration whose check target is a denied IP literal is refused with 400 CHECK_TARGET_DENIED, one at a denied instance address is not', async () => {
  const node = await startNode(); // the default policy: link-local denied
  try {
    const r = await reg(node, 'web', 'w', { checks: [{ type: 'tcp', target: '10.0.0.1:80' }, { type: 'http', target: 'http://169.254.169.254/latest/meta-data/' }] });
    assert.equal(r.status, 400);
    assert.equal(r.headers.get('content-type'), 'application/problem+json; charset=utf-8');
    assert.deepEqual({ ...r.body, hint: typeof r.body.hint }, {
      type: 'urn:switchboard:error:CHECK_TARGET_DENIED',
      title: 'Check target denied',
      status: 400,
      code: 'CHECK_TARGET_DENIED',
      detail: 'check target "http://169.254.169.254/latest/meta-data/" is in a denied network (169.254.0.0/16, checkDenyNetworks): this node does not probe it',
      field: 'checks/1/target',
      hint: 'string',
    });
    assert.match(r.body.hint, /checkDenyNetworks, checkAllowNetworks/);
    assert.equal((await call(node.url, 'GET', '/v1/services/web/instances/w')).status, 404, 'nothing was registered');

    // A batch names the item; all or nothing.
    const batch = await call(node.url, 'POST', '/v1/instances/batch', {
      instances: [
        { service: 'web', id: 'ok', address: '10.0.0.1', port: 80 },
        { service: 'web', id: 'bad', address: '10.0.0.2', port: 80, checks: [{ type: 'grpc', target: '[fe80::1]:50051' }] },
      ],
    });
    assert.equal(batch.status, 400);
    assert.equal(batch.body.code, 'CHECK_TARGET_DENIED');
    assert.equal(batch.body.field, 'instances/1/checks/0/target');
    assert.match(batch.body.detail, /^instances\/1: check target "\[fe80::1\]:50051" is in a denied network \(fe80::\/10, checkDenyNetworks\)/);
    assert.equal((await call(node.url, 'GET', '/v1/services/web/instances/ok')).status, 404);

    // The instance's own address in a denied network is accepted; its checks are not run.
    const t0 = performance.now();
    assert.equal((await reg(node, 'meta', 'm', { address: '169.254.169.254', port: 80, checks: fast('tcp', { timeout: '10s', interval: '20s' }) })).status, 200);
    await outputMatches(node, 'meta', 'm', 'target 169.254.169.254:80 is in a denied network (169.254.0.0/16, checkDenyNetworks): not probed');
    assert.ok(performance.now() - t0 < 4_000, 'refused before connecting, not after a timeout');
  } finally {
    await node.close();
  }
});
