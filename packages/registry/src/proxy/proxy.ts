/**
 * The service proxy (`--proxy-addr`, off by default): a small HTTP reverse proxy that
 * routes by service name. `GET http://PROXY/orders/api/items?x=1` goes to
 * `http://<an instance of orders>/api/items?x=1`, picked as `GET /v1/services/orders/pick`
 * picks (the SDK's balancers, over the instances that can take traffic). For callers that
 * cannot embed the SDK: they get load distribution, retries on another instance and
 * passive ejection of instances that refuse connections, with one address to call.
 *
 * What it does, in order:
 * - refuses what it cannot carry with a problem+json answer: a bad service name (400), an
 *   upgrade (WebSocket, 400), a body over `maxBodyBytes` (413), more than `maxInflight`
 *   requests at once (429 RATE_LIMITED), a request that went round through the proxy
 *   (a service whose instance is the proxy itself: 502 after `MAX_PROXY_HOPS`);
 * - buffers the request's body (so a retry can send it again), then picks an instance;
 * - forwards the request without its hop-by-hop headers, with `X-Forwarded-For`,
 *   `X-Forwarded-Host`, `X-Forwarded-Proto` and `Via`, to `http(s)://address:port/path`;
 * - when the instance could not be reached, retries on another (up to `retries` more):
 *   any request whose connection failed before it was sent (refused, unreachable, connect
 *   timeout), and an idempotent one (GET, HEAD, OPTIONS, PUT, DELETE) also when the
 *   connection broke before an answer came. An instance that could not be reached is left
 *   out of picks for `ejectMs` (unless every candidate is);
 * - streams the answer back as it comes, without its hop-by-hop headers, naming the
 *   instance in `Switchboard-Instance`; no answer within `headersTimeoutMs` is 504.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { pipeline } from 'node:stream/promises';
import client from 'prom-client';
import { Agent, errors as undiciErrors } from 'undici';
import { SwitchboardError, type Instance, type Protocol } from '@switchboard/protocol';
import { validateServiceName } from '@switchboard/protocol';
import type { Registry } from '../core/registry.js';
import { Pickers, type PickStrategy } from '../core/picker.js';
import { mirroredCounter } from '../api/metrics.js';
import { NO_FILTER } from '../core/views.js';

/** Requests being proxied at once; beyond it 429 RATE_LIMITED. */
export const PROXY_MAX_INFLIGHT = 1_024;
/** Largest request body the proxy takes (it is buffered, for retries); beyond it 413. */
export const PROXY_MAX_BODY_BYTES = 10 * 1024 * 1024;
/**
 * Request bodies held by the proxy at once, over all requests in flight (each is buffered
 * for retries); a body that would pass it gets 429 RATE_LIMITED. Without it the bound would
 * be PROXY_MAX_INFLIGHT × PROXY_MAX_BODY_BYTES, 10 GiB.
 */
export const PROXY_MAX_BUFFERED_BYTES = 256 * 1024 * 1024;
/** Retries on another instance after the first attempt. */
export const PROXY_RETRIES = 2;
/** Time to connect to an instance. */
export const PROXY_CONNECT_TIMEOUT_MS = 2_000;
/** Time from sending a request to the answer's headers; beyond it 504. */
export const PROXY_HEADERS_TIMEOUT_MS = 30_000;
/** At shutdown, how long answers in flight may take to finish before their connections are cut. */
export const PROXY_SHUTDOWN_GRACE_MS = 10_000;
/** Longest silence within an answer's body before the proxy gives up on it. */
export const PROXY_BODY_TIMEOUT_MS = 60_000;
/** How long an instance that could not be reached is left out of picks. */
export const PROXY_EJECT_MS = 5_000;
/** Instances remembered as unreachable at once (older ones are forgotten first). */
export const PROXY_MAX_EJECTED = 10_000;
/** Connections the proxy keeps to one instance. */
export const PROXY_MAX_CONNECTIONS_PER_INSTANCE = 64;
/** Times one request may pass through Switchboard proxies (Via) before it is taken as a loop. */
export const MAX_PROXY_HOPS = 4;

