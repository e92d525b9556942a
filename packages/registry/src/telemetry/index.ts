/**
 * Tracing (OpenTelemetry), off unless the agent is given an OTLP endpoint. This module is
 * what the rest of the code imports: it loads nothing of OpenTelemetry at run time (type
 * imports only). `startTracing` loads the SDK (./sdk.ts) on demand; until then, and when
 * it is never called, `withSpan` and `traceAppend` cost one null check. Described in
 * docs/tracing.md.
 */
import type { Attributes, Span, Tracer } from '@opentelemetry/api';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';

export type SpanAttributes = Attributes;

/** What is set while tracing is on: the tracer and the two API calls the helpers use. */
export interface ActiveTracing {
  readonly tracer: Tracer;
  /** Marks a span failed with the error (recordException and status ERROR). */
  fail(span: Span, err: unknown): void;
  /**
   * Runs `fn` inside a server span whose parent is the W3C trace context in `carrier`
   * (`traceparent`, `tracestate`), as the request hook does for HTTP requests.
   */
  serverSpan<T>(name: string, carrier: Record<string, string>, attributes: SpanAttributes, fn: () => Promise<T>): Promise<T>;
}

let active: ActiveTracing | null = null;

/** Set by the SDK when tracing starts and cleared when it stops. */
export function setActiveTracing(t: ActiveTracing | null): void {
  active = t;
}

export function tracingEnabled(): boolean {
  return active !== null;
}

/**
 * Runs `fn` inside a span named `name` (a child of the active span), ended when `fn`
 * returns or its promise settles; marked failed when it throws or rejects. When tracing is
 * off it is exactly `fn()`. For the ap and cp engines' replication and etcd calls:
 *
 *   await withSpan('etcd.txn', { 'switchboard.keys': 3 }, () => client.txn(...))
 */
export function withSpan<T>(name: string, attributes: SpanAttributes | undefined, fn: () => T): T {
  const t = active;
  if (t === null) return fn();
  return t.tracer.startActiveSpan(name, attributes ? { attributes } : {}, (span) => {
    let result: T;
    try {
      result = fn();
    } catch (err) {
      t.fail(span, err);
      span.end();
      throw err;
    }
    if (result instanceof Promise) {
      return result.then(
        (v) => {
          span.end();
          return v;
        },
        (err: unknown) => {
          t.fail(span, err);
          span.end();
          throw err;
        },
      ) as T;
    }
    span.end();
    return result;
  });
}

/**
 * A server span for a request that did not come as an HTTP request (a request over the
 * session WebSocket), under the trace context the request carries; `fn()` itself when
 * tracing is off.
 */
export function withRequestSpan<T>(name: string, carrier: Record<string, string>, attributes: SpanAttributes, fn: () => Promise<T>): Promise<T> {
  const t = active;
  return t === null ? fn() : t.serverSpan(name, carrier, attributes, fn);
}

/**
 * A span `storage.append` around a write-ahead-log append (the wait for its group
 * commit); returns `appended` itself when tracing is off.
 */
export function traceAppend(appended: Promise<void>, revision: number): Promise<void> {
  if (active === null) return appended;
  return withSpan('storage.append', { 'switchboard.revision': revision }, () => appended);
}

export interface TracingOptions {
  /** OTLP/HTTP traces endpoint, e.g. http://127.0.0.1:4318/v1/traces. */
  endpoint: string;
  serviceName: string;
  serviceVersion: string;
  /** service.instance.id: the node id. */
  nodeId: string;
  logger: Logger;
}

export interface Tracing {
  /** Adds the server-span hooks to an app (a span per API call). */
  instrument(app: FastifyInstance): void;
  /** Exports what is still buffered, then stops. */
  shutdown(): Promise<void>;
}

/** Loads the SDK, registers it globally and sets the helpers above to record spans. */
export async function startTracing(opts: TracingOptions): Promise<Tracing> {
  const sdk = await import('./sdk.js');
  return sdk.startSdk(opts);
}
