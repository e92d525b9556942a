/**
 * A ServiceView is what a consumer holds: the instances of one service that match its
 * filters, kept live by the shared ServiceFeed, with a balancer over them and the
 * resilient call path (bulkhead -> pick -> circuit breaker -> attempt -> retry budget).
 * Lookups are served from memory: `instances()` returns a prebuilt array and `pick()` is
 * one balancer step.
 */
import { LoopEmitter } from './emitter.js';
import { fetch as undiciFetch, type Dispatcher, type RequestInit, type Response } from 'undici';
import { matchesFilter, validateVersionRange, type Instance } from '@switchboard/protocol';
import { createBalancer, LoadTracker, ZoneAwareBalancer, type Balancer, type BalancerSpec, type PickContext, type ZonePreference } from '@switchboard/protocol';
import { CircuitOpenError, ClientClosedError, NoInstanceError, RegistryUnavailableError, RetryBudgetExhaustedError, TimeoutError, UpstreamError } from './errors.js';
import type { FeedChange, FeedListener, ServiceFeed } from './feed.js';
import { Bulkhead, CircuitBreaker, RetryBudget, type BulkheadOptions, type CircuitBreakerOptions, type RetryBudgetOptions } from './resilience.js';
import { deadline, holdProcess, sleep, systemClock, unrefTimer, type Clock } from './time.js';
import { withTraceHeaders } from './trace-context.js';
import { failureKindOf, type FailureKind } from './reports.js';

/**
 * Retry settings of a view's calls.
 *
 * @example
 * client.service('orders', { retry: { maxAttempts: 2, budget: { ratio: 0.1 } } });
 */
export interface RetryOptions {
  /** Attempts of one call, the first included. Default 3. */
  maxAttempts?: number;
  /** The service's retry budget. Default: 20% of requests + 10 per second over 10 s. */
  budget?: RetryBudgetOptions;
  /** Cap of the first pause between attempts (full jitter, doubling). Default 10 ms. */
  backoffMs?: number;
  /** Cap of every pause between attempts. Default 200 ms. */
  maxBackoffMs?: number;
  /** Response statuses that are retried (idempotent calls only). Default 502, 503, 504. */
  retryOn?: number[];
}

/**
 * Options of a service view: filters (as the REST query), balancing and call policy.
 *
 * @example
 * const orders = client.service('orders', {
 *   version: '^2', tags: ['primary'], balancer: 'p2c',
 *   preferZone: { zone: 'eu-1', minHealthyShare: 0.5 },
 *   bulkhead: { maxConcurrent: 32, maxQueued: 64 },
 * });
 */
export interface ServiceOptions {
  /** Default: the client's namespace. */
  namespace?: string;
  /** Only instances of this zone (a filter; see `preferZone` for a preference). */
  zone?: string;
  /** Only instances carrying every one of these tags. */
  tags?: string[];
  /** Only instances whose version satisfies this npm semver range (prereleases included). */
  version?: string;
  /** Only instances with status `up` and health not `critical` in `instances()`. */
  healthy?: boolean;
  /** Default 'round-robin'. */
  balancer?: BalancerSpec;
  /**
   * Prefer this zone, spilling over when too few of its instances are healthy. It makes
   * two balancers of the kind `balancer` names, so a balancer of your own is given as a
   * factory here (an object is refused with a RangeError).
   */
  preferZone?: string | ZonePreference;
  retry?: RetryOptions;
  /** Per-instance circuit breaker; `false` turns it off. */
  circuitBreaker?: CircuitBreakerOptions | false;
  /** Per-view concurrency limit; `false` turns it off. */
  bulkhead?: BulkheadOptions | false;
  /** Deadline of one call, retries and queueing included. Default 10 s. */
  timeoutMs?: number;
  /** Deadline of one attempt. Default: none (the call's deadline). */
  attemptTimeoutMs?: number;
  /** Clock of breakers and budgets (tests). */
  clock?: Clock;
}

/**
 * A change of the view, as emitted on 'change' and yielded by `changes()`. `resync`
 * appears only in `changes()`, when a slow reader let more than `maxQueued` changes pile
 * up: they are replaced by the current instances.
 *
 * @example
 * view.on('change', (c: ViewChange) => { if (c.type === 'removed') console.log(c.instance.id, c.reason); });
 */
