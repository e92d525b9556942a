/**
 * The dashboard's live picture of one namespace, kept current by one watch stream.
 *
 * Lists come from the REST reads; the stream (GET /v1/watch, every service of the
 * namespace on one connection, so one tab holds one of the node's watch streams) tells
 * what changed. The open service's instances are patched event by event; the service list,
 * whose counts an event alone cannot update, is read again (coalesced). The stream resumes
 * with Last-Event-ID after a drop; a `reset`, an event of another epoch or a refused
 * position relists everything. While the registry cannot be reached, the last data stays
 * on screen, marked stale, and the stream is retried with backoff.
 */
import { ApiError, UNREACHABLE, api, authHeaders, needsToken, problemOf, readSse, type Instance, type NodeStatus, type ResetEvent, type ServiceSummary, type WatchEvent } from './api';

/** Events kept for the live event view (newest first); older ones are dropped. */
export const MAX_FEED_EVENTS = 500;
/** Revisions replayed into the event view when the page opens, so it starts with recent history. */
export const FEED_BACKLOG_REVISIONS = 200;
/** Reconnect backoff after a failed attempt: first and longest wait. */
export const RETRY_MIN_MS = 500;
export const RETRY_MAX_MS = 5_000;
/** A stream silent for this long (the node sends a keep-alive every 15 s) is dead. */
export const STREAM_SILENCE_MS = 40_000;
/** A stream that lived shorter than this is reconnected with backoff, not at once. */
export const STREAM_MIN_LIFE_MS = 5_000;
/** A tab hidden this long gives its watch stream back; it reconnects and relists when shown. */
export const HIDDEN_RELEASE_MS = 60_000;
/** How often node status (cluster view, header) is read. */
export const STATUS_EVERY_MS = 2_000;
/** Shortest gap between two reads of the service list while events stream in. */
export const LIST_COALESCE_MS = 150;
/**
 * Stream events are applied together, at most this long after the first of them: a burst
 * (a deploy registering thousands of instances) makes one update of the page per batch,
 * not one per event, each of which copied the open service's instances.
 */
export const EVENT_BATCH_MS = 50;

export type Connection = 'connecting' | 'live' | 'unreachable';

export interface FeedEntry {
  key: number;
  receivedAt: number;
  /** Replayed from before the page opened (its time of change is unknown). */
  earlier: boolean;
  ev: WatchEvent;
}

export interface ServiceView {
  name: string;
  loading: boolean;
  error: ApiError | null;
  /** The revision the instances reflect (the service's last change). */
  revision: number;
  /** The revision of the last list answer: older events are already in it. */
  listedRevision: number;
  instances: Map<string, Instance>;
  /** Last revision at which each instance (present or gone) changed, for history refreshes. */
  changedAt: Map<string, number>;
  /** Instances removed while the view was open: id to the delete event. */
  gone: Map<string, WatchEvent>;
}

export interface State {
  namespace: string;
  connection: Connection;
  /** Why the registry is unreachable, in a few words. */
  problem: string | null;
  /** The node answered but refused the stream (a limit, shutting down): it is reachable. */
  refused: boolean;
  /** The node requires a token and has none it accepts from this page (401). */
  needsToken: boolean;
  /** When the next attempt is due (unreachable), epoch ms. */
  retryAt: number | null;
  /** Last moment the registry answered anything, epoch ms. */
  lastContact: number | null;
  epoch: string | null;
  status: NodeStatus | null;
  services: ServiceSummary[] | null;
  servicesError: ApiError | null;
  /** The store revision the service list reflects. */
  servicesRevision: number;
  service: ServiceView | null;
  feed: FeedEntry[];
  eventsReceived: number;
  lastEventAt: number | null;
}

type Listener = () => void;

const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    }, { once: true });
  });

