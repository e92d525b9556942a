/**
 * Quorum reads over etcd's JSON gateway: every etcd 3.4+ member serves the v3 API as JSON
 * over HTTP on its client URL (`POST /v3/kv/range`), next to gRPC.
 *
 * Why a second way to reach etcd: a consistent read costs this node one quorum read per
 * group of reads that wait together, and that call is the node's most frequent etcd call
 * under read load. A unary gRPC call through grpc-js cost 250–700 µs of this node's CPU on
 * the benchmark machine (the most when calls come one at a time, as shared quorum reads
 * do); the same read over a kept-alive HTTP/1.1 connection (undici) cost 80–230 µs, with
 * etcd's CPU per call about the same. Writes, watches and lease keep-alives stay on gRPC:
 * batched or streamed, they cost little per operation.
 *
 * The same rules as the gRPC client (store.ts): a deadline on every call, a per-endpoint
 * breaker that skips an endpoint for `breakerOpenMs` after it failed to answer, one more
 * attempt on another endpoint when the first failed at once, the CA to trust and an etcd
 * user (its token is fetched from `/v3/auth/authenticate` and fetched again when etcd no
 * longer knows it). Not with a client certificate: etcd's gateway answers every request
 * that carries one with 400 ("CommonName of client sending a request against gateway will
 * be ignored"), so a node configured with one keeps these reads on gRPC. A member that does not serve the gateway (an etcd started with
 * `--enable-grpc-gateway=false`, or a proxy that speaks only gRPC) answers the first read
 * with something that is not etcd's JSON: the caller then goes back to gRPC for good.
 */
import { Pool } from 'undici';
import { StoreUnavailable, type StoreTls } from './store.js';

export interface GatewayOptions {
  endpoints: string[];
  breakerOpenMs: number;
  /** A CA to trust; a client certificate is not used (etcd's gateway refuses requests that carry one). */
  tls?: StoreTls;
  auth?: { username: string; password: string };
  /** Most connections per endpoint (one quorum read is in flight at a time; a few more wait at most). */
  connections?: number;
}

/** The member does not serve etcd's JSON gateway: use gRPC instead. */
export class GatewayMissing extends Error {
  override readonly name = 'GatewayMissing';
}

interface Member {
  url: string;
  pool: Pool;
  openUntil: number;
}

/** What etcd's gateway answers for a failed call: the gRPC status code and message. */
interface GatewayError {
  code?: number;
  message?: string;
  error?: string;
}

/** gRPC codes that mean "no answer now", not "the request was wrong". */
const UNAVAILABLE_CODES = new Set([4 /* DEADLINE_EXCEEDED */, 8 /* RESOURCE_EXHAUSTED */, 10 /* ABORTED */, 14 /* UNAVAILABLE */]);

export class GatewayReader {
  private readonly members: Member[];
  private next = 0;
  private token: Promise<string> | null = null;

  constructor(private readonly opts: GatewayOptions) {
    const tls = opts.tls;
    const connect = tls?.ca ? { ca: tls.ca } : undefined;
    this.members = opts.endpoints.map((url) => ({ url, pool: new Pool(url, { connections: opts.connections ?? 2, pipelining: 1, ...(connect && { connect }) }), openUntil: 0 }));
  }

  /** etcd's current revision, confirmed by a quorum (a linearizable count of one key). */
  async quorumRevision(key: Buffer, timeoutMs: number): Promise<{ revision: number; clusterId: string }> {
    const body = JSON.stringify({ key: key.toString('base64'), limit: 1, count_only: true });
    const res = await this.call<{ header?: { revision?: string; cluster_id?: string } }>('/v3/kv/range', body, timeoutMs);
    const revision = Number(res.header?.revision);
    if (!Number.isFinite(revision) || revision <= 0) throw new GatewayMissing(`etcd's gateway answered a range without a revision: ${JSON.stringify(res).slice(0, 200)}`);
    return { revision, clusterId: res.header?.cluster_id ?? '' };
  }

  async close(): Promise<void> {
    await Promise.all(this.members.map((m) => m.pool.close().catch(() => undefined)));
  }

