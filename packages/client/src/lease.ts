/**
 * The LeaseKeeper holds the one lease of this process and keeps it alive through one
 * binding (session WebSocket, or REST where a node has no session endpoint). It moves the
 * lease when the connection fails, hands it over without a gap when the node goes away
 * (the new connection resumes BEFORE the old one is closed, so the registry never takes it
 * for a crash), and opens a new lease when the old one is gone. Every change of lease or
 * node is reported, so that the registrar can register the instances again.
 */
import { Backoff, type BackoffOptions } from './backoff.js';
import { ClientClosedError, RegistryError, RegistryUnavailableError } from './errors.js';
import type { Endpoints, RegistryHttp } from './registry-http.js';
import { isAccessError, isUnavailable, retryAfterOf, type AccessError } from './registry-http.js';
import type { WriteResult } from '@switchboard/protocol';
import { RestBinding, SessionUnsupportedError, WsBinding, type Binding, type BindingEnd, type LeaseInfo, type SessionWrite } from './session.js';
import { sleep } from './time.js';

/**
 * What happened to the lease: `new` (a lease was opened: every instance must be registered
 * again), `moved` (the same lease, kept through another node: instances are registered
 * again there, idempotently), `resumed` (same lease, same node: nothing to do).
 *
 * @example
 * client.on('lease', (c: LeaseChange) => { if (c.kind === 'new') console.log('new lease', c.info.leaseId); });
 */
export interface LeaseChange {
  kind: 'new' | 'moved' | 'resumed';
  info: LeaseInfo;
  previous: LeaseInfo | null;
}

/**
 * How the lease is kept alive: `websocket` (the session stream), `rest` (PUT keepalives),
 * or `auto` (the session stream, REST on nodes that do not serve it).
 *
 * @example
 * await connect({ endpoints, session: 'rest' }); // e.g. through a proxy without WebSocket
 */
export type SessionTransport = 'auto' | 'websocket' | 'rest';

/** @internal */
export interface LeaseKeeperOptions {
  ttlMs: number;
  transport: SessionTransport;
  connectTimeoutMs: number;
  backoff: BackoffOptions;
  onChange: (change: LeaseChange) => void;
  onLost: (leaseId: string, reason: string) => void;
  onError: (err: unknown) => void;
}

/** @internal The process's one lease and the binding that keeps it alive (see the file comment). */
export class LeaseKeeper {
  private binding: Binding | null = null;
  private last: LeaseInfo | null = null;
  private running = false;
  private closed = false;
  private readonly stop = new AbortController();
  private waiters: (() => void)[] = [];
  /** Endpoints that refused the session upgrade; `auto` uses REST leases there. */
  private readonly restOnly = new Set<string>();
  private loop: Promise<void> = Promise.resolve();
  /** Set when the registry refused the client's token (401/403) or its certificate cannot be verified: the keeper has stopped for good. */
  private failure: AccessError | null = null;

  constructor(
    private readonly endpoints: Endpoints,
    private readonly http: RegistryHttp,
    private readonly opts: LeaseKeeperOptions,
  ) {}

  /** The lease currently kept alive, if any. */
  get info(): LeaseInfo | null {
    return this.binding ? this.binding.info : null;
  }

  start(): void {
    if (this.running || this.closed || this.failure) return;
    this.running = true;
    this.loop = this.run().catch((err) => {
      if (!this.closed) this.opts.onError(err);
    });
  }

