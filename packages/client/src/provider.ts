/**
 * The provider side: instances registered under the process's one lease. The registrar
 * keeps a desired state (every registered instance and its admin status) and one sync
 * loop makes the registry match it: after a new lease, a move to another node, or a
 * status change. Writes go to the node that keeps the lease alive (in ap mode that node
 * owns the process's records).
 */
import {
  DEFAULT_LIMITS,
  DEFAULT_NAMESPACE,
  SwitchboardError,
  validateInstanceId,
  validateInstanceInput,
  validateNamespace,
  validateServiceName,
  type AdminStatus,
  type CheckType,
  type Limits,
  type Protocol,
  type WriteResult,
} from '@switchboard/protocol';
import { Backoff, type BackoffOptions } from './backoff.js';
import { ClientClosedError, InstanceNotFoundError, InvalidArgumentError, LeaseNotFoundError, RegistryError } from './errors.js';
import { defaultAddress, defaultInstanceId } from './identity.js';
import type { LeaseChange, LeaseKeeper } from './lease.js';
import { isAccessError, isUnavailable, retryAfterOf, type AccessError, type RegistryHttp, type RequestSpec } from './registry-http.js';
import type { LeaseInfo, SessionWrite } from './session.js';
import { sleep } from './time.js';

/**
 * A check declared with an instance, in the registration body's form.
 *
 * @example
 * const check: CheckInput = { type: 'http', target: 'http://10.0.0.5:8080/health', interval: '10s' };
 */
export interface CheckInput {
  id?: string;
  type: CheckType;
  /** http: the URL to GET; tcp and grpc: `host:port` (default: the instance's). */
  target?: string;
  /** Duration like `10s`. */
  interval?: string;
  timeout?: string;
  /** ttl checks: how long a report stays valid. */
  ttl?: string;
}

/**
 * An instance to register, with the field names of api-v1.md.
 *
 * @example
 * await client.register({ service: 'orders', port: 8080, zone: 'eu-1', version: '1.4.2', tags: ['primary'] });
 */
export interface RegisterOptions {
  service: string;
  /** Default `<service>-<hostname>-<pid>[-n]` (see defaultInstanceId). */
  id?: string;
  /** Default: the client's namespace. */
  namespace?: string;
  /** Default: the first non-internal IPv4 address of the host, else 127.0.0.1 (see defaultAddress). */
  address?: string;
  port: number;
  zone?: string | null;
  version?: string | null;
  tags?: string[];
  metadata?: Record<string, string>;
  /** 0-10000, default 100. Weight 0 takes no traffic from SDK balancers. */
  weight?: number;
  protocol?: Protocol;
  checks?: CheckInput[];
}

/** Syntax only: the registry's limits are its own to judge (they are configurable). */
const SYNTAX_LIMITS: Limits = Object.fromEntries(Object.keys(DEFAULT_LIMITS).map((k) => [k, Number.MAX_SAFE_INTEGER])) as unknown as Limits;

/**
 * Most registration writes in flight at once while registering everything again (after a
 * new lease or a failover), so that a process with many instances does not flood a node.
 *
 * @example
 * console.log(`re-registration runs ${REREGISTER_CONCURRENCY} writes at a time`);
 */
export const REREGISTER_CONCURRENCY = 8;

interface Entry {
  key: string;
  namespace: string;
  service: string;
  id: string;
  body: Record<string, unknown>;
  /** The admin status we want the registry to hold. */
  status: AdminStatus;
  /** Under which lease and node the registry holds the current body, if it does. */
  syncedLease: string | null;
  syncedEndpoint: string | null;
  syncedStatus: AdminStatus | null;
  revision: number;
  /** The registry's refusal of the state last asked for; cleared when another is asked for. */
  refused: unknown;
  waiters: { resolve: () => void; reject: (e: unknown) => void }[];
  /** Serialises the writes of one instance (a DELETE never overtakes a PUT in flight). */
  chain: Promise<unknown>;
  handle: Registration;
}

/**
 * A registered instance. The SDK keeps it registered (across lease loss and failover)
 * until `deregister()` or `client.close()`.
 *
 * @example
 * const reg = await client.register({ service: 'orders', port: 8080 });
 * await reg.setStatus('out_of_service');
 * await reg.deregister();
 */
export class Registration {
  constructor(
    private readonly registrar: Registrar,
    readonly namespace: string,
    readonly service: string,
    readonly id: string,
  ) {}

  /** The revision of the last write of this instance. */
  get revision(): number {
    return this.registrar.entry(this)?.revision ?? 0;
  }

  /** The admin status this process asks for. */
  get status(): AdminStatus | null {
    return this.registrar.entry(this)?.status ?? null;
  }

  /** Sets the admin status (`up`, `draining`, `out_of_service`); kept across re-registration. */
  setStatus(status: AdminStatus, opts: { signal?: AbortSignal } = {}): Promise<void> {
    return this.registrar.setStatus(this, status, opts.signal);
  }