export type ViewChange =
  | { type: 'added'; instance: Instance; revision: number }
  | { type: 'updated'; instance: Instance; previous: Instance; revision: number }
  | { type: 'removed'; instance: Instance; reason: string; revision: number }
  | { type: 'resync'; instances: readonly Instance[] };

/**
 * Per-call options of `view.call()` and `fetch()`.
 *
 * @example
 * await view.call((i, { signal }) => rawRpc(i.address, i.port, signal), { retry: true, timeoutMs: 500 });
 */
export interface CallOptions {
  signal?: AbortSignal;
  /** Overrides the view's `timeoutMs`. */
  timeoutMs?: number;
  /** Overrides the view's `attemptTimeoutMs`. */
  attemptTimeoutMs?: number;
  /** Whether failed attempts may be retried on another instance. Default false for call(). */
  retry?: boolean;
  /** Overrides `retry.maxAttempts`. */
  maxAttempts?: number;
  /** Hash key for consistent hashing. */
  key?: string;
}

/**
 * What became of one attempt, as `call()`'s `classify` says.
 *
 * @example
 * const classify = (o: { result: Reply } | { error: unknown }): Verdict =>
 *   'error' in o ? { ok: false, retryable: true, failure: true } : { ok: o.result.code !== 'BUSY', retryable: o.result.code === 'BUSY', failure: false };
 */
export interface Verdict {
  /** The call is done with this outcome (success, or a failure not worth retrying). */
  ok: boolean;
  /** The attempt failed in a way another instance may not (and repeating is safe). */
  retryable: boolean;
  /** Count it against the instance's circuit breaker. */
  failure: boolean;
  /**
   * The outcome says nothing about the instance (a request the caller's own code could not
   * build): neither a failure nor a success for its circuit breaker.
   */
  neutral?: boolean;
}

/**
 * Extra options of a discovery-aware fetch.
 *
 * @example
 * await view.fetch('/orders', { method: 'POST', body: '{}', retry: true, timeoutMs: 2000 });
 */
export interface SwitchboardFetchInit extends RequestInit, Omit<CallOptions, 'signal'> {
  signal?: AbortSignal | null;
}

/**
 * Methods retried by default (RFC 9110 idempotent methods).
 *
 * @example
 * IDEMPOTENT_METHODS.has('PUT'); // true
 */
export const IDEMPOTENT_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS', 'TRACE']);

/**
 * Most changes a `changes()` reader may fall behind before they collapse into one resync.
 *
 * @example
 * view.changes({ maxQueued: DEFAULT_MAX_QUEUED_CHANGES * 4 });
 */
export const DEFAULT_MAX_QUEUED_CHANGES = 1_024;

/** The deadline of one call: its own `timeoutMs`, else the view's, else 10 s. */
function callTimeoutOf(call: CallOptions, view: ServiceOptions): number {
  return call.timeoutMs ?? view.timeoutMs ?? 10_000;
}

/** Network errors that mean the request never reached the instance: safe to retry any method. */
const NOT_SENT = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);

/** @internal */
export interface ViewDeps {
  dispatcher: Dispatcher;
  onClose(view: ServiceView): void;
  /** Background consumer report of a failed attempt (never throws, never waits). */
  reportFailure?(instance: Instance, kind: FailureKind, detail: string): void;
}

/**
 * A live, filtered view of one service with load balancing and resilient calls.
 * Events: 'change' (ViewChange), 'stale' (cause: every registry node is unreachable, or
 * the view is held across a registry restart; lookups keep serving the last known
 * instances), 'fresh' (the registry confirms the view again).
 *
 * @example
 * const orders = client.service('orders', { balancer: 'least-outstanding' });
 * await orders.ready();
 * const inst = orders.pick();
 * const res = await orders.fetch('/v1/orders/42');
 * for await (const change of orders.changes()) console.log(change.type);
 */
