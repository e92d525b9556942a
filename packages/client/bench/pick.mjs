#!/usr/bin/env node
// Benchmark (not a test) of the consumer side, against a real registry process:
//   1. pick() from a live view, per balancer (target: >= 5 million per second, one core);
//   2. time from a provider's register() resolving (in another process) to this process's
//      view seeing the instance (target: p99 < 20 ms on loopback).
// Usage (after `npm run build`): node packages/client/bench/pick.mjs [--instances 10] [--registrations 300]
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { connect } from '../dist/src/index.js';

const args = process.argv.slice(2);
const arg = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : def;
};
const INSTANCES = arg('instances', 10);
const REGISTRATIONS = arg('registrations', 300);
const PICK_MS = arg('pick-ms', 1000);
const AGENT = fileURLToPath(new URL('../../registry/bin/switchboard.js', import.meta.url));
const now = () => performance.timeOrigin + performance.now();

function startAgent() {
  const child = spawn(process.execPath, [AGENT, 'agent', '--dev', '--http-addr', '127.0.0.1:0', '--log-format', 'json'], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const m = /listening on (http:\/\/[^\s"]+)/.exec(out);
      if (m) resolve({ child, url: m[1] });
    });
    child.once('exit', (code) => reject(new Error(`agent exited ${code}`)));
  });
}

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function benchPick(client, url) {
  for (let i = 0; i < INSTANCES; i++) {
    await fetch(`${url}/v1/services/bench/instances/b${i}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ address: '127.0.0.1', port: 20000 + i, weight: 50 + i * 10, zone: i % 2 ? 'eu-1' : 'us-1' }),
    });
  }
  const rows = [];
  for (const balancer of ['round-robin', 'random', 'weighted', 'least-outstanding', 'p2c', 'consistent-hash', 'zone-aware(p2c)']) {
    const view = balancer.startsWith('zone')
      ? client.service('bench', { balancer: 'p2c', preferZone: 'eu-1' })
      : client.service('bench', { balancer });
    await view.ready();
    while (view.instances().length < INSTANCES) await new Promise((r) => setTimeout(r, 10));
    const keys = Array.from({ length: 1024 }, (_, i) => ({ key: `user-${i}` }));
    const hashed = balancer === 'consistent-hash';
    let n = 0;
    let sink = 0;
    // Warm up, then measure in batches of 100k between clock reads.
    for (let i = 0; i < 200_000; i++) sink += view.pick(hashed ? keys[i & 1023] : undefined).port;
    const start = performance.now();
    let elapsed = 0;
    while (elapsed < PICK_MS) {
      if (hashed) for (let i = 0; i < 100_000; i++) sink += view.pick(keys[i & 1023]).port;
      else for (let i = 0; i < 100_000; i++) sink += view.pick().port;
      n += 100_000;
      elapsed = performance.now() - start;
    }
    rows.push({ balancer, 'picks/s (millions)': +(n / elapsed / 1000).toFixed(2), sink: sink % 7 });
  }
  console.log(`\npick() from a live view of ${INSTANCES} instances (one core):`);
  console.table(rows.map(({ sink, ...r }) => r));
}

async function benchVisibility(client, url) {
  const seen = new Map();
  const view = client.service('lat');
  await view.ready();
  view.on('change', (c) => {
    if (c.type === 'added') seen.set(c.instance.id, now());
  });
  const provider = fileURLToPath(new URL('./provider-loop.mjs', import.meta.url));
  const child = spawn(process.execPath, [provider, url, String(REGISTRATIONS)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const resolved = new Map();
  let buf = '';
  child.stdout.on('data', (d) => {
    buf += d;
    const lines = buf.split('\n');
    buf = lines.pop();
    for (const l of lines) {
      const m = /^R (\S+) (\S+)/.exec(l);
      if (m) resolved.set(m[1], Number(m[2]));
    }
  });
  await new Promise((r) => child.once('exit', r));
  await new Promise((r) => setTimeout(r, 200));
  const lat = [];
  for (const [id, t] of resolved) if (seen.has(id)) lat.push(seen.get(id) - t);
  lat.sort((a, b) => a - b);
  const f = (x) => `${x.toFixed(2)} ms`;
  console.log(`\nregister() resolved in a provider process -> visible in this consumer's view (${lat.length}/${resolved.size} seen):`);
  console.table({
    min: f(lat[0]),
    p50: f(percentile(lat, 50)),
    p90: f(percentile(lat, 90)),
    p99: f(percentile(lat, 99)),
    max: f(lat[lat.length - 1]),
    'seen before register() resolved': `${lat.filter((x) => x < 0).length}`,
  });
}

const agent = await startAgent();
const client = await connect({ endpoints: [agent.url] });
try {
  await benchPick(client, agent.url);
  await benchVisibility(client, agent.url);
} finally {
  await client.close();
  agent.child.kill('SIGKILL');
}
