/**
 * The one HTTP helper of the operator commands: JSON requests to the agent, SSE streams,
 * and the mapping of every failure onto two typed errors: ApiError (the agent answered
 * with an error, normally application/problem+json) and UnreachableError (no answer).
 */
import { rootCertificates } from 'node:tls';
import { Agent, errors as undiciErrors, request, type Dispatcher } from 'undici';
import { tlsFailureOf, type Problem, type TlsFailureKind } from '@switchboard/protocol';

export const DEFAULT_ADDR = 'http://127.0.0.1:7700';

/** How long a plain request may wait for the agent's answer. */
const REQUEST_TIMEOUT_MS = 30_000;
const CONNECT_TIMEOUT_MS = 10_000;

/** An error answer from the agent. `code` is the contract's code, or HTTP_<status> for a foreign answer. */
export class ApiError extends Error {
  readonly code: string;
  readonly status: number;
  readonly hint: string | undefined;
  readonly field: string | undefined;
  readonly limit: string | undefined;
  readonly retryAfterSec: number | undefined;

  constructor(status: number, problem: Partial<Problem> & { code?: string }, retryAfterSec?: number) {
    super(problem.detail ?? problem.title ?? `HTTP ${status}`);
    this.name = 'ApiError';
    this.status = status;
    this.code = problem.code ?? `HTTP_${status}`;
    this.hint = problem.hint;
    this.field = problem.field;
    this.limit = problem.limit;
    this.retryAfterSec = problem.retryAfterSec ?? retryAfterSec;
  }

  /** Worth retrying later: rate limits and a store or node that is not ready. */
  get retryable(): boolean {
    return this.status === 429 || this.status === 503;
  }
}

/** No answer: connection refused, DNS failure, timeout, connection reset, a TLS failure (with its own hint). */
export class UnreachableError extends Error {
  constructor(
    readonly addr: string,
    readonly reason: string,
    readonly hint?: string,
  ) {
    super(`cannot reach the agent at ${addr}: ${reason}`);
    this.name = 'UnreachableError';
  }
}

export type QueryValue = string | number | boolean | string[] | undefined | null;
export type QueryParams = Record<string, QueryValue>;

export interface RequestOptions {
  query?: QueryParams;
  body?: unknown;
  signal?: AbortSignal;
  /** How long to wait for the answer's headers (default 30 s): for requests that wait on purpose. */
  answerTimeoutMs?: number;
}

export interface StreamOptions {
  query?: QueryParams;
  headers?: Record<string, string>;
  signal?: AbortSignal;
  /** The stream is considered dead after this long without a byte (heartbeats count). */
  idleTimeoutMs: number;
}

export interface OpenStream {
  headers: Record<string, string | string[] | undefined>;
  body: AsyncIterable<Buffer>;
}

/** `/v1/services/{service}/...` with every segment percent-encoded. */
export function apiPath(...segments: string[]): string {
  return '/' + segments.map((s) => encodeURIComponent(s)).join('/');
}

function queryString(q: QueryParams | undefined): string {
  if (!q) return '';
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) {
    if (v === undefined || v === null || v === false) continue;
    for (const one of Array.isArray(v) ? v : [v]) p.append(k, String(one));
  }
  const s = p.toString();
  return s === '' ? '' : '?' + s;
}

/** Describes a network-level failure in a few words. */
const CLOSED_WITHOUT_ANSWER = 'the connection was closed by the other side';

function networkReason(err: unknown): string | undefined {
  const e = err as { code?: string; message?: string; cause?: unknown; errors?: unknown[] };
  if (err instanceof undiciErrors.HeadersTimeoutError) return `no answer within ${REQUEST_TIMEOUT_MS / 1000}s`;
  if (err instanceof undiciErrors.BodyTimeoutError) return 'the answer stalled';
  if (err instanceof undiciErrors.ConnectTimeoutError) return `connecting timed out after ${CONNECT_TIMEOUT_MS / 1000}s`;
  if (err instanceof undiciErrors.SocketError) return CLOSED_WITHOUT_ANSWER;
  if (err instanceof undiciErrors.ResponseError) return e.message ?? 'a malformed answer';
  if (e && typeof e.code === 'string') {
    if (e.code === 'ECONNREFUSED') return 'connection refused';
    if (e.code === 'ENOTFOUND' || e.code === 'EAI_AGAIN') return `the host name does not resolve (${e.code})`;
    if (e.code === 'ECONNRESET' || e.code === 'EPIPE') return 'the connection was reset';
    if (e.code === 'ETIMEDOUT' || e.code === 'EHOSTUNREACH' || e.code === 'ENETUNREACH') return `the host is unreachable (${e.code})`;
    if (e.code.startsWith('UND_ERR') || e.code.startsWith('E')) return `${e.message ?? e.code} (${e.code})`;
  }
  if (e && Array.isArray(e.errors) && e.errors.length > 0) return networkReason(e.errors[0]); // AggregateError of happy eyeballs
  if (e && e.cause) return networkReason(e.cause);
  return undefined;
}