  /** Deregisters the instance now; the lease and other instances stay. */
  deregister(opts: { signal?: AbortSignal } = {}): Promise<void> {
    return this.registrar.deregister(this, opts.signal);
  }
}

/** @internal */
export interface RegistrarEvents {
  onReregistered(count: number, lease: LeaseInfo): void;
  onError(err: unknown): void;
}

/** @internal The desired registrations and the loop that writes them (see the file comment). */
export class Registrar {
  private readonly entries = new Map<string, Entry>();
  private readonly perService = new Map<string, number>();
  private closed = false;
  private looping = false;
  private kickLoop: () => void = () => undefined;
  private readonly stop = new AbortController();
  private settledWaiters: (() => void)[] = [];

  constructor(
    private readonly keeper: LeaseKeeper,
    private readonly http: RegistryHttp,
    private readonly namespace: string,
    private readonly backoffOpts: BackoffOptions,
    private readonly events: RegistrarEvents,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  /** Every registration held now (namespace, service, id). */
  targets(): { namespace: string; service: string; id: string }[] {
    return [...this.entries.values()].map((e) => ({ namespace: e.namespace, service: e.service, id: e.id }));
  }

  entry(r: Registration): Entry | undefined {
    const e = this.entries.get(keyOf(r.namespace, r.service, r.id));
    return e?.handle === r ? e : undefined;
  }

  /** Called by the client on every lease change. */
  onLeaseChange(change: LeaseChange): void {
    if (change.kind === 'resumed') return;
    for (const e of this.entries.values()) e.syncedLease = null;
    this.kick();
  }

  onLeaseLost(): void {
    for (const e of this.entries.values()) e.syncedLease = null;
    this.kick();
  }

  async register(opts: RegisterOptions, signal?: AbortSignal): Promise<Registration> {
    if (this.closed) throw new ClientClosedError();
    const { namespace, service, id, body } = this.prepare(opts);
    const key = keyOf(namespace, service, id);
    let e = this.entries.get(key);
    if (e) {
      e.body = body;
      e.syncedLease = null;
      e.refused = undefined;
    } else {
      const handle = new Registration(this, namespace, service, id);
      e = { key, namespace, service, id, body, status: 'up', syncedLease: null, syncedEndpoint: null, syncedStatus: null, revision: 0, refused: undefined, waiters: [], chain: Promise.resolve(), handle };
      this.entries.set(key, e);
    }
    const entry = e;
    const synced = new Promise<void>((resolve, reject) => entry.waiters.push({ resolve, reject }));
    this.kick();
    try {
      await abortable(synced, signal);
    } catch (err) {
      if (signal?.aborted && this.entries.get(key) === entry) await this.deregister(entry.handle).catch(() => undefined);
      throw err;
    }
    return entry.handle;
  }

  async deregister(r: Registration, signal?: AbortSignal): Promise<void> {
    const e = this.entry(r);
    if (!e) return;
    this.entries.delete(e.key);
    for (const w of e.waiters.splice(0)) w.reject(new ClientClosedError(`registration ${e.id}`));
    await this.exclusive(e, async () => {
      const path = instancePath(e);
      const lease = this.keeper.info;
      try {
        if (lease) await this.write(lease, { type: 'deregister', service: e.service, instanceId: e.id, namespace: e.namespace }, { method: 'DELETE', path, query: { namespace: e.namespace }, signal });
        else await this.http.any<WriteResult>({ method: 'DELETE', path, query: { namespace: e.namespace }, signal });
      } catch (err) {
        if (!(err instanceof InstanceNotFoundError)) throw err;
      }
    });
  }

  async setStatus(r: Registration, status: AdminStatus, signal?: AbortSignal): Promise<void> {
    const e = this.entry(r);
    if (!e) throw new InstanceNotFoundError({ type: 'about:blank', title: 'Instance not found', status: 404, code: 'INSTANCE_NOT_FOUND', detail: `${r.id} is not registered by this client` });
    // A refused status was recorded as written (so that it is not retried by itself): asked
    // for again, it is written again.
    if (e.refused !== undefined) e.syncedStatus = null;
    e.status = status;
    e.refused = undefined;
    this.kick();
    await this.flush(signal, [e]);
    // Refused (a status the registry does not take for this instance): say so.
    if (e.refused !== undefined) throw e.refused;
  }

  /** Marks every instance `draining`; resolves once the registry holds that (or on abort). */
  async drainAll(signal?: AbortSignal): Promise<void> {
    for (const e of this.entries.values()) e.status = 'draining';
    this.kick();
    await this.flush(signal);
  }

  /**
   * Ends everything: revokes the lease through the session (its instances go with it);
   * when that cannot be confirmed, deregisters each instance over REST.
   */
  async close(timeoutMs: number): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stop.abort(new ClientClosedError());
    this.kick();
    const entries = [...this.entries.values()];
    this.entries.clear();
    for (const e of entries) for (const w of e.waiters.splice(0)) w.reject(new ClientClosedError());
    const lease = this.keeper.info;
    const revoked = await this.keeper.close(true, timeoutMs);
    if (revoked || entries.length === 0) return;
    const signal = AbortSignal.timeout(timeoutMs);
    await Promise.allSettled(entries.map((e) => this.http.any({ method: 'DELETE', path: instancePath(e), query: { namespace: e.namespace }, signal })));
    if (lease) await this.http.any({ method: 'DELETE', path: `/v1/leases/${encodeURIComponent(lease.leaseId)}`, signal }).catch(() => undefined);
  }