  /** One call on the next endpoint whose breaker is closed; once more elsewhere if it failed at once. */
  private async call<T>(path: string, body: string, timeoutMs: number): Promise<T> {
    const started = Date.now();
    try {
      return await this.callOnce<T>(path, body, timeoutMs);
    } catch (err) {
      const left = timeoutMs - (Date.now() - started);
      if (!(err instanceof StoreUnavailable) || left < 100 || /deadline|timeout/i.test(err.message)) throw err;
      return this.callOnce<T>(path, body, left);
    }
  }

  private pick(): Member {
    const now = Date.now();
    for (let i = 0; i < this.members.length; i++) {
      const m = this.members[(this.next + i) % this.members.length] as Member;
      if (m.openUntil <= now) {
        this.next = (this.next + i) % this.members.length;
        return m;
      }
    }
    throw new StoreUnavailable('every etcd endpoint failed within the last moment (gateway breaker open)');
  }

  private async callOnce<T>(path: string, body: string, timeoutMs: number, retriedToken = false): Promise<T> {
    const m = this.pick();
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    try {
      if (this.opts.auth) headers.authorization = await this.authToken(m, timeoutMs);
      const res = await m.pool.request({ method: 'POST', path, body, headers, headersTimeout: timeoutMs, bodyTimeout: timeoutMs });
      const text = await res.body.text();
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        throw new GatewayMissing(`${m.url}${path} answered ${res.statusCode} with something that is not etcd's JSON gateway: ${text.slice(0, 120)}`);
      }
      if (res.statusCode === 200) return parsed as T;
      const e = parsed as GatewayError;
      const message = e.message ?? e.error ?? `HTTP ${res.statusCode}`;
      if (res.statusCode === 404 || res.statusCode === 501 || e.code === 12 /* UNIMPLEMENTED */) throw new GatewayMissing(`${m.url}${path}: ${message}`);
      if (this.opts.auth && !retriedToken && /invalid auth token/i.test(message)) {
        this.token = null;
        return this.callOnce<T>(path, body, timeoutMs, true);
      }
      if (UNAVAILABLE_CODES.has(e.code ?? -1) || res.statusCode === 503) throw new StoreUnavailable(`etcd ${m.url}: ${message}`);
      throw new Error(`etcd ${m.url}: ${message}`);
    } catch (err) {
      if (err instanceof GatewayMissing || (err instanceof Error && !(err instanceof StoreUnavailable) && /^etcd /.test(err.message))) throw err;
      // No answer (refused, reset, timed out) or etcd said it cannot now: skip this endpoint for a while.
      m.openUntil = Date.now() + this.opts.breakerOpenMs;
      this.next = (this.members.indexOf(m) + 1) % this.members.length;
      throw err instanceof StoreUnavailable ? err : new StoreUnavailable(`etcd ${m.url}: ${(err as Error).message}`, err);
    }
  }

  /** The etcd user's token, fetched once and again after etcd refused it. */
  private authToken(m: Member, timeoutMs: number): Promise<string> {
    if (this.token) return this.token;
    const auth = this.opts.auth as { username: string; password: string };
    const p = (async () => {
      const res = await m.pool.request({ method: 'POST', path: '/v3/auth/authenticate', body: JSON.stringify({ name: auth.username, password: auth.password }), headers: { 'content-type': 'application/json' }, headersTimeout: timeoutMs, bodyTimeout: timeoutMs });
      const text = await res.body.text();
      let out: { token?: string } & GatewayError;
      try {
        out = JSON.parse(text) as { token?: string } & GatewayError;
      } catch {
        throw new GatewayMissing(`${m.url}/v3/auth/authenticate answered ${res.statusCode} with something that is not etcd's JSON gateway: ${text.slice(0, 120)}`);
      }
      if (res.statusCode !== 200 || !out.token) throw new Error(`etcd ${m.url}: ${out.message ?? out.error ?? `authentication answered HTTP ${res.statusCode}`}`);
      return out.token;
    })();
    this.token = p;
    p.catch(() => {
      if (this.token === p) this.token = null;
    });
    return p;
  }
}
