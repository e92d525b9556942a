// Goal: every acknowledged write survives kill -9 of the real process, at random moments,
// cycle after cycle: the agent comes back with the same epoch, every acknowledged
// registration (persistent, and ephemeral on an acknowledged lease) and lease, and
// revisions that continue from where they were. A third test kills a process in the
// middle of snapshots, segment rotation and trimming. Random moments come from a seed
// that every failure prints; rerun one with CRASH_SEED=<seed>.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_LIMITS } from '@switchboard/protocol';
import { ManualClock } from '../../src/core/clock.js';
import { Registry } from '../../src/core/registry.js';
import { FileStorage } from '../../src/storage/file-storage.js';
import { silentLogger } from '../../src/storage/logger.js';
import { call } from '../helpers.js';
import { spawnAgent, type AgentProcess } from './process.js';

const SEED = Number(process.env.CRASH_SEED ?? Math.floor(Math.random() * 2 ** 31));
const AGENT_CYCLES = 5;
const WRITER_CYCLES = 6;
const HTTP_WRITERS = 8;
/** Kill moments are drawn from this window after the writes start. */
const KILL_AFTER_MS: [number, number] = [150, 900];
const LEASE_TTL_MS = 60_000;

/** mulberry32: small, seedable, good enough to pick moments. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const between = (rand: () => number, [lo, hi]: [number, number]): number => Math.round(lo + rand() * (hi - lo));

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'sb-crash-'));
}

async function kill9(agent: AgentProcess): Promise<void> {
  process.kill(agent.child.pid as number, 'SIGKILL');
  await agent.exited;
}

/** What the clients were told: the state that must survive. */
class Acked {
  epoch: string | null = null;
  maxRevision = 0;
  readonly instances = new Map<string, { service: string; id: string; revision: number; leaseId: string | null }>();
  readonly leases = new Set<string>();

  instance(service: string, id: string, revision: number, leaseId: string | null = null): void {
    this.instances.set(`${service}/${id}`, { service, id, revision, leaseId });
    this.maxRevision = Math.max(this.maxRevision, revision);
  }
  services(): string[] {
    return [...new Set([...this.instances.values()].map((i) => i.service))];
  }
}

async function checkAgent(url: string, acked: Acked, where: string): Promise<void> {
  const status = await call(url, 'GET', '/v1/status');
  if (acked.epoch !== null) assert.equal(status.body.epoch, acked.epoch, `${where}: the epoch is unchanged`);
  assert.ok(status.body.revision >= acked.maxRevision, `${where}: revision ${status.body.revision} went back below acknowledged ${acked.maxRevision}`);
  for (const service of acked.services()) {
    const listed = await call(url, 'GET', `/v1/services/${service}`);
    const byId = new Map<string, any>(listed.body.instances.map((i: any) => [i.id, i]));
    for (const a of acked.instances.values()) {
      if (a.service !== service) continue;
      const got = byId.get(a.id);
      assert.ok(got, `${where}: acknowledged ${service}/${a.id} (revision ${a.revision}) is missing`);
      assert.equal(got.modRevision, a.revision, `${where}: ${service}/${a.id} has another revision`);
      assert.equal(got.leaseId, a.leaseId);
    }
  }
  for (const leaseId of acked.leases) {
    const ka = await call(url, 'PUT', `/v1/leases/${leaseId}/keepalive`);
    assert.equal(ka.status, 200, `${where}: acknowledged lease ${leaseId} is gone`);
  }
}

/** One client: registers until told to stop or until the agent dies under it. */
async function writer(url: string, w: number, cycle: number, acked: Acked, rand: () => number, stop: { now: boolean }): Promise<void> {
  for (let i = 0; !stop.now; i++) {
    try {
      const service = `svc${w % 4}`;
      const id = `c${cycle}-w${w}-${i}`;
      let leaseId: string | null = null;
      if (rand() < 0.05) {
        const lease = await call(url, 'POST', '/v1/leases', { ttlMs: LEASE_TTL_MS });
        if (lease.status !== 201) continue;
        leaseId = lease.body.leaseId as string;
        acked.leases.add(leaseId);
      }
      const r = await call(url, 'PUT', `/v1/services/${service}/instances/${id}`, { address: '10.0.0.1', port: 8080, ...(leaseId ? { leaseId } : {}) });
      if (r.status === 200) acked.instance(service, id, r.body.revision as number, leaseId);
      else assert.fail(`registration answered ${r.status}: ${JSON.stringify(r.body)}`);
    } catch (err) {
      if (err instanceof assert.AssertionError) throw err;
      return; // the agent was killed: this write's outcome is unknown, and allowed to be either
    }
  }
}

