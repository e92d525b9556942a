// Goal: with a token file the HTTP API refuses every /v1/ request without an accepted
// bearer token (401 UNAUTHENTICATED) and every write with a read token (403 FORBIDDEN):
// reads, writes, the SSE watch and the session WebSocket alike; the probes stay open,
// /metrics needs a token unless metricsOpen; tokens are compared in constant time; a bad
// token file stops the agent at start (exit 2, API_TOKEN_TOO_SHORT for a token under 32
// characters, INVALID_CONFIG for other lines) without printing a token;
// SIGHUP reads the file again.
import { after, before, mock, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { connect as netConnect } from 'node:net';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { DEFAULT_LIMITS, ERRORS, PROBLEM_TYPE_PREFIX } from '@switchboard/protocol';
import { build, type SwitchboardApp } from '../../src/api/app.js';
import { ApiTokens, MAX_TOKENS, MIN_TOKEN_LENGTH, parseTokenFile, TokenFileError } from '../../src/api/auth.js';
import { StandaloneEngine } from '../../src/engines/standalone.js';
import { MemoryStorage } from '../../src/storage/storage.js';
import { call, SseReader } from '../helpers.js';
import { run, spawnAgent } from '../integration/process.js';
import { waitUntil } from '../support/wait.js';

const READ = 'read-token-0123456789abcdef0123456789';
const WRITE = 'write-token-0123456789abcdef0123456789';
const FORWARD = 'forward-token-0123456789abcdef0123456789';
const FILE = `# tokens of the test\n\nread ${READ} # the dashboard\n  write   ${WRITE}  \nforward ${FORWARD}\n`;
const INSTANCE = { address: '10.0.0.5', port: 8080 };

async function startNode(opts: { metricsOpen?: boolean; tokens?: boolean } = {}): Promise<{ app: SwitchboardApp; engine: StandaloneEngine; url: string; close(): Promise<void> }> {
  const engine = await StandaloneEngine.open({ nodeId: 't', storage: new MemoryStorage(), limits: DEFAULT_LIMITS, clock: { now: () => performance.now() } });
  const tokens = opts.tokens === false ? {} : { tokens: new ApiTokens(parseTokenFile(FILE).tokens), metricsOpen: opts.metricsOpen ?? false };
  const app = await build({ engine, limits: DEFAULT_LIMITS, version: 'test', dashboardDir: null, ...tokens });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  return { app, engine, url, close: async () => (await app.shutdown(), await engine.close()) };
}

const bearer = (t: string): Record<string, string> => ({ authorization: `Bearer ${t}` });

function assertRefused(r: { status: number; body: any; headers: Headers }, code: 'UNAUTHENTICATED' | 'FORBIDDEN', what: string): void {
  assert.equal(r.status, ERRORS[code].status, `${what}: status (${JSON.stringify(r.body)})`);
  assert.match(r.headers.get('content-type') ?? '', /^application\/problem\+json/, `${what}: content type`);
  assert.equal(r.body.code, code, what);
  assert.equal(r.body.type, PROBLEM_TYPE_PREFIX + code, what);
  assert.equal(typeof r.body.hint, 'string', `${what}: hint`);
  assert.match(r.headers.get('www-authenticate') ?? '', /^Bearer realm="switchboard"/, `${what}: WWW-Authenticate`);
}

/** The status a WebSocket handshake to /v1/session gets (101 when it opens). */
function sessionHandshake(url: string, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url.replace('http', 'ws') + '/v1/session', { headers, handshakeTimeout: 3_000 });
    ws.once('unexpected-response', (_req, res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
    ws.once('open', () => {
      ws.send(JSON.stringify({ type: 'open', ttlMs: 5_000 }));
      ws.once('message', (d) => {
        assert.equal(JSON.parse(d.toString()).type, 'lease');
        ws.close();
        resolve(101);
      });
    });
    ws.once('error', reject);
  });
}

let node: Awaited<ReturnType<typeof startNode>>;
before(async () => {
  node = await startNode();
});
after(async () => node.close());