const VIA = 'switchboard';
/** The request header whose value is the consistent-hash key (`--proxy-strategy consistent-hash`; its first 1,024 characters). */
export const KEY_HEADER = 'switchboard-key';
const PROXIED_PROTOCOLS: readonly Protocol[] = ['http', 'https'];
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);
/** RFC 9110 7.6.1: headers of one connection only, never forwarded. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade']);
/** Failures where the request surely never reached the instance: safe to send elsewhere. */
const NOT_SENT = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ENOTFOUND', 'EAI_AGAIN', 'UND_ERR_CONNECT_TIMEOUT']);
/** Errors of the proxy's own HTTP client about the request itself: nothing was sent. */
const REFUSED_BY_CLIENT = new Set(['UND_ERR_INVALID_ARG', 'UND_ERR_NOT_SUPPORTED']);
/** A TLS handshake that failed (an https instance): the request was not sent. */
function isTlsFailure(code: string): boolean {
  return /^(ERR_TLS_|ERR_SSL_|CERT_|DEPTH_ZERO_|SELF_SIGNED_|UNABLE_TO_|HOSTNAME_MISMATCH|ERR_OSSL_)/.test(code);
}
/** Failures after which the request may have reached the instance. */
const BROKEN = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED']);

export interface ProxyOptions {
  registry: Registry;
  namespace?: string;
  strategy?: PickStrategy;
  retries?: number;
  maxInflight?: number;
  maxBodyBytes?: number;
  maxBufferedBytes?: number;
  connectTimeoutMs?: number;
  headersTimeoutMs?: number;
  bodyTimeoutMs?: number;
  ejectMs?: number;
  /** Connections kept to one instance (default PROXY_MAX_CONNECTIONS_PER_INSTANCE). */
  connectionsPerInstance?: number;
  now?: () => number;
  log?: (level: 'warn' | 'debug', msg: string, extra?: Record<string, unknown>) => void;
}

/** Counters of the proxy (exported as metrics). */
export interface ProxyStats {
  /** Answers by outcome: proxied (any status from an instance), or the proxy's own refusal code. */
  outcomes: Map<string, number>;
  retries: number;
  ejections: number;
  inflight: number;
}

export class ServiceProxy {
  readonly server: Server;
  readonly stats: ProxyStats = { outcomes: new Map(), retries: 0, ejections: 0, inflight: 0 };
  private readonly pickers = new Pickers();
  private readonly agent: Agent;
  /** Instances left out of picks, by service: instance id -> until when (PROXY_MAX_EJECTED in all). */
  private readonly ejected = new Map<string, Map<string, number>>();
  private ejectedCount = 0;
  private readonly o: Required<Omit<ProxyOptions, 'log'>> & Pick<ProxyOptions, 'log'>;
  /** Set by close(): new requests are refused and every answer closes its connection. */
  private closing = false;
  /** Bytes of request bodies held now (PROXY_MAX_BUFFERED_BYTES). */
  private buffered = 0;

