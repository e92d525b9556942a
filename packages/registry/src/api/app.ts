/**
 * build() assembles the HTTP API over an engine and returns it without listening; the
 * agent calls listen(), tests use inject() or a real socket.
 */
import type { Duplex } from 'node:stream';
import Fastify, { LogController, type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerOptions } from 'fastify';
import swagger from '@fastify/swagger';
import websocket from '@fastify/websocket';
import { SESSION_PATH, SwitchboardError, invalid, problemSchema, unknownQueryWarnings, warningHeader, type Limits } from '@switchboard/protocol';
import type { Engine } from '../engines/engine.js';
import type { Tracing } from '../telemetry/index.js';
import type { AlertsView, ApiContext } from './context.js';
import { lazyChildLogger } from './lazy-logger.js';
import { createMetrics } from './metrics.js';
import { queryWarnings, refuseIfStrict } from './query.js';
import { answerClientError, answerExpectation, methodNotAllowed, sendProblem, toSwitchboardError } from './problem.js';
import { healthRoutes } from './routes-health.js';
import { readRoutes } from './routes-read.js';
import { pickRoutes } from './routes-pick.js';
import { nodeRoutes } from './routes-node.js';
import { writeRoutes } from './routes-write.js';
import { Sessions, sessionRoutes } from './session.js';
import { WatchStreams, watchRoutes } from './watch.js';
import { uiRoutes } from './ui.js';
import { authHook, type ApiTokens } from './auth.js';

export interface BuildOptions {
  engine: Engine;
  limits: Limits;
  version: string;
  logger?: FastifyServerOptions['logger'] | FastifyServerOptions['loggerInstance'];
  /** Milliseconds between keep-alive comments on watch streams (default 15 s). */
  watchHeartbeatMs?: number;
  /** Most requests served on one connection before it is closed (default unlimited). */
  maxRequestsPerSocket?: number;
  /** Tracing (a server span per API call); absent when tracing is off: no hooks at all. */
  tracing?: Tracing;
  /** Alerts: shown in /v1/status and counted in /metrics. */
  alerts?: AlertsView;
  /** Other parts of the node whose metrics /metrics serves (the service proxy). */
  metricSources?: { registerMetrics(registry: import('prom-client').Registry): void }[];
  /** The built dashboard served at /ui/ (default: packages/dashboard/dist; null: not built). */
  dashboardDir?: string | null;
  /** Bearer tokens every /v1/ request must carry; absent: the API is open (the default). */
  tokens?: ApiTokens;
  /** With tokens: GET /metrics is answered without one (default false: it needs a read token). */
  metricsOpen?: boolean;
  /** HTTPS: the certificate chain and private key (PEM); absent: plain HTTP. */
  https?: { cert: Buffer; key: Buffer };
}

export interface SwitchboardApp extends FastifyInstance {
  /** Stops taking requests, ends watch streams and blocking queries, then closes. */
  shutdown(): Promise<void>;
}

interface RouteShape {
  method: string;
  pattern: RegExp;
}

/**
 * The paths a route answers, for telling 405 from 404. Like the router: a parameter may be
 * empty (`/v1/services//instances/x` reaches the route, which refuses the empty name) and
 * a trailing slash is another path.
 */
function patternOf(url: string): RegExp {
  const body = url.split('/').map((part) => (part.startsWith(':') ? '[^/]*' : part === '*' ? '.*' : part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))).join('/');
  return new RegExp(`^${body}$`);
}

/**
 * An error on a session's socket. A client that breaks the WebSocket protocol (a message
 * over maxSessionMessageBytes, a bad frame) is the client's doing, logged at debug level:
 * `ws` is already closing the connection with the code that says why (1009, 1002, ...)
 * and ends it if the client does not answer the close within its close timeout. A
 * connection the client dropped, or anything else, ends at once (the plugin's default),
 * logged as an error only when it is not the client's doing.
 */