test('the token file: SCOPE TOKEN lines with comments and blank lines; bad lines are refused by line number, never showing the token', () => {
  const { tokens, forward } = parseTokenFile(FILE);
  assert.deepEqual(tokens.map((t) => t.scope), ['read', 'write', 'forward']);
  assert.deepEqual(forward, { token: FORWARD, scope: 'forward', line: 5 }, 'cp nodes forward with the first forward token');
  // Without one, with the first write token (files written before the forward scope); with neither, with none.
  assert.deepEqual(parseTokenFile(`read ${READ}\nwrite ${WRITE}\n`).forward, { token: WRITE, scope: 'write', line: 2 });
  assert.equal(parseTokenFile(`read ${READ}\n`).forward, null);
  assert.ok(tokens.every((t) => t.digest.length === 32), 'only digests are kept');
  const refused = (text: string, message: RegExp): void => {
    assert.throws(() => parseTokenFile(text), (err: unknown) => {
      assert.ok(err instanceof TokenFileError, String(err));
      assert.match(err.message, message);
      assert.ok(err.hint.length > 0);
      for (const secret of [READ, WRITE, 'short-one']) assert.ok(!err.message.includes(secret), `the message shows a token: ${err.message}`);
      return true;
    });
  };
  refused(`read ${READ}\nwrite short-one\n`, /^line 2: the token has 9 characters, fewer than 32 \(MIN_TOKEN_LENGTH: 128 random bits written in hex\)$/);
  // 31 characters is one short: the code says which refusal it is (scripts, docs).
  assert.throws(() => parseTokenFile(`write ${'a'.repeat(MIN_TOKEN_LENGTH - 1)}\n`), (err: unknown) => err instanceof TokenFileError && err.code === 'API_TOKEN_TOO_SHORT' && /openssl rand -hex 32/.test(err.hint));
  assert.equal(parseTokenFile(`write ${'a'.repeat(MIN_TOKEN_LENGTH)}\n`).tokens.length, 1, 'MIN_TOKEN_LENGTH itself is taken');
  refused(`write ${'a'.repeat(513)}\n`, /^line 1: the token has 513 characters, more than 512 \(MAX_TOKEN_LENGTH\)$/);
  refused(`admin ${READ}\n`, /^line 1: the scope must be read, write or forward/);
  refused(`${READ}\n`, /^line 1: expected "SCOPE TOKEN", found 1 field/);
  refused(`read ${READ} extra\n`, /expected "SCOPE TOKEN", found 3 field\(s\)/);
  refused(`read ${READ}\nwrite ${READ}\n`, /^line 2: the token is the same as on line 1/);
  refused(`read ${'x'.repeat(40)}"\n`, /characters a bearer token may not have/);
  refused('# nothing\n\n', /holds no token/);
  const many = Array.from({ length: MAX_TOKENS + 1 }, (_, i) => `read token-${String(i).padStart(MIN_TOKEN_LENGTH, '0')}`).join('\n');
  refused(many, /more than 1000 tokens \(limit MAX_TOKENS\)/);
});

test('tokens are compared in constant time: timingSafeEqual on digests, against every known token', () => {
  const tokens = new ApiTokens(parseTokenFile(FILE).tokens);
  const compare = mock.method(crypto, 'timingSafeEqual');
  try {
    assert.equal(tokens.scopeOf(READ), 'read');
    assert.equal(compare.mock.callCount(), 3, 'a match does not stop the loop');
    assert.equal(tokens.scopeOf(WRITE), 'write');
    assert.equal(tokens.scopeOf('not-a-known-token-at-all'), null);
    assert.equal(tokens.scopeOf(''), null);
    assert.equal(compare.mock.callCount(), 12);
    for (const c of compare.mock.calls) {
      assert.equal((c.arguments[0] as Buffer).length, 32, 'digests of equal length');
      assert.equal((c.arguments[1] as Buffer).length, 32);
    }
  } finally {
    compare.mock.restore();
  }
});