function isAbort(err: unknown, signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true || (err as { name?: string })?.name === 'AbortError';
}

function header(headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Turns a non-2xx answer into an ApiError, whatever its body. */
async function errorOf(statusCode: number, headers: Record<string, string | string[] | undefined>, body: Dispatcher.ResponseData['body']): Promise<ApiError> {
  const text = await body.text().catch(() => '');
  const ra = header(headers, 'retry-after');
  const retryAfter = ra !== undefined && /^\d+$/.test(ra) ? Number(ra) : undefined;
  try {
    const parsed = JSON.parse(text) as Partial<Problem>;
    if (parsed && typeof parsed === 'object' && (typeof parsed.code === 'string' || typeof parsed.detail === 'string')) {
      return new ApiError(statusCode, parsed, retryAfter);
    }
  } catch {
    // not JSON: a proxy or another server answered
  }
  const snippet = text.replace(/\s+/g, ' ').trim().slice(0, 200);
  return new ApiError(statusCode, {
    detail: `the server answered HTTP ${statusCode}${snippet ? `: ${snippet}` : ' with no body'}`,
    hint: 'check that --addr (or SWITCHBOARD_ADDR) points at a Switchboard agent',
  }, retryAfter);
}

export interface ApiClientOptions {
  /** A bearer token sent with every request (agents started with a token file require one). */
  token?: string;
  /** CA certificates (PEM) trusted for an https:// agent, besides Node's own. */
  ca?: string;
}

/** What the CLI says about each kind of TLS failure (protocol's tlsFailureOf), and what to change. */
const TLS_TEXT: Readonly<Record<TlsFailureKind, { reason: string; hint: string }>> = {
  untrusted: { reason: "the agent's TLS certificate is not trusted", hint: "give the CA that signed the agent's certificate with --ca-file FILE or SWITCHBOARD_CA_FILE=FILE" },
  name: { reason: "the agent's TLS certificate is not for this address", hint: 'use the name or address the certificate was issued for in --addr (see its subjectAltName)' },
  time: { reason: "the agent's TLS certificate is not valid now", hint: "renew the agent's certificate (or check this machine's clock)" },
  plain: { reason: 'the agent does not answer with TLS', hint: 'give the address as http:// (the agent serves HTTPS only with --tls-cert-file)' },
};

/** A TLS failure in a few words and what to do about it; undefined for other failures. */
export function tlsFailure(err: unknown): { reason: string; hint: string } | undefined {
  const failure = tlsFailureOf(err);
  if (failure === undefined) return undefined;
  const text = TLS_TEXT[failure.kind];
  return { reason: `${text.reason} (${failure.code})`, hint: text.hint };
}

export class ApiClient {
  private readonly dispatcher: Agent;
  private readonly prefix: string;
  private readonly origin: string;
  private readonly auth: Record<string, string>;

  /** `addr` is an http(s) URL, already checked by parseAddr(). */
  constructor(
    readonly addr: string,
    opts: ApiClientOptions = {},
  ) {
    this.auth = opts.token === undefined ? {} : { authorization: `Bearer ${opts.token}` };
    const u = new URL(addr);
    this.origin = u.origin;
    this.prefix = u.pathname.replace(/\/+$/, '');
    // Node's `ca` replaces its own CAs: they are kept, so that a public certificate still verifies.
    const ca = opts.ca === undefined ? {} : { ca: [...rootCertificates, opts.ca] };
    this.dispatcher = new Agent({ connect: { timeout: CONNECT_TIMEOUT_MS, ...ca }, headersTimeout: REQUEST_TIMEOUT_MS, bodyTimeout: REQUEST_TIMEOUT_MS });
  }

  url(path: string, query?: QueryParams): string {
    return this.origin + this.prefix + path + queryString(query);
  }

  private async send(method: Dispatcher.HttpMethod, path: string, opts: { query?: QueryParams; body?: unknown; headers?: Record<string, string>; signal?: AbortSignal; bodyTimeout?: number; headersTimeout?: number }): Promise<Dispatcher.ResponseData> {
    const headers: Record<string, string> = { accept: 'application/json', ...opts.headers, ...this.auth };
    let body: string | undefined;
    if (opts.body !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(opts.body);
    }
    try {
      return await request(this.url(path, opts.query), {
        method,
        headers,
        body,
        dispatcher: this.dispatcher,
        signal: opts.signal,
        ...(opts.bodyTimeout !== undefined ? { bodyTimeout: opts.bodyTimeout } : {}),
        ...(opts.headersTimeout !== undefined ? { headersTimeout: opts.headersTimeout } : {}),
      });
    } catch (err) {
      if (isAbort(err, opts.signal)) throw err;
      const tls = tlsFailure(err);
      if (tls) throw new UnreachableError(this.addr, tls.reason, tls.hint);
      const reason = networkReason(err) ?? (err instanceof Error ? err.message : String(err));
      // An agent serving HTTPS closes a plain connection without a word.
      const plainToTls = reason === CLOSED_WITHOUT_ANSWER && this.addr.startsWith('http://');
      throw new UnreachableError(this.addr, reason, plainToTls ? `if the agent serves HTTPS (it was started with --tls-cert-file), give the address as https://${this.addr.slice('http://'.length)}` : undefined);
    }
  }

  /** One JSON request; resolves to the parsed 2xx body, rejects with ApiError or UnreachableError. */
  async request<T>(method: Dispatcher.HttpMethod, path: string, opts: RequestOptions = {}): Promise<T> {
    const res = await this.send(method, path, { ...opts, ...(opts.answerTimeoutMs !== undefined ? { headersTimeout: opts.answerTimeoutMs } : {}) });
    if (res.statusCode < 200 || res.statusCode >= 300) throw await errorOf(res.statusCode, res.headers, res.body);
    let text: string;
    try {
      text = await res.body.text();
    } catch (err) {
      if (isAbort(err, opts.signal)) throw err;
      throw new UnreachableError(this.addr, networkReason(err) ?? 'the answer was cut off');
    }
    if (text === '') return undefined as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new ApiError(res.statusCode, { detail: `the answer to ${method} ${path} is not JSON`, hint: 'check that --addr (or SWITCHBOARD_ADDR) points at a Switchboard agent' });
    }
  }

  /** Opens a long-lived GET (the SSE watch). Rejects like request() when it is refused. */
  async stream(path: string, opts: StreamOptions): Promise<OpenStream> {
    const res = await this.send('GET', path, {
      query: opts.query,
      headers: { accept: 'text/event-stream', ...opts.headers },
      signal: opts.signal,
      bodyTimeout: opts.idleTimeoutMs,
    });
    if (res.statusCode < 200 || res.statusCode >= 300) throw await errorOf(res.statusCode, res.headers, res.body);
    const type = header(res.headers, 'content-type') ?? '';
    if (!type.startsWith('text/event-stream')) {
      res.body.destroy();
      throw new ApiError(res.statusCode, { detail: `expected an event stream from ${path}, got ${type || 'no content type'}`, hint: 'check that --addr (or SWITCHBOARD_ADDR) points at a Switchboard agent' });
    }
    return { headers: res.headers, body: res.body };
  }

  /** Describes a failure while reading an open stream. */
  streamFailure(err: unknown): string {
    return networkReason(err) ?? (err instanceof Error ? err.message : String(err));
  }

  async close(): Promise<void> {
    await this.dispatcher.destroy().catch(() => undefined);
  }
}

