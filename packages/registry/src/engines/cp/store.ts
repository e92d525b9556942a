/**
 * The etcd client of a cp node: the raw etcd v3 RPCs (through the etcd3 package's gRPC
 * clients) with a deadline on every call, one LeaseKeepAlive stream that carries the
 * keep-alives of every lease of this node, and fault handling chosen for quick failover:
 *
 * - per endpoint, a circuit breaker that opens after one failed call (unavailable or
 *   deadline exceeded) and lets a trial call through after `breakerOpenMs` (the etcd3
 *   default waits 5 s after 3 failures, which stretched write gaps after a leader kill);
 * - no retries of writes (a write that failed may have been applied: the caller reports
 *   its outcome as unknown, never as failed); a read that failed at once (not by its
 *   deadline) is tried once more, on another endpoint since the first one's breaker is open.
 *
 * TLS material and an etcd user are handed to the etcd3 client, which trades the user for
 * a token before the first call and again when etcd refuses the token on a unary call;
 * streams carry the token they were opened with (see refreshAuthToken).
 */
import { createRequire } from 'node:module';
import type * as RPC from 'etcd3';
import type { Etcd3 as Etcd3Type, IOptions } from 'etcd3';
import { BreakerOpen, EtcdUnavailable, GatewayMissing, type GatewayReader } from './gateway.js';
import { StoreUnavailable } from './unavailable.js';

const require = createRequire(import.meta.url);
const etcd3 = require('etcd3') as typeof import('etcd3');

export interface StoreOptions {
  endpoints: string[];
  /** Deadline of one call (ms). */
  callTimeoutMs: number;
  /** Endpoint breaker: how long a failed endpoint is skipped (ms). */
  breakerOpenMs: number;
  /** Called after every unary round trip (for the metrics). */
  onRoundTrip?: (method: string, ms: number, ok: boolean) => void;
  /** TLS material for https:// endpoints; without it the system's CAs, no client certificate. */
  tls?: StoreTls;
  /** An etcd user: the client trades it for a token, and again whenever etcd refuses the token. */
  auth?: { username: string; password: string };
  /** Quorum reads for consistent reads over etcd's JSON gateway (gateway.ts); without it, gRPC. */
  gateway?: GatewayReader;
  /** Called once when consistent reads leave the gateway for gRPC (not served, or failing where gRPC answers). */
  onGatewayMissing?: (err: Error) => void;
}

/** PEM contents; a null CA trusts the system's CAs. */
export interface StoreTls {
  ca: Buffer | null;
  cert: Buffer | null;
  key: Buffer | null;
}

export { StoreUnavailable };

/** Reads in a row that the JSON gateway failed and gRPC answered before the node stays on gRPC. */
const GATEWAY_STRIKES = 3;

const NOOP_EVENT = (() => ({ dispose: () => undefined })) as unknown as never;

/** True for failures that mean "etcd did not answer in time / cannot now". */
export function isUnavailable(err: unknown): boolean {
  if (err instanceof StoreUnavailable) return true;
  const e = err as { name?: string; message?: string; code?: number } | null;
  const text = `${e?.name ?? ''} ${e?.message ?? ''}`;
  return /Unavailable|DeadlineExceeded|deadline|timed out|no leader|leader changed|BrokenCircuit|Connection pool|ECONNREFUSED|ECONNRESET|UNAVAILABLE|too many requests|Cancelled/i.test(text);
}

export type Refusal = 'authentication' | 'auth_disabled' | 'permission' | 'tls_untrusted' | 'tls_refused' | 'tls_plain';

/** This node does not trust etcd's server certificate (its CA, its name, its dates). */
const TLS_UNTRUSTED = /unable to (verify|get (local )?issuer)|self[- ]signed certificate|certificate (has expired|is not yet valid)|altnames|ERR_TLS_CERT/i;
/** etcd refused the TLS handshake: it wants a client certificate it trusts (--client-cert-auth). */
const TLS_REFUSED = /alert (bad|unknown|unsupported|certificate)[ _]|alert unknown ca|alert handshake failure|SSL routines/i;
/** The endpoint answered the TLS hello in plain text: it serves http://, not https://. */
const TLS_PLAIN = /wrong version number|packet length too long/i;
/** A connection cut during the handshake (a member restarting, say): not a refusal. */
const TLS_CUT = /unexpected eof|ECONNRESET|socket hang up/i;