export class LiveRegistry {
  private state: State;
  private readonly listeners = new Set<Listener>();
  private run = new AbortController();
  private wake = new AbortController();
  private lastEventId: string | null = null;
  /** Ends the current stream (a silent stream, or a status read that got no answer). */
  private streamAbort: AbortController | null = null;
  private feedKey = 0;
  /** Events up to this revision were replayed on opening (0: none yet, or another epoch). */
  private backlogUpTo = 0;
  private backlogAsked = false;
  /** The tab has been hidden long enough that its stream was given back. */
  private released = false;
  private hiddenTimer: ReturnType<typeof setTimeout> | null = null;
  private onShown: (() => void) | null = null;
  private listTimer: ReturnType<typeof setTimeout> | null = null;
  private listInFlight = false;
  private listAgain = false;
  private serviceLoad: AbortController | null = null;
  /** Events of the open service that arrive while it is being listed. */
  private pending: WatchEvent[] = [];
  /** Stream events not applied yet (EVENT_BATCH_MS). */
  private incoming: WatchEvent[] = [];
  private incomingTimer: ReturnType<typeof setTimeout> | null = null;
  private closeTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(namespace: string) {
    this.state = {
      namespace,
      connection: 'connecting',
      problem: null,
      refused: false,
      needsToken: false,
      retryAt: null,
      lastContact: null,
      epoch: null,
      status: null,
      services: null,
      servicesError: null,
      servicesRevision: 0,
      service: null,
      feed: [],
      eventsReceived: 0,
      lastEventAt: null,
    };
  }

  getState = (): State => this.state;

  subscribe = (l: Listener): (() => void) => {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  };

  private set(patch: Partial<State>): void {
    this.state = { ...this.state, ...patch };
    for (const l of this.listeners) l();
  }

  start(): void {
    this.run = new AbortController();
    const signal = this.run.signal;
    document.addEventListener('visibilitychange', this.onVisibility);
    void this.watchLoop(signal);
    void this.statusLoop(signal);
  }

  stop(): void {
    document.removeEventListener('visibilitychange', this.onVisibility);
    if (this.hiddenTimer) clearTimeout(this.hiddenTimer);
    this.onShown?.();
    this.run.abort();
    this.serviceLoad?.abort();
    if (this.listTimer) clearTimeout(this.listTimer);
    if (this.incomingTimer) clearTimeout(this.incomingTimer);
    this.incoming = [];
    if (this.closeTimer) clearTimeout(this.closeTimer);
  }

  /** Retry at once instead of waiting for the backoff (the banner's button). */
  retryNow(): void {
    this.wake.abort();
  }

  // ---- hidden tabs ----

  /**
   * A browser keeps few connections per host (six over HTTP/1.1) and a node counts its
   * watch streams: a tab left in the background stops holding one, and catches up when
   * it is shown again.
   */
  private onVisibility = (): void => {
    if (document.hidden) {
      this.hiddenTimer ??= setTimeout(() => {
        this.released = true;
        this.streamAbort?.abort();
        this.set({ connection: 'connecting', problem: null, refused: false, retryAt: null });
      }, HIDDEN_RELEASE_MS);
      return;
    }
    if (this.hiddenTimer) clearTimeout(this.hiddenTimer);
    this.hiddenTimer = null;
    if (this.released) {
      this.released = false;
      this.onShown?.();
      this.wake.abort();
    }
  };

  private untilShown(): Promise<void> {
    return new Promise((resolve) => {
      this.onShown = () => {
        this.onShown = null;
        resolve();
      };
    });
  }

  // ---- reachability ----

  /**
   * Noted without a re-render (every stream chunk counts): the time is read when something
   * else renders, and the banner that shows it renders each second.
   */
  private contact(): void {
    this.state.lastContact = Date.now();
  }

  private unreachable(err: unknown, retryInMs: number): void {
    const refused = err instanceof ApiError && !err.unreachable;
    const problem = err instanceof ApiError ? (refused ? `the node answered ${err.status}: ${err.message}` : err.message) : UNREACHABLE;
    this.set({ connection: 'unreachable', problem, refused, needsToken: needsToken(err), retryAt: Date.now() + retryInMs });
    // A node that answers still gives lists: the page shows them while the stream waits.
    if (refused && !needsToken(err)) void this.relist();
  }

  // ---- the watch stream ----

