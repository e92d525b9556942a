/**
 * The operator commands end to end: a real agent in this process, the real `switchboard`
 * command as child processes. Every child is bounded in time and killed by its PID.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer as createHttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { DEFAULT_LIMITS, validateInstanceInput, type Instance, type NodeStatus, type ServiceAnswer, type WatchEvent } from '@switchboard/protocol';
import { Alerts } from '../../src/alerts/index.js';
import { build, type SwitchboardApp } from '../../src/api/app.js';
import { startAgent, type RunningAgent } from '../../src/cli/agent.js';
import { resolveConfig } from '../../src/cli/config.js';
import { ApEngine } from '../../src/engines/ap/engine.js';
import { MemoryStorage } from '../../src/storage/storage.js';
import { LoopbackNet, eventually, startApNode } from '../ap/loopback.js';
import { VERSION } from '../../src/version.js';
import { waitUntil } from '../helpers.js';
import { FaultProxy } from '../support/fault-proxy.js';

const BIN = fileURLToPath(new URL('../../../bin/switchboard.js', import.meta.url));
const quiet = () => pino({ level: 'warn' }, new Writable({ write: (_c, _e, cb) => cb() }));
const config = (httpAddr = '127.0.0.1:0') => resolveConfig([{ name: 'flag', values: { dev: true, httpAddr, logLevel: 'warn' } }]);

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

const live = new Set<ChildProcess>();

function env(addr: string): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env, SWITCHBOARD_ADDR: addr, NO_COLOR: '1' };
  delete e.FORCE_COLOR;
  return e;
}

/** Runs one command to its end; killed (and failed) after `timeoutMs`. */
function run(addr: string, args: string[], timeoutMs = 30_000): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: env(addr), stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
      reject(new Error(`switchboard ${args.join(' ')} did not finish within ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      live.delete(child);
      resolve({ code, stdout, stderr });
    });
  });
}

/** A long-running command (watch, register --ttl) with its output so far. */
class Running {
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  readonly done: Promise<Result>;

  constructor(addr: string, args: string[]) {
    this.child = spawn(process.execPath, [BIN, ...args], { env: env(addr), stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(this.child);
    this.child.stdout!.on('data', (d: Buffer) => (this.stdout += d.toString()));
    this.child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.done = new Promise((resolve) =>
      this.child.on('close', (code) => {
        live.delete(this.child);
        resolve({ code, stdout: this.stdout, stderr: this.stderr });
      }),
    );
  }

  async until(what: string, pred: () => boolean, timeoutMs = 10_000): Promise<void> {
    const output = () => `stdout: ${this.stdout}\nstderr: ${this.stderr}`;
    await waitUntil(
      () => {
        if (pred()) return true;
        if (this.child.exitCode !== null) throw new Error(`exited (${this.child.exitCode}) while waiting for ${what}\n${output()}`);
        return false;
      },
      timeoutMs,
      what,
      { intervalMs: 25, detail: output },
    );
  }

  /** Sends SIGINT and waits for the exit; SIGKILL after `timeoutMs`. */
  async interrupt(timeoutMs = 10_000): Promise<Result> {
    process.kill(this.child.pid as number, 'SIGINT');
    const timer = setTimeout(() => process.kill(this.child.pid as number, 'SIGKILL'), timeoutMs);
    const r = await this.done;
    clearTimeout(timer);
    return r;
  }

  lines(): string[] {
    return this.stdout.split('\n').filter((l) => l !== '');
  }
}

async function api<T>(base: string, method: string, path: string, body?: unknown): Promise<T> {
  const res = await fetch(base + path, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(5_000),
  }).catch((err: Error) => {
    throw new Error(`${method} ${path}: ${err.message} (${String((err.cause as Error | undefined)?.message ?? '')})`);
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return JSON.parse(text) as T;
}

async function waitFor(what: string, pred: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  await waitUntil(pred, timeoutMs, what, { intervalMs: 25 });
}

const watchers = async (base: string): Promise<number> => (await api<NodeStatus>(base, 'GET', '/v1/status')).watchers;
const reg = (base: string, service: string, id: string, body: Record<string, unknown>) => api<{ revision: number }>(base, 'PUT', `/v1/services/${service}/instances/${id}`, body);

after(() => {
  for (const c of live) if (c.pid !== undefined && c.exitCode === null) process.kill(c.pid, 'SIGKILL');
});

describe('switchboard operator commands', { timeout: 300_000 }, () => {
  let agent: RunningAgent;
  let url: string;

  before(async () => {
    agent = await startAgent(config(), quiet());
    url = agent.url;
  });
  after(async () => {
    await agent.stop();
  });

  test('register a persistent instance, list it, deregister it', { timeout: 60_000 }, async () => {
    const r = await run(url, ['register', 'orders', 'orders-1', '--address', '10.0.0.5', '--port', '8080', '--zone', 'eu-1', '--version', '1.4.2', '--tag', 'primary', '--meta', 'build=42', '--weight', '50', '--protocol', 'grpc']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^registered orders\/orders-1 \(10\.0\.0\.5:8080, persistent\): revision \d+\n$/);

    const j = await run(url, ['instances', 'orders', '--json']);
    assert.equal(j.code, 0, j.stderr);
    const answer = JSON.parse(j.stdout) as ServiceAnswer;
    assert.equal(answer.service, 'orders');
    const i = answer.instances[0] as Instance;
    assert.deepEqual(
      { id: i.id, address: i.address, port: i.port, zone: i.zone, version: i.version, tags: i.tags, metadata: i.metadata, weight: i.weight, protocol: i.protocol, leaseId: i.leaseId },
      { id: 'orders-1', address: '10.0.0.5', port: 8080, zone: 'eu-1', version: '1.4.2', tags: ['primary'], metadata: { build: '42' }, weight: 50, protocol: 'grpc', leaseId: null },
    );

    const t = await run(url, ['instances', 'orders']);
    assert.equal(t.code, 0, t.stderr);
    const [header, row] = t.stdout.trimEnd().split('\n');
    assert.match(header as string, /^ID\s+ADDRESS\s+PORT\s+ZONE\s+VERSION\s+STATUS\s+HEALTH\s+LEASE\s+TAGS$/);
    assert.deepEqual((row as string).split(/\s+/), ['orders-1', '10.0.0.5', '8080', 'eu-1', '1.4.2', 'up', 'passing', 'persistent', 'primary']);
    assert.equal((header as string).indexOf('ADDRESS'), (row as string).indexOf('10.0.0.5'), 'columns are aligned');
    assert.doesNotMatch(t.stdout, /\x1b\[/, 'no color when stdout is not a terminal');

    const d = await run(url, ['deregister', 'orders', 'orders-1']);
    assert.equal(d.code, 0, d.stderr);
    assert.match(d.stdout, /^deregistered orders\/orders-1: revision \d+\n$/);
    const dj = await run(url, ['deregister', 'orders', 'orders-1', '--json']);
    assert.equal(dj.code, 1);
    assert.match(dj.stderr, /INSTANCE_NOT_FOUND/);
  });

  test('output cut short by its reader (| head) ends quietly; credentials in an address are not printed back', { timeout: 60_000 }, async () => {
    await api(url, 'POST', '/v1/instances/batch', { instances: Array.from({ length: 1_000 }, (_, i) => ({ service: 'wide', id: `w-${i}-${'x'.repeat(60)}`, address: '10.0.0.9', port: 1000 + i })) });
    // The reader takes the first chunk and goes away, as `| head -1` does.
    const child = spawn(process.execPath, [BIN, 'instances', 'wide'], { env: env(url), stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(child);
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout!.once('data', () => child.stdout!.destroy());
    const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
    live.delete(child);
    assert.equal(code, 0, stderr);
    assert.doesNotMatch(stderr, /EPIPE|Error/);

    const secret = await run('http://admin:s3cret@127.0.0.1:7700/?token=abc', ['status']);
    assert.equal(secret.code, 2);
    assert.doesNotMatch(secret.stderr, /s3cret|admin|abc/);
    assert.match(secret.stderr, /\*\*\*@127\.0\.0\.1:7700/);
  });

  test('register with --lease-id binds the instance to the lease', { timeout: 60_000 }, async () => {
    const lease = await api<{ leaseId: string }>(url, 'POST', '/v1/leases', { ttlMs: 60_000 });
    const r = await run(url, ['register', 'billing', 'billing-1', '--address', 'billing.internal', '--port', '9000', '--lease-id', lease.leaseId, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const rev = JSON.parse(r.stdout) as { revision: number };
    assert.equal(typeof rev.revision, 'number');
    const inst = await api<Instance>(url, 'GET', '/v1/services/billing/instances/billing-1');
    assert.equal(inst.leaseId, lease.leaseId);
    const t = await run(url, ['instances', 'billing']);
    assert.match(t.stdout, new RegExp(`billing-1\\s+billing\\.internal\\s+9000\\s+-\\s+-\\s+up\\s+passing\\s+${lease.leaseId}\\s+-`));
    await api(url, 'DELETE', `/v1/leases/${lease.leaseId}`);
  });

  test('instances filters: --healthy, --zone, --tag (repeatable), --version', { timeout: 60_000 }, async () => {
    await reg(url, 'cart', 'c1', { address: '10.1.0.1', port: 80, zone: 'a', version: '1.2.0', tags: ['x', 'y'] });
    await reg(url, 'cart', 'c2', { address: '10.1.0.2', port: 80, zone: 'b', version: '1.3.0', tags: ['x'] });
    await reg(url, 'cart', 'c3', { address: '10.1.0.3', port: 80, zone: 'a', version: '2.0.0', tags: ['y'] });
    const st = await run(url, ['set-status', 'cart', 'c3', 'draining']);
    assert.equal(st.code, 0, st.stderr);
    assert.match(st.stdout, /^cart\/c3 is now draining: revision \d+\n$/);
    const ids = async (...filters: string[]): Promise<string[]> => {
      const r = await run(url, ['instances', 'cart', '--json', ...filters]);
      assert.equal(r.code, 0, r.stderr);
      return (JSON.parse(r.stdout) as ServiceAnswer).instances.map((i) => i.id).sort();
    };
    assert.deepEqual(await ids(), ['c1', 'c2', 'c3']);
    assert.deepEqual(await ids('--healthy'), ['c1', 'c2']);
    assert.deepEqual(await ids('--zone', 'a'), ['c1', 'c3']);
    assert.deepEqual(await ids('--tag', 'x'), ['c1', 'c2']);
    assert.deepEqual(await ids('--tag', 'x', '--tag', 'y'), ['c1']);
    assert.deepEqual(await ids('--version', '^1.3.0'), ['c2']);
    assert.deepEqual(await ids('--version', '>=1.3.0', '--zone', 'a'), ['c3']);
    // --fields: the agent's projection; the table has ID and those columns only.
    const pj = await run(url, ['instances', 'cart', '--healthy', '--fields', 'port,address,tags', '--json']);
    assert.equal(pj.code, 0, pj.stderr);
    assert.deepEqual((JSON.parse(pj.stdout) as ServiceAnswer).instances, [
      { id: 'c1', address: '10.1.0.1', port: 80, tags: ['x', 'y'] },
      { id: 'c2', address: '10.1.0.2', port: 80, tags: ['x'] },
    ]);
    const pt = await run(url, ['instances', 'cart', '--fields', 'address,leaseId,metadata']);
    assert.equal(pt.code, 0, pt.stderr);
    const lines = pt.stdout.trimEnd().split('\n');
    assert.match(lines[0] as string, /^ID\s+ADDRESS\s+METADATA\s+LEASE_ID$/);
    assert.deepEqual((lines[1] as string).split(/\s+/), ['c1', '10.1.0.1', '-', '-']);
    // What a registrant wrote cannot reach the terminal as control characters.
    await reg(url, 'esc', 'e1', { address: '10.1.0.9', port: 80, metadata: { note: 'a\u001b]52;c;Zm9v\u0007b\nc\u009bd' } });
    const esc = await run(url, ['instances', 'esc', '--fields', 'metadata']);
    assert.equal(esc.code, 0, esc.stderr);
    assert.doesNotMatch(esc.stdout, /[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/, 'no control character but the line ends');
    assert.equal(esc.stdout.trimEnd().split('\n').length, 2, 'one line per instance');
    assert.match(esc.stdout, /note=a\\u001b\]52;c;Zm9v\\u0007b\\u000ac\\u009bd/);
    const bad = await run(url, ['instances', 'cart', '--fields', 'adress']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /INVALID_ARGUMENT/);
    assert.match(bad.stderr, /address/, 'the agent\'s hint names the field meant');
    const none = await run(url, ['instances', 'cart', '--zone', 'zz']);
    assert.equal(none.code, 0);
    assert.equal(none.stdout, '');
    assert.match(none.stderr, /no instances of cart match the filters/);
    // the status alias of the brief works too
    const alias = await run(url, ['status-set', 'cart', 'c3', 'up', '--json']);
    assert.equal(alias.code, 0, alias.stderr);
    assert.equal(typeof (JSON.parse(alias.stdout) as { revision: number }).revision, 'number');
  });

  test('pick prints the host:port the agent picks (the pick, then fallbacks); none to pick exits 1 with NO_INSTANCE', { timeout: 60_000 }, async () => {
    await reg(url, 'pay', 'p1', { address: '10.2.0.1', port: 81, zone: 'a' });
    await reg(url, 'pay', 'p2', { address: 'fd00::2', port: 82, zone: 'b', protocol: 'https' });
    const one = await run(url, ['pick', 'pay', '--zone', 'b']);
    assert.equal(one.code, 0, one.stderr);
    assert.equal(one.stdout, '[fd00::2]:82\n');
    const urls = await run(url, ['pick', 'pay', '--count', '3', '--url', '--exclude', 'p2']);
    assert.equal(urls.code, 0, urls.stderr);
    assert.equal(urls.stdout, 'http://10.2.0.1:81\n');
    const both = await run(url, ['pick', 'pay', '--count', '2', '--strategy', 'consistent-hash', '--key', 'user-7', '--json']);
    assert.equal(both.code, 0, both.stderr);
    const answer = JSON.parse(both.stdout) as { strategy: string; instances: Instance[] };
    assert.equal(answer.strategy, 'consistent-hash');
    assert.deepEqual(answer.instances.map((i) => i.id).sort(), ['p1', 'p2']);
    const none = await run(url, ['pick', 'pay', '--tag', 'nope']);
    assert.equal(none.code, 1);
    assert.equal(none.stdout, '');
    assert.match(none.stderr, /NO_INSTANCE/);
    const usage = await run(url, ['pick', 'pay', '--strategy', 'p2c']);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /round-robin/);
  });

  test('services prints an aligned table NAME INSTANCES PASSING', { timeout: 60_000 }, async () => {
    await reg(url, 'search', 's1', { address: '10.2.0.1', port: 80 });
    await reg(url, 'search', 's2', { address: '10.2.0.2', port: 80 });
    await api(url, 'PUT', '/v1/services/search/instances/s2/status', { status: 'out_of_service' });
    const r = await run(url, ['services']);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trimEnd().split('\n');
    assert.match(lines[0] as string, /^NAME\s+INSTANCES\s+PASSING$/);
    const search = lines.find((l) => l.startsWith('search '));
    assert.deepEqual(search?.split(/\s+/), ['search', '2', '1']);
    for (const l of lines.slice(1)) assert.equal(l.split(/\s+/)[1], l.slice((lines[0] as string).indexOf('INSTANCES')).split(/\s+/)[0], 'columns are aligned');
    const j = await run(url, ['services', '--json']);
    const list = JSON.parse(j.stdout) as { revision: number; services: { name: string; instances: number; passing: number }[] };
    assert.deepEqual(list.services.find((s) => s.name === 'search'), { name: 'search', namespace: 'default', instances: 2, passing: 1 });
  });

  test('status prints the node as key/value lines; --json the API answer', { timeout: 60_000 }, async () => {
    const r = await run(url, ['status']);
    assert.equal(r.code, 0, r.stderr);
    const status = await api<NodeStatus>(url, 'GET', '/v1/status');
    assert.match(r.stdout, new RegExp(`^epoch\\s+${status.epoch}$`, 'm'));
    assert.match(r.stdout, /^mode\s+standalone$/m);
    assert.match(r.stdout, /^revision\s+\d+$/m);
    assert.match(r.stdout, /^self-preservation\s+off$/m);
    assert.match(r.stdout, /^checks\s+\d+ active, \d+ running, \d+ queued \(at most 256 at once\), \d+ probes denied by the check networks$/m);
    const j = await run(url, ['status', '--json']);
    assert.equal((JSON.parse(j.stdout) as NodeStatus).epoch, status.epoch);
  });

  test('an error answer exits 1 with code, detail and hint on stderr', { timeout: 60_000 }, async () => {
    const r = await run(url, ['deregister', 'nothing', 'here-1']);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /INSTANCE_NOT_FOUND/);
    assert.match(r.stderr, /here-1/);
    assert.match(r.stderr, /hint: \S/);
    const s = await run(url, ['set-status', 'nothing', 'here-1', 'draining']);
    assert.equal(s.code, 1);
    assert.match(s.stderr, /INSTANCE_NOT_FOUND[\s\S]*hint:/);
    const l = await run(url, ['register', 'nothing', 'n-1', '--address', '10.0.0.1', '--port', '80', '--lease-id', 'no-such-lease']);
    assert.equal(l.code, 1);
    assert.match(l.stderr, /LEASE_NOT_FOUND[\s\S]*hint:/);
     // A standalone agent has no cluster members to remove.
    const c = await run(url, ['cluster', 'remove', 'sb-3']);
    assert.equal(c.code, 1);
    assert.match(c.stderr, /UNSUPPORTED_MODE[\s\S]*standalone mode[\s\S]*hint:/);
  });

  test('an unreachable agent exits 1 and says so', { timeout: 60_000 }, async () => {
    const r = await run('http://127.0.0.1:1', ['services']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot reach the agent at http:\/\/127\.0\.0\.1:1/);
  });

  test('bad usage exits 2 with a message naming the argument', { timeout: 120_000 }, async () => {
    const cases: [string[], RegExp][] = [
      [['register', 'Bad_Name', 'i-1', '--address', '10.0.0.1', '--port', '80'], /argument 'service'.*not a lowercase DNS label/],
      [['register', 'web', 'bad id', '--address', '10.0.0.1', '--port', '80'], /argument 'id'.*instance id/],
      [['register', 'web', 'i-1', '--address', '10.0.0.1', '--port', '70000'], /'--port <port>'.*1 to 65535/],
      [['register', 'web', 'i-1', '--address', '10.0.0.1', '--port', 'http'], /'--port <port>'/],
      [['register', 'web', 'i-1', '--address', '10.0.0.1'], /required option '--port <port>'/],
      [['register', 'web', 'i-1', '--address', 'not an address', '--port', '80'], /'--address <host>'/],
      [['register', 'web', 'i-1', '--address', '10.0.0.1', '--port', '80', '--version', 'v1'], /'--version <version>'.*semver/],
      [['register', 'web', 'i-1', '--address', '10.0.0.1', '--port', '80', '--meta', 'novalue'], /'--meta <key=value>'/],
      [['register', 'web', 'i-1', '--address', '10.0.0.1', '--port', '80', '--protocol', 'udp'], /'--protocol <protocol>'.*http, https, grpc, tcp/],
      [['register', 'web', 'i-1', '--address', '10.0.0.1', '--port', '80', '--ttl', '10s', '--lease-id', 'l-1'], /--ttl.*cannot be used with.*--lease-id/],
      [['register', 'web', 'i-1', '--address', '10.0.0.1', '--port', '80', '--ttl', 'soon'], /'--ttl <duration>'/],
      [['instances', 'web', '--version', 'not a range!'], /'--version <range>'.*range/],
      [['instances', 'web', '--zone', 'EU'], /'--zone <zone>'/],
      [['instances', 'web', '--frobnicate'], /unknown option '--frobnicate'/],
      [['instances'], /missing required argument 'service'/],
      [['set-status', 'web', 'i-1', 'sleeping'], /argument 'status'.*up, draining, out_of_service/],
      [['watch', '--from-revision', '-3'], /'--from-revision <n>'/],
      [['services', '--namespace', 'Not_OK'], /'--namespace <ns>'/],
      [['services', '--addr', 'ftp://x'], /invalid --addr: .*http/],
      [['cluster', 'remove', 'a b'], /argument 'id'.*node id/],
      [['cluster', 'remove'], /missing required argument 'id'/],
      [['register', 'web', 'i-1', '--address', '10.0.0.1', '--port', '80', '--check', 'smtp'], /'--check <spec>'.*check type "smtp" is not one of http, tcp, grpc, ttl; write --check TYPE\[:TARGET\]/],
      [['register', 'web', 'i-1', '--address', '10.0.0.1', '--port', '80', '--check', 'http,frequency=5s'], /"frequency" is not a check field \(known: id, interval/],
      [['register', 'web', 'i-1', '--address', '10.0.0.1', '--port', '80', '--check', 'tcp,id=a', '--check', 'ttl,id=a'], /two checks share the id a/],
      [['register', 'web', 'i-1', '--address', '10.0.0.1', '--port', '80', '--check', 'ttl:10.0.0.1:80'], /a ttl check has no target/],
      [['check', 'pass', 'web', 'i-1', 'bad id'], /argument 'checkId'.*check id "bad id" is not valid/],
      [['check', 'sleep', 'web', 'i-1', 'beat'], /unknown command 'sleep'/],
      [['lease', 'grant'], /required option '--ttl <duration>'/],
      [['lease', 'grant', '--ttl', 'soon'], /'--ttl <duration>'/],
      [['lease', 'keepalive', 'x y'], /argument 'leaseId'.*lease id "x y" is not valid/],
    ];
    // A few at a time: each is a whole node process.
    for (let i = 0; i < cases.length; i += 3) {
      await Promise.all(
        cases.slice(i, i + 3).map(async ([args, message]) => {
          const r = await run(url, args);
          assert.equal(r.code, 2, `${args.join(' ')} exits 2\n${r.stderr}`);
          assert.match(r.stderr, message, args.join(' '));
          const path = ['cluster', 'check', 'lease'].includes(args[0] as string) && args[1] !== 'sleep' ? args.slice(0, 2).join(' ') : args[0];
          assert.ok(r.stderr.includes(`(run switchboard ${path} --help for usage)`), `the usage hint names the whole command\n${r.stderr}`);
          assert.equal(r.stdout, '');
        }),
      );
    }
    // Every command's usage hint names it in full, whatever its depth.
    for (const [args, path] of [
      [['cluster', 'frob'], 'cluster'],
      [['agent', '--frobnicate'], 'agent'],
      [['storage', 'inspect', '--frobnicate'], 'storage inspect'],
      [['frobnicate'], ''],
    ] as const) {
      const r = await run(url, [...args]);
      assert.equal(r.code, 2, args.join(' '));
      assert.ok(r.stderr.includes(`(run switchboard ${path}${path ? ' ' : ''}--help for usage)`), `${args.join(' ')}\n${r.stderr}`);
    }
    const env = await run('localhost:notaport', ['services']);
    assert.equal(env.code, 2);
    assert.match(env.stderr, /invalid SWITCHBOARD_ADDR/);
  });

  // Goal: a target's own commas stay in it; the fields start at the first KEY=VALUE.
  test('register --check: a target may hold commas (http:/hc?tags=a,b,interval=200ms)', { timeout: 60_000 }, async () => {
    const paths: string[] = [];
    const server = createHttpServer((req, res) => {
      paths.push(req.url ?? '');
      res.end('ok');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const port = String((server.address() as AddressInfo).port);
      const r = await run(url, ['register', 'commas', 'c-1', '--address', '127.0.0.1', '--port', port, '--check', 'http:/hc?tags=a,b,interval=200ms,timeout=1s']);
      assert.equal(r.code, 0, r.stderr);
      await waitFor('the probe', async () => paths.length > 0);
      assert.equal(paths[0], '/hc?tags=a,b');
      const bad = await run(url, ['register', 'commas', 'c-2', '--address', '127.0.0.1', '--port', port, '--check', 'http:/hc,interval=200ms,b']);
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /"b" is not KEY=VALUE/);
    } finally {
      server.close();
    }
  });

  // Goal: checks are declared from the command line and refused in the API's own words;
  // a ttl check is reported into with `check pass|warn|fail`, as with PUT .../checks/{id}.
  test('register --check declares checks; check pass|warn|fail reports into a ttl check', { timeout: 60_000 }, async () => {
    const port = new URL(url).port;
    const r = await run(url, ['register', 'probe', 'p-1', '--address', '127.0.0.1', '--port', port, '--check', 'http:/v1/status,interval=200ms', '--check', 'ttl=30s,id=beat', '--check', 'tcp,interval=200ms,criticalThreshold=3']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^registered probe\/p-1 \(127\.0\.0\.1:\d+, persistent, checks http-0, beat, tcp-2\): revision \d+\n$/);
    const inst = async () => api<Instance>(url, 'GET', '/v1/services/probe/instances/p-1');
    assert.deepEqual((await inst()).checks.map((c) => [c.id, c.type]), [['http-0', 'http'], ['beat', 'ttl'], ['tcp-2', 'tcp']]);
    // The path went onto the instance's own address: the agent's /v1/status answers 200.
    await waitFor('the http check passing', async () => (await inst()).checks.find((c) => c.id === 'http-0')?.status === 'passing');
    assert.match((await inst()).checks.find((c) => c.id === 'http-0')?.output ?? '', /200/);
    // A URL alone is an http check of that URL, not a path put on the instance's address.
    const byUrl = await run(url, ['register', 'probe', 'p-3', '--address', '10.0.0.9', '--port', '9', '--check', `http://127.0.0.1:${port}/v1/status,interval=200ms`]);
    assert.equal(byUrl.code, 0, byUrl.stderr);
    // The instance's own address (10.0.0.9:9) answers nothing here: passing means the URL was probed.
    await waitFor('the check of the URL passing', async () => (await api<Instance>(url, 'GET', '/v1/services/probe/instances/p-3')).checks[0]?.status === 'passing');

    const pass = await run(url, ['check', 'pass', 'probe', 'p-1', 'beat', '--output', 'queue empty']);
    assert.equal(pass.code, 0, pass.stderr);
    assert.match(pass.stdout, /^check beat of probe\/p-1 reported passing: revision \d+\n$/);
    assert.deepEqual((({ status, output }) => ({ status, output }))((await inst()).checks.find((c) => c.id === 'beat')!), { status: 'passing', output: 'queue empty' });
    const warn = await run(url, ['check', 'warn', 'probe', 'p-1', 'beat', '--json']);
    assert.equal(warn.code, 0, warn.stderr);
    assert.equal(typeof (JSON.parse(warn.stdout) as { revision: number }).revision, 'number');
    assert.equal((await inst()).checks.find((c) => c.id === 'beat')?.status, 'warning');
    const fail = await run(url, ['check', 'fail', 'probe', 'p-1', 'beat']);
    assert.equal(fail.code, 0, fail.stderr);
    assert.equal((await inst()).health, 'critical');

    const notTtl = await run(url, ['check', 'pass', 'probe', 'p-1', 'http-0']);
    assert.equal(notTtl.code, 1);
    assert.match(notTtl.stderr, /INVALID_ARGUMENT \(HTTP 400\): check http-0 is a http check; only ttl checks take reports[\s\S]*hint:/);
    const missing = await run(url, ['check', 'pass', 'probe', 'p-1', 'nope']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /CHECK_NOT_FOUND/);

    // A declaration the API refuses is refused before sending, in the API's words.
    const bad = { type: 'http', interval: '1ms' };
    const answer = await fetch(`${url}/v1/services/probe/instances/p-2`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ address: '10.0.0.1', port: 80, checks: [bad] }) });
    const problem = (await answer.json()) as { detail: string; hint: string };
    const cli = await run(url, ['register', 'probe', 'p-2', '--address', '10.0.0.1', '--port', '80', '--check', 'http,interval=1ms']);
    assert.equal(cli.code, 2);
    assert.ok(cli.stderr.includes(`${problem.detail}; ${problem.hint}.`), `${cli.stderr}\nvs the API: ${JSON.stringify(problem)}`);
    await api(url, 'DELETE', '/v1/services/probe/instances/p-1');
  });

  test('lease grant, keepalive and revoke: a lease by hand for register --lease-id', { timeout: 60_000 }, async () => {
    const g = await run(url, ['lease', 'grant', '--ttl', '20s']);
    assert.equal(g.code, 0, g.stderr);
    const leaseId = /^lease (\S+) granted \(ttl 20s\)\n$/.exec(g.stdout)?.[1] as string;
    assert.ok(leaseId, g.stdout);
    const j = await run(url, ['lease', 'grant', '--ttl', '10s', '--json']);
    assert.deepEqual(Object.keys(JSON.parse(j.stdout) as object).sort(), ['leaseId', 'ttlMs']);
    await api(url, 'DELETE', `/v1/leases/${(JSON.parse(j.stdout) as { leaseId: string }).leaseId}`);

    assert.equal((await run(url, ['register', 'leased', 'l-1', '--address', '10.9.0.1', '--port', '80', '--lease-id', leaseId])).code, 0);
    const k = await run(url, ['lease', 'keepalive', leaseId]);
    assert.equal(k.code, 0, k.stderr);
    assert.equal(k.stdout, `lease ${leaseId} kept alive (ttl 20s)\n`);
    const kj = await run(url, ['lease', 'keepalive', leaseId, '--json']);
    assert.deepEqual(JSON.parse(kj.stdout), { leaseId, ttlMs: 20_000 });

    const v = await run(url, ['lease', 'revoke', leaseId]);
    assert.equal(v.code, 0, v.stderr);
    assert.match(v.stdout, new RegExp(`^revoked lease ${leaseId}: the instances bound to it, if any, are deregistered \\(revision \\d+\\)\\n$`));
    assert.equal((await api<ServiceAnswer>(url, 'GET', '/v1/services/leased')).instances.length, 0);
    const again = await run(url, ['lease', 'revoke', leaseId]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /LEASE_NOT_FOUND \(HTTP 404\)[\s\S]*hint:/);
    const short = await run(url, ['lease', 'grant', '--ttl', '100ms']);
    assert.equal(short.code, 1);
    assert.match(short.stderr, /LIMIT_EXCEEDED[\s\S]*limit: leaseTtlMinMs/);
  });

  test('register --ttl keeps a lease alive until Ctrl-C, then revokes it', { timeout: 60_000 }, async () => {
    const p = new Running(url, ['register', 'ttl', 'ttl-1', '--address', '10.3.0.1', '--port', '80', '--ttl', '2s']);
    await p.until('registration', () => /registered ttl\/ttl-1 \(10\.3\.0\.1:80, lease \S+\): revision \d+/.test(p.stdout));
    const leaseId = /lease (\S+) granted \(ttl 2s\)/.exec(p.stdout)?.[1];
    assert.ok(leaseId, p.stdout);
    // Outlive the TTL twice over: only the keep-alives hold the instance.
    await new Promise((r) => setTimeout(r, 5_000));
    const inst = await api<Instance>(url, 'GET', '/v1/services/ttl/instances/ttl-1');
    assert.equal(inst.leaseId, leaseId);
    const r = await p.interrupt();
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`revoked lease ${leaseId}: ttl/ttl-1 deregistered at revision \\d+`));
    const after = await api<ServiceAnswer>(url, 'GET', '/v1/services/ttl');
    assert.deepEqual(after.instances, []);
  });

  test('register --ttl: a keep-alive that gets no answer fails within a third of the TTL and is retried, not held for 30 s', { timeout: 60_000 }, async () => {
    const proxy = await FaultProxy.start({ host: '127.0.0.1', port: Number(new URL(url).port) });
    try {
      const p = new Running(`http://${proxy.address}`, ['register', 'ttl', 'ttl-stall', '--address', '10.3.0.2', '--port', '80', '--ttl', '3s']);
      await p.until('registration', () => /registered ttl\/ttl-stall/.test(p.stdout));
      const leaseId = /lease (\S+) granted \(ttl 3s\)/.exec(p.stdout)?.[1];
      assert.ok(leaseId, p.stdout);
      // The node takes the connection and never answers: the keep-alive (every 1 s) must
      // give up after 1 s and say so, long before a client's usual 30 s.
      proxy.stall();
      const t0 = performance.now();
      await p.until('the failed keep-alive', () => new RegExp(`keep-alive of lease ${leaseId} failed`).test(p.stdout + p.stderr), 6_000);
      const tookMs = performance.now() - t0;
      assert.ok(tookMs < 6_000, `noticed after ${Math.round(tookMs)} ms`);
      proxy.restore();
      // Back: the lease is kept alive again, or (if it ran out meanwhile) replaced.
      await p.until('recovery', () => /works again|registering ttl\/ttl-stall again/.test(p.stdout + p.stderr), 15_000);
      const r = await p.interrupt();
      assert.equal(r.code, 0, r.stderr);
    } finally {
      await proxy.close();
    }
  });

  test('watch prints the changes made after it starts and exits 0 on SIGINT', { timeout: 60_000 }, async () => {
    await reg(url, 'inventory', 'before-1', { address: '10.4.0.1', port: 80 });
    const before = await watchers(url);
    const text = new Running(url, ['watch', 'inventory']);
    const json = new Running(url, ['watch', 'inventory', '--json']);
    await waitFor('two watch streams', async () => (await watchers(url)) >= before + 2);
    const put = await reg(url, 'inventory', 'inv-1', { address: '10.4.0.2', port: 8080 });
    await reg(url, 'other', 'o-1', { address: '10.4.0.3', port: 80 }); // not watched
    await api(url, 'PUT', '/v1/services/inventory/instances/inv-1/status', { status: 'draining' });
    const del = await api<{ revision: number }>(url, 'DELETE', '/v1/services/inventory/instances/inv-1');
    await json.until('three events', () => json.lines().length >= 3);
    await text.until('three lines', () => text.lines().length >= 3);

    const events = json.lines().map((l) => JSON.parse(l) as WatchEvent);
    assert.deepEqual(events.map((e) => [e.type, e.service, e.instance.id, e.instance.status, e.reason]), [
      ['put', 'inventory', 'inv-1', 'up', 'registered'],
      ['put', 'inventory', 'inv-1', 'draining', 'status_changed'],
      ['delete', 'inventory', 'inv-1', 'draining', 'deregistered'],
    ]);
    assert.equal(events[0]?.revision, put.revision);
    assert.equal(events[2]?.revision, del.revision);

    const lines = text.lines();
    assert.match(lines[0] as string, new RegExp(`^\\d\\d:\\d\\d:\\d\\d\\.\\d{3}\\s+rev ${put.revision}\\s+PUT\\s+inventory/inv-1\\s+10\\.4\\.0\\.2:8080\\s+up/passing\\s+registered$`));
    assert.match(lines[1] as string, /\sPUT\s+inventory\/inv-1\s+10\.4\.0\.2:8080\s+draining\/passing\s+status_changed$/);
    assert.match(lines[2] as string, new RegExp(`rev ${del.revision}\\s+DELETE\\s+inventory/inv-1\\s+10\\.4\\.0\\.2:8080\\s+draining/passing\\s+deregistered$`));
    assert.ok(!text.stdout.includes('before-1') && !text.stdout.includes('o-1'), text.stdout);

    const [t, j] = await Promise.all([text.interrupt(), json.interrupt()]);
    assert.equal(t.code, 0, t.stderr);
    assert.equal(j.code, 0, j.stderr);
  });

  test('drain waits for the watchers and says how many it reached; history lists the reasons', { timeout: 60_000 }, async () => {
    await reg(url, 'drainer', 'd-1', { address: '10.5.0.1', port: 80 });
    const w = new Running(url, ['watch', 'drainer', '--json']);
    await waitFor('the watch stream', async () => (await watchers(url)) >= 1);
    const r = await run(url, ['drain', 'drainer', 'd-1', '--wait', '3s']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^drainer\/d-1 is draining \(revision \d+\): 1 of 1 watcher reached$/m);
    await w.until('the drain event', () => w.lines().some((l) => (JSON.parse(l) as WatchEvent).reason === 'drained'));
    await w.interrupt();
    const json = await run(url, ['drain', 'drainer', 'd-1', '--wait', '0s', '--json']);
    assert.deepEqual(Object.keys(JSON.parse(json.stdout)).sort(), ['gone', 'reached', 'revision', 'timedOut', 'watchers']);

    const h = await run(url, ['history', 'drainer', 'd-1']);
    assert.equal(h.code, 0, h.stderr);
    const lines = h.stdout.trim().split('\n');
    assert.match(lines[0] as string, /^REV\s+TIME\s+REASON\s+STATUS\s+HEALTH\s+DETAIL$/);
    assert.match(lines[1] as string, /^\d+\s+\S+Z\s+registered\s+up\s+passing\s+10\.5\.0\.1:80, persistent$/);
    assert.match(lines[2] as string, /\sdrained\s+draining\s+passing\s+up -> draining$/);
    await run(url, ['deregister', 'drainer', 'd-1']);
    const gone = await run(url, ['history', 'drainer', 'd-1']);
    assert.match(gone.stderr, /is gone; its history is kept/);
    assert.match(gone.stdout, /deregistered \(deleted\)/);
    const missing = await run(url, ['history', 'drainer', 'never']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /INSTANCE_NOT_FOUND/);
    const usage = await run(url, ['drain', 'drainer', 'd-1', '--wait', 'soon']);
    assert.equal(usage.code, 2);
  });

  test('watch --from-revision replays retained changes first', { timeout: 60_000 }, async () => {
    const first = await reg(url, 'replay', 'r-1', { address: '10.5.0.1', port: 80 });
    await reg(url, 'replay', 'r-2', { address: '10.5.0.2', port: 80 });
    const w = new Running(url, ['watch', 'replay', '--json', '--from-revision', String(first.revision)]);
    await w.until('the replay', () => w.lines().length >= 2);
    await reg(url, 'replay', 'r-3', { address: '10.5.0.3', port: 80 });
    await w.until('the live event', () => w.lines().length >= 3);
    assert.deepEqual(w.lines().map((l) => (JSON.parse(l) as WatchEvent).instance.id), ['r-1', 'r-2', 'r-3']);
    assert.equal((await w.interrupt()).code, 0);
  });
});

