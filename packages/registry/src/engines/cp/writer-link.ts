/**
 * cp: one node writes for all (docs/cp.md, *One node writes*). Each node group-commits
 * its own writers' registrations into etcd transactions, and a transaction costs etcd and
 * the node far more than a write in it; spread over three nodes, each transaction carries a
 * third of the writers. So the nodes send their registrations and deregistrations to one
 * node, the writer (the live node with the smallest id), over one session WebSocket
 * each, as requests like a client's: the writer checks and plans them as its own, and its
 * transactions carry every node's writers. The sending node answers once its own view has
 * the write's revision, as it does for a write of its own.
 *
 * A write goes through the writer only when the link to it is up and has room; otherwise
 * (no link yet, the link failed a moment ago, the writer refused it) the node writes it
 * itself, as before: forwarding changes the cost of a write, never whether it can be made.
 * A write sent on a link that fails before its answer may have been made: it is answered
 * 503 STORE_UNAVAILABLE with Retry-After, as a transaction etcd did not answer is (a
 * registration sent again changes nothing).
 *
 * A write the node gave up on must never be planned later (a retry may have been made
 * another way meanwhile), so each carries `planBy`, a time on the writer's clock: the
 * writer tells its clock when the link opens, every second and in its answers
 * (ClockBound), and the link is up once it has. Each also carries `budgetMs`, counted from
 * its arrival; the writer plans by the earlier. A writer of an earlier version tells no
 * clock: after handshakeTimeoutMs its link is used with `budgetMs` alone.
 */
import WebSocket from 'ws';
import { ERRORS, SESSION_MAX_INFLIGHT_REQUESTS, SESSION_PATH, SwitchboardError, type ErrorCode } from '@switchboard/protocol';
import { FORWARDED_WRITES_HEADER, type ForwardedWrite } from '../engine.js';
import { ClockBound } from './clock-bound.js';
import type { PeerApi } from './forward.js';

export interface WriterLinkOptions {
  nodeId: string;
  peer: PeerApi;
  /**
   * Longest wait for the writer's answer to one write (ms): longer than the writer may take
   * to make it (its queue, the transaction, its view, a barrier). A write not answered in
   * time gets 503; the link is ended only when nothing at all came from the writer that long.
   */
  timeoutMs: number;
  /** Longest wait for the link's handshake (ms), and again for the writer's first clock reading (without one, writes carry budgetMs alone). */
  handshakeTimeoutMs: number;
  /** Largest session message the writer takes (limits.maxSessionMessageBytes): a larger write is made locally. */
  maxMessageBytes: number;
  /** Writes waiting for the writer's answer at once (at most a session's SESSION_MAX_INFLIGHT_REQUESTS); beyond it the node writes itself. 0: never forward. */
  maxInflight: number;
  /** After the link failed, how long the node writes itself before it tries the writer again (ms). */
  retryMs: number;
  /** The same after the writer refused this node's token (ms): that does not change by waiting. */
  refusedRetryMs: number;
  log: (level: 'warn' | 'info', msg: string) => void;
}

/** The writer refused the write before making it (it is shutting down, or the link's session is full): the node makes it itself. */
export class NotTaken extends Error {}

/** Refusals a session gives a request before running it (its admission): such a write was not made. */
const NOT_TAKEN: ReadonlySet<string> = new Set(['NOT_READY', 'RATE_LIMITED']);

interface Waiting {
  resolve(revision: number): void;
  reject(err: unknown): void;
  timer: NodeJS.Timeout;
}

interface AnswerMessage {
  type?: unknown;
  id?: unknown;
  revision?: unknown;
  /** The writer's clock when it sent the message (its `clock` messages, results and errors). */
  at?: unknown;
  problem?: { code?: unknown; detail?: unknown; hint?: unknown; field?: unknown; limit?: unknown; retryAfterSec?: unknown };
}

