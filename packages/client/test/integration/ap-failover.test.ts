// Goal: the SDK against a real three-node ap cluster. A provider whose node dies registers
// its instances again on a surviving node by itself (new lease there), and every node
// soon lists them; a consumer view on the dead node moves to another node of another
// epoch, relists, and is never empty. A node that hangs (SIGSTOP: its sockets stay open,
// nothing answers) is left after unacknowledged keepalives, and once it resumes the three
// nodes agree again. A real cut (fault proxies) that isolates the provider's node from its
// peers and from the provider: the provider fails over to the majority side, and after
// the heal every node agrees. Skipped only when this version has no ap mode.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type LeaseChange } from '../../src/index.js';
import { freePort, rest, spawnAgent, waitFor, type Agent } from '../helpers.js';


async function apCluster(attempt = 1): Promise<Agent[]> {
  const ids = ['a', 'b', 'c'];
  const ports = await Promise.all(ids.map(() => freePort()));
  const args = (i: number) => [
    '--mode', 'ap', '--dev', '--node-id', ids[i]!, '--peer-addr', `127.0.0.1:${ports[i]}`,
    '--peers', ids.map((id, j) => `${id}@127.0.0.1:${ports[j]}`).filter((_, j) => j !== i).join(','),
  ];
  // allSettled: a node that fails to start must not leave the others running unseen.
  const started = await Promise.allSettled(ids.map((_, i) => spawnAgent(args(i))));
  const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (!failed) return started.map((r) => (r as PromiseFulfilledResult<Agent>).value);
  await Promise.all(started.map((r) => (r.status === 'fulfilled' ? r.value.kill() : undefined)));
  const msg = (failed.reason as Error).message;
  // A peer port picked as free was taken meanwhile (a busy machine): start over on new ports.
  // The agent's check at start says ADDRESS_IN_USE; a bind that loses the race later, EADDRINUSE.
  if (attempt < 3 && /EADDRINUSE|ADDRESS_IN_USE/.test(msg)) return apCluster(attempt + 1);
  throw failed.reason;
}

const listed = async (url: string, service: string) => (await rest(url, 'GET', `/v1/services/${service}`)).body.instances as { id: string; leaseId: string | null }[];

async function meshed(agents: Agent[]): Promise<void> {
  await waitFor(async () => {
    for (const a of agents) {
      const s = (await rest(a.url, 'GET', '/v1/status')).body;
      if (!s.cluster?.ready || s.cluster.members.filter((m: { reachable: boolean }) => m.reachable).length !== agents.length) return false;
    }
    return true;
  }, 10_000, 'a ready, fully linked cluster');
}

test('ap: the provider\'s node is killed: instances are registered again on a survivor and every node lists them; the view relists there', async (t) => {
  const cluster = await apCluster();
  const urls = cluster.map((a) => a.url);
  const provider = await connect(urls, { leaseTtlMs: 3_000, backoff: { initialMs: 20, maxMs: 200 } });
  const consumer = await connect(urls, { backoff: { initialMs: 20, maxMs: 200 } });
  try {
    await meshed(cluster);
    await provider.register({ service: 'orders', id: 'o1', address: '127.0.0.1', port: 9701 });
    await provider.register({ service: 'orders', id: 'o2', address: '127.0.0.1', port: 9702 });
    const view = consumer.service('orders');
    await waitFor(() => view.instances().length === 2, 5_000, 'the view');
    const first = provider.lease!;
    assert.equal(first.endpoint, urls[0]);
    await waitFor(async () => (await listed(urls[2]!, 'orders')).length === 2, 5_000, 'replicated to c');
    let emptied = false;
    view.on('change', () => (emptied ||= view.instances().length === 0));

    const killedAt = performance.now();
    await cluster[0]!.kill('SIGKILL');
    await waitFor(() => provider.lease !== null && provider.lease.endpoint !== first.endpoint, 10_000, 'a lease on a survivor');
    const lease = provider.lease!;
    await waitFor(async () => {
      for (const u of urls.slice(1)) {
        const l = await listed(u, 'orders');
        if (l.length !== 2 || !l.every((i) => i.leaseId === lease.leaseId)) return false;
      }
      return true;
    }, 10_000, 'both survivors list the instances under the new lease');
    t.diagnostic(`re-registered and replicated ${(performance.now() - killedAt).toFixed(0)} ms after the kill`);
    await waitFor(() => view.instances().length === 2 && view.instances().every((i) => i.leaseId === lease.leaseId), 10_000, 'the view relisted from a survivor');
    assert.equal(emptied, false, 'the view was never empty');
  } finally {
    await provider.close();
    await consumer.close();
    await Promise.all(cluster.map((a) => a.kill()));
  }
});

