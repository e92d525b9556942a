/**
 * The deterministic simulation: several ap nodes' real engines in one process, on one
 * fake clock, linked by a fake network that implements PeerTransport and delays, drops,
 * duplicates, reorders and cuts messages. Everything random comes from one seeded
 * generator, and the only asynchrony is the engines' own promise chains, drained after
 * every event: the same seed replays the same run exactly.
 */
import { DEFAULT_LIMITS, validateInstanceInput, type Limits } from '@switchboard/protocol';
import type { Entry, Snapshot } from '../../src/core/entry.js';
import { ManualClock } from '../../src/core/clock.js';
import { ApEngine, type Timers } from '../../src/engines/ap/engine.js';
import { RemovedMembers } from '../../src/engines/ap/removed.js';
import type { PeerLinkStatus, PeerMessage, PeerTransport } from '../../src/engines/ap/transport.js';
import type { Recovered, Storage } from '../../src/storage/storage.js';

/** A small fast generator (mulberry32): the whole run follows from its seed. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 1;
  }
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.next() * xs.length)] as T;
  }
  shuffle<T>(xs: T[]): T[] {
    for (let i = xs.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [xs[i], xs[j]] = [xs[j] as T, xs[i] as T];
    }
    return xs;
  }
}

interface Timer {
  at: number;
  seq: number;
  fn: () => void;
  cancelled: boolean;
}

/**
 * Timers one simulated instant may run, and one run in all: beyond them simulated time has
 * stopped moving (something re-arms at 0 ms), which is a failure with its seed rather than
 * a run that never ends.
 */
export const MAX_TIMERS_PER_INSTANT = 100_000;
export const MAX_TIMERS_PER_RUN = 20_000_000;

/** One fake clock and its timers, shared by every node of the world. */
export class Scheduler {
  readonly clock = new ManualClock(1_000);
  private queue: Timer[] = [];
  private seq = 0;
  private ran = 0;
  /**
   * The first error of a promise chain nobody awaits (a client's keep-alive loop, an
   * engine callback): thrown by the next runUntil, so that it fails the scenario with
   * its seed instead of surfacing as an unhandled rejection without one.
   */
  private failure: { error: unknown } | null = null;

  /** Records an error of a background chain (the first one is kept). */
  fail(error: unknown): void {
    this.failure ??= { error };
  }

  private rethrow(): void {
    if (this.failure) throw this.failure.error;
  }

  timers(): Timers {
    return {
      set: (fn, ms) => this.at(this.clock.now() + Math.max(0, ms), fn),
      clear: (h) => {
        (h as Timer).cancelled = true;
      },
    };
  }

  at(at: number, fn: () => void): Timer {
    const t: Timer = { at, seq: this.seq++, fn, cancelled: false };
    // Binary insertion keeps (at, seq) order.
    let lo = 0;
    let hi = this.queue.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const m = this.queue[mid] as Timer;
      if (m.at < at || (m.at === at && m.seq < t.seq)) lo = mid + 1;
      else hi = mid;
    }
    this.queue.splice(lo, 0, t);
    return t;
  }

  /** Runs every timer due up to `until`, in order, draining promise chains after each. */
  async runUntil(until: number): Promise<void> {
    let instant = -1;
    let atInstant = 0;
    for (;;) {
      this.rethrow();
      const t = this.queue[0];
      if (!t || t.at > until) break;
      this.queue.shift();
      if (t.cancelled) continue;
      this.clock.set(Math.max(this.clock.now(), t.at));
      if (this.clock.now() !== instant) {
        instant = this.clock.now();
        atInstant = 0;
      }
      if (++atInstant > MAX_TIMERS_PER_INSTANT) throw new Error(`simulated time stopped at ${instant} ms: ${MAX_TIMERS_PER_INSTANT} timers ran at that instant (something re-arms at 0 ms)`);
      if (++this.ran > MAX_TIMERS_PER_RUN) throw new Error(`more than ${MAX_TIMERS_PER_RUN} timers in one run`);
      t.fn();
      await drain();
    }
    this.clock.set(Math.max(this.clock.now(), until));
    await drain();
    this.rethrow();
  }

  async run(ms: number): Promise<void> {
    await this.runUntil(this.clock.now() + ms);
  }
}

