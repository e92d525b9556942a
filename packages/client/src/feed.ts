/**
 * A ServiceFeed is the client's live copy of one service (all its instances, unfiltered),
 * shared by every view of that service. It lists the service, then follows the watch
 * stream of the same node:
 *   - the list answers the service's revision R; the watch resumes after `<epoch>:R`, and
 *     only events with a revision above the last list are applied;
 *   - a lost stream resumes with Last-Event-ID (the last `id:` seen), on the same node or,
 *     failing that, on the next endpoint; a node of another epoch answers `reset`;
 *   - `reset` relists from the node that sent it, and the stream goes on;
 *   - when no node answers, the last known instances stay (stale-if-error);
 *   - a relist that comes back empty from a node of another epoch (a registry restarted
 *     without its data, or a failover to a node that has not seen the providers yet) does
 *     not empty the view at once: the old instances are held, marked stale, until the
 *     service has instances again or `emptyViewGraceMs` passes.
 */
import { request } from 'undici';
import { createParser, type EventSourceMessage } from 'eventsource-parser';
import { parseEventId, type Instance, type Problem, type NodeStatus, type ResetEvent, type ServiceAnswer, type WatchEvent } from '@switchboard/protocol';
import { Backoff, type BackoffOptions } from './backoff.js';
import { ProtocolError, RegistryUnavailableError, TimeoutError, registryError } from './errors.js';
import { isAccessError, queryString, retryAfterHeader, retryAfterOf, tlsErrorOf, type AccessError, type Endpoints, type RegistryHttp } from './registry-http.js';
import { readSnapshot, writeSnapshot } from './snapshot.js';
import { throwLater } from './emitter.js';
import { sleep, unrefTimer } from './time.js';

/** @internal One change of the feed's published state. */
export interface FeedChange {
  type: 'put' | 'delete';
  instance: Instance;
  previous: Instance | undefined;
  revision: number;
  reason?: string;
}

/** @internal */
export interface FeedListener {
  onChanges(changes: readonly FeedChange[]): void;
  onStale(stale: boolean, cause?: unknown): void;
}

/** @internal */
export interface FeedOptions {
  namespace: string;
  service: string;
  endpoints: Endpoints;
  http: RegistryHttp;
  backoff: BackoffOptions;
  cacheDir: string | undefined;
  /** A stream silent this long is taken for dead (the registry sends a comment every 15 s). */
  watchIdleTimeoutMs: number;
  /** How long an empty relist from another epoch may keep the last known instances. */
  emptyViewGraceMs: number;
  /** Least time between two snapshot writes of one service. */
  snapshotIntervalMs: number;
  onError: (err: unknown) => void;
}

/** A stream shorter than this counts as a failure for backoff (no hot reconnect loop). */
const MIN_HEALTHY_STREAM_MS = 1_000;

/** @internal The live copy of one service, shared by its views (see the file comment). */
export class ServiceFeed {
  /** The registry's state as this client knows it. */
  private state = new Map<string, Instance>();
  /** While set, what views see instead of an (empty) state from a new epoch. */
  private held: Map<string, Instance> | null = null;
  private holdTimer: NodeJS.Timeout | undefined;
  private epoch: string | null = null;
  /** The service revision of the last list: events at or below it are already in the state. */
  private floor = 0;
  /** The revision to resume after (Last-Event-ID). */
  private position = 0;
  private needList = true;
  private disconnected = true;
  private staleFlag = false;
  private loaded = false;
  private readyWaiters: { resolve: () => void; reject: (err: unknown) => void }[] = [];
  /** The registry refused the client's token, or its certificate cannot be verified: the feed stops, and whenReady rejects with it. */
  private failure: AccessError | null = null;
  private readonly listeners = new Set<FeedListener>();
  private closed = false;
  private readonly stop = new AbortController();
  private running: Promise<void> = Promise.resolve();
  private snapshotTimer: NodeJS.Timeout | undefined;
  private snapshotDirty = false;
  private lastSnapshotAt = 0;
  private snapshotWrite: Promise<void> = Promise.resolve();
  /** Where the live stream is, for diagnostics. */
  endpoint: string | null = null;

  constructor(readonly opts: FeedOptions) {}

  start(): void {
    this.running = this.run().catch((err) => {
      if (!this.closed) this.opts.onError(err);
    });
  }

  /** The published instances (the last known ones while held or disconnected). */
  get instances(): ReadonlyMap<string, Instance> {
    return this.held ?? this.state;
  }

  get stale(): boolean {
    return this.staleFlag;
  }

