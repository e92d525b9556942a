/**
 * Bindings: one connection to one registry node that keeps the process's lease alive.
 * `WsBinding` is the session WebSocket of @switchboard/protocol (session.ts); `RestBinding`
 * is the REST fallback (POST /v1/leases, PUT .../keepalive) for nodes without /v1/session.
 * A binding only reports how it ended; the LeaseKeeper (lease.ts) decides what comes next.
 */
import WebSocket from 'ws';
import {
  SESSION_PATH,
  type LeaseGrant,
  type NodeStatus,
  type Problem,
  type SessionClientMessage,
  type SessionRequest,
  type SessionServerMessage,
  type WriteResult,
} from '@switchboard/protocol';
import { LeaseNotFoundError, ProtocolError, RegistryError, RegistryUnavailableError, registryError, SwitchboardClientError, TimeoutError } from './errors.js';
import { retryAfterHeader, tlsErrorOf, type RegistryHttp } from './registry-http.js';
import { deadline, unrefTimer } from './time.js';
import { traceHeaders } from './trace-context.js';

/** @internal A write sent over the session (docs/api.md, "Requests over the session"), without its id. */
export type SessionWrite = WithoutId<Extract<SessionRequest, { type: 'register' | 'deregister' }>>;
type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;

/** A request waiting for its result. */
interface WaitingRequest {
  resolve(r: WriteResult): void;
  reject(err: unknown): void;
}

/**
 * The lease this process holds and where it is kept alive.
 *
 * @example
 * client.on('lease', (change: LeaseChange) => console.log(change.info.leaseId, change.info.nodeId));
 */
export interface LeaseInfo {
  leaseId: string;
  /** The TTL the registry granted. */
  ttlMs: number;
  /** The registry endpoint the lease is kept alive through. */
  endpoint: string;
  nodeId: string;
  epoch: string;
  transport: 'websocket' | 'rest';
}

/** @internal Why a binding stopped keeping the lease alive. */
export type BindingEnd =
  /** The connection dropped (node died, network cut). Nothing to hand over. */
  | { kind: 'lost'; cause?: unknown }
  /**
   * Move the lease to another connection, then release this one: the node asked us to go
   * (goaway), stopped acknowledging, or keeps failing our writes. The binding keeps sending
   * keepalives until it is released, so the lease stays alive while the next one binds.
   */
  | { kind: 'handover'; why: 'goaway' | 'unresponsive' | 'writes-failed' }
  /** The lease itself is gone: open a new one and register again. */
  | { kind: 'lease-ended'; leaseId: string; reason: string }
  /** Another connection of ours took the lease over, or we released the binding. */
  | { kind: 'released' };

/** @internal */
export interface Binding {
  readonly info: LeaseInfo;
  /** Settles once, when the binding stops keeping the lease alive. */
  readonly done: Promise<BindingEnd>;
  /** Stops keepalives (also those of a hand-over) and closes the connection without touching the lease. */
  release(): void;
  /** Ends the lease and its instances; false when that could not be confirmed. */
  revoke(timeoutMs: number): Promise<boolean>;
  /** Ends the binding from outside (a REST write saw LEASE_NOT_FOUND, or a node failed). */
  end(how: BindingEnd): void;
}

/** @internal The node does not serve /v1/session (an older registry): use REST leases there. */
export class SessionUnsupportedError extends SwitchboardClientError {
  constructor(endpoint: string, status: number) {
    super('PROTOCOL_ERROR', `${endpoint} answered ${status} to the session upgrade`);
    this.name = 'SessionUnsupportedError';
  }
}

/** @internal */
export interface BindOptions {
  endpoint: string;
  /** The lease to resume, or null to open a new one. */
  leaseId: string | null;
  ttlMs: number;
  connectTimeoutMs: number;
  signal?: AbortSignal;
  /** Headers of the WebSocket handshake (Authorization when the client has a token). */
  headers?: Readonly<Record<string, string>>;
  /** CAs trusted for wss:// (the client's `ca`). */
  ca?: (string | Buffer)[];
}

/** Most bytes of a refused handshake's problem+json body that are read. */
const MAX_REFUSAL_BODY_BYTES = 16_384;

