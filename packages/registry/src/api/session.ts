/**
 * Session streams (GET /v1/session, a WebSocket): one per client process, keeping its
 * lease alive. A connection that closes without a hand-over or a `close` message means
 * the process most likely died, so its lease ends after `sessionGraceMs`; a process that
 * is frozen or cut off keeps its socket open and is caught by the lease TTL instead.
 */
import type { FastifyBaseLogger, FastifyInstance, FastifyRequest } from 'fastify';
import type { WebSocket } from 'ws';
import {
  SESSION_PATH,
  SwitchboardError,
  invalid,
  validateLeaseId,
  validateLeaseRequest,
  type SessionClientMessage,
  type SessionServerMessage,
} from '@switchboard/protocol';
import type { ApiContext } from './context.js';
import { toSwitchboardError } from './problem.js';
import { SessionRequests, parseRequest } from './session-requests.js';
import { FORWARDED_WRITES_HEADER } from '../engines/engine.js';

/**
 * Messages of one session waiting to be handled (they are handled one at a time, in
 * order). A client sends one keepalive per ttl/3; more than this waiting is a client
 * that does not wait for answers: it gets an error and the connection is closed.
 */
export const SESSION_MAX_PENDING_MESSAGES = 32;

/**
 * cp: how often a node tells its clock on a link another node opened for forwarded writes
 * (ms). The sending node states each write's deadline on this clock from a bound that
 * loosens between readings (ClockBound), so a reading every second keeps it tight on a
 * link that carries no writes for a while.
 */
export const FORWARDED_CLOCK_INTERVAL_MS = 1_000;

/** Longest a replaced session stays open for its running requests to be answered. */
const REPLACED_CLOSE_GRACE_MS = 5_000;

class Session {
  leaseId: string | null = null;
  /** Set when the session ends on purpose or hands over: its close then changes nothing. */
  quiet = false;
  /** The message being handled and those waiting after it (see SESSION_MAX_PENDING_MESSAGES). */
  chain: Promise<void> = Promise.resolve();
  pending = 0;
  /** Requests running (see SESSION_MAX_INFLIGHT_REQUESTS). */
  inflight = 0;
  /** A close asked for while requests were running: done when the last is answered. */
  private closing: (() => void) | null = null;
  /** cp, a forwarded-writes session: aborted when it closes, so that its writes not yet planned never are. */
  private readonly ended: AbortController | null;
  /** cp, a forwarded-writes session: tells this node's clock every FORWARDED_CLOCK_INTERVAL_MS. */
  private clockTimer: NodeJS.Timeout | null = null;

  constructor(
    readonly socket: WebSocket,
    readonly client: string,
    /** cp: the session another node opened to send this node the writes it forwards (FORWARDED_WRITES_HEADER). */
    readonly forwarded = false,
  ) {
    this.ended = forwarded ? new AbortController() : null;
  }

  /** Aborted once the session is closed (forwarded-writes sessions only). */
  get signal(): AbortSignal | undefined {
    return this.ended?.signal;
  }

  /** The connection is gone: writes of a forwarded-writes session not yet planned are not made. */
  closed(): void {
    this.ended?.abort();
    this.stopClock();
  }

  /** cp, a forwarded-writes session: tells this node's clock now and every FORWARDED_CLOCK_INTERVAL_MS (until goaway). */
  tellClock(): void {
    const tell = (): void => this.send({ type: 'clock', at: performance.now() });
    tell();
    this.clockTimer = setInterval(tell, FORWARDED_CLOCK_INTERVAL_MS);
    this.clockTimer.unref();
  }

  /** cp: no more clock readings (the connection is gone, or the node is going away: a reading after goaway would mean nothing). */
  stopClock(): void {
    if (this.clockTimer) clearInterval(this.clockTimer);
    this.clockTimer = null;
  }

  get open(): boolean {
    return this.socket.readyState === this.socket.OPEN;
  }

  /** Closing once its running requests are answered: it takes no new ones. */
  get draining(): boolean {
    return this.closing !== null;
  }

