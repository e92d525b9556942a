/**
 * Requests over the session stream (an extension of API v1, docs/api.md): register,
 * deregister and read on the connection a client process holds for its lease anyway.
 * They do what the REST calls do (same checks, same engine calls, same answers) without an
 * HTTP request each: no request line and headers to parse, no answer headers, no route
 * lookup. Unlike the session's lease messages they run concurrently, like requests on
 * separate HTTP connections.
 */
import {
  SESSION_MAX_BUFFERED_BYTES,
  SESSION_MAX_INFLIGHT_REQUESTS,
  SESSION_PATH,
  SESSION_REQUEST_TYPES,
  SwitchboardError,
  capWarnings,
  invalid,
  unknownFieldWarnings,
  validateInstanceId,
  type SessionRequestType,
  type SessionServerMessage,
} from '@switchboard/protocol';
import type { FastifyBaseLogger } from 'fastify';
import type { ApiContext } from './context.js';
import { writeThrough, type WriteOptions } from '../engines/engine.js';
import { toSwitchboardError } from './problem.js';
import { namespaceOf, refuseUnknown, serviceParam, serviceQuery, type Query } from './query.js';
import { currentAnswer } from './routes-read.js';
import { checkedRegistration } from './routes-write.js';
import { tracingEnabled, withRequestSpan } from '../telemetry/index.js';

/** What a request needs of its session. */
export interface RequestSession {
  inflight: number;
  /** False once the connection is closing or closed: requests still in its last chunk are dropped. */
  readonly open: boolean;
  /** Closing once its running requests are answered (replaced, or the node shuts down): new ones are refused. */
  readonly draining: boolean;
  /** Called after each request is answered: one fewer running (a session waiting to close closes when none is left). */
  requestDone(): void;
  /** Bytes sent to the client and not yet taken by its connection, and those of answers made and about to be sent. */
  readonly buffered: number;
  /** Counts (bytes > 0) or uncounts (bytes < 0) an answer made and not sent yet. */
  reserve(bytes: number): void;
  /** Ends the connection at once (a client that reads none of its answers). */
  cut(): void;
  /** The client's address, for traces. */
  readonly client: string;
  /** cp: another node's session for the writes it forwards: they are made here, never sent on. */
  readonly forwarded: boolean;
  /** cp, forwarded sessions: aborted when the connection closes (its writes not yet planned are then not made). */
  readonly signal?: AbortSignal;
  send(msg: SessionServerMessage): void;
  sendText(text: string | Buffer): void;
}

/** A parsed request message (its fields checked when it runs). */
export type RawRequest = Record<string, unknown> & { type: SessionRequestType };

const FIELDS: Record<SessionRequestType, readonly string[]> = {
  register: ['type', 'id', 'service', 'instanceId', 'namespace', 'instance', 'strict', 'traceparent', 'tracestate'],
  deregister: ['type', 'id', 'service', 'instanceId', 'namespace', 'strict', 'traceparent', 'tracestate'],
  read: ['type', 'id', 'service', 'namespace', 'healthy', 'zone', 'tag', 'version', 'fields', 'consistent', 'strict', 'traceparent', 'tracestate'],
};

/**
 * A write on a node's link for forwarded writes (cp) also carries `budgetMs`, how long
 * after its arrival the write may still be planned, and `planBy`, the time on this node's
 * clock (the link's `clock` message) after which it may not (its sender stops waiting later).
 */
const FORWARDED_WRITE_FIELDS = { register: [...FIELDS.register, 'budgetMs', 'planBy'], deregister: [...FIELDS.deregister, 'budgetMs', 'planBy'] } as const;

/** The most a forwarded write's `budgetMs` may be (ms). */
const MAX_FORWARDED_BUDGET_MS = 600_000;

/** Each request type's route in metrics and span names: the session's path and the type. */
const ROUTES = Object.fromEntries(SESSION_REQUEST_TYPES.map((t) => [t, `${SESSION_PATH}#${t}`])) as Record<SessionRequestType, string>;

