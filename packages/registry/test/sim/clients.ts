/**
 * Simulated clients and the checks run at the end of every scenario. A client lives next
 * to one node (its site): it reaches that node, and every node its site has a link to. It
 * keeps one lease alive on its current node and, when that node is out of reach, fails
 * over like the SDK: a new lease on a reachable node and every instance registered again.
 */
import { SwitchboardError } from '@switchboard/protocol';
import type { ApEngine } from '../../src/engines/ap/engine.js';
import { input, type SimNode, type World } from './world.js';

export interface Wanted {
  service: string;
  id: string;
  port: number;
}

export class SimClient {
  node: string | null = null;
  lease: string | null = null;
  alive = true;
  readonly wanted = new Map<string, Wanted>();
  /** Wanted instances not registered under the current lease yet (their node was out of reach): registered at the next keep-alive that reaches it, as the SDK retries a registration. */
  private readonly unsent = new Set<string>();
  private timer = false;

  constructor(
    readonly name: string,
    public site: string,
    private readonly world: World,
    readonly ttlMs = 3_000,
  ) {}

  private engine(): ApEngine | null {
    return this.node === null ? null : this.world.node(this.node).engine;
  }

  /** Starts the keep-alive loop; the client registers on its site's node first. */
  async start(): Promise<void> {
    if (this.node === null) await this.connect(this.site);
    this.loop();
  }

  private loop(): void {
    if (this.timer) return;
    this.timer = true;
    const every = Math.floor(this.ttlMs / 3);
    const step = (): void => {
      if (!this.alive) {
        this.timer = false;
        return;
      }
      void this.keepAlive()
        .catch((err: unknown) => this.world.sched.fail(err))
        .finally(() => this.world.sched.at(this.world.now + every, step));
    };
    this.world.sched.at(this.world.now + every, step);
  }

  private candidates(): string[] {
    const w = this.world;
    // The network from the client's site, not its node's process: when that node is down
    // (restarting), the client fails over to another it reaches, as the SDK does.
    return w.ids.filter((n) => (n === this.site || w.net.reaches(this.site, n)) && w.node(n).transport.open);
  }

  private async keepAlive(): Promise<void> {
    const reachable = this.candidates();
    if (this.node === null || !reachable.includes(this.node)) {
      if (reachable.length === 0) return;
      await this.connect(this.world.rng.pick(reachable));
      return;
    }
    try {
      await (this.engine() as ApEngine).keepAlive(this.lease as string);
    } catch (err) {
      if (err instanceof SwitchboardError && err.code === 'LEASE_NOT_FOUND') await this.connect(this.node);
      else throw err;
      return;
    }
    const late = [...this.unsent].map((k) => this.wanted.get(k)).filter((w): w is Wanted => w !== undefined);
    this.unsent.clear();
    if (late.length === 0) return;
    try {
      await (this.engine() as ApEngine).registerBatch(late.map((w) => this.item(w)));
    } catch (err) {
      if (!(err instanceof SwitchboardError)) throw err;
      for (const w of late) this.unsent.add(`${w.service}/${w.id}`);
    }
  }

  /** A new lease on `node` and every wanted instance registered there. */
  async connect(node: string): Promise<void> {
    const engine = this.world.node(node).engine;
    const from = this.node;
    const grant = await engine.grantLease(this.ttlMs);
    this.node = node;
    this.lease = grant.leaseId;
    this.unsent.clear();
    this.world.log(`client ${this.name} ${from === null ? 'connects to' : `fails over from ${from} to`} ${node} lease ${grant.leaseId}`);
    if (this.wanted.size > 0) await engine.registerBatch([...this.wanted.values()].map((w) => this.item(w)));
  }

  async add(w: Wanted): Promise<void> {
    const key = `${w.service}/${w.id}`;
    this.wanted.set(key, w);
    const e = this.engine();
    if (!e || !this.lease || !this.candidates().includes(this.node as string)) {
      this.unsent.add(key);
      return;
    }
    try {
      await e.register(this.item(w));
    } catch (err) {
      if (!(err instanceof SwitchboardError)) throw err;
      this.unsent.add(key);
    }
  }

  /** An explicit deregistration, on whichever node the client uses now. */
  async remove(key: string): Promise<boolean> {
    const w = this.wanted.get(key);
    const e = this.engine();
    if (!w || !e || !this.candidates().includes(this.node as string)) return false;
    try {
      await e.deregister('default', w.service, w.id);
    } catch (err) {
      if (!(err instanceof SwitchboardError)) throw err;
      return false;
    }
    this.wanted.delete(key);
    this.unsent.delete(key);
    return true;
  }

  /** The process dies: no more keep-alives, nothing deregistered. */
  die(): void {
    this.alive = false;
    this.world.log(`client ${this.name} dies`);
  }

  private item(w: Wanted) {
    return { namespace: 'default', service: w.service, id: w.id, input: input(`10.0.${this.name.length}.1`, w.port, this.lease) };
  }
}

export class CheckFailure extends Error {}

/** What every node shows: instance key -> owner, address, port, flag. */
export function viewOf(engine: ApEngine): Map<string, string> {
  const out = new Map<string, string>();
  for (const svc of engine.registry.listServices()) {
    for (const r of svc.instances.values()) {
      const i = r.instance;
      out.set(`${i.namespace}/${i.service}/${i.id}`, `${i.owner}|${i.address}:${i.port}|${i.leaseId}|${i.status}${i.unconfirmed ? '|unconfirmed' : ''}`);
    }
  }
  return out;
}

/** Every running node shows the same instances and holds the same live records. */
export function converged(world: World): string | null {
  const ids = world.live().map((n) => n.id);
  const first = world.node(ids[0] as string);
  const view0 = viewOf(first.engine);
  for (const id of ids.slice(1)) {
    const v = viewOf(world.node(id).engine);
    for (const [k, x] of view0) if (v.get(k) !== x) return `${first.id} shows ${k} as ${x}, ${id} as ${v.get(k) ?? 'absent'}`;
    for (const [k, x] of v) if (!view0.has(k)) return `${id} shows ${k} as ${x}, ${first.id} does not`;
  }
  for (const id of ids) {
    for (const x of viewOf(world.node(id).engine).values()) if (x.endsWith('unconfirmed')) return `${id} still flags an instance unconfirmed: ${x}`;
    if (!world.node(id).engine.ready) return `${id} is not ready`;
  }
  return null;
}

/** The checks after healing and quiescence; returns the first violation. */
export function violations(world: World, clients: SimClient[], deregistered: Set<string>): string | null {
  const c = converged(world);
  if (c) return `not converged: ${c}`;
  // Any live node: converged() found them all alike (a node that died for good is not one).
  const view = viewOf((world.live()[0] as SimNode).engine);
  for (const cl of clients) {
    for (const w of cl.wanted.values()) {
      const key = `default/${w.service}/${w.id}`;
      const shown = view.get(key);
      if (cl.alive && !shown) return `instance ${key} of live client ${cl.name} (lease ${cl.lease} on ${cl.node}) is missing`;
      // Present is not enough: it must be the incarnation of the lease the client keeps alive.
      if (cl.alive && shown && shown.split('|')[2] !== cl.lease) return `instance ${key} of live client ${cl.name} shows lease ${shown.split('|')[2]}, the client keeps ${cl.lease} on ${cl.node}`;
      if (!cl.alive && shown) return `instance ${key} of dead client ${cl.name} is still there: ${shown}`;
    }
  }
  for (const key of deregistered) if (view.has(key)) return `deregistered instance ${key} came back: ${view.get(key)}`;
  return null;
}