  /**
   * Closes the connection once the requests running on it are answered (a write a node
   * took is answered, not cut off), at most `graceMs` later; resolves when it is closed.
   */
  closeWhenIdle(code: number, reason: string, graceMs: number): Promise<void> {
    const closeNow = (): void => {
      if (this.socket.readyState === this.socket.OPEN) this.socket.close(code, reason);
    };
    if (this.inflight === 0) {
      closeNow();
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const close = (): void => {
        clearTimeout(timer);
        this.closing = null;
        closeNow();
        resolve();
      };
      const timer = setTimeout(close, graceMs);
      timer.unref();
      this.closing = close;
    });
  }

  requestDone(): void {
    this.inflight--;
    if (this.inflight === 0) this.closing?.();
  }

  send(msg: SessionServerMessage): void {
    if (this.socket.readyState === this.socket.OPEN) this.socket.send(JSON.stringify(msg));
  }

  /** Bytes of answers made and not yet handed to the socket (see reserve). */
  private reserved = 0;

  get buffered(): number {
    return this.socket.bufferedAmount + this.reserved;
  }

  reserve(bytes: number): void {
    this.reserved += bytes;
  }

  cut(): void {
    // No close handshake: the client reads nothing, so it would never answer one.
    this.socket.terminate();
  }

  sendText(text: string | Buffer): void {
    if (this.socket.readyState === this.socket.OPEN) this.socket.send(text, { binary: false });
  }
}

export class Sessions {
  private readonly all = new Set<Session>();
  private readonly byLease = new Map<string, Session>();
  private shuttingDown = false;
  private readonly stopListening: () => void;
  private readonly requests: SessionRequests;

  constructor(
    private readonly ctx: ApiContext,
    log: Pick<FastifyBaseLogger, 'error'>,
  ) {
    this.requests = new SessionRequests(ctx, log);
    this.stopListening = ctx.engine.onLeaseEnded((leaseId, reason) => {
      const s = this.byLease.get(leaseId);
      if (!s) return;
      this.byLease.delete(leaseId);
      s.leaseId = null;
      s.send({ type: 'ended', leaseId, reason });
    });
  }

  get size(): number {
    return this.all.size;
  }

  accept(socket: WebSocket, req: FastifyRequest): void {
    const { limits } = this.ctx;
    if (this.shuttingDown || this.all.size >= limits.maxSessionsPerNode) {
      const problem = this.shuttingDown
        ? new SwitchboardError('NOT_READY', 'the node is shutting down', { retryAfterSec: 1, hint: 'connect to another node' })
        : new SwitchboardError('RATE_LIMITED', `this node already holds ${this.all.size} sessions`, { limit: 'maxSessionsPerNode', retryAfterSec: 5, hint: 'connect to another node' });
      socket.send(JSON.stringify({ type: 'error', problem: problem.toProblem() } satisfies SessionServerMessage));
      socket.close(1013, problem.code);
      return;
    }
    // Only a cp node takes writes forwarded by another; elsewhere the header means nothing.
    const session = new Session(socket, req.ip, this.ctx.engine.mode === 'cp' && req.headers[FORWARDED_WRITES_HEADER] !== undefined);
    this.all.add(session);
    // A node's link for forwarded writes: this node's clock first, for the writes' planBy.
    if (session.forwarded) session.tellClock();
    // An upgraded request has no onResponse: counted when it opens.
    this.ctx.metrics.observeRequest('GET', SESSION_PATH, 101, null);
    socket.on('message', (data, isBinary) => {
      const text = isBinary ? null : data.toString();
      const request = text === null ? null : parseRequest(text);
      if (request !== null) return this.requests.handle(session, request);
      if (session.forwarded) {
        // A node's link for forwarded writes carries requests only: anything else ends it.
        const problem = new SwitchboardError('FORBIDDEN', 'this session was opened for writes forwarded by another node: it takes requests, not lease messages', { hint: 'open a session without the x-switchboard-forwarded-writes header' });
        session.send({ type: 'error', problem: problem.toProblem(), ...requestOf(text) });
        socket.close(1008, 'requests only');
        return;
      }
      if (session.pending >= SESSION_MAX_PENDING_MESSAGES) {
        const problem = new SwitchboardError('RATE_LIMITED', `more than ${SESSION_MAX_PENDING_MESSAGES} session messages wait to be handled`, { limit: 'sessionMaxPendingMessages', hint: 'wait for each answer (ack, lease) before sending more' });
        session.send({ type: 'error', problem: problem.toProblem(), ...requestOf(text) });
        socket.close(1008, 'too many messages');
        return;
      }
      // One message at a time, in order: two `open`s sent together must not both be
      // granted a lease (the second finds the first's), nor a resume overtake an open.
      session.pending++;
      session.chain = session.chain
        // A message still queued when its connection closed is not acted on (a resume would
        // take the lease from another live session of the client, only to let it go).
        .then(() => (this.all.has(session) ? this.onMessage(session, text) : undefined))
        .catch((err) => {
          // Echo what failed, so that a client need not infer it from the conversation.
          const request = requestOf(text);
          session.send({ type: 'error', problem: toSwitchboardError(err, limits.maxSessionMessageBytes).toProblem(), ...request });
        })
        .finally(() => session.pending--);
    });
    socket.on('close', () => this.onClose(session));
    socket.on('error', () => socket.terminate());
  }

