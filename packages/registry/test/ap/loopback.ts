/**
 * An in-process PeerTransport on real timers, for tests of the ap engine behind the real
 * API: messages go through JSON (no shared objects) and arrive on a later turn of the
 * event loop, in order; links can be cut and restored.
 */
import { DEFAULT_LIMITS, type Limits } from '@switchboard/protocol';
import { build, type SwitchboardApp } from '../../src/api/app.js';
import { ApEngine } from '../../src/engines/ap/engine.js';
import type { PeerLinkStatus, PeerMessage, PeerTransport } from '../../src/engines/ap/transport.js';
import { MemoryStorage, type Storage } from '../../src/storage/storage.js';
import { waitUntil } from '../helpers.js';

export class LoopbackNet {
  /** Called with every message sent, encoded (to check message sizes). */
  onSend: ((from: string, to: string, bytes: string) => void) | null = null;
  private readonly ends = new Map<string, LoopbackTransport>();
  private readonly cut = new Set<string>();
  constructor(readonly ids: string[]) {}

  private static key(a: string, b: string): string {
    return a < b ? `${a}|${b}` : `${b}|${a}`;
  }
  up(a: string, b: string): boolean {
    return (this.ends.get(a)?.open ?? false) && (this.ends.get(b)?.open ?? false) && !this.cut.has(LoopbackNet.key(a, b));
  }
  transport(id: string): LoopbackTransport {
    const t = new LoopbackTransport(id, this);
    this.ends.set(id, t);
    setImmediate(() => this.refresh());
    return t;
  }
  setCut(a: string, b: string, cut: boolean): void {
    if (cut) this.cut.add(LoopbackNet.key(a, b));
    else this.cut.delete(LoopbackNet.key(a, b));
    this.refresh();
  }
  /** Tells every end the state of each of its links. */
  refresh(): void {
    for (const [id, t] of this.ends) for (const p of this.ids) if (p !== id) t.setPeer(p, this.up(id, p));
  }
  deliver(from: string, to: string, bytes: string): void {
    this.onSend?.(from, to, bytes);
    setImmediate(() => {
      if (this.up(from, to)) this.ends.get(to)?.receive(from, JSON.parse(bytes) as PeerMessage);
    });
  }
}

export class LoopbackTransport implements PeerTransport {
  open = true;
  private handler: (from: string, msg: PeerMessage) => void = () => undefined;
  private peerHandler: (peer: string, up: boolean) => void = () => undefined;
  private readonly state = new Map<string, boolean>();
  private readonly forgotten = new Set<string>();
  constructor(
    readonly nodeId: string,
    private readonly net: LoopbackNet,
  ) {}
  send(to: string, msg: PeerMessage): boolean {
    if (!this.state.get(to) || this.forgotten.has(to) || !this.net.up(this.nodeId, to)) return false;
    this.net.deliver(this.nodeId, to, JSON.stringify(msg));
    return true;
  }
  onMessage(h: (from: string, msg: PeerMessage) => void): void {
    this.handler = h;
  }
  onPeerChange(h: (peer: string, up: boolean) => void): void {
    this.peerHandler = h;
  }
  peerIds(): string[] {
    return this.net.ids.filter((i) => i !== this.nodeId && !this.forgotten.has(i));
  }
  forget(id: string): void {
    if (id === this.nodeId) return;
    this.forgotten.add(id);
    this.state.set(id, false);
  }
  peers(): PeerLinkStatus[] {
    return this.peerIds().map((id) => ({ id, address: `loopback:${id}`, reachable: this.state.get(id) ?? false, lastSeenMs: null, rttMs: null, queued: 0, dropped: 0, sentFrames: 0, receivedFrames: 0 }));
  }
  async close(): Promise<void> {
    this.open = false;
    this.net.refresh();
  }
  receive(from: string, msg: PeerMessage): void {
    if (this.open && !this.forgotten.has(from)) this.handler(from, msg);
  }
  setPeer(peer: string, up: boolean): void {
    if (!this.open || this.forgotten.has(peer) || (this.state.get(peer) ?? false) === up) return;
    this.state.set(peer, up);
    this.peerHandler(peer, up);
  }
}

export interface ApTestNode {
  id: string;
  engine: ApEngine;
  app: SwitchboardApp;
  url: string;
  close(): Promise<void>;
}

export async function startApNode(net: LoopbackNet, id: string, opts: { limits?: Partial<Limits>; storage?: Storage; transport?: LoopbackTransport } = {}): Promise<ApTestNode> {
  const limits = { ...DEFAULT_LIMITS, apAntiEntropyIntervalMs: 200, apOwnerGraceMs: 1_500, apCatchUpTimeoutMs: 2_000, ...opts.limits };
  const engine = await ApEngine.open({ nodeId: id, storage: opts.storage ?? new MemoryStorage(), transport: opts.transport ?? net.transport(id), limits, clock: { now: () => performance.now() }, expiryTickMs: 50 });
  const app = await build({ engine, limits, version: 'test', watchHeartbeatMs: 15_000 });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  return {
    id,
    engine,
    app,
    url,
    close: async () => {
      await app.shutdown();
      await engine.close();
    },
  };
}

/** Polls `fn` every 20 ms until it returns a value that is not undefined, or fails after `ms`. */
export async function eventually<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, ms = 5_000): Promise<T> {
  let v: T | undefined;
  await waitUntil(async () => (v = await fn()) !== undefined, ms, what, { intervalMs: 20 });
  return v as T;
}
