/**
 * Trace-context propagation: the SDK's outgoing requests (to the registry and, through
 * `view.fetch`, to services) carry the active OpenTelemetry context as W3C `traceparent`
 * (and `tracestate`) headers. Without an OpenTelemetry SDK in the application the global
 * propagator is a no-op, nothing is injected and the headers are returned as they were.
 * Headers the caller set itself are never replaced.
 */
import { context, propagation } from '@opentelemetry/api';

const setter = {
  set(carrier: Record<string, string>, key: string, value: string): void {
    carrier[key] = value;
  },
};

/** The trace headers for the active context (empty without an SDK or an active span). */
export function traceHeaders(): Record<string, string> {
  const carrier: Record<string, string> = {};
  propagation.inject(context.active(), carrier, setter);
  return carrier;
}

/**
 * `headers` plus the trace headers of the active context, as a plain object (which every
 * fetch and undici accept); `headers` itself, untouched, when there is nothing to add.
 */
export function withTraceHeaders<H>(headers: H): H | Record<string, string> {
  const trace = traceHeaders();
  const keys = Object.keys(trace);
  if (keys.length === 0) return headers;
  const out: Record<string, string> = {};
  if (headers !== undefined && headers !== null) {
    const pairs = typeof (headers as { [Symbol.iterator]?: unknown })[Symbol.iterator] === 'function'
      ? (headers as unknown as Iterable<[string, string]>)
      : Object.entries(headers as unknown as Record<string, string>);
    for (const [k, v] of pairs) {
      const key = k.toLowerCase();
      out[key] = out[key] === undefined ? String(v) : `${out[key]}, ${String(v)}`;
    }
  }
  for (const k of keys) if (out[k] === undefined) out[k] = trace[k] as string;
  return out;
}