test(`fifty acknowledged persistent writes survive kill -9 (seed ${SEED})`, { timeout: 30_000 }, async () => {
  const dir = tempDir();
  let agent: AgentProcess | undefined;
  try {
    agent = await spawnAgent(['--data-dir', dir]);
    const acked = new Acked();
    acked.epoch = (await call(agent.url, 'GET', '/v1/status')).body.epoch;
    await Promise.all(
      Array.from({ length: 50 }, async (_, i) => {
        const r = await call(agent!.url, 'PUT', `/v1/services/fifty/instances/i${i}`, { address: '10.0.0.1', port: 8080 });
        assert.equal(r.status, 200);
        acked.instance('fifty', `i${i}`, r.body.revision);
      }),
    );
    await kill9(agent);
    agent = await spawnAgent(['--data-dir', dir]);
    const listed = await call(agent.url, 'GET', '/v1/services/fifty');
    assert.equal(listed.body.instances.length, 50);
    await checkAgent(agent.url, acked, 'after kill -9');
  } finally {
    if (agent) agent.child.kill('SIGKILL');
    await agent?.exited;
    rmSync(dir, { recursive: true, force: true });
  }
});

test(`the agent keeps every acknowledged write across ${AGENT_CYCLES} kill -9 cycles (seed ${SEED})`, { timeout: 90_000 }, async () => {
  const rand = rng(SEED);
  const dir = tempDir();
  const acked = new Acked();
  let agent: AgentProcess | undefined;
  try {
    for (let cycle = 0; cycle <= AGENT_CYCLES; cycle++) {
      agent = await spawnAgent(['--data-dir', dir]);
      const where = `seed ${SEED}, cycle ${cycle}`;
      await checkAgent(agent.url, acked, where);
      acked.epoch ??= (await call(agent.url, 'GET', '/v1/status')).body.epoch;
      const next = await call(agent.url, 'PUT', `/v1/services/probe/instances/p${cycle}`, { address: '10.0.0.1', port: 1 });
      assert.ok(next.body.revision > acked.maxRevision, `${where}: a new write got revision ${next.body.revision}, not above ${acked.maxRevision}`);
      acked.instance('probe', `p${cycle}`, next.body.revision);
      if (cycle === AGENT_CYCLES) break;
      const stop = { now: false };
      const writers = Array.from({ length: HTTP_WRITERS }, (_, w) => writer(agent!.url, w, cycle, acked, rand, stop));
      await sleep(between(rand, KILL_AFTER_MS));
      await kill9(agent);
      stop.now = true;
      await Promise.all(writers);
      agent = undefined;
    }
    assert.ok(acked.instances.size > AGENT_CYCLES * 10, `only ${acked.instances.size} writes were acknowledged`);
  } finally {
    if (agent) agent.child.kill('SIGKILL');
    await agent?.exited;
    rmSync(dir, { recursive: true, force: true });
  }
});

const CRASH_WRITER = fileURLToPath(new URL('./crash-writer.js', import.meta.url));

/** Runs crash-writer until a random moment, kills it, and returns the revisions it acknowledged. */
async function runWriterUntilKilled(dir: string, start: number, killAfterMs: number): Promise<Map<number, string>> {
  const child = spawn(process.execPath, [CRASH_WRITER, dir, String(start)], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  let out = '';
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) resolve();
    });
    exited.then(() => reject(new Error(`crash-writer exited early: ${err}`)));
  });
  try {
    await ready;
    await sleep(killAfterMs);
  } finally {
    process.kill(child.pid as number, 'SIGKILL');
    await exited;
  }
  const acks = new Map<number, string>();
  for (const line of out.split('\n').slice(0, -1)) {
    const m = /^ack (\d+)$/.exec(line);
    if (m) acks.set(Number(m[1]), line);
  }
  return acks;
}

