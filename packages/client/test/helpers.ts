// Shared test helpers: a real `switchboard agent` process, provider child processes, small
// HTTP servers and polling. Everything listens on 127.0.0.1 only.
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { ServiceFeed } from '../src/feed.js';
import { Endpoints, RegistryHttp } from '../src/registry-http.js';
import type { Instance } from '@switchboard/protocol';

/** packages/registry/bin/switchboard.js (built before the client by the root build). */
export const AGENT_BIN = fileURLToPath(new URL('../../../registry/bin/switchboard.js', import.meta.url));
/** The compiled provider fixture. */
export const PROVIDER_MAIN = fileURLToPath(new URL('./fixtures/provider-main.js', import.meta.url));

export interface Agent {
  child: ChildProcess;
  url: string;
  port: number;
  output: () => string;
  exited: Promise<number | null>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** A free TCP port on 127.0.0.1 (for agents that must come back on the same port). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createNetServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** Spawns `switchboard agent` and resolves once it prints `listening on URL`. */
export function spawnAgent(args: string[] = ['--dev'], opts: { port?: number; timeoutMs?: number } = {}): Promise<Agent> {
  const child = spawn(process.execPath, [AGENT_BIN, 'agent', '--http-addr', `127.0.0.1:${opts.port ?? 0}`, '--log-format', 'json', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const kill = async (signal: NodeJS.Signals = 'SIGKILL'): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    await exited;
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`agent did not start:\n${out}`));
    }, opts.timeoutMs ?? 15_000);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on (https?:\/\/[^\s"]+)/.exec(out);
      if (m && timer) {
        clearTimeout(timer);
        const url = m[1] as string;
        resolve({ child, url, port: Number(new URL(url).port), output: () => out, exited, kill });
      }
    });
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`agent exited with ${code} before listening:\n${out}`));
    });
  });
}

