/**
 * Bearer tokens for the HTTP API (off unless the agent is given a token file). Each token
 * has a scope: `read` (GET requests and the watch stream), `write` (everything, the
 * session stream included) or `forward` (only the consumer reports a cp node forwards to
 * another: the credential nodes call each other with, good for nothing else). Tokens are kept as SHA-256 digests only and compared in
 * constant time against every known token, so that neither the answer's timing nor a log
 * line can tell anything about them.
 */
// Through the module object (crypto.timingSafeEqual), so that a test can watch the compare.
import crypto from 'node:crypto';
import type { Socket } from 'node:net';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { SESSION_PATH, SwitchboardError } from '@switchboard/protocol';
import { FORWARDED_REPORT_HEADER } from '../engines/engine.js';
import { sendProblem } from './problem.js';

export const API_SCOPES = ['read', 'write', 'forward'] as const;
export type ApiScope = (typeof API_SCOPES)[number];

/**
 * A token shorter than this is refused at start (API_TOKEN_TOO_SHORT). The node cannot
 * tell how random a token is, only how long: 32 characters is the length at which a
 * random token in the poorest usual alphabet, hex, carries 128 bits (openssl rand -hex 16),
 * beyond any guessing, online or offline; base64 of that length carries 192. The 16
 * taken before let a random hex token carry 64 bits.
 */
export const MIN_TOKEN_LENGTH = 32;
/** A token longer than this is refused at start (and cannot fit a header comfortably). */
export const MAX_TOKEN_LENGTH = 512;
/** The most tokens one file may hold. */
export const MAX_TOKENS = 1000;
/** RFC 6750's b64token: the characters a bearer token may have in a header. */
const TOKEN_CHARS = /^[A-Za-z0-9\-._~+/]+=*$/;

/** A known token: its digest (never the token itself) and its scope. */
export interface ApiToken {
  readonly digest: Buffer;
  readonly scope: ApiScope;
}

/**
 * A token file that cannot be used; `line` is 1-based, null for the whole file; `code`:
 * API_TOKEN_TOO_SHORT for a token under MIN_TOKEN_LENGTH, INVALID_CONFIG for anything
 * else. The message never holds a token.
 */
export class TokenFileError extends Error {
  constructor(
    readonly line: number | null,
    message: string,
    readonly hint: string,
    readonly code: 'API_TOKEN_TOO_SHORT' | 'INVALID_CONFIG' = 'INVALID_CONFIG',
  ) {
    super(line === null ? message : `line ${line}: ${message}`);
    this.name = 'TokenFileError';
  }
}

const FORMAT_HINT = 'write one token per line as "SCOPE TOKEN" (SCOPE read, write or forward), for example "write 3f9a0c1e5b7d2f4a6c8e0b1d3f5a7c9e"; a # starts a comment, blank lines are ignored';

/**
 * The token a cp node sends when it forwards a consumer report to another node (nodes of a
 * cluster share their token file): the file's first `forward` token, else its first
 * `write` token (files written before the forward scope); `line` is 1-based.
 */
export interface ForwardToken {
  token: string;
  scope: 'forward' | 'write';
  line: number;
}

const digestOf = (token: string): Buffer => crypto.createHash('sha256').update(token, 'utf8').digest();

/**
 * Parses a token file: `SCOPE TOKEN` per line, `#` comments (a line or its end) and blank lines allowed.
 * `forward` is the token a cp node forwards consumer reports with (see ForwardToken).
 */
export function parseTokenFile(text: string): { tokens: ApiToken[]; forward: ForwardToken | null } {
  const tokens: ApiToken[] = [];
  let firstForward: ForwardToken | null = null;
  let firstWrite: ForwardToken | null = null;
  const seen = new Map<string, number>();
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    // A comment takes a line of its own or ends one (a token has no "#").
    const line = (lines[i] as string).replace(/(^|\s)#.*$/, '').trim();
    if (line === '') continue;
    const { entry, token } = parseLine(line, i + 1);
    if (entry.scope === 'forward') firstForward ??= { token, scope: 'forward', line: i + 1 };
    if (entry.scope === 'write') firstWrite ??= { token, scope: 'write', line: i + 1 };
    const key = entry.digest.toString('hex');
    const first = seen.get(key);
    if (first !== undefined) throw new TokenFileError(i + 1, `the token is the same as on line ${first}`, 'give each token once, with one scope');
    seen.set(key, i + 1);
    tokens.push(entry);
    if (tokens.length > MAX_TOKENS) throw new TokenFileError(i + 1, `more than ${MAX_TOKENS} tokens (limit MAX_TOKENS)`, `keep at most ${MAX_TOKENS} tokens in the file`);
  }
  if (tokens.length === 0) {
    throw new TokenFileError(null, 'the file holds no token: every API request would be refused', `${FORMAT_HINT}; to leave the API open, do not set the token file`);
  }
  return { tokens, forward: firstForward ?? firstWrite };
}