  private async watchLoop(signal: AbortSignal): Promise<void> {
    let backoff = RETRY_MIN_MS;
    while (!signal.aborted) {
      if (this.released) await this.untilShown();
      if (signal.aborted) return;
      let waitMs = backoff;
      try {
        const openedAt = performance.now();
        await this.watchOnce(signal);
        if (signal.aborted) return;
        // The stream ended (node shutting down, a cut, a silent stream): reconnect at once
        // after a long one; one that ends as soon as it opens is retried with backoff.
        if (performance.now() - openedAt > STREAM_MIN_LIFE_MS) {
          backoff = RETRY_MIN_MS;
          continue;
        }
      } catch (err) {
        if (signal.aborted) return;
        if (err instanceof ApiError && err.retryAfterSec !== null) waitMs = err.retryAfterSec * 1000;
        this.unreachable(err, waitMs);
      }
      this.wake = new AbortController();
      await sleep(waitMs * (0.8 + Math.random() * 0.4), AbortSignal.any([signal, this.wake.signal]));
      backoff = Math.min(backoff * 2, RETRY_MAX_MS);
    }
  }

  /** One connection: resolves when it ended after opening, throws when it could not open. */
  private async watchOnce(signal: AbortSignal): Promise<void> {
    const silence = new AbortController();
    this.streamAbort = silence;
    // fetch, not EventSource: EventSource cannot send the Authorization header.
    const headers: Record<string, string> = { accept: 'text/event-stream', ...authHeaders() };
    if (this.lastEventId) headers['last-event-id'] = this.lastEventId;
    let url = `/v1/watch?namespace=${encodeURIComponent(this.state.namespace)}`;
    if (!this.lastEventId && !this.backlogAsked) url += await this.backlogQuery(signal);
    let res: Response;
    const connectTimer = setTimeout(() => silence.abort(), 10_000);
    try {
      res = await fetch(url, { headers, cache: 'no-store', signal: AbortSignal.any([signal, silence.signal]) });
    } catch {
      throw new ApiError(signal.aborted ? 'stopped' : silence.signal.aborted ? 'no answer within 10 s' : UNREACHABLE, null, null, null);
    } finally {
      clearTimeout(connectTimer);
    }
    if (!res.ok || !res.body) {
      const err = await problemOf(res);
      // A position the node cannot use (bad id, compacted): start over from a fresh list.
      if (res.status === 400 || res.status === 410) this.lastEventId = null;
      throw err;
    }
    this.contact();
    this.set({ connection: 'live', problem: null, refused: false, needsToken: false, retryAt: null });
    void this.relist();
    let timer = setTimeout(() => silence.abort(), STREAM_SILENCE_MS);
    try {
      await readSse(res.body, (m) => {
        if (m.event === 'put' || m.event === 'delete') this.onChange(JSON.parse(m.data) as WatchEvent, m.id);
        else if (m.event === 'reset') this.onReset(JSON.parse(m.data) as ResetEvent);
      }, () => {
        this.contact();
        clearTimeout(timer);
        timer = setTimeout(() => silence.abort(), STREAM_SILENCE_MS);
      });
    } catch {
      /* cut or silent: reconnect */
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * The first stream of a page starts a little in the past (the node replays what it
   * retained), so that the event view opens with the recent changes rather than empty.
   */
  private async backlogQuery(signal: AbortSignal): Promise<string> {
    const status = await api.status(signal);
    this.contact();
    this.backlogAsked = true;
    this.backlogUpTo = status.revision;
    this.set({ status, epoch: status.epoch });
    if (status.revision === 0) return '';
    const from = Math.max(1, status.revision - FEED_BACKLOG_REVISIONS + 1);
    return `&fromRevision=${from}&epoch=${encodeURIComponent(status.epoch)}`;
  }

  private onReset(r: ResetEvent): void {
    this.applyIncoming(); // the events before it, in order
    // The old position is useless; until the lists are read again there is none, so a drop
    // in between reconnects from "now" and relists (as every connection does).
    this.lastEventId = null;
    // Another epoch (a node that restarted in memory, or another node): its revisions
    // start again, so none of its events is one replayed on opening.
    if (this.state.epoch !== null && r.epoch !== this.state.epoch) this.backlogUpTo = 0;
    this.set({ epoch: r.epoch });
    void this.relist().then(() => {
      this.lastEventId ??= `${r.epoch}:${r.revision}`;
    });
  }

  private onChange(ev: WatchEvent, id: string | null): void {
    if (ev.namespace !== this.state.namespace) return;
    if (id) this.lastEventId = id;
    this.incoming.push(ev);
    this.incomingTimer ??= setTimeout(() => this.applyIncoming(), EVENT_BATCH_MS);
  }

  /** Applies the stream events received since the last batch, in order, as one update. */
  private applyIncoming(): void {
    if (this.incomingTimer) clearTimeout(this.incomingTimer);
    this.incomingTimer = null;
    const batch = this.incoming;
    this.incoming = [];
    if (batch.length === 0) return;
    const now = Date.now();
    let { epoch, status, lastEventAt } = this.state;
    const added: FeedEntry[] = [];
    const forService: WatchEvent[] = [];
    let relist = false;
    for (const ev of batch) {
      const epochChanged = epoch !== null && epoch !== ev.epoch;
      if (epochChanged) {
        this.backlogUpTo = 0;
        relist = true;
        forService.length = 0; // the relist reads the service again
      }
      added.push({ key: ++this.feedKey, receivedAt: now, earlier: ev.revision <= this.backlogUpTo, ev });
      if (status && ev.revision > status.revision) status = { ...status, revision: ev.revision };
      if (ev.revision > this.backlogUpTo) lastEventAt = now;
      epoch = ev.epoch;
      if (!relist) forService.push(ev);
    }
    const feed = [...added.reverse(), ...this.state.feed];
    if (feed.length > MAX_FEED_EVENTS) feed.length = MAX_FEED_EVENTS;
    this.set({ feed, eventsReceived: this.state.eventsReceived + batch.length, lastEventAt, epoch, status });
    if (relist) {
      void this.relist();
      return;
    }
    this.applyToService(forService);
    this.scheduleList();
  }

  // ---- lists ----

  /** Reads everything again: status, the service list and the open service. */
  private async relist(): Promise<void> {
    const open = this.state.service?.name;
    await Promise.all([this.readStatus(), this.readList(), open ? this.loadService(open) : Promise.resolve()]);
  }

  private scheduleList(): void {
    if (this.listTimer) return;
    this.listTimer = setTimeout(() => {
      this.listTimer = null;
      void this.readList();
    }, LIST_COALESCE_MS);
  }

  private async readList(): Promise<void> {
    if (this.listInFlight) {
      this.listAgain = true;
      return;
    }
    this.listInFlight = true;
    try {
      const list = await api.services(this.state.namespace, this.run.signal);
      this.contact();
      const services = [...list.services].sort((a, b) => a.name.localeCompare(b.name));
      this.set({ services, servicesRevision: list.revision, servicesError: null });
    } catch (err) {
      if (err instanceof ApiError && !err.unreachable) this.set({ servicesError: err });
    } finally {
      this.listInFlight = false;
      if (this.listAgain) {
        this.listAgain = false;
        this.scheduleList();
      }
    }
  }

  private async readStatus(): Promise<void> {
    try {
      const status = await api.status(this.run.signal);
      this.contact();
      this.set({ status, epoch: this.state.epoch ?? status.epoch });
    } catch (err) {
      if (this.run.signal.aborted) return;
      // The watch may sit on a half-open connection; a failed read is the quicker sign.
      // Reconnecting tells which: a stream that opens again was fine, one that cannot
      // open turns the page unreachable.
      if (err instanceof ApiError && err.unreachable && this.state.connection === 'live') this.streamAbort?.abort();
    }
  }

  private async statusLoop(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      if (!this.released) await this.readStatus();
      await sleep(STATUS_EVERY_MS, signal);
    }
  }

  // ---- the open service ----

  /** Shows one service: lists it and keeps it current from the stream until closed. */
  openService(name: string): void {
    if (this.closeTimer) {
      clearTimeout(this.closeTimer);
      this.closeTimer = null;
      if (this.state.service?.name !== name) this.closeNow();
    }
    if (this.state.service?.name === name) return;
    this.set({ service: { name, loading: true, error: null, revision: 0, listedRevision: 0, instances: new Map(), changedAt: new Map(), gone: new Map() } });
    void this.loadService(name);
  }

  /**
   * Closes the open service once no page opens it again right after: going from a service
   * to one of its instances (the next page opens the same service) keeps what the first
   * saw, such as the instances removed while it was open, which the instance page shows.
   */
  closeService(): void {
    if (this.closeTimer) return;
    this.closeTimer = setTimeout(() => {
      this.closeTimer = null;
      this.closeNow();
    }, 0);
  }

  private closeNow(): void {
    this.serviceLoad?.abort();
    this.pending = [];
    this.set({ service: null });
  }

  private async loadService(name: string): Promise<void> {
    this.serviceLoad?.abort();
    const ac = new AbortController();
    this.serviceLoad = ac;
    this.pending = [];
    const cur = this.state.service;
    if (cur?.name === name) this.set({ service: { ...cur, loading: true } });
    try {
      const answer = await api.service(this.state.namespace, name, AbortSignal.any([ac.signal, this.run.signal]));
      if (ac.signal.aborted || this.state.service?.name !== name) return;
      this.contact();
      const prev = this.state.service;
      const instances = new Map(answer.instances.map((i) => [i.id, i]));
      const gone = new Map([...prev.gone].filter(([id]) => !instances.has(id)));
      // Anything that was on screen and is missing from the answer went while we were away.
      for (const [id, inst] of prev.instances) {
        if (!instances.has(id) && !gone.has(id)) gone.set(id, { epoch: answer.epoch ?? '', revision: answer.revision, type: 'delete', service: name, namespace: inst.namespace, instance: inst });
      }
      let view: ServiceView = bounded({ name, loading: false, error: null, revision: answer.revision, listedRevision: answer.revision, instances, changedAt: new Map(prev.changedAt), gone });
      view = patch(view, this.pending.filter((ev) => ev.revision > answer.revision));
      this.pending = [];
      this.set({ service: view });
    } catch (err) {
      if (ac.signal.aborted || this.state.service?.name !== name) return;
      const cur2 = this.state.service;
      this.set({ service: { ...cur2, loading: false, error: err instanceof ApiError ? err : new ApiError(String(err), null, null, null) } });
    } finally {
      if (this.serviceLoad === ac) this.serviceLoad = null;
    }
  }

  private applyToService(events: WatchEvent[]): void {
    const view = this.state.service;
    if (!view) return;
    const mine = events.filter((ev) => ev.service === view.name);
    if (mine.length === 0) return;
    if (view.loading) {
      this.pending.push(...mine);
      return;
    }
    const next = patch(view, mine);
    if (next !== view) this.set({ service: next });
  }
}

/**
 * Instances removed while a service page is open that it keeps listing (the newest): a tab
 * left open on a service whose instance ids change at every restart must not grow for ever.
 */
export const MAX_GONE = 200;

/** Keeps the newest MAX_GONE removals, and change marks only for what is shown or kept. */
function bounded(view: ServiceView): ServiceView {
  let gone = view.gone;
  if (gone.size > MAX_GONE) gone = new Map([...gone].sort((a, b) => b[1].revision - a[1].revision).slice(0, MAX_GONE));
  let changedAt = view.changedAt;
  if (changedAt.size > view.instances.size + gone.size) changedAt = new Map([...changedAt].filter(([id]) => view.instances.has(id) || gone.has(id)));
  return gone === view.gone && changedAt === view.changedAt ? view : { ...view, gone, changedAt };
}

/**
 * The view after some events, in order; an event at or below an instance's known revision
 * changes nothing. The maps are copied once for all of them (a copy per event made a burst
 * of thousands cost the square of the service's size).
 */
function patch(view: ServiceView, events: readonly WatchEvent[]): ServiceView {
  let next: { instances: Map<string, Instance>; gone: ServiceView['gone']; changedAt: Map<string, number> } | null = null;
  let revision = view.revision;
  for (const ev of events) {
    const id = ev.instance.id;
    const known = (next?.instances ?? view.instances).get(id);
    if (known ? known.modRevision >= ev.revision : ev.revision <= view.listedRevision) continue;
    next ??= { instances: new Map(view.instances), gone: new Map(view.gone), changedAt: new Map(view.changedAt) };
    if (ev.type === 'put') {
      next.instances.set(id, ev.instance);
      next.gone.delete(id);
    } else {
      next.instances.delete(id);
      next.gone.set(id, ev);
    }
    next.changedAt.set(id, ev.revision);
    revision = Math.max(revision, ev.revision);
  }
  return next === null ? view : bounded({ ...view, ...next, revision });
}
