/**
 * The local view of a cp node: the registry as etcd holds it, loaded with one range read
 * and kept current by one etcd watch on the prefix. Each etcd revision becomes one entry of
 * the core Registry, numbered with etcd's revision, so that views, filters, health,
 * history and watch resume work as in standalone mode. The view never expires anything
 * itself: lease expiry is etcd's, and arrives as deletes.
 *
 * `progress` is the etcd revision up to which the view has applied every change. Events
 * move it forward, and so does a watch progress answer, on etcd releases that send it
 * only after every earlier event of the stream (`orderedProgress`). On older releases
 * (Debian's 3.4.23 among them) a progress answer can overtake queued events, so the view
 * learns "everything up to now" by writing its barrier key and waiting for that event:
 * events of one watch arrive in revision order.
 */
import type { DeleteReason, Limits, ServiceSettings } from '@switchboard/protocol';
import type * as RPC from 'etcd3';
import type { Clock } from '../../core/clock.js';
import type { Change, Entry } from '../../core/entry.js';
import { Registry, instanceKey, serviceKey } from '../../core/registry.js';
import { Hub } from '../hub.js';
import { barrierKeyOf, decodeJson, instanceKeyOf, leaseKeyOf, nodeKeyOf, parseKey, prefixEnd, settingsKeyOf, type Layout, type StoredInstance, type StoredLease, type StoredNode, type WhyValue } from './keys.js';
import type { Store } from './store.js';

/** How long a waiter gives the watch before the view writes a barrier (older etcd releases). */
const BARRIER_DELAY_MS = 20;
/** Longest wait for a watch stream to open before another may be started instead. */
const WATCH_OPEN_TIMEOUT_MS = 10_000;

export interface ViewOptions {
  layout: Layout;
  /** This node's id (its barrier key). */
  nodeId: string;
  /** The etcd release sends progress answers in order with events (progressAnswersAreOrdered). */
  orderedProgress: boolean;
  limits: Limits;
  clock: Clock;
  onLeaseEnded: (leaseId: string, reason: 'lease_expired' | 'lease_revoked') => void;
  onNodesChanged: () => void;
  onError: (msg: string, err?: unknown) => void;
}

interface ProgressWaiter {
  revision: number;
  resolve(): void;
}

export class View {
  readonly registry: Registry;
  readonly hub: Hub;
  /** Every change up to this etcd revision is applied. */
  progress: number;
  /** Live Switchboard nodes (their keys under nodes/). */
  readonly nodes = new Map<string, StoredNode>();
  /** Leases about to be revoked, and why (their deletes read lease_revoked or connection_lost). */
  private readonly revoking = new Map<string, 'lease_revoked' | 'connection_lost'>();
  /** A barrier write is in flight (at most one). */
  private barrierInFlight = false;
  private barriers = 0;
  /** The node's own etcd lease, once it has one: the barrier key goes with the node. */
  barrierLease: string | null = null;
  private stream: RPC.IDuplexStream<RPC.IWatchRequest, RPC.IWatchResponse> | null = null;
  private waiters: ProgressWaiter[] = [];
  private closed = false;
  private restarting: NodeJS.Timeout | null = null;
  /**
   * The stream being opened (startWatch waits for it; with etcd auth that can take seconds):
   * no second one is started meanwhile, unless it takes longer than WATCH_OPEN_TIMEOUT_MS.
   * A stream that opens after a newer one was asked for is cancelled (`openSeq`).
   */
  private openingAt: number | null = null;
  private openSeq = 0;
  /** A reload after compaction is under way: no second one. */
  private reloading = false;
  private progressTimer: NodeJS.Timeout | null = null;
  /** When the stream last delivered anything (performance.now()). */
  lastHeard = 0;
  watchRestarts = 0;
  /** Restarts since the stream last delivered anything (backoff, and one log line per outage). */
  private failuresInRow = 0;

  private constructor(
    private readonly store: Store,
    private readonly opts: ViewOptions,
    registry: Registry,
    revision: number,
  ) {
    this.registry = registry;
    this.progress = revision;
    this.hub = new Hub(opts.limits.retainedEvents, revision);
  }

