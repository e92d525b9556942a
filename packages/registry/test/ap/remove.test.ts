// Goal: removing a member that is gone for good, on in-process engines: the removal is
// refused for a reachable member, this node and an unknown or removed one; it settles the
// member's records on every node (lease-bound dropped, persistent adopted by one remaining
// node and confirmed everywhere); a node that was away learns it when it comes back and a
// stale record it sends does not bring anything back; and the removal survives a restart.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_LIMITS, SwitchboardError, validateInstanceInput } from '@switchboard/protocol';
import { adopterOf } from '../../src/core/membership.js';
import { ApEngine } from '../../src/engines/ap/engine.js';
import { RemovedMembers } from '../../src/engines/ap/removed.js';
import { FileStorage } from '../../src/storage/file-storage.js';
import { MemoryStorage, type Storage } from '../../src/storage/storage.js';
import { LoopbackNet, eventually } from './loopback.js';

const limits = { ...DEFAULT_LIMITS, apAntiEntropyIntervalMs: 100, apCatchUpTimeoutMs: 2_000, apOwnerGraceMs: 60_000 };
const clock = { now: () => performance.now() };
const item = (service: string, id: string, leaseId: string | null = null) => ({ namespace: 'default', service, id, input: validateInstanceInput({ address: '10.0.0.9', port: 80, leaseId }, DEFAULT_LIMITS) });

function open(net: LoopbackNet, id: string, storage: Storage = new MemoryStorage(), removed?: RemovedMembers): Promise<ApEngine> {
  return ApEngine.open({ nodeId: id, storage, transport: net.transport(id), limits, clock, activeChecks: false, expiryTickMs: 50, ...(removed ? { removed } : {}) });
}

async function refused(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => err instanceof SwitchboardError && err.code === code && typeof err.hint === 'string');
}

const shown = (e: ApEngine, service: string, id: string) => e.registry.instance('default', service, id)?.instance;

test('a removed member: refusals, its records settled everywhere, a node away learns it on return', { timeout: 30_000 }, async () => {
  const net = new LoopbackNet(['a', 'b', 'c', 'd']);
  const engines = new Map<string, ApEngine>();
  for (const id of net.ids) engines.set(id, await open(net, id));
  const [a, b, c, d] = net.ids.map((id) => engines.get(id) as ApEngine) as [ApEngine, ApEngine, ApEngine, ApEngine];
  try {
    await eventually('ready', () => ([a, b, c, d].every((e) => e.ready) ? true : undefined));
    const lease = await c.grantLease(60_000);
    await c.register(item('web', 'leased', lease.leaseId));
    for (let k = 0; k < 12; k++) await c.register(item('db', `p${k}`));
    await eventually('a and d learned c', () => (shown(a, 'web', 'leased') && shown(d, 'db', 'p11') ? true : undefined));

    // d is away; c dies for good.
    for (const x of ['a', 'b', 'c']) net.setCut(x, 'd', true);
    await c.close();
    await eventually('a sees c down', () => (shown(a, 'db', 'p0')?.unconfirmed ? true : undefined));
    await refused(a.removeMember('a'), 'MEMBER_IS_SELF');
    await refused(a.removeMember('nobody'), 'MEMBER_NOT_FOUND');
    await refused(a.removeMember('b'), 'MEMBER_REACHABLE');

    const r = await a.removeMember('c');
    assert.equal(r.member, 'c');
    assert.equal(r.dropped, 1);
    assert.equal(r.adopted + r.adoptedElsewhere, 12);
    assert.deepEqual(r.notified, ['b']);
    await refused(a.removeMember('c'), 'MEMBER_NOT_FOUND');

    // a and b adopt their share now; d's share waits, flagged, for d (it is still a member).
    const adopter = (k: number) => adopterOf(`default/db/p${k}`, ['a', 'b', 'd']);
    for (const e of [a, b]) {
      await eventually(`${e.nodeId} settled c's records`, () => {
        if (shown(e, 'web', 'leased')) return undefined;
        for (let k = 0; k < 12; k++) {
          const i = shown(e, 'db', `p${k}`);
          const want = adopter(k) === 'd' ? i?.owner === 'c' && i?.unconfirmed === true : i?.owner === adopter(k) && i?.unconfirmed === undefined;
          if (!want) return undefined;
        }
        return true;
      });
      assert.ok(!e.cluster().members.some((m) => m.id === 'c'), `${e.nodeId} still lists c`);
      assert.deepEqual(e.cluster().removedMembers, ['c']);
    }
    assert.equal(r.adopted, [...Array(12).keys()].filter((k) => adopter(k) === 'a').length);

    // d comes back, not knowing: it learns the removal and agrees; its stale copies bring nothing back.
    assert.ok(shown(d, 'web', 'leased'), 'd still shows the lease-bound record of c');
    for (const x of ['a', 'b']) net.setCut(x, 'd', false);
    await eventually('d learned the removal', () => ((d.cluster().removedMembers as string[]).includes('c') ? true : undefined));
    for (const e of [a, b, d]) {
      await eventually(`${e.nodeId} settled with d back`, () => {
        if (shown(e, 'web', 'leased')) return undefined;
        for (let k = 0; k < 12; k++) {
          const i = shown(e, 'db', `p${k}`);
          if (i?.owner !== adopter(k) || i?.unconfirmed) return undefined;
        }
        return true;
      });
    }
    assert.ok(!d.cluster().members.some((m) => m.id === 'c'));
    await new Promise((res) => setTimeout(res, 300));
    for (const e of [a, b]) assert.equal(shown(e, 'web', 'leased'), undefined, `${e.nodeId} got the lease-bound record back`);
    assert.equal(a.table.get('default/web/leased')?.del, 'owner_removed');
    assert.equal(d.table.get('default/web/leased')?.v, a.table.get('default/web/leased')?.v, 'the same tombstone everywhere');
  } finally {
    for (const e of engines.values()) await e.close();
  }
});

