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
 * The rules of the gRPC client (store.ts): one deadline for the whole call (waiting for a
 * connection included), a per-endpoint breaker that skips an endpoint for `breakerOpenMs`
 * after it failed to answer, one more attempt on another endpoint when the first failed
 * before the deadline, the CA to trust and an etcd user (its token is fetched from
 * `/v3/auth/authenticate` and fetched again when etcd refuses it). Not with a client
 * certificate: etcd's gateway answers every request that carries one with 400 ("CommonName
 * of client sending a request against gateway will be ignored"), so a node configured
 * with one keeps these reads on gRPC. An endpoint that is not etcd's gateway (404, a 200
 * that is not etcd's JSON, a server that speaks only HTTP/2) fails with GatewayMissing:
 * the caller (Store.consistentRevision) then goes back to gRPC for good.
 */
import { Pool } from 'undici';
import type { StoreTls } from './store.js';
import { StoreUnavailable } from './unavailable.js';

export interface GatewayOptions {
  endpoints: string[];
  breakerOpenMs: number;
  /** A CA to trust; a client certificate is not used (etcd's gateway refuses requests that carry one). */
  tls?: StoreTls;
  auth?: { username: string; password: string };
  /** Most connections per endpoint (one quorum read is in flight at a time; a few more wait at most). */
  connections?: number;
  /** Called once when a member refuses `/v3/maintenance/status` (etcd 3.5.28+ and 3.6 allow it to the root role only). */
  onStatusRefused?: (message: string) => void;
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

/** gRPC codes that mean "no answer now", not "the request was wrong" (etcd's "server stopped" and "unhealthy cluster" are UNAVAILABLE). */
const UNAVAILABLE_CODES = new Set([1 /* CANCELLED */, 4 /* DEADLINE_EXCEEDED */, 8 /* RESOURCE_EXHAUSTED */, 10 /* ABORTED */, 14 /* UNAVAILABLE */]);
/** HTTP statuses that mean the same, from etcd or from a proxy in front of it. */
const UNAVAILABLE_STATUSES = new Set([408, 429, 502, 503, 504]);
/** etcd does not take the token (any more): fetch a new one, as etcd's own Go client does. */
const STALE_TOKEN = /invalid auth token|revision of auth store is old|user name is empty/i;

/** Every endpoint failed within the last `breakerOpenMs`: the gateway was not tried. */
export class BreakerOpen extends StoreUnavailable {
  override readonly name = 'BreakerOpen';
}

/** etcd itself answered "not now" (no leader, an election, a stopped member): the gateway works. */
export class EtcdUnavailable extends StoreUnavailable {
  override readonly name = 'EtcdUnavailable';
}

/** The error for an answer other than 200: unavailable, not a gateway, or etcd refusing the request. */
export function refusal(url: string, status: number, text: string): Error {
  let e: GatewayError | null = null;
  try {
    e = JSON.parse(text) as GatewayError;
  } catch {
    /* not JSON */
  }
  const message = e?.message ?? e?.error ?? `HTTP ${status}: ${text.slice(0, 120)}`;
  if (status === 404 || status === 405 || status === 501 || e?.code === 12 /* UNIMPLEMENTED */) return new GatewayMissing(`${url} does not serve etcd's JSON gateway (${message})`);
  if (e !== null && UNAVAILABLE_CODES.has(e.code ?? -1)) return new EtcdUnavailable(`etcd ${url}: ${message}`);
  if (UNAVAILABLE_STATUSES.has(status) || (e === null && status >= 500)) return new StoreUnavailable(`etcd ${url}: ${message}`);
  if (e === null) return new GatewayMissing(`${url} answered ${status} with something that is not etcd's JSON gateway: ${text.slice(0, 120)}`);
  return new Error(`etcd ${url}: ${message}`);
}

export class GatewayReader {
  private readonly members: Member[];
  private next = 0;
  private token: Promise<string> | null = null;

  constructor(private readonly opts: GatewayOptions) {
    const tls = opts.tls;
    const connect = tls?.ca ? { ca: tls.ca } : undefined;
    this.members = opts.endpoints.map((url) => ({ url, pool: new Pool(url, { connections: opts.connections ?? 2, pipelining: 1, ...(connect && { connect }) }), openUntil: 0 }));
  }