function parseLine(line: string, n: number): { entry: ApiToken; token: string } {
  const fields = line.split(/\s+/);
  const [scope, token] = fields;
  if (fields.length !== 2 || token === undefined) throw new TokenFileError(n, `expected "SCOPE TOKEN", found ${fields.length} field(s)`, FORMAT_HINT);
  if (!(API_SCOPES as readonly string[]).includes(scope as string)) {
    throw new TokenFileError(n, `the scope must be read, write or forward`, `${FORMAT_HINT}; write implies read, forward allows only the reports cp nodes forward to each other`);
  }
  if (token.length < MIN_TOKEN_LENGTH) {
    throw new TokenFileError(n, `the token has ${token.length} characters, fewer than ${MIN_TOKEN_LENGTH} (MIN_TOKEN_LENGTH: 128 random bits written in hex)`, 'replace it with a long random token, for example the output of: openssl rand -hex 32', 'API_TOKEN_TOO_SHORT');
  }
  if (token.length > MAX_TOKEN_LENGTH) {
    throw new TokenFileError(n, `the token has ${token.length} characters, more than ${MAX_TOKEN_LENGTH} (MAX_TOKEN_LENGTH)`, 'use a shorter random token, for example the output of: openssl rand -hex 32');
  }
  if (!TOKEN_CHARS.test(token)) {
    throw new TokenFileError(n, 'the token has characters a bearer token may not have', 'use letters, digits and - . _ ~ + / (and = at the end), for example: openssl rand -hex 32');
  }
  return { entry: { digest: digestOf(token), scope: scope as ApiScope }, token };
}

/** The tokens a node accepts; replaced as a whole when the file is read again. */
export class ApiTokens {
  #tokens: readonly ApiToken[];
  /**
   * Open watch streams and sessions, with the digest of the token they were opened with: a
   * token taken out of the file (SIGHUP) also ends them, not only later requests. Entries
   * go when their connection closes.
   */
  readonly #connections = new Map<Socket, { digest: Buffer; needed: ApiScope }>();

  constructor(tokens: readonly ApiToken[]) {
    this.#tokens = tokens;
  }

  /**
   * New tokens; connections whose token is no longer among them, or no longer has the
   * scope their route needs (a session's token turned from write to read: the session
   * carries writes), are closed.
   */
  replace(tokens: readonly ApiToken[]): number {
    this.#tokens = tokens;
    let closed = 0;
    for (const [socket, { digest, needed }] of this.#connections) {
      const scope = this.#scopeOfDigest(digest);
      if (scope !== null && (needed !== 'write' || scope === 'write')) continue;
      this.#connections.delete(socket);
      socket.destroy();
      closed++;
    }
    return closed;
  }

