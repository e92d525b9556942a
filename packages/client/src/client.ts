/**
 * The client: one per process. It owns the registry connections (one lease session for
 * the provider side, one watch stream per watched service for the consumer side), the
 * registrations and the service views.
 */
import { readFileSync } from 'node:fs';
import { Agent, type Dispatcher, type Response } from 'undici';
import { DEFAULT_NAMESPACE, SwitchboardError, validateNamespace, validateServiceName } from '@switchboard/protocol';
import { backoffSettings, type BackoffOptions } from './backoff.js';
import { LoopEmitter } from './emitter.js';
import { ClientClosedError, InvalidArgumentError } from './errors.js';
import { ServiceFeed } from './feed.js';
import { LeaseKeeper, type LeaseChange, type SessionTransport } from './lease.js';
import { Registrar, type RegisterOptions, type Registration } from './provider.js';
import { Endpoints, RegistryHttp, checkToken } from './registry-http.js';
import type { LeaseInfo } from './session.js';
import { holdProcess, sleep } from './time.js';
import { ServiceView, type ServiceOptions, type SwitchboardFetchInit } from './view.js';
import { FailureReporter, type FailureReportOptions, type FailureReportStats } from './reports.js';
import { systemClock } from './time.js';

/**
 * Client settings. Every default is chosen for a LAN; each says why.
 *
 * @example
 * const client = await connect({
 *   endpoints: ['http://10.0.0.1:7700', 'http://10.0.0.2:7700'],
 *   leaseTtlMs: 10_000,
 *   cacheDir: '/var/cache/myapp/switchboard',
 * });
 */
export interface ClientOptions {
  /**
   * Registry nodes, tried in order with failover (an entry may hold a comma-separated
   * list). Default `$SWITCHBOARD_ADDR` (comma-separated) or http://127.0.0.1:7700.
   */
  endpoints?: string[];
  /** Namespace of registrations and views unless they say otherwise. Default `default`. */
  namespace?: string;
  /**
   * TTL of the process's lease. Default 10 s: keepalives every 3.3 s; a process that dies
   * without closing its socket is removed within the registry's session grace, one that
   * hangs within 10 s.
   */
  leaseTtlMs?: number;
  /**
   * A bearer token for registries that require one (`api.md`, *Authentication*): sent on
   * every registry request, watch stream and the session WebSocket, never to instances.
   * A `read` token is enough for views; registering needs a `write` token. Default
   * `$SWITCHBOARD_TOKEN`, else none. A refused token is an {@link AuthError}, not retried.
   */
  token?: string;
  /**
   * CA certificates (PEM) to trust for `https://` registry nodes whose certificate a
   * private CA signed, besides Node's own CAs. Default: none. A registry certificate the
   * client cannot verify is a {@link TlsError}, not retried.
   */
  ca?: string | Buffer | readonly (string | Buffer)[];
  /** A file of such CA certificates (PEM), read once by the constructor. Default `$SWITCHBOARD_CA_FILE`. */
  caFile?: string;
  /** `auto` (default): the session WebSocket, REST keepalives on nodes without it. */
  session?: SessionTransport;
  /** One registry request. Default 5 s. */
  requestTimeoutMs?: number;
  /** Opening a connection to a registry node (TCP, or WebSocket handshake and bind). Default 2 s. */
  connectTimeoutMs?: number;
  /** Reconnection backoff to the registry (full jitter). Default 100 ms doubling to 10 s. */
  backoff?: BackoffOptions;
  /** Where views keep their on-disk snapshot (stale-if-error at start). Default: none. */
  cacheDir?: string;
  /** A watch stream silent this long is reconnected. Default 45 s (three of the registry's 15 s keep-alives). */
  watchIdleTimeoutMs?: number;
  /**
   * How long a view keeps its instances when a registry of another epoch (restarted
   * without data, or another ap node) lists the service empty. Default 30 s: long enough
   * for providers to reconnect and register again.
   */
  emptyViewGraceMs?: number;
  /** Least time between two snapshot writes of one service. Default 1 s. */
  snapshotIntervalMs?: number;
  /** close() and drain(): longest wait for the registry to confirm deregistration. Default 5 s. */
  closeTimeoutMs?: number;
  /** undici dispatcher for discovery-aware fetch. Default: a keep-alive Agent owned by the client. */
  dispatcher?: Dispatcher;
  /**
   * Consumer failure reports: a fetch() attempt that fails on an instance (refused,
   * connect timeout, timeout, reset, HTTP 5xx) is reported to the registry in the
   * background, at most once per instance per `minIntervalMs`. Several consumers reporting
   * one instance turn it `warning` there. `false` turns reports off. Default: on.
   */
  reportFailures?: boolean | FailureReportOptions;
  /** Call policy defaults of every view (each view may override). */
  defaults?: Pick<ServiceOptions, 'balancer' | 'preferZone' | 'retry' | 'circuitBreaker' | 'bulkhead' | 'timeoutMs' | 'attemptTimeoutMs'>;
}