/** The filters of a read: the query parameters of GET /v1/services/{service}, typed. */
const READ_PARAMS = Object.entries({ healthy: 'boolean', zone: 'string', tag: 'strings', version: 'string', fields: 'strings', consistent: 'boolean' } as const);

/**
 * The message when it is a request (its `type` one of SESSION_REQUEST_TYPES); null for
 * anything else, which the lease messages' handler answers (or refuses); it parses those
 * again, but they are rare (a keepalive per TTL/3) where requests are the traffic.
 */
export function parseRequest(text: string): RawRequest | null {
  let msg: unknown;
  try {
    msg = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) return null;
  const type = (msg as { type?: unknown }).type;
  return SESSION_REQUEST_TYPES.includes(type as SessionRequestType) ? (msg as RawRequest) : null;
}

export class SessionRequests {
  constructor(
    private readonly ctx: ApiContext,
    private readonly log: Pick<FastifyBaseLogger, 'error'>,
  ) {}

  /** Runs a request and answers it with `result` or `error` (naming its id) when it is done. */
  handle(s: RequestSession, msg: RawRequest): void {
    if (!s.open) return;
    const { type } = msg;
    const id = msg.id;
    // Admission first: the refusal of a request without a valid id is an answer queued for
    // the client too, bounded as every other.
    const refused = this.admission(s);
    if (refused === 'cut') return s.cut();
    if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0) {
      const problem = invalid('id', `request id ${JSON.stringify(id) ?? 'undefined'} is not a non-negative integer`, 'give each request an id of your choosing, such as 1, 2, 3: its result carries it');
      s.send({ type: 'error', request: type, problem: problem.toProblem() });
      this.observe(type, problem.status, null);
      return;
    }
    if (refused !== null) {
      s.send({ type: 'error', id, request: type, problem: refused.toProblem() });
      this.observe(type, refused.status, null);
      return;
    }
    s.inflight++;
    const started = performance.now();
    const attempt = (): Promise<string | Buffer> => {
      try {
        return this.run(s, msg, id);
      } catch (err) {
        return Promise.reject(err);
      }
    };
    // Traced like an HTTP request, under the trace context the message carries (W3C
    // traceparent, tracestate); with tracing off, nothing is built for it.
    const run = tracingEnabled() ? withRequestSpan(`SESSION ${ROUTES[type]}`, traceCarrier(msg), { 'rpc.system': 'switchboard', 'rpc.method': type, 'client.address': s.client }, attempt) : attempt();
    run
      .then(
        (text) => {
          if (type === 'read') s.reserve(-sizeOf(text));
          s.sendText(text);
          this.observe(type, 200, started);
        },
        (err: unknown) => {
          const problem = toSwitchboardError(err, this.ctx.limits.maxSessionMessageBytes);
          // As the REST error handler: a server error is logged with its cause (its answer says so).
          if (problem.status >= 500 && problem.status !== 503) this.log.error({ err, request: type, client: s.client }, `session request ${type} failed`);
          s.send({ type: 'error', id, request: type, problem: problem.toProblem(), ...(s.forwarded ? { at: performance.now() } : {}) });
          this.observe(type, problem.status, started);
        },
      )
      .finally(() => s.requestDone());
  }

  /**
   * Why a request is not taken now (the node or the session is closing, answers wait
   * unread, too many run), or 'cut' for a client that goes on sending while it reads
   * nothing (the refusals would pile up too); null when it is taken.
   */
  private admission(s: RequestSession): SwitchboardError | 'cut' | null {
    // As REST requests that still arrive on open connections while the node shuts down.
    if (this.ctx.closing.value) return new SwitchboardError('NOT_READY', 'the node is shutting down', { retryAfterSec: 1, hint: 'send the request to another node, or retry once it is back' });
    if (s.draining) return new SwitchboardError('NOT_READY', 'this session was replaced by another connection of its lease and is closing', { hint: 'send requests over the connection that resumed the lease' });
    if (s.buffered > 2 * SESSION_MAX_BUFFERED_BYTES) return 'cut';
    if (s.buffered > SESSION_MAX_BUFFERED_BYTES) return unreadAnswers(s.buffered);
    if (s.inflight >= SESSION_MAX_INFLIGHT_REQUESTS) {
      return new SwitchboardError('RATE_LIMITED', `${s.inflight} requests of this session are running`, {
        limit: 'sessionMaxInflightRequests',
        retryAfterSec: 1,
        hint: `keep at most ${SESSION_MAX_INFLIGHT_REQUESTS} requests of one session waiting for their results`,
      });
    }
    return null;
  }

  private observe(type: SessionRequestType, status: number, started: number | null): void {
    this.ctx.metrics.observeRequest('SESSION', ROUTES[type], status, started === null ? null : (performance.now() - started) / 1000);
  }

  private run(s: RequestSession, msg: RawRequest, id: number): Promise<string | Buffer> {
    const { engine, limits } = this.ctx;
    const service = serviceParam(msg.service);
    if (msg.type === 'read') {
      const q = queryOf(msg);
      const namespace = namespaceOf(q);
      const filter = serviceQuery(q, limits);
      const consistent = q.consistent === 'true';
      const warnings = refuseUnknown(msg.strict === true, unknownFieldWarnings(msg, FIELDS.read), STRICT);
      return this.read(s, id, namespace, service, filter, consistent, warnings);
    }
    const instanceId = validateInstanceId(msg.instanceId, 'instanceId');
    const namespace = namespaceOf({ namespace: stringField(msg, 'namespace') });
    const opts = s.forwarded ? forwardedWriteOptions(msg, s.signal) : undefined;
    const fields = s.forwarded ? FORWARDED_WRITE_FIELDS : FIELDS;
    if (msg.type === 'deregister') {
      const tail = warningsTail(refuseUnknown(msg.strict === true, unknownFieldWarnings(msg, fields.deregister), STRICT));
      const local = (): Promise<number> => engine.deregister(namespace, service, instanceId, opts);
      const written = s.forwarded ? local() : writeThrough(engine, { type: 'deregister', namespace, service, instanceId }, local);
      return written.then((revision) => `{"type":"result","id":${id},"revision":${revision}${tail}${clockTail(s)}}`);
    }
    if (msg.instance === undefined || msg.instance === null) throw invalid('instance', 'the register request has no instance', 'give the instance as the PUT body would be, such as "instance": {"address": "10.0.0.5", "port": 8080}');
    const { input, warnings } = checkedRegistration(msg.instance, this.ctx, 'instance', unknownFieldWarnings(msg, fields.register));
    const tail = warningsTail(refuseUnknown(msg.strict === true, warnings, STRICT));
    // Checked here first, so that a bad request is answered by this node without a round trip.
    const local = (): Promise<number> => engine.register({ namespace, service, id: instanceId, input }, opts);
    const written = s.forwarded ? local() : writeThrough(engine, { type: 'register', namespace, service, instanceId, instance: msg.instance }, local);
    return written.then((revision) => `{"type":"result","id":${id},"revision":${revision}${tail}${clockTail(s)}}`);
  }

  private async read(s: RequestSession, id: number, namespace: string, service: string, filter: ReturnType<typeof serviceQuery>, consistent: boolean, warnings: string[]): Promise<string | Buffer> {
    const fresh = await this.ctx.engine.readFreshness?.(consistent);
    // Checked again now that the answer is about to be made: reads sent together were all
    // let in while nothing was queued yet, and an answer may be large.
    if (s.buffered > SESSION_MAX_BUFFERED_BYTES) throw unreadAnswers(s.buffered);
    const body = currentAnswer(this.ctx, namespace, service, filter, fresh).body();
    const head = `{"type":"result","id":${id}${warningsTail(warnings)},"answer":`;
    const answer = typeof body === 'string' ? `${head}${body}}` : Buffer.concat([Buffer.from(head), body, CLOSE_BRACE]);
    // Counted until it is sent: the reads after it in this turn see it as queued.
    s.reserve(sizeOf(answer));
    return answer;
  }
}