  /** etcd's current revision, confirmed by a quorum (a linearizable count of one key), within `timeoutMs` in all. */
  async quorumRevision(key: Buffer, timeoutMs: number): Promise<{ revision: number; clusterId: string }> {
    const body = JSON.stringify({ key: key.toString('base64'), limit: 1, count_only: true });
    const res = await this.call<{ header?: { revision?: string; cluster_id?: string } }>('/v3/kv/range', body, Date.now() + timeoutMs);
    const revision = Number(res.header?.revision);
    if (!Number.isFinite(revision) || revision <= 0) throw new GatewayMissing(`etcd's gateway answered a range without a revision: ${JSON.stringify(res).slice(0, 200)}`);
    return { revision, clusterId: res.header?.cluster_id ?? '' };
  }

  /**
   * Sends the next quorum reads to etcd's leader when one of the endpoints is the leader:
   * a linearizable read served by a follower costs etcd more (the follower asks the
   * leader for the read index first; measured 525–565 µs of etcd CPU against 370–435 µs
   * at the leader). Asks each endpoint's `/v3/maintenance/status` (its member id, the
   * leader it follows and its raft term); of the members that say they lead, the one of
   * the highest term (an old leader cut off from the others may still say so, but it
   * cannot confirm a linearizable read anyway). With an etcd user it waits until a
   * consistent read has fetched the token. Returns the endpoint the next reads go to
   * first when that is the leader, else null (no leader among the endpoints, its breaker
   * open, the status refused or unanswered: the order stays as it was).
   */
  async preferLeader(timeoutMs: number): Promise<string | null> {
    if (this.opts.auth && !this.token) return null;
    const deadline = Date.now() + timeoutMs;
    const answers = await Promise.all(
      this.members.map(async (m) => {
        try {
          const headers: Record<string, string> = { 'content-type': 'application/json' };
          if (this.token) headers.authorization = await this.withinDeadline(this.token, deadline);
          const res = await this.post(m, '/v3/maintenance/status', '{}', headers, deadline);
          if (res.status !== 200) {
            if (!this.statusRefused) {
              this.statusRefused = true;
              this.opts.onStatusRefused?.(refusal(m.url, res.status, res.text).message);
            }
            return null;
          }
          const st = JSON.parse(res.text) as { header?: { member_id?: string }; leader?: string; raft_term?: string };
          return st.header?.member_id !== undefined && st.header.member_id === st.leader ? { m, term: Number(st.raft_term ?? 0) } : null;
        } catch {
          return null;
        }
      }),
    );
    let best: { m: Member; term: number } | null = null;
    for (const a of answers) if (a && (best === null || a.term > best.term)) best = a;
    if (!best || best.m.openUntil > Date.now()) return (this.leader = null);
    this.next = this.members.indexOf(best.m);
    return (this.leader = best.m.url);
  }

  /** The endpoint the last preferLeader pointed the reads at (null: none). */
  leader: string | null = null;
  private statusRefused = false;

  /** Ends every connection now (calls still waiting fail). */
  async close(): Promise<void> {
    await Promise.all(this.members.map((m) => m.pool.destroy().catch(() => undefined)));
  }

