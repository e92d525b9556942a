// Goal: a provider's registrations follow the SDK's promises against a real registry
// process: register() with defaults, one lease per process over the session, automatic
// re-registration after the lease is lost and after failover to a node of another epoch,
// close() deregisters at once, drain() marks draining and then deregisters, the REST
// transport works, and a closed client never keeps its process alive.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { hostname } from 'node:os';
import { fileURLToPath } from 'node:url';
import { connect, InvalidArgumentError, LimitExceededError, type LeaseChange } from '../../src/index.js';
import { nameServer, rest, spawnAgent, waitFor, type Agent } from '../helpers.js';

let agent: Agent;
before(async () => {
  agent = await spawnAgent(['--dev']);
});
after(async () => {
  await agent.kill();
});

const instancesOf = async (url: string, service: string) => (await rest(url, 'GET', `/v1/services/${service}`)).body.instances as { id: string; status: string; leaseId: string | null }[];

test('register with defaults; one lease for every instance; close() deregisters at once', async () => {
  const client = await connect({ endpoints: [agent.url], leaseTtlMs: 3_000 });
  const a = await client.register({ service: 'alpha', address: '127.0.0.1', port: 8001 });
  const b = await client.register({ service: 'alpha', address: '127.0.0.1', port: 8002 });
  const c = await client.register({ service: 'beta', port: 8003 });
  const host = hostname().replace(/[^A-Za-z0-9._:-]/g, '-');
  assert.equal(a.id, `alpha-${host}-${process.pid}`);
  assert.equal(b.id, `alpha-${host}-${process.pid}-2`);
  const listed = [...(await instancesOf(agent.url, 'alpha')), ...(await instancesOf(agent.url, 'beta'))];
  assert.equal(listed.length, 3);
  assert.equal(new Set(listed.map((i) => i.leaseId)).size, 1, 'one lease per process');
  assert.equal(listed[0]!.leaseId, client.lease?.leaseId);
  assert.equal(client.lease?.transport, 'websocket');
  assert.ok(c.revision > 0);
  await assert.rejects(client.register({ service: 'Not_A_Label', port: 1 }), InvalidArgumentError);
  await assert.rejects(client.register({ service: 'alpha', port: 70000 }), (e: unknown) => e instanceof InvalidArgumentError && e.problem.field === 'port');
  await b.deregister();
  assert.deepEqual((await instancesOf(agent.url, 'alpha')).map((i) => i.id), [a.id]);
  await client.close();
  assert.equal((await instancesOf(agent.url, 'alpha')).length, 0, 'gone at once, not after the TTL');
  assert.equal((await instancesOf(agent.url, 'beta')).length, 0);
});

test('an instance the registry refuses (a limit) rejects with a typed error and is not retried', async () => {
  const client = await connect({ endpoints: [agent.url] });
  const errors: unknown[] = [];
  client.on('registry-error', (e) => errors.push(e));
  try {
    const tags = Array.from({ length: 65 }, (_, i) => `t${i}`);
    await assert.rejects(client.register({ service: 'theta', id: 't1', address: '127.0.0.1', port: 1, tags }), (e: unknown) => e instanceof LimitExceededError && e.problem.limit === 'maxTagsPerInstance');
    const ok = await client.register({ service: 'theta', id: 't2', address: '127.0.0.1', port: 2 });
    assert.equal(ok.id, 't2');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(errors.length, 1, 'reported once, not retried');
    assert.deepEqual((await instancesOf(agent.url, 'theta')).map((i) => i.id), ['t2']);
    // A check target the registry's nodes may not probe (the metadata service): the field is refused.
    const checks = [{ type: 'http' as const, target: 'http://169.254.169.254/latest/meta-data/' }];
    await assert.rejects(client.register({ service: 'theta', id: 't3', address: '127.0.0.1', port: 3, checks }), (e: unknown) => e instanceof InvalidArgumentError && e.problem.code === 'CHECK_TARGET_DENIED' && e.problem.field === 'checks/0/target');
  } finally {
    await client.close();
  }
});

test('a lost lease (revoked behind our back) is replaced and every instance registered again', async () => {
  const client = await connect({ endpoints: [agent.url], leaseTtlMs: 3_000 });
  const changes: LeaseChange[] = [];
  client.on('lease', (c) => changes.push(c));
  try {
    await client.register({ service: 'gamma', id: 'g1', address: '127.0.0.1', port: 9001 });
    await client.register({ service: 'gamma', id: 'g2', address: '127.0.0.1', port: 9002 });
    const first = client.lease!.leaseId;
    assert.equal((await rest(agent.url, 'DELETE', `/v1/leases/${first}`)).status, 200);
    await waitFor(async () => (await instancesOf(agent.url, 'gamma')).length === 2 && client.lease?.leaseId !== first, 5_000, 're-registration');
    const again = await instancesOf(agent.url, 'gamma');
    assert.ok(again.every((i) => i.leaseId === client.lease!.leaseId));
    assert.deepEqual(changes.map((c) => c.kind), ['new', 'new']);
  } finally {
    await client.close();
  }
});