export interface ProviderProcess {
  child: ChildProcess;
  id: string;
  port: number;
  lines: string[];
  exited: Promise<number | null>;
  waitLine(re: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
  kill(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Spawns a provider (an HTTP server that registers itself with the SDK); resolves once registered. */
export function spawnProvider(env: Record<string, string>, timeoutMs = 15_000): Promise<ProviderProcess> {
  const child = spawn(process.execPath, [PROVIDER_MAIN], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let waiters: (() => void)[] = [];
  let buf = '';
  const onData = (d: Buffer): void => {
    buf += d.toString();
    const parts = buf.split('\n');
    buf = parts.pop() as string;
    lines.push(...parts);
    const w = waiters;
    waiters = [];
    for (const f of w) f();
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => {
    resolve(code);
    for (const f of waiters) f();
  }));
  const waitLine = async (re: RegExp, ms = timeoutMs): Promise<RegExpExecArray> => {
    const deadline = Date.now() + ms;
    for (;;) {
      for (const l of lines) {
        const m = re.exec(l);
        if (m) return m;
      }
      const left = deadline - Date.now();
      const gone = child.exitCode !== null || child.signalCode !== null;
      if (left <= 0 || gone) throw new Error(`provider: no line ${re} ${gone ? '(it exited)' : `within ${ms} ms`}; output:\n${lines.join('\n')}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  };
  const kill = async (signal: NodeJS.Signals = 'SIGKILL'): Promise<number | null> => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    return exited;
  };
  return waitLine(/^READY (\d+) (\S+)/, timeoutMs).then(
    (m) => ({ child, id: m[2] as string, port: Number(m[1]), lines, exited, waitLine, kill }),
    async (err) => {
      await kill();
      throw err;
    },
  );
}

/** An HTTP server on 127.0.0.1 answering with its name (and status/delay from the query). */
export async function nameServer(name: string): Promise<{ server: Server; port: number; hits: () => number; close(): Promise<void> }> {
  let hits = 0;
  const server = createServer((req, res) => {
    hits++;
    const u = new URL(req.url ?? '/', 'http://x');
    const status = Number(u.searchParams.get(`status-${name}`) ?? u.searchParams.get('status') ?? 200);
    const delay = Number(u.searchParams.get(`delay-${name}`) ?? 0);
    setTimeout(() => {
      res.writeHead(status, { 'content-type': 'text/plain' });
      res.end(name);
    }, delay);
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    server,
    port,
    hits: () => hits,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** Polls `pred` every 10 ms until it holds; fails with `what` after timeoutMs. */
export async function waitFor(pred: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A settled promise's outcome within `ms` (a hang fails the test instead of blocking it). */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms)));
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}


/** A JSON request to a registry. */
export async function rest(url: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(url + path, { method, headers: body === undefined ? {} : { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined };
}

/** An instance as the registry would return it. */
export function inst(id: string, over: Partial<Instance> = {}): Instance {
  return {
    id,
    service: 'svc',
    namespace: 'default',
    address: '127.0.0.1',
    port: 1,
    protocol: 'http',
    zone: null,
    version: null,
    tags: [],
    metadata: {},
    weight: 100,
    status: 'up',
    health: 'passing',
    checks: [],
    leaseId: null,
    createRevision: 1,
    modRevision: 1,
    ...over,
  };
}

/**
 * A feed that never connects (its endpoint is never contacted), marked ready: views over
 * it are driven by hand with `view.onChanges`. For unit tests of the call path.
 */
export function offlineFeed(service = 'svc'): ServiceFeed {
  const endpoints = new Endpoints(['http://127.0.0.1:9']);
  const feed = new ServiceFeed({
    namespace: 'default',
    service,
    endpoints,
    http: new RegistryHttp(endpoints),
    backoff: {},
    cacheDir: undefined,
    watchIdleTimeoutMs: 45_000,
    emptyViewGraceMs: 30_000,
    snapshotIntervalMs: 1_000,
    onError: () => undefined,
  });
  (feed as unknown as { markLoaded(): void }).markLoaded();
  return feed;
}

/** What a FaultProxy answers itself instead of forwarding (undefined: forward). */
export type FaultRule = (method: string, path: string) => { status: number; headers?: Record<string, string>; body: unknown; cut?: boolean } | undefined;

/**
 * The REST request a session request stands for (docs/api.md, "Requests over the
 * session"), so that one FaultRule covers a write whichever way the client sends it.
 */
function restOfSessionRequest(msg: { type?: unknown; service?: unknown; instanceId?: unknown; namespace?: unknown }): { method: string; path: string } | undefined {
  const query = typeof msg.namespace === 'string' ? `?namespace=${encodeURIComponent(msg.namespace)}` : '';
  const instance = `/v1/services/${String(msg.service)}/instances/${encodeURIComponent(String(msg.instanceId))}${query}`;
  if (msg.type === 'register') return { method: 'PUT', path: instance };
  if (msg.type === 'deregister') return { method: 'DELETE', path: instance };
  if (msg.type === 'read') return { method: 'GET', path: `/v1/services/${String(msg.service)}${query}` };
  return undefined;
}

/**
 * An HTTP proxy on 127.0.0.1 in front of a registry: it forwards every request, and every
 * session WebSocket message by message, except the requests `rule` answers itself (over
 * the session, a request message is matched as the REST request it stands for and
 * answered with an `error` carrying the rule's problem, its Retry-After as
 * `retryAfterSec`; with `cut`, the connection is cut instead of answered). `fromServer`
 * rewrites the session messages of the registry. The proxy completes the WebSocket
 * handshake itself once the registry accepted its own (with the client's Authorization
 * header only): a refused upgrade reaches the client as a closed socket, not as the
 * registry's answer. It logs each request (`METHOD path -> status`, `(session)` for those
 * sent over the session) and counts session connections and their closes.
 */
export async function faultProxy(target: string, rule: FaultRule, opts: { fromServer?: (text: string) => string } = {}): Promise<{ url: string; log: string[]; sessions: { opened: number; closed: number }; close(): Promise<void> }> {
  const { WebSocket, WebSocketServer } = await import('ws');
  const log: string[] = [];
  const sessions = { opened: 0, closed: 0 };
  const tunnels = new Set<{ terminate(): void }>();
  const wss = new WebSocketServer({ noServer: true });
  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const path = req.url ?? '/';
    const fault = rule(req.method ?? 'GET', path);
    if (fault?.cut) {
      log.push(`${req.method} ${path} -> cut`);
      res.socket?.destroy();
      return;
    }
    if (fault) {
      log.push(`${req.method} ${path} -> ${fault.status} (injected)`);
      res.writeHead(fault.status, { 'content-type': 'application/problem+json', ...fault.headers }).end(JSON.stringify(fault.body));
      return;
    }
    const headers = Object.fromEntries(Object.entries(req.headers).filter(([k]) => !['host', 'connection', 'content-length', 'transfer-encoding'].includes(k))) as Record<string, string>;
    try {
      const up = await fetch(target + path, { method: req.method, headers, body: chunks.length > 0 ? Buffer.concat(chunks) : undefined });
      const body = Buffer.from(await up.arrayBuffer());
      log.push(`${req.method} ${path} -> ${up.status}`);
      const out: Record<string, string> = {};
      up.headers.forEach((v, k) => {
        if (!['content-length', 'transfer-encoding', 'connection', 'keep-alive', 'content-encoding'].includes(k)) out[k] = v;
      });
      res.writeHead(up.status, out).end(body);
    } catch (err) {
      res.writeHead(502).end(String(err));
    }
  });
  server.on('upgrade', (req, socket, head) => {
    sessions.opened++;
    const headers = req.headers.authorization ? { authorization: req.headers.authorization } : undefined;
    const up = new WebSocket(target.replace(/^http/, 'ws') + (req.url ?? '/'), { perMessageDeflate: false, ...(headers && { headers }) });
    let counted = false;
    const done = (): void => {
      if (!counted) sessions.closed++;
      counted = true;
      up.terminate();
      socket.destroy();
    };
    up.on('error', done);
    up.once('open', () =>
      wss.handleUpgrade(req, socket, head, (client) => {
        tunnels.add(client).add(up);
        up.on('message', (data) => client.send(opts.fromServer ? opts.fromServer(data.toString()) : data.toString()));
        up.on('close', done);
        client.on('close', done);
        client.on('error', done);
        client.on('message', (data) => {
          const text = data.toString();
          let msg: { id?: unknown; type?: unknown } = {};
          try {
            msg = JSON.parse(text) as typeof msg;
          } catch {
            /* forwarded as it is */
          }
          const rest = restOfSessionRequest(msg);
          const fault = rest && rule(rest.method, rest.path);
          if (rest && fault?.cut) {
            log.push(`${rest.method} ${rest.path} -> cut (session)`);
            client.terminate();
            return;
          }
          if (rest && fault) {
            log.push(`${rest.method} ${rest.path} -> ${fault.status} (injected, session)`);
            const retryAfter = fault.headers?.['retry-after'];
            const problem = { ...(fault.body as object), status: fault.status, ...(retryAfter === undefined ? {} : { retryAfterSec: Number(retryAfter) }) };
            client.send(JSON.stringify({ type: 'error', id: msg.id, request: msg.type, problem }));
            return;
          }
          if (rest) log.push(`${rest.method} ${rest.path} (session)`);
          up.send(text);
        });
      }),
    );
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    log,
    sessions,
    close: () =>
      new Promise<void>((r) => {
        for (const s of tunnels) s.terminate();
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
