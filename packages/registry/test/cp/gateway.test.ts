// Goal: the JSON-gateway reader of consistent reads (engines/cp/gateway.ts) keeps the rules
// of the gRPC client against fake members on real sockets: a linearizable count-only range,
// a deadline that covers waiting for a connection and a member that never answers, the
// breaker and the second attempt on another endpoint, unavailable (a proxy's 502 page, a
// 503) told apart from "not a gateway" (404, a 200 that is not etcd's JSON, a server that
// speaks only HTTP/2), and the etcd user's token fetched again when etcd refuses it.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createH2Server, type Http2Server } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { BreakerOpen, EtcdUnavailable, GatewayMissing, GatewayReader } from '../../src/engines/cp/gateway.js';
import { StoreUnavailable } from '../../src/engines/cp/store.js';

interface Seen {
  path: string;
  body: any;
  authorization: string | undefined;
}

type Handler = (req: IncomingMessage, body: any, res: ServerResponse) => void;

const servers: (Server | Http2Server)[] = [];
after(async () => {
  for (const s of servers) {
    (s as Server).closeAllConnections?.();
    await new Promise((r) => s.close(r));
  }
});

/** A fake etcd member on 127.0.0.1: records each request and lets `handle` answer it. */
async function member(handle: Handler): Promise<{ url: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  const server = createServer((req, res) => {
    let text = '';
    req.on('data', (c: Buffer) => (text += c.toString()));
    req.on('end', () => {
      const body = text ? JSON.parse(text) : null;
      seen.push({ path: req.url ?? '', body, authorization: req.headers.authorization });
      handle(req, body, res);
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen };
}

const json = (res: ServerResponse, status: number, body: unknown): void => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
};
const answer = (revision: number): Handler => (_req, _body, res) => json(res, 200, { header: { cluster_id: '42', revision: String(revision) }, count: '0' });
const KEY = Buffer.from('/switchboard/');

async function rejects(p: Promise<unknown>, kind: new (...args: never[]) => Error, message?: RegExp): Promise<Error> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof kind, `expected ${kind.name}, got ${(err as Error)?.name}: ${(err as Error)?.message}`);
    if (message) assert.match((err as Error).message, message);
    return err as Error;
  }
  assert.fail(`expected ${kind.name}, but the call succeeded`);
}

test('asks a linearizable count of one key and answers its revision', async () => {
  const m = await member(answer(77));
  const r = new GatewayReader({ endpoints: [m.url], breakerOpenMs: 1000 });
  try {
    assert.deepEqual(await r.quorumRevision(KEY, 1000), { revision: 77, clusterId: '42' });
    assert.equal(m.seen[0]?.path, '/v3/kv/range');
    // No `serializable`: etcd answers only after the leader confirmed its read index.
    assert.deepEqual(m.seen[0]?.body, { key: KEY.toString('base64'), limit: 1, count_only: true });
  } finally {
    await r.close();
  }
});

test('an unavailable member: the same call tries the next one, and the breaker skips the first for a while', async () => {
  const down = await member((_req, _body, res) => json(res, 503, { code: 14, message: 'etcdserver: no leader' }));
  const up = await member(answer(9));
  const r = new GatewayReader({ endpoints: [down.url, up.url], breakerOpenMs: 300 });
  try {
    assert.equal((await r.quorumRevision(KEY, 1000)).revision, 9);
    assert.equal((await r.quorumRevision(KEY, 1000)).revision, 9);
    assert.equal(down.seen.length, 1, 'skipped while its breaker is open');
    assert.equal(up.seen.length, 2);
  } finally {
    await r.close();
  }
});

test('every endpoint failing: unavailable, with the first failure, and answers again once a member does', async () => {
  let fail = true;
  const m = await member((req, body, res) => (fail ? json(res, 503, { code: 14, message: 'etcdserver: unhealthy cluster' }) : answer(5)(req, body, res)));
  const r = new GatewayReader({ endpoints: [m.url], breakerOpenMs: 200 });
  try {
    // etcd itself said "not now": the gateway works, the answer is unavailable.
    await rejects(r.quorumRevision(KEY, 1000), EtcdUnavailable, /unhealthy cluster/);
    await rejects(r.quorumRevision(KEY, 1000), BreakerOpen, /breaker open/);
    assert.equal(m.seen.length, 1, 'no request while the breaker is open');
    fail = false;
    await new Promise((res) => setTimeout(res, 250));
    assert.equal((await r.quorumRevision(KEY, 1000)).revision, 5);
  } finally {
    await r.close();
  }
});

