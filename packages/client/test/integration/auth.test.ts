// Goal: against a registry that requires tokens, the SDK sends its token (the `token`
// option or SWITCHBOARD_TOKEN) on every request, the watch stream and the session
// WebSocket, and never to instances; a missing, unknown or read-only token is an
// AuthError at once, not retried: register() rejects, ready() rejects, and the client
// says it once as 'registry-error'.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuthError, connect, RegistryError } from '../../src/index.js';
import { spawnAgent, waitFor, within, type Agent } from '../helpers.js';

const READ = 'sdk-read-token-0123456789abcdef0123';
const WRITE = 'sdk-write-token-0123456789abcdef';
let dir: string;
let agent: Agent;

before(async () => {
  delete process.env.SWITCHBOARD_TOKEN;
  dir = mkdtempSync(join(tmpdir(), 'sb-sdk-auth-'));
  const file = join(dir, 'tokens');
  writeFileSync(file, `read ${READ}\nwrite ${WRITE}\n`);
  agent = await spawnAgent(['--dev', '--api-tokens-file', file]);
});
after(async () => {
  await agent.kill();
  rmSync(dir, { recursive: true, force: true });
});

test('with a write token the SDK registers over the session WebSocket; a read token watches; instances never see the token', async () => {
  const seen: (string | undefined)[] = [];
  const server = createServer((req, res) => {
    seen.push(req.headers.authorization);
    res.end('ok');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  const provider = await connect({ endpoints: [agent.url], token: WRITE });
  const consumer = await connect({ endpoints: [agent.url], token: READ, reportFailures: false });
  try {
    await within(provider.register({ service: 'orders', id: 'o-1', address: '127.0.0.1', port }), 5_000, 'register');
    assert.equal(provider.lease?.transport, 'websocket');
    const view = consumer.service('orders');
    await within(view.ready({ timeoutMs: 5_000 }), 6_000, 'ready');
    assert.deepEqual(view.instances().map((i) => i.id), ['o-1']);
    await provider.register({ service: 'orders', id: 'o-2', address: '127.0.0.1', port });
    await waitFor(() => view.instances().length === 2, 5_000, 'the second instance through the watch stream');
    const res = await view.fetch('/');
    assert.equal(res.status, 200);
    await res.text();
    assert.deepEqual(seen, [undefined], 'the registry token is not sent to instances');
  } finally {
    await provider.close();
    await consumer.close();
    server.close();
  }
});

test('SWITCHBOARD_TOKEN is the default token', async () => {
  process.env.SWITCHBOARD_TOKEN = READ;
  const client = await connect({ endpoints: [agent.url], reportFailures: false });
  try {
    await within(client.service('orders').ready({ timeoutMs: 5_000 }), 6_000, 'ready');
  } finally {
    delete process.env.SWITCHBOARD_TOKEN;
    await client.close();
  }
});

test('without a token, or with an unknown one, register() and ready() reject with AuthError UNAUTHENTICATED at once', async () => {
  for (const token of [undefined, 'an-unknown-token-0123456789']) {
    const client = await connect({ endpoints: [agent.url], reportFailures: false, ...(token ? { token } : {}) });
    const errors: unknown[] = [];
    client.on('registry-error', (e) => errors.push(e));
    try {
      const started = performance.now();
      const reg = await within(client.register({ service: 'orders', port: 1 }).then(() => null, (e: unknown) => e), 3_000, 'register');
      assert.ok(reg instanceof AuthError, `register: ${String(reg)}`);
      assert.ok(reg instanceof RegistryError);
      assert.equal(reg.code, 'UNAUTHENTICATED');
      assert.equal(reg.status, 401);
      assert.match(reg.message, /token/);
      const ready = await within(client.service('payments').ready({ timeoutMs: 10_000 }).then(() => null, (e: unknown) => e), 3_000, 'ready');
      assert.ok(ready instanceof AuthError, `ready: ${String(ready)}`);
      assert.equal(ready.code, 'UNAUTHENTICATED');
      assert.ok(performance.now() - started < 2_000, 'no retries with backoff');
      // Not retried: no more refusals reported after a while.
      const count = errors.length;
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(errors.length, count, 'the refusal is reported, not retried');
      assert.ok(errors.every((e) => e instanceof AuthError));
      const again = await within(client.register({ service: 'orders', port: 2 }).then(() => null, (e: unknown) => e), 3_000, 'register again');
      assert.ok(again instanceof AuthError, 'later registrations get it too');
    } finally {
      await client.close();
    }
  }
});

test('with a read token, register() rejects with AuthError FORBIDDEN', async () => {
  const client = await connect({ endpoints: [agent.url], token: READ, reportFailures: false });
  try {
    const err = await within(client.register({ service: 'orders', port: 1 }).then(() => null, (e: unknown) => e), 3_000, 'register');
    assert.ok(err instanceof AuthError, String(err));
    assert.equal(err.code, 'FORBIDDEN');
    assert.equal(err.status, 403);
  } finally {
    await client.close();
  }
});

test('a token that cannot be a header value is refused at once', async () => {
  await assert.rejects(connect({ endpoints: [agent.url], token: 'two words' }), /visible ASCII/);
  await assert.rejects(connect({ endpoints: [agent.url], token: '' }), /visible ASCII/);
});
