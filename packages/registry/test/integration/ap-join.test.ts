// Goal: a new ap node needs one address. Started with only `--join` (the peer address of
// one running node), it learns every member, every member links to it, and it serves the
// registry's records and replicates its own writes. A node started with the wrong id for
// the address another node's --peers names is refused with a log line saying what to fix.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { freePort, getJson, idsOn, putJson, reachablePeers, until } from '../support/ap-cluster.js';
import { spawnAgent, type AgentProcess } from './process.js';

const ap = (id: string, peerPort: number, more: string[]) => ['--mode', 'ap', '--dev', '--node-id', id, '--peer-addr', `127.0.0.1:${peerPort}`, ...more];

const stop = async (...ps: (AgentProcess | undefined)[]): Promise<void> => {
  await Promise.all(ps.map(async (p) => {
    if (!p) return;
    if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
    await p.exited;
  }));
};

/** Runs `body` again (up to 3 times) when a port picked as free was taken meanwhile by another process. */
async function retryOnPortClash(body: () => Promise<void>): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await body();
    } catch (err) {
      if (attempt >= 3 || !/EADDRINUSE|ADDRESS_IN_USE/.test((err as Error).message)) throw err;
    }
  }
}

test('a node started with only --join learns the members, links to all, and replicates both ways', (t) => retryOnPortClash(async () => {
  const [pa, pb, pc] = [await freePort(), await freePort(), await freePort()];
  const a = await spawnAgent(ap('a', pa, ['--peers', `b@127.0.0.1:${pb}`]));
  let b: AgentProcess | undefined;
  let c: AgentProcess | undefined;
  try {
    b = await spawnAgent(ap('b', pb, ['--peers', `a@127.0.0.1:${pa}`]));
    const bUrl = b.url;
    await until(async () => (await reachablePeers(a.url)).includes('b'), 10_000, 'a-b linked');
    assert.equal((await putJson(a.url, '/v1/services/cfg/instances/early', { address: '127.0.0.1', port: 9300 })).status, 200);

    c = await spawnAgent(ap('c', pc, ['--join', `127.0.0.1:${pa}`]));
    const cUrl = c.url;
    const took = await until(async () => {
      const [ra, rb, rc] = await Promise.all([reachablePeers(a.url), reachablePeers(bUrl), reachablePeers(cUrl)]);
      return ra.includes('c') && rb.includes('c') && JSON.stringify(rc) === '["a","b"]';
    }, 10_000, 'c linked to a and b, and both to c');
    t.diagnostic(`joined a full mesh in ${took.toFixed(0)} ms`);
    const members = (await getJson(b.url, '/v1/status')).cluster.members.map((m: { id: string }) => m.id).sort();
    assert.deepEqual(members, ['a', 'b', 'c']);
    await until(async () => (await idsOn(cUrl, 'cfg')).includes('early'), 10_000, 'c has the record written before it joined');
    assert.equal((await putJson(cUrl, '/v1/services/cfg/instances/late', { address: '127.0.0.1', port: 9301 })).status, 200);
    await until(async () => JSON.stringify(await idsOn(bUrl, 'cfg')) === '["early","late"]', 10_000, 'b has the write made on c');
  } finally {
    await stop(a, b, c);
  }
}));

test('a node at an address that --peers gives another id is refused, and the log says what to fix', () => retryOnPortClash(async () => {
  const [pa, px] = [await freePort(), await freePort()];
  // a expects node "b" at px, but the node there is "x".
  const a = await spawnAgent(ap('a', pa, ['--peers', `b@127.0.0.1:${px}`]));
  let x: AgentProcess | undefined;
  try {
    x = await spawnAgent(ap('x', px, []));
    const xp = x;
    await until(() => /expected node \\?"b\\?" at this address, but this is node \\?"x\\?"/.test(xp.output()), 10_000, 'the refusal logged by x');
    await until(() => /WRONG_ID/.test(a.output()), 10_000, 'the refusal logged by a');
    assert.deepEqual(await reachablePeers(a.url), []);
    assert.deepEqual(await reachablePeers(xp.url), []);
  } finally {
    await stop(a, x);
  }
}));