export class ServiceView extends LoopEmitter implements FeedListener {
  readonly service: string;
  readonly namespace: string;
  /** Outstanding calls per instance (least-outstanding, p2c). */
  readonly load = new LoadTracker();
  private readonly members = new Map<string, Instance>();
  private list: readonly Instance[] = Object.freeze([]);
  private readonly balancer: Balancer;
  private readonly breakers = new Map<string, CircuitBreaker>();
  private readonly breakerTimers = new Map<string, NodeJS.Timeout>();
  private readonly bulkhead: Bulkhead | null;
  private readonly budget: RetryBudget;
  private readonly clock: Clock;
  private readonly unsubscribe: () => void;
  private closed = false;
  private readonly retryOn: ReadonlySet<number>;

  constructor(
    private readonly feed: ServiceFeed,
    private readonly opts: ServiceOptions,
    private readonly deps: ViewDeps,
  ) {
    super();
    this.service = feed.opts.service;
    this.namespace = feed.opts.namespace;
    this.clock = opts.clock ?? systemClock;
    if (opts.version !== undefined) {
      try {
        validateVersionRange(opts.version);
      } catch (err) {
        throw new RangeError(`version range "${opts.version}" is not valid: ${(err as Error).message}`);
      }
    }
    const pref = typeof opts.preferZone === 'string' ? { zone: opts.preferZone } : opts.preferZone;
    if (pref && typeof opts.balancer === 'object') {
      // Each balancer keeps state of the list it was given; one object cannot hold two.
      const made = opts.balancer.constructor?.name;
      throw new RangeError(`preferZone needs two balancers of the kind asked for (one for the zone, one for every instance): give the balancer as a name or as a factory, such as balancer: () => new ${made && made !== 'Object' ? made : 'MyBalancer'}(), not as an object`);
    }
    this.balancer = pref ? new ZoneAwareBalancer(() => createBalancer(opts.balancer), pref) : createBalancer(opts.balancer);
    this.bulkhead = opts.bulkhead === false ? null : new Bulkhead(this.service, opts.bulkhead ?? {});
    this.budget = new RetryBudget({ clock: this.clock, ...opts.retry?.budget });
    this.retryOn = new Set(opts.retry?.retryOn ?? [502, 503, 504]);
    for (const i of feed.instances.values()) if (this.matches(i)) this.members.set(i.id, i);
    this.rebuild();
    this.unsubscribe = feed.subscribe(this);
  }

  /** Every matching instance (also those not pickable), from memory. Do not mutate. */
  instances(): readonly Instance[] {
    return this.list;
  }

  /**
   * One instance chosen by the balancer among those that can take calls (status `up`,
   * health not `critical`, weight > 0, circuit not open); undefined when there is none.
   * From memory, no allocation.
   */
  pick(ctx?: PickContext): Instance | undefined {
    return this.balancer.pick(ctx);
  }

  /** True while the view serves instances the registry has not confirmed (see 'stale'). */
  get stale(): boolean {
    return this.feed.stale;
  }

  /** Whether the view has instances to serve (from the registry or a snapshot). */
  get isReady(): boolean {
    return this.feed.isReady;
  }

  /** The balancer in use. */
  get balancerName(): string {
    return this.balancer.name;
  }