test(`kill -9 during snapshots, rotation and trimming loses no acknowledged append (seed ${SEED})`, { timeout: 90_000 }, async () => {
  const rand = rng(SEED ^ 0x5bd1e995);
  const dir = tempDir();
  let maxAcked = 0;
  let epoch: string | null = null;
  let snapshotsSeen = 0;
  try {
    for (let cycle = 0; cycle < WRITER_CYCLES; cycle++) {
      const where = `seed ${SEED}, cycle ${cycle}`;
      const acks = await runWriterUntilKilled(dir, cycle * 1_000_000, between(rand, [200, 1200]));
      const s = new FileStorage({ dataDir: dir, logger: silentLogger });
      const rec = await s.open(() => assert.fail(`${where}: the directory lost its epoch`));
      await s.close();
      epoch ??= rec.epoch;
      assert.equal(rec.epoch, epoch, where);
      if (rec.snapshot) snapshotsSeen++;
      const base = { limits: DEFAULT_LIMITS, clock: new ManualClock(0) };
      const reg = rec.snapshot ? Registry.fromSnapshot(rec.snapshot, base) : new Registry({ ...base, epoch: rec.epoch });
      for (const e of rec.entries) reg.apply(e);
      const revs = new Set<number>();
      for (const svc of reg.listServices()) for (const r of svc.instances.values()) revs.add(r.instance.modRevision);
      for (const rev of acks.keys()) assert.ok(revs.has(rev), `${where}: acknowledged revision ${rev} is missing`);
      maxAcked = Math.max(maxAcked, ...acks.keys());
      assert.ok(reg.revision >= maxAcked, `${where}: revision ${reg.revision} below acknowledged ${maxAcked}`);
      const snaps = readdirSync(dir).filter((n) => n.endsWith('.snap'));
      assert.ok(snaps.length <= 2, `${where}: ${snaps.length} snapshots kept`);
    }
    assert.ok(snapshotsSeen > 0, 'the writer took snapshots');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('after kill -9 revisions continue past any a read may have shown, resumes below get a reset; after a clean stop they continue as they were', { timeout: 60_000 }, async () => {
  const dir = tempDir();
  let agent: AgentProcess | undefined;
  const GAP = 1_000_000;
  const firstEvent = async (url: string, lastId: string): Promise<string> => {
    const ac = new AbortController();
    const res = await fetch(`${url}/v1/watch?service=phx`, { headers: { 'last-event-id': lastId }, signal: ac.signal });
    const reader = res.body!.getReader();
    let text = '';
    while (!/\nevent: (\w+)/.test(`\n${text}`)) text += Buffer.from((await reader.read()).value ?? []).toString();
    ac.abort();
    return (/(?:^|\n)event: (\w+)/.exec(text) as RegExpExecArray)[1] as string;
  };
  try {
    agent = await spawnAgent(['--data-dir', dir]);
    const epoch = (await call(agent.url, 'GET', '/v1/status')).body.epoch as string;
    const r1 = (await call(agent.url, 'PUT', '/v1/services/phx/instances/a', { address: '10.0.0.1', port: 80 })).body.revision as number;
    await kill9(agent);
    agent = await spawnAgent(['--data-dir', dir]);
    const after = (await call(agent.url, 'GET', '/v1/status')).body.revision as number;
    assert.ok(after >= r1 + GAP, `revision ${after} after the crash, at least ${r1 + GAP} expected`);
    assert.equal(await firstEvent(agent.url, `${epoch}:${r1}`), 'reset', 'a position from before the crash may name a change that was lost: relist');
    const r2 = (await call(agent.url, 'PUT', '/v1/services/phx/instances/b', { address: '10.0.0.1', port: 80 })).body.revision as number;
    assert.equal(r2, after + 1);
    // A second crash before anything else is written: the floor was kept, so it moves on again.
    await kill9(agent);
    agent = await spawnAgent(['--data-dir', dir]);
    const again = (await call(agent.url, 'GET', '/v1/status')).body.revision as number;
    assert.ok(again >= r2 + GAP, `revision ${again} after the second crash, at least ${r2 + GAP} expected`);
    // A clean stop: revisions and positions carry on.
    const r3 = (await call(agent.url, 'PUT', '/v1/services/phx/instances/c', { address: '10.0.0.1', port: 80 })).body.revision as number;
    agent.child.kill('SIGTERM');
    await agent.exited;
    agent = await spawnAgent(['--data-dir', dir]);
    assert.equal((await call(agent.url, 'GET', '/v1/status')).body.revision, r3, 'no jump after a clean stop');
    const resumed = firstEvent(agent.url, `${epoch}:${r3}`);
    await call(agent.url, 'PUT', '/v1/services/phx/instances/d', { address: '10.0.0.1', port: 80 });
    assert.equal(await resumed, 'put', 'a position from before a clean stop resumes');
  } finally {
    if (agent) agent.child.kill('SIGKILL');
    await agent?.exited;
    rmSync(dir, { recursive: true, force: true });
  }
});
