/**
 * The SSE watch of api-v1.md. Each event is serialised once for all streams; a stream
 * puts `id: <epoch>:<revision>` on the last event of each revision it delivers, so that
 * Last-Event-ID never resumes in the middle of a revision.
 */
import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { SwitchboardError, formatEventId, invalid, limitExceeded, parseEventId, validateServiceName, watchEventSchema, type WatchEvent } from '@switchboard/protocol';
import { serviceKey } from '../core/registry.js';
import { interested, type Subscriber } from '../engines/hub.js';
import { errorResponses, type ApiContext } from './context.js';
import { bool, list, namespaceOf, nonNegativeInt, single, type Query } from './query.js';

interface Frames {
  plain?: string;
  withId?: string;
}
const frameCache = new WeakMap<WatchEvent, Frames>();
const dataCache = new WeakMap<WatchEvent, string>();

function eventData(ev: WatchEvent): string {
  let d = dataCache.get(ev);
  if (d === undefined) {
    d = JSON.stringify(ev);
    dataCache.set(ev, d);
  }
  return d;
}

/** The SSE frame of an event, with or without the id line; each built at most once. */
export function frame(ev: WatchEvent, withId: boolean): string {
  let f = frameCache.get(ev);
  if (!f) frameCache.set(ev, (f = {}));
  if (withId) return (f.withId ??= `event: ${ev.type}\nid: ${formatEventId(ev.epoch, ev.revision)}\ndata: ${eventData(ev)}\n\n`);
  return (f.plain ??= `event: ${ev.type}\ndata: ${eventData(ev)}\n\n`);
}

/** Frames for a run of events in revision order: the id goes on each revision's last event. */
export function framesFor(events: WatchEvent[]): string {
  let out = '';
  for (let i = 0; i < events.length; i++) {
    const ev = events[i] as WatchEvent;
    const next = events[i + 1];
    out += frame(ev, next === undefined || next.revision !== ev.revision);
  }
  return out;
}

/**
 * A reset carries no `id:` on purpose: a client that drops before it has relisted keeps
 * its old Last-Event-ID, so its reconnect is reset again instead of skipping the relist.
 */
function resetFrame(epoch: string, revision: number): string {
  return `event: reset\ndata: ${JSON.stringify({ epoch, revision })}\n\n`;
}

/**
 * The HTTP/1.1 chunk (size line, frames, CRLF) of a run of events, as bytes. The hub hands
 * the same events array to every stream that sees the same part of a revision, so a change
 * is framed and encoded once however many streams it goes to, and each stream's part is
 * one socket write.
 */
const chunkCache = new WeakMap<WatchEvent[], Buffer>();
function chunkFor(events: WatchEvent[]): Buffer {
  let c = chunkCache.get(events);
  if (c === undefined) {
    c = chunkOf(framesFor(events));
    chunkCache.set(events, c);
  }
  return c;
}

function chunkOf(text: string): Buffer {
  const body = Buffer.from(text, 'utf8');
  const head = `${body.length.toString(16)}\r\n`;
  const out = Buffer.allocUnsafe(head.length + body.length + 2);
  out.write(head, 0, 'latin1');
  body.copy(out, head.length);
  out.write('\r\n', head.length + body.length, 'latin1');
  return out;
}

const HEARTBEAT_CHUNK = chunkOf(': keep-alive\n\n');

/**
 * Chunks for the streams are written on the next tick, all at once: the answer to the
 * write that made the change (written in the promise chain that announced it) goes out
 * first, and a change to many streams never holds up the request that made it.
 */
const outbox: Array<{ stream: WatchStream; chunk: Buffer; revision: number }> = [];
function post(stream: WatchStream, chunk: Buffer, revision: number): void {
  if (outbox.push({ stream, chunk, revision }) === 1) process.nextTick(flushOutbox);
}
function flushOutbox(): void {
  // Taken out first: a write that throws must not leave the outbox looking busy for ever.
  const due = outbox.splice(0);
  for (const o of due) o.stream.writeChunk(o.chunk, o.revision);
}

/** How many watchers of a service a change reached (see WatchStreams.reach). */
export interface Reach {
  watchers: number;
  reached: number;
  timedOut: number;
  gone: number;
}

export class WatchStreams {
  readonly open = new Set<WatchStream>();
  private readonly perClient = new Map<string, number>();
  private readonly timer: NodeJS.Timeout;
  /** Waiting drains, told whenever a stream flushes or ends. */
  private readonly progressListeners = new Set<() => void>();
  /** Events written since the counter was last told (see countSent). */
  private unsent = 0;

