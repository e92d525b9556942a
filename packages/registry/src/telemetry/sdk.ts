/**
 * The OpenTelemetry SDK, loaded only when tracing is configured: a tracer provider with a
 * batch span processor and the OTLP/HTTP (JSON) exporter, W3C trace-context propagation,
 * and the server spans of the HTTP API.
 */
import { SpanKind, SpanStatusCode, context, diag, propagation, trace, DiagLogLevel, ROOT_CONTEXT, type Context, type Span } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import {
  ATTR_CLIENT_ADDRESS,
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_HTTP_ROUTE,
  ATTR_NETWORK_PROTOCOL_VERSION,
  ATTR_SERVER_PORT,
  ATTR_SERVICE_NAME,
  ATTR_SERVICE_VERSION,
  ATTR_URL_PATH,
  ATTR_URL_SCHEME,
  ATTR_USER_AGENT_ORIGINAL,
  ATTR_ERROR_TYPE,
} from '@opentelemetry/semantic-conventions';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { setActiveTracing, type Tracing, type TracingOptions } from './index.js';

/** Spans buffered for export; beyond it new spans are dropped (and counted by the SDK). */
export const TRACING_LIMITS = Object.freeze({
  maxQueueSize: 4096,
  maxExportBatchSize: 512,
  scheduledDelayMillis: 1000,
  exportTimeoutMillis: 5_000,
  /** Longest the agent's shutdown waits for the last spans to be exported. */
  shutdownFlushMillis: 5_000,
});

interface Traced {
  span: Span;
  ctx: Context;
}

export function startSdk(opts: TracingOptions): Tracing {
  // The SDK reports export failures here, some as serialised errors: one readable line each.
  const warn = (msg: string): void => {
    let text = msg;
    try {
      const parsed = JSON.parse(msg) as { message?: unknown };
      if (typeof parsed.message === 'string') text = parsed.message;
    } catch {
      /* a plain message */
    }
    opts.logger.warn(`tracing: ${text}`);
  };
  diag.setLogger(
    {
      error: warn,
      warn,
      info: () => undefined,
      debug: () => undefined,
      verbose: () => undefined,
    },
    DiagLogLevel.WARN,
  );
  const exporter = new OTLPTraceExporter({ url: opts.endpoint, timeoutMillis: TRACING_LIMITS.exportTimeoutMillis });
  const { maxQueueSize, maxExportBatchSize, scheduledDelayMillis, exportTimeoutMillis } = TRACING_LIMITS;
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: opts.serviceName, [ATTR_SERVICE_VERSION]: opts.serviceVersion, 'service.instance.id': opts.nodeId }),
    spanProcessors: [new BatchSpanProcessor(exporter, { maxQueueSize, maxExportBatchSize, scheduledDelayMillis, exportTimeoutMillis })],
  });
  // The global tracer provider, AsyncLocalStorage context manager and W3C propagators.
  provider.register();
  const tracer = provider.getTracer('@switchboard/registry', opts.serviceVersion);
  const fail = (span: Span, err: unknown): void => {
    const e = err instanceof Error ? err : new Error(String(err));
    span.recordException(e);
    span.setStatus({ code: SpanStatusCode.ERROR, message: e.message });
  };
  setActiveTracing({
    tracer,
    fail,
    serverSpan(name, carrier, attributes, fn) {
      const parent = propagation.extract(ROOT_CONTEXT, carrier);
      const span = tracer.startSpan(name, { kind: SpanKind.SERVER, attributes }, parent);
      return context.with(trace.setSpan(parent, span), fn).then(
        (v) => {
          span.end();
          return v;
        },
        (err: unknown) => {
          // Refusals (4xx) are the caller's errors, not the server's: marked failed only from 500 on.
          const status = (err as { status?: unknown }).status;
          if (typeof status !== 'number' || status >= 500) fail(span, err);
          else span.setAttribute(ATTR_ERROR_TYPE, String((err as { code?: unknown }).code ?? status));
          span.end();
          throw err;
        },
      );
    },
  });

  const spans = new WeakMap<FastifyRequest, Traced>();
  const instrument = (app: FastifyInstance): void => {
    app.addHook('onRequest', (req, _reply, done) => {
      const route = req.routeOptions.url;
      const parent = propagation.extract(ROOT_CONTEXT, req.headers);
      const attributes: Record<string, string | number> = {
        [ATTR_HTTP_REQUEST_METHOD]: req.method,
        [ATTR_URL_PATH]: req.url.split('?')[0] as string,
        [ATTR_URL_SCHEME]: req.protocol,
        [ATTR_NETWORK_PROTOCOL_VERSION]: req.raw.httpVersion,
        [ATTR_CLIENT_ADDRESS]: req.ip,
      };
      if (route !== undefined) attributes[ATTR_HTTP_ROUTE] = route;
      const port = req.socket.localPort;
      if (port !== undefined) attributes[ATTR_SERVER_PORT] = port;
      const ua = req.headers['user-agent'];
      if (ua !== undefined) attributes[ATTR_USER_AGENT_ORIGINAL] = ua;
      // Semantic conventions: "{method} {route}", the method alone when no route matched.
      const span = tracer.startSpan(route === undefined ? req.method : `${req.method} ${route}`, { kind: SpanKind.SERVER, attributes }, parent);
      spans.set(req, { span, ctx: trace.setSpan(parent, span) });
      // An upgraded request (the session WebSocket) gets no onResponse or abort: its span
      // ends when its connection does (one answered as a plain request ends before that).
      if (req.headers.upgrade !== undefined) req.raw.socket?.once('close', () => end(req, 101));
      done();
    });
    // The body has been read: the handler runs inside the span from here on, so that the
    // spans it starts (storage.append, the engines' calls) are its children.
    app.addHook('preHandler', (req, _reply, done) => {
      const t = spans.get(req);
      if (t === undefined) return done();
      context.with(t.ctx, done);
    });
    app.addHook('onResponse', (req, reply, done) => {
      end(req, reply.statusCode);
      done();
    });
    app.addHook('onRequestAbort', (req, done) => {
      const t = spans.get(req);
      if (t !== undefined) t.span.setAttribute(ATTR_ERROR_TYPE, 'client_aborted');
      end(req, null);
      done();
    });
  };
  const end = (req: FastifyRequest, status: number | null): void => {
    const t = spans.get(req);
    if (t === undefined) return;
    spans.delete(req);
    if (status !== null) {
      t.span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, status);
      if (status >= 500) {
        t.span.setAttribute(ATTR_ERROR_TYPE, String(status));
        t.span.setStatus({ code: SpanStatusCode.ERROR });
      }
    }
    t.span.end();
  };

  let stopping: Promise<void> | undefined;
  return {
    instrument,
    shutdown: () =>
      (stopping ??= (async () => {
        setActiveTracing(null);
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<'timeout'>((resolve) => {
          timer = setTimeout(() => resolve('timeout'), TRACING_LIMITS.shutdownFlushMillis);
        });
        try {
          const r = await Promise.race([provider.shutdown().then(() => 'done' as const), timeout]);
          if (r === 'timeout') opts.logger.warn(`tracing: the last spans were not exported within ${TRACING_LIMITS.shutdownFlushMillis} ms; stopping without them`);
        } catch (err) {
          opts.logger.warn({ err }, 'tracing: the last spans could not be exported');
        } finally {
          clearTimeout(timer);
        }
      })()),
  };
}
