/**
 * Prometheus metrics of one node (its own registry, so several nodes fit in one process).
 * Every metric is described in docs/metrics.md.
 *
 * Cost per request: plain counters in two Map lookups (route, then status) and a bucket
 * search; no label object is built, hashed or validated (prom-client's own counters do all
 * three on every inc, even through labels()). They are turned into samples when scraped. Gauges over the registry's state are computed when
 * scraped (collect callbacks), never on the write path.
 */
import { DELETE_REASONS, PUT_REASONS, type WatchEvent } from '@switchboard/protocol';
import client from 'prom-client';
import type { Engine } from '../engines/engine.js';
import type { Subscriber } from '../engines/hub.js';

type CounterChild = client.Counter.Internal;

export interface Metrics {
  readonly registry: client.Registry;
  readonly watchEvents: client.Counter;
  readonly watchDropped: client.Counter;
  /** Counts one answered request; `seconds` is not recorded for streams (watch, session). */
  observeRequest(method: string, route: string, status: number, seconds: number): void;
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
  return { registry, watchEvents, watchDropped, observeRequest: (m, r, st, sec) => http.observe(m, r, st, sec), close };
}

/** A counter that mirrors a total kept elsewhere (read when scraped). */
function mirroredCounter(registry: client.Registry, name: string, help: string, read: () => number): void {
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
}

/** Instances and leases by namespace and state, counted when scraped. */
function stateMetrics(registry: client.Registry, engine: Engine): void {
  new client.Gauge({
    name: 'switchboard_namespace_instances',
    help: 'Registered instances by namespace, health (passing, warning, critical) and admin status (up, down, draining)',
    labelNames: ['namespace', 'health', 'status'] as const,
    registers: [registry],
    collect() {
      const counts = new Map<string, number>();
      for (const svc of engine.registry.allServices()) {
        for (const rec of svc.instances.values()) {
          const key = svc.namespace + '\u0000' + rec.instance.health + '\u0000' + rec.instance.status;
          counts.set(key, (counts.get(key) ?? 0) + 1);
        }
      }
      this.reset();
      for (const [key, n] of counts) {
        const [namespace, health, status] = key.split('\u0000') as [string, string, string];
        this.set({ namespace, health, status }, n);
      }
    },
  });
  new client.Gauge({
    name: 'switchboard_namespace_leases',
    help: 'Live leases by namespace of their instances and state (active, detached, held); a lease counts in each namespace it holds instances in, namespace "" when it holds none',
    labelNames: ['namespace', 'state'] as const,
    registers: [registry],
    collect() {
      const counts = new Map<string, number>();
      const add = (namespace: string, state: string) => {
        const key = namespace + '\u0000' + state;
        counts.set(key, (counts.get(key) ?? 0) + 1);
      };
      for (const lease of engine.registry.allLeases()) {
        const state = lease.blockedSince !== null ? 'held' : lease.detached ? 'detached' : 'active';
        if (lease.instances.size === 0) {
          add('', state);
          continue;
        }
        const seen = new Set<string>();
        for (const key of lease.instances) seen.add(key.slice(0, key.indexOf('/')));
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
  const events = new client.Counter({
    name: 'switchboard_events_published_total',
    help: 'Watch events published (durable changes), by type (put, delete) and reason; rate() gives events per second',
    labelNames: ['type', 'reason'] as const,
    registers: [registry],
  });
  // Every type and reason exists from the start (at 0), and each has its child cached.
  const zero = (c: CounterChild): CounterChild => (c.inc(0), c);
  const put = new Map<string, CounterChild>(PUT_REASONS.map((r) => [r, zero(events.labels('put', r))]));
  const del = new Map<string, CounterChild>(DELETE_REASONS.map((r) => [r, zero(events.labels('delete', r))]));
  const other = (type: string, reason: string): CounterChild => events.labels(type, reason);
  const counter: Subscriber = {
    services: null,
    deliver(batch: WatchEvent[]): void {
      for (const e of batch) {
        const reason = e.reason ?? 'unknown';
        ((e.type === 'put' ? put : del).get(reason) ?? other(e.type, reason)).inc();
      }
    },
  };
  const unsubscribe = engine.hub.subscribe(counter);

  const ends = new client.Counter({
    name: 'switchboard_lease_ends_total',
    help: 'Leases that ended, by reason: lease_expired (not kept alive, or its session was lost) or lease_revoked',
    labelNames: ['reason'] as const,
    registers: [registry],
  });
  const endChildren = { lease_expired: zero(ends.labels('lease_expired')), lease_revoked: zero(ends.labels('lease_revoked')) };
  const unlisten = engine.onLeaseEnded((_id, reason) => endChildren[reason].inc());
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
      write.observe(c.writeSeconds);
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
  readonly byStatus: Map<number, number>;
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
  private readonly routes = new Map<string, RouteStats>();
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

  observe(method: string, route: string, status: number, seconds: number): void {
    const key = method + ' ' + route;
    let r = this.routes.get(key);
    if (r === undefined) {
      r = { method, route, timed: !STREAM_ROUTES.has(route), buckets: new Float64Array(this.bounds.length + 1), sum: 0, count: 0, byStatus: new Map() };
      this.routes.set(key, r);
    }
    r.byStatus.set(status, (r.byStatus.get(status) ?? 0) + 1);
    if (!r.timed) return;
    const b = this.bounds;
    let i = 0;
    while (i < b.length && seconds > (b[i] as number)) i++;
    r.buckets[i] = (r.buckets[i] as number) + 1;
    r.sum += seconds;
    r.count++;
  }

  private counterSamples(): Sample[] {
    const out: Sample[] = [];
    for (const r of this.routes.values()) {
      for (const [status, n] of r.byStatus) out.push({ labels: { method: r.method, route: r.route, status: String(status) }, value: n });
    }
    return out;
  }

  private histogramSamples(name: string): Sample[] {
    const out: Sample[] = [];
    for (const r of this.routes.values()) {
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