const CLOSE_BRACE = Buffer.from('}');

/** The refusal of a request while the session's answers wait unread (sessionMaxBufferedBytes). */
function unreadAnswers(buffered: number): SwitchboardError {
  return new SwitchboardError('RATE_LIMITED', `${buffered} bytes of answers wait for this session's client to read them`, {
    limit: 'sessionMaxBufferedBytes',
    retryAfterSec: 1,
    hint: 'read the answers of the session before sending more requests',
  });
}

/** Bytes of an answer, as counted against sessionMaxBufferedBytes (a string by its length). */
function sizeOf(x: string | Buffer): number {
  return typeof x === 'string' ? x.length : x.byteLength;
}

/** `,"warnings":[...]` for a result, or nothing. */
function warningsTail(warnings: string[]): string {
  return warnings.length === 0 ? '' : `,"warnings":${JSON.stringify(capWarnings(warnings))}`;
}
const STRICT = '"strict": true';

/** The W3C trace context fields of a request, as a propagator reads headers. */
function traceCarrier(msg: RawRequest): Record<string, string> {
  const out: Record<string, string> = {};
  if (typeof msg.traceparent === 'string') out.traceparent = msg.traceparent;
  if (typeof msg.tracestate === 'string') out.tracestate = msg.tracestate;
  return out;
}