test('reads and writes without a token, or with an unknown or malformed one, are 401 UNAUTHENTICATED', async () => {
  const routes: [string, string, unknown?][] = [
    ['GET', '/v1/services'],
    ['GET', '/v1/services/orders'],
    ['GET', '/v1/status'],
    ['GET', '/v1/openapi.json'],
    ['GET', '/v1/no-such-route'],
    ['PUT', '/v1/services/orders/instances/o-1', INSTANCE],
    ['POST', '/v1/leases', { ttlMs: 5_000 }],
    ['DELETE', '/v1/services/orders/instances/o-1'],
  ];
  for (const [method, path, body] of routes) {
    assertRefused(await call(node.url, method, path, body), 'UNAUTHENTICATED', `${method} ${path} without a token`);
    assertRefused(await call(node.url, method, path, body, bearer('an-unknown-token-0123456789')), 'UNAUTHENTICATED', `${method} ${path} with an unknown token`);
    assertRefused(await call(node.url, method, path, body, { authorization: `Basic ${Buffer.from(`u:${WRITE}`).toString('base64')}` }), 'UNAUTHENTICATED', `${method} ${path} with Basic`);
  }
  const missing = await call(node.url, 'GET', '/v1/services');
  assert.equal(missing.headers.get('www-authenticate'), 'Bearer realm="switchboard"');
  const unknown = await call(node.url, 'GET', '/v1/services', undefined, bearer('an-unknown-token-0123456789'));
  assert.equal(unknown.headers.get('www-authenticate'), 'Bearer realm="switchboard", error="invalid_token"');
  assert.equal(unknown.body.field, 'Authorization');
});

test('a read token reads but is 403 FORBIDDEN on writes; a write token does both', async () => {
  assert.equal((await call(node.url, 'GET', '/v1/services', undefined, bearer(READ))).status, 200);
  assert.equal((await call(node.url, 'GET', '/v1/services', undefined, { authorization: `bearer  ${READ}` })).status, 200, 'the scheme in any case');
  const put = await call(node.url, 'PUT', '/v1/services/orders/instances/o-1', INSTANCE, bearer(READ));
  assertRefused(put, 'FORBIDDEN', 'PUT with a read token');
  assert.equal(put.headers.get('www-authenticate'), 'Bearer realm="switchboard", error="insufficient_scope", scope="write"');
  assertRefused(await call(node.url, 'POST', '/v1/leases', { ttlMs: 5_000 }, bearer(READ)), 'FORBIDDEN', 'POST /v1/leases with a read token');
  assert.equal((await call(node.url, 'PUT', '/v1/services/orders/instances/o-1', INSTANCE, bearer(WRITE))).status, 200);
  const read = await call(node.url, 'GET', '/v1/services/orders', undefined, bearer(READ));
  assert.equal(read.status, 200);
  assert.equal(read.body.instances.length, 1);
  assert.equal((await call(node.url, 'DELETE', '/v1/services/orders/instances/o-1', undefined, bearer(WRITE))).status, 200);
});

test('a forward token forwards consumer reports between cp nodes and does nothing else (403 FORBIDDEN)', async () => {
  assert.equal((await call(node.url, 'PUT', '/v1/services/fwd/instances/f-1', INSTANCE, bearer(WRITE))).status, 200);
  const report = { reporter: 'checkout-1', kind: 'timeout' };
  const forwarded = { ...bearer(FORWARD), 'x-switchboard-forwarded-report': 'n1' };
  const ok = await call(node.url, 'POST', '/v1/services/fwd/instances/f-1/reports', report, forwarded);
  assert.equal(ok.status, 200, JSON.stringify(ok.body));
  assert.equal(ok.body.reporters, 1);
  // The same report without the header is a client's: not for a forward token.
  const direct = await call(node.url, 'POST', '/v1/services/fwd/instances/f-1/reports', report, bearer(FORWARD));
  assertRefused(direct, 'FORBIDDEN', 'a report without the header');
  assert.match(direct.body.detail, /scope forward: it only forwards consumer reports/);
  assert.equal(direct.headers.get('www-authenticate'), 'Bearer realm="switchboard", error="insufficient_scope", scope="write"');
  const read = await call(node.url, 'GET', '/v1/services/fwd', undefined, forwarded);
  assertRefused(read, 'FORBIDDEN', 'a read');
  assert.equal(read.headers.get('www-authenticate'), 'Bearer realm="switchboard", error="insufficient_scope", scope="read"');
  assertRefused(await call(node.url, 'PUT', '/v1/services/fwd/instances/f-2', INSTANCE, forwarded), 'FORBIDDEN', 'a registration');
  assertRefused(await call(node.url, 'DELETE', '/v1/services/fwd/instances/f-1', undefined, forwarded), 'FORBIDDEN', 'a deregistration');
  assertRefused(await call(node.url, 'PUT', '/v1/services/fwd/instances/f-1/checks/c', { status: 'passing' }, forwarded), 'FORBIDDEN', 'a check report');
  assertRefused(await call(node.url, 'GET', '/v1/watch?service=fwd', undefined, forwarded), 'FORBIDDEN', 'the watch');
  assert.equal(await sessionHandshake(node.url, bearer(FORWARD)), 403, 'the session');
  // A write token may forward too (nodes whose files have no forward token).
  assert.equal((await call(node.url, 'POST', '/v1/services/fwd/instances/f-1/reports', { ...report, reporter: 'checkout-2' }, { ...bearer(WRITE), 'x-switchboard-forwarded-report': 'n1' })).status, 200);
});

