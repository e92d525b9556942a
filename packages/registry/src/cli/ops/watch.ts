/**
 * `switchboard watch`: follows GET /v1/watch (SSE) until Ctrl-C.
 *
 * Position: the watcher always knows the last complete revision it has seen (the SSE
 * `id:`), starting from the agent's revision at start (or --from-revision). A dropped
 * connection is resumed with Last-Event-ID after a bounded exponential backoff; events of
 * a revision that was half delivered before the drop are not printed twice. On `reset`
 * it relists the watched services and then prints only stream events newer than what it
 * listed, as api-v1.md asks of clients. Its position moves to the reset only once the
 * relisting succeeded, so a failed relisting is retried through another reset.
 */
import { Argument, Option, type Command } from 'commander';
import { createParser, type EventSourceMessage } from 'eventsource-parser';
import { parseEventId, type Instance, type NodeStatus, type ResetEvent, type ServiceList, type WatchEvent } from '@switchboard/protocol';
import { repeatable, revisionArg, serviceArg } from './args.js';
import { commonFlags, interruption, nsQuery, runWith, sleep, type Context, type Exit } from './common.js';
import { ApiError, UnreachableError, type OpenStream, type QueryParams } from './http.js';
import { clock, healthPaint, statusPaint, type Cell, type Paint, type Style } from './output.js';
import { listService } from './read.js';

/** Backoff between reconnections: 200 ms doubling up to 5 s, with ±20% jitter. */
const BACKOFF_BASE_MS = 200;
const BACKOFF_MAX_MS = 5_000;
/** The agent sends a keep-alive comment every 15 s by default; this much silence means a dead link. */
const IDLE_TIMEOUT_MS = 75_000;
/** A connection that lived this long (or delivered an event) resets the backoff. */
const HEALTHY_CONNECTION_MS = 5_000;

export function backoffMs(attempt: number, random: () => number = Math.random): number {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.min(attempt, 20));
  return Math.round(base * (0.8 + 0.4 * random()));
}