test('drain(): instances go draining; with no watcher on the node the barrier answers at once, then they are deregistered', async () => {
  const client = await connect({ endpoints: [agent.url] });
  await client.register({ service: 'delta', id: 'd1', address: '127.0.0.1', port: 9101 });
  const started = Date.now();
  await client.drain({ waitMs: 10_000 });
  const took = Date.now() - started;
  assert.ok(took < 5_000, `drain took ${took} ms: it waits for watchers, not for waitMs`);
  const history = (await rest(agent.url, 'GET', '/v1/services/delta/instances/d1/history')).body.history as { status: string; type: string }[];
  const statuses = history.map((h) => h.status);
  assert.ok(statuses.indexOf('draining') > 0 && statuses.indexOf('draining') < statuses.length - 1, `went draining while registered: ${statuses.join(',')}`);
  assert.equal((await instancesOf(agent.url, 'delta')).length, 0);
  assert.equal(client.closed, true);
});

test('REST transport: leases kept alive with PUT keepalives, close() deregisters', async () => {
  const client = await connect({ endpoints: [agent.url], session: 'rest', leaseTtlMs: 1_000 });
  await client.register({ service: 'epsilon', id: 'e1', address: '127.0.0.1', port: 9201 });
  assert.equal(client.lease?.transport, 'rest');
  await new Promise((r) => setTimeout(r, 1_500)); // longer than the TTL: keepalives hold it
  assert.equal((await instancesOf(agent.url, 'epsilon')).length, 1);
  await client.close();
  assert.equal((await instancesOf(agent.url, 'epsilon')).length, 0);
});

test('failover to a node of another epoch: a new lease there and every instance registered again', async () => {
  const a = await spawnAgent(['--dev']);
  const b = await spawnAgent(['--dev']);
  const client = await connect({ endpoints: [a.url, b.url], leaseTtlMs: 2_000, backoff: { initialMs: 20, maxMs: 200 } });
  const reregistered: number[] = [];
  client.on('reregistered', (r: { count: number }) => reregistered.push(r.count));
  try {
    await client.register({ service: 'zeta', id: 'z1', address: '127.0.0.1', port: 9301 });
    await client.register({ service: 'zeta', id: 'z2', address: '127.0.0.1', port: 9302 });
    assert.equal((await instancesOf(a.url, 'zeta')).length, 2);
    await a.kill('SIGKILL');
    await waitFor(async () => (await instancesOf(b.url, 'zeta')).length === 2, 5_000, 'instances on b');
    assert.equal(client.lease?.endpoint, b.url);
    assert.deepEqual(reregistered, [2]);
  } finally {
    await client.close();
    await a.kill();
    await b.kill();
  }
});

test('graceful registry shutdown (goaway): the provider moves to the other node without losing its registration', async () => {
  const a = await spawnAgent(['--dev']);
  const b = await spawnAgent(['--dev']);
  const client = await connect({ endpoints: [a.url, b.url], leaseTtlMs: 2_000, backoff: { initialMs: 20, maxMs: 200 } });
  try {
    await client.register({ service: 'eta', id: 'h1', address: '127.0.0.1', port: 9401 });
    await a.kill('SIGTERM');
    await waitFor(async () => (await instancesOf(b.url, 'eta')).length === 1, 5_000, 'instance on b');
  } finally {
    await client.close();
    await a.kill();
    await b.kill();
  }
});

test('after close() nothing of the SDK keeps the process alive', async () => {
  const app = await nameServer('unused');
  await app.close();
  const script = fileURLToPath(new URL('../fixtures/exit-after-close.js', import.meta.url));
  const child = spawn(process.execPath, [script], { env: { ...process.env, SB_ENDPOINTS: agent.url }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const code = await new Promise<number | null>((resolve) => {
    const t = setTimeout(() => {
      child.kill('SIGKILL');
      resolve(-1);
    }, 10_000);
    child.once('exit', (c) => {
      clearTimeout(t);
      resolve(c);
    });
  });
  assert.equal(code, 0, `the process must exit by itself after close(); output:\n${out}`);
  assert.match(out, /CLOSED/);
});
