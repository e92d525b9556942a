// Goal: the SDK reaches an agent that serves HTTPS (--tls-cert-file) with a certificate a
// private CA signed: the session over wss://, the watch and requests over https://, with
// the CA given as `ca` or `caFile` and a token. A certificate it cannot verify (no CA, or
// another one; a certificate for another name) or an https:// endpoint without TLS is a
// TlsError at once, handled like an AuthError: not retried, register() and ready()
// reject, 'registry-error' says it once. The certificates are made here, with openssl.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, TlsError } from '../../src/index.js';
import { spawnAgent, waitFor, within, type Agent } from '../helpers.js';

const WRITE = 'tls-write-token-0123456789abcdef';
let dir: string;
let agent: Agent;
const at = (f: string): string => join(dir, f);

/** The registry's test certificates (its compiled test support; built before the client by the root build). */
const PKI = new URL('../../../../registry/dist/test/support/pki.js', import.meta.url).href;

before(async () => {
  delete process.env.SWITCHBOARD_CA_FILE;
  dir = mkdtempSync(join(tmpdir(), 'sb-sdk-tls-'));
  ((await import(PKI)) as { makeTestPki(dir: string): void }).makeTestPki(dir);
  writeFileSync(at('tokens'), `write ${WRITE}\n`);
  agent = await spawnAgent(['--dev', '--tls-cert-file', at('server.crt'), '--tls-key-file', at('server.key'), '--api-tokens-file', at('tokens')]);
});
after(async () => {
  await agent.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
});

test('the SDK registers over wss:// and watches over https:// with the private CA and a token', async () => {
  const provider = await connect({ endpoints: [agent.url], token: WRITE, caFile: at('ca.crt') });
  const consumer = await connect({ endpoints: [agent.url], token: WRITE, ca: readFileSync(at('ca.crt')), reportFailures: false });
  try {
    await provider.register({ service: 'orders', id: 'o-1', address: '10.0.0.5', port: 8080 });
    assert.equal(provider.lease?.transport, 'websocket');
    const view = consumer.service('orders');
    await view.ready({ timeoutMs: 5_000 });
    assert.deepEqual(view.instances().map((i) => i.id), ['o-1']);
    await provider.register({ service: 'orders', id: 'o-2', address: '10.0.0.6', port: 8080 });
    await waitFor(() => view.instances().length === 2, 5_000, 'the watch event over https');
  } finally {
    await provider.close();
    await consumer.close();
  }
});

/** register() and ready() of a client for `endpoint` reject with a TlsError at once, said once as 'registry-error'; the error. */
async function refusedTls(endpoint: string, opts: { caFile?: string }): Promise<TlsError> {
  const client = await connect({ endpoints: [endpoint], token: WRITE, reportFailures: false, ...opts });
  const errors: unknown[] = [];
  client.on('registry-error', (e) => errors.push(e));
  try {
    const started = performance.now();
    const ready = await within(client.service('orders').ready({ timeoutMs: 10_000 }).then(() => null, (e: unknown) => e), 3_000, 'ready');
    assert.ok(ready instanceof TlsError, `ready: ${String(ready)}`);
    const reg = await within(client.register({ service: 'orders', port: 1 }).then(() => null, (e: unknown) => e), 3_000, 'register');
    assert.ok(reg instanceof TlsError, `register: ${String(reg)}`);
    assert.ok(performance.now() - started < 2_000, `no retries with backoff: ${Math.round(performance.now() - started)} ms`);
    assert.equal(reg.code, 'TLS_ERROR');
    assert.equal(reg.endpoint, endpoint);
    assert.equal(reg.kind, ready.kind);
    // Not retried: nothing more is reported after a while, and later registrations get it too.
    await waitFor(() => errors.length > 0, 3_000, 'a registry-error');
    const count = errors.length;
    await new Promise((r) => setTimeout(r, 700));
    assert.equal(errors.length, count, 'the failure is reported, not retried');
    assert.ok(errors.every((e) => e instanceof TlsError), errors.map(String).join('\n'));
    const again = await within(client.register({ service: 'orders', port: 2 }).then(() => null, (e: unknown) => e), 3_000, 'register again');
    assert.ok(again instanceof TlsError, 'later registrations get it too');
    return reg;
  } finally {
    await client.close();
  }
}

test('without the CA, or with another one, register() and ready() reject at once with a TlsError naming the ca and caFile options, not retried', async () => {
  for (const opts of [{}, { caFile: at('other-ca.crt') }]) {
    const err = await refusedTls(agent.url, opts);
    assert.equal(err.kind, 'untrusted');
    assert.match(err.tlsCode, /^(UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT_LOCALLY|SELF_SIGNED_CERT_IN_CHAIN)$/);
    assert.match(err.message, /the registry's TLS certificate is not trusted \(\w+\); give the CA that signed it with the ca or caFile option \(or SWITCHBOARD_CA_FILE=FILE\)/);
  }
  await assert.rejects(connect({ endpoints: [agent.url], caFile: at('server.key') }), /no PEM certificate/);
});

test('a certificate for another name, and an https:// endpoint without TLS, are TlsErrors too, each with its hint', async () => {
  // The certificate names 127.0.0.1 only.
  const name = await refusedTls(agent.url.replace('127.0.0.1', 'localhost'), { caFile: at('ca.crt') });
  assert.deepEqual([name.kind, name.tlsCode], ['name', 'ERR_TLS_CERT_ALTNAME_INVALID']);
  assert.match(name.hint, /the name or address the certificate was issued for/);
  const plain = createServer((_req, res) => res.end('{}'));
  await new Promise<void>((r) => plain.listen(0, '127.0.0.1', r));
  try {
    const err = await refusedTls(`https://127.0.0.1:${(plain.address() as { port: number }).port}`, { caFile: at('ca.crt') });
    assert.equal(err.kind, 'plain');
    assert.match(err.hint, /give the endpoint as http:\/\//);
  } finally {
    plain.close();
  }
});