  /** One call on the next endpoint whose breaker is closed; once more elsewhere if it failed before its deadline. */
  private async call<T>(path: string, body: string, deadline: number): Promise<T> {
    // With another member to try, the first attempt gets half the time: a member that hangs
    // (cut off, say) must leave time for the second.
    const first = this.members.length > 1 ? Date.now() + Math.floor((deadline - Date.now()) / 2) : deadline;
    try {
      return await this.callOnce<T>(path, body, first);
    } catch (err) {
      if (!(err instanceof StoreUnavailable) || deadline - Date.now() < 100 || (first === deadline && /deadline/.test(err.message))) throw err;
      try {
        return await this.callOnce<T>(path, body, deadline);
      } catch (again) {
        // Every breaker open (one endpoint, say) says less than the first failure.
        throw again instanceof BreakerOpen ? err : again;
      }
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
    throw new BreakerOpen('every etcd endpoint failed within the last moment (gateway breaker open)');
  }

  private async callOnce<T>(path: string, body: string, deadline: number, retriedToken = false): Promise<T> {
    const m = this.pick();
    try {
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      const token = this.opts.auth ? this.authToken(m, deadline) : null;
      if (token) headers.authorization = await this.withinDeadline(token, deadline);
      const res = await this.post(m, path, body, headers, deadline);
      if (res.status !== 200) {
        const err = refusal(m.url, res.status, res.text);
        if (token && !retriedToken && STALE_TOKEN.test(err.message)) {
          // Only the refused token: another call may have fetched a new one meanwhile.
          if (this.token === token) this.token = null;
          return await this.callOnce<T>(path, body, deadline, true);
        }
        throw err;
      }
      try {
        return JSON.parse(res.text) as T;
      } catch {
        throw new GatewayMissing(`${m.url}${path} answered 200 with something that is not etcd's JSON gateway: ${res.text.slice(0, 120)}`);
      }
    } catch (err) {
      if (err instanceof StoreUnavailable && !(err instanceof BreakerOpen)) {
        // No answer, or etcd cannot now: skip this endpoint for a while.
        m.openUntil = Date.now() + this.opts.breakerOpenMs;
        this.next = (this.members.indexOf(m) + 1) % this.members.length;
      }
      throw err;
    }
  }

  /** One POST within the deadline (waiting for a connection, connecting, sending and the whole answer). */
  private async post(m: Member, path: string, body: string, headers: Record<string, string>, deadline: number): Promise<{ status: number; text: string }> {
    const ms = deadline - Date.now();
    if (ms <= 0) throw new StoreUnavailable(`etcd ${m.url}: deadline exceeded before the call`);
    try {
      const res = await m.pool.request({ method: 'POST', path, body, headers, signal: AbortSignal.timeout(ms) });
      return { status: res.statusCode, text: await res.body.text() };
    } catch (err) {
      const e = err as { name?: string; code?: string; message?: string };
      // An answer that is not HTTP/1.1 at all: a server that speaks only HTTP/2 (gRPC).
      if (e?.name === 'HTTPParserError' || String(e?.code ?? '').startsWith('HPE_')) throw new GatewayMissing(`${m.url}${path} did not answer in HTTP/1.1 (${e.message ?? e.code}): not etcd's JSON gateway`);
      if (e?.name === 'TimeoutError' || e?.name === 'AbortError') throw new StoreUnavailable(`etcd ${m.url}: no answer within the deadline (${ms} ms)`, err);
      throw new StoreUnavailable(`etcd ${m.url}: ${e?.message ?? String(err)}`, err);
    }
  }

  /** A shared promise (the token) awaited no longer than the caller's deadline. */
  private withinDeadline<T>(p: Promise<T>, deadline: number): Promise<T> {
    const ms = deadline - Date.now();
    if (ms <= 0) return Promise.reject(new StoreUnavailable('deadline exceeded while waiting for the etcd token'));
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new StoreUnavailable(`no etcd token within the deadline (${ms} ms)`)), ms);
    });
    return Promise.race([p, late]).finally(() => clearTimeout(timer));
  }

  /** The etcd user's token, fetched once and again after etcd refused it. */
  private authToken(m: Member, deadline: number): Promise<string> {
    if (this.token) return this.token;
    const auth = this.opts.auth as { username: string; password: string };
    const p = (async () => {
      const res = await this.post(m, '/v3/auth/authenticate', JSON.stringify({ name: auth.username, password: auth.password }), { 'content-type': 'application/json' }, deadline);
      if (res.status !== 200) throw refusal(m.url, res.status, res.text);
      let token: string | undefined;
      try {
        token = (JSON.parse(res.text) as { token?: string }).token;
      } catch {
        throw new GatewayMissing(`${m.url}/v3/auth/authenticate answered 200 with something that is not etcd's JSON gateway: ${res.text.slice(0, 120)}`);
      }
      if (!token) throw new Error(`etcd ${m.url}: authentication answered without a token`);
      return token;
    })();
    this.token = p;
    p.catch(() => {
      if (this.token === p) this.token = null;
    });
    return p;
  }
}
