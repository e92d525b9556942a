// Goal: the client side of the session protocol (protocol/session.ts), checked message by
// message against a scripted fake node: a hand-over (goaway, or keepalives that go
// unacknowledged) resumes the lease on a new connection BEFORE the old one is closed; a
// resume the node does not know falls back to `open`; `ended` opens a new lease; a node
// without /v1/session gets REST keepalives.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { WebSocketServer, type WebSocket } from 'ws';
import type { SessionClientMessage, SessionServerMessage } from '@switchboard/protocol';
import { LeaseKeeper, type LeaseChange } from '../src/lease.js';
import { Endpoints, RegistryHttp } from '../src/registry-http.js';
import { waitFor } from './helpers.js';

interface Conn {
  n: number;
  ws: WebSocket;
  received: SessionClientMessage[];
  closedAt: number | null;
}

/** A fake registry node: every message and connection is logged with a global sequence. */
class FakeNode {
  readonly conns: Conn[] = [];
  readonly log: string[] = [];
  readonly wss: WebSocketServer;
  ack = true;
  /** Delay of the answer to `resume` (a slow node). */
  resumeDelayMs = 0;
  knownLeases = new Set<string>();
  private leaseSeq = 0;

  constructor(readonly name: string, readonly epoch: string, readonly server: Server) {
    this.wss = new WebSocketServer({ server, path: '/v1/session' });
    this.wss.on('connection', (ws) => {
      const c: Conn = { n: this.conns.length + 1, ws, received: [], closedAt: null };
      this.conns.push(c);
      this.log.push(`${name}#${c.n} connect`);
      ws.on('message', (d) => this.onMessage(c, JSON.parse(d.toString()) as SessionClientMessage));
      ws.on('close', () => {
        c.closedAt = Date.now();
        this.log.push(`${name}#${c.n} closed`);
      });
    });
  }