  get isReady(): boolean {
    return this.loaded;
  }

  subscribe(l: FeedListener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  get subscribers(): number {
    return this.listeners.size;
  }

  /**
   * Resolves once the feed has instances to serve (from the registry or a snapshot); rejects
   * when `signal` aborts first (and forgets the waiter).
   */
  whenReady(signal?: AbortSignal): Promise<void> {
    if (this.loaded) return Promise.resolve();
    if (this.failure) return Promise.reject(this.failure);
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: (): void => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
        reject: (err: unknown): void => {
          signal?.removeEventListener('abort', onAbort);
          reject(err);
        },
      };
      const onAbort = (): void => {
        const i = this.readyWaiters.indexOf(waiter);
        if (i >= 0) this.readyWaiters.splice(i, 1);
        reject(signal!.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.readyWaiters.push(waiter);
    });
  }

  /** Callers waiting in whenReady (for tests and diagnostics). */
  get readyWaiting(): number {
    return this.readyWaiters.length;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stop.abort();
    clearTimeout(this.holdTimer);
    clearTimeout(this.snapshotTimer);
    await this.running;
    if (this.snapshotDirty) this.writeSnapshotNow();
    await this.snapshotWrite;
  }

  private async run(): Promise<void> {
    if (this.opts.cacheDir) await this.loadSnapshot(this.opts.cacheDir);
    const backoff = new Backoff(this.opts.backoff);
    const { endpoints } = this.opts;
    while (!this.closed) {
      let last: unknown;
      let streamed = false;
      for (const endpoint of endpoints.order()) {
        if (this.closed) return;
        if (endpoints.coolingMs(endpoint) > 0) {
          // It asked us to wait (Retry-After): the next round waits for it.
          last ??= new Error(`${endpoint} asked to retry later`);
          continue;
        }
        const started = performance.now();
        try {
          await this.stream(endpoint);
          streamed = performance.now() - started >= MIN_HEALTHY_STREAM_MS;
          if (streamed) break;
        } catch (err) {
          if (this.closed) return;
          if (isAccessError(err)) return this.fail(err);
          last = err;
          endpoints.failed(endpoint);
        }
      }
      if (this.closed) return;
      if (streamed) {
        backoff.reset();
        continue; // reconnect at once, to the same node first
      }
      if (last !== undefined) {
        // A whole round failed: serve the last known instances and say they are stale.
        this.setDisconnected(true, last);
        this.opts.onError(new RegistryUnavailableError(endpoints.list, last, `watch of ${this.opts.service}: no registry endpoint answered (${last instanceof Error ? last.message : String(last)})`));
      }
      try {
        await sleep(Math.max(backoff.next(), endpoints.waitMs()), this.stop.signal);
      } catch {
        return;
      }
    }
  }

  /** A refused token or an unverified certificate is not retried: waiters get the error, listeners hear it once. */
  private fail(err: AccessError): void {
    this.failure = err;
    for (const w of this.readyWaiters.splice(0)) w.reject(err);
    this.opts.onError(err);
  }

  /** One watch stream on one node: relist if needed, then apply events until it ends. */
  private async stream(endpoint: string): Promise<void> {
    const ac = new AbortController();
    const onStop = (): void => ac.abort();
    this.stop.signal.addEventListener('abort', onStop, { once: true });
    let idle: NodeJS.Timeout | undefined;
    const armIdle = (): void => {
      clearTimeout(idle);
      idle = unrefTimer(() => ac.abort(new TimeoutError('watch stream (idle)', this.opts.watchIdleTimeoutMs)), this.opts.watchIdleTimeoutMs);
    };
    try {
      armIdle();
      if (this.needList) await this.relist(endpoint, ac.signal, null, 0);
      const res = await this.openWatch(endpoint, ac.signal);
      this.endpoint = endpoint;
      this.opts.endpoints.succeeded(endpoint);
      this.setDisconnected(false);
      const queue: EventSourceMessage[] = [];
      const parser = createParser({ onEvent: (m) => queue.push(m) });
      const decoder = new TextDecoder();
      for await (const chunk of res.body) {
        armIdle();
        parser.feed(decoder.decode(chunk as Buffer, { stream: true }));
        // One event at a time: a relist pauses reading (TCP backpressure holds the rest).
        while (queue.length > 0) await this.handle(queue.shift() as EventSourceMessage, endpoint, ac.signal);
      }
    } catch (err) {
      if (this.closed) return;
      // A stream that was established and then broke is a normal end (reconnect); a
      // failure before it was established is the caller's to count.
      if (this.endpoint !== endpoint || !(ac.signal.aborted || isStreamError(err))) throw err;
    } finally {
      clearTimeout(idle);
      this.stop.signal.removeEventListener('abort', onStop);
      ac.abort();
      if (this.endpoint === endpoint) this.endpoint = null;
    }
  }

