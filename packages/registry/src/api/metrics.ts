/** Prometheus metrics of one node (its own registry, so several nodes fit in one process). */
import client from 'prom-client';
import type { Engine } from '../engines/engine.js';

export interface Metrics {
  readonly registry: client.Registry;
  readonly requests: client.Counter<'method' | 'route' | 'status'>;
  readonly requestSeconds: client.Histogram<'method' | 'route'>;
  readonly watchEvents: client.Counter;
  readonly watchDropped: client.Counter;
}

export function createMetrics(engine: Engine, streams: () => number, sessions: () => number): Metrics {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry, prefix: 'switchboard_process_' });
  const requests = new client.Counter({ name: 'switchboard_http_requests_total', help: 'HTTP requests answered', labelNames: ['method', 'route', 'status'] as const, registers: [registry] });
  const requestSeconds = new client.Histogram({
    name: 'switchboard_http_request_duration_seconds',
    help: 'Time to answer HTTP requests (streams excluded)',
    labelNames: ['method', 'route'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [registry],
  });
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
  return { registry, requests, requestSeconds, watchEvents, watchDropped };
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