function sessionSocketError(error: Error, socket: { terminate(): void }, request: FastifyRequest): void {
  const code = String((error as { code?: unknown }).code ?? '');
  if (code.startsWith('WS_ERR_')) return void request.log.debug({ err: error }, `session closed on a protocol error of the client: ${error.message}`);
  if (code === 'ECONNRESET' || code === 'EPIPE') request.log.debug({ err: error }, `session connection dropped by the client: ${error.message}`);
  else request.log.error({ err: error }, `session connection failed: ${error.message}`);
  socket.terminate();
}

/** How long a shutting-down node waits for answers in flight before closing every connection. */
export const SHUTDOWN_GRACE_MS = 5_000;

/**
 * Unknown query parameters are ignored (api-v1.md), and said to be: a Switchboard-Warning
 * header on every route that declares its parameters; the write routes list them in their
 * answers too (queryWarnings). (In the Host hook: no hook of its own on every request.)
 */
function warnOfUnknownQuery(req: FastifyRequest, reply: FastifyReply): void {
  const declared = (req.routeOptions.schema?.querystring as { properties?: Record<string, unknown> } | undefined)?.properties;
  if (declared === undefined) return;
  const warnings = refuseIfStrict(req, unknownQueryWarnings(req.query as Record<string, unknown>, Object.keys(declared)));
  if (warnings.length === 0) return;
  queryWarnings.set(req, warnings);
  reply.header('switchboard-warning', warningHeader(warnings));
}

