// A provider process for the detection tests: it speaks the session protocol of
// packages/protocol/src/session.ts with the `ws` package (no SDK), registers one instance
// under its session's lease and sends keep-alives every --every ms (aligned to the wall
// clock with --align, so that several providers renew at the same instants). It prints
// `ready <leaseId>` once registered and runs until killed; it exits 3 when its lease ends.
// Usage: node provider.js URL SERVICE ID TTL_MS EVERY_MS [--align] [--zone Z]
import { WebSocket } from 'ws';
import type { SessionServerMessage } from '@switchboard/protocol';

const [url, service, id, ttlText, everyText, ...flags] = process.argv.slice(2) as [string, string, string, string, string, ...string[]];
const ttlMs = Number(ttlText);
const everyMs = Number(everyText);
const align = flags.includes('--align');
const zoneAt = flags.indexOf('--zone');
const zone = zoneAt >= 0 ? flags[zoneAt + 1] : undefined;

const ws = new WebSocket(url.replace(/^http/, 'ws') + '/v1/session');
let seq = 0;

function scheduleKeepAlive(): void {
  const delay = align ? everyMs - (Date.now() % everyMs) : everyMs;
  setTimeout(() => {
    if (ws.readyState === ws.OPEN) ws.send(JSON.stringify({ type: 'keepalive', seq: ++seq }));
    scheduleKeepAlive();
  }, delay);
}

ws.on('open', () => ws.send(JSON.stringify({ type: 'open', ttlMs })));
ws.on('message', async (data) => {
  const msg = JSON.parse(data.toString()) as SessionServerMessage;
  if (msg.type === 'lease') {
    const res = await fetch(`${url}/v1/services/${service}/instances/${id}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ address: '127.0.0.1', port: 9000, leaseId: msg.leaseId, ...(zone ? { zone } : {}) }),
    });
    if (res.status !== 200) {
      process.stderr.write(`registration failed: ${res.status} ${await res.text()}\n`);
      process.exit(2);
    }
    process.stdout.write(`ready ${msg.leaseId}\n`);
    scheduleKeepAlive();
  } else if (msg.type === 'ended') {
    process.stdout.write(`ended ${msg.reason}\n`);
    process.exit(3);
  } else if (msg.type === 'error') {
    process.stderr.write(`session error: ${JSON.stringify(msg.problem)}\n`);
  }
});
ws.on('close', () => process.exit(4));
ws.on('error', (err) => {
  process.stderr.write(`session failed: ${err.message}\n`);
  process.exit(5);
});
