// Goal: a registration write the registry does not take never costs the process its lease,
// and never turns into a busy loop. Against a real registry behind a proxy that answers
// chosen requests itself: a 429 or a 503 with Retry-After is waited out on the same
// session (one lease throughout, nothing deregistered); an instance someone else deleted
// is registered again when its status is written; a status the registry refuses rejects
// setStatus() after one attempt; a listener that throws does not stop the registrar.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect, InvalidArgumentError, type LeaseChange } from '../../src/index.js';
import { faultProxy, rest, spawnAgent, waitFor, type Agent, type FaultRule } from '../helpers.js';

let agent: Agent;
before(async () => {
  agent = await spawnAgent(['--dev']);
});
after(async () => {
  await agent.kill();
});

const instancesOf = async (service: string) => (await rest(agent.url, 'GET', `/v1/services/${service}`)).body.instances as { id: string; status: string; leaseId: string | null }[];
const problem = (status: number, code: string) => ({ type: `urn:switchboard:error:${code}`, title: code, status, code, detail: 'injected by the test', hint: 'wait' });

/** Answers the first `n` matching requests itself. */
function first(n: number, match: (method: string, path: string) => boolean, answer: ReturnType<FaultRule>): FaultRule {
  let left = n;
  return (method, path) => (match(method, path) && left-- > 0 ? answer : undefined);
}

for (const [what, status, code] of [['429 RATE_LIMITED', 429, 'RATE_LIMITED'], ['503 STORE_UNAVAILABLE', 503, 'STORE_UNAVAILABLE']] as const) {
  test(`a registration answered ${what} with Retry-After is written again after it, on the same session and lease`, async () => {
    const isPut = (m: string, p: string) => m === 'PUT' && p.startsWith('/v1/services/ra/instances/');
    const proxy = await faultProxy(agent.url, first(2, isPut, { status, headers: { 'retry-after': '1' }, body: problem(status, code) }));
    const client = await connect({ endpoints: [proxy.url], leaseTtlMs: 3_000, backoff: { initialMs: 20, maxMs: 200 } });
    const changes: LeaseChange[] = [];
    client.on('lease', (c: LeaseChange) => changes.push(c));
    client.on('registry-error', () => undefined);
    try {
      const t0 = performance.now();
      const reg = await client.register({ service: 'ra', id: `ra-${status}`, address: '127.0.0.1', port: 1 });
      const took = performance.now() - t0;
      // Two refusals, each followed by a 1 s wait: not before 2 s, and not much later.
      assert.ok(took >= 1_900 && took < 6_000, `registered after ${Math.round(took)} ms`);
      const puts = proxy.log.filter((l) => l.startsWith('PUT /v1/services/ra/'));
      assert.equal(puts.length, 3, puts.join('\n'));
      assert.ok(puts.every((l) => l.endsWith('session)')), `written over the session: ${puts.join('\n')}`);
      assert.equal(proxy.sessions.opened, 1, 'one session connection, never closed and reopened');
      assert.equal(proxy.sessions.closed, 0);
      assert.equal(changes.length <= 1 && changes.every((c) => c.kind === 'new'), true, JSON.stringify(changes));
      // Past the registry's 500 ms grace for a dropped session: the lease and the instance stay.
      await new Promise((r) => setTimeout(r, 1_000));
      const listed = await instancesOf('ra');
      assert.deepEqual(listed.filter((i) => i.id === reg.id).map((i) => i.leaseId), [client.lease?.leaseId]);
    } finally {
      await client.close();
      await proxy.close();
    }
  });
}