test('the SSE watch needs a read token', async () => {
  assertRefused(await call(node.url, 'GET', '/v1/watch?service=orders', undefined, { accept: 'text/event-stream' }), 'UNAUTHENTICATED', 'watch without a token');
  const sse = await SseReader.open(`${node.url}/v1/watch?service=orders`, bearer(READ));
  try {
    await call(node.url, 'PUT', '/v1/services/orders/instances/o-2', INSTANCE, bearer(WRITE));
    await sse.until(() => sse.events.some((e) => e.event === 'put'), 5_000, 'the put event');
  } finally {
    sse.close();
  }
});

test('the session WebSocket needs a write token: 401 without, 403 with a read token', async () => {
  assert.equal(await sessionHandshake(node.url, {}), 401);
  assert.equal(await sessionHandshake(node.url, bearer('an-unknown-token-0123456789')), 401);
  assert.equal(await sessionHandshake(node.url, bearer(READ)), 403);
  assert.equal(await sessionHandshake(node.url, bearer(WRITE)), 101);
});

test('probes and the dashboard files stay open; /metrics needs a read token and counts the refusals', async () => {
  assert.equal((await call(node.url, 'GET', '/healthz')).status, 200);
  assert.equal((await call(node.url, 'GET', '/readyz')).status, 200);
  const ui = await call(node.url, 'GET', '/ui/');
  assert.equal(ui.status, 503, 'not refused for a token: the dashboard is not built here');
  assert.equal(ui.body.code, 'DASHBOARD_NOT_BUILT');
  assertRefused(await call(node.url, 'GET', '/metrics'), 'UNAUTHENTICATED', '/metrics without a token');
  const metrics = await call(node.url, 'GET', '/metrics', undefined, bearer(READ));
  assert.equal(metrics.status, 200);
  const count = (reason: string): number => Number(new RegExp(`^switchboard_http_auth_refused_total\\{reason="${reason}"\\} (\\d+)`, 'm').exec(metrics.body as string)?.[1]);
  for (const reason of ['missing', 'malformed', 'unknown', 'scope']) assert.ok(count(reason) > 0, `${reason}: ${count(reason)}`);
  assert.ok(!(metrics.body as string).includes(READ), 'no token in the metrics');
});

test('metricsOpen answers /metrics without a token; a node without tokens is open as before', async () => {
  const open = await startNode({ metricsOpen: true });
  const none = await startNode({ tokens: false });
  try {
    assert.equal((await call(open.url, 'GET', '/metrics')).status, 200);
    assertRefused(await call(open.url, 'GET', '/v1/services'), 'UNAUTHENTICATED', 'the API still needs one');
    assert.equal((await call(none.url, 'GET', '/v1/services')).status, 200);
    assert.equal((await call(none.url, 'PUT', '/v1/services/a/instances/a-1', INSTANCE)).status, 200);
    assert.equal((await call(none.url, 'GET', '/metrics')).status, 200);
    assert.equal(await sessionHandshake(none.url, {}), 101);
  } finally {
    await open.close();
    await none.close();
  }
});