/**
 * Failures that trying again will not cure: etcd refused the user, the user's permissions,
 * or the TLS handshake over a certificate. A starting node gives up on these at once, so
 * that a wrong password does not look like an etcd that is still starting; null otherwise.
 * (A token etcd no longer knows is not one: the client asks for a new one by itself.)
 */
export function refusalOf(err: unknown): Refusal | null {
  const text = String((err as Error | null)?.message ?? err);
  if (/authentication failed, invalid user ID or password/i.test(text)) return 'authentication';
  if (/authentication is not enabled/i.test(text)) return 'auth_disabled';
  if (/permission denied|user name not found|role is not granted/i.test(text)) return 'permission';
  if (TLS_UNTRUSTED.test(text)) return 'tls_untrusted';
  if (TLS_PLAIN.test(text)) return 'tls_plain';
  if (TLS_REFUSED.test(text) && !TLS_CUT.test(text)) return 'tls_refused';
  return null;
}

/** A cockatiel-compatible policy: a circuit breaker that opens after one unavailable failure. */
class QuickBreaker {
  readonly _altReturn = undefined as never;
  readonly onSuccess = NOOP_EVENT;
  readonly onFailure = NOOP_EVENT;
  private openUntil = 0;
  constructor(private readonly openMs: number) {}
  async execute<T>(fn: (ctx: { signal: AbortSignal }) => PromiseLike<T> | T, signal?: AbortSignal): Promise<T> {
    if (Date.now() < this.openUntil) {
      const err = new Error('BrokenCircuitError: endpoint skipped after a recent failure');
      err.name = 'BrokenCircuitError';
      throw err;
    }
    try {
      return await fn({ signal: signal ?? new AbortController().signal });
    } catch (err) {
      if (isUnavailable(err)) this.openUntil = Date.now() + this.openMs;
      throw err;
    }
  }
}

/** No retries at the client level: a write that failed may have been applied (see range()). */
class NoRetry {
  readonly _altReturn = undefined as never;
  readonly onSuccess = NOOP_EVENT;
  readonly onFailure = NOOP_EVENT;
  async execute<T>(fn: (ctx: { signal: AbortSignal }) => PromiseLike<T> | T, signal?: AbortSignal): Promise<T> {
    return fn({ signal: signal ?? new AbortController().signal });
  }
}

interface KeepAliveWaiter {
  resolve(ttlSec: number): void;
  reject(err: unknown): void;
  timer: NodeJS.Timeout;
}

/**
 * The etcd3 client's TLS credentials. Without files it still speaks TLS to https://
 * endpoints, trusting the system's CAs; a null root certificate does the same for
 * grpc-js when only a client certificate is given.
 */
function credentialsOf(tls: StoreTls | undefined): Pick<IOptions, 'credentials'> {
  if (!tls || (tls.ca === null && tls.cert === null)) return {};
  return {
    credentials: {
      rootCertificate: tls.ca as Buffer,
      ...(tls.cert !== null && tls.key !== null && { certChain: tls.cert, privateKey: tls.key }),
    },
  };
}

export class Store {
  readonly client: Etcd3Type;
  private keepAliveStream: RPC.IDuplexStream<RPC.ILeaseKeepAliveRequest, RPC.ILeaseKeepAliveResponse> | null = null;
  private keepAliveOpening: Promise<RPC.IDuplexStream<RPC.ILeaseKeepAliveRequest, RPC.ILeaseKeepAliveResponse>> | null = null;
  /** etcd lease id (decimal) -> keep-alives waiting for their answer, oldest first. */
  private readonly keepAliveWaiters = new Map<string, KeepAliveWaiter[]>();
  private closed = false;
  /** When etcd last answered anything (Date.now()). */
  lastContact: number | null = null;
  private gateway: GatewayReader | null;
  /** Consistent reads in a row that the gateway failed and gRPC answered. */
  private gatewayStrikes = 0;

  constructor(private readonly opts: StoreOptions) {
    this.gateway = opts.gateway ?? null;
    const options: IOptions = {
      hosts: opts.endpoints,
      dialTimeout: opts.callTimeoutMs,
      faultHandling: {
        host: () => new QuickBreaker(opts.breakerOpenMs) as never,
        global: new NoRetry() as never,
      },
      ...credentialsOf(opts.tls),
      ...(opts.auth && {
        auth: {
          username: opts.auth.username,
          password: opts.auth.password,
          // Every call waits for the token: without a deadline, one unresponsive endpoint
          // asked for it would hold them all.
          callOptions: () => ({ deadline: Date.now() + opts.callTimeoutMs }),
        },
      }),
    };
    this.client = new etcd3.Etcd3(options);
  }