const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)}s`;

/** Readable event lines whose columns only ever grow, so that a stream stays aligned. */
class Lines {
  private readonly widths: number[];

  /** `minWidths` seeds the columns, so that the first lines already line up with later ones. */
  constructor(
    private readonly style: Style,
    minWidths: number[],
  ) {
    this.widths = [...minWidths];
  }

  render(cells: Cell[]): string {
    const parts = cells.map((c, i) => {
      const text = typeof c === 'string' ? c : c.text;
      const paint = typeof c === 'string' ? undefined : c.paint;
      const last = i === cells.length - 1;
      const w = Math.max(this.widths[i] ?? 0, [...text].length);
      if (!last) this.widths[i] = w;
      const pad = last ? '' : ' '.repeat(w - [...text].length);
      return (paint ? paint(text) : text) + pad;
    });
    return parts.join('  ').replace(/\s+$/, '');
  }

  state(i: Instance): Cell {
    const text = `${i.status}/${i.health}`;
    const paint: Paint | undefined = i.status !== 'up' ? statusPaint(this.style, i.status) : healthPaint(this.style, i.health);
    return paint ? { text, paint } : text;
  }
}

interface Position {
  epoch: string;
  revision: number;
}

class Watcher {
  private pos: Position;
  /** Events already printed of a revision whose `id:` has not arrived yet. */
  private partial: { revision: number; keys: Set<string> } | null = null;
  /** After a reset: the revision each service was listed at; older stream events are skipped. */
  private listed = new Map<string, number>();
  private readonly lines: Lines;
  /** Set when the current connection delivered an event. */
  delivered = false;

  constructor(
    private readonly ctx: Context,
    private readonly services: string[],
    start: Position,
  ) {
    this.pos = start;
    // time, revision, operation, service/id, address:port, status/health
    this.lines = new Lines(ctx.out.style, [12, `rev ${start.revision + 100}`.length, 6, 16, 15, 14]);
  }

  get position(): Position {
    return this.pos;
  }

  /** Reads one connection until it ends; the returned text says why it ended. */
  async consume(stream: OpenStream, signal: AbortSignal): Promise<string> {
    const pending: EventSourceMessage[] = [];
    const parser = createParser({ onEvent: (m) => pending.push(m), maxBufferSize: 16 * 1024 * 1024 });
    const decoder = new TextDecoder();
    for await (const chunk of stream.body) {
      parser.feed(decoder.decode(chunk, { stream: true }));
      // Handled one at a time: a relisting holds the stream back until it is done.
      while (pending.length > 0) await this.handle(pending.shift() as EventSourceMessage, signal);
    }
    return 'the agent ended the stream';
  }

  private async handle(m: EventSourceMessage, signal: AbortSignal): Promise<void> {
    if (m.event !== 'put' && m.event !== 'delete' && m.event !== 'reset') return; // unknown events: newer agents
    let data: unknown;
    try {
      data = JSON.parse(m.data);
    } catch {
      this.ctx.out.note(`watch: ignoring an event whose data is not JSON: ${m.data.slice(0, 120)}`);
      return;
    }
    this.delivered = true;
    if (m.event === 'reset') {
      const r = data as ResetEvent;
      if (typeof r?.epoch !== 'string' || typeof r.revision !== 'number') {
        this.ctx.out.note(`watch: ignoring a malformed reset event: ${m.data.slice(0, 120)}`);
        return;
      }
      return this.reset(r, m.data, signal);
    }
    const ev = data as WatchEvent;
    if (typeof ev !== 'object' || ev === null || typeof ev.instance !== 'object' || ev.instance === null || typeof ev.revision !== 'number') {
      this.ctx.out.note(`watch: ignoring a ${m.event} event without an instance: ${m.data.slice(0, 120)}`);
      return;
    }
    const key = `${ev.type} ${ev.service} ${ev.instance.id}`;
    const seen =
      ev.revision <= this.pos.revision ||
      (this.partial !== null && this.partial.revision === ev.revision && this.partial.keys.has(key)) ||
      (this.listed.get(ev.service) ?? -1) >= ev.revision;
    if (!seen) this.print(ev, m.data);
    const id = m.id !== undefined ? parseEventId(m.id) : undefined;
    if (id) {
      this.pos = id;
      this.partial = null;
    } else {
      if (this.partial?.revision !== ev.revision) this.partial = { revision: ev.revision, keys: new Set() };
      this.partial.keys.add(key);
    }
  }

  private print(ev: WatchEvent, raw: string): void {
    const { out } = this.ctx;
    if (out.json) return out.jsonLine(raw);
    const st = out.style;
    const i = ev.instance;
    out.line(
      this.lines.render([
        { text: clock(), paint: st.dim },
        `rev ${ev.revision}`,
        ev.type === 'put' ? { text: 'PUT', paint: st.green } : { text: 'DELETE', paint: st.red },
        `${ev.service}/${i.id}`,
        `${i.address}:${i.port}`,
        this.lines.state(i),
        ev.reason ?? '',
      ]),
    );
  }

  private async reset(r: ResetEvent, raw: string, signal: AbortSignal): Promise<void> {
    const { out, client } = this.ctx;
    const why =
      r.epoch !== this.pos.epoch
        ? `new epoch ${r.epoch} (was ${this.pos.epoch}): the agent lost its data or is another node`
        : this.pos.revision > r.revision
          ? `revision ${this.pos.revision} is ahead of the agent's (${r.revision}): it is not one this agent made`
          : `revision ${this.pos.revision} is older than the events the agent retains`;
    const names = this.services.length > 0 ? this.services : (await client.request<ServiceList>('GET', '/v1/services', { query: nsQuery(this.ctx), signal })).services.map((s) => s.name);
    if (out.json) out.jsonLine(raw);
    else out.line(this.lines.render([{ text: clock(), paint: out.style.dim }, `rev ${r.revision}`, { text: 'RESET', paint: out.style.yellow }, `${why}; relisting ${names.length === 0 ? 'every service (none yet)' : names.join(', ')}`]));
    const listed = new Map<string, number>();
    for (const name of names) {
      const answer = await listService(this.ctx, name, {}, signal);
      listed.set(name, answer.revision);
      if (out.json) {
        out.jsonLine(answer);
        continue;
      }
      const st = out.style;
      if (answer.instances.length === 0) {
        out.line(this.lines.render([{ text: clock(), paint: st.dim }, `rev ${answer.revision}`, { text: 'LIST', paint: st.cyan }, name, '(no instances)']));
      }
      for (const i of answer.instances) {
        out.line(this.lines.render([{ text: clock(), paint: st.dim }, `rev ${i.modRevision}`, { text: 'LIST', paint: st.cyan }, `${name}/${i.id}`, `${i.address}:${i.port}`, this.lines.state(i)]));
      }
    }
    // Only now is the reset taken: had the relisting failed, the old position gets another reset.
    this.listed = listed;
    this.pos = { epoch: r.epoch, revision: r.revision };
    this.partial = null;
  }
}