  /**
   * Resolves once the view holds the registry's answer (or a snapshot); rejects with
   * RegistryUnavailableError after `timeoutMs` (default 10 s) without either.
   */
  async ready(opts: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<void> {
    if (this.feed.isReady) return;
    const timeoutMs = opts.timeoutMs ?? 10_000;
    const dl = deadline(`ready ${this.service}`, timeoutMs, opts.signal);
    try {
      await holdProcess(this.feed.whenReady(dl.signal));
    } catch (err) {
      if (err instanceof TimeoutError) throw new RegistryUnavailableError([], err, `service ${this.service}: no registry answered and no snapshot within ${timeoutMs} ms`);
      throw err;
    } finally {
      dl.done();
    }
  }

  /** The state of an instance's circuit breaker. */
  circuitState(instanceId: string): 'closed' | 'open' | 'half-open' {
    return this.breakers.get(instanceId)?.state ?? 'closed';
  }

  /** @internal feed listener */
  onChanges(changes: readonly FeedChange[]): void {
    if (this.closed) return;
    const out: ViewChange[] = [];
    for (const c of changes) {
      const prev = this.members.get(c.instance.id);
      if (c.type === 'put' && this.matches(c.instance)) {
        this.members.set(c.instance.id, c.instance);
        out.push(prev ? { type: 'updated', instance: c.instance, previous: prev, revision: c.revision } : { type: 'added', instance: c.instance, revision: c.revision });
      } else if (prev) {
        this.members.delete(c.instance.id);
        this.dropBreaker(c.instance.id);
        out.push({ type: 'removed', instance: c.type === 'put' ? c.instance : prev, reason: c.type === 'put' ? 'filtered' : (c.reason ?? 'deregistered'), revision: c.revision });
      }
    }
    if (out.length === 0) return;
    this.rebuild();
    for (const c of out) this.emit('change', c);
  }

  /** @internal feed listener */
  onStale(stale: boolean, cause?: unknown): void {
    if (this.closed) return;
    if (stale) this.emit('stale', cause);
    else this.emit('fresh');
  }

  private matches(i: Instance): boolean {
    const o = this.opts;
    return matchesFilter(i, { healthy: o.healthy === true, zone: o.zone ?? null, tags: o.tags ?? [], version: o.version ?? null });
  }

  /** Rebuilds the pickable candidates; called on membership and breaker changes (rare). */
  private rebuild(): void {
    this.list = Object.freeze([...this.members.values()]);
    const candidates = this.list.filter((i) => i.status === 'up' && i.health !== 'critical' && i.weight > 0 && (this.breakers.get(i.id)?.canPass() ?? true));
    this.balancer.update(candidates, { all: this.list, load: this.load });
  }

  private breaker(id: string): CircuitBreaker | null {
    if (this.opts.circuitBreaker === false) return null;
    let b = this.breakers.get(id);
    if (!b) this.breakers.set(id, (b = new CircuitBreaker({ clock: this.clock, ...this.opts.circuitBreaker })));
    return b;
  }

  private dropBreaker(id: string): void {
    this.breakers.delete(id);
    clearTimeout(this.breakerTimers.get(id));
    this.breakerTimers.delete(id);
  }

  /** After a breaker verdict: rebuild when pickability changed; wake up for half-open. */
  private breakerChanged(id: string, b: CircuitBreaker, before: boolean): void {
    if (b.canPass() !== before) this.rebuild();
    if (b.state === 'open' && !this.breakerTimers.has(id)) this.armBreakerTimer(id, b);
  }

  /** Rebuilds when the cool-down ends (timers may fire a little early: then wait again). */
  private armBreakerTimer(id: string, b: CircuitBreaker): void {
    const t = unrefTimer(() => {
      this.breakerTimers.delete(id);
      if (this.closed || this.breakers.get(id) !== b) return;
      if (b.state === 'open') this.armBreakerTimer(id, b);
      else this.rebuild();
    }, Math.max(1, Math.ceil(b.reopensAt - this.clock.now())));
    this.breakerTimers.set(id, t);
  }

  private noInstance(): Error {
    let ejected = 0;
    let pickable = 0;
    for (const i of this.list) {
      if (i.status !== 'up' || i.health === 'critical' || i.weight <= 0) continue;
      pickable++;
      if (!(this.breakers.get(i.id)?.canPass() ?? true)) ejected++;
    }
    if (pickable > 0 && ejected === pickable) return new CircuitOpenError(this.service, ejected);
    const detail = this.list.length === 0 ? (this.feed.isReady ? 'no instance is registered' : 'the view has not been loaded yet (registry unreachable and no snapshot)') : `none of ${this.list.length} instances is up, healthy and not ejected`;
    return new NoInstanceError(this.service, detail);
  }

  /**
   * Runs `fn` against picked instances with the view's policy: bulkhead, deadline,
   * circuit breakers, outstanding-request accounting and (when `retry`) retries on other
   * instances within the retry budget. `classify` says what a result or error means
   * (default: a result is success, an error a retryable failure).
   *
   * @example
   * const value = await view.call(async (inst, { signal }) => redisGet(inst, key, signal), { retry: true });
   */
  async call<T>(
    fn: (instance: Instance, attempt: { signal: AbortSignal; attempt: number }) => Promise<T>,
    opts: CallOptions = {},
    classify: (outcome: { result: T } | { error: unknown }) => Verdict = defaultClassify,
    discard?: (result: T) => void,
  ): Promise<T> {
    if (this.closed) throw new ClientClosedError(`view of ${this.service}`);
    const dl = deadline(`call to ${this.service}`, callTimeoutOf(opts, this.opts), opts.signal ?? undefined);
    try {
      // The bulkhead first: calls waiting for the first answer count against its queue too.
      const release = this.bulkhead ? await this.bulkhead.acquire(dl.signal) : undefined;
      try {
        if (!this.feed.isReady) await this.ready({ signal: dl.signal, timeoutMs: callTimeoutOf(opts, this.opts) });
        return await this.attempts(fn, opts, dl.signal, classify, discard);
      } finally {
        release?.();
      }
    } finally {
      dl.done();
    }
  }

  private async attempts<T>(
    fn: (instance: Instance, attempt: { signal: AbortSignal; attempt: number }) => Promise<T>,
    opts: CallOptions,
    signal: AbortSignal,
    classify: (outcome: { result: T } | { error: unknown }) => Verdict,
    discard?: (result: T) => void,
  ): Promise<T> {
    const maxAttempts = opts.retry ? Math.max(1, opts.maxAttempts ?? this.opts.retry?.maxAttempts ?? 3) : 1;
    const callTimeoutMs = callTimeoutOf(opts, this.opts);
    const attemptTimeoutMs = opts.attemptTimeoutMs ?? this.opts.attemptTimeoutMs;
    const tried = new Set<string>();
    const ctx: PickContext = { exclude: tried };
    if (opts.key !== undefined) ctx.key = opts.key;
    this.budget.recordRequest();
    let last: { result: T } | { error: unknown } | undefined;
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      const inst = this.acquireInstance(ctx);
      if (!inst) {
        if (last === undefined) throw this.noInstance();
        break;
      }
      const b = this.breakers.get(inst.id) ?? null;
      const passBefore = b?.canPass() ?? true;
      // The verdict counts only for the breaker state the attempt was admitted in.
      const admittedIn = b?.generation ?? 0;
      const dl = deadline(`attempt on ${inst.id}`, attemptTimeoutMs, signal);
      const startedAt = this.clock.now();
      this.load.begin(inst.id);
      let outcome: { result: T } | { error: unknown };
      try {
        outcome = { result: await fn(inst, { signal: dl.signal, attempt }) };
      } catch (error) {
        outcome = { error: dl.signal.aborted ? dl.signal.reason : error };
      } finally {
        this.load.end(inst.id);
        dl.done();
      }
      const userAborted = signal.aborted && !(signal.reason instanceof TimeoutError);
      // The call's deadline, not the attempt's, ended an attempt that had less than half the
      // call's time: the rest went to the bulkhead's queue or to earlier attempts. That
      // says nothing of the instance, and counting it would let a client's own queue eject
      // healthy instances under load (and so load the others more).
      const shortChanged = signal.aborted && !userAborted && this.clock.now() - startedAt < callTimeoutMs / 2;
      // A breaker the instance lost while the attempt ran (it left the view and came back
      // with a new one) takes no verdict: it is no longer the instance's.
      const current = b !== null && this.breakers.get(inst.id) === b ? b : null;
      let verdict: Verdict;
      try {
        verdict = userAborted ? { ok: true, retryable: false, failure: false } : classify(outcome);
      } catch (err) {
        // A classify that throws says nothing of the instance, but the attempt it was
        // admitted for (maybe the half-open trial) is over: free it, or the breaker waits
        // for that verdict for ever. The error is the caller's to see.
        if (current) {
          current.onIgnored(admittedIn);
          this.breakerChanged(inst.id, current, passBefore);
        }
        if ('result' in outcome && discard) discard(outcome.result);
        if (last && 'result' in last && discard) discard(last.result);
        throw err;
      }
      if (current) {
        if (verdict.failure && !shortChanged) current.onFailure(admittedIn);
        else if (userAborted || shortChanged || verdict.neutral) current.onIgnored(admittedIn);
        else current.onSuccess(admittedIn);
        this.breakerChanged(inst.id, current, passBefore);
      }
      tried.add(inst.id);
      if (last && 'result' in last && discard) discard(last.result);
      last = outcome;
      if (verdict.ok || !verdict.retryable || attempt === maxAttempts || signal.aborted) break;
      if (!this.budget.tryRetry()) {
        if ('error' in outcome) throw new RetryBudgetExhaustedError(this.service, outcome.error);
        break;
      }
      await this.pause(attempt, signal).catch(() => undefined);
      if (signal.aborted) break;
    }
    if (last === undefined) throw this.noInstance();
    if ('result' in last) return last.result;
    if (signal.aborted) throw signal.reason;
    throw isNetworkError(last.error) ? new UpstreamError(this.service, tried.size, last.error) : last.error;
  }