  private async openWatch(endpoint: string, signal: AbortSignal) {
    const { service, namespace } = this.opts;
    const q = queryString({ service, namespace, fromRevision: this.position + 1, epoch: this.epoch ?? undefined });
    const res = await request(`${endpoint}/v1/watch${q}`, {
      method: 'GET',
      dispatcher: this.opts.http.dispatcher,
      signal,
      headers: { accept: 'text/event-stream', ...this.opts.http.authHeaders, ...(this.epoch !== null ? { 'last-event-id': `${this.epoch}:${this.position}` } : {}) },
    }).catch((err: unknown) => {
      throw tlsErrorOf(err, endpoint) ?? err;
    });
    if (res.statusCode !== 200) {
      const text = await res.body.text().catch(() => '');
      let problem: unknown;
      try {
        problem = JSON.parse(text);
      } catch {
        throw new ProtocolError(`${endpoint} answered the watch with ${res.statusCode}`);
      }
      const p = { ...(problem as Problem), status: res.statusCode };
      const header = retryAfterHeader(res.headers['retry-after']);
      if (p.retryAfterSec === undefined && header !== undefined) p.retryAfterSec = header;
      const err = registryError(p, endpoint);
      this.opts.endpoints.coolDown(endpoint, retryAfterOf(err));
      throw err;
    }
    return res;
  }

  private async handle(m: EventSourceMessage, endpoint: string, signal: AbortSignal): Promise<void> {
    const id = m.id ? parseEventId(m.id) : undefined;
    if (m.event === 'reset') {
      const r = JSON.parse(m.data) as ResetEvent;
      await this.relist(endpoint, signal, r.epoch, r.revision);
      return;
    }
    if (m.event !== 'put' && m.event !== 'delete') return;
    const ev = JSON.parse(m.data) as WatchEvent;
    if (ev.epoch !== this.epoch) {
      // The node's numbering changed under us (it should have said reset): start over.
      await this.relist(endpoint, signal, null, 0);
      return;
    }
    if (ev.service === this.opts.service && ev.namespace === this.opts.namespace && ev.revision > this.floor) this.apply(ev);
    if (id && id.epoch === this.epoch) this.position = Math.max(this.position, id.revision);
  }

  private apply(ev: WatchEvent): void {
    const previous = this.state.get(ev.instance.id);
    if (ev.type === 'put') this.state.set(ev.instance.id, ev.instance);
    else if (previous) this.state.delete(ev.instance.id);
    else return;
    if (this.held) {
      if (this.state.size > 0) this.releaseHold();
      return;
    }
    const change: FeedChange = { type: ev.type, instance: ev.instance, previous, revision: ev.revision };
    if (ev.reason !== undefined) change.reason = ev.reason;
    this.emit([change]);
  }

  /**
   * Lists the service from `endpoint` and replaces the state with the answer. `epoch` is
   * known after a reset (the node just said it); otherwise the node's status tells it.
   */
  private async relist(endpoint: string, signal: AbortSignal, epoch: string | null, atLeast: number): Promise<void> {
    const { http, service, namespace } = this.opts;
    if (epoch === null) epoch = (await http.call<NodeStatus>(endpoint, { method: 'GET', path: '/v1/status', signal })).body.epoch;
    const answer = (await http.call<ServiceAnswer>(endpoint, { method: 'GET', path: `/v1/services/${service}`, query: { namespace }, signal })).body;
    if (!answer || !Array.isArray(answer.instances) || typeof answer.revision !== 'number') throw new ProtocolError(`${endpoint} answered the list of ${service} with an unexpected body`);
    const before = this.instances;
    const epochChanged = this.epoch !== null && this.epoch !== epoch;
    this.state = new Map(answer.instances.map((i) => [i.id, i]));
    this.epoch = epoch;
    this.floor = answer.revision;
    this.position = Math.max(answer.revision, atLeast);
    this.needList = false;
    if (this.held) {
      if (this.state.size > 0) this.releaseHold();
    } else if (epochChanged && this.state.size === 0 && before.size > 0) {
      this.hold(before as Map<string, Instance>);
    } else {
      this.emit(diff(before, this.state, answer.revision));
    }
    this.markLoaded();
  }