  constructor(private readonly ctx: ApiContext) {
    this.timer = setInterval(() => {
      for (const s of this.open) s.heartbeat();
    }, ctx.watchHeartbeatMs);
    this.timer.unref();
  }

  admit(client: string): void {
    const { limits } = this.ctx;
    if (this.open.size >= limits.maxWatchStreamsPerNode) {
      throw new SwitchboardError('RATE_LIMITED', `this node already serves ${this.open.size} watch streams`, { limit: 'maxWatchStreamsPerNode', retryAfterSec: 5, hint: 'retry later or watch through another node' });
    }
    const mine = this.perClient.get(client) ?? 0;
    if (mine >= limits.maxWatchStreamsPerClient) {
      throw new SwitchboardError('RATE_LIMITED', `client ${client} already has ${mine} watch streams`, { limit: 'maxWatchStreamsPerClient', retryAfterSec: 5, hint: 'watch several services on one stream (repeat service=)' });
    }
  }

  add(s: WatchStream): void {
    this.open.add(s);
    this.perClient.set(s.client, (this.perClient.get(s.client) ?? 0) + 1);
  }

  remove(s: WatchStream): void {
    if (!this.open.delete(s)) return;
    const n = (this.perClient.get(s.client) ?? 1) - 1;
    if (n <= 0) this.perClient.delete(s.client);
    else this.perClient.set(s.client, n);
  }

  /** A stream flushed a revision or ended (for every stream of every delivery: cheap when nobody waits). */
  progress(): void {
    if (this.progressListeners.size === 0) return;
    for (const l of [...this.progressListeners]) l();
  }

  /**
   * Counts events written to streams; the counter is told once per turn (one increment per
   * revision, not one per stream: a revision fans out to every watcher of its service).
   */
  countSent(n: number): void {
    if (n === 0) return;
    if (this.unsent === 0) {
      queueMicrotask(() => {
        this.ctx.metrics.watchEvents.inc(this.unsent);
        this.unsent = 0;
      });
    }
    this.unsent += n;
  }

  /**
   * Waits until every watch stream of a service on this node has been sent `revision` and
   * flushed it to its connection (the write callback fired), or until `waitMs` ran out. A
   * stream that started after the revision was announced counts as reached: whatever its
   * client listed already had the change.
   */
  reach(namespace: string, service: string, revision: number, waitMs: number): Promise<Reach> {
    const targets = [...this.open].filter((s) => interested(s, namespace, service));
    const tally = (final: boolean): Reach | null => {
      const r: Reach = { watchers: targets.length, reached: 0, timedOut: 0, gone: 0 };
      for (const s of targets) {
        if (s.hasSeen(revision)) r.reached++;
        else if (s.isEnded) r.gone++;
        else if (final) r.timedOut++;
        else return null;
      }
      return r;
    };
    const now = tally(false);
    if (now || waitMs <= 0) return Promise.resolve(now ?? (tally(true) as Reach));
    return new Promise((resolve) => {
      const finish = (r: Reach): void => {
        clearTimeout(timer);
        this.progressListeners.delete(check);
        resolve(r);
      };
      const check = (): void => {
        const r = tally(false);
        if (r) finish(r);
      };
      const timer = setTimeout(() => finish(tally(true) as Reach), waitMs);
      this.progressListeners.add(check);
    });
  }

  /** Ends every stream cleanly (shutdown). */
  closeAll(): void {
    clearInterval(this.timer);
    for (const s of [...this.open]) s.end();
  }
}

/** The streams of each connection, ended when it closes (one listener per connection). */
const streamsOf = new WeakMap<Socket, Set<WatchStream>>();
function onConnectionClose(socket: Socket, stream: WatchStream): void {
  let set = streamsOf.get(socket);
  if (set === undefined) {
    const mine = (set = new Set());
    streamsOf.set(socket, mine);
    socket.once('close', () => {
      streamsOf.delete(socket);
      for (const s of [...mine]) s.end();
    });
  }
  set.add(stream);
}

class WatchStream implements Subscriber {
  private unsubscribe: () => void = () => undefined;
  private ended = false;
  /** The highest revision whose frames the connection has taken (write callback). */
  private flushed = 0;