/** The problem+json body of a refused handshake, or a stand-in when it has none. */
function refusalProblem(res: import('node:http').IncomingMessage, endpoint: string, code: 'UNAUTHENTICATED' | 'FORBIDDEN'): Promise<Problem> {
  const status = res.statusCode ?? 0;
  const fallback: Problem = { type: `urn:switchboard:error:${code}`, title: code, status, code, detail: `${endpoint} refused the session: HTTP ${status}` };
  return new Promise((resolve) => {
    let text = '';
    res.setEncoding('utf8');
    res.on('data', (d: string) => {
      if (text.length < MAX_REFUSAL_BODY_BYTES) text += d;
    });
    res.once('error', () => resolve(fallback));
    res.once('end', () => {
      try {
        const p = JSON.parse(text) as Partial<Problem>;
        resolve(typeof p.code === 'string' && typeof p.detail === 'string' ? { ...(p as Problem), status } : fallback);
      } catch {
        resolve(fallback);
      }
    });
  });
}

/**
 * Keepalives go every ttl / KEEPALIVE_DIVISOR: ttl/3 leaves two more chances before expiry,
 * and a keepalive unacknowledged for ttl/3 triggers a hand-over to a new connection.
 *
 * @example
 * const intervalMs = client.lease!.ttlMs / KEEPALIVE_DIVISOR;
 */
export const KEEPALIVE_DIVISOR = 3;

/** A session connection with this much unsent is not given more keepalives (a stuck path). */
const MAX_QUEUED_KEEPALIVE_BYTES = 4096;

/**
 * Writes sent over one session at once, and bytes of them unsent: beyond either a write
 * goes over REST (well under the node's sessionMaxInflightRequests, 256; and the bytes so
 * that keepalives are not held up behind writes).
 */
export const SESSION_REQUEST_BUDGET = 64;
const MAX_QUEUED_REQUEST_BYTES = 256 * 1024;

function settleOnce<T>(): { promise: Promise<T>; settle: (v: T) => void; settled: () => boolean } {
  let resolve!: (v: T) => void;
  let done = false;
  const promise = new Promise<T>((r) => (resolve = r));
  return {
    promise,
    settle: (v) => {
      if (done) return;
      done = true;
      resolve(v);
    },
    settled: () => done,
  };
}

/**
 * @internal One session WebSocket. `connect()` resolves once the node answered `lease` (after
 * `resume`, or after `open` when there is no lease or the node does not know it).
 */
export class WsBinding implements Binding {
  private seq = 0;
  private acked = 0;
  private timer: NodeJS.Timeout | undefined;
  private released = false;
  private readonly end$ = settleOnce<BindingEnd>();
  readonly done = this.end$.promise;

  /** Requests sent and not yet answered, by id. */
  private readonly waiting = new Map<number, WaitingRequest>();
  private nextRequestId = 1;

  private constructor(
    private readonly ws: WebSocket,
    readonly info: LeaseInfo,
    private readonly onError: (err: RegistryError) => void,
    /** Largest message the node takes; 0 for a node that takes no requests on the session. */
    private readonly maxMessageBytes: number,
  ) {
    ws.on('message', (data, isBinary) => this.onMessage(isBinary ? null : data.toString()));
    ws.on('close', (code, reason) => {
      const cause = new Error(`session closed: ${code} ${reason.toString()}`);
      this.failRequests(cause);
      this.end({ kind: 'lost', cause });
    });
    ws.on('error', () => undefined); // 'close' follows
    this.schedule();
  }