export async function build(opts: BuildOptions): Promise<SwitchboardApp> {
  const { engine, limits } = opts;
  const isLogger = opts.logger && typeof (opts.logger as { child?: unknown }).child === 'function';
  const app = Fastify({
    ...(isLogger ? { loggerInstance: opts.logger as FastifyServerOptions['loggerInstance'] } : { logger: (opts.logger as FastifyServerOptions['logger']) ?? false }),
    bodyLimit: limits.maxBodyBytes,
    // A client that stops sending in the middle of a request is answered and dropped.
    requestTimeout: 30_000,
    routerOptions: { maxParamLength: 1024 },
    return503OnClosing: false,
    forceCloseConnections: 'idle',
    maxRequestsPerSocket: opts.maxRequestsPerSocket ?? 0,
    logController: new LogController({ disableRequestLogging: true }),
    // Each request's child logger is made only if the request logs something.
    childLoggerFactory: lazyChildLogger,
    // Node itself would answer a request without Host with an empty 400; the onRequest
    // hook below answers it with problem+json instead.
    ...(opts.https ? { https: { cert: opts.https.cert, key: opts.https.key, requireHostHeader: false } } : { http: { requireHostHeader: false } }),
    frameworkErrors: (err, _req, reply) => {
      sendProblem(reply, toSwitchboardError(err, limits.maxBodyBytes));
    },
    // Requests Node's HTTP parser refuses (malformed, headers too large, truncated body)
    // never reach a route; they too are answered with problem+json.
    clientErrorHandler(this: FastifyInstance, err, socket) {
      answerClientError(err, socket, this.log);
    },
  }) as unknown as FastifyInstance;

  const ctx: ApiContext = {
    engine,
    limits,
    version: opts.version,
    startedAt: new Date(),
    closing: { value: false },
    drainsWaiting: { value: 0 },
    watchHeartbeatMs: opts.watchHeartbeatMs ?? 15_000,
    metrics: undefined as never,
    ...(opts.alerts ? { alerts: opts.alerts } : {}),
  };
  const streams = new WatchStreams(ctx);
  const sessions = new Sessions(ctx, app.log);
  ctx.metrics = createMetrics(engine, () => streams.open.size, () => sessions.size);
  engine.registerMetrics?.(ctx.metrics.registry);
  opts.alerts?.registerMetrics(ctx.metrics.registry);
  for (const m of opts.metricSources ?? []) m.registerMetrics(ctx.metrics.registry);

  // Schemas document the API; validation is validate.ts, so that every failure names its
  // field and says how to fix it. Serialisation is plain JSON (hot answers are cached strings).
  app.setValidatorCompiler(() => (data) => ({ value: data }));
  app.setSerializerCompiler(() => (data) => JSON.stringify(data));
  app.addSchema({ $id: 'Problem', ...problemSchema });

  // JSON is the only body (RFC 8259: UTF-8, no content coding). An empty body parses to
  // undefined, so that each route can say which body it wanted.
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (req, body, done) => {
    const encoding = req.headers['content-encoding'];
    if (encoding !== undefined && encoding.trim().toLowerCase() !== 'identity') {
      return done(new SwitchboardError('UNSUPPORTED_MEDIA_TYPE', `Content-Encoding ${encoding} is not supported`, { hint: 'send the JSON body uncompressed, without a Content-Encoding header' }), undefined);
    }
    const charset = /;\s*charset\s*=\s*"?([^";\s]*)/i.exec(req.headers['content-type'] ?? '')?.[1]?.toLowerCase();
    if (charset !== undefined && charset !== 'utf-8' && charset !== 'utf8') {
      return done(new SwitchboardError('UNSUPPORTED_MEDIA_TYPE', `charset ${charset} is not supported`, { hint: 'send JSON as UTF-8: Content-Type: application/json (or with charset=utf-8)' }), undefined);
    }
    let text: string;
    try {
      text = utf8.decode(body as Buffer);
    } catch {
      return done(new SwitchboardError('INVALID_ARGUMENT', 'the body is not valid UTF-8', { field: 'body', hint: 'send the JSON body encoded as UTF-8' }), undefined);
    }
    if (text.trim() === '') return done(null, undefined);
    try {
      done(null, JSON.parse(text));
    } catch (err) {
      done(new SwitchboardError('INVALID_ARGUMENT', `the body is not valid JSON: ${(err as Error).message}`, { field: 'body', hint: 'send a well-formed JSON document' }), undefined);
    }
  });

  const routes: RouteShape[] = [];
  app.addHook('onRoute', (r) => {
    for (const m of Array.isArray(r.method) ? r.method : [r.method]) routes.push({ method: m, pattern: patternOf(r.url) });
  });
  // First of all hooks, so that whichever later one answers an upgrade request, its
  // connection is ended after the answer.
  endAnsweredUpgrades(app);
  // While shutting down, requests that still arrive on open connections are turned away
  // with a retryable answer instead of racing the close.
  app.addHook('onRequest', async (req) => {
    if (ctx.closing.value && req.url !== '/healthz') {
      throw new SwitchboardError('NOT_READY', 'the node is shutting down', { retryAfterSec: 1, hint: 'send the request to another node, or retry once it is back' });
    }
  });
  // Every answer given while shutting down closes its connection: a client holding a
  // kept-alive socket (a blocking query answered by the shutdown) would otherwise keep the
  // server from closing until its own idle timeout.
  app.addHook('onSend', (_req, reply, payload, done) => {
    if (ctx.closing.value) reply.header('connection', 'close');
    done(null, payload);
  });
  app.addHook('onResponse', (req, reply, done) => {
    // A blocking query (`index`) waits for a change by design: counted, not timed, or its
    // wait would fill the route's latency histogram with +Inf.
    const blocking = (req.query as Record<string, unknown> | undefined)?.index !== undefined;
    ctx.metrics.observeRequest(req.method, req.routeOptions.url ?? 'unknown', reply.statusCode, blocking ? null : reply.elapsedTime / 1000);
    done();
  });
  opts.tracing?.instrument(app);

  // An Expect other than 100-continue never reaches Fastify; Node would answer an empty 417.
  app.server.on('checkExpectation', answerExpectation);
  // Before every route, the websocket upgrade and the checks of the request itself (Host,
  // Switchboard-Strict): a request without an accepted token goes no further (its body is
  // not read) and is told nothing else about itself.
  if (opts.tokens) {
    const authRefused = ctx.metrics.authRefused;
    app.addHook('onRequest', authHook({ tokens: opts.tokens, metricsOpen: opts.metricsOpen ?? false, refused: (reason) => authRefused.labels(reason).inc() }));
  }
  // HTTP/1.1 requires a Host header (RFC 9112, section 3.2); HTTP/1.0 has none to give.
  app.addHook('onRequest', (req, reply, done) => {
    if (req.headers.host === undefined && (req.raw.httpVersionMajor > 1 || req.raw.httpVersionMinor >= 1)) {
      done(new SwitchboardError('INVALID_ARGUMENT', 'the request has no Host header', { field: 'Host', hint: 'send a Host header naming the agent (host:port), as HTTP/1.1 requires' }));
      return;
    }
    if (req.url.includes('?')) {
      try {
        warnOfUnknownQuery(req, reply);
      } catch (err) {
        done(err as Error); // Switchboard-Strict: an unknown parameter is refused
        return;
      }
    }
    done();
  });
  app.setErrorHandler((err, req, reply) => {
    const sw = toSwitchboardError(err, limits.maxBodyBytes);
    // A refusal the node means (not ready, etcd out of reach) is a condition the node reports
    // once where it starts; one error line per request would flood the log during an outage.
    if (sw.status >= 500) {
      if (sw.status === 503) req.log.debug({ err }, 'request refused');
      else req.log.error({ err }, 'request failed');
    }
    return sendProblem(reply, sw);
  });
  app.setNotFoundHandler((req, reply) => {
    const path = req.url.split('?')[0] as string;
    const allowed = [...new Set(routes.filter((r) => r.pattern.test(path)).map((r) => r.method))];
    if (allowed.length > 0 && !allowed.includes(req.method)) {
      reply.header('allow', allowed.join(', '));
      return sendProblem(reply, methodNotAllowed(req, allowed));
    }
    return sendProblem(reply, new SwitchboardError('NOT_FOUND', `no route ${req.method} ${path}`, { hint: 'the API is described at GET /v1/openapi.json' }));
  });

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'Switchboard REST API', version: 'v1', description: 'Service registration, discovery and watches. Errors are application/problem+json.' },
      tags: [
        { name: 'leases' },
        { name: 'instances' },
        { name: 'discovery' },
        { name: 'watch' },
        { name: 'health' },
        { name: 'node' },
      ],
    },
  });
  await app.register(websocket, { options: { maxPayload: limits.maxSessionMessageBytes }, errorHandler: sessionSocketError });
  servePlainUpgrades(app);
  await app.register(async (scope) => sessionRoutes(scope, sessions));
  await app.register(async (scope) => writeRoutes(scope, ctx));
  await app.register(async (scope) => readRoutes(scope, ctx));
  await app.register(async (scope) => pickRoutes(scope, ctx));
  await app.register(async (scope) => watchRoutes(scope, ctx, streams));
  await app.register(async (scope) => healthRoutes(scope, ctx, streams));
  await app.register(async (scope) => nodeRoutes(scope, ctx, { watchers: () => streams.open.size, sessions: () => sessions.size }));
  await app.register(async (scope) => uiRoutes(scope, opts.dashboardDir));

  const sw = app as SwitchboardApp;
  sw.shutdown = async () => {
    ctx.closing.value = true;
    streams.closeAll();
    const sessionsClosed = sessions.shutdown(SHUTDOWN_GRACE_MS);
    engine.hub.wakeAll();
    // Answers in flight get SHUTDOWN_GRACE_MS; connections still open then are closed.
    const grace = setTimeout(() => app.server.closeAllConnections(), SHUTDOWN_GRACE_MS);
    grace.unref();
    try {
      // Session requests running are answered before the WebSocket plugin ends what is left.
      await sessionsClosed;
      await app.close();
    } finally {
      clearTimeout(grace);
    }
    ctx.metrics.close();
  };
  await app.ready();
  return sw;
}