  /** Notes the token a connection's request was let through with, and the scope its route needs. */
  track(socket: Socket | null | undefined, token: string, needed: ApiScope): void {
    if (!socket || socket.destroyed) return;
    if (!this.#connections.has(socket)) socket.once('close', () => this.#connections.delete(socket));
    this.#connections.set(socket, { digest: digestOf(token), needed });
  }

  /** How many tokens of each scope there are (for the logs). */
  counts(): Record<ApiScope, number> {
    const out = { read: 0, write: 0, forward: 0 };
    for (const t of this.#tokens) out[t.scope]++;
    return out;
  }

  /**
   * The scope of `token`, or null when it is not known. Its digest is compared with every
   * known digest (timingSafeEqual, equal lengths), without stopping at a match.
   */
  scopeOf(token: string): ApiScope | null {
    return this.#scopeOfDigest(digestOf(token));
  }

  #scopeOfDigest(digest: Buffer): ApiScope | null {
    let scope: ApiScope | null = null;
    for (const t of this.#tokens) {
      if (crypto.timingSafeEqual(digest, t.digest)) scope = t.scope;
    }
    return scope;
  }
}

/** Why a request was refused; the label of switchboard_http_auth_refused_total. */
export const AUTH_REFUSALS = ['missing', 'malformed', 'unknown', 'scope'] as const;
export type AuthRefusal = (typeof AUTH_REFUSALS)[number];

export interface AuthOptions {
  tokens: ApiTokens;
  /** GET /metrics without a token (a scraper that cannot send one). */
  metricsOpen: boolean;
  /** Counts one refusal. */
  refused: (reason: AuthRefusal) => void;
}

const TOKEN_HINT = 'send the header Authorization: Bearer <token> (SDK: the token option or SWITCHBOARD_TOKEN; CLI: --token or SWITCHBOARD_TOKEN)';

/** Routes whose answer stays open (the watch stream, the session WebSocket). */
const LONG_LIVED_ROUTES: ReadonlySet<string> = new Set(['/v1/watch', SESSION_PATH]);

/** The route of consumer reports: with FORWARDED_REPORT_HEADER, the one a forward token may call. */
const REPORTS_ROUTE = '/v1/services/:service/instances/:instanceId/reports';

/** Routes open without a token: the probes and the dashboard's files (which hold no data). */
const OPEN_ROUTES: ReadonlySet<string> = new Set(['/healthz', '/readyz', '/', '/ui', '/ui/*']);

/**
 * The scope a request needs, or null when it needs none. Decided by the route the router
 * matched (`route`: Fastify's `routeOptions.url`), never by the text of the URL: the router
 * reads a request line such as `GET http://host/v1/services` or `/%76%31/services` as
 * /v1/services, and a check of the text let those through. Open routes are listed; every
 * other request, one that matched no route included, needs a token (fail closed).
 */
export function scopeNeeded(method: string, route: string | undefined, metricsOpen: boolean): ApiScope | null {
  if (route !== undefined && OPEN_ROUTES.has(route)) return null;
  if (route === '/metrics' && metricsOpen) return null;
  if (route === SESSION_PATH) return 'write'; // the session grants and keeps leases
  return method === 'GET' || method === 'HEAD' ? 'read' : 'write';
}

/** The bearer token of an Authorization header; null when there is none, undefined when it is not a bearer token. */
export function bearerOf(header: string | undefined): string | null | undefined {
  if (header === undefined || header.trim() === '') return null;
  const m = /^Bearer +(\S+) *$/i.exec(header);
  return m ? (m[1] as string) : undefined;
}

export function unauthenticated(reason: Exclude<AuthRefusal, 'scope'>): SwitchboardError {
  if (reason === 'missing') return new SwitchboardError('UNAUTHENTICATED', 'this node requires a bearer token and the request has none', { hint: TOKEN_HINT });
  if (reason === 'malformed') return new SwitchboardError('UNAUTHENTICATED', 'the Authorization header is not a bearer token', { field: 'Authorization', hint: TOKEN_HINT });
  return new SwitchboardError('UNAUTHENTICATED', 'the bearer token is not one this node accepts', {
    field: 'Authorization',
    hint: "check the token (a copy may have lost characters); the node's operator lists the accepted tokens in its token file",
  });
}

export function forbidden(): SwitchboardError {
  return new SwitchboardError('FORBIDDEN', 'the token may read but not write', {
    hint: 'writes (PUT, POST, DELETE) and the session stream need a token of scope write',
  });
}

export function forwardOnly(): SwitchboardError {
  return new SwitchboardError('FORBIDDEN', 'the token has scope forward: it only forwards consumer reports from one cp node to another', {
    hint: 'give clients a token of scope read or write; forward tokens are for the nodes of a cp cluster',
  });
}

/** A consumer report one cp node forwards to another: what a forward token may do. */
function isForwardedReport(req: { method: string; routeOptions: { url?: string | undefined }; headers: Record<string, string | string[] | undefined> }): boolean {
  return req.method === 'POST' && req.routeOptions.url === REPORTS_ROUTE && req.headers[FORWARDED_REPORT_HEADER] !== undefined;
}

/** The check of one request: null when it may go on, else the refusal. */
export function authorize(req: { method: string; routeOptions: { url?: string | undefined }; headers: Record<string, string | string[] | undefined> }, opts: AuthOptions): { reason: AuthRefusal; needed?: ApiScope; error: SwitchboardError } | null {
  const needed = scopeNeeded(req.method, req.routeOptions.url, opts.metricsOpen);
  if (needed === null) return null;
  const header = req.headers.authorization;
  const token = bearerOf(Array.isArray(header) ? header[0] : header);
  if (token === null) return { reason: 'missing', error: unauthenticated('missing') };
  if (token === undefined) return { reason: 'malformed', error: unauthenticated('malformed') };
  const scope = opts.tokens.scopeOf(token);
  if (scope === null) return { reason: 'unknown', error: unauthenticated('unknown') };
  if (scope === 'forward') return isForwardedReport(req) ? null : { reason: 'scope', needed, error: forwardOnly() };
  if (needed === 'write' && scope !== 'write') return { reason: 'scope', needed, error: forbidden() };
  // Streams that stay open are noted, to be ended if the token goes (not every keep-alive
  // connection: the next request on one is checked anyway, and closing it under a client
  // that reuses it would fail that client's request).
  if (LONG_LIVED_ROUTES.has(req.routeOptions.url ?? '')) opts.tokens.track((req as { raw?: { socket?: Socket } }).raw?.socket, token, needed);
  return null;
}

/** RFC 6750's challenge for a refusal. */
function challenge(reason: AuthRefusal, needed: ApiScope = 'write'): string {
  if (reason === 'missing') return 'Bearer realm="switchboard"';
  if (reason === 'scope') return `Bearer realm="switchboard", error="insufficient_scope", scope="${needed}"`;
  return 'Bearer realm="switchboard", error="invalid_token"';
}

/** The onRequest hook: refuses with 401/403 problem+json before any route runs. */
export function authHook(opts: AuthOptions) {
  return (req: FastifyRequest, reply: FastifyReply, done: () => void): void => {
    const refusal = authorize(req, opts);
    if (refusal === null) return done();
    opts.refused(refusal.reason);
    reply.header('www-authenticate', challenge(refusal.reason, refusal.needed));
    sendProblem(reply, refusal.error);
  };
}