/**
 * Options of `drainOnSignal`.
 *
 * @example
 * client.drainOnSignal({ waitMs: 10_000, signals: ['SIGTERM'] });
 */
export interface DrainOnSignalOptions {
  /** How long consumers get to notice `draining` before deregistration. Default 5 s. */
  waitMs?: number;
  /** Default SIGTERM and SIGINT. */
  signals?: NodeJS.Signals[];
  /**
   * After draining: `true` (default) exits the process with code 0; `false` leaves the
   * process to you (close your servers in `onDrained`). A second signal exits at once.
   */
  exit?: boolean;
  /** Runs after deregistration, before the exit. */
  onDrained?: () => void | Promise<void>;
}

/**
 * The Switchboard client of one process: registrations (one lease, kept alive over one
 * connection), live service views, load-balanced and resilient calls.
 *
 * Events: 'lease' (LeaseChange), 'lease-lost' ({ leaseId, reason }), 'reregistered'
 * ({ count, lease }), 'draining', 'registry-error' (an error the client recovers from by
 * itself, for logs).
 *
 * @example
 * const client = await connect({ endpoints: ['http://127.0.0.1:7700'] });
 * await client.register({ service: 'orders', port: 8080 });
 * client.drainOnSignal({ waitMs: 5000 });
 * const res = await client.fetch('http://payments/v1/charges', { method: 'POST', body: '{}' });
 */
export class SwitchboardClient extends LoopEmitter {
  readonly namespace: string;
  readonly endpoints: Endpoints;
  private readonly http: RegistryHttp;
  private readonly keeper: LeaseKeeper;
  private readonly registrar: Registrar;
  private readonly feeds = new Map<string, ServiceFeed>();
  private readonly views = new Map<string, ServiceView>();
  private readonly allViews = new Set<ServiceView>();
  /** Feeds being closed (their last snapshot write included), awaited by close(). */
  private readonly feedsClosing = new Set<Promise<void>>();
  private readonly dispatcher: Dispatcher;
  private readonly ownDispatcher: boolean;
  private closing: Promise<void> | null = null;
  private drainingPromise: Promise<void> | null = null;
  private readonly reporter: FailureReporter | null;

  constructor(private readonly opts: ClientOptions = {}) {
    super();
    this.namespace = checked(() => validateNamespace(opts.namespace ?? DEFAULT_NAMESPACE));
    this.endpoints = new Endpoints(splitEndpoints(opts.endpoints ?? process.env.SWITCHBOARD_ADDR ?? 'http://127.0.0.1:7700'));
    const connectTimeoutMs = opts.connectTimeoutMs ?? 2_000;
    const token = opts.token ?? (process.env.SWITCHBOARD_TOKEN || undefined);
    this.http = new RegistryHttp(this.endpoints, {
      requestTimeoutMs: opts.requestTimeoutMs ?? 5_000,
      connectTimeoutMs,
      token: token === undefined ? null : checkToken(token, opts.token === undefined ? 'SWITCHBOARD_TOKEN' : 'the token option'),
      ca: caOf(opts),
    });
    const backoff = backoffSettings(opts.backoff);
    this.keeper = new LeaseKeeper(this.endpoints, this.http, {
      ttlMs: opts.leaseTtlMs ?? 10_000,
      transport: opts.session ?? 'auto',
      connectTimeoutMs,
      backoff,
      onChange: (c) => {
        this.registrar.onLeaseChange(c);
        this.emit('lease', c);
      },
      onLost: (leaseId, reason) => {
        this.registrar.onLeaseLost();
        this.emit('lease-lost', { leaseId, reason });
      },
      onError: (err) => this.emit('registry-error', err),
    });
    this.registrar = new Registrar(this.keeper, this.http, this.namespace, backoff, {
      onReregistered: (count, lease) => this.emit('reregistered', { count, lease }),
      onError: (err) => this.emit('registry-error', err),
    });
    this.ownDispatcher = opts.dispatcher === undefined;
    // Connections to instances: kept alive a little less than Node's default server
    // keepAliveTimeout (5 s), so that we never reuse a socket the server is closing.
    this.dispatcher = opts.dispatcher ?? new Agent({ keepAliveTimeout: 4_000, keepAliveMaxTimeout: 4_000, connect: { timeout: connectTimeoutMs } });
    const rf = opts.reportFailures ?? true;
    this.reporter = rf === false ? null : new FailureReporter(this.http, systemClock, rf === true ? {} : rf);
  }