  /** Waits until a lease is held (the keeper retries forever until closed). */
  async current(signal?: AbortSignal): Promise<LeaseInfo> {
    this.start();
    for (;;) {
      if (this.closed) throw new ClientClosedError();
      if (this.failure) throw this.failure;
      if (this.binding) return this.binding.info;
      signal?.throwIfAborted();
      await new Promise<void>((resolve, reject) => {
        const onAbort = (): void => reject(signal!.reason);
        signal?.addEventListener('abort', onAbort, { once: true });
        this.waiters.push(() => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        });
      });
    }
  }

  /**
   * The write sent over the session that keeps `lease` alive (one WebSocket message each
   * way instead of an HTTP request); null when it must go over REST: the lease is kept
   * through REST or by another binding by now, or the session cannot carry the write.
   */
  request(lease: LeaseInfo, write: SessionWrite, timeoutMs: number, signal?: AbortSignal): Promise<WriteResult> | null {
    const b = this.binding;
    if (!(b instanceof WsBinding) || b.info.leaseId !== lease.leaseId || b.info.endpoint !== lease.endpoint) return null;
    return b.request(write, timeoutMs, signal);
  }

  /** A write through the lease's node answered LEASE_NOT_FOUND: the lease is gone. */
  invalidate(leaseId: string): void {
    if (this.binding?.info.leaseId === leaseId) this.binding.end({ kind: 'lease-ended', leaseId, reason: 'lease_not_found' });
  }

  /**
   * Writes to the lease's node keep failing although its session is alive: move the lease
   * to another node by hand-over (resumed there before this connection is let go, so the
   * node never takes it for a crash and the lease keeps its instances). With one endpoint
   * there is nowhere to go: the writes are retried where they are.
   */
  nodeFailed(endpoint: string): void {
    if (this.endpoints.list.length < 2) return;
    if (this.binding?.info.endpoint === endpoint) this.binding.end({ kind: 'handover', why: 'writes-failed' });
  }

  /**
   * Stops keeping the lease alive. With `revoke`, ends it at once (its instances are
   * deregistered by the registry) and says whether that was confirmed.
   */
  async close(revoke: boolean, timeoutMs: number): Promise<boolean> {
    if (this.closed) return false;
    this.closed = true;
    this.stop.abort(new ClientClosedError());
    const b = this.binding;
    this.binding = null;
    this.wake();
    let revoked = false;
    if (b && revoke) revoked = await b.revoke(timeoutMs);
    else b?.release();
    await this.loop;
    return revoked;
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private async run(): Promise<void> {
    let previous: Binding | null = null;
    let leaseId: string | null = null;
    let preferred: string | undefined;
    // One backoff for the whole loop: it is reset only by a binding that lasted, so that a
    // node which accepts and then drops every session is not hammered.
    const backoff = new Backoff(this.opts.backoff);
    while (!this.closed) {
      const b = await this.bindAnywhere(leaseId, backoff, preferred);
      if (!b) break;
      // Hand-over: the new binding resumed the lease before the old one is let go.
      previous?.release();
      previous = null;
      if (this.closed) {
        b.release();
        break;
      }
      this.adopt(b);
      const boundAt = performance.now();
      const end = await b.done;
      if (this.closed) break;
      const lasted = performance.now() - boundAt >= b.info.ttlMs / 3;
      if (lasted) backoff.reset();
      this.binding = null;
      preferred = undefined;
      leaseId = b.info.leaseId;
      if (end.kind === 'lease-ended') {
        leaseId = null;
        b.release();
        this.opts.onLost(end.leaseId, end.reason);
        if (!lasted && !(await this.pause(backoff))) break;
      } else if (end.kind === 'handover') {
        previous = b; // kept open until the next binding holds the lease
        this.endpoints.failed(b.info.endpoint);
        preferred = end.why === 'unresponsive' ? undefined : this.endpoints.after(b.info.endpoint);
      } else {
        b.release();
        this.endpoints.failed(b.info.endpoint);
        if (!lasted && !(await this.pause(backoff))) break;
      }
    }
    previous?.release();
  }

  private adopt(b: Binding): void {
    const info = b.info;
    const prev = this.last;
    const kind: LeaseChange['kind'] =
      prev === null || prev.leaseId !== info.leaseId ? 'new' : prev.endpoint !== info.endpoint || prev.nodeId !== info.nodeId || prev.epoch !== info.epoch ? 'moved' : 'resumed';
    this.binding = b;
    this.last = { ...info };
    this.endpoints.succeeded(info.endpoint);
    this.wake();
    this.opts.onChange({ kind, info, previous: prev });
  }

  /** Binds on the first endpoint that accepts, trying all of them with backoff between rounds. */
  private async bindAnywhere(leaseId: string | null, backoff: Backoff, preferred?: string): Promise<Binding | null> {
    for (;;) {
      let last: unknown;
      for (const endpoint of this.endpoints.order(preferred)) {
        if (this.closed) return null;
        // A node that asked us to wait (Retry-After) is not asked again before that.
        if (this.endpoints.coolingMs(endpoint) > 0) continue;
        try {
          return await this.bind(endpoint, leaseId);
        } catch (err) {
          if (this.closed) return null;
          if (isAccessError(err)) {
            this.fail(err);
            return null;
          }
          this.endpoints.coolDown(endpoint, retryAfterOf(err));
          last = err;
          if (err instanceof RegistryError && !isUnavailable(err) && err.code !== 'RATE_LIMITED') this.opts.onError(err);
        }
      }
      preferred = undefined;
      this.opts.onError(new RegistryUnavailableError(this.endpoints.list, last, `could not keep the lease alive on any registry endpoint: ${last instanceof Error ? last.message : String(last)}`));
      if (!(await this.pause(backoff))) return null;
    }
  }

  /**
   * The registry refused the token, or its certificate cannot be verified: not retried.
   * Waiting callers (registrations) get the error, and so does every later one; listeners
   * hear it once.
   */
  private fail(err: AccessError): void {
    this.failure = err;
    this.wake();
    this.opts.onError(err);
  }

  /** Waits the next backoff step; false when the keeper was closed meanwhile. */
  private async pause(backoff: Backoff): Promise<boolean> {
    try {
      await sleep(Math.max(backoff.next(), this.endpoints.waitMs()), this.stop.signal);
      return true;
    } catch {
      return false;
    }
  }

  private async bind(endpoint: string, leaseId: string | null): Promise<Binding> {
    const opts = { endpoint, leaseId, ttlMs: this.opts.ttlMs, connectTimeoutMs: this.opts.connectTimeoutMs, signal: this.stop.signal, headers: this.http.authHeaders, ...(this.http.ca ? { ca: this.http.ca } : {}) };
    const useRest = this.opts.transport === 'rest' || (this.opts.transport === 'auto' && this.restOnly.has(endpoint));
    if (useRest) return RestBinding.connect(this.http, opts);
    try {
      return await WsBinding.connect(opts, (err) => this.opts.onError(err));
    } catch (err) {
      if (err instanceof SessionUnsupportedError && this.opts.transport === 'auto') {
        this.restOnly.add(endpoint);
        return RestBinding.connect(this.http, opts);
      }
      throw err;
    }
  }
}

export type { BindingEnd, LeaseInfo };
