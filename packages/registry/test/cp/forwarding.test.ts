// Goal: cp nodes send their registrations and deregistrations (session requests and REST)
// to one node, the live node with the smallest id, which writes them with its own: its
// etcd transactions carry every node's writers. The sending node answers once its own view
// has the write; the writer's refusals reach the client as they are; a writer that is gone
// costs at most the writes in flight on its link (503, retry), after which the nodes write
// themselves; a node's link for forwarded writes takes no lease.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { SessionClient, call, waitUntil } from '../helpers.js';
import { EtcdCluster } from './etcd-cluster.js';
import { threeNodes as startThree, type CpNode } from './nodes.js';
import { FORWARDED_WRITES_HEADER } from '../../src/engines/engine.js';

let etcd: EtcdCluster;
before(async () => {
  etcd = await EtcdCluster.start(3);
});
after(async () => {
  await etcd?.close();
});

/** Three nodes as the agent makes them (with the API of the others to call): n1 writes for all. */
const threeNodes = async (): Promise<[CpNode, CpNode, CpNode]> => (await startThree(etcd)) as [CpNode, CpNode, CpNode];

/** Runs `body` on three fresh nodes and closes them afterwards, whatever happens. */
async function withThreeNodes(body: (n1: CpNode, n2: CpNode, n3: CpNode) => Promise<void>): Promise<void> {
  const nodes = await threeNodes();
  try {
    await body(...nodes);
  } finally {
    await Promise.all(nodes.map((n) => n.close()));
  }
}

const forwarding = (n: CpNode): { writer: string | null; forwarded: number; lost: number; clockAgeMs: number | null } => (n.engine.cluster() as unknown as { writeForwarding: { writer: string | null; forwarded: number; lost: number; clockAgeMs: number | null } }).writeForwarding;
const writes = (n: CpNode): number => (n.engine.cluster() as unknown as { writeBatches: { writes: number } }).writeBatches.writes;

/** Registers through `node` until a write went to the writer (the link opens with the first writes, which the node makes itself). */
async function untilForwarded(node: CpNode, service: string): Promise<void> {
  let i = 0;
  const before = forwarding(node).forwarded;
  await waitUntil(async () => {
    const r = await call(node.url, 'PUT', `/v1/services/${service}/instances/warm-${i++}`, { address: '10.0.0.9', port: 9000 });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return forwarding(node).forwarded > before;
  }, 10_000, 'a write forwarded to the writer', { intervalMs: 20 });
}

test('writes through the other nodes are made by the writer, and each node answers once its own view has them', { timeout: 60_000 }, () =>
  withThreeNodes(async (n1, n2, n3) => {
    await untilForwarded(n2, 'pay');
    await untilForwarded(n3, 'pay');
    assert.equal(forwarding(n2).writer, 'n1');
    assert.equal(forwarding(n1).forwarded, 0, 'the writer forwards nothing');
    assert.equal(forwarding(n1).clockAgeMs, null, 'nor has a writer\'s clock');
    // The writer's clock comes every second, with or without writes.
    await new Promise((r) => setTimeout(r, 1_500));
    const age = forwarding(n2).clockAgeMs;
    assert.ok(age !== null && age >= 0 && age < 1_500, `the status says how fresh the writer's clock is (${age} ms)`);
    const before = { n1: writes(n1), n2: writes(n2), n3: writes(n3) };
    // Over the session and over REST: a read on the same node right after the answer has the write.
    const s = await SessionClient.connect(n2.url);
    try {
      for (let i = 0; i < 10; i++) {
        s.send({ type: 'register', id: i, service: 'pay', instanceId: `s${i}`, instance: { address: '10.0.0.1', port: 1000 + i } });
        const a = await s.answer(i);
        assert.equal(a.type, 'result', JSON.stringify(a));
        const r = await call(n2.url, 'GET', `/v1/services/pay/instances/s${i}`);
        assert.equal(r.status, 200, `s${i} on n2 right after its answer`);
        assert.equal(r.body.modRevision, (a as { revision: number }).revision);
      }
      const rest = await call(n3.url, 'PUT', '/v1/services/pay/instances/r1', { address: '10.0.0.2', port: 2000 });
      assert.equal(rest.status, 200);
      assert.equal((await call(n3.url, 'GET', '/v1/services/pay/instances/r1')).body.modRevision, rest.body.revision);
      const gone = await call(n3.url, 'DELETE', '/v1/services/pay/instances/s0');
      assert.equal(gone.status, 200);
      assert.equal((await call(n3.url, 'GET', '/v1/services/pay/instances/s0')).status, 404);
      s.send({ type: 'deregister', id: 100, service: 'pay', instanceId: 's1' });
      assert.equal((await s.answer(100)).type, 'result');
    } finally {
      s.ws.close();
    }
    assert.equal(writes(n2), before.n2, 'n2 wrote nothing itself');
    assert.equal(writes(n3), before.n3, 'n3 wrote nothing itself');
    assert.ok(writes(n1) - before.n1 >= 13, `n1 made the writes (${writes(n1) - before.n1})`);
    // The writer's refusal reaches the client as it is (a lease no node knows; a bad body is refused by the first node).
    const refused = await call(n2.url, 'PUT', '/v1/services/pay/instances/x', { address: '10.0.0.3', port: 3000, leaseId: 'l-unknown' });
    assert.equal(refused.status, 404, JSON.stringify(refused.body));
    assert.equal(refused.body.code, 'LEASE_NOT_FOUND');
    const bad = await call(n2.url, 'PUT', '/v1/services/pay/instances/x', { address: '10.0.0.3', port: 70000 });
    assert.equal(bad.status, 400);
    const c = await call(n3.url, 'GET', '/v1/services/pay?consistent=true');
    assert.deepEqual(c.body.instances.map((x: { id: string }) => x.id).filter((id: string) => !id.startsWith('warm-')), ['r1', ...Array.from({ length: 8 }, (_, i) => `s${i + 2}`)]);
  }));