  private deadline(ms = this.opts.callTimeoutMs): { deadline: Date } {
    return { deadline: new Date(Date.now() + ms) };
  }

  private async timed<T>(method: string, run: () => Promise<T>): Promise<T> {
    const started = performance.now();
    try {
      const out = await run();
      this.lastContact = Date.now();
      this.opts.onRoundTrip?.(method, performance.now() - started, true);
      return out;
    } catch (err) {
      this.opts.onRoundTrip?.(method, performance.now() - started, false);
      // The gateway's errors are classified already (their kind decides what follows).
      if (err instanceof StoreUnavailable || err instanceof GatewayMissing) throw err;
      if (isUnavailable(err)) throw new StoreUnavailable(`etcd ${method}: ${(err as Error).message}`, err);
      throw err;
    }
  }

  txn(req: RPC.ITxnRequest, timeoutMs?: number): Promise<RPC.ITxnResponse> {
    return this.timed('txn', () => this.client.kv.txn(req, this.deadline(timeoutMs)));
  }

  async range(req: RPC.IRangeRequest, timeoutMs = this.opts.callTimeoutMs): Promise<RPC.IRangeResponse> {
    const started = Date.now();
    try {
      return await this.timed('range', () => this.client.kv.range(req, this.deadline(timeoutMs)));
    } catch (err) {
      const left = timeoutMs - (Date.now() - started);
      if (!(err instanceof StoreUnavailable) || left < 100 || /deadline/i.test(err.message)) throw err;
      // A retry that found every endpoint's breaker open says less than the first failure.
      return this.timed('range', () => this.client.kv.range(req, this.deadline(left))).catch((again: unknown) => {
        throw /BrokenCircuit/.test(String((again as Error)?.message)) ? err : again;
      });
    }
  }

  /** A linearizable read of one key: etcd's current revision, confirmed by a quorum. */
  async quorumRevision(key: Buffer, timeoutMs?: number): Promise<{ revision: number; clusterId: string }> {
    const res = await this.range({ key, limit: 1, count_only: true }, timeoutMs);
    return { revision: Number(res.header.revision), clusterId: res.header.cluster_id };
  }

  leaseGrant(ttlSec: number): Promise<RPC.ILeaseGrantResponse> {
    return this.timed('lease_grant', () => this.client.leaseClient.leaseGrant({ TTL: ttlSec, ID: 0 }, this.deadline()));
  }

  leaseRevoke(etcdId: string): Promise<RPC.ILeaseRevokeResponse> {
    return this.timed('lease_revoke', () => this.client.leaseClient.leaseRevoke({ ID: etcdId }, this.deadline()));
  }

  /**
   * Drops the client's etcd token, so that the next call or stream authenticates again.
   * The etcd3 client does this by itself only when a unary call meets "invalid auth
   * token"; a stream opened with a stale token would otherwise keep it until some unary
   * call happened to refresh it. The client keeps the token in a private field: if that
   * ever moves, this does nothing and the next failing unary call refreshes it as before.
   */
  refreshAuthToken(): void {
    if (!this.opts.auth) return;
    const pool = (this.client as unknown as { pool?: { authenticator?: { invalidateMetadata?: () => void } } }).pool;
    pool?.authenticator?.invalidateMetadata?.();
  }