  /**
   * Loads everything under the prefix and starts following it. To let watchers resume here
   * from positions before this node started, the state is read as it was up to
   * `retainedEvents` revisions ago (when etcd has not compacted them) and the revisions
   * since are replayed from etcd's history into the retained events. Resolves once the
   * view has caught up with etcd's current revision.
   */
  static async open(store: Store, opts: ViewOptions): Promise<View> {
    const { layout } = opts;
    const key = Buffer.from(layout.prefix);
    const range_end = prefixEnd(layout.prefix);
    const head = await store.range({ key, range_end, count_only: true });
    const current = Number(head.header.revision);
    let base = Math.max(1, current - opts.limits.retainedEvents);
    let res: RPC.IRangeResponse | null = null;
    if (base < current) {
      try {
        res = await store.range({ key, range_end, revision: base });
      } catch {
        res = null; // compacted: start from now, without history
      }
    }
    if (!res) {
      res = await store.range({ key, range_end });
      base = Number(res.header.revision);
    }
    const registry = new Registry({ epoch: res.header.cluster_id, limits: opts.limits, clock: opts.clock, wallClock: { now: () => Date.now() }, revision: base });
    const view = new View(store, opts, registry, base);
    const kvs = [...res.kvs];
    // Leases before the instances bound to them.
    const rank = (kv: RPC.IKeyValue): number => (parseKey(layout, kv.key.toString()).kind === 'lease' ? 0 : 1);
    kvs.sort((a, b) => rank(a) - rank(b));
    for (const kv of kvs) view.applyGroup(Number(kv.mod_revision), [{ type: 'Put', kv } as RPC.IEvent], false);
    view.startWatch();
    if (!(await view.waitFor(current, 30_000))) {
      view.close();
      throw new Error(`the watch did not replay etcd's history up to revision ${current} within 30 s`);
    }
    return view;
  }