/**
 * How long the connection of an answered upgrade request may stay open after the answer,
 * waiting for the client to close its side, before it is destroyed.
 */
export const UPGRADE_LINGER_MS = 5_000;

/** The socket an upgrade request came on, which the websocket plugin keeps on the request. */
function upgradeSocketOf(req: FastifyRequest): { key: symbol; socket: Duplex } | undefined {
  const raw = req.raw as unknown as Record<symbol, unknown>;
  const key = Object.getOwnPropertySymbols(raw).find((k) => k.description === 'ws-socket');
  const socket = key === undefined ? undefined : (raw[key] as Duplex | undefined);
  return key === undefined || !socket ? undefined : { key, socket };
}

/**
 * A request with an Upgrade header arrives on a socket Node's HTTP server has let go of:
 * no keep-alive, no timeout, nobody closes it. The websocket plugin ends it only when its
 * own hook has seen the request, so a request an earlier hook answers (a refused token, a
 * missing Host, Switchboard-Strict, a node shutting down) would leave it open for ever,
 * and a few hundred such requests would take every file descriptor of the node. Every
 * answered upgrade request's socket is ended after its answer, whatever answered it; one
 * that upgrades is hijacked and gives no answer. Whatever the client still sends is
 * discarded, so that its close is seen; a client that never closes its side is cut off
 * after UPGRADE_LINGER_MS.
 */