/** Lets every pending promise chain finish (a macrotask runs after all microtasks). */
export function drain(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

export interface NetFaults {
  /** Delay of a message, uniformly in [min, max] ms: different delays reorder messages. */
  minDelayMs: number;
  maxDelayMs: number;
  drop: number;
  duplicate: number;
}

export const CALM: NetFaults = { minDelayMs: 1, maxDelayMs: 3, drop: 0, duplicate: 0 };

/** The fake network: links between every pair of nodes, each up or cut. */
export class SimNetwork {
  faults: NetFaults = CALM;
  private readonly cut = new Set<string>();
  /** Bumped when a link is cut, so that messages in flight over it are lost. */
  private readonly linkEpoch = new Map<string, number>();
  private readonly transports = new Map<string, SimTransport>();
  readonly stats = { sent: 0, delivered: 0, dropped: 0, duplicated: 0 };

  constructor(
    private readonly sched: Scheduler,
    private readonly rng: Rng,
    readonly nodeIds: string[],
  ) {}

  static link(a: string, b: string): string {
    return a < b ? `${a}|${b}` : `${b}|${a}`;
  }

  isUp(a: string, b: string): boolean {
    if (!this.transports.get(a)?.open || !this.transports.get(b)?.open) return false;
    return this.reaches(a, b);
  }

  /** Whether the network between two sites is up, whatever their nodes' processes do. */
  reaches(a: string, b: string): boolean {
    return !this.cut.has(SimNetwork.link(a, b));
  }

  transport(id: string): SimTransport {
    const t = new SimTransport(id, this);
    this.transports.set(id, t);
    return t;
  }

  /** A node's transport opened or closed: its peers see the link go up or down. */
  attach(t: SimTransport): void {
    for (const other of this.nodeIds) if (other !== t.nodeId) this.announce(t.nodeId, other);
  }

  setCut(a: string, b: string, cut: boolean): void {
    const key = SimNetwork.link(a, b);
    if (cut === this.cut.has(key)) return;
    if (cut) {
      this.cut.add(key);
      this.linkEpoch.set(key, (this.linkEpoch.get(key) ?? 0) + 1);
    } else this.cut.delete(key);
    this.announce(a, b);
  }

  /** Cuts every link between the groups. */
  partition(...groups: string[][]): void {
    for (let i = 0; i < groups.length; i++) {
      for (let j = i + 1; j < groups.length; j++) for (const a of groups[i] as string[]) for (const b of groups[j] as string[]) this.setCut(a, b, true);
    }
  }

  healAll(): void {
    for (const a of this.nodeIds) for (const b of this.nodeIds) if (a < b) this.setCut(a, b, false);
  }

  cutLinks(): string[] {
    return [...this.cut].sort();
  }

  /** Both ends learn the link's state after a detection delay, if it still holds then. */
  private announce(a: string, b: string): void {
    const delay = this.rng.int(1, 20);
    this.sched.at(this.sched.clock.now() + delay, () => {
      const up = this.isUp(a, b);
      this.transports.get(a)?.setPeer(b, up);
      this.transports.get(b)?.setPeer(a, up);
    });
  }

  send(from: string, to: string, msg: PeerMessage): boolean {
    if (!this.isUp(from, to)) return false;
    this.stats.sent++;
    if (this.rng.chance(this.faults.drop)) {
      this.stats.dropped++;
      return true;
    }
    const copies = this.rng.chance(this.faults.duplicate) ? 2 : 1;
    if (copies === 2) this.stats.duplicated++;
    const key = SimNetwork.link(from, to);
    const epoch = this.linkEpoch.get(key) ?? 0;
    // The message is encoded as it would be on the wire: the receiver never shares objects.
    const bytes = JSON.stringify(msg);
    for (let c = 0; c < copies; c++) {
      const delay = this.rng.int(this.faults.minDelayMs, this.faults.maxDelayMs);
      this.sched.at(this.sched.clock.now() + delay, () => {
        if ((this.linkEpoch.get(key) ?? 0) !== epoch || !this.isUp(from, to)) {
          this.stats.dropped++;
          return;
        }
        this.stats.delivered++;
        this.transports.get(to)?.deliver(from, JSON.parse(bytes) as PeerMessage);
      });
    }
    return true;
  }
}

export class SimTransport implements PeerTransport {
  open = true;
  private handler: (from: string, msg: PeerMessage) => void = () => undefined;
  private peerHandler: (peer: string, up: boolean) => void = () => undefined;
  private readonly up = new Map<string, boolean>();
  /** Members removed from the cluster: no links, no messages either way (the TCP transport refuses them). */
  private readonly forgotten = new Set<string>();
  private readonly counts = new Map<string, { sent: number; received: number; dropped: number }>();

  constructor(
    readonly nodeId: string,
    private readonly net: SimNetwork,
  ) {
    for (const p of this.peerIds()) {
      this.up.set(p, false);
      this.counts.set(p, { sent: 0, received: 0, dropped: 0 });
    }
  }

  send(to: string, msg: PeerMessage): boolean {
    const c = this.counts.get(to);
    if (!c || !this.up.get(to) || this.forgotten.has(to)) {
      if (c) c.dropped++;
      return false;
    }
    const ok = this.net.send(this.nodeId, to, msg);
    if (ok) c.sent++;
    else c.dropped++;
    return ok;
  }
  onMessage(handler: (from: string, msg: PeerMessage) => void): void {
    this.handler = handler;
  }
  onPeerChange(handler: (peer: string, up: boolean) => void): void {
    this.peerHandler = handler;
  }
  peerIds(): string[] {
    return this.net.nodeIds.filter((n) => n !== this.nodeId && !this.forgotten.has(n));
  }
  forget(id: string): void {
    if (id === this.nodeId) return;
    this.forgotten.add(id);
    this.up.set(id, false);
  }
  peers(): PeerLinkStatus[] {
    return this.peerIds().map((id) => {
      const c = this.counts.get(id) as { sent: number; received: number; dropped: number };
      return { id, address: `sim:${id}`, reachable: this.up.get(id) ?? false, lastSeenMs: null, rttMs: null, queued: 0, dropped: c.dropped, sentFrames: c.sent, receivedFrames: c.received };
    });
  }
  async close(): Promise<void> {
    this.open = false;
    for (const p of this.peerIds()) this.up.set(p, false);
    this.net.attach(this);
  }
  deliver(from: string, msg: PeerMessage): void {
    if (!this.open || this.forgotten.has(from)) return;
    const c = this.counts.get(from);
    if (c) c.received++;
    this.handler(from, msg);
  }
  setPeer(peer: string, up: boolean): void {
    if (!this.open || this.forgotten.has(peer) || this.up.get(peer) === up) return;
    this.up.set(peer, up);
    this.peerHandler(peer, up);
  }
}

/** A disk that survives restarts of its node: entries and snapshots kept as encoded text. */
export class SimStorage implements Storage {
  readonly durable = true;
  readonly location = null;
  private epoch: string | null = null;
  private snapshot: string | null = null;
  private entries: string[] = [];

  /**
   * `snapshotEvery`: log entries between snapshots. Seeded small (5–50) by the world, so
   * that restarts in the scenarios also start from snapshots, not only from a replayed log.
   */
  constructor(private readonly snapshotEvery = 500) {}

  async open(newEpoch: () => string): Promise<Recovered> {
    this.epoch ??= newEpoch();
    return { epoch: this.epoch, snapshot: this.snapshot === null ? null : (JSON.parse(this.snapshot) as Snapshot), entries: this.entries.map((e) => JSON.parse(e) as Entry) };
  }
  append(entry: Entry): Promise<void> {
    this.entries.push(JSON.stringify(entry));
    return Promise.resolve();
  }
  snapshotDue(): boolean {
    return this.entries.length >= this.snapshotEvery;
  }
  async writeSnapshot(snapshot: Snapshot): Promise<void> {
    this.snapshot = JSON.stringify(snapshot);
    this.entries = [];
  }
  async close(): Promise<void> {}
}

/** Limits scaled down so that a run covers leases, grace and tombstone collection in simulated seconds. */
export function simLimits(over: Partial<Limits> = {}): Limits {
  return {
    ...DEFAULT_LIMITS,
    apBatchDelayMs: 5,
    apBatchMaxRecords: 64,
    apAntiEntropyIntervalMs: 200,
    apRepairMaxRecords: 50,
    apDigestMaxServices: 4,
    apOwnerGraceMs: 3_000,
    apTombstoneMinMs: 2_000,
    apTombstoneMaxMs: 20_000,
    apCatchUpTimeoutMs: 2_000,
    apMaxClockOffsetMs: 5_000,
    // A few records per message, so that splitting by size (batches, pushes, partial gives) runs.
    apMessageMaxBytes: 3_000,
    ...over,
  };
}

export interface SimNode {
  id: string;
  engine: ApEngine;
  storage: SimStorage;
  transport: SimTransport;
  /** Wall clock offset of this node, ms (a skewed clock). */
  skewMs: number;
}

export interface WorldOptions {
  seed: number;
  nodes: number;
  limits?: Partial<Limits>;
  skews?: Record<string, number>;
}

/** The nodes, the network and the clients of one simulated run. */
export class World {
  readonly rng: Rng;
  readonly sched = new Scheduler();
  readonly net: SimNetwork;
  readonly nodes = new Map<string, SimNode>();
  readonly limits: Limits;
  readonly ids: string[];
  private idSeq = 0;
  /** Each node's removed members: kept across its restarts, like its disk. */
  private readonly removedLists = new Map<string, RemovedMembers>();
  /** Lines of what happened, printed when a check fails. */
  readonly trace: string[] = [];

  constructor(readonly opts: WorldOptions) {
    this.rng = new Rng(opts.seed);
    this.ids = Array.from({ length: opts.nodes }, (_, i) => String.fromCharCode(97 + i));
    this.net = new SimNetwork(this.sched, this.rng, this.ids);
    this.limits = simLimits(opts.limits);
  }

  get now(): number {
    return this.sched.clock.now();
  }

  log(line: string): void {
    this.trace.push(`${this.now} ${line}`);
    if (this.trace.length > 400) this.trace.shift();
  }

  async start(): Promise<void> {
    for (const id of this.ids) await this.openNode(id, new SimStorage(this.rng.int(5, 50)));
    await this.sched.run(50);
  }

  async openNode(id: string, storage: SimStorage): Promise<SimNode> {
    const transport = this.net.transport(id);
    const skewMs = this.opts.skews?.[id] ?? 0;
    const skews = this.opts.skews;
    let removed = this.removedLists.get(id);
    if (!removed) {
      removed = new RemovedMembers(null);
      this.removedLists.set(id, removed);
    }
    const engine = await ApEngine.open({
      nodeId: id,
      storage,
      transport,
      removed,
      limits: this.limits,
      clock: this.sched.clock,
      // Read at every call: a scenario may step a node's wall clock while it runs.
      wallClock: { now: () => 1_700_000_000_000 + this.sched.clock.now() + (skews?.[id] ?? 0) },
      timers: this.sched.timers(),
      newId: () => `${id}${(++this.idSeq).toString(36)}`,
      activeChecks: false,
      expiryTickMs: 50,
      onEvent: (event, fields) => this.log(`${id} ${event} ${JSON.stringify(fields)}`),
    });
    const node: SimNode = { id, engine, storage, transport, skewMs };
    this.nodes.set(id, node);
    this.net.attach(transport);
    return node;
  }

  /** Stops a node (its disk stays) and starts it again after `downMs`. */
  async restart(id: string, downMs: number): Promise<void> {
    const node = this.nodes.get(id) as SimNode;
    this.log(`${id} stops`);
    await node.engine.close();
    await this.sched.run(downMs);
    this.log(`${id} starts`);
    await this.openNode(id, node.storage);
  }

  /** Stops a node for good (it stays in `nodes`, closed: the checks skip it). */
  async kill(id: string): Promise<void> {
    this.log(`${id} dies for good`);
    await this.node(id).engine.close();
  }

  /** The nodes that run now. */
  live(): SimNode[] {
    return [...this.nodes.values()].filter((n) => n.transport.open);
  }

  node(id: string): SimNode {
    return this.nodes.get(id) as SimNode;
  }

  async close(): Promise<void> {
    for (const n of this.nodes.values()) await n.engine.close();
  }
}

export function input(address: string, port: number, leaseId: string | null, tags: string[] = []) {
  return validateInstanceInput({ address, port, leaseId, tags }, DEFAULT_LIMITS);
}
