/**
 * JSON requests to registry nodes over undici, with failover across endpoints. Errors are
 * typed: a problem+json answer becomes a RegistryError subclass, a node that cannot be
 * reached (or says NOT_READY / STORE_UNAVAILABLE) makes `any()` move to the next endpoint.
 */
import { rootCertificates } from 'node:tls';
import { Agent, request, type Dispatcher } from 'undici';
import { tlsFailureOf, type Problem } from '@switchboard/protocol';
import { AuthError, ProtocolError, RegistryError, RegistryUnavailableError, TlsError, registryError } from './errors.js';
import { deadline, sleep } from './time.js';
import { withTraceHeaders } from './trace-context.js';

/**
 * @internal The registry endpoints of a client and which one is preferred. A failure moves the
 * preference to the next endpoint, so that every stream and request of the client tends
 * to use the same node, and all of them move together when it fails.
 *
 * @example
 * const e = new Endpoints(['http://10.0.0.1:7700', 'http://10.0.0.2:7700']);
 * for (const url of e.order()) console.log(url);
 */
export class Endpoints {
  readonly list: readonly string[];
  private preferred = 0;
  /** Endpoints that asked us to wait (Retry-After on 429/503): not before this time. */
  private readonly coolUntil = new Map<string, number>();

  constructor(
    urls: readonly string[],
    private readonly now: () => number = () => performance.now(),
  ) {
    if (urls.length === 0) throw new RangeError('give at least one registry endpoint, such as http://127.0.0.1:7700');
    this.list = [...new Set(urls.map(normalizeEndpoint))];
  }

  /**
   * Every endpoint once, the preferred one first; endpoints still within the Retry-After
   * they asked for come last (the soonest usable first).
   */
  order(first?: string): string[] {
    const start = first === undefined ? this.preferred : Math.max(0, this.list.indexOf(first));
    const all = this.list.map((_, i) => this.list[(start + i) % this.list.length] as string);
    const ready = all.filter((u) => this.coolingMs(u) === 0);
    if (ready.length === all.length) return all;
    const cooling = all.filter((u) => this.coolingMs(u) > 0).sort((a, b) => this.coolingMs(a) - this.coolingMs(b));
    return [...ready, ...cooling];
  }

  /** The endpoint answered 429 or 503 with Retry-After: leave it alone for `ms`. */
  coolDown(url: string, ms: number): void {
    if (!(ms > 0)) return;
    const until = this.now() + Math.min(ms, MAX_RETRY_AFTER_MS);
    if ((this.coolUntil.get(url) ?? 0) < until) this.coolUntil.set(url, until);
    this.failed(url);
  }

  /** Milliseconds until `url` may be asked again (0: now). */
  coolingMs(url: string): number {
    const until = this.coolUntil.get(url);
    if (until === undefined) return 0;
    const left = until - this.now();
    if (left <= 0) {
      this.coolUntil.delete(url);
      return 0;
    }
    return left;
  }

  /** Milliseconds until some endpoint may be asked (0 when one may be asked now). */
  waitMs(): number {
    let min = Infinity;
    for (const u of this.list) min = Math.min(min, this.coolingMs(u));
    return min === Infinity ? 0 : min;
  }

  /** The endpoint after `url` in the list (the failover target). */
  after(url: string): string {
    const i = this.list.indexOf(url);
    return this.list[(i + 1) % this.list.length] as string;
  }

  succeeded(url: string): void {
    const i = this.list.indexOf(url);
    if (i >= 0) this.preferred = i;
  }

  failed(url: string): void {
    const i = this.list.indexOf(url);
    if (i === this.preferred) this.preferred = (i + 1) % this.list.length;
  }
}

/** @internal A Retry-After longer than this is taken as this (a misconfigured node must not park a client for hours). */
export const MAX_RETRY_AFTER_MS = 60_000;

/** @internal The wait a refusal asks for: 429 and 503 answers with Retry-After (or retryAfterSec). */
export function retryAfterOf(err: unknown): number {
  if (err instanceof RegistryError && (err.status === 429 || err.status === 503) && err.retryAfterMs !== undefined) return err.retryAfterMs;
  return 0;
}