function endAnsweredUpgrades(app: FastifyInstance): void {
  app.addHook('onRequest', (req, reply, done) => {
    const socket = upgradeSocketOf(req)?.socket;
    if (socket) reply.raw.once('finish', () => endUpgradeSocket(socket));
    done();
  });
}

function endUpgradeSocket(socket: Duplex): void {
  if (socket.destroyed) return;
  socket.once('end', () => socket.destroy());
  const linger = setTimeout(() => socket.destroy(), UPGRADE_LINGER_MS);
  linger.unref();
  socket.once('close', () => clearTimeout(linger));
  socket.resume();
  socket.end();
}

/**
 * Node 20 hands every request with an Upgrade header to the server's 'upgrade' event,
 * which the websocket plugin routes like any request, and `ws` then answered anything but
 * a websocket handshake with a bare text/html 400 (`Upgrade: h2c` from `curl --http2`, for
 * one), and a websocket handshake to a route without a websocket with 101 and a close.
 * Only a websocket upgrade of GET /v1/session upgrades. Any other such request is served
 * as the plain HTTP request it also is (a server may ignore an Upgrade it does not take),
 * on a connection closed after the answer (endAnsweredUpgrades): the upgrade took it from
 * Node's HTTP parser. Its body cannot be read there, so a request with one gets a problem
 * instead.
 */
function servePlainUpgrades(app: FastifyInstance): void {
  app.addHook('onRequest', (req, reply, done) => {
    const r = req as FastifyRequest & { ws?: boolean };
    if (!r.ws) return done();
    const path = req.url.split('?')[0];
    if (req.method === 'GET' && path === SESSION_PATH && /^websocket$/i.test(req.headers.upgrade ?? '')) return done();
    const upgrade = upgradeSocketOf(req);
    if (!upgrade) return done();
    const { key, socket } = upgrade;
    // The plugin now takes it for a plain request (its handler and onResponse hook look at these).
    delete (req.raw as unknown as Record<symbol, unknown>)[key];
    r.ws = false;
    reply.header('connection', 'close');
    // Node does not watch an upgraded socket for the client leaving: a waiting request
    // (a blocking query, a watch) would keep its slot until it wrote something.
    socket.once('end', () => socket.destroy());
    socket.once('close', () => reply.raw.destroy());
    const length = Number(req.headers['content-length'] ?? 0);
    if (length > 0 || req.headers['transfer-encoding'] !== undefined) {
      return void sendProblem(reply, invalid('upgrade', `this request carries a body and asks to upgrade to "${req.headers.upgrade}", which this server does not do`, 'send the request without the Upgrade header'));
    }
    done();
  });
}