  /** The lease this process holds now, if any. */
  get lease(): LeaseInfo | null {
    return this.keeper.info;
  }

  /** True once close() was called. */
  get closed(): boolean {
    return this.closing !== null;
  }

  /**
   * Registers an instance under the process's lease and keeps it registered (after a
   * lost lease, a reconnect or a failover) until `deregister()` or `close()`. Resolves once
   * the registry holds it; a refused instance rejects with a typed RegistryError.
   *
   * @example
   * const reg = await client.register({ service: 'orders', port: 8080, zone: 'eu-1', version: '2.1.0' });
   * console.log(reg.id); // orders-<hostname>-<pid>
   */
  register(instance: RegisterOptions, opts: { signal?: AbortSignal } = {}): Promise<Registration> {
    if (this.closing) return Promise.reject(new ClientClosedError());
    return holdProcess(this.registrar.register(instance, opts.signal));
  }

  /**
   * A live view of a service. Views with the same service, filters and policy are shared
   * (one watch stream per service whatever the number of views).
   *
   * @example
   * const orders = client.service('orders', { healthy: true, balancer: 'p2c' });
   * await orders.ready();
   * console.log(orders.instances().length, orders.pick()?.address);
   */
  service(name: string, opts: ServiceOptions = {}): ServiceView {
    if (this.closing) throw new ClientClosedError();
    const namespace = checked(() => validateNamespace(opts.namespace ?? this.namespace));
    const service = checked(() => validateServiceName(name));
    const merged: ServiceOptions = { ...this.opts.defaults, ...opts, namespace };
    const key = viewKey(service, merged);
    const cached = key === undefined ? undefined : this.views.get(key);
    if (cached) return cached;
    const feedKey = `${namespace}/${service}`;
    let feed = this.feeds.get(feedKey);
    const created = !feed;
    feed ??= new ServiceFeed({
      namespace,
      service,
      endpoints: this.endpoints,
      http: this.http,
      backoff: backoffSettings(this.opts.backoff),
      cacheDir: this.opts.cacheDir,
      watchIdleTimeoutMs: this.opts.watchIdleTimeoutMs ?? 45_000,
      emptyViewGraceMs: this.opts.emptyViewGraceMs ?? 30_000,
      snapshotIntervalMs: this.opts.snapshotIntervalMs ?? 1_000,
      onError: (err) => this.emit('registry-error', err),
    });
    this.feeds.set(feedKey, feed);
    const view = new ServiceView(feed, merged, {
      dispatcher: this.dispatcher,
      ...(this.reporter && { reportFailure: (i, kind, detail) => this.reporter?.report(i.namespace, i.service, i.id, kind, detail) }),
      onClose: (v) => {
        this.allViews.delete(v);
        if (key !== undefined && this.views.get(key) === v) this.views.delete(key);
        const f = this.feeds.get(feedKey);
        if (f && f.subscribers === 0) {
          this.feeds.delete(feedKey);
          const closing = f.close().finally(() => this.feedsClosing.delete(closing));
          this.feedsClosing.add(closing);
        }
      },
    });
    if (key !== undefined) this.views.set(key, view);
    this.allViews.add(view);
    if (created) feed.start();
    return view;
  }

