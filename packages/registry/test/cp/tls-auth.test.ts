// Goal: a cp agent runs next to an etcd that wants TLS, client certificates and a user:
// with the right files and password it registers, reads, watches and keeps leases alive,
// also after etcd forgot its token; /v1/status says how it connects and never with what;
// a wrong password, a user that may only read, a missing client certificate, or one
// endpoint of several with a certificate the node does not trust ends the start at once,
// saying why. Consistent reads go over etcd's JSON gateway with TLS and a user, and over
// gRPC with a client certificate (which the gateway refuses).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createTlsServer } from 'node:tls';
import { Etcd3, Range } from 'etcd3';
import { SseReader, call, sleep, waitUntil } from '../helpers.js';
import { run, spawnAgent, type AgentProcess } from '../integration/process.js';
import { EtcdCluster } from './etcd-cluster.js';
import { startCpNode, type CpNode } from './nodes.js';

const PREFIX = '/switchboard-tls/';
const USER = 'switchboard';
const PASSWORD = 'tls-auth-test-password';
const READER = 'switchboard-reader';

interface Pki {
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

/**
 * A CA, a server certificate for 127.0.0.1 and a client certificate, with openssl. The
 * server certificate is for client use too: with --client-cert-auth, etcd's own gateway
 * dials etcd with it.
 */
function makePki(dir: string): Pki {
  const openssl = (...args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '1', '-subj', '/CN=switchboard-test-ca');
  const leaf = (name: string, extensions: string): void => {
    writeFileSync(join(dir, `${name}.ext`), extensions);
    openssl('req', '-new', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=switchboard-test-${name}`);
    openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-set_serial', `0x${randomBytes(8).toString('hex')}`, '-days', '1', '-out', `${name}.crt`, '-extfile', `${name}.ext`);
  };
  leaf('server', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n');
  leaf('client', 'extendedKeyUsage=clientAuth\n');
  const at = (f: string): string => join(dir, f);
  return { ca: at('ca.crt'), serverCert: at('server.crt'), serverKey: at('server.key'), clientCert: at('client.crt'), clientKey: at('client.key') };
}

/**
 * etcd's auth as an operator sets it up: root, a role with readwrite on the prefix and its
 * user; and a user that may only read the prefix.
 */
async function enableAuth(endpoints: string[], pki: Pki): Promise<void> {
  const admin = new Etcd3({ hosts: endpoints, credentials: { rootCertificate: readFileSync(pki.ca), certChain: readFileSync(pki.clientCert), privateKey: readFileSync(pki.clientKey) } });
  try {
    await admin.user('root').create('root-password');
    await admin.role('root').create();
    await admin.user('root').addRole('root');
    await admin.role('switchboard').create();
    await admin.role('switchboard').grant({ permission: 'Readwrite', range: Range.prefix(PREFIX) });
    await admin.user(USER).create(PASSWORD);
    await admin.user(USER).addRole('switchboard');
    await admin.role('switchboard-read').create();
    await admin.role('switchboard-read').grant({ permission: 'Read', range: Range.prefix(PREFIX) });
    await admin.user(READER).create(PASSWORD);
    await admin.user(READER).addRole('switchboard-read');
    await admin.auth.authEnable();
  } finally {
    admin.close();
  }
}

let dir: string;
let pki: Pki;
let etcd: EtcdCluster;
let passwordFile: string;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sb-etcd-tls-'));
  pki = makePki(dir);
  passwordFile = join(dir, 'password');
  writeFileSync(passwordFile, `${PASSWORD}\n`, { mode: 0o600 });
  etcd = await EtcdCluster.start(1, 30_000, { tls: { certFile: pki.serverCert, keyFile: pki.serverKey, caFile: pki.ca, clientCertAuth: true } });
  await enableAuth(etcd.endpoints, pki);
});
after(async () => {
  await etcd?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const tlsArgs = (id: string): string[] => ['--mode', 'cp', '--etcd', etcd.endpoints.join(','), '--etcd-prefix', PREFIX, '--node-id', id, '--etcd-ca-file', pki.ca, '--etcd-cert-file', pki.clientCert, '--etcd-key-file', pki.clientKey, '--etcd-username', USER];

test('over TLS with a client certificate and an etcd user: register, read, watch, lease keep-alive, status without secrets', { timeout: 90_000 }, async () => {
  const agents: AgentProcess[] = [];
  try {
    // One node takes the password from a file, the other from the environment.
    agents.push(await spawnAgent([...tlsArgs('t1'), '--etcd-password-file', passwordFile], {}, 30_000));
    agents.push(await spawnAgent(tlsArgs('t2'), { SWITCHBOARD_ETCD_PASSWORD: PASSWORD }, 30_000));
    const [a, b] = agents as [AgentProcess, AgentProcess];

    const watch = await SseReader.open(`${b.url}/v1/watch`);
    try {
      assert.equal((await call(a.url, 'PUT', '/v1/services/pay/instances/p1', { address: '10.2.0.1', port: 80 })).status, 200);
      await watch.until(() => watch.events.some((e) => e.json?.instance?.id === 'p1'), 10_000, 'the registration on the other node');
      const read = await call(b.url, 'GET', '/v1/services/pay?consistent=true');
      assert.deepEqual(read.body.instances.map((i: { id: string }) => i.id), ['p1']);

      // A lease of 2 s outlives 4 s of keep-alives (over the LeaseKeepAlive stream).
      const lease = await call(a.url, 'POST', '/v1/leases', { ttlMs: 2_000 });
      assert.equal(lease.status, 201);
      assert.equal((await call(a.url, 'PUT', '/v1/services/pay/instances/p2', { address: '10.2.0.2', port: 80, leaseId: lease.body.leaseId })).status, 200);
      const until = Date.now() + 4_000;
      while (Date.now() < until) {
        assert.equal((await call(b.url, 'PUT', `/v1/leases/${lease.body.leaseId}/keepalive`)).status, 200);
        await sleep(500);
      }
      assert.equal((await call(a.url, 'GET', '/v1/services/pay/instances/p2?consistent=true')).status, 200, 'kept alive past its TTL');

      // etcd forgets its tokens when it restarts: the nodes authenticate again by themselves.
      await etcd.kill(0);
      etcd.restart(0);
      await etcd.waitLeader();
      await waitUntil(async () => (await call(a.url, 'PUT', '/v1/services/pay/instances/p3', { address: '10.2.0.3', port: 80 })).status === 200, 20_000, 'a write after the etcd restart');
      await watch.until(() => watch.events.some((e) => e.json?.instance?.id === 'p3'), 15_000, 'the watch to deliver after the etcd restart');
      const again = await call(b.url, 'GET', '/v1/services/pay?consistent=true');
      assert.equal(again.status, 200, JSON.stringify(again.body));
      assert.ok(again.body.instances.some((i: { id: string }) => i.id === 'p3'));
    } finally {
      watch.close();
    }

    const status = await call(a.url, 'GET', '/v1/status');
    const store = status.body.cluster.store;
    assert.equal(store.reachable, true);
    // etcd's gateway refuses requests with a client certificate: consistent reads stay on gRPC.
    assert.equal(status.body.cluster.consistentReadsVia, 'grpc');
    assert.deepEqual({ tls: store.tls, clientCert: store.clientCert, auth: store.auth, username: store.username }, { tls: true, clientCert: true, auth: true, username: USER });
    const key = readFileSync(pki.clientKey, 'utf8');
    const keyBody = (key.split('\n')[1] ?? '').trim();
    for (const [what, text] of [['status', JSON.stringify(status.body)], ['node t1 output', a.output()], ['node t2 output', b.output()]] as const) {
      assert.ok(!text.includes(PASSWORD), `${what} holds the password`);
      assert.ok(keyBody.length > 0 && !text.includes(keyBody), `${what} holds the private key`);
    }
  } finally {
    for (const p of agents) p.child.kill('SIGKILL');
  }
});

test('over TLS without a client certificate, as an etcd user: consistent reads go over the JSON gateway, also after etcd forgot the token', { timeout: 90_000 }, async () => {
  // etcd without --client-cert-auth: the node trusts its CA and logs in as a user.
  const plain = await EtcdCluster.start(1, 30_000, { tls: { certFile: pki.serverCert, keyFile: pki.serverKey, caFile: pki.ca, clientCertAuth: false } });
  let node: CpNode | null = null;
  try {
    await enableAuth(plain.endpoints, pki);
    const tls = { ca: readFileSync(pki.ca), cert: null, key: null };
    node = await startCpNode(plain.endpoints, 'j1', PREFIX, { tls, auth: { username: USER, password: PASSWORD } });
    const url = node.url;
    assert.equal((await call(url, 'PUT', '/v1/services/pay/instances/j1', { address: '10.3.0.1', port: 80 })).status, 200);
    assert.deepEqual((await call(url, 'GET', '/v1/services/pay?consistent=true')).body.instances.map((i: { id: string }) => i.id), ['j1']);
    // etcd forgets its tokens when it restarts: the gateway reader logs in again by itself.
    await plain.kill(0);
    plain.restart(0);
    await plain.waitLeader();
    await waitUntil(async () => (await call(url, 'PUT', '/v1/services/pay/instances/j2', { address: '10.3.0.2', port: 80 })).status === 200, 20_000, 'a write after the etcd restart');
    const read = await call(url, 'GET', '/v1/services/pay?consistent=true');
    assert.equal(read.status, 200, JSON.stringify(read.body));
    assert.deepEqual(read.body.instances.map((i: { id: string }) => i.id), ['j1', 'j2']);
    assert.equal((await call(url, 'GET', '/v1/status')).body.cluster.consistentReadsVia, 'json_gateway');
    const metrics = await fetch(`${url}/metrics`).then((r) => r.text());
    assert.match(metrics, /^switchboard_etcd_round_trip_seconds_count\{method="range_json",outcome="ok"\} ([2-9]|\d\d+)/m);
  } finally {
    await node?.close();
    await plain.close();
  }
});

/**
 * Runs an agent that must refuse to start: it exits by itself (not killed after 20 s),
 * with a failure, saying `says`; `quickly`: within 10 s. Returns its output.
 */
async function refusedStart(args: string[], env: Record<string, string>, says: RegExp, { quickly = false } = {}): Promise<string> {
  const started = Date.now();
  const r = await run(args, env, 20_000);
  const output = r.stdout + r.stderr;
  assert.notEqual(r.code, 0, output);
  assert.notEqual(r.code, null, `killed after 20 s instead of exiting: ${output}`);
  assert.match(r.stderr, says);
  if (quickly) assert.ok(Date.now() - started < 10_000, `took ${Date.now() - started} ms`);
  return output;
}

const AGENT = ['agent', '--http-addr', '127.0.0.1:0', '--log-format', 'json'];

test('a wrong password ends the start at once, saying that authentication failed', { timeout: 30_000 }, async () => {
  const output = await refusedStart([...AGENT, ...tlsArgs('t3')], { SWITCHBOARD_ETCD_PASSWORD: 'not-the-password' }, /etcd authentication failed for user "switchboard"/, { quickly: true });
  assert.ok(!output.includes('not-the-password'), 'the output holds the password');
});

test('a user that may only read the prefix ends the start at once, naming the permission it needs', { timeout: 30_000 }, async () => {
  const args = tlsArgs('t4');
  args[args.indexOf(USER)] = READER;
  await refusedStart([...AGENT, ...args], { SWITCHBOARD_ETCD_PASSWORD: PASSWORD }, new RegExp(`etcd user "${READER}" may not read and write ${PREFIX}: grant one of its roles readwrite`));
});

test('without a client certificate etcd refuses the connection and the start ends saying so', { timeout: 45_000 }, async () => {
  const args = [...AGENT, '--mode', 'cp', '--etcd', etcd.endpoints.join(','), '--etcd-prefix', PREFIX, '--etcd-ca-file', pki.ca, '--etcd-username', USER, '--etcd-password-file', passwordFile];
  await refusedStart(args, {}, /TLS with etcd failed: etcd refused the handshake.*--etcd-cert-file/, { quickly: true });
  // Nor does a node that does not know etcd's CA get through (the system CAs did not sign it).
  await refusedStart(args.filter((x, i) => x !== '--etcd-ca-file' && args[i - 1] !== '--etcd-ca-file'), {}, /does not trust etcd's server certificate/);
});

test('one endpoint whose certificate the node does not trust ends the start, naming it, although another answers', { timeout: 45_000 }, async () => {
  // A TLS server with a certificate from a CA the node was not given, next to the real etcd.
  const otherDir = mkdtempSync(join(tmpdir(), 'sb-etcd-tls-other-'));
  const other = makePki(otherDir);
  const server = createTlsServer({ key: readFileSync(other.serverKey), cert: readFileSync(other.serverCert), ALPNProtocols: ['h2'] }, (s) => s.destroy());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const plain = createHttpServer((_req, res) => res.end('not etcd'));
  await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve));
  const impostor = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    const args = tlsArgs('t5');
    args[args.indexOf('--etcd') + 1] = `${etcd.endpoints.join(',')},${impostor}`;
    await refusedStart([...AGENT, ...args], { SWITCHBOARD_ETCD_PASSWORD: PASSWORD }, new RegExp(`does not trust etcd's server certificate.*\\(endpoint ${impostor.replace(/\./g, '\\.')}:`), { quickly: true });

    // An https:// endpoint that serves plain text is named as such.
    args[args.indexOf('--etcd') + 1] = `${etcd.endpoints.join(',')},https://127.0.0.1:${(plain.address() as AddressInfo).port}`;
    await refusedStart([...AGENT, ...args], { SWITCHBOARD_ETCD_PASSWORD: PASSWORD }, /the endpoint answers without TLS; give it as http:\/\/.*\(endpoint https:\/\/127\.0\.0\.1:\d+:/);
  } finally {
    server.close();
    plain.close();
    rmSync(otherDir, { recursive: true, force: true });
  }
});