  /** Picks and takes the breaker slot (a half-open breaker admits `halfOpenProbes` calls). */
  private acquireInstance(ctx: PickContext): Instance | undefined {
    const tried = ctx.exclude as Set<string>;
    // Bounded: each failed acquisition excludes one more instance.
    for (let n = 0; n <= this.list.length; n++) {
      const inst = this.balancer.pick(ctx);
      if (!inst) return undefined;
      const b = this.breaker(inst.id);
      if (!b) return inst;
      const before = b.canPass();
      if (b.tryAcquire()) {
        if (b.state === 'half-open') this.breakerChanged(inst.id, b, before);
        return inst;
      }
      tried.add(inst.id);
    }
    return undefined;
  }

  private pause(attempt: number, signal: AbortSignal): Promise<void> {
    const base = this.opts.retry?.backoffMs ?? 10;
    const cap = Math.min(this.opts.retry?.maxBackoffMs ?? 200, base * 2 ** (attempt - 1));
    return sleep(Math.floor(Math.random() * cap), signal);
  }

  /**
   * A discovery-aware fetch (undici) to a picked instance: `path` is the path and query.
   * Idempotent methods (GET, HEAD, PUT, DELETE, OPTIONS) are retried on another instance
   * after a network error or a 502/503/504, within the retry budget; `retry: true` opts
   * other methods in, `retry: false` opts out. A request that never reached an instance
   * (connection refused) is retried whatever its method. Bodies that are streams are sent
   * once. Outstanding requests count until the response headers arrive.
   *
   * @example
   * const res = await orders.fetch('/v1/orders?limit=10', { headers: { accept: 'application/json' } });
   * const list = await res.json();
   */
  fetch(path: string, init: SwitchboardFetchInit = {}, scheme: 'http' | 'https' = 'http'): Promise<Response> {
    const method = (init.method ?? 'GET').toUpperCase();
    const body = init.body;
    const replayable = body === undefined || body === null || typeof body === 'string' || body instanceof Uint8Array || body instanceof ArrayBuffer || body instanceof URLSearchParams;
    const retry = replayable && (init.retry ?? IDEMPOTENT_METHODS.has(method));
    const { timeoutMs, attemptTimeoutMs, maxAttempts, key, retry: _r, signal, ...rest } = init;
    // Several attempts whenever the body can be sent again; classify() below decides per
    // outcome whether one more is safe. `retry: false` turns every retry off.
    const callOpts: CallOptions = { retry: replayable && init.retry !== false };
    if (maxAttempts !== undefined) callOpts.maxAttempts = maxAttempts;
    if (signal) callOpts.signal = signal;
    if (timeoutMs !== undefined) callOpts.timeoutMs = timeoutMs;
    if (attemptTimeoutMs !== undefined) callOpts.attemptTimeoutMs = attemptTimeoutMs;
    if (key !== undefined) callOpts.key = key;
    const suffix = path.startsWith('/') ? path : `/${path}`;
    const retryOn = this.retryOn;
    return this.call(
      (inst, { signal: s }) => {
        const sent = undiciFetch(`${inst.protocol === 'https' ? 'https' : scheme}://${hostPort(inst)}${suffix}`, { ...rest, headers: withTraceHeaders(rest.headers), signal: s, dispatcher: this.deps.dispatcher });
        const report = this.deps.reportFailure;
        if (!report) return sent;
        return sent.then(
          (res) => {
            if (res.status >= 500) report(inst, 'http_5xx', `HTTP ${res.status}`);
            return res;
          },
          (err: unknown) => {
            const f = failureKindOf(err, s, signal ?? undefined);
            if (f) report(inst, f.kind, f.detail);
            throw err;
          },
        );
      },
      callOpts,
      (o) => {
        if ('result' in o) {
          const st = o.result.status;
          const failed = retryOn.has(st);
          return { ok: !failed, retryable: failed && retry, failure: st >= 500 };
        }
        // An error that is not the network's (undici's TypeError for a request it cannot
        // send, such as a GET with a body) is the caller's: no retry, no verdict on the
        // instance, or one bad call site would open the circuit of every instance.
        if (!isNetworkError(o.error)) return { ok: true, retryable: false, failure: false, neutral: true };
        // Never sent: any method may go to another instance. Sent: only when retryable.
        const notSent = NOT_SENT.has(errorCode(o.error) ?? '');
        return { ok: false, retryable: notSent || retry, failure: true };
      },
      (res) => void res.body?.cancel().catch(() => undefined),
    );
  }