describe('switchboard watch and register --ttl across agent restarts', { timeout: 180_000 }, () => {
  test('resumes with Last-Event-ID when the agent ends the stream, without gaps or repeats', { timeout: 40_000 }, async () => {
    const cfg = config();
    const agent = await startAgent(cfg, quiet());
    const port = new URL(agent.url).port;
    let app: SwitchboardApp = agent.app;
    const w = new Running(agent.url, ['watch', '--json']);
    try {
      await waitFor('the watch stream', async () => (await watchers(agent.url)) >= 1);
      await reg(agent.url, 'pay', 'p-1', { address: '10.6.0.1', port: 80 });
      await w.until('the first event', () => w.lines().length >= 1);

      // End every stream (as on shutdown), change things while no stream is open, then serve
      // the same registry (same epoch) again on the same port.
      await app.shutdown();
      await w.until('the reconnect notice', () => /reconnecting in/.test(w.stderr));
      await agent.engine.register({ namespace: 'default', service: 'pay', id: 'p-2', input: validateInstanceInput({ address: '10.6.0.2', port: 80 }, cfg.limits) });
      app = await build({ engine: agent.engine, limits: cfg.limits, version: VERSION, logger: quiet() });
      await app.listen({ host: '127.0.0.1', port: Number(port) });
      await w.until('the missed event', () => w.lines().length >= 2, 15_000);
      await reg(agent.url, 'pay', 'p-3', { address: '10.6.0.3', port: 80 });
      await w.until('the next live event', () => w.lines().length >= 3);

      const events = w.lines().map((l) => JSON.parse(l) as WatchEvent);
      assert.deepEqual(events.map((e) => e.instance.id), ['p-1', 'p-2', 'p-3']);
      assert.match(w.stderr, /reconnected; resuming after revision \d+/);
      assert.ok(!w.lines().some((l) => !l.includes('"type"')), 'no reset');
      const r = await w.interrupt();
      assert.equal(r.code, 0, r.stderr);
    } finally {
      if (w.child.exitCode === null) process.kill(w.child.pid as number, 'SIGKILL');
      await app.shutdown();
      await agent.engine.close();
    }
  });

  test('register --ttl registers again under a new lease when its lease is gone (agent restarted)', { timeout: 40_000 }, async () => {
    let agent = await startAgent(config(), quiet());
    const addr = agent.url;
    const p = new Running(addr, ['register', 'jobs', 'j-1', '--address', '10.8.0.1', '--port', '80', '--ttl', '2s']);
    try {
      await p.until('registration', () => /registered jobs\/j-1/.test(p.stdout));
      await agent.stop();
      await new Promise((r) => setTimeout(r, 50));
      agent = await startAgent(config(`127.0.0.1:${new URL(addr).port}`), quiet());
      await waitFor('the registration in the new agent', async () => (await api<ServiceAnswer>(addr, 'GET', '/v1/services/jobs')).instances.length === 1, 15_000);
      assert.match(p.stderr, /expired before it was renewed; registering jobs\/j-1 again under a new lease/);
      const leases = [...p.stdout.matchAll(/lease (\S+) granted/g)].map((m) => m[1]);
      assert.equal(leases.length, 2, p.stdout);
      const inst = await api<Instance>(addr, 'GET', '/v1/services/jobs/instances/j-1');
      assert.equal(inst.leaseId, leases[1]);
      const r = await p.interrupt();
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual((await api<ServiceAnswer>(addr, 'GET', '/v1/services/jobs')).instances, []);
    } finally {
      if (p.child.exitCode === null) process.kill(p.child.pid as number, 'SIGKILL');
      await agent.stop();
    }
  });

  test('after an agent restart (new epoch) it prints the reset, relists and goes on', { timeout: 40_000 }, async () => {
    let agent = await startAgent(config(), quiet());
    const addr = agent.url;
    const w = new Running(addr, ['watch', 'mail']);
    try {
      await waitFor('the watch stream', async () => (await watchers(addr)) >= 1);
      await reg(addr, 'mail', 'm-old', { address: '10.7.0.1', port: 25 });
      await w.until('the first event', () => w.lines().length >= 1);
      await agent.stop();
      // Let this process's own fetch see the old agent's connections close (same event loop).
      await new Promise((r) => setTimeout(r, 50));
      agent = await startAgent(config(`127.0.0.1:${new URL(addr).port}`), quiet());
      // Registered while the watch waits to reconnect: normally in the relisting, else a live event.
      await reg(addr, 'mail', 'm-new', { address: '10.7.0.2', port: 25 });
      await w.until('the relisting', () => /\sLIST\s/.test(w.stdout), 15_000);
      await reg(addr, 'mail', 'm-later', { address: '10.7.0.3', port: 25 });
      await w.until('the next live event', () => /PUT\s+mail\/m-later/.test(w.stdout));
      const lines = w.lines();
      assert.match(lines[0] as string, /PUT\s+mail\/m-old/);
      assert.match(lines[1] as string, /RESET\s+new epoch \S+ \(was \S+\): the agent lost its data or is another node; relisting mail$/);
      assert.match(lines[2] as string, /LIST\s+mail(\/m-new\s+10\.7\.0\.2:25\s+up\/passing| \(no instances\))$/);
      assert.equal(lines.filter((l) => l.includes('mail/m-new')).length, 1, 'm-new once: listed or streamed, not both');
      assert.match(lines[lines.length - 1] as string, /PUT\s+mail\/m-later/);
      assert.ok(!lines.some((l) => l.includes('m-old') && l !== lines[0]), 'the old epoch is not replayed');
      const r = await w.interrupt();
      assert.equal(r.code, 0, r.stderr);
    } finally {
      if (w.child.exitCode === null) process.kill(w.child.pid as number, 'SIGKILL');
      await agent.stop();
    }
  });
});