  /**
   * fetch() by service name: `http://<service>/<path>` goes to a picked instance of the
   * service (in the client's namespace), with the policy of its default view.
   *
   * @example
   * const res = await client.fetch('http://orders/v1/orders/42', { timeoutMs: 2000 });
   * if (res.ok) console.log(await res.json());
   */
  async fetch(url: string, init: SwitchboardFetchInit = {}): Promise<Response> {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      throw invalid('url', `"${url}" is not a URL`, 'write it like http://orders/path');
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw invalid('url', `scheme ${u.protocol} is not supported`, 'use http://<service>/path or https://<service>/path');
    return this.service(u.hostname).fetch(u.pathname + u.search, init, u.protocol === 'https:' ? 'https' : 'http');
  }

  /**
   * Graceful drain: marks every instance `draining` (consumers stop picking them), waits
   * `waitMs` for callers to notice and finish, then deregisters and closes the client.
   *
   * @example
   * process.once('SIGTERM', async () => { await client.drain({ waitMs: 5000 }); server.close(); });
   */
  drain(opts: { waitMs?: number; signal?: AbortSignal } = {}): Promise<void> {
    this.drainingPromise ??= holdProcess(this.doDrain(opts.waitMs ?? 5_000, opts.signal));
    return this.drainingPromise;
  }

  private async doDrain(waitMs: number, signal?: AbortSignal): Promise<void> {
    if (this.registrar.size > 0) {
      const bound = AbortSignal.timeout(this.opts.closeTimeoutMs ?? 5_000);
      const s = signal ? AbortSignal.any([signal, bound]) : bound;
      const started = Date.now();
      await this.registrar.drainAll(s).catch((err) => this.emit('registry-error', err));
      this.emit('draining');
      // The drain barrier: each node answers once every watcher of the service there was
      // sent `draining` (bounded by waitMs). A registry without it: wait waitMs as before.
      const reached = await this.drainBarrier(Math.max(0, waitMs - (Date.now() - started)), signal);
      if (!reached) await sleep(Math.max(0, waitMs - (Date.now() - started)), signal).catch(() => undefined);
    }
    await this.close();
  }

  /**
   * Installs handlers that drain on SIGTERM/SIGINT (see DrainOnSignalOptions); returns a
   * function that removes them.
   *
   * @example
   * const client = await connect({ endpoints });
   * await client.register({ service: 'orders', port: 8080 });
   * client.drainOnSignal({ waitMs: 5000 }); // Kubernetes: keep terminationGracePeriodSeconds above it
   */
  drainOnSignal(opts: DrainOnSignalOptions = {}): () => void {
    const signals = opts.signals ?? ['SIGTERM', 'SIGINT'];
    let started = false;
    const handler = (sig: NodeJS.Signals): void => {
      if (started) {
        // A second signal: the operator wants out now.
        process.exit(128 + (sig === 'SIGINT' ? 2 : 15));
      }
      started = true;
      this.drain(opts.waitMs === undefined ? {} : { waitMs: opts.waitMs })
        .catch((err) => this.emit('registry-error', err))
        .then(() => opts.onDrained?.())
        .finally(() => {
          if (opts.exit ?? true) process.exit(0);
        });
    };
    for (const s of signals) process.on(s, handler);
    return () => {
      for (const s of signals) process.off(s, handler);
    };
  }

  /**
   * Deregisters everything (revoking the lease through the session; REST DELETEs when that
   * cannot be confirmed), stops every stream and closes connections. Nothing of the SDK
   * keeps the process alive afterwards.
   *
   * @example
   * await client.close();
   */
  close(): Promise<void> {
    this.closing ??= holdProcess(this.doClose());
    return this.closing;
  }

  /** True when every instance's drain was confirmed by the registry's drain endpoint. */
  private async drainBarrier(waitMs: number, signal?: AbortSignal): Promise<boolean> {
    const wait = `${Math.floor(waitMs)}ms`;
    const timeoutMs = waitMs + (this.opts.requestTimeoutMs ?? 5_000);
    const results = await Promise.all(
      this.registrar.targets().map((t) =>
        this.http
          .any({ method: 'POST', path: `/v1/services/${t.service}/instances/${encodeURIComponent(t.id)}/drain`, query: { namespace: t.namespace, wait }, timeoutMs, ...(signal && { signal }) })
          .then(
            () => true,
            // Gone already: nothing to wait for. Anything else (404/405 of an older registry, unreachable): fall back.
            (err: unknown) => (err as { code?: unknown }).code === 'INSTANCE_NOT_FOUND',
          ),
      ),
    );
    return results.every(Boolean);
  }