  /**
   * Tells every client to resume elsewhere; their leases stay as they are. Each connection
   * closes once the requests running on it are answered, at most `graceMs` later; resolves
   * when all are closed (before the engine closes under them).
   */
  shutdown(graceMs: number): Promise<void> {
    this.shuttingDown = true;
    this.stopListening();
    const closed: Promise<void>[] = [];
    for (const s of this.all) {
      s.quiet = true;
      s.stopClock();
      s.send({ type: 'goaway' });
      closed.push(s.closeWhenIdle(1001, 'shutdown', graceMs));
    }
    return Promise.all(closed).then(() => undefined);
  }

  private async onMessage(s: Session, text: string | null): Promise<void> {
    const msg = parse(text);
    const { engine, limits } = this.ctx;
    switch (msg.type) {
      case 'open': {
        if (s.leaseId) throw invalid('type', `this session already keeps lease ${s.leaseId}`, 'use one session per lease; send close first');
        const ttlMs = validateLeaseRequest({ ttlMs: msg.ttlMs }, limits);
        const grant = await engine.grantLease(ttlMs);
        return this.bind(s, grant.leaseId, grant.ttlMs);
      }
      case 'resume': {
        const leaseId = validateLeaseId(msg.leaseId);
        const grant = await engine.keepAlive(leaseId); // LEASE_NOT_FOUND when it is gone
        await engine.attachLease?.(leaseId);
        const previous = this.byLease.get(leaseId);
        if (previous && previous !== s) {
          previous.quiet = true;
          previous.leaseId = null;
          previous.send({ type: 'replaced', leaseId });
          // Its requests still running are answered first (the client waits for them).
          void previous.closeWhenIdle(1000, 'replaced', REPLACED_CLOSE_GRACE_MS);
        }
        if (s.leaseId && s.leaseId !== leaseId) {
          // The session moves to another lease: the one it leaves is no longer kept alive.
          this.byLease.delete(s.leaseId);
          engine.detachLease(s.leaseId, limits.sessionGraceMs);
        }
        return this.bind(s, leaseId, grant.ttlMs);
      }
      case 'keepalive': {
        if (!s.leaseId) throw invalid('type', 'this session keeps no lease yet', 'send open or resume first');
        const seq = typeof msg.seq === 'number' && Number.isSafeInteger(msg.seq) ? msg.seq : 0;
        const grant = await engine.keepAlive(s.leaseId);
        return s.send({ type: 'ack', seq, ttlMs: grant.ttlMs });
      }
      case 'close': {
        s.quiet = true;
        const leaseId = s.leaseId;
        if (leaseId) this.byLease.delete(leaseId);
        s.leaseId = null;
        if (leaseId && msg.revoke === true) {
          try {
            await engine.revokeLease(leaseId);
          } catch (err) {
            // The client must learn that its instances may still be registered (it can
            // fall back to REST deletes): an error, then close code 1011 instead of 1000.
            s.send({ type: 'error', problem: toSwitchboardError(err, limits.maxSessionMessageBytes).toProblem(), request: 'close' });
            s.socket.close(1011, 'revoke failed');
            return;
          }
        }
        s.socket.close(1000, 'closed');
        return;
      }
    }
  }