/** One WebSocket to a writer, with the writes waiting for its answers. */
interface Conn {
  readonly ws: WebSocket;
  readonly node: string;
  readonly waiting: Map<number, Waiting>;
  /** What this node knows of the writer's clock. */
  readonly clock: ClockBound;
  /** Up: the WebSocket is open and the writer told its clock, or told none within handshakeTimeoutMs (until then, writes are made locally). */
  open: boolean;
  /** The writer said goaway: nothing reopens the link. */
  goneAway: boolean;
  /** Waits for the writer's first clock reading. */
  clockWait: NodeJS.Timeout | null;
  /** No new writes go on it (the writer changed): it ends once its writes are answered. */
  retired: boolean;
  ended: boolean;
  /** When the writer last answered a write on it, or the link opened (performance.now()); its clock readings do not count. */
  answeredAt: number;
}

export class WriterLink {
  /** Writes sent to the writer, and those whose answer never came (for the status). */
  forwarded = 0;
  lost = 0;
  /** The link new writes go on. */
  private conn: Conn | null = null;
  /** Links to former writers, still answering the writes sent on them. */
  private readonly retired = new Set<Conn>();
  /** The writer the link goes (or went) to, and its API's base URL. */
  private node: string | null = null;
  private url: string | null = null;
  private nextId = 0;
  private retryAt = 0;
  private closed = false;

  constructor(private readonly opts: WriterLinkOptions) {}

  /** The node the link goes to, when it is up. */
  get writer(): string | null {
    return this.conn?.open ? this.node : null;
  }

  /**
   * How long ago (ms) the writer's clock reading that the writes' planBy rests on came;
   * null when the link is not up or the writer told no clock (its writes carry budgetMs alone).
   */
  get clockAgeMs(): number | null {
    const conn = this.conn;
    if (!conn?.open) return null;
    const age = conn.clock.ageAt(performance.now());
    return age === null ? null : Math.round(age);
  }