test("a proxy's error page is unavailable; a 404, or a 200 that is not etcd's JSON, is not a gateway", async () => {
  const badGateway = await member((_req, _body, res) => {
    res.writeHead(502, { 'content-type': 'text/html' });
    res.end('<html><body>502 Bad Gateway</body></html>');
  });
  const notFound = await member((_req, _body, res) => {
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('404 page not found');
  });
  const other = await member((_req, _body, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<html>welcome</html>');
  });
  const refusing = await member((_req, _body, res) => json(res, 403, { code: 7, message: 'etcdserver: permission denied' }));
  const readers = [badGateway, notFound, other, refusing].map((m) => new GatewayReader({ endpoints: [m.url], breakerOpenMs: 1000 }));
  try {
    const proxyPage = await rejects((readers[0] as GatewayReader).quorumRevision(KEY, 1000), StoreUnavailable, /502/);
    assert.ok(!(proxyPage instanceof EtcdUnavailable), 'a proxy page is not etcd speaking');
    await rejects((readers[1] as GatewayReader).quorumRevision(KEY, 1000), GatewayMissing);
    await rejects((readers[2] as GatewayReader).quorumRevision(KEY, 1000), GatewayMissing);
    // etcd refusing the request itself is neither: the error says what etcd said.
    const err = await rejects((readers[3] as GatewayReader).quorumRevision(KEY, 1000), Error, /permission denied/);
    assert.ok(!(err instanceof StoreUnavailable) && !(err instanceof GatewayMissing));
  } finally {
    await Promise.all(readers.map((r) => r.close()));
  }
});

test('a server that speaks only HTTP/2 (gRPC) is not a gateway', async () => {
  const h2 = createH2Server();
  h2.on('stream', (stream) => stream.respond({ ':status': 200 }));
  servers.push(h2);
  await new Promise<void>((r) => h2.listen(0, '127.0.0.1', r));
  const r = new GatewayReader({ endpoints: [`http://127.0.0.1:${(h2.address() as AddressInfo).port}`], breakerOpenMs: 1000 });
  try {
    await rejects(r.quorumRevision(KEY, 2000), GatewayMissing);
  } finally {
    await r.close();
  }
});

test('the deadline covers a member that never answers and the wait for a connection', async () => {
  const hung = await member(() => undefined);
  const r = new GatewayReader({ endpoints: [hung.url], breakerOpenMs: 1000, connections: 1 });
  try {
    // Six calls share one connection: each must still fail by its own deadline (without
    // one, the last would wait for the five before it: 2.4 s).
    const took = await Promise.all(
      Array.from({ length: 6 }, async () => {
        const started = Date.now();
        await rejects(r.quorumRevision(KEY, 400), StoreUnavailable, /deadline/);
        return Date.now() - started;
      }),
    );
    assert.ok(Math.max(...took) < 1200, `calls took ${took.join(', ')} ms for a 400 ms deadline`);
  } finally {
    await r.close();
  }
});

test("the etcd user's token: fetched once, fetched again when etcd no longer knows it", async () => {
  let tokens = 0;
  let refuseToken: string | null = null;
  const m = await member((req, body, res) => {
    if (req.url === '/v3/auth/authenticate') {
      assert.deepEqual(body, { name: 'sb', password: 'pw' });
      return json(res, 200, { header: {}, token: `t${++tokens}` });
    }
    if (req.headers.authorization === refuseToken || refuseToken === '*') return json(res, 401, { code: 16, message: 'etcdserver: invalid auth token' });
    return answer(3)(req, body, res);
  });
  const r = new GatewayReader({ endpoints: [m.url], breakerOpenMs: 1000, auth: { username: 'sb', password: 'pw' } });
  try {
    await r.quorumRevision(KEY, 1000);
    await r.quorumRevision(KEY, 1000);
    assert.equal(tokens, 1);
    assert.deepEqual(m.seen.filter((s) => s.path === '/v3/kv/range').map((s) => s.authorization), ['t1', 't1']);
    refuseToken = 't1';
    assert.equal((await r.quorumRevision(KEY, 1000)).revision, 3);
    assert.equal(tokens, 2);
    assert.equal(m.seen.at(-1)?.authorization, 't2');
    // A token refused right after it was fetched: one new token per call, then the refusal.
    refuseToken = '*';
    await rejects(r.quorumRevision(KEY, 1000), Error, /invalid auth token/);
    assert.equal(tokens, 3);
  } finally {
    await r.close();
  }
});