  static connect(opts: BindOptions, onError: (err: RegistryError) => void): Promise<WsBinding> {
    const url = opts.endpoint.replace(/^http/, 'ws') + SESSION_PATH;
    return new Promise<WsBinding>((resolve, reject) => {
      const ws = new WebSocket(url, { handshakeTimeout: opts.connectTimeoutMs, perMessageDeflate: false, maxPayload: 1 << 20, ...(opts.headers ? { headers: { ...opts.headers } } : {}), ...(opts.ca ? { ca: opts.ca } : {}) });
      let leaseId = opts.leaseId;
      let finished = false;
      const fail = (err: unknown): void => {
        if (finished) return;
        finished = true;
        cleanup();
        ws.removeAllListeners('message');
        ws.on('error', () => undefined);
        if (ws.readyState === WebSocket.OPEN) ws.close(1000, 'bind failed');
        else ws.terminate();
        reject(err);
      };
      const timer = unrefTimer(() => fail(new TimeoutError(`session bind on ${opts.endpoint}`, opts.connectTimeoutMs)), opts.connectTimeoutMs);
      const onAbort = (): void => fail(opts.signal!.reason);
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      const cleanup = (): void => {
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
      };
      const send = (m: SessionClientMessage): void => ws.send(JSON.stringify(m));
      const bindMsg = (): SessionClientMessage => (leaseId ? { type: 'resume', leaseId } : { type: 'open', ttlMs: opts.ttlMs });
      ws.on('unexpected-response', (_req, res) => {
        const status = res.statusCode ?? 0;
        if (status === 401 || status === 403) {
          void refusalProblem(res, opts.endpoint, status === 401 ? 'UNAUTHENTICATED' : 'FORBIDDEN').then((p) => fail(registryError(p, opts.endpoint)));
          return;
        }
        res.resume();
        if (status === 404 || status === 405 || status === 426) return fail(new SessionUnsupportedError(opts.endpoint, status));
        if (status === 429 || status === 503) {
          // Overloaded or not ready: a typed error that carries the node's Retry-After.
          const retryAfterSec = retryAfterHeader(res.headers['retry-after']);
          const code = status === 429 ? 'RATE_LIMITED' : 'NOT_READY';
          return fail(registryError({ type: `urn:switchboard:error:${code}`, title: code, status, code, detail: `${opts.endpoint} refused the session: HTTP ${status}`, ...(retryAfterSec === undefined ? {} : { retryAfterSec }) }, opts.endpoint));
        }
        fail(new Error(`${opts.endpoint} refused the session: HTTP ${status}`));
      });
      ws.on('error', (err) => fail(tlsErrorOf(err, opts.endpoint) ?? err));
      ws.on('close', (code) => fail(new Error(`session closed while binding: ${code}`)));
      ws.on('open', () => send(bindMsg()));
      ws.on('message', (data) => {
        const msg = parseServerMessage(data.toString());
        if (msg instanceof Error) return fail(msg);
        if (msg.type === 'error') {
          // An error before `lease` answers our open/resume: a resume of a lease this node
          // does not know (expired, or another epoch) falls back to opening a new lease.
          if (leaseId && msg.problem.code === 'LEASE_NOT_FOUND') {
            leaseId = null;
            return send(bindMsg());
          }
          return fail(registryError(msg.problem, opts.endpoint));
        }
        if (msg.type !== 'lease') return; // a late message of an earlier life: ignore
        if (finished) return;
        finished = true;
        cleanup();
        ws.removeAllListeners();
        const info: LeaseInfo = { leaseId: msg.leaseId, ttlMs: msg.ttlMs, endpoint: opts.endpoint, nodeId: msg.nodeId, epoch: msg.epoch, transport: 'websocket' };
        // A node that announces no message limit predates requests on the session.
        const max = typeof msg.maxMessageBytes === 'number' && Number.isSafeInteger(msg.maxMessageBytes) ? msg.maxMessageBytes : 0;
        resolve(new WsBinding(ws, info, onError, max));
      });
    });
  }

  private schedule(): void {
    this.timer = unrefTimer(() => this.tick(), Math.max(50, Math.floor(this.info.ttlMs / KEEPALIVE_DIVISOR)));
  }

  /**
   * Sends a write over this session instead of a REST request (one message each way, no
   * HTTP request). Null when the session cannot carry it (the node takes no requests,
   * the message is larger than the node takes, the connection is closing): the caller
   * then uses REST. The result rejects with the REST call's errors: RegistryError for the
   * node's refusal, TimeoutError, RegistryUnavailableError when the connection ends first.
   */
  request(write: SessionWrite, timeoutMs: number, signal?: AbortSignal): Promise<WriteResult> | null {
    if (this.maxMessageBytes === 0 || this.released || this.end$.settled() || this.ws.readyState !== WebSocket.OPEN) return null;
    if (this.waiting.size >= SESSION_REQUEST_BUDGET || this.ws.bufferedAmount > MAX_QUEUED_REQUEST_BYTES) return null;
    const id = this.nextRequestId++;
    // The active trace context goes along, as REST calls carry it in their headers (only
    // the W3C fields: other propagators' keys would be unknown fields of the message).
    const { traceparent, tracestate } = traceHeaders();
    const text = JSON.stringify({ ...write, ...(traceparent && { traceparent }), ...(tracestate && { tracestate }), id });
    // Characters are at least bytes: only a long message needs counting.
    if (text.length * 3 > this.maxMessageBytes && Buffer.byteLength(text) > this.maxMessageBytes) return null;
    const dl = deadline(`${write.type} over the session on ${this.info.endpoint}`, timeoutMs, signal);
    return new Promise<WriteResult>((resolve, reject) => {
      // Every way out: the request stops waiting, and a released binding may close.
      const settle =
        <T>(fn: (v: T) => void) =>
        (v: T): void => {
          this.waiting.delete(id);
          dl.signal.removeEventListener('abort', onAbort);
          dl.done();
          fn(v);
          this.closeIfReleased();
        };
      const onAbort = (): void => settle(reject)(dl.signal.reason);
      this.waiting.set(id, { resolve: settle(resolve), reject: settle(reject) });
      if (dl.signal.aborted) return onAbort();
      dl.signal.addEventListener('abort', onAbort, { once: true });
      this.ws.send(text);
    });
  }

