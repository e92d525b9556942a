// Goal: the service proxy (--proxy-addr) carries requests to the instances of a service as
// a reverse proxy should: spread by the balancer, retried on another instance when one
// cannot be reached (and that one left out for a while), a POST retried only when it
// surely never arrived, hop-by-hop headers dropped and forwarding headers added, answers
// streamed, and every request it cannot carry answered with a problem+json that says why.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request as httpRequest, type IncomingMessage, type Server } from 'node:http';
import { connect, createServer as createTcpServer, type AddressInfo, type Server as TcpServer } from 'node:net';
import { Writable } from 'node:stream';
import pino from 'pino';
import { startAgent, type RunningAgent } from '../../src/cli/agent.js';
import { resolveConfig } from '../../src/cli/config.js';
import { call } from '../helpers.js';

interface Backend {
  server: Server;
  port: number;
  seen: { method: string; url: string; headers: IncomingMessage['headers']; body: string }[];
}

async function backend(name: string, handler?: (req: IncomingMessage, res: import('node:http').ServerResponse, body: string) => void): Promise<Backend> {
  const seen: Backend['seen'] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString();
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      if (handler) return handler(req, res, body);
      res.writeHead(200, { 'content-type': 'text/plain', connection: 'keep-alive', 'keep-alive': 'timeout=77', 'x-from': name });
      res.end(`${name} ${req.method} ${req.url}`);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { server, port: (server.address() as AddressInfo).port, seen };
}