  private prepare(opts: RegisterOptions): { namespace: string; service: string; id: string; body: Record<string, unknown> } {
    const { service: rawService, id: rawId, namespace: rawNs, ...fields } = opts;
    const body: Record<string, unknown> = { ...fields, address: fields.address ?? defaultAddress() };
    for (const k of Object.keys(body)) if (body[k] === undefined) delete body[k];
    let service: string, namespace: string, id: string;
    try {
      service = validateServiceName(rawService);
      namespace = validateNamespace(rawNs ?? this.namespace ?? DEFAULT_NAMESPACE);
      if (rawId === undefined) {
        const n = (this.perService.get(`${namespace}/${service}`) ?? 0) + 1;
        this.perService.set(`${namespace}/${service}`, n);
        id = defaultInstanceId(service, n);
      } else id = validateInstanceId(rawId, 'id');
      validateInstanceInput(body, SYNTAX_LIMITS);
    } catch (err) {
      if (err instanceof SwitchboardError) throw new InvalidArgumentError(err.toProblem());
      throw err;
    }
    return { namespace, service, id, body };
  }

  private kick(): void {
    this.kickLoop();
    if (!this.looping && !this.closed && this.entries.size > 0) {
      this.looping = true;
      this.keeper.start();
      void this.loop().finally(() => (this.looping = false));
    }
  }

  private pending(lease: LeaseInfo): Entry[] {
    return [...this.entries.values()].filter((e) => e.syncedLease !== lease.leaseId || e.syncedEndpoint !== lease.endpoint || e.syncedStatus !== e.status);
  }

  private async loop(): Promise<void> {
    const backoff = new Backoff(this.backoffOpts);
    while (!this.closed && this.entries.size > 0) {
      let lease: LeaseInfo;
      try {
        lease = await this.keeper.current(this.stop.signal);
      } catch (err) {
        if (isAccessError(err)) this.refuseAll(err);
        return;
      }
      // A node that asked us to wait (429 or 503 with Retry-After) is not written to before that.
      const cooling = this.http.endpoints.coolingMs(lease.endpoint);
      if (cooling > 0 && this.pending(lease).length > 0) {
        try {
          await sleep(cooling, this.stop.signal);
        } catch {
          return;
        }
        continue;
      }
      const todo = this.pending(lease);
      if (todo.length === 0) {
        this.notifySettled();
        await new Promise<void>((resolve) => (this.kickLoop = resolve));
        continue;
      }
      // Instances written before and now written again (new lease or another node).
      const again = todo.filter((e) => e.revision > 0 && (e.syncedLease !== lease.leaseId || e.syncedEndpoint !== lease.endpoint)).length;
      let ok = true;
      for (let i = 0; i < todo.length && ok; i += REREGISTER_CONCURRENCY) {
        const results = await Promise.all(todo.slice(i, i + REREGISTER_CONCURRENCY).map((e) => this.sync(e, lease)));
        ok = results.every(Boolean);
      }
      if (ok) {
        backoff.reset();
        if (again > 0) this.events.onReregistered(again, lease);
      } else {
        try {
          await sleep(backoff.next(), this.stop.signal);
        } catch {
          return;
        }
      }
    }
    this.notifySettled();
  }

  /** The registry refused the token or its certificate cannot be verified (no lease can be had): every waiting registration rejects with it; those never accepted are dropped. */
  private refuseAll(err: AccessError): void {
    for (const e of [...this.entries.values()]) {
      for (const w of e.waiters.splice(0)) w.reject(err);
      if (e.revision === 0) this.entries.delete(e.key);
    }
  }