test('the agent: a token under 32 characters stops it at start (exit 2, API_TOKEN_TOO_SHORT, a hint naming openssl rand, no token shown); SIGHUP reads the file again', { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sb-tokens-'));
  try {
    const file = join(dir, 'tokens');
    writeFileSync(file, `write ${WRITE}\nread tooshort-secret\n`);
    const r = await run(['agent', '--dev', '--http-addr', '127.0.0.1:0', '--api-tokens-file', file]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /invalid configuration: --api-tokens-file: .*tokens line 2: the token has 15 characters, fewer than 32 \(MIN_TOKEN_LENGTH.*\) \[API_TOKEN_TOO_SHORT\]\n {2}hint: replace it with a long random token, for example the output of: openssl rand -hex 32\n/);
    assert.ok(!r.stderr.includes('tooshort-secret') && !r.stderr.includes(WRITE), r.stderr);
    const missing = await run(['agent', '--dev', '--http-addr', '127.0.0.1:0'], { SWITCHBOARD_API_TOKENS_FILE: join(dir, 'none') });
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /SWITCHBOARD_API_TOKENS_FILE: cannot read the API token file .* \[FILE_UNREADABLE\]/);

    writeFileSync(file, `write ${WRITE}\n`, { mode: 0o644 });
    chmodSync(file, 0o644);
    const agent = await spawnAgent(['--dev', '--api-tokens-file', file]);
    try {
      // Other users may read the file: a warning at start, naming the fix.
      await waitUntil(() => agent.output().includes(`holds a secret and other users may read it (mode 0644): chmod 600 ${file}`), 5_000, 'the warning about the mode');
      assert.equal((await call(agent.url, 'GET', '/v1/services', undefined, bearer(WRITE))).status, 200);
      assert.equal((await call(agent.url, 'GET', '/v1/services', undefined, bearer(READ))).status, 401);
      writeFileSync(file, `read ${READ}\n`);
      agent.child.kill('SIGHUP');
      await waitUntil(async () => (await call(agent.url, 'GET', '/v1/services', undefined, bearer(READ))).status === 200, 5_000, 'the new token accepted');
      assert.equal((await call(agent.url, 'GET', '/v1/services', undefined, bearer(WRITE))).status, 401, 'the old token is gone');
      // A file that became invalid is logged; the tokens in use stay.
      writeFileSync(file, 'read short\n');
      agent.child.kill('SIGHUP');
      await waitUntil(() => agent.output().includes('API tokens not reloaded'), 5_000, 'the refusal logged');
      assert.equal((await call(agent.url, 'GET', '/v1/services', undefined, bearer(READ))).status, 200);
      assert.ok(!agent.output().includes(READ) && !agent.output().includes(WRITE), 'no token in the log');
    } finally {
      agent.child.kill('SIGTERM');
      await agent.exited;
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** One raw HTTP/1.1 request (what fetch would normalise away); resolves with the status and body. */
function rawRequest(url: string, requestLine: string, body = ''): Promise<{ status: number; text: string }> {
  const { port } = new URL(url);
  return new Promise((resolve, reject) => {
    const s = netConnect(Number(port), '127.0.0.1', () => {
      s.write(`${requestLine} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${body ? `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` : ''}\r\n${body}`);
    });
    let text = '';
    s.setTimeout(3_000, () => s.destroy(new Error(`no answer to ${requestLine}`)));
    s.on('data', (d) => (text += d.toString()));
    s.on('error', reject);
    s.on('close', () => resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), text }));
  });
}

