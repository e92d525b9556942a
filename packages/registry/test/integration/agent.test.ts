// Goal: the real `switchboard agent` process starts as configured (flags, environment,
// config file, in that precedence), refuses invalid configuration naming the field, and
// on SIGTERM ends watch streams cleanly and exits 0.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SseReader, call } from '../helpers.js';
import { run, spawnAgent } from './process.js';

test('SIGTERM ends watch streams cleanly and exits 0', async () => {
  const agent = await spawnAgent(['--dev']);
  try {
    const w = await SseReader.open(`${agent.url}/v1/watch`);
    await call(agent.url, 'PUT', '/v1/services/s/instances/a', { address: '10.0.0.1', port: 1 });
    await w.count(1);
    agent.child.kill('SIGTERM');
    await w.until(() => w.ended, 5_000, 'stream end');
    assert.equal(await agent.exited, 0);
    assert.match(agent.output(), /stopped/);
  } finally {
    agent.child.kill('SIGKILL');
  }
});

test('SIGTERM with a blocking query waiting on a kept-alive connection exits within seconds', async () => {
  const agent = await spawnAgent(['--dev']);
  const { connect } = await import('node:net');
  let socket: import('node:net').Socket | undefined;
  try {
    await call(agent.url, 'PUT', '/v1/services/s/instances/a', { address: '10.0.0.1', port: 1 });
    const index = (await call(agent.url, 'GET', '/v1/services/s')).body.revision;
    socket = connect(Number(new URL(agent.url).port), '127.0.0.1');
    await new Promise<void>((r) => socket!.once('connect', () => r()));
    let answer = '';
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => (answer += d));
    socket.on('error', () => undefined);
    // A client that keeps its connection open after the answer (fetch's keep-alive pool does).
    socket.write(`GET /v1/services/s?index=${index}&wait=50s HTTP/1.1\r\nHost: x\r\n\r\n`);
    await new Promise((r) => setTimeout(r, 300));
    const t0 = Date.now();
    agent.child.kill('SIGTERM');
    assert.equal(await agent.exited, 0);
    const took = Date.now() - t0;
    assert.ok(took < 4_000, `exited ${took} ms after SIGTERM`);
    assert.match(answer, /^HTTP\/1\.1 200/);
    assert.match(answer, /connection: close/i, 'the answer given during shutdown closes its connection');
  } finally {
    socket?.destroy();
    agent.child.kill('SIGKILL');
  }
});

