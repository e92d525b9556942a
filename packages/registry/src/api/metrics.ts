/**
 * Prometheus metrics of one node (its own registry, so several nodes fit in one process).
 * Every metric is described in docs/metrics.md.
 *
 * Cost per request: plain counters found by three Map lookups (route, method, status) and
 * a bucket search; no label object is built, hashed or validated (prom-client's own
 * counters do all three on every inc, even through labels()). They become samples when
 * scraped. Gauges over the registry's state are computed when scraped (collect callbacks),
 * never on the write path.
 */
import { ADMIN_STATUSES, DELETE_REASONS, HEALTH_STATES, PUT_REASONS, type AdminStatus, type Health, type WatchEvent } from '@switchboard/protocol';
import client from 'prom-client';
import type { Engine } from '../engines/engine.js';
import type { Subscriber } from '../engines/hub.js';
import { AUTH_REFUSALS, type AuthRefusal } from './auth.js';

export interface Metrics {
  readonly registry: client.Registry;
  readonly watchEvents: client.Counter;
  readonly watchDropped: client.Counter;
  /** Requests refused for their token (only when the node requires tokens). */
  readonly authRefused: client.Counter<'reason'>;
  /** Counts one answered request; `seconds` is not recorded for streams (watch, session). */
  /** One request; `seconds` null: counted, not timed (a blocking query waits by design). */
  observeRequest(method: string, route: string, status: number, seconds: number | null): void;
  /** Stops listening to the engine (the app closed). */
  close(): void;
}

/** Routes whose requests are long-lived streams: counted, not timed. */
const STREAM_ROUTES = new Set(['/v1/watch', '/v1/session']);

export const REQUEST_SECONDS_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];
export const FSYNC_SECONDS_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];
export const BATCH_RECORDS_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000];

export function createMetrics(engine: Engine, streams: () => number, sessions: () => number): Metrics {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry, prefix: 'switchboard_process_' });
  const http = new RequestStats(REQUEST_SECONDS_BUCKETS);
  registry.registerMetric(http.counter as unknown as client.Metric);
  registry.registerMetric(http.histogram as unknown as client.Metric);
  const watchEvents = new client.Counter({ name: 'switchboard_watch_events_sent_total', help: 'Events written to watch streams', registers: [registry] });
  const watchDropped = new client.Counter({ name: 'switchboard_watch_streams_cut_total', help: 'Watch streams ended because the client read too slowly', registers: [registry] });
  const authRefused = new client.Counter({ name: 'switchboard_http_auth_refused_total', help: 'API requests refused for their bearer token, by reason', labelNames: ['reason'] as const, registers: [registry] });
  for (const reason of AUTH_REFUSALS) authRefused.labels(reason satisfies AuthRefusal).inc(0);
  const gauge = (name: string, help: string, read: () => number) =>
    new client.Gauge({ name, help, registers: [registry], collect() { this.set(read()); } });
  gauge('switchboard_revision', 'Current store revision', () => engine.registry.revision);
  gauge('switchboard_leases', 'Live leases', () => engine.registry.leaseCount);
  gauge('switchboard_instances', 'Registered instances', () => engine.registry.instanceCount);
  gauge('switchboard_services', 'Services with at least one instance', () => engine.registry.serviceCount);
  gauge('switchboard_watch_streams', 'Open watch streams', streams);
  gauge('switchboard_sessions', 'Open session streams', sessions);
  gauge('switchboard_blocking_queries', 'Blocking queries waiting', () => engine.hub.waiting);
  healthMetrics(registry, engine, gauge);
  stateMetrics(registry, engine);
  const detach = [...eventMetrics(registry, engine), storageMetrics(registry, engine)];

  const close = (): void => {
    for (const d of detach.splice(0)) d();
  };
  return { registry, watchEvents, watchDropped, authRefused, observeRequest: http.observe.bind(http), close };
}

/** A counter that mirrors a total kept elsewhere (read when scraped). */
export function mirroredCounter(registry: client.Registry, name: string, help: string, read: () => number): void {
  new client.Counter({ name, help, registers: [registry], collect() { this.reset(); this.inc(read()); } });
}