test('the scope comes from the route the router matched: a full URL, an encoded path or a # in the request line is refused like the plain path', async () => {
  const tricks: [string, string?][] = [
    ['GET http://x/v1/services'],
    ['GET HTTP://x/v1/services'],
    ['GET https://x/v1/status'],
    ['GET /%76%31/services'],
    ['GET /%761/watch?service=web'],
    ['POST http://x/v1/leases', JSON.stringify({ ttlMs: 30_000 })],
    ['PUT http://evil/v1/services/web/instances/i1', JSON.stringify(INSTANCE)],
    ['PUT /%76%31/services/web/instances/i2', JSON.stringify(INSTANCE)],
    ['GET /metrics#'],
    ['GET /%6detrics'],
    ['GET http://x/metrics'],
  ];
  for (const [line, body] of tricks) {
    const r = await rawRequest(node.url, line, body);
    assert.equal(r.status, 401, `${line}: ${r.text.slice(0, 200)}`);
  }
  // Nothing was written, and what is open stays open through the same forms.
  assert.deepEqual((await call(node.url, 'GET', '/v1/services/web', undefined, bearer(READ))).body.instances ?? [], []);
  assert.equal((await rawRequest(node.url, 'GET http://x/healthz')).status, 200);
});

test('a token taken out of the file ends the watch streams and sessions opened with it, not only later requests', async () => {
  const engine = await StandaloneEngine.open({ nodeId: 't', storage: new MemoryStorage(), limits: DEFAULT_LIMITS, clock: { now: () => performance.now() } });
  const tokens = new ApiTokens(parseTokenFile(FILE).tokens);
  const app = await build({ engine, limits: DEFAULT_LIMITS, version: 'test', dashboardDir: null, tokens, metricsOpen: false });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  try {
    const watch = await fetch(`${url}/v1/watch?service=web`, { headers: bearer(READ) });
    assert.equal(watch.status, 200);
    const reader = watch.body!.getReader();
    await reader.read(); // the stream is open
    const ws = new WebSocket(url.replace('http', 'ws') + '/v1/session', { headers: bearer(WRITE) });
    await new Promise((r, j) => (ws.once('open', r), ws.once('error', j)));
    const wsClosed = new Promise<void>((r) => ws.once('close', () => r()));
    // The read token goes: its stream ends; the session (write token) stays.
    assert.equal(tokens.replace(parseTokenFile(`write ${WRITE}\n`).tokens), 1);
    const ended = await Promise.race([reader.read().then((x) => x.done, () => true), new Promise((r) => setTimeout(() => r('still open'), 3_000))]);
    assert.equal(ended, true, 'the watch opened with the removed token ended');
    assert.equal(ws.readyState, WebSocket.OPEN);
    assertRefused(await call(url, 'GET', '/v1/services', undefined, bearer(READ)), 'UNAUTHENTICATED', 'the removed token');
    // The write token stays in the file but as a read token: the session, which carries
    // writes (requests over the session), ends; a watch opened with it would stay.
    const watch2 = await fetch(`${url}/v1/watch?service=web`, { headers: bearer(WRITE) });
    const reader2 = watch2.body!.getReader();
    await reader2.read();
    assert.equal(tokens.replace(parseTokenFile(`read ${READ}\nread ${WRITE}\n`).tokens), 1);
    await wsClosed;
    const stillOpen = await Promise.race([reader2.read().then((x) => (x.done ? 'ended' : 'open'), () => 'ended'), new Promise((r) => setTimeout(() => r('open'), 500))]);
    assert.equal(stillOpen, 'open', 'a watch needs only read');
    await reader2.cancel();
  } finally {
    await app.shutdown();
    await engine.close();
  }
});

/** The connections the node's HTTP server holds open. */
const connections = (app: SwitchboardApp): Promise<number> => new Promise((resolve, reject) => app.server.getConnections((err, n) => (err ? reject(err) : resolve(n))));

/**
 * Sends one raw request and resolves with the first bytes of the answer; the socket stays
 * as it is (open, unless the server ends it), so that the caller can see who closes it.
 */
function rawAnswer(url: string, request: string): Promise<{ head: string; socket: import('node:net').Socket; closed: Promise<void> }> {
  const { port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = netConnect(Number(port), '127.0.0.1', () => socket.write(request));
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    socket.on('error', () => undefined);
    socket.setTimeout(3_000, () => reject(new Error(`no answer to ${request.split('\r\n')[0]}`)));
    socket.once('data', (d) => {
      socket.setTimeout(0);
      resolve({ head: d.toString(), socket, closed });
    });
  });
}

