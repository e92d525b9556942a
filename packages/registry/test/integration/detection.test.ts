// Goal: failure detection with real processes at the default settings. A provider killed
// with SIGKILL disappears for watchers within the session grace plus one second; one frozen
// with SIGSTOP within its lease TTL plus one second; keep-alives that are merely late (but
// within the TTL) never expire anything. Each test prints the time it measured.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_LIMITS } from '@switchboard/protocol';
import { SseReader, call, sleep } from '../helpers.js';
import { spawnAgent, spawnProvider, type AgentProcess, type ProviderProcess } from './process.js';

const GRACE_MS = DEFAULT_LIMITS.sessionGraceMs;

async function withAgent(body: (agent: AgentProcess) => Promise<void>): Promise<void> {
  const agent = await spawnAgent(['--dev']);
  try {
    await body(agent);
  } finally {
    agent.child.kill('SIGKILL');
  }
}

/** Waits for the delete event of `id` and returns when it arrived (performance.now()). */
async function deletedAt(w: SseReader, id: string, timeoutMs: number): Promise<{ at: number; reason: string }> {
  let found: { at: number; reason: string } | undefined;
  const seen = w.events.length;
  await w.until(() => {
    const ev = w.events.slice(seen).find((e) => e.event === 'delete' && e.json.instance.id === id);
    if (ev && !found) found = { at: performance.now(), reason: ev.json.reason };
    return found !== undefined;
  }, timeoutMs, `the delete of ${id}`);
  return found!;
}

function killAll(ps: ProviderProcess[]): void {
  for (const p of ps) p.child.kill('SIGKILL');
}

test('SIGKILL: the provider is gone for watchers within the grace plus one second', async () => {
  await withAgent(async (agent) => {
    const w = await SseReader.open(`${agent.url}/v1/watch?service=pay`);
    const p = await spawnProvider(agent.url, 'pay', 'pay-1', { ttlMs: 10_000, everyMs: 3_000 });
    try {
      await w.until(() => w.events.some((e) => e.event === 'put'), 5_000, 'the registration');
      const killed = performance.now();
      p.child.kill('SIGKILL');
      const gone = await deletedAt(w, 'pay-1', GRACE_MS + 3_000);
      const ms = Math.round(gone.at - killed);
      console.log(`# SIGKILL detected after ${ms} ms (grace ${GRACE_MS} ms, lease TTL 10 s)`);
      assert.ok(ms <= GRACE_MS + 1_000, `detected after ${ms} ms`);
      assert.equal(gone.reason, 'connection_lost');
    } finally {
      killAll([p]);
      w.close();
    }
  });
});

test('SIGSTOP: a frozen provider is gone within its TTL plus one second', async () => {
  await withAgent(async (agent) => {
    const ttlMs = 3_000;
    const w = await SseReader.open(`${agent.url}/v1/watch?service=pay`);
    const p = await spawnProvider(agent.url, 'pay', 'pay-1', { ttlMs, everyMs: ttlMs / 3 });
    try {
      await w.until(() => w.events.some((e) => e.event === 'put'), 5_000, 'the registration');
      const frozen = performance.now();
      p.child.kill('SIGSTOP');
      const gone = await deletedAt(w, 'pay-1', ttlMs + 3_000);
      const ms = Math.round(gone.at - frozen);
      console.log(`# SIGSTOP detected after ${ms} ms (lease TTL ${ttlMs} ms, keep-alive every ${ttlMs / 3} ms)`);
      assert.ok(ms <= ttlMs + 1_000, `detected after ${ms} ms`);
      assert.equal(gone.reason, 'lease_expired', 'the socket stayed open: the TTL caught it');
      p.child.kill('SIGCONT');
      assert.equal(await p.exited, 3, 'woken up, the provider learns that its lease ended');
    } finally {
      killAll([p]);
      w.close();
    }
  });
});

test('keep-alives that are late but within the TTL never expire the lease', async () => {
  await withAgent(async (agent) => {
    const ttlMs = 2_000;
    const w = await SseReader.open(`${agent.url}/v1/watch?service=pay`);
    // every 1.5 s instead of every TTL/3: late by more than a second, still within the TTL
    const p = await spawnProvider(agent.url, 'pay', 'pay-1', { ttlMs, everyMs: 1_500 });
    try {
      await sleep(8_000);
      assert.deepEqual(w.events.filter((e) => e.event === 'delete'), []);
      const inst = await call(agent.url, 'GET', '/v1/services/pay/instances/pay-1');
      assert.equal(inst.status, 200);
      assert.equal(inst.body.leaseId, p.leaseId);
    } finally {
      killAll([p]);
      w.close();
    }
  });
});