function healthMetrics(registry: client.Registry, engine: Engine, gauge: (name: string, help: string, read: () => number) => void): void {
  const sp = () => engine.registry.selfPreservationStatus();
  gauge('switchboard_self_preservation_engaged', 'Self-preservation engaged (1) or not (0): lapsed leases are held, not evicted', () => (sp().engaged ? 1 : 0));
  gauge('switchboard_self_preservation_blocked_leases', 'Leases held past their deadline by self-preservation', () => sp().blockedLeases);
  mirroredCounter(registry, 'switchboard_self_preservation_blocked_evictions_total', 'Lease evictions blocked by self-preservation', () => sp().blockedEvictions);
  gauge('switchboard_checks_scheduled', 'Active checks (http, tcp, grpc) this node runs', () => engine.checkStats().scheduled);
  gauge('switchboard_checks_running', 'Active checks running now', () => engine.checkStats().running);
  gauge('switchboard_checks_queued', 'Active checks due and waiting for a free slot (maxConcurrentChecks)', () => engine.checkStats().queued);
  new client.Counter({
    name: 'switchboard_check_runs_total',
    help: 'Active check runs by result',
    labelNames: ['status'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const [status, n] of Object.entries(engine.checkStats().runs)) this.inc({ status }, n);
    },
  });
  mirroredCounter(registry, 'switchboard_check_timeouts_total', 'Active check runs cut off by their timeout', () => engine.checkStats().timeouts);
  mirroredCounter(registry, 'switchboard_check_targets_denied_total', 'Active check runs not probed: their target is in a denied network or outside the allowed ones (checkDenyNetworks, checkAllowNetworks)', () => engine.checkStats().denied);
}

const HEALTH_INDEX = Object.fromEntries(HEALTH_STATES.map((h, i) => [h, i])) as Record<Health, number>;
const STATUS_INDEX = Object.fromEntries(ADMIN_STATUSES.map((st, i) => [st, i])) as Record<AdminStatus, number>;

/**
 * The most namespaces with series of their own in switchboard_namespace_instances and
 * switchboard_namespace_leases: clients make namespaces without bound, and each one would
 * be a set of series kept by every scraper. The namespaces with the most instances keep
 * their own; the others are summed under OTHER_NAMESPACES.
 */
export const MAX_METRIC_NAMESPACES = 100;
/** The namespace label of the namespaces beyond MAX_METRIC_NAMESPACES (a namespace is a DNS label: never this). */
export const OTHER_NAMESPACES = '_other';

/**
 * The namespaces labelled as themselves: the MAX_METRIC_NAMESPACES with the most
 * instances (ties by name), or null when every namespace fits.
 */
function labelledNamespaces(sizes: Map<string, number>): Set<string> | null {
  if (sizes.size <= MAX_METRIC_NAMESPACES) return null;
  const ranked = [...sizes].sort(([a, n], [b, m]) => m - n || (a < b ? -1 : a > b ? 1 : 0));
  return new Set(ranked.slice(0, MAX_METRIC_NAMESPACES).map(([ns]) => ns));
}

/** Instances by namespace (a walk over the services, not the instances). */
function namespaceSizes(engine: Engine): Map<string, number> {
  const sizes = new Map<string, number>();
  for (const svc of engine.registry.allServices()) sizes.set(svc.namespace, (sizes.get(svc.namespace) ?? 0) + svc.instances.size);
  return sizes;
}