  /** Counters of consumer failure reports; null when `reportFailures` is false. */
  get failureReports(): FailureReportStats | null {
    return this.reporter?.snapshot() ?? null;
  }

  private async doClose(): Promise<void> {
    this.reporter?.close();
    await this.registrar.close(this.opts.closeTimeoutMs ?? 5_000).catch((err) => this.emit('registry-error', err));
    for (const v of [...this.allViews]) v.close();
    await Promise.all([...this.feeds.values()].map((f) => f.close()));
    this.feeds.clear();
    await Promise.all([...this.feedsClosing]);
    await this.http.close();
    if (this.ownDispatcher) await this.dispatcher.destroy().catch(() => undefined);
  }
}

/**
 * Creates a client. Nothing is connected until it is used: the lease session opens on
 * the first register(), a watch stream on the first view of a service. So a consumer
 * starts even while every registry node is down (and serves its snapshot, with cacheDir).
 *
 * @example
 * import { connect } from '@switchboard/client';
 * const client = await connect({ endpoints: ['http://127.0.0.1:7700'] });
 */
export async function connect(opts?: ClientOptions): Promise<SwitchboardClient>;
/**
 * The registry nodes first: one address, a comma-separated list, or an array. Every node
 * of a cluster can be given; the client fails over between them by itself.
 *
 * @example
 * const client = await connect('http://10.0.0.1:7700,http://10.0.0.2:7700,http://10.0.0.3:7700');
 * const same = await connect(['http://10.0.0.1:7700', 'http://10.0.0.2:7700'], { leaseTtlMs: 5_000 });
 */
export async function connect(endpoints: string | readonly string[], opts?: ClientOptions): Promise<SwitchboardClient>;
export async function connect(first: ClientOptions | string | readonly string[] = {}, more: ClientOptions = {}): Promise<SwitchboardClient> {
  if (typeof first === 'string' || Array.isArray(first)) return new SwitchboardClient({ ...more, endpoints: splitEndpoints(first as string | readonly string[]) });
  return new SwitchboardClient(first as ClientOptions);
}

/** The CAs of the `ca` and `caFile` options (or SWITCHBOARD_CA_FILE); null when none is given. */
function caOf(opts: ClientOptions): (string | Buffer)[] | null {
  const out: (string | Buffer)[] = [];
  if (opts.ca !== undefined) out.push(...(Array.isArray(opts.ca) ? (opts.ca as (string | Buffer)[]) : [opts.ca as string | Buffer]));
  const file = opts.caFile ?? (process.env.SWITCHBOARD_CA_FILE || undefined);
  if (file !== undefined) {
    const where = opts.caFile === undefined ? 'SWITCHBOARD_CA_FILE' : 'the caFile option';
    let pem: string;
    try {
      pem = readFileSync(file, 'utf8');
    } catch (err) {
      throw new RangeError(`${where}: cannot read ${file}: ${(err as Error).message}`);
    }
    if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new RangeError(`${where}: ${file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
    out.push(pem);
  }
  return out.length === 0 ? null : out;
}

/** @internal `a,b` or [`a`, `b,c`] as one list of endpoints. */
export function splitEndpoints(v: string | readonly string[]): string[] {
  return (typeof v === 'string' ? [v] : v).flatMap((s) => s.split(',')).map((s) => s.trim()).filter((s) => s !== '');
}

function invalid(field: string, detail: string, hint: string): InvalidArgumentError {
  return new InvalidArgumentError({ type: 'urn:switchboard:error:INVALID_ARGUMENT', title: 'Invalid argument', status: 400, code: 'INVALID_ARGUMENT', detail, hint, field });
}

/** Runs a protocol validator, turning its error into the SDK's typed one. */
function checked<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof SwitchboardError) throw new InvalidArgumentError(err.toProblem());
    throw err;
  }
}

/** The cache key of a view; undefined when it holds objects that cannot be compared. */
function viewKey(service: string, o: ServiceOptions): string | undefined {
  if (o.clock !== undefined || (o.balancer !== undefined && typeof o.balancer !== 'string')) return undefined;
  const norm = { ...o, tags: o.tags ? [...o.tags].sort() : undefined };
  return `${service}|${stableJson(norm)}`;
}

function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.keys(v)
      .sort()
      .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${stableJson((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

export type { LeaseChange };
