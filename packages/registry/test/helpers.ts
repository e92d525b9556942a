// Shared test helpers: an app on a real socket, JSON requests, and an SSE reader.
import { createParser, type EventSourceMessage } from 'eventsource-parser';
import { DEFAULT_LIMITS, type Limits, type SessionServerMessage } from '@switchboard/protocol';
import { WebSocket } from 'ws';
import { waitUntil, type WaitOptions } from './support/wait.js';
import { build, type SwitchboardApp } from '../src/api/app.js';
import { StandaloneEngine } from '../src/engines/standalone.js';
import type { CheckNetworks } from '../src/health/networks.js';
import { MemoryStorage } from '../src/storage/storage.js';

export interface TestNode {
  app: SwitchboardApp;
  engine: StandaloneEngine;
  url: string;
  close(): Promise<void>;
}

export async function startNode(opts: { limits?: Partial<Limits>; heartbeatMs?: number; listen?: boolean; checkNetworks?: CheckNetworks } = {}): Promise<TestNode> {
  const limits = { ...DEFAULT_LIMITS, ...opts.limits };
  const engine = await StandaloneEngine.open({ nodeId: 'test', storage: new MemoryStorage(), limits, clock: { now: () => performance.now() }, expiryTickMs: 50, ...(opts.checkNetworks && { checkNetworks: opts.checkNetworks }) });
  const app = await build({ engine, limits, version: 'test', watchHeartbeatMs: opts.heartbeatMs ?? 15_000 });
  const url = opts.listen === false ? '' : await app.listen({ host: '127.0.0.1', port: 0 });
  return {
    app,
    engine,
    url,
    close: async () => {
      await app.shutdown();
      await engine.close();
    },
  };
}

export async function call(url: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: any; headers: Headers }> {
  const res = await fetch(url + path, {
    method,
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text === '' ? undefined : JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: res.status, body: parsed, headers: res.headers };
}

export interface Received extends EventSourceMessage {
  json: any;
}

/** An open SSE stream that collects events; `next(n)` waits for n more of them. */
export class SseReader {
  readonly events: Received[] = [];
  comments = 0;
  ended = false;
  private waiters: (() => void)[] = [];
  private readonly ac = new AbortController();

  static async open(url: string, headers: Record<string, string> = {}): Promise<SseReader> {
    const r = new SseReader();
    const res = await fetch(url, { headers: { accept: 'text/event-stream', ...headers }, signal: r.ac.signal });
    if (res.status !== 200 || !res.body) throw new Error(`watch answered ${res.status}: ${await res.text()}`);
    r.pump(res.body).catch(() => undefined);
    return r;
  }

  private async pump(body: ReadableStream<Uint8Array>): Promise<void> {
    const parser = createParser({
      onEvent: (m) => {
        this.events.push({ ...m, json: JSON.parse(m.data) });
        this.notify();
      },
      onComment: () => {
        this.comments++;
        this.notify();
      },
    });
    const decoder = new TextDecoder();
    try {
      for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) parser.feed(decoder.decode(chunk, { stream: true }));
    } finally {
      this.ended = true;
      this.notify();
    }
  }

  private notify(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Waits until `pred` holds, or fails after timeoutMs. */
  async until(pred: () => boolean, timeoutMs = 5_000, what = 'condition'): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pred()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; got ${this.events.length} events`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  count(n: number, timeoutMs = 5_000): Promise<void> {
    return this.until(() => this.events.length >= n, timeoutMs, `${n} events`);
  }

  close(): void {
    this.ac.abort();
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** How many instances a service has on `node` now. */
export async function instanceCount(node: Pick<TestNode, 'url'>, svc: string): Promise<number> {
  return (await call(node.url, 'GET', `/v1/services/${svc}`)).body.instances.length;
}

/** Milliseconds until the service has no instance left on `node`; -1 when it still has some after `ms`. */
export async function goneWithin(node: Pick<TestNode, 'url'>, svc: string, ms: number): Promise<number> {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    if ((await instanceCount(node, svc)) === 0) return Date.now() - t0;
    await sleep(20);
  }
  return -1;
}

/** A raw client of the session stream (the protocol of packages/protocol/src/session.ts). */
export class SessionClient {
  readonly inbox: SessionServerMessage[] = [];
  closed = false;
  /** The code the connection closed with (1006: no close frame came). */
  closeCode: number | null = null;
  private constructor(readonly ws: WebSocket) {
    ws.on('message', (d) => this.inbox.push(JSON.parse(d.toString())));
    ws.on('close', (code) => {
      this.closed = true;
      this.closeCode = code;
    });
  }
  static async connect(url: string, headers?: Record<string, string>): Promise<SessionClient> {
    const client = new SessionClient(new WebSocket(url.replace('http', 'ws') + '/v1/session', headers ? { headers } : undefined));
    await new Promise((resolve, reject) => {
      client.ws.once('open', resolve);
      client.ws.once('error', reject);
    });
    client.ws.on('error', () => undefined); // later errors show as `closed`
    return client;
  }
  send(msg: unknown): void {
    this.ws.send(typeof msg === 'string' ? msg : JSON.stringify(msg));
  }
  /** The answer (`result` or `error`) to the request with this id, taken out of the inbox. */
  async answer(id: number, timeoutMs = 3_000): Promise<Extract<SessionServerMessage, { type: 'result' | 'error' }>> {
    let i = -1;
    await waitUntil(() => (i = this.inbox.findIndex((m) => (m.type === 'result' || m.type === 'error') && m.id === id)) >= 0, timeoutMs, `the answer to request ${id}`, { intervalMs: 5, detail: () => `got ${JSON.stringify(this.inbox).slice(0, 500)}` });
    return this.inbox.splice(i, 1)[0] as Extract<SessionServerMessage, { type: 'result' | 'error' }>;
  }
  /** The next message of `type` (taken out of the inbox), waiting up to `timeoutMs`. */
  async next<T extends SessionServerMessage['type']>(type: T, timeoutMs = 3_000): Promise<Extract<SessionServerMessage, { type: T }>> {
    let i = -1;
    await waitUntil(() => (i = this.inbox.findIndex((m) => m.type === type)) >= 0, timeoutMs, `a ${type} message`, { intervalMs: 10, detail: () => `got ${JSON.stringify(this.inbox)}` });
    return this.inbox.splice(i, 1)[0] as Extract<SessionServerMessage, { type: T }>;
  }
}

export { waitUntil, type WaitOptions };