/**
 * Two ap nodes behind the real API, linked in-process (test/ap/loopback.ts) so that the
 * link between them can be cut; node a evaluates alerts as an agent does.
 */
async function apPair(): Promise<{ net: LoopbackNet; a: string; b: string; close(): Promise<void> }> {
  const net = new LoopbackNet(['a', 'b']);
  const limits = { ...DEFAULT_LIMITS, apAntiEntropyIntervalMs: 200, apOwnerGraceMs: 60_000, apCatchUpTimeoutMs: 2_000, alertEvaluateIntervalMs: 50 };
  const engineA = await ApEngine.open({ nodeId: 'a', storage: new MemoryStorage(), transport: net.transport('a'), limits, clock: { now: () => performance.now() }, expiryTickMs: 50 });
  const alerts = new Alerts({ engine: engineA, webhooks: ['http://127.0.0.1:1/hooks'], limits, logger: quiet() });
  const appA = await build({ engine: engineA, limits, version: 'test', alerts });
  const a = await appA.listen({ host: '127.0.0.1', port: 0 });
  const b = await startApNode(net, 'b', { limits });
  await eventually('a ready', () => (engineA.ready ? true : undefined));
  return {
    net,
    a,
    b: b.url,
    close: async () => {
      alerts.close();
      await appA.shutdown();
      await engineA.close();
      await b.close();
    },
  };
}

