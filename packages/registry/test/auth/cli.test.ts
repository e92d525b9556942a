// Goal: the operator commands send --token (or SWITCHBOARD_TOKEN) to an agent that
// requires tokens, and a refusal says what to do in the CLI's terms: exit 1, the code,
// and a hint naming --token / SWITCHBOARD_TOKEN or the write scope; a watch is not retried.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, spawnAgent, type AgentProcess } from '../integration/process.js';

const READ = 'cli-read-token-0123456789abcdef0123';
const WRITE = 'cli-write-token-0123456789abcdef';
let dir: string;
let agent: AgentProcess;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sb-cli-auth-'));
  const file = join(dir, 'tokens');
  writeFileSync(file, `read ${READ}\nwrite ${WRITE}\n`);
  agent = await spawnAgent(['--dev', '--api-tokens-file', file]);
});
after(async () => {
  agent.child.kill('SIGTERM');
  await agent.exited;
  rmSync(dir, { recursive: true, force: true });
});

const env = (extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => ({ SWITCHBOARD_ADDR: agent.url, NO_COLOR: '1', SWITCHBOARD_TOKEN: undefined, ...extra });

test('without a token: exit 1, UNAUTHENTICATED and a hint naming --token and SWITCHBOARD_TOKEN', async () => {
  for (const args of [['services'], ['watch', 'orders'], ['register', 'orders', 'o-1', '--address', '10.0.0.5', '--port', '80']]) {
    const r = await run(args, env(), 15_000);
    assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /error: UNAUTHENTICATED \(HTTP 401\)/, args.join(' '));
    assert.match(r.stderr, /hint: this agent requires a token: give it with --token TOKEN or, better, SWITCHBOARD_TOKEN=TOKEN/, args.join(' '));
  }
  const wrong = await run(['services', '--token', 'an-unknown-token-0123456789'], env());
  assert.equal(wrong.code, 1);
  assert.match(wrong.stderr, /the agent does not accept the token given with --token/);
  assert.ok(!wrong.stderr.includes('an-unknown-token-0123456789'), 'the token is not printed');
});

test('--token and SWITCHBOARD_TOKEN are sent; a read token cannot write (FORBIDDEN, a hint about the scope)', async () => {
  const reg = await run(['register', 'orders', 'o-1', '--address', '10.0.0.5', '--port', '80', '--token', WRITE], env());
  assert.equal(reg.code, 0, reg.stderr);
  const list = await run(['instances', 'orders', '--json'], env({ SWITCHBOARD_TOKEN: READ }));
  assert.equal(list.code, 0, list.stderr);
  assert.equal(JSON.parse(list.stdout).instances.length, 1);
  const denied = await run(['deregister', 'orders', 'o-1'], env({ SWITCHBOARD_TOKEN: READ }));
  assert.equal(denied.code, 1);
  assert.match(denied.stderr, /error: FORBIDDEN \(HTTP 403\)/);
  assert.match(denied.stderr, /hint: the token given with SWITCHBOARD_TOKEN may only read; this command writes: use a token of scope write/);
  const bad = await run(['services', '--token', 'a b'], env());
  assert.equal(bad.code, 2, 'a token that cannot be a header is a usage error');
  assert.match(bad.stderr, /invalid --token/);
});
