// Goal: cp nodes stay correct when etcd fails. With etcd's quorum gone, writes get 503
// STORE_UNAVAILABLE quickly (with Retry-After), default reads are answered marked stale,
// consistent reads get 503; after recovery every acknowledged write is there and nothing
// else. Under a leader kill, a paused minority and restarts during concurrent writes, the
// recorded history of register, deregister and consistent reads is linearizable.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { checkHistory, type HistoryOp } from '../../src/core/linearizability.js';
import { call, sleep } from '../helpers.js';
import { EtcdCluster } from './etcd-cluster.js';
import { threeNodes as startThree, type CpNode } from './nodes.js';

let etcd: EtcdCluster;
before(async () => {
  etcd = await EtcdCluster.start(3);
});
after(async () => {
  await etcd?.close();
});

const threeNodes = (prefix?: string): Promise<CpNode[]> => startThree(etcd, prefix);

/** A request that never hangs the test: a network failure or a timeout reads as status 0. */
async function attempt(url: string, method: string, path: string, body?: unknown, timeoutMs = 8000): Promise<{ status: number; body: any; headers: Headers | null; ms: number }> {
  const started = performance.now();
  try {
    const res = await fetch(url + path, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.text();
    return { status: res.status, body: text === '' ? undefined : JSON.parse(text), headers: res.headers, ms: performance.now() - started };
  } catch {
    return { status: 0, body: undefined, headers: null, ms: performance.now() - started };
  }
}

test('without an etcd quorum: writes 503 fast, reads stale, consistent reads 503; recovery keeps exactly what was acknowledged', { timeout: 120_000 }, async () => {
  const nodes = await threeNodes();
  const acknowledged = new Set<string>();
  const unknown = new Set<string>();
  try {
    for (let i = 0; i < 10; i++) {
      const r = await call((nodes[i % 3] as CpNode).url, 'PUT', `/v1/services/q/instances/before${i}`, { address: '10.0.0.1', port: 3000 + i });
      assert.equal(r.status, 200);
      acknowledged.add(`before${i}`);
    }
    const leader = await etcd.waitLeader();
    // Two of three members frozen: the third (whichever it is) has no quorum.
    const frozen = [0, 1, 2].filter((i) => i !== leader).slice(0, 1).concat([leader]);
    for (const i of frozen) etcd.pause(i);
    const lostAt = performance.now();
    // Writes in the meantime: each is acknowledged, refused with 503, or unknown.
    let seen503At = 0;
    let n = 0;
    while (performance.now() - lostAt < 20_000) {
      const id = `during${n++}`;
      const node = nodes[n % 3] as CpNode;
      const r = await attempt(node.url, 'PUT', `/v1/services/q/instances/${id}`, { address: '10.0.0.2', port: 4000 + n });
      if (r.status === 200) acknowledged.add(id);
      else unknown.add(id); // a 503 after the request reached etcd may still have been applied
      if (r.status === 503) {
        assert.equal(r.body.code, 'STORE_UNAVAILABLE');
        assert.ok(Number(r.headers?.get('retry-after')) >= 1, 'Retry-After on 503');
        if (seen503At === 0) seen503At = performance.now();
        else if (performance.now() - seen503At > 3000) break;
      }
    }
    assert.ok(seen503At > 0, 'writes were refused with 503 while etcd had no quorum');
    // Once the loss is known, every node refuses writes at once.
    for (const node of nodes) {
      const r = await attempt(node.url, 'PUT', '/v1/services/q/instances/refused', { address: '10.0.0.3', port: 1 });
      assert.equal(r.status, 503, `node ${node.engine.nodeId} answered ${r.status}`);
      assert.ok(r.ms < 500, `a refused write took ${Math.round(r.ms)} ms`);
      unknown.add('refused');
      const stale = await attempt(node.url, 'GET', '/v1/services/q');
      assert.equal(stale.status, 200);
      assert.equal(stale.body.stale, true);
      assert.equal(typeof stale.body.staleMs, 'number');
      assert.ok(stale.body.instances.length >= 10);
      const consistent = await attempt(node.url, 'GET', '/v1/services/q?consistent=true');
      assert.equal(consistent.status, 503);
      assert.equal(consistent.body.code, 'STORE_UNAVAILABLE');
      // One quorum read attempt with a 1 s deadline (docs/cp.md), with a margin for a loaded machine.
      assert.ok(consistent.ms < 2500, `a refused consistent read took ${Math.round(consistent.ms)} ms`);
      const st = await attempt(node.url, 'GET', '/v1/status');
      assert.equal(st.body.cluster.store.reachable, false);
      const m = await fetch(`${node.url}/metrics`).then((x) => x.text());
      assert.match(m, /^switchboard_etcd_reachable 0$/m);
    }
    for (const i of frozen) etcd.resume(i);
    // Recovery is automatic.
    const back = performance.now();
    let ok = false;
    while (performance.now() - back < 30_000 && !ok) {
      const r = await attempt((nodes[0] as CpNode).url, 'PUT', '/v1/services/q/instances/after', { address: '10.0.0.4', port: 1 });
      ok = r.status === 200;
      if (!ok) await sleep(250);
    }
    assert.ok(ok, 'writes succeed again after the quorum came back');
    acknowledged.add('after');
    for (const node of nodes) {
      // Each node finds the quorum again on its own (its next probe or read): a client retries a 503.
      let r = await attempt(node.url, 'GET', '/v1/services/q?consistent=true', undefined, 15_000);
      for (let i = 0; i < 20 && r.status === 503; i++) {
        await sleep(500);
        r = await attempt(node.url, 'GET', '/v1/services/q?consistent=true', undefined, 15_000);
      }
      assert.equal(r.status, 200, `consistent read on ${node.engine.nodeId}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.stale, undefined);
      const ids = new Set<string>(r.body.instances.map((x: { id: string }) => x.id));
      for (const id of acknowledged) assert.ok(ids.has(id), `acknowledged ${id} is missing on ${node.engine.nodeId}`);
      for (const id of ids) assert.ok(acknowledged.has(id) || unknown.has(id), `${id} was never written but is there`);
    }
  } finally {
    for (let i = 0; i < 3; i++) etcd.resume(i);
    await Promise.all(nodes.map((n) => n.close()));
  }
});

test('a linearizable history under a leader kill, a paused minority and restarts', { timeout: 180_000 }, async (tc) => {
  const nodes = await threeNodes();
  const history: HistoryOp[] = [];
  const KEYS = 20;
  const MAX_PER_KEY = 40;
  const perKey = new Array<number>(KEYS).fill(0);
  let stop = false;
  let seq = 0;
  const t = (): number => performance.now();
  const worker = async (w: number): Promise<void> => {
    let x = w * 7919 + 1;
    const rnd = (k: number): number => ((x = (x * 48271) % 2147483647) % k);
    while (!stop) {
      const open = perKey.map((c, i) => (c < MAX_PER_KEY ? i : -1)).filter((i) => i >= 0);
      if (open.length === 0) return;
      const k = open[rnd(open.length)] as number;
      perKey[k] = (perKey[k] as number) + 1;
      const key = `k${k}`;
      const node = nodes[rnd(3)] as CpNode;
      const dice = rnd(10);
      const call0 = t();
      if (dice < 4) {
        const value = `v${++seq}`;
        const r = await attempt(node.url, 'PUT', `/v1/services/lin/instances/${key}`, { address: '10.9.0.1', port: 1, metadata: { v: value } });
        // An unknown outcome has no end: etcd may commit the transaction after the node
        // gave up on it (a proposal the next leader commits), so it may take effect later.
        history.push({ key, kind: 'write', value, call: call0, ...(r.status === 200 ? { ret: t(), result: 'ok' as const } : { result: 'unknown' as const }) });
        if (r.status !== 200 && r.status !== 503 && r.status !== 0) throw new Error(`write answered ${r.status}: ${JSON.stringify(r.body)}`);
      } else if (dice < 6) {
        const r = await attempt(node.url, 'DELETE', `/v1/services/lin/instances/${key}`);
        const result = r.status === 200 ? 'ok' : r.status === 404 ? 'not_found' : 'unknown';
        history.push({ key, kind: 'delete', call: call0, ...(result === 'unknown' ? {} : { ret: t() }), result });
      } else {
        const r = await attempt(node.url, 'GET', '/v1/services/lin?consistent=true');
        if (r.status === 200) {
          const inst = (r.body.instances as { id: string; metadata: { v: string } }[]).find((i) => i.id === key);
          history.push({ key, kind: 'read', call: call0, ret: t(), result: 'ok', observed: inst ? inst.metadata.v : null });
        } else perKey[k] = (perKey[k] as number) - 1; // a refused read has no effect: not part of the history
      }
      await sleep(rnd(60));
    }
  };
  try {
    const workers = [0, 1, 2, 3].map((w) => worker(w));
    const faults = (async () => {
      await sleep(1500);
      const leader = await etcd.waitLeader();
      await etcd.kill(leader); // the leader dies in the middle of the writes
      await sleep(2500);
      etcd.restart(leader);
      await etcd.waitLeader(30_000);
      await sleep(1000);
      const minority = ((await etcd.waitLeader()) + 1) % 3;
      etcd.pause(minority); // a cut-off minority: the others go on
      await sleep(2500);
      etcd.resume(minority);
      await sleep(1000);
      const again = await etcd.waitLeader();
      await etcd.kill(again);
      await sleep(1500);
      etcd.restart(again);
      await etcd.waitLeader(30_000);
    })();
    await faults;
    await sleep(2000);
    stop = true;
    await Promise.all(workers);
    // A final consistent read of every key through every node.
    for (const node of nodes) {
      const call0 = t();
      const r = await attempt(node.url, 'GET', '/v1/services/lin?consistent=true', undefined, 20_000);
      assert.equal(r.status, 200, `final read on ${node.engine.nodeId}: ${r.status}`);
      const ret = t();
      for (let k = 0; k < KEYS; k++) {
        const inst = (r.body.instances as { id: string; metadata: { v: string } }[]).find((i) => i.id === `k${k}`);
        history.push({ key: `k${k}`, kind: 'read', call: call0, ret, result: 'ok', observed: inst ? inst.metadata.v : null });
      }
    }
    const writes = history.filter((h) => h.kind === 'write');
    assert.ok(writes.filter((h) => h.result === 'ok').length >= 30, `only ${writes.filter((h) => h.result === 'ok').length} writes acknowledged`);
    const res = checkHistory(history, MAX_PER_KEY + 3);
    const count = (kind: string, result: string): number => history.filter((h) => h.kind === kind && h.result === result).length;
    tc.diagnostic(`history: ${res.ops} ops on ${res.keys} keys; writes ok ${count('write', 'ok')}, unknown ${count('write', 'unknown')}; deletes ok ${count('delete', 'ok')}, not_found ${count('delete', 'not_found')}, unknown ${count('delete', 'unknown')}; reads ${count('read', 'ok')}`);
    assert.ok(res.ok, `not linearizable: ${JSON.stringify(res.anomalies[0])}`);
    // The checker is not blind to this history: one read changed to a value never written fails it.
    const i = history.findIndex((h) => h.kind === 'read');
    const planted = history.map((o, j) => (j === i ? { ...o, observed: 'never-written' } : o));
    assert.equal(checkHistory(planted, MAX_PER_KEY + 3).ok, false);
  } finally {
    stop = true;
    for (let i = 0; i < 3; i++) {
      etcd.resume(i);
      etcd.restart(i);
    }
    await Promise.all(nodes.map((n) => n.close()));
  }
});