/** @internal `http://host:port` without a trailing slash; refuses anything but http(s) URLs. */
export function normalizeEndpoint(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new RangeError(`registry endpoint "${url}" is not a URL; write it like http://127.0.0.1:7700`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new RangeError(`registry endpoint "${url}" must be http:// or https://`);
  return `${u.protocol}//${u.host}${u.pathname.replace(/\/+$/, '')}`;
}

/** @internal */
export type Query = Record<string, string | number | boolean | readonly string[] | undefined>;

/** @internal */
export interface RequestSpec {
  method: 'GET' | 'PUT' | 'POST' | 'DELETE';
  path: string;
  query?: Query;
  body?: unknown;
  headers?: Record<string, string>;
  signal?: AbortSignal;
  timeoutMs?: number;
}

/** @internal */
export interface JsonAnswer<T> {
  status: number;
  body: T;
  headers: Record<string, string | string[] | undefined>;
  endpoint: string;
}

/** @internal */
export function queryString(q: Query | undefined): string {
  if (!q) return '';
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) {
    if (v === undefined) continue;
    if (Array.isArray(v)) for (const x of v) p.append(k, x);
    else p.append(k, String(v));
  }
  const s = p.toString();
  return s === '' ? '' : `?${s}`;
}

/** @internal True for an error that says "try another node": unreachable, timed out, not ready. */
export function isUnavailable(err: unknown): boolean {
  if (err instanceof RegistryError) return err.code === 'NOT_READY' || err.code === 'STORE_UNAVAILABLE' || err.status >= 500;
  return !(err instanceof ProtocolError) && !(err instanceof RangeError) && !(err instanceof TlsError);
}

/** @internal `err` as a TlsError when it is a TLS failure of a connection to `endpoint` (a registry node). */
export function tlsErrorOf(err: unknown, endpoint: string): TlsError | undefined {
  if (err instanceof TlsError) return err;
  const failure = tlsFailureOf(err);
  return failure === undefined ? undefined : new TlsError(endpoint, failure, err);
}

/**
 * @internal A refusal that waiting does not change (the token, the certificate): the client stops what
 * needed it instead of retrying, and says it once.
 */
export type AccessError = AuthError | TlsError;

/** @internal */
export function isAccessError(err: unknown): err is AccessError {
  return err instanceof AuthError || err instanceof TlsError;
}

/**
 * @internal Registry HTTP client settings.
 *
 * @example
 * const http = new RegistryHttp(new Endpoints(['http://127.0.0.1:7700']), { requestTimeoutMs: 2000 });
 */
export interface RegistryHttpOptions {
  /** Longest time for one request to one node. Default 5 s. */
  requestTimeoutMs?: number;
  /** Longest time to open a TCP connection to a node. Default 2 s. */
  connectTimeoutMs?: number;
  /** A bearer token sent to registry nodes (never to instances). Default: none. */
  token?: string | null;
  /** CA certificates (PEM) trusted for https:// registry nodes, besides Node's own. Default: Node's only. */
  ca?: readonly (string | Buffer)[] | null;
}

/** @internal A bearer token as a header value can carry it: visible ASCII, no spaces. */
export function checkToken(token: string, where: string): string {
  if (!/^[\x21-\x7e]+$/.test(token)) throw new RangeError(`${where} must be the token itself: visible ASCII characters without spaces or line breaks`);
  return token;
}

/**
 * @internal JSON calls to registry nodes.
 *
 * @example
 * const http = new RegistryHttp(new Endpoints(['http://127.0.0.1:7700']));
 * const { body } = await http.any<NodeStatus>({ method: 'GET', path: '/v1/status' });
 */
export class RegistryHttp {
  readonly dispatcher: Agent;
  /** Headers every registry request carries (Authorization when there is a token). */
  readonly authHeaders: Readonly<Record<string, string>>;
  /** The CAs trusted for https:// nodes (also by the session WebSocket); undefined: Node's default. */
  readonly ca: (string | Buffer)[] | undefined;
  /** Longest time for one request to one node. */
  readonly requestTimeoutMs: number;

  constructor(readonly endpoints: Endpoints, opts: RegistryHttpOptions = {}) {
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 5_000;
    this.authHeaders = opts.token ? { authorization: `Bearer ${opts.token}` } : {};
    // Registry connections are few and long-lived; streams (watch) need no body timeout.
    // Node's `ca` replaces its own CAs: they are kept, so that public nodes still verify.
    this.ca = opts.ca ? [...rootCertificates, ...opts.ca] : undefined;
    this.dispatcher = new Agent({ connect: { timeout: opts.connectTimeoutMs ?? 2_000, ...(this.ca ? { ca: this.ca } : {}) }, keepAliveTimeout: 30_000, bodyTimeout: 0, headersTimeout: 0 });
  }