test('ap: the provider\'s node hangs (SIGSTOP): the lease moves after unacknowledged keepalives, and the nodes agree once it resumes', async (t) => {
  const cluster = await apCluster();
  const urls = cluster.map((a) => a.url);
  const provider = await connect(urls, { leaseTtlMs: 1_500, connectTimeoutMs: 500, requestTimeoutMs: 1_000, backoff: { initialMs: 20, maxMs: 200 } });
  const changes: LeaseChange[] = [];
  provider.on('lease', (c: LeaseChange) => changes.push(c));
  const hung = cluster[0]!;
  try {
    await meshed(cluster);
    await provider.register({ service: 'stock', id: 's1', address: '127.0.0.1', port: 9801 });
    assert.equal(provider.lease?.endpoint, urls[0]);
    hung.child.kill('SIGSTOP');
    const stoppedAt = performance.now();
    await waitFor(() => provider.lease !== null && provider.lease.endpoint !== urls[0], 10_000, 'the lease kept by another node');
    const moved = performance.now() - stoppedAt;
    t.diagnostic(`lease moved ${moved.toFixed(0)} ms after the node hung (keepalive every ttl/3 = 500 ms)`);
    const lease = provider.lease!;
    await waitFor(async () => (await listed(lease.endpoint, 'stock')).some((i) => i.id === 's1' && i.leaseId === lease.leaseId), 5_000, 's1 on the new node');
    hung.child.kill('SIGCONT');
    await waitFor(async () => {
      const all = await Promise.all(urls.map((u) => listed(u, 'stock')));
      return all.every((l) => l.length === 1 && l[0]!.leaseId === lease.leaseId);
    }, 15_000, 'all three nodes list s1 under the lease held now');
  } finally {
    hung.child.kill('SIGCONT');
    await provider.close();
    await Promise.all(cluster.map((a) => a.kill()));
  }
});

/** The registry's test support (fault proxies, a proxied ap cluster), compiled before the client. */
async function registrySupport(): Promise<{ ApCluster: any; FaultProxy: any }> {
  const base = new URL('../../../../registry/dist/test/support/', import.meta.url);
  const cluster = await import(new URL('ap-cluster.js', base).href);
  const proxy = await import(new URL('fault-proxy.js', base).href);
  return { ApCluster: cluster.ApCluster, FaultProxy: proxy.FaultProxy };
}

test('ap: a cut isolates the provider\'s node from its peers and from the provider: it fails over to the other side, and every node agrees after the heal', async (t) => {
  const { ApCluster, FaultProxy } = await registrySupport();
  const c = await ApCluster.start(['a', 'b', 'c']);
  const urls: string[] = c.nodes.map((n: { url: string }) => n.url);
  // The provider reaches node a through a proxy, so that the cut can separate them too.
  const toA = await FaultProxy.start({ host: '127.0.0.1', port: Number(new URL(urls[0]!).port) });
  const endpoints = [`http://127.0.0.1:${toA.port}`, urls[1]!, urls[2]!];
  const provider = await connect(endpoints, { leaseTtlMs: 1_500, connectTimeoutMs: 500, requestTimeoutMs: 1_000, backoff: { initialMs: 20, maxMs: 200 } });
  try {
    await waitFor(async () => {
      for (const u of urls) {
        const s = (await rest(u, 'GET', '/v1/status')).body;
        if (!s.cluster?.ready || s.cluster.members.some((m: { reachable: boolean }) => !m.reachable)) return false;
      }
      return true;
    }, 10_000, 'a ready, fully linked cluster');
    await provider.register({ service: 'cart', id: 'k1', address: '127.0.0.1', port: 9901 });
    assert.equal(provider.lease?.endpoint, endpoints[0]);
    await waitFor(async () => (await listed(urls[2]!, 'cart')).length === 1, 5_000, 'k1 replicated');

    c.partition(['a'], ['b', 'c']);
    toA.cut('refuse');
    const cutAt = performance.now();
    await waitFor(() => provider.lease !== null && provider.lease.endpoint !== endpoints[0], 10_000, 'the lease on the other side');
    const lease = provider.lease!;
    await waitFor(async () => {
      for (const u of urls.slice(1)) {
        const l = await listed(u, 'cart');
        if (l.length !== 1 || l[0]!.leaseId !== lease.leaseId) return false;
      }
      return true;
    }, 10_000, 'b and c list k1 under the new lease');
    t.diagnostic(`failed over and replicated on the other side ${(performance.now() - cutAt).toFixed(0)} ms after the cut`);
    // The cut-off node still answers its own clients (ap): it keeps its last view.
    assert.equal((await listed(urls[0]!, 'cart')).length, 1);

    c.heal();
    toA.restore();
    await waitFor(async () => {
      const all = await Promise.all(urls.map((u) => listed(u, 'cart')));
      return all.every((l) => l.length === 1 && l[0]!.leaseId === lease.leaseId);
    }, 15_000, 'every node lists k1 under the lease held now');
  } finally {
    await provider.close();
    await toA.close();
    await c.stop();
  }
});