  /** Every request still waiting fails: its answer cannot come any more. */
  private failRequests(cause: unknown): void {
    if (this.waiting.size === 0) return;
    const err = new RegistryUnavailableError([this.info.endpoint], cause, `the session to ${this.info.endpoint} ended before the answer`);
    for (const w of [...this.waiting.values()]) w.reject(err);
  }

  private tick(): void {
    if (this.released) return;
    // The previous keepalive got no ack within ttl/3: the node or the path is stuck. Hand
    // over while the lease still has two thirds of its TTL (keepalives go on meanwhile: an
    // answer on this connection still keeps the lease alive).
    if (this.acked < this.seq && !this.end$.settled()) this.end({ kind: 'handover', why: 'unresponsive' });
    // A connection that takes nothing gets no more than a few keepalives queued.
    if (this.ws.bufferedAmount < MAX_QUEUED_KEEPALIVE_BYTES + MAX_QUEUED_REQUEST_BYTES) {
      this.seq++;
      this.send({ type: 'keepalive', seq: this.seq });
    }
    this.schedule();
  }

  private send(m: SessionClientMessage): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(m));
  }

  private onMessage(text: string | null): void {
    const msg = text === null ? new ProtocolError('binary session frame') : parseServerMessage(text);
    if (msg instanceof Error) return; // tolerate; the keepalive deadline catches a broken peer
    switch (msg.type) {
      case 'ack':
        this.acked = Math.max(this.acked, msg.seq);
        this.info.ttlMs = msg.ttlMs;
        return;
      case 'ended':
        if (msg.leaseId === this.info.leaseId) this.end({ kind: 'lease-ended', leaseId: msg.leaseId, reason: msg.reason });
        return;
      case 'replaced':
        return this.end({ kind: 'released' });
      case 'goaway':
        return this.end({ kind: 'handover', why: 'goaway' });
      case 'result': {
        const w = this.waiting.get(msg.id);
        if (w) w.resolve({ revision: msg.revision ?? 0, ...(msg.warnings ? { warnings: msg.warnings } : {}) });
        return;
      }
      case 'error': {
        // A request's refusal goes to whoever sent it (LEASE_NOT_FOUND included: the writer
        // decides what it means for the lease, as with REST).
        if (typeof msg.id === 'number') {
          this.waiting.get(msg.id)?.reject(registryError(asRestProblem(msg.problem), this.info.endpoint));
          return;
        }
        if (msg.problem.code === 'LEASE_NOT_FOUND') return this.end({ kind: 'lease-ended', leaseId: this.info.leaseId, reason: 'lease_not_found' });
        return this.onError(registryError(msg.problem, this.info.endpoint));
      }
      case 'lease':
        return;
    }
  }

  end(how: BindingEnd): void {
    if (this.end$.settled()) return;
    if (how.kind !== 'handover' && this.timer) clearTimeout(this.timer);
    this.end$.settle(how);
  }

  release(): void {
    this.released = true;
    if (this.timer) clearTimeout(this.timer);
    this.end({ kind: 'released' });
    // Writes still waiting for their answers keep the connection (each within its own
    // deadline): failed now, a write the node goes on to apply could land after a later
    // write of the same instance sent elsewhere. The node answers them before it closes a
    // session another connection took over.
    this.closeIfReleased();
  }

  /** A released binding closes its connection once no write waits for an answer on it. */
  private closeIfReleased(): void {
    if (!this.released || this.waiting.size > 0) return;
    this.ws.removeAllListeners('message');
    if (this.ws.readyState === WebSocket.OPEN) this.ws.close(1000, 'released');
    else if (this.ws.readyState === WebSocket.CONNECTING) this.ws.terminate();
  }

  revoke(timeoutMs: number): Promise<boolean> {
    if (this.ws.readyState !== WebSocket.OPEN) {
      this.release();
      return Promise.resolve(false);
    }
    this.released = true;
    if (this.timer) clearTimeout(this.timer);
    this.end({ kind: 'released' });
    return new Promise((resolve) => {
      const t = unrefTimer(() => {
        this.ws.terminate();
        resolve(false);
      }, timeoutMs);
      // The node revokes the lease, then closes the socket normally.
      this.ws.once('close', (code) => {
        clearTimeout(t);
        resolve(code === 1000);
      });
      this.send({ type: 'close', revoke: true });
    });
  }
}