async function watch(ctx: Context, services: string[], fromRevision: number | undefined): Promise<number> {
  const { client, out } = ctx;
  const stop = interruption();
  const { signal } = stop;
  try {
    let status: NodeStatus;
    try {
      status = await client.request<NodeStatus>('GET', '/v1/status', { signal });
    } catch (err) {
      if (signal.aborted) return 0;
      throw err;
    }
    const from = fromRevision !== undefined && fromRevision > 0 ? fromRevision : status.revision + 1;
    const watcher = new Watcher(ctx, services, { epoch: status.epoch, revision: from - 1 });
    const what = services.length === 0 ? `every service${ctx.namespace ? ` in namespace ${ctx.namespace}` : ''}` : services.join(', ');
    out.note(`watching ${what} at ${client.addr} from revision ${from} (epoch ${status.epoch}); Ctrl-C to stop`);
    let connectedOnce = false;
    let attempt = 0;
    while (!signal.aborted) {
      const query: QueryParams = { ...nsQuery(ctx), service: services };
      const headers: Record<string, string> = {};
      const at = watcher.position;
      if (!connectedOnce) {
        query.fromRevision = at.revision + 1;
        query.epoch = at.epoch;
      } else {
        headers['last-event-id'] = `${at.epoch}:${at.revision}`;
      }
      let openedAt: number | undefined;
      let why: string;
      let retryAfterMs: number | undefined;
      watcher.delivered = false;
      try {
        const stream = await client.stream('/v1/watch', { query, headers, signal, idleTimeoutMs: IDLE_TIMEOUT_MS });
        openedAt = Date.now();
        if (connectedOnce) out.note(`watch: reconnected; resuming after revision ${at.revision}`);
        connectedOnce = true;
        why = await watcher.consume(stream, signal);
      } catch (err) {
        if (signal.aborted) break;
        if (err instanceof ApiError) {
          if (!err.retryable) throw err; // a refused watch (bad argument, limit): exit 1
          why = `the agent refused the watch for now (${err.code}: ${err.message})`;
          if (err.retryAfterSec !== undefined) retryAfterMs = err.retryAfterSec * 1000;
        } else if (err instanceof UnreachableError) {
          if (err.hint !== undefined) throw err; // TLS refused: waiting will not change it
          why = `cannot reach the agent: ${err.reason}`;
        } else {
          why = `the connection broke (${client.streamFailure(err)})`;
        }
      }
      if (signal.aborted) break;
      if (openedAt !== undefined && (watcher.delivered || Date.now() - openedAt >= HEALTHY_CONNECTION_MS)) attempt = 0;
      const delay = Math.min(30_000, Math.max(retryAfterMs ?? 0, backoffMs(attempt++)));
      out.note(`watch: ${why}; reconnecting in ${seconds(delay)} (resuming after revision ${watcher.position.revision})`);
      if (!(await sleep(delay, signal))) break;
    }
    return 0;
  } finally {
    stop.dispose();
  }
}

export function registerWatchCommand(program: Command, exit: Exit): void {
  commonFlags(
    program
      .command('watch')
      .description('print instance changes as they happen (GET /v1/watch) until Ctrl-C')
      .addArgument(new Argument('[service...]', 'the services to watch (none: every service)').argParser(repeatable(serviceArg)))
      .addOption(new Option('--from-revision <n>', 'first replay the retained changes from this revision on').argParser(revisionArg))
      .addHelpText(
        'after',
        [
          '',
          'Each change is one line: time, revision, PUT or DELETE, service/id, address:port, status/health',
          'and the reason of the change. With --json each line is the event as the API sends it; after a',
          'reset, each relisted service follows as the answer of GET /v1/services/{service}.',
          'A dropped connection is resumed where it stopped (Last-Event-ID), with a backoff of up to 5s.',
        ].join('\n'),
      ),
    true,
  ).action(
    runWith(exit, async (ctx, [services]) => {
      const names = [...new Set((services as string[] | undefined) ?? [])];
      const { fromRevision } = ctx.command.opts<{ fromRevision?: number }>();
      return watch(ctx, names, fromRevision);
    }),
  );
}