  constructor(
    readonly client: string,
    readonly services: ReadonlySet<string> | null,
    /** With `services` null: the namespace whose every service is watched. */
    readonly namespace: string | undefined,
    private readonly res: ServerResponse,
    /**
     * The request's connection. A request pipelined behind another on a keep-alive
     * connection has no socket on its response until the one before it is answered, and
     * such a response never emits 'close' when the client leaves: the connection's own
     * close ends the stream then.
     */
    private readonly socket: Socket,
    private readonly minRevision: number,
    private readonly ctx: ApiContext,
    private readonly streams: WatchStreams,
  ) {}

  start(initial: string): void {
    this.streams.add(this);
    this.res.on('close', () => this.end());
    if (this.socket.destroyed) return this.end();
    onConnectionClose(this.socket, this);
    this.write(initial);
    this.unsubscribe = this.ctx.engine.hub.subscribe(this);
  }

  get isEnded(): boolean {
    return this.ended;
  }

  /** Whether this stream's client has been sent `revision` (or started after it). */
  hasSeen(revision: number): boolean {
    return this.flushed >= revision || this.minRevision > revision;
  }

  deliver(events: WatchEvent[], revision: number): void {
    // (An empty chunk would be the chunked body's end.)
    if (revision < this.minRevision || events.length === 0) return;
    this.streams.countSent(events.length);
    post(this, chunkFor(events), revision);
  }

  heartbeat(): void {
    this.writeChunk(HEARTBEAT_CHUNK, 0);
  }

  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.unsubscribe();
    streamsOf.get(this.socket)?.delete(this);
    this.streams.remove(this);
    if (!this.res.writableEnded) this.res.end();
    this.streams.progress();
  }

  /**
   * After the first write (which sends the headers) frames go to the socket as ready-made
   * chunks of the response's chunked encoding: Node's response would re-encode the text
   * and add the chunk framing for every stream. `res.end()` still writes the last chunk.
   */
  writeChunk(chunk: Buffer, revision: number): void {
    const socket = this.res.socket;
    if (this.ended) return;
    // Chunks only where the response is chunked (an HTTP/1.0 client gets a plain body).
    // headersSent is true from writeHead on; start() has written the headers and the first
    // comment through the response before any chunk comes here.
    if (!this.res.headersSent || !socket || this.res.writableEnded || (this.res as { chunkedEncoding?: boolean }).chunkedEncoding !== true) {
      this.write(chunk.toString('utf8', chunk.indexOf('\r\n') + 2, chunk.length - 2), revision);
      return;
    }
    if (this.cutIfBehind(socket.writableLength)) return;
    socket.write(chunk, this.flushedCallback(revision));
  }

  private write(text: string, revision = 0): void {
    if (this.ended || text === '' || this.cutIfBehind(this.res.writableLength)) return;
    this.res.write(text, this.flushedCallback(revision));
  }

  /** A reader that falls this far behind is cut off; it resumes with Last-Event-ID. */
  private cutIfBehind(buffered: number): boolean {
    if (buffered <= this.ctx.limits.maxWatchBufferBytes) return false;
    this.ctx.metrics.watchDropped.inc();
    this.res.destroy();
    this.end();
    return true;
  }

  /** For a write of `revision`'s frames: notes when the connection has taken them. */
  private flushedCallback(revision: number): ((err?: Error | null) => void) | undefined {
    if (revision === 0) return undefined;
    return (err) => {
      if (err || revision <= this.flushed) return;
      this.flushed = revision;
      this.streams.progress();
    };
  }
}

/** Where a watch starts: `from` (events with revision >= from), or a reset. */
function startPosition(req: FastifyRequest, q: Query, epoch: string): { from: number | null; reset: boolean } {
  const lastId = req.headers['last-event-id'];
  if (typeof lastId === 'string' && lastId !== '') {
    const parsed = parseEventId(lastId);
    if (!parsed) throw invalid('Last-Event-ID', `Last-Event-ID "${lastId}" is not <epoch>:<revision>`, 'send back the id of the last event received');
    return parsed.epoch === epoch ? { from: parsed.revision + 1, reset: false } : { from: null, reset: true };
  }
  const from = nonNegativeInt(q, 'fromRevision');
  const askedEpoch = single(q, 'epoch');
  if (from === undefined || from === 0) return { from: null, reset: false };
  if (askedEpoch !== undefined && askedEpoch !== '' && askedEpoch !== epoch) return { from: null, reset: true };
  return { from, reset: false };
}