function stringField(msg: RawRequest, name: string): string | undefined {
  const v = msg[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw invalid(name, `${name} must be a string`, `write "${name}" as a JSON string`);
  return v;
}

/**
 * A forwarded write's options: the time by which it must be planned, the earlier of
 * `budgetMs` from now and `planBy` (none from a sender that sends neither), and the
 * session's signal (aborted when the sender's link closes).
 */
function forwardedWriteOptions(msg: RawRequest, signal: AbortSignal | undefined): WriteOptions {
  let planBy: number | undefined;
  const v = msg.budgetMs;
  if (v !== undefined && v !== null) {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > MAX_FORWARDED_BUDGET_MS) throw invalid('budgetMs', `budgetMs must be a whole number of milliseconds from 0 to ${MAX_FORWARDED_BUDGET_MS}`, 'send the time the sending node still waits for the write, such as "budgetMs": 4000');
    planBy = performance.now() + v;
  }
  const by = msg.planBy;
  if (by !== undefined && by !== null) {
    if (typeof by !== 'number' || !Number.isFinite(by) || by < 0) throw invalid('planBy', 'planBy must be a time in milliseconds on this node\'s clock (a number, 0 or more)', 'send the time on the clock of this link\'s "clock" message after which the write may not be planned, such as "planBy": 123456');
    planBy = planBy === undefined ? by : Math.min(planBy, by);
  }
  return { forwarded: true, planBy, signal };
}

/** `,"at":<this node's clock>` for a result on a node's link for forwarded writes (see ClockBound), or nothing; its errors carry `at` too. */
function clockTail(s: RequestSession): string {
  return s.forwarded ? `,"at":${performance.now()}` : '';
}

/** A read's filters as the query parameters of the REST read, so that both are checked alike. */
function queryOf(msg: RawRequest): Query {
  const q: Query = { namespace: stringField(msg, 'namespace') };
  for (const [name, kind] of READ_PARAMS) {
    const v = msg[name];
    if (v === undefined || v === null) continue;
    if (kind === 'boolean') {
      if (typeof v !== 'boolean') throw invalid(name, `${name} must be true or false`, `write "${name}": true`);
      q[name] = String(v);
    } else if (kind === 'strings') {
      if (!Array.isArray(v) || v.some((t) => typeof t !== 'string')) throw invalid(name, `${name} must be a list of strings`, `write "${name}": ["a", "b"]`);
      q[name] = v as string[];
    } else q[name] = stringField(msg, name);
  }
  return q;
}