  /**
   * Sends `w` to the writer at `url` (its API's base URL); null when it cannot go now, and
   * the caller writes it itself. Resolves with the write's revision.
   */
  send(writer: string, url: string, w: ForwardedWrite): Promise<number> | null {
    if (this.closed || this.opts.maxInflight <= 0) return null;
    // Another writer: at once; the same one after a failure: once retryMs have passed.
    if (this.node !== writer || this.url !== url || (this.conn === null && Date.now() >= this.retryAt)) this.connect(writer, url);
    const conn = this.conn;
    if (conn === null || !conn.open || conn.waiting.size >= Math.min(this.opts.maxInflight, SESSION_MAX_INFLIGHT_REQUESTS)) return null;
    const id = this.nextId++;
    // The writer plans it within half the wait, or refuses it: a write this node gave up on
    // (503) is never planned later, from a view in which a retry may already be made.
    // planBy is that moment on the writer's clock (or earlier), so a write that arrives
    // late has no more time; budgetMs counts it from the arrival (all a writer of an
    // earlier version knows), and the writer plans by the earlier of the two.
    const budgetMs = Math.floor(this.opts.timeoutMs / 2);
    const planBy = Math.floor(conn.clock.remoteAt(performance.now()) + budgetMs);
    const text = JSON.stringify(Number.isFinite(planBy) ? { ...w, id, budgetMs, planBy } : { ...w, id, budgetMs });
    // A body the writer's session would refuse (and close the link over) is made here.
    if (Buffer.byteLength(text) > this.opts.maxMessageBytes) return null;
    this.forwarded++;
    return new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (!conn.waiting.delete(id)) return;
        this.lost++;
        reject(unknownOutcome(writer, `its answer did not come (no answer within ${this.opts.timeoutMs} ms)`));
        // A writer that answered no write at all meanwhile is stuck or cut off (its clock
        // readings may still come: the other direction can be the dead one): write locally for a while.
        if (performance.now() - conn.answeredAt >= this.opts.timeoutMs) this.fail(conn, `node ${writer} answered no write on the link for forwarded writes for ${this.opts.timeoutMs} ms`);
        else this.endIfDone(conn);
      }, this.opts.timeoutMs);
      conn.waiting.set(id, { resolve, reject, timer });
      conn.ws.send(text);
    });
  }

  close(): void {
    this.closed = true;
    if (this.conn) this.fail(this.conn, 'the node is shutting down', true);
    for (const c of this.retired) this.fail(c, 'the node is shutting down', true);
  }

  private connect(writer: string, url: string): void {
    const old = this.conn;
    if (old) {
      // The writes already sent there are answered there (the old writer is alive, or its
      // link fails and they get 503 as on any failed link); new ones go to the new writer.
      this.conn = null;
      old.retired = true;
      this.retired.add(old);
      this.endIfDone(old);
    }
    this.node = writer;
    this.url = url;
    const token = this.opts.peer.token();
    const headers: Record<string, string> = { [FORWARDED_WRITES_HEADER]: this.opts.nodeId };
    if (token !== null) headers.authorization = `Bearer ${token}`;
    const ws = new WebSocket(`${url.replace(/^http/, 'ws')}${SESSION_PATH}`, {
      perMessageDeflate: false,
      handshakeTimeout: this.opts.handshakeTimeoutMs,
      headers,
      ...(this.opts.peer.ca ? { ca: this.opts.peer.ca } : {}),
    });
    const conn: Conn = { ws, node: writer, waiting: new Map(), clock: new ClockBound(), open: false, goneAway: false, clockWait: null, retired: false, ended: false, answeredAt: 0 };
    this.conn = conn;
    ws.on('open', () => {
      if (conn.ended) return;
      conn.answeredAt = performance.now();
      // The link is up once the writer told its clock, its first message (answer()). A
      // writer of an earlier version tells none: its writes then carry budgetMs alone.
      conn.clockWait = setTimeout(() => {
        conn.clockWait = null;
        if (conn.ended || conn.retired || conn.goneAway || conn.clock.known) return;
        conn.open = true;
        this.opts.log('info', `node ${writer} told no clock on the link for forwarded writes within ${this.opts.handshakeTimeoutMs} ms (an earlier version, or a slow link): the writes sent to it carry budgetMs alone, counted from their arrival, until it does`);
      }, this.opts.handshakeTimeoutMs);
      conn.clockWait.unref();
    });
    ws.on('message', (data) => this.answer(conn, String(data)));
    ws.on('unexpected-response', (_req, res) => {
      const refused = res.statusCode === 401 || res.statusCode === 403;
      if (!refused) return this.fail(conn, `node ${writer} refused the link for forwarded writes (HTTP ${res.statusCode})`);
      // A forward token may forward consumer reports only (docs/cp.md): with one, each node writes itself.
      this.fail(conn, `node ${writer} refused this node's token for forwarded writes (HTTP ${res.statusCode}): a token of scope forward forwards consumer reports only, so each node makes its own writes (docs/cp.md, One node writes)`, false, this.opts.refusedRetryMs);
    });
    ws.on('error', (err) => this.fail(conn, `the link to node ${writer} for forwarded writes failed: ${err.message}`));
    ws.on('close', () => this.fail(conn, `the link to node ${writer} for forwarded writes closed`));
  }

  private answer(conn: Conn, text: string): void {
    const now = performance.now();
    let m: AnswerMessage;
    try {
      m = JSON.parse(text) as AnswerMessage;
    } catch {
      return;
    }
    if (typeof m.at === 'number') conn.clock.observe(m.at, now);
    if (m.type === 'clock') {
      if (!conn.clock.known) return; // a reading that was not a number
      if (conn.clockWait) clearTimeout(conn.clockWait);
      conn.clockWait = null;
      if (!conn.ended && !conn.retired && !conn.goneAway) conn.open = true;
      return;
    }
    if (m.type === 'error' && m.id === undefined) {
      // The writer refused the session itself (it holds too many, or is shutting down).
      return this.fail(conn, `node ${conn.node} refused the link for forwarded writes (${String(m.problem?.code)})`);
    }
    if (m.type === 'goaway') {
      // The writer is shutting down: the writes waiting are answered, no new one is sent.
      conn.open = false;
      conn.goneAway = true;
      if (conn === this.conn) this.retryAt = Date.now() + this.opts.retryMs;
      return;
    }
    if (typeof m.id !== 'number') return;
    conn.answeredAt = now;
    const w = conn.waiting.get(m.id);
    if (!w) return;
    conn.waiting.delete(m.id);
    clearTimeout(w.timer);
    if (m.type === 'result' && typeof m.revision === 'number') w.resolve(m.revision);
    else if (typeof m.problem?.code === 'string' && NOT_TAKEN.has(m.problem.code)) w.reject(new NotTaken(String(m.problem.detail)));
    else w.reject(problemError(conn.node, m.problem));
    this.endIfDone(conn);
  }

  /** Ends a retired link once no write waits on it. */
  private endIfDone(conn: Conn): void {
    if (conn.retired && conn.waiting.size === 0) this.fail(conn, 'the writer changed', true);
  }

  /**
   * Ends a link; writes waiting on it may have been made (503). `quiet`: nothing worth a
   * log line (and no pause before the next link).
   */
  private fail(conn: Conn, why: string, quiet = false, retryMs = this.opts.retryMs): void {
    if (conn.ended) return;
    conn.ended = true;
    if (conn.clockWait) clearTimeout(conn.clockWait);
    conn.clockWait = null;
    const current = conn === this.conn;
    const wasOpen = conn.open;
    conn.open = false;
    this.retired.delete(conn);
    if (current) {
      this.conn = null;
      if (!quiet) this.retryAt = Date.now() + retryMs;
    }
    conn.ws.removeAllListeners();
    conn.ws.on('error', () => undefined);
    conn.ws.terminate();
    for (const [id, w] of conn.waiting) {
      conn.waiting.delete(id);
      clearTimeout(w.timer);
      this.lost++;
      w.reject(unknownOutcome(conn.node, `its answer did not come (${why})`));
    }
    if (!quiet && !this.closed && current) this.opts.log(wasOpen || retryMs > this.opts.retryMs ? 'warn' : 'info', `${why}; this node writes itself for the next ${Math.round(retryMs / 1000)} s`);
  }
}