test('configuration precedence: flags over environment over file over defaults', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sb-config-'));
  try {
    const file = join(dir, 'config.json');
    writeFileSync(file, JSON.stringify({ nodeId: 'from-file', dev: true, limits: { leaseTtlMinMs: 500 } }));
    const agent = await spawnAgent(['--config', file, '--node-id', 'from-flag'], { SWITCHBOARD_NODE_ID: 'from-env' });
    try {
      assert.equal((await call(agent.url, 'GET', '/v1/status')).body.nodeId, 'from-flag');
      assert.equal((await call(agent.url, 'POST', '/v1/leases', { ttlMs: 500 })).status, 201, 'limit from the file');
    } finally {
      agent.child.kill('SIGKILL');
    }
    const agent2 = await spawnAgent(['--config', file], { SWITCHBOARD_NODE_ID: 'from-env' });
    try {
      assert.equal((await call(agent2.url, 'GET', '/v1/status')).body.nodeId, 'from-env');
    } finally {
      agent2.child.kill('SIGKILL');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('invalid configuration is refused with a message naming the field', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sb-config-'));
  try {
    const cases: [string[], NodeJS.ProcessEnv, RegExp][] = [
      [['agent', '--http-addr', 'localhost:99999'], {}, /--http-addr/],
      [['agent', '--mode', 'quorum'], {}, /--mode must be one of standalone, ap, cp/],
      [['agent', '--dev'], { SWITCHBOARD_HTTP_ADDR: 'nope:port' }, /SWITCHBOARD_HTTP_ADDR/],
      [['agent'], { SWITCHBOARD_DEV: 'yes' }, /SWITCHBOARD_DEV must be true or false/],
      [['agent', '--mode', 'cp'], {}, /--etcd/],
      [['agent', '--config', join(dir, 'missing.json')], {}, /cannot read config file/],
    ];
    writeFileSync(join(dir, 'bad.json'), JSON.stringify({ httpAdr: '127.0.0.1:1' }));
    cases.push([['agent', '--config', join(dir, 'bad.json')], {}, /unknown key "httpAdr"/]);
    writeFileSync(join(dir, 'limits.json'), JSON.stringify({ limits: { maxTags: 3 } }));
    cases.push([['agent', '--config', join(dir, 'limits.json')], {}, /limits\.maxTags is not a known limit/]);
    // Settings of another mode, which the agent started without a word.
    cases.push([['agent', '--peers', 'b@127.0.0.1:7802', '--dev'], {}, /--peers is for --mode ap, but the mode is standalone \(the default\) \[INVALID_CONFIG\]\n  hint: did you mean --mode ap\?/]);
    cases.push([['agent', '--etcd', 'http://127.0.0.1:2379', '--dev'], {}, /--etcd is for --mode cp[\s\S]*hint: did you mean --mode cp\?/]);
    cases.push([['agent', '--mode', 'cp', '--etcd', 'http://127.0.0.1:2379', '--dev', '--data-dir', dir, '--peers', 'x@127.0.0.1:7802'], {}, /--data-dir is for --mode standalone or --mode ap, but the mode is cp \(--mode\); --dev and --peers do not apply to cp either/]);
    cases.push([['agent', '--mode', 'ap', '--node-id', 'a', '--dev', '--etcd', 'http://127.0.0.1:2379'], {}, /--etcd is for --mode cp, but the mode is ap/]);
    writeFileSync(join(dir, 'ap.json'), JSON.stringify({ peers: ['b@127.0.0.1:7802'] }));
    cases.push([['agent', '--dev', '--config', join(dir, 'ap.json')], {}, /config file \S+ap\.json key peers is for --mode ap[\s\S]*remove key peers from config file/]);
    for (const [args, env, expected] of cases) {
      const r = await run(args, env);
      assert.equal(r.code, 2, `${args.join(' ')} exits 2: ${r.stderr}`);
      assert.match(r.stderr, expected);
    }
    const unknownFlag = await run(['agent', '--no-such-flag']);
    assert.equal(unknownFlag.code, 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// Goal: a listen address that cannot be used stops the start with one clear line naming
// the setting, a code and a hint, exit 2, like any invalid value: not the socket's bare
// error (listen EADDRNOTAVAIL 0.0.30.20:7700, getaddrinfo ENOTFOUND) with exit 1.
test('listen addresses that cannot be used are refused naming the setting, exit 2', async () => {
  const running = await spawnAgent(['--dev']);
  try {
    const taken = new URL(running.url).host;
    const cases: [string[], NodeJS.ProcessEnv, RegExp][] = [
      [['--http-addr', '7700'], {}, /--http-addr "7700" is not HOST:PORT: a port without a host \[INVALID_CONFIG\]\n  hint: use HOST:PORT, like 127\.0\.0\.1:7700/],
      [['--http-addr', '127.0.0.1'], {}, /--http-addr "127\.0\.0\.1" is not HOST:PORT: the port is missing \[INVALID_CONFIG\]\n  hint: use HOST:PORT/],
      [['--http-addr', 'no-such-host.invalid:0'], {}, /--http-addr: the host name "no-such-host\.invalid" does not resolve \(\w+\) \[ADDRESS_UNRESOLVED\]\n  hint: /],
      [[], { SWITCHBOARD_HTTP_ADDR: 'no-such-host.invalid:0' }, /SWITCHBOARD_HTTP_ADDR: the host name "no-such-host\.invalid" does not resolve/],
      [['--http-addr', '192.0.2.1:0'], {}, /--http-addr 192\.0\.2\.1:0: 192\.0\.2\.1 is not an address of this machine \[ADDRESS_NOT_LOCAL\]/],
      [['--http-addr', taken], {}, new RegExp(`--http-addr ${taken} is in use \\[ADDRESS_IN_USE\\]\\n  hint: another agent \\(or another program\\) may be running there; stop it, or pick another --http-addr`)],
      [['--mode', 'ap', '--node-id', 'z', '--http-addr', '127.0.0.1:0', '--peer-addr', taken], {}, new RegExp(`--peer-addr ${taken} is in use \\[ADDRESS_IN_USE\\][\\s\\S]*pick another --peer-addr`)],
    ];
    for (const [args, env, expected] of cases) {
      const r = await run(['agent', '--dev', ...args], env);
      assert.equal(r.code, 2, `${args.join(' ')} exits 2: ${r.stderr}`);
      assert.match(r.stderr, expected, args.join(' '));
      assert.doesNotMatch(r.stderr, /\n.*\n.*\n/, 'one line and a hint');
    }
  } finally {
    running.child.kill('SIGKILL');
  }
});