  /**
   * The changes of the view as an async iterator. It ends when the view closes or `signal`
   * aborts. With `initial`, it first yields every current instance as `added`. A reader
   * that falls more than `maxQueued` changes behind gets one `resync` instead.
   *
   * @example
   * for await (const change of orders.changes({ initial: true, signal })) {
   *   if (change.type === 'added') console.log('new', change.instance.address);
   * }
   */
  changes(opts: { signal?: AbortSignal; initial?: boolean; maxQueued?: number } = {}): AsyncIterableIterator<ViewChange> {
    const maxQueued = opts.maxQueued ?? DEFAULT_MAX_QUEUED_CHANGES;
    let queue: ViewChange[] = opts.initial ? this.list.map((instance) => ({ type: 'added' as const, instance, revision: instance.modRevision })) : [];
    let wake: (() => void) | undefined;
    let done = this.closed;
    const onChange = (c: ViewChange): void => {
      queue.push(c);
      if (queue.length > maxQueued) queue = [{ type: 'resync', instances: this.list }];
      wake?.();
    };
    const finish = (): void => {
      done = true;
      this.off('change', onChange);
      this.off('closed', finish);
      opts.signal?.removeEventListener('abort', finish);
      wake?.();
    };
    this.on('change', onChange);
    this.once('closed', finish);
    opts.signal?.addEventListener('abort', finish, { once: true });
    const it: AsyncIterableIterator<ViewChange> = {
      next: async () => {
        while (queue.length === 0 && !done) await new Promise<void>((r) => (wake = r));
        wake = undefined;
        const value = queue.shift();
        return value === undefined ? { done: true, value: undefined } : { done: false, value };
      },
      return: async () => {
        finish();
        queue = [];
        return { done: true, value: undefined };
      },
      [Symbol.asyncIterator]: () => it,
    };
    return it;
  }