/** 503 for a forwarded write whose outcome this node cannot know: `what` happened to it. */
function unknownOutcome(writer: string, what: string): SwitchboardError {
  return new SwitchboardError('STORE_UNAVAILABLE', `the write was sent to node ${writer}, which writes for the cluster, and ${what}; it may have been made`, {
    retryAfterSec: 1,
    hint: 'retry: a registration or deregistration sent again changes nothing if it was made',
  });
}

/**
 * The writer's refusal, as this node gives it to its client. A code this node does not
 * know (a newer writer's) does not say whether the write was made: it is answered as a
 * lost answer is, 503 and retry, not as this node's own fault (500).
 */
function problemError(writer: string, p: AnswerMessage['problem']): SwitchboardError {
  if (typeof p?.code !== 'string' || !(p.code in ERRORS)) return unknownOutcome(writer, `it answered with an error this node does not know: ${String(p?.code).slice(0, 64)}${typeof p?.detail === 'string' ? `, ${p.detail.slice(0, 200)}` : ''}`);
  const code = p.code as ErrorCode;
  const extra: { hint?: string; field?: string; limit?: string; retryAfterSec?: number } = {};
  if (typeof p?.hint === 'string') extra.hint = p.hint;
  if (typeof p?.field === 'string') extra.field = p.field;
  if (typeof p?.limit === 'string') extra.limit = p.limit;
  if (typeof p?.retryAfterSec === 'number') extra.retryAfterSec = p.retryAfterSec;
  return new SwitchboardError(code, typeof p?.detail === 'string' ? p.detail : 'the writer node refused the write', extra);
}
