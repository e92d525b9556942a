/**
 * The hub announces durable changes: it keeps the retained event log, fans each revision
 * out to watch streams and wakes blocking queries. Events reach it in revision order,
 * only after their entry is durable.
 */
import type { WatchEvent } from '@switchboard/protocol';
import { EventLog } from '../core/event-log.js';
import { serviceKey } from '../core/registry.js';

export interface Subscriber {
  /** Receives the events of one revision that pass this subscriber's filter. */
  deliver(events: WatchEvent[], revision: number): void;
  /** Service keys (`namespace/service`) of interest; null for all services. */
  readonly services: ReadonlySet<string> | null;
  /** With `services` null: only the services of this namespace (absent: every namespace). */
  readonly namespace?: string;
}

/** Whether a subscriber's filter takes the events of a service (the hub's own index decides alike). */
export function interested(sub: Pick<Subscriber, 'services' | 'namespace'>, namespace: string, service: string): boolean {
  if (sub.services === null) return sub.namespace === undefined || sub.namespace === namespace;
  return sub.services.has(serviceKey(namespace, service));
}

interface Waiter {
  readonly key: string;
  wake(): void;
}

export class Hub {
  readonly log: EventLog;
  /** Subscribers of every service. */
  private readonly everything = new Set<Subscriber>();
  /** Subscribers of named services, indexed so that a write touches only its watchers. */
  private readonly byService = new Map<string, Set<Subscriber>>();
  private subscribers = 0;
  private readonly waiters = new Map<string, Set<Waiter>>();
  private waiterCount = 0;
  /** The highest revision announced so far. */
  published: number;

  constructor(retainedEvents: number, baseRevision: number) {
    this.log = new EventLog(retainedEvents, baseRevision);
    this.published = baseRevision;
  }

  get subscriberCount(): number {
    return this.subscribers;
  }
  get waiting(): number {
    return this.waiterCount;
  }

  /** Announces the events of one entry (one revision). */
  publish(events: WatchEvent[], revision: number): void {
    if (events.length === 0) return;
    for (const e of events) this.log.append(e);
    this.published = Math.max(this.published, revision);
    let byNamespace: Map<string, WatchEvent[]> | undefined;
    for (const sub of this.everything) {
      const ns = sub.namespace;
      if (ns === undefined) {
        sub.deliver(events, revision);
        continue;
      }
      // Subscribers of one namespace share one array (one framing for all their streams).
      let mine = byNamespace?.get(ns);
      if (mine === undefined) {
        mine = events.every((e) => e.namespace === ns) ? events : events.filter((e) => e.namespace === ns);
        (byNamespace ??= new Map()).set(ns, mine);
      }
      if (mine.length > 0) sub.deliver(mine, revision);
    }
    // Nobody watches a service or waits on one (a busy node with few watchers): done.
    if (this.byService.size === 0 && this.waiterCount === 0) return;
    const keys = events.map((e) => serviceKey(e.namespace, e.service));
    const distinct = new Set(keys);
    const touched = new Set<Subscriber>();
    for (const key of distinct) for (const sub of this.byService.get(key) ?? []) touched.add(sub);
    // Streams that see the same part of a revision get the same array (so that a stream
    // writer can serialise it once for all of them).
    const parts = new Map<string, WatchEvent[]>();
    for (const sub of touched) {
      let mine = events;
      if (distinct.size > 1) {
        const mask = keys.map((k) => (sub.services!.has(k) ? '1' : '0')).join('');
        mine = parts.get(mask) ?? events.filter((_, i) => mask[i] === '1');
        parts.set(mask, mine);
      }
      sub.deliver(mine, revision);
    }
    this.wake(distinct);
  }

  /**
   * Wakes the blocking queries of services (`namespace/service`) whose answers changed;
   * publish does it for the services of its events, settings changes call it directly.
   */
  wake(keys: Iterable<string>): void {
    for (const key of keys) {
      const set = this.waiters.get(key);
      if (!set) continue;
      this.waiters.delete(key);
      this.waiterCount -= set.size;
      for (const w of set) w.wake();
    }
  }

  subscribe(sub: Subscriber): () => void {
    const services = sub.services;
    this.subscribers++;
    if (services === null) this.everything.add(sub);
    else {
      for (const key of services) {
        let set = this.byService.get(key);
        if (!set) this.byService.set(key, (set = new Set()));
        set.add(sub);
      }
    }
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.subscribers--;
      if (services === null) this.everything.delete(sub);
      else {
        for (const key of services) {
          const set = this.byService.get(key);
          set?.delete(sub);
          if (set?.size === 0) this.byService.delete(key);
        }
      }
    };
  }

  /** Registers a one-shot wake-up for the next change of a service. */
  waitFor(namespace: string, service: string, wake: () => void): () => void {
    const key = serviceKey(namespace, service);
    const w: Waiter = { key, wake };
    let set = this.waiters.get(key);
    if (!set) this.waiters.set(key, (set = new Set()));
    set.add(w);
    this.waiterCount++;
    return () => {
      const s = this.waiters.get(key);
      if (s?.delete(w)) {
        this.waiterCount--;
        if (s.size === 0) this.waiters.delete(key);
      }
    };
  }

  /** Wakes every blocking query (shutdown). */
  wakeAll(): void {
    const all = [...this.waiters.values()];
    this.waiters.clear();
    this.waiterCount = 0;
    for (const set of all) for (const w of set) w.wake();
  }
}