  /** One request to one node. Throws RegistryError on an error answer. */
  async call<T>(endpoint: string, spec: RequestSpec): Promise<JsonAnswer<T>> {
    const dl = deadline(`${spec.method} ${endpoint}${spec.path}`, spec.timeoutMs ?? this.requestTimeoutMs, spec.signal);
    try {
      const res = await request(endpoint + spec.path + queryString(spec.query), {
        method: spec.method,
        dispatcher: this.dispatcher,
        signal: dl.signal,
        headers: withTraceHeaders({ accept: 'application/json', ...(spec.body === undefined ? {} : { 'content-type': 'application/json' }), ...spec.headers, ...this.authHeaders }),
        body: spec.body === undefined ? null : JSON.stringify(spec.body),
      });
      const text = await res.body.text();
      return { status: res.statusCode, body: parseAnswer<T>(res, text, endpoint), headers: res.headers, endpoint };
    } catch (err) {
      if (dl.signal.aborted) throw dl.signal.reason;
      // A certificate this client cannot verify: the same on every attempt.
      const tls = tlsErrorOf(err, endpoint);
      if (tls !== undefined) throw tls;
      this.endpoints.coolDown(endpoint, retryAfterOf(err));
      throw err;
    } finally {
      dl.done();
    }
  }

  /**
   * The request on the preferred node, failing over to the others when a node is
   * unreachable or not ready; RegistryUnavailableError when none answers.
   */
  async any<T>(spec: RequestSpec): Promise<JsonAnswer<T>> {
    let last: unknown;
    for (const endpoint of this.endpoints.order()) {
      // Every node left asked us to wait: wait (within the request's time), never ask early.
      const wait = this.endpoints.coolingMs(endpoint);
      if (wait > 0) {
        if (last !== undefined || wait > (spec.timeoutMs ?? this.requestTimeoutMs)) break;
        await sleep(wait, spec.signal);
      }
      try {
        const answer = await this.call<T>(endpoint, spec);
        this.endpoints.succeeded(endpoint);
        return answer;
      } catch (err) {
        if (spec.signal?.aborted) throw spec.signal.reason;
        if (!isUnavailable(err)) throw err;
        this.endpoints.failed(endpoint);
        last = err;
      }
    }
    throw new RegistryUnavailableError(this.endpoints.list, last);
  }

  async close(): Promise<void> {
    await this.dispatcher.destroy().catch(() => undefined);
  }
}

function parseAnswer<T>(res: Dispatcher.ResponseData, text: string, endpoint: string): T {
  let body: unknown;
  try {
    body = text === '' ? undefined : JSON.parse(text);
  } catch {
    if (res.statusCode >= 500) {
      throw registryError({ type: 'about:blank', title: 'Bad gateway', status: res.statusCode, detail: `${endpoint} answered ${res.statusCode} without a problem body`, code: 'INTERNAL' }, endpoint);
    }
    throw new ProtocolError(`${endpoint} answered ${res.statusCode} with a body that is not JSON`);
  }
  if (res.statusCode >= 400) {
    const p = body as Partial<Problem> | undefined;
    if (!p || typeof p.code !== 'string') {
      throw registryError({ type: 'about:blank', title: 'Error', status: res.statusCode, detail: `${endpoint} answered ${res.statusCode}`, code: 'INTERNAL' }, endpoint);
    }
    const problem: Problem = { ...(p as Problem), status: res.statusCode };
    const header = retryAfterHeader(res.headers['retry-after']);
    if (problem.retryAfterSec === undefined && header !== undefined) problem.retryAfterSec = header;
    throw registryError(problem, endpoint);
  }
  return body as T;
}

/** @internal Retry-After in seconds (delta-seconds or an HTTP date), undefined when absent or unreadable. */
export function retryAfterHeader(v: string | string[] | undefined): number | undefined {
  const s = Array.isArray(v) ? v[0] : v;
  if (s === undefined || s.trim() === '') return undefined;
  if (/^\d+$/.test(s.trim())) return Number(s.trim());
  const at = Date.parse(s);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}
