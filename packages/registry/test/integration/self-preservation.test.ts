// Goal: with real processes and the default settings (window 15 s, threshold 50%, at least
// 10 leases), losing more than half of the lease holders at once engages self-preservation:
// /v1/status says `protecting`, the metric and the log say so, and no further eviction
// happens until renewals recover. Killed holders stay held until the fleet is back, and
// then for one TTL more (the release grace); frozen holders that wake up renew their held leases and lose nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SseReader, call, sleep } from '../helpers.js';
import { spawnAgent, spawnProvider, type AgentProcess, type ProviderProcess } from './process.js';

const FLEET = 12;

async function status(agent: AgentProcess): Promise<any> {
  return (await call(agent.url, 'GET', '/v1/status')).body.selfPreservation;
}

async function waitFor(what: string, pred: () => Promise<boolean>, timeoutMs: number): Promise<number> {
  const t0 = performance.now();
  while (!(await pred())) {
    if (performance.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
  return Math.round(performance.now() - t0);
}

/** Started one after the other: a dozen Node processes starting at once would starve the other tests' timers. */
async function startFleet(agent: AgentProcess, n: number, prefix: string, opts: { ttlMs: number; everyMs: number; align?: boolean }): Promise<ProviderProcess[]> {
  const out: ProviderProcess[] = [];
  for (let k = 0; k < n; k++) out.push(await spawnProvider(agent.url, 'pay', `${prefix}${k}`, opts));
  return out;
}

const deletes = (w: SseReader) => w.events.filter((e) => e.event === 'delete');

test('killing 7 of 12 holders at once engages self-preservation; nothing more is evicted until the fleet is back', async () => {
  const agent = await spawnAgent(['--dev']);
  const all: ProviderProcess[] = [];
  try {
    const w = await SseReader.open(`${agent.url}/v1/watch?service=pay`);
    all.push(...(await startFleet(agent, FLEET, 'p', { ttlMs: 10_000, everyMs: 3_000 })));
    await w.count(FLEET);
    for (const p of all.slice(0, 7)) p.child.kill('SIGKILL');
    const ms = await waitFor('self-preservation', async () => (await status(agent)).engaged, 5_000);
    const sp = await status(agent);
    console.log(`# engaged ${ms} ms after the kill: ${sp.reason}; ${deletes(w).length} evicted before, ${sp.blockedLeases} held`);
    assert.equal(sp.state, 'protecting');
    assert.ok(deletes(w).length <= 6, 'at most half of the leases can go before the share passes 50%');
    assert.equal(deletes(w).length + sp.blockedLeases, 7);
    const evicted = deletes(w).length;
    await sleep(2_000);
    assert.equal(deletes(w).length, evicted, 'no eviction while protecting');
    assert.equal((await call(agent.url, 'GET', '/v1/services/pay')).body.instances.length, FLEET - evicted);
    const metrics = (await call(agent.url, 'GET', '/metrics')).body as string;
    assert.match(metrics, /^switchboard_self_preservation_engaged 1$/m);
    assert.match(metrics, new RegExp(`^switchboard_self_preservation_blocked_evictions_total ${7 - evicted}$`, 'm'));
    assert.match(agent.output(), /self-preservation engaged/);

    // The fleet is restarted under new leases: lapsed leases are now a minority, protection
    // ends, and the held leases get their TTL (10 s) once more before the dead are evicted.
    all.push(...(await startFleet(agent, 7, 'q', { ttlMs: 10_000, everyMs: 3_000 })));
    await waitFor('release', async () => !(await status(agent)).engaged, 3_000);
    assert.equal((await status(agent)).releasingLeases, 7 - evicted, 'the held leases are in their release grace');
    assert.equal(deletes(w).length, evicted, 'no eviction at the instant of release');
    // When the agent released (its log line; the fleet was still starting then).
    const line = agent.output().split('\n').find((l) => l.includes('self-preservation released'));
    assert.ok(line, 'the release is logged');
    const releasedAt = (JSON.parse(line) as { time: number }).time;
    await w.until(() => deletes(w).length === 7, 14_000, 'the held leases to be evicted');
    const graceMs = Date.now() - releasedAt;
    console.log(`# the held leases were evicted ${graceMs} ms after the release`);
    assert.ok(graceMs >= 9_500, `evicted after the grace (the 10 s TTL), not before (${graceMs} ms)`);
    assert.deepEqual([...new Set(deletes(w).map((e) => e.json.reason))], ['connection_lost']);
    assert.equal((await call(agent.url, 'GET', '/v1/services/pay')).body.instances.length, FLEET);
    assert.match(agent.output(), /self-preservation released/);
    w.close();
  } finally {
    for (const p of all) p.child.kill('SIGKILL');
    agent.child.kill('SIGKILL');
  }
});

test('freezing 8 of 12 holders engages self-preservation; when they wake, they renew and lose nothing', async () => {
  const agent = await spawnAgent(['--dev']);
  let fleet: ProviderProcess[] = [];
  try {
    const w = await SseReader.open(`${agent.url}/v1/watch?service=pay`);
    // Keep-alives aligned on the clock: frozen together, the holders lapse together.
    fleet = await startFleet(agent, FLEET, 'p', { ttlMs: 3_000, everyMs: 1_000, align: true });
    await w.count(FLEET);
    const frozen = fleet.slice(0, 8);
    await sleep(1_300 - (Date.now() % 1_000)); // between two keep-alive instants
    for (const p of frozen) p.child.kill('SIGSTOP');
    await waitFor('self-preservation', async () => (await status(agent)).engaged, 6_000);
    const evicted = deletes(w).length;
    assert.ok(evicted <= 6);
    await w.until(() => w.events.filter((e) => e.json.reason === 'eviction_blocked').length === 8 - evicted, 3_000, 'eviction_blocked events');
    await sleep(1_000);
    assert.equal(deletes(w).length, evicted, 'no eviction while protecting');

    for (const p of frozen) p.child.kill('SIGCONT');
    const ms = await waitFor('release', async () => !(await status(agent)).engaged, 5_000);
    console.log(`# released ${ms} ms after the frozen holders woke up; ${evicted} evicted before it engaged`);
    await sleep(500);
    assert.equal(deletes(w).length, evicted, 'the held leases were renewed, not evicted');
    assert.equal((await call(agent.url, 'GET', '/v1/services/pay')).body.instances.length, FLEET - evicted);
    const held = w.events.find((e) => e.json.reason === 'eviction_blocked')!.json.instance.id;
    const history = (await call(agent.url, 'GET', `/v1/services/pay/instances/${held}/history`)).body.history;
    assert.deepEqual(history.map((h: { reason: string }) => h.reason), ['registered', 'eviction_blocked']);
    w.close();
  } finally {
    for (const p of fleet) p.child.kill('SIGKILL');
    agent.child.kill('SIGKILL');
  }
});