test('a link that failed is made again: after a second of writing itself the node forwards again', { timeout: 60_000 }, () =>
  withThreeNodes(async (n1, n2, n3) => {
    await untilForwarded(n2, 'pay');
    const link = (n2.engine as unknown as { writerLink: { conn: { ws: { terminate(): void } } | null } }).writerLink;
    link.conn?.ws.terminate();
    await waitUntil(() => forwarding(n2).writer === null, 5_000, 'the link seen down');
    const before = forwarding(n2).forwarded;
    const t0 = performance.now();
    await untilForwarded(n2, 'pay-again');
    assert.ok(forwarding(n2).forwarded > before);
    assert.ok(performance.now() - t0 < 10_000);
    assert.equal(forwarding(n2).writer, 'n1');
  }));

test('when the writer is gone, the other nodes write themselves', { timeout: 60_000 }, () =>
  withThreeNodes(async (n1, n2, n3) => {
    await untilForwarded(n2, 'pay');
    await n1.close();
    // At most the writes in flight on the link are lost (503, retry); then n2 writes itself,
    // until n1's node key is gone and n2 is the writer for n3.
    let ok = 0;
    let unavailable = 0;
    for (let i = 0; i < 20; i++) {
      const r = await call(n2.url, 'PUT', `/v1/services/pay/instances/after-${i}`, { address: '10.0.0.4', port: 4000 + i });
      if (r.status === 200) ok++;
      else {
        assert.equal(r.status, 503, JSON.stringify(r.body));
        unavailable++;
      }
    }
    assert.ok(ok >= 19, `${ok} of 20 writes made, ${unavailable} refused`);
    const r = await call(n3.url, 'GET', '/v1/services/pay?consistent=true');
    assert.equal(r.body.instances.filter((x: { id: string }) => x.id.startsWith('after-')).length, ok);
  }));

/** A session opened as a node's link for forwarded writes, with what it received. */
async function forwardedSession(url: string): Promise<{ ws: import('ws').WebSocket; inbox: { type: string; id?: number; revision?: number; at?: number; warnings?: string[]; problem?: { code: string; detail: string; field?: string } }[] }> {
  const ws = new (await import('ws')).WebSocket(`${url.replace('http', 'ws')}/v1/session`, { headers: { [FORWARDED_WRITES_HEADER]: 'n9' } });
  const inbox: { type: string; problem?: { code: string; detail: string } }[] = [];
  ws.on('message', (d) => inbox.push(JSON.parse(String(d))));
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  return { ws, inbox };
}