  private hold(previous: Map<string, Instance>): void {
    this.held = previous;
    this.updateStale();
    this.holdTimer = unrefTimer(() => this.releaseHold(), this.opts.emptyViewGraceMs);
  }

  private releaseHold(): void {
    const held = this.held;
    if (!held) return;
    clearTimeout(this.holdTimer);
    this.held = null;
    this.emit(diff(held, this.state, this.floor));
    this.updateStale();
  }

  private async loadSnapshot(dir: string): Promise<void> {
    const snap = await readSnapshot(dir, this.opts.namespace, this.opts.service);
    if (!snap || this.loaded) return;
    const before = this.state;
    this.state = new Map(snap.instances.map((i) => [i.id, i]));
    this.epoch = snap.epoch;
    this.floor = snap.revision;
    this.position = snap.revision;
    this.needList = true; // a snapshot is never trusted as a resume point: relist first
    this.emit(diff(before, this.state, snap.revision), false);
    this.markLoaded();
    this.updateStale(new Error(`serving the snapshot saved at ${snap.savedAt} until a registry answers`));
  }

  private markLoaded(): void {
    if (this.loaded) return;
    this.loaded = true;
    for (const w of this.readyWaiters.splice(0)) w.resolve();
  }

  private setDisconnected(v: boolean, cause?: unknown): void {
    this.disconnected = v;
    this.updateStale(cause);
  }

  private updateStale(cause?: unknown): void {
    // Nothing is stale before there is something to serve (ready() is pending then).
    const stale = this.loaded && (this.disconnected || this.held !== null);
    if (stale === this.staleFlag) return;
    this.staleFlag = stale;
    for (const l of this.listeners) {
      try {
        l.onStale(stale, cause);
      } catch (err) {
        throwLater(err);
      }
    }
  }

  private emit(changes: FeedChange[], persist = true): void {
    if (changes.length === 0) return;
    // Every view hears of every change, whatever another one's listener does.
    for (const l of this.listeners) {
      try {
        l.onChanges(changes);
      } catch (err) {
        throwLater(err);
      }
    }
    if (persist) this.scheduleSnapshot();
  }

  private scheduleSnapshot(): void {
    if (!this.opts.cacheDir) return;
    this.snapshotDirty = true;
    if (this.snapshotTimer) return;
    const wait = Math.max(0, this.lastSnapshotAt + this.opts.snapshotIntervalMs - performance.now());
    this.snapshotTimer = unrefTimer(() => {
      this.snapshotTimer = undefined;
      this.writeSnapshotNow();
    }, wait);
  }

  private writeSnapshotNow(): void {
    const dir = this.opts.cacheDir;
    if (!dir) return;
    this.snapshotDirty = false;
    this.lastSnapshotAt = performance.now();
    const snap = {
      format: 1 as const,
      namespace: this.opts.namespace,
      service: this.opts.service,
      epoch: this.epoch,
      revision: this.position,
      savedAt: new Date().toISOString(),
      instances: [...this.instances.values()],
    };
    // Writes are chained: a slow disk never has two renames racing for one file.
    this.snapshotWrite = this.snapshotWrite.then(() => writeSnapshot(dir, snap)).catch((err) => this.opts.onError(err));
  }
}

/** @internal Changes that turn `before` into `after`. */
export function diff(before: ReadonlyMap<string, Instance>, after: ReadonlyMap<string, Instance>, revision: number): FeedChange[] {
  const out: FeedChange[] = [];
  for (const [id, prev] of before) {
    if (!after.has(id)) out.push({ type: 'delete', instance: prev, previous: prev, revision, reason: 'relisted' });
  }
  for (const [id, inst] of after) {
    const prev = before.get(id);
    if (prev === undefined || !sameInstance(prev, inst)) out.push({ type: 'put', instance: inst, previous: prev, revision });
  }
  return out;
}

function sameInstance(a: Instance, b: Instance): boolean {
  // Revisions are per node epoch: after a failover the same numbers may name another
  // record, so the lease and creation revision are compared too.
  return a === b || (a.modRevision === b.modRevision && a.createRevision === b.createRevision && a.leaseId === b.leaseId && a.status === b.status && a.health === b.health && a.address === b.address && a.port === b.port && a.weight === b.weight && a.zone === b.zone && a.version === b.version);
}

function isStreamError(err: unknown): boolean {
  return err instanceof Error && (err.name === 'AbortError' || 'code' in err || err.name === 'SocketError' || err.name === 'TimeoutError');
}