  /** Resolves once the view has applied every change up to `revision` (false: timed out). */
  waitFor(revision: number, timeoutMs: number): Promise<boolean> {
    if (this.progress >= revision) return Promise.resolve(true);
    return new Promise((resolve) => {
      const w: ProgressWaiter = {
        revision,
        resolve: () => {
          clearTimeout(timer);
          resolve(true);
        },
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        resolve(false);
      }, timeoutMs);
      this.waiters.push(w);
      this.askProgress();
    });
  }

  /**
   * Asks etcd for a progress answer (etcd 3.4 answers when the stream's watchers are in
   * sync), repeated every 50 ms while someone waits for a revision the view has not seen.
   */
  private askProgress(): void {
    if (this.progressTimer || this.closed) return;
    const tick = (): void => {
      this.progressTimer = null;
      if (this.waiters.length === 0 || this.closed) return;
      if (this.opts.orderedProgress) {
        try {
          this.stream?.write({ progress_request: {} });
        } catch {
          /* the stream is being replaced */
        }
      } else this.writeBarrier();
      this.progressTimer = setTimeout(tick, 50);
    };
    // A barrier is a write, and the revision waited for is usually an event already on its
    // way (often another node's barrier): it is written only if that event has not arrived
    // after BARRIER_DELAY_MS. Writing at once made the nodes answer each other's barriers
    // with their own, a chain of writes for as long as consistent reads kept coming.
    if (this.opts.orderedProgress) tick();
    else this.progressTimer = setTimeout(tick, BARRIER_DELAY_MS);
  }

  /**
   * Writes this node's barrier key: its event, once the watch delivers it, proves that
   * every change up to its revision was delivered too (a waiter whose revision is newer
   * than the barrier's gets the next one).
   */
  private writeBarrier(): void {
    if (this.barrierInFlight || this.closed) return;
    this.barrierInFlight = true;
    this.barriers++;
    this.store
      .txn({ success: [{ request_put: { key: Buffer.from(barrierKeyOf(this.opts.layout, this.opts.nodeId)), value: Buffer.from(String(this.barriers)), ...(this.barrierLease !== null ? { lease: this.barrierLease } : {}) } }] })
      .catch(() => undefined)
      .finally(() => {
        this.barrierInFlight = false;
      });
  }

  /** Barrier writes since start (in /v1/status: how often progress had to be proven by a write). */
  get barrierWrites(): number {
    return this.barriers;
  }

  private advance(revision: number): void {
    if (revision <= this.progress) return;
    this.progress = revision;
    if (this.waiters.length === 0) return;
    const still: ProgressWaiter[] = [];
    for (const w of this.waiters) (w.revision <= revision ? (w.resolve(), null) : still.push(w));
    this.waiters = still;
  }

  private get opening(): boolean {
    return this.openingAt !== null && performance.now() - this.openingAt < WATCH_OPEN_TIMEOUT_MS;
  }

  private startWatch(): void {
    if (this.closed || this.opening) return;
    const seq = ++this.openSeq;
    this.openingAt = performance.now();
    this.store.client.watchClient
      .watch()
      .then((stream) => {
        if (seq === this.openSeq) this.openingAt = null;
        if (this.closed || seq !== this.openSeq) {
          // Closed, or a newer stream was asked for meanwhile: this one is not needed.
          stream.cancel();
          return;
        }
        // The newest stream asked for takes over from any older one still set (one that
        // opened late and failed while this one was being opened).
        if (this.stream !== null) {
          try {
            this.stream.cancel();
          } catch {
            /* gone */
          }
        }
        this.stream = stream;
        // From where the view is now (events may have been applied while the stream opened).
        const from = this.progress + 1;
        this.lastHeard = performance.now();
        stream.on('data', (res: RPC.IWatchResponse) => this.onResponse(stream, res));
        stream.on('error', (err: unknown) => this.restart(stream, 'watch stream failed', err));
        stream.on('end', () => this.restart(stream, 'watch stream ended'));
        stream.write({ create_request: { key: Buffer.from(this.opts.layout.prefix), range_end: prefixEnd(this.opts.layout.prefix), start_revision: from, prev_kv: false, progress_notify: true } });
      })
      .catch((err: unknown) => {
        if (seq !== this.openSeq) return;
        this.openingAt = null;
        this.restart(null, 'could not open the watch stream', err);
      });
  }

  /** Replaces the watch stream (it failed, or stopped answering: its endpoint may be cut off). */
  restart(stream: unknown, why: string, err?: unknown): void {
    if (this.closed || (stream !== null && stream !== this.stream) || this.restarting || this.opening) return;
    const old = this.stream;
    this.stream = null;
    try {
      old?.cancel();
    } catch {
      /* gone */
    }
    this.watchRestarts++;
    if (this.failuresInRow === 0) this.opts.onError(`${why}; watching again from revision ${this.progress + 1}`, err);
    const delay = Math.min(1000, 50 * 2 ** this.failuresInRow);
    this.failuresInRow++;
    this.restarting = setTimeout(() => {
      this.restarting = null;
      this.startWatch();
    }, delay);
  }

  private onResponse(stream: unknown, res: RPC.IWatchResponse): void {
    if (stream !== this.stream) return;
    this.lastHeard = performance.now();
    this.failuresInRow = 0;
    if (res.canceled) {
      const compacted = Number(res.compact_revision ?? 0);
      if (compacted > 0) {
        this.opts.onError(`etcd compacted revision ${compacted} before this node applied it; reloading the view`);
        void this.reload();
      } else {
        // etcd checks a watch's token when the watch is created: a token it no longer
        // knows (a member restarted, the token expired) needs a new one before watching again.
        // etcd 3.4 cancels such a watch with "permission denied" rather than "invalid auth token".
        if (/invalid auth token|permission denied/i.test(res.cancel_reason ?? '')) this.store.refreshAuthToken();
        this.restart(stream, `etcd cancelled the watch (${res.cancel_reason || 'no reason given'})`);
      }
      return;
    }
    const events = res.events ?? [];
    let i = 0;
    while (i < events.length) {
      const rev = Number((events[i] as RPC.IEvent).kv.mod_revision);
      let j = i;
      while (j < events.length && Number((events[j] as RPC.IEvent).kv.mod_revision) === rev) j++;
      // A revision the view has already applied (a reload went past it) is not applied twice.
      if (rev > this.progress) this.applyGroup(rev, events.slice(i, j), true);
      this.advance(rev);
      i = j;
    }
    // A progress answer (no events): its header is the revision the stream has delivered,
    // where etcd keeps that promise. The header of an answer with events may run ahead of
    // them (a watcher catching up gets its events in batches), and the one of a creation
    // answer is etcd's revision, not the watch's progress.
    if (this.opts.orderedProgress && events.length === 0 && !res.created && !res.fragment) this.advance(Number(res.header.revision));
  }

  /**
   * The watch could not resume (etcd compacted the revisions this node missed): everything
   * is read again and the difference applied as one entry at the read's revision.
   */
  private async reload(): Promise<void> {
    if (this.reloading) return;
    this.reloading = true;
    const { layout } = this.opts;
    try {
      const res = await this.store.range({ key: Buffer.from(layout.prefix), range_end: prefixEnd(layout.prefix) });
      const rev = Number(res.header.revision);
      // A reload that read an older state than the view holds now changes nothing.
      if (rev <= this.progress) {
        this.restart(this.stream, 'view reloaded');
        return;
      }
      const seen = new Set<string>();
      const events: RPC.IEvent[] = [];
      const gone = (key: string): void => void events.push({ type: 'Delete', kv: { key: Buffer.from(key), mod_revision: String(rev) } } as RPC.IEvent);
      for (const kv of res.kvs) {
        const key = kv.key.toString();
        const p = parseKey(layout, key);
        seen.add(key);
        if (p.kind === 'instance') {
          const have = this.registry.instance(p.namespace, p.service, p.id);
          if (have && have.instance.modRevision === Number(kv.mod_revision)) continue;
        }
        if (p.kind === 'lease' && this.registry.lease(p.leaseId)) continue;
        events.push({ type: 'Put', kv } as RPC.IEvent);
      }
      // Everything the view holds that etcd no longer has was deleted in the gap: instances,
      // leases (their sessions are told), nodes (the checks move) and settings.
      for (const svc of this.registry.listServices()) {
        for (const r of svc.instances.values()) {
          const key = instanceKeyOf(layout, r.instance.namespace, r.instance.service, r.instance.id);
          if (!seen.has(key)) gone(key);
        }
      }
      for (const l of this.registry.allLeases()) {
        const key = leaseKeyOf(layout, l.id);
        if (!seen.has(key)) gone(key);
      }
      for (const id of this.nodes.keys()) {
        const key = nodeKeyOf(layout, id);
        if (!seen.has(key)) gone(key);
      }
      for (const s of this.registry.allServiceSettings()) {
        const key = settingsKeyOf(layout, s.namespace, s.service);
        if (!seen.has(key)) gone(key);
      }
      if (events.length > 0) this.applyGroup(rev, events, true);
      // Watchers of this node positioned in the gap missed what happened there.
      this.hub.log.forgetThrough(rev);
      this.advance(rev);
      this.restart(this.stream, 'view reloaded');
    } catch (err) {
      this.restart(this.stream, 'reload failed', err);
    } finally {
      this.reloading = false;
    }
  }

  /** Applies the events of one etcd revision as one registry entry. */
  private applyGroup(revision: number, events: RPC.IEvent[], announce: boolean): void {
    const { layout } = this.opts;
    const grants: Change[] = [];
    const changes: Change[] = [];
    const ends: Change[] = [];
    const endedLeases = new Map<string, 'lease_expired' | 'lease_revoked' | 'connection_lost'>();
    const wake: string[] = [];
    let why: WhyValue = {};
    let at: number | undefined;
    let nodesChanged = false;
    const items = events.map((ev) => {
      const key = ev.kv.key.toString();
      return { ev, key, p: parseKey(layout, key) };
    });
    for (const { ev, p } of items) {
      if (p.kind === 'why' && ev.type === 'Put') why = decodeJson<WhyValue>(ev.kv.value) ?? {};
      if (p.kind === 'lease' && ev.type !== 'Put') endedLeases.set(p.leaseId, this.revoking.get(p.leaseId) ?? 'lease_expired');
    }
    for (const { ev, key, p } of items) {
      const put = ev.type === 'Put';
      switch (p.kind) {
        case 'instance': {
          if (put) {
            const v = decodeJson<StoredInstance>(ev.kv.value);
            if (!v) {
              this.opts.onError(`ignoring ${key}: its value is not a Switchboard instance`);
              break;
            }
            at ??= v.at;
            const instance = { ...v.instance, createRevision: Number(ev.kv.create_revision), modRevision: Number(ev.kv.mod_revision) };
            const change: Change = { op: 'put', instance, specs: v.specs, reason: v.reason };
            if (v.detail !== undefined) change.detail = v.detail;
            changes.push(change);
          } else {
            const rec = this.registry.instance(p.namespace, p.service, p.id);
            const ended = rec?.instance.leaseId ? endedLeases.get(rec.instance.leaseId) : undefined;
            const told = why[instanceKey(p.namespace, p.service, p.id)];
            const reason: DeleteReason = ended ?? told?.reason ?? 'deregistered';
            const detail = ended === 'connection_lost' ? `lease ${rec?.instance.leaseId}: its session closed without a hand-over` : ended ? `lease ${rec?.instance.leaseId}` : told?.detail;
            const change: Change = { op: 'delete', namespace: p.namespace, service: p.service, id: p.id, reason };
            if (detail !== undefined) change.detail = detail;
            changes.push(change);
          }
          break;
        }
        case 'lease': {
          if (put) {
            const v = decodeJson<StoredLease>(ev.kv.value);
            if (v?.revoking) this.revoking.set(p.leaseId, v.reason === 'connection_lost' ? 'connection_lost' : 'lease_revoked');
            else this.revoking.delete(p.leaseId); // a revocation that did not happen (the lease was resumed)
            if (!this.registry.lease(p.leaseId)) grants.push({ op: 'lease_grant', leaseId: p.leaseId, ttlMs: v?.ttlMs ?? 0 });
          } else {
            ends.push({ op: 'lease_end', leaseId: p.leaseId, reason: endedLeases.get(p.leaseId) === 'lease_revoked' ? 'lease_revoked' : 'lease_expired' });
          }
          break;
        }
        case 'settings': {
          const settings: ServiceSettings = put ? (decodeJson<ServiceSettings>(ev.kv.value) ?? { protectThreshold: null }) : { protectThreshold: null };
          changes.push({ op: 'settings', namespace: p.namespace, service: p.service, settings });
          wake.push(serviceKey(p.namespace, p.service));
          break;
        }
        case 'heard':
          // A ttl report heard through any node: the check's TTL starts again here too.
          if (put && announce) this.registry.heardCheck(p.namespace, p.service, p.id, p.checkId);
          break;
        case 'node': {
          if (put) {
            const v = decodeJson<StoredNode>(ev.kv.value);
            if (v) this.nodes.set(p.nodeId, v);
          } else this.nodes.delete(p.nodeId);
          nodesChanged = true;
          break;
        }
        default:
          break;
      }
    }
    const all = [...grants, ...changes, ...ends];
    if (all.length > 0) {
      const entry: Entry = { revision, changes: all, at: at ?? Date.now() };
      const out = this.registry.apply(entry);
      if (announce) {
        this.hub.publish(out, revision);
        if (wake.length > 0) this.hub.wake(wake);
      }
    }
    for (const [leaseId, reason] of endedLeases) {
      this.revoking.delete(leaseId);
      if (announce) this.opts.onLeaseEnded(leaseId, reason === 'lease_revoked' ? reason : 'lease_expired');
    }
    if (nodesChanged) this.opts.onNodesChanged();
  }

  /** Marks a lease as being revoked by this node (its deletes then read lease_revoked, or connection_lost). */
  markRevoking(leaseId: string, reason: 'lease_revoked' | 'connection_lost' = 'lease_revoked'): void {
    this.revoking.set(leaseId, reason);
  }

  close(): void {
    this.closed = true;
    if (this.restarting) clearTimeout(this.restarting);
    if (this.progressTimer) clearTimeout(this.progressTimer);
    try {
      this.stream?.cancel();
    } catch {
      /* gone */
    }
    this.stream = null;
    for (const w of this.waiters) w.resolve();
    this.waiters = [];
  }
}
