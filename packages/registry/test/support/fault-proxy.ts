// A TCP proxy that puts real network faults between two processes, for tests: it listens
// on 127.0.0.1 and forwards every connection to a target, and on command it
//   - cuts: drops every open connection and refuses new ones (`refuse`: accepted then
//     reset at once) or swallows them (`blackhole`: accepted, never answered);
//   - stalls: open connections stay open but no byte passes either way (TCP backpressure
//     holds them), as when a path silently stops carrying packets;
//   - delays: every chunk is forwarded `ms` later, in order;
//   - restores: back to plain forwarding (stalled connections resume where they were).
import { createServer, Socket, type AddressInfo, type Server } from 'node:net';

export type CutMode = 'refuse' | 'blackhole';
type Mode = 'forward' | CutMode | 'stall';

interface Pair {
  client: Socket;
  upstream: Socket;
}

export class FaultProxy {
  private mode: Mode = 'forward';
  private delayMs = 0;
  private readonly pairs = new Set<Pair>();
  private readonly held = new Set<Socket>();
  /** Connections accepted since start (including refused and swallowed ones). */
  accepted = 0;
  /** Bytes forwarded in both directions. */
  forwardedBytes = 0;

  private constructor(
    private readonly server: Server,
    /** Where new connections go (may be changed: open connections keep their target). */
    public target: { host: string; port: number },
  ) {}

  static async start(target: { host: string; port: number }, listenPort = 0): Promise<FaultProxy> {
    const server = createServer();
    const proxy = new FaultProxy(server, target);
    server.on('connection', (s) => proxy.onConnection(s));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(listenPort, '127.0.0.1', () => resolve());
    });
    return proxy;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Open forwarded connections. */
  get connections(): number {
    return this.pairs.size;
  }

  /** Drops every open connection and refuses (or swallows) new ones until restore(). */
  cut(mode: CutMode = 'refuse'): void {
    this.mode = mode;
    for (const p of [...this.pairs]) {
      p.client.destroy();
      p.upstream.destroy();
    }
    this.pairs.clear();
  }

  /** Open connections stop carrying bytes (they stay open); new ones are accepted and stalled too. */
  stall(): void {
    this.mode = 'stall';
    for (const p of this.pairs) {
      p.client.pause();
      p.upstream.pause();
    }
  }

  /** Every chunk is forwarded `ms` later (0: no delay). */
  delay(ms: number): void {
    this.delayMs = ms;
  }

  /** Plain forwarding again; stalled connections resume, swallowed ones are dropped. */
  restore(): void {
    this.mode = 'forward';
    this.delayMs = 0;
    for (const s of this.held) s.destroy();
    this.held.clear();
    for (const p of this.pairs) {
      p.client.resume();
      p.upstream.resume();
    }
  }

  async close(): Promise<void> {
    for (const p of this.pairs) {
      p.client.destroy();
      p.upstream.destroy();
    }
    for (const s of this.held) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private onConnection(client: Socket): void {
    this.accepted++;
    client.on('error', () => undefined);
    if (this.mode === 'refuse') {
      client.resetAndDestroy();
      return;
    }
    if (this.mode === 'blackhole') {
      // Accepted and never answered: what the dialer sees is a connect that goes nowhere.
      this.held.add(client);
      client.pause();
      client.once('close', () => this.held.delete(client));
      return;
    }
    const upstream = new Socket();
    upstream.on('error', () => undefined);
    const pair: Pair = { client, upstream };
    this.pairs.add(pair);
    upstream.connect(this.target.port, this.target.host);
    const toUpstream = this.pipe(client, upstream);
    const toClient = this.pipe(upstream, client);
    const end = (): void => {
      if (!this.pairs.delete(pair)) return;
      // Bytes still delayed on their way arrive before the end, as over TCP (a refusal
      // written just before a close must not be lost to the delay).
      toUpstream.finish();
      toClient.finish();
    };
    client.once('close', end);
    upstream.once('close', end);
    if (this.mode === 'stall') {
      client.pause();
      upstream.pause();
    }
  }

  /**
   * Forwards `from` to `to` with backpressure, applying the current delay (order kept).
   * `finish()` ends `to` once the delayed chunks have gone (at once when none wait).
   */
  private pipe(from: Socket, to: Socket): { finish(): void } {
    let lastDue = 0;
    let pending = 0;
    let finishing = false;
    const finish = (): void => {
      finishing = true;
      if (pending === 0) to.destroy();
    };
    from.on('data', (chunk: Buffer) => {
      this.forwardedBytes += chunk.length;
      const ms = this.delayMs;
      if (ms <= 0 && pending === 0) return void this.forward(from, to, chunk);
      const now = performance.now();
      const due = Math.max(now + ms, lastDue);
      lastDue = due;
      pending++;
      setTimeout(() => {
        pending--;
        this.forward(from, to, chunk);
        if (finishing && pending === 0) to.end();
      }, due - now);
    });
    return { finish };
  }

  private forward(from: Socket, to: Socket, chunk: Buffer): void {
    if (to.destroyed) return;
    if (!to.write(chunk)) {
      from.pause();
      to.once('drain', () => {
        if (this.mode !== 'stall') from.resume();
      });
    }
  }
}