test('an instance deleted by someone else is registered again when its status is written', async () => {
  const client = await connect({ endpoints: [agent.url], backoff: { initialMs: 20, maxMs: 200 } });
  const errors: unknown[] = [];
  client.on('registry-error', (e) => errors.push(e));
  try {
    const reg = await client.register({ service: 'deleted', id: 'd1', address: '127.0.0.1', port: 1 });
    assert.equal((await rest(agent.url, 'DELETE', '/v1/services/deleted/instances/d1')).status, 200);
    assert.equal((await instancesOf('deleted')).length, 0);
    await reg.setStatus('draining', { signal: AbortSignal.timeout(5_000) });
    const listed = await instancesOf('deleted');
    assert.deepEqual(listed.map((i) => [i.id, i.status, i.leaseId]), [['d1', 'draining', client.lease?.leaseId]]);
    assert.ok(errors.some((e) => (e as { code?: string }).code === 'INSTANCE_NOT_FOUND'), 'the 404 was reported');
  } finally {
    await client.close();
  }
});

test('a status the registry refuses rejects setStatus() after one attempt, and is not retried', async () => {
  const isStatus = (m: string, p: string) => m === 'PUT' && p.startsWith('/v1/services/refused/instances/r1/status');
  const proxy = await faultProxy(agent.url, first(1_000, isStatus, { status: 409, body: problem(409, 'INVALID_ARGUMENT') }));
  const client = await connect({ endpoints: [proxy.url], backoff: { initialMs: 1, maxMs: 5 } });
  client.on('registry-error', () => undefined);
  try {
    const reg = await client.register({ service: 'refused', id: 'r1', address: '127.0.0.1', port: 1 });
    await assert.rejects(reg.setStatus('out_of_service', { signal: AbortSignal.timeout(5_000) }), (e: unknown) => e instanceof InvalidArgumentError);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(proxy.log.filter((l) => l.startsWith('PUT /v1/services/refused/instances/r1/status')).length, 1, proxy.log.join('\n'));
    // The refusal is not sticky: the next status asked for is written, and so is the same
    // one asked for again (it is refused again, not taken for written).
    let calls = proxy.log.length;
    await assert.rejects(reg.setStatus('draining', { signal: AbortSignal.timeout(5_000) }), InvalidArgumentError);
    assert.equal(proxy.log.length, calls + 1);
    calls = proxy.log.length;
    await assert.rejects(reg.setStatus('draining', { signal: AbortSignal.timeout(5_000) }), InvalidArgumentError);
    assert.equal(proxy.log.length, calls + 1, 'asked again, written again');
    // A drain (every instance `draining`) does not wait for the refused one either: it ends
    // well before its own bound (closeTimeoutMs, 5 s).
    const t0 = performance.now();
    await client.drain({ waitMs: 0 });
    assert.ok(performance.now() - t0 < 2_500, `drain took ${Math.round(performance.now() - t0)} ms`);
  } finally {
    await client.close();
    await proxy.close();
  }
});

test('a listener that throws is reported as an uncaught exception and the registrar goes on', async () => {
  const isPut = (m: string, p: string) => m === 'PUT' && p.startsWith('/v1/services/throws/instances/');
  const proxy = await faultProxy(agent.url, first(1, isPut, { status: 503, body: problem(503, 'STORE_UNAVAILABLE') }));
  const client = await connect({ endpoints: [proxy.url], backoff: { initialMs: 20, maxMs: 100 } });
  const uncaught: unknown[] = [];
  const listeners = process.listeners('uncaughtException');
  process.removeAllListeners('uncaughtException');
  process.on('uncaughtException', (e) => uncaught.push(e));
  client.on('registry-error', () => {
    throw new Error('a listener bug');
  });
  try {
    const reg = await client.register({ service: 'throws', id: 't1', address: '127.0.0.1', port: 1 }, { signal: AbortSignal.timeout(5_000) });
    assert.equal(reg.id, 't1');
    await waitFor(() => uncaught.length > 0, 2_000, 'the listener error to surface');
    assert.match(String(uncaught[0]), /a listener bug/);
  } finally {
    process.removeAllListeners('uncaughtException');
    for (const l of listeners) process.on('uncaughtException', l);
    await client.close();
    await proxy.close();
  }
});