/**
 * Checks --addr / SWITCHBOARD_ADDR: an http or https URL; `host:port` alone means http.
 * Returns the normalised URL or an error message.
 */
export function parseAddr(text: string): { ok: true; url: string } | { ok: false; message: string } {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(text) ? text : `http://${text}`;
  let u: URL;
  try {
    u = new URL(withScheme);
  } catch {
    // Not quoted: it may hold credentials.
    return { ok: false, message: `the address is not a URL; write it like http://127.0.0.1:7700` };
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return { ok: false, message: `"${masked(u)}" must be an http:// or https:// URL` };
  if (u.search !== '' || u.hash !== '' || u.username !== '' || u.password !== '') {
    return { ok: false, message: `"${masked(u)}" must be a plain base URL like http://127.0.0.1:7700 (no query, fragment or credentials)` };
  }
  return { ok: true, url: u.origin + u.pathname.replace(/\/+$/, '') };
}

/** A URL as quoted in a message: without its credentials and query, which may hold a secret (CI logs keep stderr). */
function masked(u: URL): string {
  return `${u.protocol}//${u.username !== '' || u.password !== '' ? '***@' : ''}${u.host}${u.pathname}${u.search !== '' ? '?…' : ''}${u.hash !== '' ? '#…' : ''}`;
}