/** Instances and leases by namespace and state, counted when scraped. */
function stateMetrics(registry: client.Registry, engine: Engine): void {
  new client.Gauge({
    name: 'switchboard_namespace_instances',
    help: `Registered instances by namespace (the ${MAX_METRIC_NAMESPACES} with the most instances; the others summed under namespace "${OTHER_NAMESPACES}"), health (passing, warning, critical) and admin status (up, draining, out_of_service)`,
    labelNames: ['namespace', 'health', 'status'] as const,
    registers: [registry],
    collect() {
      // A 3 x 3 grid of counts per namespace: no string is built per instance.
      const grids = new Map<string, Float64Array>();
      for (const svc of engine.registry.allServices()) {
        let grid = grids.get(svc.namespace);
        if (grid === undefined) grids.set(svc.namespace, (grid = new Float64Array(9)));
        for (const rec of svc.instances.values()) {
          const i = HEALTH_INDEX[rec.instance.health] * 3 + STATUS_INDEX[rec.instance.status];
          grid[i] = (grid[i] as number) + 1;
        }
      }
      const sizes = new Map<string, number>();
      for (const [namespace, grid] of grids) sizes.set(namespace, grid.reduce((a, b) => a + b, 0));
      const kept = labelledNamespaces(sizes);
      if (kept !== null) {
        const other = new Float64Array(9);
        for (const [namespace, grid] of grids) {
          if (kept.has(namespace)) continue;
          for (let i = 0; i < 9; i++) other[i] = (other[i] as number) + (grid[i] as number);
          grids.delete(namespace);
        }
        grids.set(OTHER_NAMESPACES, other);
      }
      this.reset();
      for (const [namespace, grid] of grids) {
        for (let h = 0; h < 3; h++) {
          for (let st = 0; st < 3; st++) {
            const n = grid[h * 3 + st] as number;
            if (n > 0) this.set({ namespace, health: HEALTH_STATES[h] as string, status: ADMIN_STATUSES[st] as string }, n);
          }
        }
      }
    },
  });
  new client.Gauge({
    name: 'switchboard_namespace_leases',
    help: `Live leases by namespace of their instances and state (active, detached, held); a lease counts in each namespace it holds instances in, namespace "" when it holds none; namespaces beyond the ${MAX_METRIC_NAMESPACES} with the most instances count as namespace "${OTHER_NAMESPACES}"`,
    labelNames: ['namespace', 'state'] as const,
    registers: [registry],
    collect() {
      const counts = new Map<string, number>();
      const add = (namespace: string, state: string) => {
        const key = namespace + '\u0000' + state;
        counts.set(key, (counts.get(key) ?? 0) + 1);
      };
      const kept = labelledNamespaces(namespaceSizes(engine));
      for (const lease of engine.registry.allLeases()) {
        const state = lease.blockedSince !== null ? 'held' : lease.detached ? 'detached' : 'active';
        if (lease.instances.size === 0) {
          add('', state);
          continue;
        }
        // Keys are `namespace/service/id`; most leases hold one namespace, so a key under
        // the namespace just seen is skipped without slicing it.
        let last = '';
        const seen: string[] = [];
        for (const key of lease.instances) {
          if (last !== '' && key.charCodeAt(last.length) === 47 && key.startsWith(last)) continue;
          last = key.slice(0, key.indexOf('/'));
          // A lease in several namespaces beyond the labelled ones counts once under OTHER_NAMESPACES.
          const label = kept === null || kept.has(last) ? last : OTHER_NAMESPACES;
          if (!seen.includes(label)) seen.push(label);
        }
        for (const ns of seen) add(ns, state);
      }
      this.reset();
      for (const [key, n] of counts) {
        const [namespace, state] = key.split('\u0000') as [string, string];
        this.set({ namespace, state }, n);
      }
    },
  });
}

/** Events published (announced after they are durable) and leases that ended. */
function eventMetrics(registry: client.Registry, engine: Engine): (() => void)[] {
  // Plain counts by type and reason (every one present from the start, at 0), copied into
  // the counter when scraped: an event costs one Map lookup, no label hashing.
  const counts = new Map<string, { type: string; reason: string; n: number }>();
  for (const r of PUT_REASONS) counts.set('put' + r, { type: 'put', reason: r, n: 0 });
  for (const r of DELETE_REASONS) counts.set('delete' + r, { type: 'delete', reason: r, n: 0 });
  new client.Counter({
    name: 'switchboard_events_published_total',
    help: 'Watch events published (durable changes), by type (put, delete) and reason; rate() gives events per second',
    labelNames: ['type', 'reason'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const c of counts.values()) this.inc({ type: c.type, reason: c.reason }, c.n);
    },
  });
  const counter: Subscriber = {
    services: null,
    deliver(batch: WatchEvent[]): void {
      for (const e of batch) {
        const reason = e.reason ?? 'unknown';
        const c = counts.get(e.type + reason);
        if (c !== undefined) c.n++;
        else counts.set(e.type + reason, { type: e.type, reason, n: 1 });
      }
    },
  };
  const unsubscribe = engine.hub.subscribe(counter);

  const ended = { lease_expired: 0, lease_revoked: 0 };
  new client.Counter({
    name: 'switchboard_lease_ends_total',
    help: 'Leases that ended, by reason: lease_expired (not kept alive, or its session was lost) or lease_revoked',
    labelNames: ['reason'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const [reason, n] of Object.entries(ended)) this.inc({ reason }, n);
    },
  });
  const unlisten = engine.onLeaseEnded((_id, reason) => ended[reason]++);
  return [unsubscribe, unlisten];
}

