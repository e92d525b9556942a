// A cluster of real `switchboard agent --mode ap` processes on 127.0.0.1 for integration
// tests and the benchmark. Every peer link goes through a FaultProxy: node i reaches node j
// at proxy(i→j), so a partition is a set of cut proxies, exactly as a broken network
// would look to the processes. Each node's HTTP port can have a proxy too, so that a
// client can be cut off from its node along with the node's peers.
import { createServer } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnAgent, type AgentProcess } from '../integration/process.js';
import { FaultProxy } from './fault-proxy.js';
import { waitUntil } from './wait.js';

/** A free TCP port on 127.0.0.1 (a node must come back on the same peer port). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export interface ApNode {
  id: string;
  peerPort: number;
  dataDir: string | null;
  agent: AgentProcess | null;
  /** The node's REST address (changes when the node restarts). */
  url: string;
}

export class ApCluster {
  readonly nodes: ApNode[] = [];
  /** proxies.get(`${from}>${to}`): how `from` reaches `to`'s peer port. */
  readonly proxies = new Map<string, FaultProxy>();
  private readonly root: string;

  private constructor(
    readonly ids: string[],
    private readonly opts: { durable: boolean; extraArgs: string[] },
  ) {
    this.root = mkdtempSync(join(tmpdir(), 'sb-ap-'));
  }

  static async start(ids: string[], opts: { durable?: boolean; extraArgs?: string[] } = {}): Promise<ApCluster> {
    const c = new ApCluster(ids, { durable: opts.durable ?? false, extraArgs: opts.extraArgs ?? [] });
    try {
      for (const id of ids) c.nodes.push({ id, peerPort: await freePort(), dataDir: c.opts.durable ? join(c.root, id) : null, agent: null, url: '' });
      for (const from of c.nodes) {
        for (const to of c.nodes) {
          if (from !== to) c.proxies.set(`${from.id}>${to.id}`, await FaultProxy.start({ host: '127.0.0.1', port: to.peerPort }));
        }
      }
      // allSettled: a node that fails to start must not leave the others running unseen.
      const started = await Promise.allSettled(c.nodes.map((n) => c.startNode(n.id)));
      const failed = started.find((r) => r.status === 'rejected');
      if (failed) throw (failed as PromiseRejectedResult).reason;
      return c;
    } catch (err) {
      await c.stop();
      throw err;
    }
  }

  node(id: string): ApNode {
    const n = this.nodes.find((x) => x.id === id);
    if (!n) throw new Error(`no node ${id}`);
    return n;
  }

  /** The agent arguments of one node (its peers through the proxies). */
  args(id: string): string[] {
    const n = this.node(id);
    const peers = this.nodes.filter((o) => o !== n).map((o) => `${o.id}@${this.proxies.get(`${n.id}>${o.id}`)!.address}`);
    return [
      '--mode', 'ap',
      '--node-id', n.id,
      '--peer-addr', `127.0.0.1:${n.peerPort}`,
      '--peers', peers.join(','),
      ...(n.dataDir ? ['--data-dir', n.dataDir] : ['--dev']),
      ...this.opts.extraArgs,
    ];
  }

  async startNode(id: string): Promise<ApNode> {
    const n = this.node(id);
    for (let attempt = 1; ; attempt++) {
      try {
        n.agent = await spawnAgent(this.args(id));
        break;
      } catch (err) {
        const msg = (err as Error).message;
        // The free port picked for the peer link was taken meanwhile (a busy machine): take
        // another one and point the proxies in front of this node at it. The agent's check at
        // start names it ADDRESS_IN_USE ("--peer-addr 127.0.0.1:PORT is in use"); a bind that
        // loses the race after that check fails with EADDRINUSE.
        if (attempt < 4 && new RegExp(`EADDRINUSE.*:${n.peerPort}\\b|127\\.0\\.0\\.1:${n.peerPort} is in use`).test(msg)) {
          n.peerPort = await freePort();
          for (const [key, p] of this.proxies) if (key.endsWith(`>${id}`)) p.target = { host: '127.0.0.1', port: n.peerPort };
          continue;
        }
        throw err;
      }
    }
    n.url = n.agent.url;
    return n;
  }

  async kill(id: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const n = this.node(id);
    const a = n.agent;
    n.agent = null;
    if (!a) return;
    if (a.child.exitCode === null && a.child.signalCode === null) a.child.kill(signal);
    await a.exited;
  }

  /**
   * Cuts every peer link between the two groups (both directions). `refuse`: connections
   * are reset (what a dead host's kernel answers); `silent`: open links stop carrying
   * bytes and new ones go nowhere (what a broken path looks like), so only missed pings
   * can tell.
   */
  partition(left: string[], right: string[], how: 'refuse' | 'silent' = 'refuse'): void {
    for (const l of left) {
      for (const r of right) {
        for (const key of [`${l}>${r}`, `${r}>${l}`]) {
          const p = this.proxies.get(key)!;
          if (how === 'refuse') p.cut('refuse');
          else p.stall();
        }
      }
    }
  }

  heal(): void {
    for (const p of this.proxies.values()) p.restore();
  }

  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((n) => this.kill(n.id)));
    await Promise.all([...this.proxies.values()].map((p) => p.close()));
    rmSync(this.root, { recursive: true, force: true });
  }
}

export async function getJson(url: string, path: string): Promise<any> {
  const res = await fetch(url + path, { signal: AbortSignal.timeout(5_000) });
  const body = await res.json();
  if (res.status !== 200) throw new Error(`GET ${path} answered ${res.status}: ${JSON.stringify(body)}`);
  return body;
}

export async function putJson(url: string, path: string, body: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(url + path, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: AbortSignal.timeout(5_000) });
  return { status: res.status, body: await res.json().catch(() => undefined) };
}

export async function del(url: string, path: string): Promise<number> {
  const res = await fetch(url + path, { method: 'DELETE', signal: AbortSignal.timeout(5_000) });
  await res.body?.cancel();
  return res.status;
}

/** The instance ids of a service as one node lists them, sorted. */
export async function idsOn(url: string, service: string): Promise<string[]> {
  const body = await getJson(url, `/v1/services/${service}`);
  return (body.instances as { id: string }[]).map((i) => i.id).sort();
}

/** Which peers a node sees as reachable, from /v1/status. */
export async function reachablePeers(url: string): Promise<string[]> {
  const s = await getJson(url, '/v1/status');
  return ((s.cluster?.members ?? []) as { id: string; self: boolean; reachable: boolean }[]).filter((m) => !m.self && m.reachable).map((m) => m.id).sort();
}

/**
 * Polls `pred` every 25 ms; a throw counts as "not yet" (a node restarting or cut off
 * refuses requests) and the last one is named on timeout. Returns the time it took.
 */
export function until(pred: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<number> {
  return waitUntil(pred, timeoutMs, what, { intervalMs: 25, retryErrors: true });
}