/**
 * A session request's refusal as the REST call would have put it: the instance is the body
 * there, so its fields are named without the message's `instance/`.
 */
function asRestProblem(p: Problem): Problem {
  return typeof p.field === 'string' && p.field.startsWith('instance/') ? { ...p, field: p.field.slice('instance/'.length) } : p;
}

function parseServerMessage(text: string): SessionServerMessage | ProtocolError {
  try {
    const m = JSON.parse(text) as SessionServerMessage;
    if (typeof m === 'object' && m !== null && typeof m.type === 'string') return m;
  } catch {
    /* fall through */
  }
  return new ProtocolError(`not a session message: ${text.slice(0, 80)}`);
}

/** @internal The REST fallback: keepalives by PUT every ttl/3 on one node. */
export class RestBinding implements Binding {
  private timer: NodeJS.Timeout | undefined;
  private released = false;
  private readonly end$ = settleOnce<BindingEnd>();
  readonly done = this.end$.promise;
  private readonly ac = new AbortController();

  private constructor(
    private readonly http: RegistryHttp,
    readonly info: LeaseInfo,
  ) {
    this.schedule();
  }

  static async connect(http: RegistryHttp, opts: BindOptions): Promise<RestBinding> {
    const { endpoint, signal } = opts;
    const timeoutMs = opts.connectTimeoutMs;
    const status = await http.call<NodeStatus>(endpoint, { method: 'GET', path: '/v1/status', signal, timeoutMs });
    let grant: LeaseGrant | undefined;
    if (opts.leaseId) {
      try {
        grant = (await http.call<LeaseGrant>(endpoint, { method: 'PUT', path: `/v1/leases/${encodeURIComponent(opts.leaseId)}/keepalive`, signal, timeoutMs })).body;
      } catch (err) {
        if (!(err instanceof LeaseNotFoundError)) throw err;
      }
    }
    grant ??= (await http.call<LeaseGrant>(endpoint, { method: 'POST', path: '/v1/leases', body: { ttlMs: opts.ttlMs }, signal, timeoutMs })).body;
    const info: LeaseInfo = { leaseId: grant.leaseId, ttlMs: grant.ttlMs, endpoint, nodeId: status.body.nodeId, epoch: status.body.epoch, transport: 'rest' };
    return new RestBinding(http, info);
  }

  private schedule(): void {
    this.timer = unrefTimer(() => void this.tick(), Math.max(50, Math.floor(this.info.ttlMs / KEEPALIVE_DIVISOR)));
  }

  private async tick(): Promise<void> {
    if (this.released) return;
    const { endpoint, leaseId, ttlMs } = this.info;
    try {
      const path = `/v1/leases/${encodeURIComponent(leaseId)}/keepalive`;
      await this.http.call<LeaseGrant>(endpoint, { method: 'PUT', path, signal: this.ac.signal, timeoutMs: Math.max(50, Math.floor(ttlMs / KEEPALIVE_DIVISOR)) });
      if (!this.released) this.schedule();
    } catch (err) {
      if (err instanceof LeaseNotFoundError) this.end({ kind: 'lease-ended', leaseId, reason: 'lease_not_found' });
      else this.end({ kind: 'lost', cause: err });
    }
  }

  end(how: BindingEnd): void {
    if (this.end$.settled()) {
      // During a hand-over a failed keepalive ends the keepalives too.
      if (how.kind !== 'handover') this.stopKeepalives();
      return;
    }
    if (how.kind !== 'handover') this.stopKeepalives();
    this.end$.settle(how);
  }

  private stopKeepalives(): void {
    this.released = true;
    if (this.timer) clearTimeout(this.timer);
    this.ac.abort();
  }

  release(): void {
    this.stopKeepalives();
    this.end({ kind: 'released' });
  }

  async revoke(timeoutMs: number): Promise<boolean> {
    this.release();
    try {
      await this.http.call(this.info.endpoint, { method: 'DELETE', path: `/v1/leases/${encodeURIComponent(this.info.leaseId)}`, timeoutMs });
      return true;
    } catch (err) {
      return err instanceof LeaseNotFoundError;
    }
  }
}