  static async start(name: string, epoch: string, shared?: FakeNode['log']): Promise<FakeNode> {
    const server = createServer((_req, res) => res.writeHead(404).end());
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const node = new FakeNode(name, epoch, server);
    if (shared) (node as { log: string[] }).log = shared;
    return node;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as { port: number }).port}`;
  }

  send(c: Conn, m: SessionServerMessage): void {
    c.ws.send(JSON.stringify(m));
  }

  private onMessage(c: Conn, m: SessionClientMessage): void {
    c.received.push(m);
    this.log.push(`${this.name}#${c.n} ${m.type}${m.type === 'resume' ? ` ${m.leaseId}` : ''}`);
    const lease = (leaseId: string) => this.send(c, { type: 'lease', leaseId, ttlMs: 300, nodeId: this.name, epoch: this.epoch, graceMs: 500 });
    if (m.type === 'open') {
      const id = `${this.name}-lease-${++this.leaseSeq}`;
      this.knownLeases.add(id);
      lease(id);
    } else if (m.type === 'resume') {
      if (this.knownLeases.has(m.leaseId)) setTimeout(() => lease(m.leaseId), this.resumeDelayMs);
      else this.send(c, { type: 'error', problem: { type: 'urn:switchboard:error:LEASE_NOT_FOUND', title: 'Lease not found', status: 404, detail: 'unknown lease', code: 'LEASE_NOT_FOUND' } });
    } else if (m.type === 'keepalive' && this.ack) {
      this.send(c, { type: 'ack', seq: m.seq, ttlMs: 300 });
    }
  }

  async close(): Promise<void> {
    for (const c of this.conns) c.ws.terminate();
    this.wss.close();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

function keeper(urls: string[], changes: LeaseChange[], lost: string[] = [], transport: 'auto' | 'websocket' | 'rest' = 'auto'): LeaseKeeper {
  const endpoints = new Endpoints(urls);
  return new LeaseKeeper(endpoints, new RegistryHttp(endpoints), {
    ttlMs: 300,
    transport,
    connectTimeoutMs: 1_000,
    backoff: { initialMs: 10, maxMs: 50 },
    onChange: (c) => changes.push(c),
    onLost: (id) => lost.push(id),
    onError: () => undefined,
  });
}

/**
 * Two nodes behind one lease store (as in cp mode); `trigger` makes the keeper leave a. The
 * lease must be resumed on b before a's connection closes, as the same lease (`moved`),
 * without a new one. Returns the shared log and the lease for more checks.
 */
async function handOver(trigger: (k: LeaseKeeper, a: FakeNode) => void, resumeDelayMs = 0): Promise<{ log: string[]; leaseId: string; keepalivesBefore: number; keepalivesAfter: number }> {
  const log: string[] = [];
  const a = await FakeNode.start('a', 'e1', log);
  const b = await FakeNode.start('b', 'e1', log);
  const changes: LeaseChange[] = [];
  const k = keeper([a.url, b.url], changes);
  try {
    const first = await k.current();
    assert.equal(first.nodeId, 'a');
    b.knownLeases.add(first.leaseId);
    b.resumeDelayMs = resumeDelayMs;
    const keepalives = () => a.conns[0]!.received.filter((m) => m.type === 'keepalive').length;
    const keepalivesBefore = keepalives();
    trigger(k, a);
    await waitFor(() => changes.length === 2, 3_000, 'the lease on b');
    await waitFor(() => a.conns[0]!.closedAt !== null, 3_000, 'the old connection to close');
    const resumeAt = log.indexOf(`b#1 resume ${first.leaseId}`);
    const closeAt = log.indexOf('a#1 closed');
    assert.ok(resumeAt >= 0 && closeAt > resumeAt, `resume must come before the close: ${log.join(' | ')}`);
    assert.equal(changes[1]!.kind, 'moved');
    assert.equal(changes[1]!.info.leaseId, first.leaseId);
    assert.ok(!log.some((l) => l.endsWith(' open') && l.startsWith('b')), 'no new lease was opened');
    return { log, leaseId: first.leaseId, keepalivesBefore, keepalivesAfter: keepalives() };
  } finally {
    await k.close(false, 500);
    await a.close();
    await b.close();
  }
}

test('goaway: the lease is resumed on the next node before the old connection closes', async () => {
  await handOver((_k, a) => a.send(a.conns[0]!, { type: 'goaway' }));
});

test('unacknowledged keepalives: hand-over to a fresh connection, old one closed after the resume', async () => {
  const a = await FakeNode.start('a', 'e1');
  const changes: LeaseChange[] = [];
  const k = keeper([a.url], changes);
  try {
    const first = await k.current();
    a.ack = false;
    await waitFor(() => a.conns.length === 2 && a.conns[1]!.received.some((m) => m.type === 'resume'), 3_000, 'a second connection resuming');
    a.ack = true;
    await waitFor(() => a.conns[0]!.closedAt !== null, 3_000, 'the first connection to close');
    const resume = a.log.indexOf(`a#2 resume ${first.leaseId}`);
    assert.ok(resume >= 0 && resume < a.log.indexOf('a#1 closed'), a.log.join(' | '));
    await waitFor(() => changes.length === 2, 3_000, 'resumed');
    assert.equal(changes[1]!.kind, 'resumed');
  } finally {
    await k.close(false, 500);
    await a.close();
  }
});

test('a node of another epoch: resume answers LEASE_NOT_FOUND, the client opens a new lease there', async () => {
  const a = await FakeNode.start('a', 'e1');
  const b = await FakeNode.start('b', 'e2');
  const changes: LeaseChange[] = [];
  const k = keeper([a.url, b.url], changes);
  try {
    const first = await k.current();
    await a.close(); // the node dies: its connection drops without goaway
    await waitFor(() => changes.length === 2, 5_000, 'a lease on b');
    assert.deepEqual(b.conns.at(-1)!.received.map((m) => m.type), ['resume', 'open', ...b.conns.at(-1)!.received.slice(2).map((m) => m.type)]);
    assert.equal(changes[1]!.kind, 'new');
    assert.notEqual(changes[1]!.info.leaseId, first.leaseId);
    assert.equal(changes[1]!.info.epoch, 'e2');
  } finally {
    await k.close(false, 500);
    await b.close();
  }
});

test('ended: the lease is reported lost and a new one is opened', async () => {
  const a = await FakeNode.start('a', 'e1');
  const changes: LeaseChange[] = [];
  const lost: string[] = [];
  const k = keeper([a.url], changes, lost);
  try {
    const first = await k.current();
    a.send(a.conns[0]!, { type: 'ended', leaseId: first.leaseId, reason: 'lease_expired' });
    await waitFor(() => changes.length === 2, 3_000, 'a new lease');
    assert.deepEqual(lost, [first.leaseId]);
    assert.equal(changes[1]!.kind, 'new');
  } finally {
    await k.close(false, 500);
    await a.close();
  }
});

test('close with revoke sends close {revoke: true}', async () => {
  const a = await FakeNode.start('a', 'e1');
  a.wss.on('connection', (ws) => ws.on('message', (d) => {
    if ((JSON.parse(d.toString()) as SessionClientMessage).type === 'close') ws.close(1000, 'closed');
  }));
  const k = keeper([a.url], []);
  await k.current();
  assert.equal(await k.close(true, 1_000), true);
  assert.deepEqual(a.conns[0]!.received.at(-1), { type: 'close', revoke: true });
  await a.close();
});

test('a node without /v1/session (upgrade answered 404) gets REST keepalives', async () => {
  let keepalives = 0;
  const server = createServer((req, res) => {
    const json = (status: number, body: unknown) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    if (req.method === 'GET' && req.url === '/v1/status') return json(200, { nodeId: 'old', epoch: 'e0' });
    if (req.method === 'POST' && req.url === '/v1/leases') return json(201, { leaseId: 'rest-lease', ttlMs: 300 });
    if (req.method === 'PUT' && req.url === '/v1/leases/rest-lease/keepalive') {
      keepalives++;
      return json(200, { leaseId: 'rest-lease', ttlMs: 300 });
    }
    json(404, { type: 'x', title: 'Not found', status: 404, detail: 'no route', code: 'NOT_FOUND' });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  const changes: LeaseChange[] = [];
  const k = keeper([url], changes);
  try {
    const info = await k.current();
    assert.equal(info.transport, 'rest');
    assert.equal(info.leaseId, 'rest-lease');
    await waitFor(() => keepalives >= 3, 2_000, 'REST keepalives every ttl/3');
  } finally {
    await k.close(false, 500);
    await new Promise<void>((r) => server.close(() => r()));
  }
});

test('writes failing on the lease\'s node: hand-over to the next node, keepalives go on until the resume', async () => {
  // b answers the resume after 400 ms, longer than a keepalive interval (ttl 300 ms / 3).
  const { log, leaseId, keepalivesBefore, keepalivesAfter } = await handOver((k, a) => k.nodeFailed(a.url), 400);
  const during = log.slice(log.indexOf(`b#1 resume ${leaseId}`), log.indexOf('a#1 closed')).filter((l) => l === 'a#1 keepalive');
  assert.ok(during.length >= 2, `keepalives on a while b resumed: ${log.join(' | ')}`);
  assert.ok(keepalivesAfter > keepalivesBefore);
});

test('writes failing with one endpoint: the session stays as it is (nowhere to move)', async () => {
  const a = await FakeNode.start('a', 'e1');
  const changes: LeaseChange[] = [];
  const k = keeper([a.url], changes);
  try {
    await k.current();
    k.nodeFailed(a.url);
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(a.conns.length, 1);
    assert.equal(a.conns[0]!.closedAt, null);
    assert.equal(changes.length, 1);
    assert.ok(a.conns[0]!.received.filter((m) => m.type === 'keepalive').length >= 2, 'keepalives go on');
  } finally {
    await k.close(false, 500);
    await a.close();
  }
});
