// Goal: three ap agent processes with peer TLS and a cluster secret (the settings of the
// README's Security section) link, replicate both ways and say so in /v1/status; the
// links go through fault proxies, so the TLS is end to end between the agents.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApCluster, getJson, idsOn, putJson, reachablePeers, until } from '../support/ap-cluster.js';
import { makePeerCerts } from '../support/pki.js';

test('ap agents with peer TLS and a cluster secret link, replicate both ways and show it in the status', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sb-ap-tls-'));
  let c: ApCluster | undefined;
  try {
    // One certificate for every node is enough: members are recognised by the CA.
    const cert = makePeerCerts(dir, { node: 'ca' }).node!;
    const secret = join(dir, 'peer-secret');
    writeFileSync(secret, randomBytes(33).toString('base64'));
    chmodSync(secret, 0o600);
    c = await ApCluster.start(['a', 'b', 'c'], { extraArgs: ['--peer-tls-cert-file', cert.certFile, '--peer-tls-key-file', cert.keyFile, '--peer-tls-ca-file', cert.caFile, '--peer-secret-file', secret] });
    const [a, b, cc] = [c.node('a'), c.node('b'), c.node('c')];
    await until(async () => (await Promise.all([a, b, cc].map((n) => reachablePeers(n.url)))).every((p) => p.length === 2), 15_000, 'a full mesh over TLS');
    const status = await getJson(a.url, '/v1/status');
    assert.deepEqual(status.cluster.peerLinks, { tls: true, secret: true });
    assert.equal((await putJson(a.url, '/v1/services/pay/instances/from-a', { address: '127.0.0.1', port: 9001 })).status, 200);
    assert.equal((await putJson(cc.url, '/v1/services/pay/instances/from-c', { address: '127.0.0.1', port: 9002 })).status, 200);
    await until(async () => (await Promise.all([a, b, cc].map((n) => idsOn(n.url, 'pay')))).every((ids) => JSON.stringify(ids) === '["from-a","from-c"]'), 10_000, 'both records on every node');
  } finally {
    await c?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