  /**
   * etcd's current revision for a consistent read: over the JSON gateway while the members
   * serve it (cheaper for this node, see gateway.ts), otherwise as quorumRevision. The
   * gateway is only a cheaper road to the same answer:
   * - etcd answering "not now" through it (no leader, say) is the answer: 503;
   * - a read it did not try (every gateway breaker open) is made over gRPC;
   * - a read it failed otherwise is made over gRPC in the time left, and the node stays on
   *   gRPC after an endpoint that is not a gateway, after a refusal where gRPC answered
   *   (an auth proxy in front of the gateway, say), or after GATEWAY_STRIKES reads in a
   *   row that it failed to carry (no answer, a proxy's error page) and gRPC answered.
   */
  async consistentRevision(key: Buffer, timeoutMs = this.opts.callTimeoutMs): Promise<{ revision: number; clusterId: string }> {
    const gateway = this.gateway;
    if (!gateway) return this.quorumRevision(key, timeoutMs);
    const started = Date.now();
    let failure: Error;
    try {
      const out = await this.timed('range_json', () => gateway.quorumRevision(key, timeoutMs));
      this.gatewayStrikes = 0;
      return out;
    } catch (err) {
      failure = err as Error;
    }
    if (failure instanceof EtcdUnavailable) throw failure;
    const left = timeoutMs - (Date.now() - started);
    if (failure instanceof GatewayMissing) {
      this.dropGateway(gateway, failure);
      return this.quorumRevision(key, Math.max(1, left));
    }
    if (left < 100) throw failure;
    const out = await this.quorumRevision(key, left);
    if (failure instanceof BreakerOpen) return out;
    if (!(failure instanceof StoreUnavailable)) this.dropGateway(gateway, new Error(`the JSON gateway refused a quorum read that gRPC answered: ${failure.message}`));
    else if (++this.gatewayStrikes >= GATEWAY_STRIKES) this.dropGateway(gateway, new Error(`${GATEWAY_STRIKES} quorum reads in a row failed over the JSON gateway and were answered over gRPC; the last: ${failure.message}`));
    return out;
  }

  private dropGateway(gateway: GatewayReader, why: Error): void {
    if (this.gateway !== gateway) return;
    this.gateway = null;
    void gateway.close();
    this.opts.onGatewayMissing?.(why);
  }

  /** Points the gateway's quorum reads at etcd's leader (see GatewayReader.preferLeader); nothing without the gateway. */
  async preferLeader(timeoutMs = this.opts.callTimeoutMs): Promise<void> {
    await this.gateway?.preferLeader(timeoutMs);
  }

  /** The endpoint the gateway's quorum reads go to first because it is etcd's leader; null when none is known or on gRPC. */
  get consistentReadsLeader(): string | null {
    return this.gateway?.leader ?? null;
  }

  /** How consistent reads reach etcd now. */
  get consistentReadsVia(): 'json_gateway' | 'grpc' {
    return this.gateway ? 'json_gateway' : 'grpc';
  }

  /** Leader and raft state of one endpoint (the first that answers). */
  status(timeoutMs?: number): Promise<RPC.IStatusResponse> {
    return this.timed('status', () => this.client.maintenance.status(this.deadline(timeoutMs)));
  }

  /**
   * One keep-alive of a lease over this node's shared LeaseKeepAlive stream; resolves with
   * the TTL etcd granted (0: the lease does not exist any more).
   */
  async keepAlive(etcdId: string, timeoutMs = this.opts.callTimeoutMs): Promise<number> {
    const started = performance.now();
    const stream = await this.keepAliveStreamOpen();
    return new Promise<number>((resolve, reject) => {
      const waiter: KeepAliveWaiter = {
        resolve: (ttl) => {
          this.opts.onRoundTrip?.('lease_keepalive', performance.now() - started, true);
          resolve(ttl);
        },
        reject: (err) => {
          this.opts.onRoundTrip?.('lease_keepalive', performance.now() - started, false);
          reject(err);
        },
        timer: setTimeout(() => {
          this.dropWaiter(etcdId, waiter);
          waiter.reject(new StoreUnavailable(`etcd lease keep-alive: no answer within ${timeoutMs} ms`));
          // A stream that stopped answering is replaced: its endpoint may be cut off.
          this.resetKeepAliveStream(new StoreUnavailable('keep-alive stream stalled'));
        }, timeoutMs),
      };
      let list = this.keepAliveWaiters.get(etcdId);
      if (!list) this.keepAliveWaiters.set(etcdId, (list = []));
      list.push(waiter);
      stream.write({ ID: etcdId });
    });
  }

  private dropWaiter(id: string, w: KeepAliveWaiter): void {
    const list = this.keepAliveWaiters.get(id);
    if (!list) return;
    const i = list.indexOf(w);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this.keepAliveWaiters.delete(id);
  }

