// Goal: the SDK sends its registrations and deregistrations over the session that keeps
// its lease alive (one message each way instead of an HTTP request), and over REST when
// the session cannot carry them (a message larger than the node takes, a node that takes
// no requests on the session); a session that drops while a write waits for its answer
// costs nothing: the write is made again once the lease is bound again.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from '../../src/index.js';
import { SESSION_REQUEST_BUDGET } from '../../src/session.js';
import { faultProxy, rest, spawnAgent, type Agent } from '../helpers.js';

let agent: Agent;
let dir: string;
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sb-session-writes-'));
  const config = join(dir, 'agent.json');
  writeFileSync(config, JSON.stringify({ limits: { maxSessionMessageBytes: 4096 } }));
  agent = await spawnAgent(['--dev', '--config', config]);
});
after(async () => {
  await agent.kill();
  rmSync(dir, { recursive: true, force: true });
});

const instancesOf = async (service: string) => (await rest(agent.url, 'GET', `/v1/services/${service}`)).body.instances as { id: string; leaseId: string | null; metadata: Record<string, string> }[];

test('writes go over the session; one larger than the node takes goes over REST', async () => {
  const proxy = await faultProxy(agent.url, () => undefined);
  const client = await connect({ endpoints: [proxy.url] });
  try {
    const small = await client.register({ service: 'sw', id: 'small', address: '127.0.0.1', port: 1 });
    const big = await client.register({ service: 'sw', id: 'big', address: '127.0.0.1', port: 2, metadata: { blob: 'x'.repeat(6_000) } });
    assert.equal(client.lease?.transport, 'websocket');
    const writes = proxy.log.filter((l) => l.startsWith('PUT /v1/services/sw/'));
    assert.deepEqual(writes, ['PUT /v1/services/sw/instances/small?namespace=default (session)', 'PUT /v1/services/sw/instances/big?namespace=default -> 200'], proxy.log.join('\n'));
    const listed = await instancesOf('sw');
    assert.deepEqual(listed.map((i) => [i.id, i.leaseId]), [['big', client.lease?.leaseId], ['small', client.lease?.leaseId]]);
    assert.equal(listed[0]!.metadata.blob!.length, 6_000);
    await small.deregister();
    await big.deregister();
    // A deregistration is small whatever the instance was.
    assert.deepEqual(proxy.log.filter((l) => l.startsWith('DELETE /v1/services/sw/')), ['DELETE /v1/services/sw/instances/small?namespace=default (session)', 'DELETE /v1/services/sw/instances/big?namespace=default (session)']);
    assert.deepEqual(await instancesOf('sw'), []);
    assert.equal(proxy.sessions.opened, 1);
  } finally {
    await client.close();
    await proxy.close();
  }
});

test('a node that announces no message limit (no requests on its session) is written to over REST', async () => {
  const older = (text: string) => {
    const m = JSON.parse(text) as { type: string; maxMessageBytes?: number };
    if (m.type === 'lease') delete m.maxMessageBytes;
    return JSON.stringify(m);
  };
  const proxy = await faultProxy(agent.url, () => undefined, { fromServer: older });
  const client = await connect({ endpoints: [proxy.url] });
  try {
    await client.register({ service: 'older', id: 'o1', address: '127.0.0.1', port: 1 });
    assert.equal(client.lease?.transport, 'websocket', 'the lease is still kept over the session');
    assert.deepEqual(proxy.log.filter((l) => l.startsWith('PUT ')), ['PUT /v1/services/older/instances/o1?namespace=default -> 200']);
  } finally {
    await client.close();
    await proxy.close();
  }
});

test('a session cut while a registration waits for its answer: the lease is resumed and the instance written again', async () => {
  let cuts = 1;
  const proxy = await faultProxy(agent.url, (method, path) => (method === 'PUT' && path.startsWith('/v1/services/cut/') && cuts-- > 0 ? { status: 0, body: null, cut: true } : undefined));
  const client = await connect({ endpoints: [proxy.url], leaseTtlMs: 5_000, backoff: { initialMs: 20, maxMs: 200 } });
  client.on('registry-error', () => undefined);
  try {
    const t0 = performance.now();
    await client.register({ service: 'cut', id: 'c1', address: '127.0.0.1', port: 1 }, { signal: AbortSignal.timeout(10_000) });
    const took = performance.now() - t0;
    assert.ok(took < 3_000, `registered ${Math.round(took)} ms after the cut`);
    assert.deepEqual(proxy.log.filter((l) => l.startsWith('PUT ')), ['PUT /v1/services/cut/instances/c1?namespace=default -> cut (session)', 'PUT /v1/services/cut/instances/c1?namespace=default (session)']);
    assert.equal(proxy.sessions.opened, 2, 'a second session');
    const listed = await instancesOf('cut');
    assert.deepEqual(listed.map((i) => [i.id, i.leaseId]), [['c1', client.lease?.leaseId]]);
  } finally {
    await client.close();
    await proxy.close();
  }
});

test('deregistrations beyond the session budget go over REST; one whose session was cut is sent again over REST', async () => {
  let cuts = 1;
  const proxy = await faultProxy(agent.url, (method, path) => (method === 'DELETE' && path.startsWith('/v1/services/budget/instances/cut?') && cuts-- > 0 ? { status: 0, body: null, cut: true } : undefined));
  const client = await connect({ endpoints: [proxy.url], backoff: { initialMs: 20, maxMs: 200 } });
  client.on('registry-error', () => undefined);
  try {
    const n = 300;
    const regs = await Promise.all(Array.from({ length: n }, (_, i) => client.register({ service: 'budget', id: `b-${i}`, address: '127.0.0.1', port: 1 + i })));
    assert.equal((await instancesOf('budget')).length, n);
    await Promise.all(regs.map((r) => r.deregister()));
    assert.deepEqual(await instancesOf('budget'), [], 'every deregistration done, none refused');
    const deletes = proxy.log.filter((l) => l.startsWith('DELETE /v1/services/budget/'));
    const overRest = deletes.filter((l) => l.endsWith('-> 200')).length;
    assert.equal(deletes.length, n);
    assert.ok(overRest >= n - SESSION_REQUEST_BUDGET && overRest < n, `${overRest} of ${n} over REST`);

    // The session is cut while a deregistration waits: it is confirmed over REST.
    const cut = await client.register({ service: 'budget', id: 'cut', address: '127.0.0.1', port: 9 });
    await cut.deregister();
    assert.deepEqual(proxy.log.filter((l) => l.startsWith('DELETE /v1/services/budget/instances/cut')), ['DELETE /v1/services/budget/instances/cut?namespace=default -> cut (session)', 'DELETE /v1/services/budget/instances/cut?namespace=default -> 200']);
    assert.deepEqual(await instancesOf('budget'), []);
  } finally {
    await client.close();
    await proxy.close();
  }
});