describe('switchboard operator commands in ap mode', { timeout: 120_000 }, () => {
  let pair: Awaited<ReturnType<typeof apPair>>;
  before(async () => {
    pair = await apPair();
    // Owned by b: a persistent instance and a leased one.
    await reg(pair.b, 'orders', 'o-persist', { address: '10.8.0.1', port: 80 });
    const lease = await api<{ leaseId: string }>(pair.b, 'POST', '/v1/leases', { ttlMs: 60_000 });
    await reg(pair.b, 'orders', 'o-leased', { address: '10.8.0.2', port: 80, leaseId: lease.leaseId });
    await reg(pair.a, 'orders', 'o-local', { address: '10.8.0.3', port: 80 });
    await waitFor('b\'s instances on a', async () => (await api<ServiceAnswer>(pair.a, 'GET', '/v1/services/orders')).instances.length === 3);
  });
  after(async () => {
    await pair.close();
  });

  // Goal: after a node died, `instances` says whose each instance is and which ones no
  // node has confirmed since: before, only --json showed "owner" and "unconfirmed".
  test('instances adds OWNER and UNCONFIRMED columns when the answer carries ownership', { timeout: 30_000 }, async () => {
    const before = await run(pair.a, ['instances', 'orders']);
    assert.equal(before.code, 0, before.stderr);
    const [head, ...rows] = before.stdout.trimEnd().split('\n');
    assert.match(head as string, /^ID\s+ADDRESS\s+PORT\s+ZONE\s+VERSION\s+STATUS\s+HEALTH\s+LEASE\s+OWNER\s+UNCONFIRMED\s+TAGS$/);
    assert.deepEqual(rows.map((r) => r.split(/\s+/).filter((_, i) => i === 0 || i === 8 || i === 9)).sort(), [['o-leased', 'b', '-'], ['o-local', 'a', '-'], ['o-persist', 'b', '-']]);

    pair.net.setCut('a', 'b', true);
    await waitFor('b unconfirmed on a', async () => (await api<ServiceAnswer>(pair.a, 'GET', '/v1/services/orders')).instances.some((i) => (i as Instance & { unconfirmed?: true }).unconfirmed));
    const after = await run(pair.a, ['instances', 'orders']);
    assert.equal(after.code, 0, after.stderr);
    const cells = after.stdout.trimEnd().split('\n').slice(1).map((r) => r.split(/\s+/)).sort((x, y) => (x[0] as string).localeCompare(y[0] as string));
    assert.deepEqual(cells.map((c) => [c[0], c[8], c[9]]), [['o-leased', 'b', 'yes'], ['o-local', 'a', '-'], ['o-persist', 'b', 'yes']]);
    assert.match(after.stderr, /note: 2 instances are unconfirmed: their owner \(b\) is unreachable from this node/);
    const json = await run(pair.a, ['instances', 'orders', '--json']);
    assert.equal((JSON.parse(json.stdout) as ServiceAnswer).instances.filter((i) => (i as Instance & { unconfirmed?: true }).unconfirmed).length, 2);
    pair.net.setCut('a', 'b', false);
    await waitFor('b confirmed again', async () => !(await api<ServiceAnswer>(pair.a, 'GET', '/v1/services/orders')).instances.some((i) => (i as Instance & { unconfirmed?: true }).unconfirmed));
  });

  // Goal: the status of a cluster node is readable: members and active alerts as tables,
  // durations rounded; --json stays the agent's answer, untouched.
  test('status shows members and active alerts as tables with rounded durations; --json is the raw answer', { timeout: 30_000 }, async () => {
    pair.net.setCut('a', 'b', true);
    try {
      await waitFor('the peer_unreachable alert', async () => ((await api<NodeStatus>(pair.a, 'GET', '/v1/status')).alerts?.active.length ?? 0) > 0);
      const r = await run(pair.a, ['status']);
      assert.equal(r.code, 0, r.stderr);
      assert.doesNotMatch(r.stdout, /[[{]"/, 'no raw JSON');
      assert.doesNotMatch(r.stdout, /\d\.\d{4,}/, 'no unrounded numbers');
      assert.match(r.stdout, /^cluster\.peerSync\s+1 \(below\)$/m);
      const sync = r.stdout.split('\n\n').find((s) => s.startsWith('cluster.peerSync\n')) ?? '';
      assert.match(sync, /\n  ID\s+SYNCED AGO\s+CUT SYNCED AGO\s+DOWN\s+MUST REBUILD\n  b\s+\d+(ms|s|m\ds)\s+/);
      assert.match(r.stdout, /^cluster\.removedMembers\s+none$/m);
      const members = r.stdout.split('\n\n').find((s) => s.startsWith('cluster.members\n')) ?? '';
      assert.match(members, /\n  ID\s+ADDRESS\s+REACHABLE\s+LAST SEEN\s+LAG\s+REVISION\n/);
      assert.match(members, /\n  a \(self\)\s+\S+\s+yes\s+-\s+/);
      assert.match(members, /\n  b\s+\S+\s+no\s+(never|\d+(ms|s) ago)\s+(-|\d+ms)\s+\d+$/);
      const alerts = r.stdout.split('\n\n').find((s) => s.startsWith('alerts.active\n')) ?? '';
      assert.match(alerts, /\n  ALERT\s+SEVERITY\s+SUBJECT\s+SINCE\s+FOR\s+SUMMARY\n/);
      assert.match(alerts, /\n  peer_unreachable\s+warning\s+b\s+\d{4}-\d\d-\d\dT\S+Z\s+\d+(ms|s)\s+cluster member b .*unreachable/);
      const hooks = r.stdout.split('\n\n').find((s) => s.startsWith('alerts.webhooks\n')) ?? '';
      assert.match(hooks, /\n  URL\s+PENDING\s+DELIVERED\s+FAILED\s+DROPPED\s+LAST DELIVERED\s+LAST ERROR\n  http:\/\/127\.0\.0\.1:1\/hooks\s+\d+/);

      const j = await run(pair.a, ['status', '--json']);
      assert.equal(j.code, 0, j.stderr);
      const raw = JSON.parse(j.stdout) as NodeStatus & { cluster: { peerSync: Record<string, { syncedMsAgo: number }> } };
      assert.equal(j.stdout, JSON.stringify(raw, null, 2) + '\n');
      assert.deepEqual(Object.keys(raw), Object.keys(await api<NodeStatus>(pair.a, 'GET', '/v1/status')));
      assert.equal(raw.alerts?.active[0]?.alert, 'peer_unreachable');
      assert.equal(typeof raw.cluster.peerSync.b?.syncedMsAgo, 'number');
    } finally {
      pair.net.setCut('a', 'b', false);
    }
  });
});