  private keepAliveStreamOpen(): Promise<RPC.IDuplexStream<RPC.ILeaseKeepAliveRequest, RPC.ILeaseKeepAliveResponse>> {
    if (this.closed) return Promise.reject(new StoreUnavailable('the etcd client is closed'));
    if (this.keepAliveStream) return Promise.resolve(this.keepAliveStream);
    if (this.keepAliveOpening) return this.keepAliveOpening;
    const opening = this.client.leaseClient.leaseKeepAlive().then((stream) => {
      stream.on('data', (res: RPC.ILeaseKeepAliveResponse) => {
        this.lastContact = Date.now();
        const id = String(res.ID);
        const list = this.keepAliveWaiters.get(id);
        const w = list?.shift();
        if (list && list.length === 0) this.keepAliveWaiters.delete(id);
        if (w) {
          clearTimeout(w.timer);
          w.resolve(Number(res.TTL));
        }
      });
      const fail = (err: unknown): void => {
        if (this.keepAliveStream === stream) this.resetKeepAliveStream(err);
      };
      stream.on('error', fail);
      stream.on('end', () => fail(new StoreUnavailable('keep-alive stream ended')));
      this.keepAliveStream = stream;
      return stream;
    });
    this.keepAliveOpening = opening;
    opening.then(
      () => {
        this.keepAliveOpening = null;
      },
      () => {
        this.keepAliveOpening = null;
      },
    );
    return opening.catch((err) => {
      throw new StoreUnavailable(`etcd lease keep-alive stream: ${(err as Error).message}`, err);
    });
  }

  private resetKeepAliveStream(err: unknown): void {
    const s = this.keepAliveStream;
    this.keepAliveStream = null;
    try {
      s?.cancel();
    } catch {
      /* already gone */
    }
    for (const [, list] of this.keepAliveWaiters) {
      for (const w of list) {
        clearTimeout(w.timer);
        w.reject(err instanceof StoreUnavailable ? err : new StoreUnavailable(String((err as Error)?.message ?? err), err));
      }
    }
    this.keepAliveWaiters.clear();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.resetKeepAliveStream(new StoreUnavailable('the node is shutting down'));
    this.client.close();
    void this.gateway?.close();
  }
}

/** How one etcd endpoint answered on its own at start. */
export interface EndpointProbe {
  endpoint: string;
  /** The TLS refusal when the handshake failed over a certificate; null otherwise. */
  refusal: Refusal | null;
  /** Why it did not answer (null when it answered, a TLS refusal included). */
  error: Error | null;
}

/**
 * Opens a connection to every endpoint on its own, all at once, and asks it for the
 * revision under the prefix: a TLS refusal by any one of them is a setting to fix (its
 * certificate, its CA), which a call through the pool would meet only when the pool
 * happened to pick that endpoint. Without the etcd user: the etcd3 client's authentication
 * call hides the handshake's error ("Last error: null"), and an answer that asks for a user
 * proves the handshake as well as any (the user and its permissions are the cluster's, and
 * the start checks them through the pool).
 */
export async function probeEndpoints(opts: Pick<StoreOptions, 'endpoints' | 'tls'>, prefix: Buffer, timeoutMs: number): Promise<EndpointProbe[]> {
  return Promise.all(
    opts.endpoints.map(async (endpoint): Promise<EndpointProbe> => {
      const store = new Store({ endpoints: [endpoint], callTimeoutMs: timeoutMs, breakerOpenMs: 0, ...(opts.tls && { tls: opts.tls }) });
      const deadline = Date.now() + timeoutMs;
      try {
        for (;;) {
          try {
            await store.quorumRevision(prefix, Math.max(1, deadline - Date.now()));
            return { endpoint, refusal: null, error: null };
          } catch (err) {
            const refusal = refusalOf(err);
            if (refusal === 'tls_untrusted' || refusal === 'tls_refused' || refusal === 'tls_plain') return { endpoint, refusal, error: err as Error };
            // etcd answered (asking for a user, say): the handshake held. Anything else (another
            // kind of server, a learner) is not an answer from a member that can serve.
            if (isEtcdAnswer(err) && !/not supported for learner/i.test((err as Error)?.message ?? '')) return { endpoint, refusal: null, error: null };
            if (Date.now() + 100 >= deadline || !isUnavailable(err) || isEtcdAnswer(err)) return { endpoint, refusal: null, error: err instanceof Error ? err : new Error(String(err)) };
          }
          await new Promise((r) => setTimeout(r, 100));
        }
      } finally {
        store.close();
      }
    }),
  );
}

/** An error etcd itself gave (the etcd3 client's Etcd* errors carry etcd's "etcdserver: ..." text). */
function isEtcdAnswer(err: unknown): boolean {
  const e = err as { name?: string; message?: string } | null;
  return /^Etcd/.test(e?.name ?? '') || /etcdserver:/.test(e?.message ?? '');
}