test('a node\'s link for forwarded writes takes requests, not lease messages; a write on it not planned within its budget or by its planBy is refused and not made', { timeout: 60_000 }, () =>
  withThreeNodes(async (n1) => {
    const link = await forwardedSession(n1.url);
    link.ws.send(JSON.stringify({ type: 'open', ttlMs: 10_000 }));
    await waitUntil(() => link.inbox.length > 1, 5_000, 'the answer to open');
    assert.equal(link.inbox[0]?.type, 'clock', 'the node tells its clock first');
    assert.equal(link.inbox[1]?.type, 'error');
    assert.equal(link.inbox[1]?.problem?.code, 'FORBIDDEN');
    link.ws.close();

    const { ws, inbox } = await forwardedSession(n1.url);
    const answer = async (id: number) => {
      await waitUntil(() => inbox.some((m) => m.id === id), 10_000, `the answer to request ${id}`);
      return inbox.find((m) => m.id === id)!;
    };
    const ids = async () => (await call(n1.url, 'GET', '/v1/services/budget?consistent=true')).body.instances.map((i: { id: string }) => i.id);
    const register = (id: number, instanceId: string, budgetMs: unknown) => ws.send(JSON.stringify({ type: 'register', id, service: 'budget', instanceId, instance: { address: '10.0.0.1', port: 80 }, budgetMs }));
    // No time left: refused before anything reaches etcd.
    register(1, 'late', 0);
    const late = await answer(1);
    assert.equal(late.type, 'error');
    assert.equal(late.problem?.code, 'NOT_READY', 'not made: the sender, still waiting, makes it itself');
    assert.equal(typeof late.at, 'number', 'an error tells the clock too');
    assert.match(late.problem!.detail, /not made/);
    // Time left: made, and the field is known on this link (no warning).
    register(2, 'in-time', 5_000);
    const made = await answer(2);
    assert.equal(made.type, 'result', JSON.stringify(made));
    assert.equal(made.warnings, undefined);
    assert.deepEqual(await ids(), ['in-time'], 'the refused write was not made');
    ws.send(JSON.stringify({ type: 'deregister', id: 3, service: 'budget', instanceId: 'in-time', budgetMs: 0 }));
    assert.equal((await answer(3)).problem?.code, 'NOT_READY');
    assert.deepEqual(await ids(), ['in-time'], 'nor was the refused deregistration');
    register(4, 'bad', -1);
    const bad = await answer(4);
    assert.deepEqual([bad.problem?.code, bad.problem?.field], ['INVALID_ARGUMENT', 'budgetMs']);

    // planBy, on the clock the link's first message gave: the earlier of it and the budget counts.
    await waitUntil(() => inbox.length > 0, 5_000, 'the clock');
    const clock = inbox[0]!;
    assert.equal(clock.type, 'clock');
    assert.equal(typeof clock.at, 'number');
    const registerBy = (id: number, instanceId: string, planBy: unknown) => ws.send(JSON.stringify({ type: 'register', id, service: 'budget', instanceId, instance: { address: '10.0.0.1', port: 80 }, budgetMs: 5_000, planBy }));
    registerBy(6, 'past', clock.at! - 1);
    const past = await answer(6);
    assert.equal(past.problem?.code, 'NOT_READY', 'its time on the writer\'s clock is up, whatever the budget says');
    registerBy(7, 'future', clock.at! + 60_000);
    const future = await answer(7);
    assert.equal(future.type, 'result', JSON.stringify(future));
    assert.equal(future.warnings, undefined, 'the field is known on this link');
    assert.ok(typeof future.at === 'number' && future.at >= clock.at!, 'a result tells the clock again');
    registerBy(8, 'bad-time', 'soon');
    const badTime = await answer(8);
    assert.deepEqual([badTime.problem?.code, badTime.problem?.field], ['INVALID_ARGUMENT', 'planBy']);
    assert.deepEqual((await ids()).sort(), ['future', 'in-time']);
    // The clock again every second, on a link that carries no writes.
    const clocks = () => inbox.filter((m) => m.type === 'clock');
    const seen = clocks().length;
    await waitUntil(() => clocks().length >= seen + 2, 5_000, 'two more clock readings');
    const [x, y] = clocks().slice(-2).map((m) => m.at!);
    assert.ok(y! - x! >= 500 && y! - x! < 3_000, `a reading about every second (${(y! - x!).toFixed(0)} ms apart)`);
    ws.close();

    // On a client's own session the field means nothing: said so, and the write is made.
    const c = await SessionClient.connect(n1.url);
    try {
      c.send({ type: 'register', id: 5, service: 'budget', instanceId: 'client', instance: { address: '10.0.0.2', port: 80 }, budgetMs: 0, planBy: 0 });
      const r = await c.answer(5);
      assert.ok(r.type === 'result', JSON.stringify(r));
      assert.match(r.warnings?.join('\n') ?? '', /budgetMs/);
      assert.match(r.warnings?.join('\n') ?? '', /planBy/);
      assert.equal((r as { at?: unknown }).at, undefined, 'a client\'s session is told no clock');
    } finally {
      c.ws.close();
    }
  }));

