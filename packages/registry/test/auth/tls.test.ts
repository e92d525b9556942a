// Goal: an agent given --tls-cert-file and --tls-key-file serves its API over HTTPS only
// (`listening on https://...`); the CLI reaches it with the private CA given as --ca-file
// or SWITCHBOARD_CA_FILE, together with a token; without the CA, or with another one, it
// is refused clearly; bad TLS files stop the agent at start. The certificates are made
// here, with openssl. (The SDK over HTTPS: packages/client/test/integration/tls.test.ts.)
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tlsFailure } from '../../src/cli/ops/http.js';
import { run, spawnAgent, type AgentProcess } from '../integration/process.js';
import { makeTestPki } from '../support/pki.js';

const WRITE = 'tls-write-token-0123456789abcdef';
let dir: string;
let agent: AgentProcess;
const at = (f: string): string => join(dir, f);

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sb-api-tls-'));
  makeTestPki(dir);
  writeFileSync(at('tokens'), `write ${WRITE}\n`);
  agent = await spawnAgent(['--dev', '--tls-cert-file', at('server.crt'), '--tls-key-file', at('server.key'), '--api-tokens-file', at('tokens')]);
});
after(async () => {
  agent.child.kill('SIGTERM');
  await agent.exited;
  rmSync(dir, { recursive: true, force: true });
});

const cli = (args: string[], extra: NodeJS.ProcessEnv = {}) => run(args, { SWITCHBOARD_ADDR: agent.url, SWITCHBOARD_TOKEN: WRITE, NO_COLOR: '1', SWITCHBOARD_CA_FILE: undefined, ...extra });

test('the agent says listening on https:// and answers HTTPS only', async () => {
  assert.match(agent.url, /^https:\/\/127\.0\.0\.1:\d+$/);
  const plain = await cli(['status'], { SWITCHBOARD_ADDR: agent.url.replace('https', 'http') });
  assert.equal(plain.code, 1, 'plain HTTP gets no answer');
});

test('the CLI: --ca-file or SWITCHBOARD_CA_FILE with the token; without it, or with another CA, exit 1 and a hint naming --ca-file', async () => {
  const reg = await cli(['register', 'billing', 'b-1', '--address', '10.0.0.5', '--port', '80', '--ca-file', at('ca.crt')]);
  assert.equal(reg.code, 0, reg.stderr);
  const list = await cli(['instances', 'billing', '--json'], { SWITCHBOARD_CA_FILE: at('ca.crt') });
  assert.equal(list.code, 0, list.stderr);
  assert.equal(JSON.parse(list.stdout).instances.length, 1);
  for (const extra of [{}, { SWITCHBOARD_CA_FILE: at('other-ca.crt') }]) {
    for (const args of [['services'], ['watch', 'billing']]) {
      const r = await cli(args, extra);
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /the agent's TLS certificate is not trusted \(\w+\)/, r.stderr);
      assert.match(r.stderr, /hint: give the CA that signed the agent's certificate with --ca-file FILE or SWITCHBOARD_CA_FILE=FILE/);
    }
  }
  const notPem = await cli(['services', '--ca-file', at('tokens')]);
  assert.equal(notPem.code, 2);
  assert.match(notPem.stderr, /invalid --ca-file: .* holds no PEM certificate/);
});

test('the CLI: a certificate for another name, an https:// address without TLS: exit 1, each with its own hint, also for watch', async () => {
  const name = await cli(['watch', 'billing'], { SWITCHBOARD_ADDR: agent.url.replace('127.0.0.1', 'localhost'), SWITCHBOARD_CA_FILE: at('ca.crt') });
  assert.equal(name.code, 1, name.stderr);
  assert.match(name.stderr, /the agent's TLS certificate is not for this address \(ERR_TLS_CERT_ALTNAME_INVALID\)\n {2}hint: use the name or address the certificate was issued for in --addr/);
  const plain = createServer((_req, res) => res.end('{}'));
  await new Promise<void>((r) => plain.listen(0, '127.0.0.1', r));
  try {
    const r = await cli(['services'], { SWITCHBOARD_ADDR: `https://127.0.0.1:${(plain.address() as AddressInfo).port}` });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /the agent does not answer with TLS \(ERR_SSL_WRONG_VERSION_NUMBER\)\n {2}hint: give the address as http:\/\//);
  } finally {
    plain.close();
  }
  // The other way round: http:// to the agent, which serves HTTPS only.
  const toTls = await cli(['services'], { SWITCHBOARD_ADDR: agent.url.replace('https://', 'http://') });
  assert.equal(toTls.code, 1, toTls.stderr);
  assert.match(toTls.stderr, /closed by the other side\n {2}hint: if the agent serves HTTPS .* give the address as https:\/\/127\.0\.0\.1:\d+/);
});

test('the CLI reads every certificate failure Node reports, however wrapped, from the one list the SDK and cp nodes use', () => {
  const wrapped = (code: string): Error => new TypeError('fetch failed', { cause: Object.assign(new Error(code), { code }) });
  for (const code of ['SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_GET_ISSUER_CERT', 'INVALID_CA', 'CERT_REVOKED', 'CERT_REJECTED', 'CERT_CHAIN_TOO_LONG']) {
    assert.deepEqual(tlsFailure(wrapped(code)), { reason: `the agent's TLS certificate is not trusted (${code})`, hint: "give the CA that signed the agent's certificate with --ca-file FILE or SWITCHBOARD_CA_FILE=FILE" }, code);
  }
  assert.match(tlsFailure(wrapped('CERT_HAS_EXPIRED'))?.hint ?? '', /renew the agent's certificate/);
  assert.equal(tlsFailure(wrapped('ECONNREFUSED')), undefined);
});

test('bad TLS files stop the agent at start with a code and a hint', async () => {
  const cases: [string[], RegExp][] = [
    [['--tls-cert-file', at('server.crt')], /--tls-cert-file needs --tls-key-file too \[TLS_CERT_KEY_PAIR\]/],
    [['--tls-cert-file', at('tokens'), '--tls-key-file', at('server.key')], /--tls-cert-file: .* holds no PEM certificate .*\[TLS_FILE_INVALID\]/],
    [['--tls-cert-file', at('server.crt'), '--tls-key-file', at('server.crt')], /holds no unencrypted PEM private key .*\[TLS_FILE_INVALID\]/],
    [['--tls-cert-file', at('server.crt'), '--tls-key-file', at('ca.key')], /do not belong together.*\[TLS_CERT_KEY_MISMATCH\]/],
  ];
  for (const [args, message] of cases) {
    const r = await run(['agent', '--dev', '--http-addr', '127.0.0.1:0', ...args]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, message);
    assert.match(r.stderr, /\n {2}hint: /);
  }
});