  constructor(opts: ProxyOptions) {
    this.o = {
      namespace: 'default',
      strategy: 'round-robin',
      retries: PROXY_RETRIES,
      maxInflight: PROXY_MAX_INFLIGHT,
      maxBodyBytes: PROXY_MAX_BODY_BYTES,
      maxBufferedBytes: PROXY_MAX_BUFFERED_BYTES,
      connectTimeoutMs: PROXY_CONNECT_TIMEOUT_MS,
      headersTimeoutMs: PROXY_HEADERS_TIMEOUT_MS,
      bodyTimeoutMs: PROXY_BODY_TIMEOUT_MS,
      ejectMs: PROXY_EJECT_MS,
      connectionsPerInstance: PROXY_MAX_CONNECTIONS_PER_INSTANCE,
      now: () => performance.now(),
      ...opts,
    };
    this.agent = new Agent({ connect: { timeout: this.o.connectTimeoutMs }, connections: this.o.connectionsPerInstance, keepAliveTimeout: 4_000 });
    this.server = createServer({ requestTimeout: 60_000, headersTimeout: 30_000 }, (req, res) => void this.handle(req, res));
    this.server.on('upgrade', (req: IncomingMessage, socket: Socket) => {
      const err = new SwitchboardError('INVALID_ARGUMENT', `the service proxy does not carry ${String(req.headers.upgrade ?? 'protocol').slice(0, 32)} upgrades`, { field: 'Upgrade', hint: 'connect to an instance directly: find one with GET /v1/services/{service}/pick (or switchboard pick)' });
      this.count(err.code);
      const body = JSON.stringify(err.toProblem());
      socket.end(`HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
    });
  }

  /** The proxy's counters on /metrics. */
  registerMetrics(registry: client.Registry): void {
    const stats = this.stats;
    new client.Counter({
      name: 'switchboard_proxy_requests_total',
      help: 'Requests to the service proxy, by outcome: proxied (answered by an instance, any status) or the code of the proxy\'s own answer',
      labelNames: ['outcome'] as const,
      registers: [registry],
      collect() {
        this.reset();
        for (const [outcome, n] of stats.outcomes) this.inc({ outcome }, n);
      },
    });
    mirroredCounter(registry, 'switchboard_proxy_retries_total', 'Requests the service proxy sent to another instance after one could not be reached', () => stats.retries);
    mirroredCounter(registry, 'switchboard_proxy_ejections_total', 'Times the service proxy left an instance it could not reach out of its picks', () => stats.ejections);
    new client.Gauge({ name: 'switchboard_proxy_inflight', help: 'Requests being proxied', registers: [registry], collect() { this.set(stats.inflight); } });
  }

  /** Listens; resolves with the bound address. */
  listen(host: string, port: number): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve(this.server.address() as AddressInfo);
      });
    });
  }

  /**
   * Stops taking requests: a request that still arrives on an open connection is answered
   * 503 with Connection: close, every answer in flight closes its connection when done,
   * and the answers in flight get up to PROXY_SHUTDOWN_GRACE_MS to finish before the
   * remaining connections are cut.
   */
  async close(): Promise<void> {
    this.closing = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    const force = setTimeout(() => this.server.closeAllConnections(), PROXY_SHUTDOWN_GRACE_MS);
    force.unref();
    await closed;
    clearTimeout(force);
    await this.agent.close();
  }

  private count(outcome: string): void {
    this.stats.outcomes.set(outcome, (this.stats.outcomes.get(outcome) ?? 0) + 1);
  }

  /** Answers with the proxy's own problem; whatever is left of the request's body is read and dropped. */
  private refuse(req: IncomingMessage, res: ServerResponse, err: SwitchboardError): void {
    this.count(err.code);
    req.resume();
    if (res.headersSent) return void res.destroy();
    const body = JSON.stringify(err.toProblem());
    const headers: Record<string, string | number> = { 'content-type': 'application/problem+json', 'content-length': Buffer.byteLength(body) };
    if (err.retryAfterSec !== undefined) headers['retry-after'] = err.retryAfterSec;
    res.writeHead(err.status, headers).end(body);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (this.closing) {
      res.setHeader('connection', 'close');
      return this.refuse(req, res, new SwitchboardError('NOT_READY', 'the proxy is shutting down', { retryAfterSec: 1, hint: 'send the request to another proxy, or retry once this one is back' }));
    }
    if (this.stats.inflight >= this.o.maxInflight) {
      res.setHeader('connection', 'close');
      return this.refuse(req, res, new SwitchboardError('RATE_LIMITED', `${this.stats.inflight} requests are being proxied already`, { limit: 'PROXY_MAX_INFLIGHT', retryAfterSec: 1, hint: 'retry after a second, or spread the callers over more proxies' }));
    }
    this.stats.inflight++;
    const held = { bytes: 0 };
    const abort = new AbortController();
    res.once('close', () => {
      if (!res.writableFinished) abort.abort();
    });
    try {
      await this.forward(req, res, abort.signal, held);
    } catch (err) {
      if (err instanceof SwitchboardError) this.refuse(req, res, err);
      else if (abort.signal.aborted || req.destroyed) {
        // The client went away (mid-body, or timed out by the server): nothing to answer.
        this.count('client_gone');
        this.o.log?.('debug', `service proxy: the client left before its request was forwarded: ${(err as Error).message}`);
        res.destroy();
      } else {
        this.o.log?.('warn', `service proxy: ${(err as Error).message}`);
        this.refuse(req, res, new SwitchboardError('INTERNAL', 'the proxy failed on this request', { hint: 'retry; the node logs the cause' }));
      }
    } finally {
      this.stats.inflight--;
      this.buffered -= held.bytes;
    }
  }

  private async forward(req: IncomingMessage, res: ServerResponse, signal: AbortSignal, held: { bytes: number }): Promise<void> {
    let url = req.url ?? '/';
    // An absolute-form target (`GET http://host/orders/a`, RFC 9112 3.2.2) is routed by its path.
    if (/^https?:\/\//i.test(url) && URL.canParse(url)) {
      const u = new URL(url);
      url = `${u.pathname}${u.search}`;
    }
    const m = /^\/([^/?#]*)(.*)$/.exec(url);
    let name: string;
    try {
      name = decodeURIComponent(m?.[1] ?? '');
    } catch {
      throw new SwitchboardError('INVALID_ARGUMENT', `${JSON.stringify(String(m?.[1]).slice(0, 64))} is not a percent-encoded service name`, { field: 'service', hint: 'name the service in the first path segment, like /orders/api/items' });
    }
    if (name === '') {
      throw new SwitchboardError('NOT_FOUND', `${url.slice(0, 200)} names no service`, { hint: 'ask for /SERVICE/PATH, like /orders/api/items: the proxy sends /api/items to an instance of orders' });
    }
    const service = validateServiceName(name, 'service');
    const rest = m?.[2] ?? '';
    const path = rest === '' || rest.startsWith('?') ? `/${rest}` : rest;
    const via = String(req.headers.via ?? '');
    const hops = via.split(',').filter((v) => v.trim().endsWith(` ${VIA}`)).length;
    if (hops >= MAX_PROXY_HOPS) {
      throw new SwitchboardError('UPSTREAM_UNAVAILABLE', `the request has passed through Switchboard proxies ${hops} times: a loop (an instance of ${service} is a proxy itself?)`, { hint: `check the addresses of ${service}'s instances (GET /v1/services/${service})` });
    }
    const keyHeader = req.headers[KEY_HEADER];
    const key = typeof keyHeader === 'string' && keyHeader !== '' ? keyHeader.slice(0, 1024) : undefined;
    const body = await this.readBody(req, held);
    const headers = forwardHeaders(req, via);
    const tried: string[] = [];
    const failures: string[] = [];
    const method = req.method ?? 'GET';
    let mayHaveReached = false;
    for (let attempt = 0; attempt <= this.o.retries; attempt++) {
      const inst = this.pick(service, tried, key);
      if (inst === undefined) {
        if (tried.length > 0) break;
        throw this.noInstance(service);
      }
      if (attempt > 0) this.stats.retries++;
      tried.push(inst.id);
      const origin = `${inst.protocol}://${inst.address.includes(':') ? `[${inst.address}]` : inst.address}:${inst.port}`;
      let answer: Awaited<ReturnType<Agent['request']>>;
      // The answer's headers are awaited from the moment the attempt starts: undici's own
      // headersTimeout starts only once a connection takes the request, so a request queued
      // behind PROXY_MAX_CONNECTIONS_PER_INSTANCE long answers would wait without end.
      const headersDue = new AbortController();
      const timer = setTimeout(() => headersDue.abort(), this.o.headersTimeoutMs);
      try {
        answer = await this.agent.request({ origin, path, method: method as 'GET', headers, body, signal: AbortSignal.any([signal, headersDue.signal]), headersTimeout: this.o.headersTimeoutMs, bodyTimeout: this.o.bodyTimeoutMs });
      } catch (err) {
        if (signal.aborted) return;
        const code = errorCode(err);
        if (headersDue.signal.aborted || err instanceof undiciErrors.HeadersTimeoutError) {
          throw new SwitchboardError('UPSTREAM_TIMEOUT', `instance ${inst.id} of ${service} (${origin}) sent no answer within ${this.o.headersTimeoutMs} ms`, { hint: 'the instance is slow, hung, or busy with as many requests as the proxy keeps connections to it; the request was not sent to another one, since it may have been handled' });
        }
        if (REFUSED_BY_CLIENT.has(code)) {
          throw new SwitchboardError('INVALID_ARGUMENT', `the request cannot be forwarded as it is (${code}: ${(err as Error).message.slice(0, 200)})`, { hint: 'send a request target without a fragment (#) or characters a request line may not hold, and only standard headers' });
        }
        failures.push(`${inst.id} (${origin}): ${code}`);
        const notSent = NOT_SENT.has(code) || isTlsFailure(code);
        const retryable = notSent || (BROKEN.has(code) && IDEMPOTENT.has(method));
        if (notSent || BROKEN.has(code)) this.eject(inst);
        if (!retryable) {
          mayHaveReached = true;
          break;
        }
        continue;
      } finally {
        clearTimeout(timer);
      }
      const out: Record<string, string | string[]> = {};
      const named = connectionTokens(answer.headers.connection);
      for (const [k, v] of Object.entries(answer.headers)) if (v !== undefined && !HOP_BY_HOP.has(k) && !named.has(k)) out[k] = v;
      out['switchboard-instance'] = inst.id;
      if (this.closing) out.connection = 'close';
      res.writeHead(answer.statusCode, out);
      this.count('proxied');
      try {
        await pipeline(answer.body, res);
      } catch {
        // The client went away, or the instance broke off its answer: the answer is cut.
        res.destroy();
      }
      return;
    }
    throw new SwitchboardError('UPSTREAM_UNAVAILABLE', `no instance of ${service} could be reached: ${failures.join('; ')}`, {
      retryAfterSec: 1,
      hint: mayHaveReached
        ? `the connection broke after the ${method} was sent, so it may have been handled and was not sent to another instance; retry it if it is safe to`
        : `GET /v1/services/${service} shows its instances and their health`,
    });
  }

  private noInstance(service: string): SwitchboardError {
    return new SwitchboardError('NO_INSTANCE', `service ${service} in namespace ${this.o.namespace} has no http or https instance that can take traffic`, { retryAfterSec: 1, hint: `GET /v1/services/${service} shows its instances and their health` });
  }

  /** A pick that leaves out instances tried and, while others remain, those ejected (one step of the balancer). */
  private pick(service: string, tried: string[], key: string | undefined): Instance | undefined {
    const reg = this.o.registry;
    const svc = reg.service(this.o.namespace, service);
    const protectThreshold = reg.serviceSettings(this.o.namespace, service)?.protectThreshold ?? null;
    const ejected = this.ejectedOf(service);
    return this.pickers.pick(svc, { namespace: this.o.namespace, service, filter: NO_FILTER, strategy: this.o.strategy, key, count: 1, exclude: tried, avoid: ejected, protectThreshold, protocols: PROXIED_PROTOCOLS }).instances[0];
  }

  /** The instances of `service` left out of picks now (those whose time is up are forgotten). */
  private ejectedOf(service: string): string[] {
    const mine = this.ejected.get(service);
    if (mine === undefined) return [];
    const now = this.o.now();
    for (const [id, until] of mine) {
      if (until > now) continue;
      mine.delete(id);
      this.ejectedCount--;
    }
    if (mine.size === 0) this.ejected.delete(service);
    return [...mine.keys()];
  }

  private eject(inst: Instance): void {
    let mine = this.ejected.get(inst.service);
    if (mine === undefined) this.ejected.set(inst.service, (mine = new Map()));
    if (!mine.has(inst.id)) {
      // Full: the services that had instances ejected first forget theirs first (one
      // service alone is bounded by its own instances).
      for (const [service, ids] of this.ejected) {
        if (this.ejectedCount < PROXY_MAX_EJECTED || service === inst.service) break;
        this.ejectedCount -= ids.size;
        this.ejected.delete(service);
      }
      this.ejectedCount++;
    }
    mine.set(inst.id, this.o.now() + this.o.ejectMs);
    this.stats.ejections++;
    this.o.log?.('debug', `service proxy: ${inst.service}/${inst.id} could not be reached; left out of picks for ${this.o.ejectMs} ms`);
  }

  /** Reads the whole body, counting what it holds in `held` (released by handle). */
  private readBody(req: IncomingMessage, held: { bytes: number }): Promise<Buffer | null> {
    const max = this.o.maxBodyBytes;
    const busy = () => new SwitchboardError('RATE_LIMITED', `the proxy holds ${this.buffered} bytes of request bodies already`, { limit: 'PROXY_MAX_BUFFERED_BYTES', retryAfterSec: 1, hint: 'retry after a second, or send large bodies to an instance directly (GET /v1/services/{service}/pick)' });
    const declared = Number(req.headers['content-length'] ?? 0);
    const tooLarge = (n: number) => new SwitchboardError('PAYLOAD_TOO_LARGE', `the request body is ${n} bytes or more, above the proxy's ${max}`, { limit: 'PROXY_MAX_BODY_BYTES', hint: `send at most ${max} bytes through the proxy, or call an instance directly (GET /v1/services/{service}/pick)` });
    // (A refusal's answer reads and drops what is left of the body: refuse.)
    if (declared > max) return Promise.reject(tooLarge(declared));
    if (this.buffered + declared > this.o.maxBufferedBytes) return Promise.reject(busy());
    if (req.headers['content-length'] === undefined && req.headers['transfer-encoding'] === undefined) {
      req.resume();
      return Promise.resolve(null);
    }
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (c: Buffer) => {
        size += c.length;
        const over = size > max ? tooLarge(size) : this.buffered + c.length > this.o.maxBufferedBytes ? busy() : null;
        if (over) {
          req.removeAllListeners('data');
          reject(over);
          return;
        }
        held.bytes += c.length;
        this.buffered += c.length;
        chunks.push(c);
      });
      req.once('end', () => resolve(size === 0 ? null : Buffer.concat(chunks, size)));
      req.once('error', reject);
    });
  }
}

function errorCode(err: unknown): string {
  const e = err as { code?: unknown; cause?: { code?: unknown } };
  return String(e.cause?.code ?? e.code ?? (err as Error).name ?? 'error');
}

function connectionTokens(v: string | string[] | undefined): Set<string> {
  const text = Array.isArray(v) ? v.join(',') : (v ?? '');
  return new Set(text.split(',').map((t) => t.trim().toLowerCase()).filter((t) => t !== ''));
}

/** The request's headers for the instance: hop-by-hop ones out, forwarding ones in. */
function forwardHeaders(req: IncomingMessage, via: string): Record<string, string | string[]> {
  const drop = connectionTokens(req.headers.connection);
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(req.headers)) {
    // (Expect: Node has answered the 100-continue already, and the body is read in full.)
    if (v === undefined || HOP_BY_HOP.has(k) || drop.has(k) || k === 'host' || k === 'content-length' || k === 'expect') continue;
    out[k] = v;
  }
  const client = req.socket.remoteAddress ?? 'unknown';
  const xff = req.headers['x-forwarded-for'];
  out['x-forwarded-for'] = xff ? `${Array.isArray(xff) ? xff.join(', ') : xff}, ${client}` : client;
  if (req.headers.host !== undefined) out['x-forwarded-host'] = req.headers.host;
  out['x-forwarded-proto'] = 'http';
  out.via = `${via ? `${via}, ` : ''}${req.httpVersion} ${VIA}`;
  return out;
}