test('a refused request that asks to upgrade (h2c, a session handshake) has its connection ended after the answer, whichever check refused it', async () => {
  const ws = 'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n';
  const h2c = 'Connection: Upgrade\r\nUpgrade: h2c\r\n';
  const cases: [string, string, number][] = [
    ['no token, h2c', `GET /v1/services HTTP/1.1\r\nHost: x\r\n${h2c}\r\n`, 401],
    ['an unknown token, a session handshake', `GET /v1/session HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer an-unknown-token-0123456789\r\n${ws}\r\n`, 401],
    ['a read token, a session handshake', `GET /v1/session HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${READ}\r\n${ws}\r\n`, 403],
    ['a token, Switchboard-Strict and an unknown parameter, h2c', `GET /v1/services?bogus=1 HTTP/1.1\r\nHost: x\r\nSwitchboard-Strict: true\r\nAuthorization: Bearer ${READ}\r\n${h2c}\r\n`, 400],
    ['a token, no Host, h2c', `GET /v1/services HTTP/1.1\r\nAuthorization: Bearer ${READ}\r\n${h2c}\r\n`, 400],
  ];
  const before = await connections(node.app);
  for (const [what, request, status] of cases) {
    // A client that waits for the server to close: the server ends the connection.
    const kept = await Promise.all(Array.from({ length: 10 }, () => rawAnswer(node.url, request)));
    for (const k of kept) assert.match(k.head, new RegExp(`^HTTP/1\\.1 ${status} `), what);
    await waitUntil(async () => (await connections(node.app)) <= before, 3_000, `${what}: the server ends the connections it answered`);
    // A client that closes as soon as it has the answer (a reconnecting SDK): nothing stays half-open.
    const dropped = await Promise.all(Array.from({ length: 10 }, () => rawAnswer(node.url, request)));
    for (const d of dropped) d.socket.destroy();
    await waitUntil(async () => (await connections(node.app)) <= before, 3_000, `${what}: the server closes the connections its clients closed`);
  }
  // An accepted session still upgrades.
  assert.equal(await sessionHandshake(node.url, bearer(WRITE)), 101);
});

test('the token is checked before anything else about the request: no Host, Switchboard-Strict and unknown parameters are 401 without a token, with no warning', async () => {
  const strict = await call(node.url, 'GET', '/v1/services?bogus=1', undefined, { 'switchboard-strict': 'true' });
  assertRefused(strict, 'UNAUTHENTICATED', 'Switchboard-Strict with an unknown parameter, without a token');
  const lax = await call(node.url, 'GET', '/v1/services?bogus=1');
  assertRefused(lax, 'UNAUTHENTICATED', 'an unknown parameter, without a token');
  assert.equal(lax.headers.get('switchboard-warning'), null, 'a refused request is told nothing else about itself');
  const noHost = await rawAnswer(node.url, 'GET /v1/services HTTP/1.1\r\nConnection: close\r\n\r\n');
  assert.match(noHost.head, /^HTTP\/1\.1 401 /);
  assert.match(noHost.head, /\r\ncontent-type: application\/problem\+json/i);
  // With a token, the request's own faults are answered as before, in problem+json.
  const hosted = await rawAnswer(node.url, `GET /v1/services HTTP/1.1\r\nAuthorization: Bearer ${READ}\r\nConnection: close\r\n\r\n`);
  assert.match(hosted.head, /^HTTP\/1\.1 400 /);
  assert.match(hosted.head, /\r\ncontent-type: application\/problem\+json/i);
  assert.match(hosted.head, /"field":"Host"/);
  const warned = await call(node.url, 'GET', '/v1/services?bogus=1', undefined, bearer(READ));
  assert.equal(warned.status, 200);
  assert.match(warned.headers.get('switchboard-warning') ?? '', /bogus/);
  const refused = await call(node.url, 'GET', '/v1/services?bogus=1', undefined, { ...bearer(READ), 'switchboard-strict': 'true' });
  assert.equal(refused.status, 400);
  for (const s of [noHost.socket, hosted.socket]) s.destroy();
});