test('a forwarded write whose link closes is not planned after it (a retry may be made another way meanwhile)', { timeout: 60_000 }, () =>
  withThreeNodes(async (n1) => {
    // The engine refuses to plan a write whose signal is aborted, the first plan included.
    const gone = await n1.engine.register({ namespace: 'default', service: 'closed', id: 'x', input: { address: '10.0.0.1', port: 80, leaseId: null, zone: null, version: null, tags: [], metadata: {}, weight: 100, protocol: 'http', checks: [] } }, { forwarded: true, signal: AbortSignal.abort() }).then(() => null, (e: unknown) => e as { code?: string; message?: string });
    assert.equal(gone?.code, 'NOT_READY');
    assert.match(gone?.message ?? '', /not made: the link of the node that sent the write closed/);
    assert.equal((await call(n1.url, 'GET', '/v1/services/closed/instances/x?consistent=true')).status, 404, 'nothing was written');
    // A forwarded session gives its writes a signal that is aborted when it closes.
    const engine = n1.engine as unknown as { register: (item: unknown, opts?: { signal?: AbortSignal }) => Promise<number> };
    const real = engine.register.bind(engine);
    const seen: (AbortSignal | undefined)[] = [];
    engine.register = (item, opts) => {
      seen.push(opts?.signal);
      return real(item, opts);
    };
    try {
      const { ws, inbox } = await forwardedSession(n1.url);
      ws.send(JSON.stringify({ type: 'register', id: 1, service: 'closed', instanceId: 'y', instance: { address: '10.0.0.1', port: 80 }, budgetMs: 5_000 }));
      await waitUntil(() => inbox.some((m) => m.id === 1), 10_000, 'the answer');
      assert.equal(seen.length, 1);
      assert.equal(seen[0]?.aborted, false, 'open while the link is');
      ws.close();
      await waitUntil(() => seen[0]?.aborted === true, 5_000, 'the signal aborted once the link closed');
    } finally {
      engine.register = real;
    }
  }));

test('a writer that cannot reach etcd refuses forwarded writes as not made (the sender writes itself), and its own clients\' as unavailable', { timeout: 90_000 }, () =>
  withThreeNodes(async (n1) => {
    const { ws, inbox } = await forwardedSession(n1.url);
    const c = await SessionClient.connect(n1.url);
    let id = 0;
    const forward = async (): Promise<{ type: string; problem?: { code: string; detail: string } }> => {
      const rid = ++id;
      ws.send(JSON.stringify({ type: 'register', id: rid, service: 'cut', instanceId: 'f', instance: { address: '10.0.0.1', port: 80 }, budgetMs: 5_000 }));
      await waitUntil(() => inbox.some((m) => m.id === rid), 20_000, `the answer to request ${rid}`);
      return inbox.find((m) => m.id === rid)!;
    };
    try {
      assert.equal((await forward()).type, 'result');
      for (let i = 0; i < 3; i++) etcd.pause(i);
      // Once the node knows no quorum answers (its probe), before it plans anything.
      let refused: { type: string; problem?: { code: string; detail: string } } | undefined;
      await waitUntil(async () => (refused = await forward()).problem?.code === 'NOT_READY', 30_000, 'NOT_READY for a forwarded write');
      assert.match(refused!.problem!.detail, /not made/);
      c.send({ type: 'register', id: 1, service: 'cut', instanceId: 'own', instance: { address: '10.0.0.2', port: 80 } });
      const own = await c.answer(1, 10_000);
      assert.ok(own.type === 'error');
      assert.equal(own.problem.code, 'STORE_UNAVAILABLE', 'a client of the node itself is told etcd is out of reach');
    } finally {
      for (let i = 0; i < 3; i++) etcd.resume(i);
    }
    try {
      await waitUntil(async () => (await forward()).type === 'result', 30_000, 'writes again once etcd answers');
    } finally {
      ws.close();
      c.ws.close();
    }
  }));
