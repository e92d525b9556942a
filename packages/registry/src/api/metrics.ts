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
  return { registry, requests, requestSeconds, watchEvents, watchDropped };
}