test('a removal is durable: after a restart the member stays removed and its records stay settled', { timeout: 30_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'sb-ap-remove-'));
  const net = new LoopbackNet(['a', 'b']);
  let a = await open(net, 'a', new FileStorage({ dataDir: dir }), await RemovedMembers.load(dir));
  const b = await open(net, 'b');
  try {
    await eventually('ready', () => (a.ready && b.ready ? true : undefined));
    const lease = await b.grantLease(60_000);
    await b.register(item('web', 'leased', lease.leaseId));
    await b.register(item('db', 'kept'));
    await eventually('a learned b', () => (shown(a, 'web', 'leased') && shown(a, 'db', 'kept') ? true : undefined));
    await b.close();
    await eventually('a sees b down', () => (shown(a, 'db', 'kept')?.unconfirmed ? true : undefined));
    const r = await a.removeMember('b');
    assert.deepEqual({ adopted: r.adopted, dropped: r.dropped }, { adopted: 1, dropped: 1 }, 'the only member left adopts everything');
    const file = JSON.parse(await readFile(join(dir, 'removed-members.json'), 'utf8'));
    assert.deepEqual(file, { format: 1, removed: ['b'] });
    await eventually('adopted', () => (shown(a, 'db', 'kept')?.owner === 'a' ? true : undefined));
    await a.close();

    a = await open(net, 'a', new FileStorage({ dataDir: dir }), await RemovedMembers.load(dir));
    assert.deepEqual(a.cluster().removedMembers, ['b']);
    assert.deepEqual(a.cluster().members.map((m) => m.id), ['a']);
    assert.equal(shown(a, 'web', 'leased'), undefined);
    assert.equal(shown(a, 'db', 'kept')?.owner, 'a');
    assert.equal(shown(a, 'db', 'kept')?.unconfirmed, undefined);
  } finally {
    await a.close();
    await rm(dir, { recursive: true, force: true });
  }
});