  /** Writes one instance (and its status) under the lease; false when the round must stop. */
  private async sync(e: Entry, lease: LeaseInfo): Promise<boolean> {
    try {
      await this.exclusive(e, async () => {
        if (this.entries.get(e.key) !== e) return;
        const query = { namespace: e.namespace };
        if (e.syncedLease !== lease.leaseId || e.syncedEndpoint !== lease.endpoint) {
          const instance = { ...e.body, leaseId: lease.leaseId };
          const res = await this.write(lease, { type: 'register', service: e.service, instanceId: e.id, namespace: e.namespace, instance }, { method: 'PUT', path: instancePath(e), query, body: instance, signal: this.stop.signal });
          e.revision = res.revision;
          e.syncedLease = lease.leaseId;
          e.syncedEndpoint = lease.endpoint;
          // A new record starts `up`; any other wanted status is written again below.
          e.syncedStatus = e.status === 'up' ? 'up' : null;
        }
        if (e.syncedStatus !== e.status) {
          const status = e.status;
          const res = await this.http.call<WriteResult>(lease.endpoint, { method: 'PUT', path: `${instancePath(e)}/status`, query, body: { status }, signal: this.stop.signal });
          e.revision = res.body.revision;
          e.syncedStatus = status;
        }
      });
      if (e.syncedStatus === e.status && e.syncedLease === lease.leaseId) for (const w of e.waiters.splice(0)) w.resolve();
      return true;
    } catch (err) {
      if (this.closed) return false;
      if (err instanceof LeaseNotFoundError) this.keeper.invalidate(lease.leaseId);
      else if (err instanceof RegistryError && err.code === 'RATE_LIMITED') {
        // A busy node, not a broken one: the round is repeated after its Retry-After, with
        // the same session (ending it would put the lease, and every instance, at risk).
      } else if (isUnavailable(err)) this.keeper.nodeFailed(lease.endpoint);
      else if (err instanceof InstanceNotFoundError) {
        // A status write for an instance the registry no longer holds (someone deleted it):
        // the next round registers it again, then writes its status.
        e.syncedLease = null;
      } else if (err instanceof RegistryError) {
        // The registry refuses this state of the instance (a limit, a field, a status):
        // report it to whoever waits and do not retry it until another state is asked for;
        // an instance that was never accepted is dropped.
        for (const w of e.waiters.splice(0)) w.reject(err);
        e.refused = err;
        if (e.revision === 0) this.entries.delete(e.key);
        else {
          e.syncedLease = lease.leaseId;
          e.syncedEndpoint = lease.endpoint;
          e.syncedStatus = e.status;
        }
        this.events.onError(err);
        return true;
      }
      this.events.onError(err);
      return false;
    }
  }

  /**
   * A write to the lease's node: over the session that keeps the lease alive when it can
   * carry it (docs/api.md, "Requests over the session"), else the REST request `rest`.
   * Both fail alike (RegistryError for a refusal, which may ask the client to wait).
   */
  private async write(lease: LeaseInfo, write: SessionWrite, rest: RequestSpec): Promise<WriteResult> {
    const sent = this.keeper.request(lease, write, this.http.requestTimeoutMs, rest.signal);
    if (sent === null) return (await this.http.call<WriteResult>(lease.endpoint, rest)).body;
    try {
      return await sent;
    } catch (err) {
      // A session's own limits say nothing about the node: other calls to it go on.
      const limit = err instanceof RegistryError ? err.problem.limit : undefined;
      if (limit !== 'sessionMaxInflightRequests' && limit !== 'sessionMaxBufferedBytes') this.http.endpoints.coolDown(lease.endpoint, retryAfterOf(err));
      // A deregistration is not retried by the registrar (its entry is gone): one that the
      // session could not confirm (it ended, timed out) is sent again over REST, to any
      // node. Idempotent: an instance already gone answers INSTANCE_NOT_FOUND.
      if (write.type === 'deregister' && isUnavailable(err) && !rest.signal?.aborted) return (await this.http.any<WriteResult>(rest)).body;
      throw err;
    }
  }

  private exclusive<T>(e: Entry, op: () => Promise<T>): Promise<T> {
    const run = e.chain.then(op, op);
    e.chain = run.catch(() => undefined);
    return run;
  }

  /** Resolves once every (given) instance is in sync with the registry. */
  private async flush(signal?: AbortSignal, only?: Entry[]): Promise<void> {
    for (;;) {
      const lease = this.keeper.info;
      const left = (only ?? [...this.entries.values()]).filter((e) => this.entries.get(e.key) === e && (!lease || e.syncedLease !== lease.leaseId || e.syncedStatus !== e.status));
      if (left.length === 0 || this.closed) return;
      await abortable(new Promise<void>((resolve) => this.settledWaiters.push(resolve)), signal);
    }
  }

  private notifySettled(): void {
    const w = this.settledWaiters;
    this.settledWaiters = [];
    for (const f of w) f();
  }
}

function keyOf(namespace: string, service: string, id: string): string {
  return `${namespace}/${service}/${id}`;
}

function instancePath(e: { service: string; id: string }): string {
  return `/v1/services/${e.service}/instances/${encodeURIComponent(e.id)}`;
}

function abortable<T>(p: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}