export async function watchRoutes(app: FastifyInstance, ctx: ApiContext, streams: WatchStreams): Promise<void> {
  const { engine, limits } = ctx;
  app.get('/v1/watch', {
    schema: {
      tags: ['watch'],
      summary: 'Server-Sent Events of instance changes (event: put | delete | reset)',
      description: 'Each `data:` line is a JSON watch event; `id:` is `<epoch>:<revision>` on the last event of a revision.',
      querystring: {
        type: 'object',
        properties: {
          service: { type: 'array', items: { type: 'string' }, description: 'repeatable; none means every service' },
          namespace: { type: 'string', default: 'default' },
          fromRevision: { type: 'integer', description: 'replay retained events with revision >= N' },
          epoch: { type: 'string', description: 'the epoch fromRevision belongs to' },
          consistent: { type: 'boolean', description: 'accepted, as on every read: a stream starts from the state the node holds, and every change after it follows' },
        },
      },
      response: { 200: { ...watchEventSchema, description: 'text/event-stream; each data line is one of these' }, ...errorResponses },
    },
  }, async (req: FastifyRequest, reply: FastifyReply) => {
    const q = req.query as Query;
    const namespace = namespaceOf(q);
    bool(q, 'consistent'); // accepted (a stream follows every change), but only as a boolean
    const names = list(q, 'service');
    if (names.length > limits.maxWatchServices) {
      throw limitExceeded('maxWatchServices', 'service', `${names.length} services on one watch, at most ${limits.maxWatchServices}`, 'watch every service (no service=) or split into several streams');
    }
    // No service= is every service of the namespace (the namespace, like on every call,
    // defaults to "default").
    const services = names.length === 0 ? null : new Set(names.map((n) => serviceKey(namespace, validateServiceName(n))));
    if (ctx.closing.value) throw new SwitchboardError('NOT_READY', 'the node is shutting down', { retryAfterSec: 1, hint: 'connect to another node' });
    const epoch = engine.registry.epoch;
    const pos = startPosition(req, q, epoch);
    // HEAD: the headers a GET would get, and no stream (Node sends a HEAD answer's headers
    // only with a body write, which it then drops: a stream would never answer).
    if (req.method === 'HEAD') return reply.code(200).header('content-type', 'text/event-stream; charset=utf-8').header('cache-control', 'no-cache').send();
    streams.admit(req.ip);

    let initial = ': watching\n\n';
    let minRevision = engine.hub.published + 1;
    // A position past every revision of the epoch is not from this store's history (a
    // fromRevision without its epoch, kept from a registry since restarted empty): waiting
    // for it would drop every change up to it, so the client relists instead. In cp mode
    // the revisions are etcd's and a node's view may trail another node's: a position ahead
    // of this view is waited for there.
    // (The store's revision, not the last announced one: a settings write takes a revision
    // without a watch event, and the list answers that revision.)
    const ahead = pos.from !== null && engine.mode !== 'cp' && pos.from > engine.registry.revision + 1;
    if (pos.reset || ahead) {
      initial += resetFrame(epoch, engine.hub.published);
    } else if (pos.from !== null) {
      const past = engine.hub.log.since(pos.from);
      if (past === 'reset') {
        initial += resetFrame(epoch, engine.hub.published);
      } else {
        const filter = { services, namespace: services === null ? namespace : undefined };
        const mine = past.filter((e) => interested(filter, e.namespace, e.service));
        const replay = framesFor(mine);
        // A replay is written at once: one larger than a stream may hold for its client
        // (maxWatchBufferBytes) would sit in this node's memory for a client that reads
        // nothing. The client relists instead, which is also the cheaper way to catch up.
        if (Buffer.byteLength(replay) > limits.maxWatchBufferBytes) {
          initial += resetFrame(epoch, engine.hub.published);
        } else {
          initial += replay;
          streams.countSent(mine.length);
          minRevision = Math.max(pos.from, minRevision);
        }
      }
    }
    // A request that asked to upgrade is served plain with Connection: close (app.ts); a
    // hijacked answer writes its own headers, so that one is carried over here.
    const connection = reply.getHeader('connection') === 'close' ? 'close' : 'keep-alive';
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection,
      'x-accel-buffering': 'no',
    });
    // A stream's answer is hijacked (no onResponse): it is counted when it opens.
    ctx.metrics.observeRequest('GET', '/v1/watch', 200, null);
    new WatchStream(req.ip, services, services === null ? namespace : undefined, res, req.raw.socket, minRevision, ctx, streams).start(initial);
  });
}