/** A port nobody listens on: bound, then closed. */
async function deadPort(): Promise<number> {
  const s: TcpServer = createTcpServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

const quiet = () => pino({ level: 'warn' }, new Writable({ write: (_c, _e, cb) => cb() }));
let agent: RunningAgent;
let a: Backend;
let b: Backend;
let slow: Backend;
const backends: Backend[] = [];

before(async () => {
  agent = await startAgent(resolveConfig([{ name: 'flag', values: { dev: true, httpAddr: '127.0.0.1:0', proxyAddr: '127.0.0.1:0', logLevel: 'warn' } }]), quiet());
  a = await backend('a');
  b = await backend('b');
  slow = await backend('slow', (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('first ');
    setTimeout(() => res.end('second'), 300);
  });
  backends.push(a, b, slow);
  for (const [id, be] of [['a', a], ['b', b]] as const) {
    assert.equal((await call(agent.url, 'PUT', `/v1/services/web/instances/${id}`, { address: '127.0.0.1', port: be.port })).status, 200);
  }
  assert.equal((await call(agent.url, 'PUT', '/v1/services/stream/instances/s', { address: '127.0.0.1', port: slow.port })).status, 200);
});
after(async () => {
  await agent.stop();
  for (const be of backends) be.server.close();
});

const via = (path: string, init?: RequestInit) => fetch(`${agent.proxyUrl}${path}`, init);

test('requests are spread over the instances; path and query reach them; the answer names its instance', async () => {
  const from = new Set<string>();
  for (let k = 0; k < 6; k++) {
    const r = await via('/web/api/items?x=1&y=%2F');
    assert.equal(r.status, 200);
    const text = await r.text();
    assert.match(text, /^(a|b) GET \/api\/items\?x=1&y=%2F$/);
    assert.equal(r.headers.get('switchboard-instance'), text[0]);
    assert.notEqual(r.headers.get('keep-alive'), 'timeout=77', 'hop-by-hop headers of the answer are dropped (the proxy\'s own connection has its own)');
    assert.equal(r.headers.get('x-from'), text[0]);
    from.add(text[0] as string);
  }
  assert.deepEqual([...from].sort(), ['a', 'b']);
  assert.equal((await (await via('/web')).text()).endsWith('GET /'), true, 'the service alone is its root path');
});

test('forwarding headers are added, hop-by-hop ones dropped, and a body reaches the instance', async () => {
  // node:http, since fetch may not set Connection.
  const { port } = new URL(agent.proxyUrl as string);
  const status = await new Promise<number>((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port: Number(port), method: 'POST', path: '/web/orders', headers: { 'content-type': 'application/json', 'x-forwarded-for': '10.9.9.9', connection: 'keep-alive, x-secret-hop', 'x-secret-hop': 'no', authorization: 'Bearer app-token' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end(JSON.stringify({ n: 1 }));
  });
  assert.equal(status, 200);
  const got = [...a.seen, ...b.seen].find((s) => s.url === '/orders');
  assert.ok(got);
  assert.equal(got.body, '{"n":1}');
  assert.equal(got.headers['x-forwarded-for'], '10.9.9.9, 127.0.0.1');
  assert.match(String(got.headers['x-forwarded-host']), /^127\.0\.0\.1:\d+$/);
  assert.equal(got.headers['x-forwarded-proto'], 'http');
  assert.equal(got.headers.via, '1.1 switchboard');
  assert.equal(got.headers['x-secret-hop'], undefined, 'a header named in Connection is hop-by-hop');
  assert.equal(got.headers.authorization, 'Bearer app-token', 'the application\'s own credentials pass through');
});

test('an instance that refuses connections: requests go to the others, and it is left out for a while', async () => {
  const port = await deadPort();
  assert.equal((await call(agent.url, 'PUT', '/v1/services/web/instances/dead', { address: '127.0.0.1', port })).status, 200);
  const retriesBefore = await metric('switchboard_proxy_retries_total');
  for (let k = 0; k < 9; k++) {
    const r = await via('/web/x', { method: k % 2 === 0 ? 'GET' : 'POST', body: k % 2 === 0 ? undefined : 'p' });
    assert.equal(r.status, 200, `request ${k}: a refused connection never reached the instance, so even a POST goes elsewhere`);
    assert.notEqual(r.headers.get('switchboard-instance'), 'dead');
    await r.text();
  }
  const retries = (await metric('switchboard_proxy_retries_total')) - retriesBefore;
  assert.equal(retries, 1, 'once refused, the dead instance is left out of picks (no retry after the first)');
  assert.equal(await metric('switchboard_proxy_ejections_total'), 1);
  await call(agent.url, 'DELETE', '/v1/services/web/instances/dead');
});

test('an instance that breaks the connection after the request: a GET is retried, a POST is not', async () => {
  const rude = await backend('rude', (req) => req.socket.destroy());
  backends.push(rude);
  const good = await backend('good');
  backends.push(good);
  await call(agent.url, 'PUT', '/v1/services/flaky/instances/rude', { address: '127.0.0.1', port: rude.port });
  const post = await via('/flaky/pay', { method: 'POST', body: 'once' });
  assert.equal(post.status, 502);
  const problem = (await post.json()) as { code: string; detail: string; hint: string };
  assert.equal(problem.code, 'UPSTREAM_UNAVAILABLE');
  assert.match(problem.detail, /rude/);
  assert.match(problem.hint, /may have been handled/);
  await call(agent.url, 'PUT', '/v1/services/flaky/instances/good', { address: '127.0.0.1', port: good.port });
  for (let k = 0; k < 4; k++) {
    const r = await via('/flaky/read');
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('switchboard-instance'), 'good');
    await r.text();
  }
});

test('answers are streamed as the instance sends them', async () => {
  const t0 = performance.now();
  const r = await via('/stream/');
  assert.equal(r.status, 200);
  const reader = r.body!.getReader();
  const first = await reader.read();
  const firstAt = performance.now() - t0;
  assert.equal(Buffer.from(first.value!).toString(), 'first ');
  let rest = '';
  for (;;) {
    const c = await reader.read();
    if (c.done) break;
    rest += Buffer.from(c.value).toString();
  }
  assert.equal(rest, 'second');
  assert.ok(firstAt < 250, `the first part arrived after ${firstAt.toFixed(0)} ms, before the instance finished (300 ms)`);
});

test('what the proxy cannot carry gets a problem+json: no service, no instance, a bad name, an upgrade, a body too large', async () => {
  const expect = async (r: Response, status: number, code: string, hint: RegExp) => {
    assert.equal(r.status, status);
    assert.equal(r.headers.get('content-type'), 'application/problem+json');
    const p = (await r.json()) as { code: string; hint: string };
    assert.equal(p.code, code);
    assert.match(p.hint, hint);
  };
  await expect(await via('/'), 404, 'NOT_FOUND', /\/SERVICE\/PATH/);
  await expect(await via('/nobody/here'), 503, 'NO_INSTANCE', /GET \/v1\/services\/nobody/);
  await expect(await via('/Bad_Name/x'), 400, 'INVALID_ARGUMENT', /./);
  await expect(await via('/web/big', { method: 'PUT', body: Buffer.alloc(10 * 1024 * 1024 + 1) }), 413, 'PAYLOAD_TOO_LARGE', /at most/);
  const loop = await via('/web/x', { headers: { via: '1.1 switchboard, 1.1 switchboard, 1.1 switchboard, 1.1 switchboard' } });
  assert.equal(loop.status, 502);
  assert.match(((await loop.json()) as { detail: string }).detail, /loop/);
  const upgrade = await new Promise<string>((resolve, reject) => {
    const { port } = new URL(agent.proxyUrl as string);
    const c = connect(Number(port), '127.0.0.1', () => c.write('GET /web/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n'));
    let text = '';
    c.on('data', (d: Buffer) => (text += d.toString()));
    c.on('close', () => resolve(text));
    c.on('error', reject);
  });
  assert.match(upgrade, /^HTTP\/1\.1 400/);
  assert.match(upgrade, /does not carry websocket upgrades/);
});

async function metric(name: string): Promise<number> {
  const text = await (await fetch(`${agent.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? 0 : Number(line.split(' ')[1]);
}

/** A raw HTTP/1.1 request over a socket; resolves with everything the proxy sent back. */
function raw(text: string, body?: Buffer): Promise<string> {
  const { port } = new URL(agent.proxyUrl as string);
  return new Promise((resolve, reject) => {
    const c = connect(Number(port), '127.0.0.1', () => {
      c.write(text);
      if (body) c.write(body);
    });
    let got = '';
    c.on('data', (d: Buffer) => {
      got += d.toString();
      if (/\r\n\r\n/.test(got) && /content-length: (\d+)/i.test(got)) {
        const len = Number((/content-length: (\d+)/i.exec(got) as RegExpExecArray)[1]);
        if (Buffer.byteLength(got.slice(got.indexOf('\r\n\r\n') + 4)) >= len) c.end();
      }
    });
    c.on('close', () => resolve(got));
    c.on('error', reject);
  });
}

test('Expect: 100-continue, absolute-form targets and bad percent-encoding are carried or refused as HTTP says', async () => {
  const body = Buffer.alloc(2 * 1024 * 1024, 'x');
  const expect = await new Promise<{ status: number; text: string }>((resolve, reject) => {
    const { port } = new URL(agent.proxyUrl as string);
    const req = httpRequest({ host: '127.0.0.1', port: Number(port), method: 'POST', path: '/web/upload', headers: { expect: '100-continue', 'content-length': body.length } }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('continue', () => req.end(body));
    req.on('error', reject);
  });
  assert.equal(expect.status, 200, `a large POST with Expect: 100-continue reaches an instance: ${expect.text.slice(0, 200)}`);
  assert.match(expect.text, /^(a|b) POST \/upload$/);
  const absolute = await raw('GET http://anything/web/abs?q=1 HTTP/1.1\r\nhost: anything\r\nconnection: close\r\n\r\n');
  assert.match(absolute, /^HTTP\/1\.1 200/);
  assert.match(absolute, /(a|b) GET \/abs\?q=1/);
  const percent = await raw('GET /%zz/x HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n');
  assert.match(percent, /^HTTP\/1\.1 400/);
  assert.match(percent, /"field":"service"/);
});

test('a client that leaves mid-body is counted apart, not as a failure of the proxy', async () => {
  const { port } = new URL(agent.proxyUrl as string);
  for (let i = 0; i < 3; i++) {
    await new Promise<void>((resolve) => {
      const c = connect(Number(port), '127.0.0.1', () => {
        c.write('POST /web/x HTTP/1.1\r\nhost: t\r\ncontent-length: 1000\r\n\r\nonly a part');
        setTimeout(() => c.destroy(), 50);
      });
      c.on('close', () => resolve());
    });
  }
  await new Promise((r) => setTimeout(r, 100));
  const text = await (await fetch(`${agent.url}/metrics`)).text();
  assert.match(text, /switchboard_proxy_requests_total\{outcome="client_gone"\} 3/);
  assert.doesNotMatch(text, /switchboard_proxy_requests_total\{outcome="INTERNAL"\}/);
  assert.match(text, /switchboard_proxy_inflight 0/);
});

test('a request queued behind busy connections to an instance times out as 504; at shutdown answers in flight finish and close their connection', async () => {
  const { ServiceProxy } = await import('../../src/proxy/proxy.js');
  const hold = await backend('hold', (_req, res, body) => {
    setTimeout(() => res.end(`held ${body}`), 700);
  });
  backends.push(hold);
  await call(agent.url, 'PUT', '/v1/services/busy/instances/h', { address: '127.0.0.1', port: hold.port });
  const proxy = new ServiceProxy({ registry: agent.engine.registry, connectionsPerInstance: 1, headersTimeoutMs: 300 });
  const at = await proxy.listen('127.0.0.1', 0);
  const base = `http://127.0.0.1:${at.port}`;
  try {
    const first = fetch(`${base}/busy/one`);
    await new Promise((r) => setTimeout(r, 50));
    const t0 = performance.now();
    const queued = await fetch(`${base}/busy/two`);
    const waited = performance.now() - t0;
    assert.equal(queued.status, 504, 'the one connection is busy for 700 ms: no answer within 300 ms');
    assert.equal(((await queued.json()) as { code: string }).code, 'UPSTREAM_TIMEOUT');
    assert.ok(waited < 650, `answered after ${waited.toFixed(0)} ms`);
    // (the first one times out too: it waits 700 ms for headers)
    await (await first).text();
  } finally {
    await proxy.close();
  }
  const slowProxy = new ServiceProxy({ registry: agent.engine.registry });
  const at2 = await slowProxy.listen('127.0.0.1', 0);
  const inFlight = fetch(`http://127.0.0.1:${at2.port}/busy/three`);
  await new Promise((r) => setTimeout(r, 100));
  const closing = slowProxy.close();
  const answered = await inFlight;
  assert.equal(answered.status, 200, 'the answer in flight finishes');
  assert.equal(answered.headers.get('connection'), 'close');
  assert.equal(await answered.text(), 'held ');
  await closing;
  await assert.rejects(fetch(`http://127.0.0.1:${at2.port}/busy/four`), 'no new connection after close');
});

test('the bodies held for requests in flight are bounded in all: beyond PROXY_MAX_BUFFERED_BYTES a request gets 429, and gets through once they are answered', async () => {
  const { ServiceProxy } = await import('../../src/proxy/proxy.js');
  const proxy = new ServiceProxy({ registry: agent.engine.registry, maxBufferedBytes: 1_000 });
  const at = await proxy.listen('127.0.0.1', 0);
  const base = `http://127.0.0.1:${at.port}`;
  try {
    const first = fetch(`${base}/busy/big`, { method: 'PUT', body: 'x'.repeat(800) }); // held 700 ms by the instance
    await new Promise((r) => setTimeout(r, 150));
    const refused = await fetch(`${base}/busy/more`, { method: 'PUT', body: 'y'.repeat(400) });
    assert.equal(refused.status, 429);
    const p = (await refused.json()) as { code: string; limit: string };
    assert.deepEqual([p.code, p.limit], ['RATE_LIMITED', 'PROXY_MAX_BUFFERED_BYTES']);
    assert.equal((await first).status, 200);
    await (await first).text();
    const later = await fetch(`${base}/busy/more`, { method: 'PUT', body: 'y'.repeat(400) });
    assert.equal(later.status, 200);
    assert.equal(await later.text(), `held ${'y'.repeat(400)}`);
  } finally {
    await proxy.close();
  }
});
