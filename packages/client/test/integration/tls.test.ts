// Goal: the SDK reaches an agent that serves HTTPS (--tls-cert-file) with a certificate a
// private CA signed: the session over wss://, the watch and requests over https://, with
// the CA given as `ca` or `caFile` and a token; without the CA, or with another one, it
// reports the untrusted certificate. The certificates are made here, with openssl.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from '../../src/index.js';
import { spawnAgent, waitFor, type Agent } from '../helpers.js';

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

test('the SDK without the CA, or with another one, reports the untrusted certificate', async () => {
  for (const opts of [{}, { caFile: at('other-ca.crt') }]) {
    const client = await connect({ endpoints: [agent.url], token: WRITE, reportFailures: false, ...opts });
    const errors: Error[] = [];
    client.on('registry-error', (e: Error) => errors.push(e));
    try {
      await assert.rejects(client.service('orders').ready({ timeoutMs: 1_500 }));
      await waitFor(() => errors.length > 0, 3_000, 'a registry-error');
      assert.match(String(errors[0]?.message), /certificate/i, String(errors[0]));
    } finally {
      await client.close();
    }
  }
  await assert.rejects(connect({ endpoints: [agent.url], caFile: at('server.key') }), /no PEM certificate/);
});