  private bind(s: Session, leaseId: string, ttlMs: number): void {
    if (!this.all.has(s)) {
      // The connection closed while the lease was granted or resumed: nobody keeps it
      // alive here, so it ends after the grace like that of any dropped session.
      if (!this.shuttingDown) this.ctx.engine.detachLease(leaseId, this.ctx.limits.sessionGraceMs);
      return;
    }
    s.leaseId = leaseId;
    this.byLease.set(leaseId, s);
    const { engine, limits } = this.ctx;
    s.send({ type: 'lease', leaseId, ttlMs, nodeId: engine.nodeId, epoch: engine.registry.epoch, graceMs: limits.sessionGraceMs, maxMessageBytes: limits.maxSessionMessageBytes });
  }

  private onClose(s: Session): void {
    this.all.delete(s);
    s.closed();
    const leaseId = s.leaseId;
    if (!leaseId) return;
    if (this.byLease.get(leaseId) === s) this.byLease.delete(leaseId);
    if (!s.quiet && !this.shuttingDown) this.ctx.engine.detachLease(leaseId, this.ctx.limits.sessionGraceMs);
  }
}

/** The type (and seq) of the message a failure belongs to, when it can be read. */
function requestOf(text: string | null): { request?: string; seq?: number } {
  try {
    const m = JSON.parse(text ?? '') as { type?: unknown; seq?: unknown };
    const out: { request?: string; seq?: number } = {};
    if (typeof m.type === 'string' && m.type.length <= 32) out.request = m.type;
    if (typeof m.seq === 'number' && Number.isSafeInteger(m.seq)) out.seq = m.seq;
    return out;
  } catch {
    return {};
  }
}

function parse(text: string | null): SessionClientMessage {
  if (text === null) throw invalid('message', 'session messages are JSON text frames', 'send text frames such as {"type":"keepalive","seq":1}');
  let msg: unknown;
  try {
    msg = JSON.parse(text);
  } catch {
    throw invalid('message', 'the message is not valid JSON', 'send {"type":"open","ttlMs":10000}, {"type":"resume","leaseId":"..."}, {"type":"keepalive","seq":1} or {"type":"close","revoke":true}');
  }
  const type = (msg as { type?: unknown } | null)?.type;
  if (typeof msg !== 'object' || msg === null || !['open', 'resume', 'keepalive', 'close'].includes(type as string)) {
    throw invalid('type', `unknown session message type ${JSON.stringify(type)}`, 'use one of: open, resume, keepalive, close');
  }
  return msg as SessionClientMessage;
}

export async function sessionRoutes(app: FastifyInstance, sessions: Sessions): Promise<void> {
  app.route({
    method: 'GET',
    url: SESSION_PATH,
    schema: {
      tags: ['leases'],
      summary: 'Session stream (WebSocket): keeps one lease alive over one connection',
      description: 'JSON text messages; see docs/api.md. Client: open, resume, keepalive, close. Server: lease, ack, ended, replaced, goaway, error.',
    },
    // A plain HTTP request here is a client that forgot the upgrade.
    handler: async () => {
      throw invalid('Upgrade', 'GET /v1/session is a WebSocket endpoint', 'connect with a WebSocket client (Upgrade: websocket), or use POST /v1/leases and PUT /v1/leases/{leaseId}/keepalive');
    },
    wsHandler: (socket: WebSocket, req: FastifyRequest) => sessions.accept(socket, req),
  });
}