/** Group commits of the write-ahead log, when the engine has local storage. */
function storageMetrics(registry: client.Registry, engine: Engine): () => void {
  const observers = engine.storageObservers;
  if (!observers) return () => undefined;
  const fsync = new client.Histogram({
    name: 'switchboard_wal_fsync_duration_seconds',
    help: 'Time of one fdatasync of the write-ahead log (one per group commit)',
    buckets: FSYNC_SECONDS_BUCKETS,
    registers: [registry],
  });
  const write = new client.Histogram({
    name: 'switchboard_wal_write_duration_seconds',
    help: 'Time of the write of one group commit, before its fdatasync',
    buckets: FSYNC_SECONDS_BUCKETS,
    registers: [registry],
  });
  const batch = new client.Histogram({
    name: 'switchboard_wal_batch_records',
    help: 'Log records per group commit (writes that shared one fsync)',
    buckets: BATCH_RECORDS_BUCKETS,
    registers: [registry],
  });
  const bytes = new client.Counter({ name: 'switchboard_wal_written_bytes_total', help: 'Bytes written to the write-ahead log', registers: [registry] });
  return observers.add({
    walCommit(c) {
      fsync.observe(c.syncSeconds);
      if (c.writeSeconds !== null) write.observe(c.writeSeconds);
      batch.observe(c.records);
      bytes.inc(c.bytes);
    },
  });
}

/** The counts of one method and route. */
interface RouteStats {
  readonly method: string;
  readonly route: string;
  readonly timed: boolean;
  /** Per bucket (not cumulative; the last is +Inf). */
  readonly buckets: Float64Array;
  sum: number;
  count: number;
  readonly byStatus: Map<number, { n: number }>;
}

interface Sample {
  labels: Record<string, string | number>;
  value: number;
  metricName?: string;
}

/**
 * switchboard_http_requests_total and switchboard_http_request_duration_seconds, kept as
 * plain numbers and exposed through prom-client's metric interface (get, reset).
 */
export class RequestStats {
  /** By route template, then method. */
  private readonly routes = new Map<string, Map<string, RouteStats>>();
  readonly counter: object;
  readonly histogram: object;

  constructor(private readonly bounds: readonly number[]) {
    const metric = (name: string, help: string, type: 'counter' | 'histogram', values: () => Sample[]) => ({
      name,
      help,
      type,
      aggregator: 'sum',
      get: async () => ({ name, help, type, aggregator: 'sum', values: values() }),
      reset: () => this.routes.clear(),
    });
    this.counter = metric('switchboard_http_requests_total', 'HTTP requests answered, by method, route template and status code', 'counter', () => this.counterSamples());
    const hist = 'switchboard_http_request_duration_seconds';
    this.histogram = metric(hist, 'Time to answer HTTP requests, by method and route template (streams excluded)', 'histogram', () => this.histogramSamples(hist));
  }

  observe(method: string, route: string, status: number, seconds: number | null): void {
    let byMethod = this.routes.get(route);
    if (byMethod === undefined) this.routes.set(route, (byMethod = new Map()));
    let r = byMethod.get(method);
    if (r === undefined) {
      r = { method, route, timed: !STREAM_ROUTES.has(route), buckets: new Float64Array(this.bounds.length + 1), sum: 0, count: 0, byStatus: new Map() };
      byMethod.set(method, r);
    }
    const c = r.byStatus.get(status);
    if (c === undefined) r.byStatus.set(status, { n: 1 });
    else c.n++;
    if (!r.timed || seconds === null) return;
    const b = this.bounds;
    let i = 0;
    while (i < b.length && seconds > (b[i] as number)) i++;
    r.buckets[i] = (r.buckets[i] as number) + 1;
    r.sum += seconds;
    r.count++;
  }

  private *all(): IterableIterator<RouteStats> {
    for (const byMethod of this.routes.values()) yield* byMethod.values();
  }

  private counterSamples(): Sample[] {
    const out: Sample[] = [];
    for (const r of this.all()) {
      for (const [status, c] of r.byStatus) out.push({ labels: { method: r.method, route: r.route, status: String(status) }, value: c.n });
    }
    return out;
  }

  private histogramSamples(name: string): Sample[] {
    const out: Sample[] = [];
    for (const r of this.all()) {
      if (!r.timed) continue;
      let cumulative = 0;
      for (let i = 0; i <= this.bounds.length; i++) {
        cumulative += r.buckets[i] as number;
        const le = i < this.bounds.length ? String(this.bounds[i]) : '+Inf';
        out.push({ labels: { method: r.method, route: r.route, le }, value: cumulative, metricName: name + '_bucket' });
      }
      out.push({ labels: { method: r.method, route: r.route }, value: r.sum, metricName: name + '_sum' });
      out.push({ labels: { method: r.method, route: r.route }, value: r.count, metricName: name + '_count' });
    }
    return out;
  }
}
