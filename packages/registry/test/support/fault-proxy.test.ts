// Goal: the fault proxy forwards, cuts (refusing or swallowing new connections), stalls
// without closing, delays in order, and restores, on real sockets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { FaultProxy } from './fault-proxy.js';
import { waitUntil } from './wait.js';

async function echoServer(): Promise<{ server: Server; port: number }> {
  const server = createServer((s) => s.pipe(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { server, port: (server.address() as { port: number }).port };
}

function client(port: number): Promise<{ s: Socket; got: () => string; closed: Promise<string> }> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    let data = '';
    s.on('data', (d) => (data += d.toString()));
    const closed = new Promise<string>((r) => {
      s.on('error', (e) => r((e as NodeJS.ErrnoException).code ?? 'error'));
      s.on('close', () => r('close'));
    });
    s.once('connect', () => resolve({ s, got: () => data, closed }));
    s.once('error', reject);
  });
}

test('forward, stall, restore, delay, cut and refuse', async () => {
  const echo = await echoServer();
  const proxy = await FaultProxy.start({ host: '127.0.0.1', port: echo.port });
  try {
    const c = await client(proxy.port);
    c.s.write('hello');
    await waitUntil(() => c.got() === 'hello', 2_000, 'echo through the proxy');

    proxy.stall();
    c.s.write('-stalled');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(c.got(), 'hello', 'nothing passes while stalled');
    assert.equal(proxy.connections, 1, 'the connection stays open');
    proxy.restore();
    await waitUntil(() => c.got() === 'hello-stalled', 2_000, 'held bytes flow after restore');

    proxy.delay(200);
    const t0 = performance.now();
    c.s.write('1');
    c.s.write('2');
    await waitUntil(() => c.got().endsWith('12'), 3_000, 'delayed bytes');
    assert.ok(performance.now() - t0 >= 190, 'delayed');
    proxy.delay(0);

    proxy.cut('refuse');
    assert.equal(await c.closed, 'close', 'open connections are dropped');
    const refused = connect(proxy.port, '127.0.0.1');
    const how = await new Promise<string>((r) => {
      refused.on('error', (e) => r((e as NodeJS.ErrnoException).code ?? 'error'));
      refused.on('close', () => r('close'));
    });
    assert.ok(how === 'ECONNRESET' || how === 'close', `refused: ${how}`);

    proxy.cut('blackhole');
    const swallowed = await client(proxy.port);
    swallowed.s.write('anyone?');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(swallowed.got(), '', 'a swallowed connection never answers');
    proxy.restore();
    assert.equal(await swallowed.closed, 'close', 'restore drops swallowed connections');

    const again = await client(proxy.port);
    again.s.write('back');
    await waitUntil(() => again.got() === 'back', 2_000, 'forwarding again');
    again.s.destroy();
  } finally {
    await proxy.close();
    echo.server.close();
  }
});