  /** Stops following the service (the client closes the stream when no view needs it). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.unsubscribe();
    for (const t of this.breakerTimers.values()) clearTimeout(t);
    this.breakerTimers.clear();
    this.emit('closed');
    this.deps.onClose(this);
  }
}

function defaultClassify(o: { result: unknown } | { error: unknown }): Verdict {
  return 'result' in o ? { ok: true, retryable: false, failure: false } : { ok: false, retryable: true, failure: true };
}

function hostPort(i: Instance): string {
  return i.address.includes(':') ? `[${i.address}]:${i.port}` : `${i.address}:${i.port}`;
}

function errorCode(err: unknown): string | undefined {
  for (let e = err as { code?: unknown; cause?: unknown } | undefined, n = 0; e && n < 5; e = e.cause as typeof e, n++) {
    if (typeof e.code === 'string') return e.code;
  }
  return undefined;
}

/**
 * A failure to talk to the instance (not an error of the caller's own code): a deadline, an
 * error with a system or undici code, or fetch's TypeError with a cause ("fetch failed",
 * "terminated": TLS, DNS, a garbled answer). A TypeError without a cause is a request the
 * caller built wrong (a GET with a body): it says nothing about the instance.
 */
function isNetworkError(err: unknown): boolean {
  if (err instanceof TimeoutError) return true;
  if (err instanceof TypeError && (err as { cause?: unknown }).cause !== undefined) return true;
  const code = errorCode(err);
  return code !== undefined && /^(E[A-Z]+|UND_ERR_[A-Z_]+)$/.test(code);
}
