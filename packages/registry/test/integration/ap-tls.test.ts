// Goal: three ap agent processes with peer TLS and a cluster secret (the settings of the
// README's Security section) link, replicate both ways and say so in /v1/status; the
// links go through fault proxies, so the TLS is end to end between the agents.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApCluster, getJson, idsOn, putJson, reachablePeers, until } from '../support/ap-cluster.js';
import { makeCrl, makePeerCerts, peerTlsFlags } from '../support/pki.js';
import { run, spawnAgent } from './process.js';

test('ap agents with peer TLS and a cluster secret link, replicate both ways and show it in the status', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sb-ap-tls-'));
  let c: ApCluster | undefined;
  try {
    // One certificate for every node is enough: members are recognised by the CA.
    const certs = makePeerCerts(dir, { node: 'ca', gone: 'ca', other: 'other' });
    const cert = certs.node!;
    // A revocation list of the cluster's CA that revokes another member's certificate.
    const crl = makeCrl(dir, 'crl.pem', ['gone']);
    const secret = join(dir, 'peer-secret');
    writeFileSync(secret, randomBytes(33).toString('base64'));
    chmodSync(secret, 0o600);
    c = await ApCluster.start(['a', 'b', 'c'], { extraArgs: [...peerTlsFlags(cert), '--peer-tls-crl-file', crl, '--peer-secret-file', secret] });
    const [a, b, cc] = [c.node('a'), c.node('b'), c.node('c')];
    await until(async () => (await Promise.all([a, b, cc].map((n) => reachablePeers(n.url)))).every((p) => p.length === 2), 15_000, 'a full mesh over TLS');
    const status = await getJson(a.url, '/v1/status');
    const { crlNextUpdate, ...links } = status.cluster.peerLinks;
    assert.deepEqual(links, { tls: true, secret: true, crl: true });
    // The list makeCrl writes is good for a day: its next update, read from the list.
    const left = Date.parse(crlNextUpdate) - Date.now();
    assert.ok(left > 22 * 3_600_000 && left <= 24 * 3_600_000 + 60_000, `next update ${crlNextUpdate}`);
    assert.equal((await putJson(a.url, '/v1/services/pay/instances/from-a', { address: '127.0.0.1', port: 9001 })).status, 200);
    assert.equal((await putJson(cc.url, '/v1/services/pay/instances/from-c', { address: '127.0.0.1', port: 9002 })).status, 200);
    await until(async () => (await Promise.all([a, b, cc].map((n) => idsOn(n.url, 'pay')))).every((ids) => JSON.stringify(ids) === '["from-a","from-c"]'), 10_000, 'both records on every node');
  } finally {
    await c?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a revocation list that revokes the node itself, is not of its CA, or is no list at all stops the start, saying so', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sb-ap-crl-'));
  try {
    const certs = makePeerCerts(dir, { a: 'ca', x: 'other' });
    const a = certs.a!;
    const agent = (crl: string, tls = true) =>
      run(['agent', '--mode', 'ap', '--node-id', 'a', '--dev', '--http-addr', '127.0.0.1:0', '--peer-addr', '127.0.0.1:0', ...(tls ? peerTlsFlags(a) : []), '--peer-tls-crl-file', crl]);
    const cases: [string, boolean, string, RegExp][] = [
      [makeCrl(dir, 'self.pem', ['a']), true, 'PEER_TLS_REVOKED', /revokes this node's own certificate/],
      [makeCrl(dir, 'other.pem', ['x'], 'other'), true, 'PEER_TLS_CRL_NOT_OF_CA', /no revocation list of a CA in the certificate chain/],
      [a.certFile, true, 'PEER_TLS_CRL_INVALID', /holds no PEM certificate revocation list/],
      [makeCrl(dir, 'old.pem', [], 'ca', { expired: true }), true, 'PEER_TLS_CRL_EXPIRED', /past its next update/],
      [makeCrl(dir, 'fine.pem', []), false, 'PEER_TLS_INCOMPLETE', /is for peer TLS, which is off/],
    ];
    for (const [file, tls, code, text] of cases) {
      const r = await agent(file, tls);
      assert.equal(r.code, 2, `${code}: exit code ${r.code}\n${r.stdout}${r.stderr}`);
      assert.match(r.stderr, new RegExp(`\\[${code}\\]`), r.stderr);
      assert.match(r.stderr, text);
      assert.match(r.stderr, /hint: /);
    }
    // Several lists in one file (one per CA): each is read, not only the first.
    const both = join(dir, 'both.pem');
    writeFileSync(both, Buffer.concat([readFileSync(join(dir, 'other.pem')), readFileSync(makeCrl(dir, 'cluster.pem', ['x']))]));
    const ok = await spawnAgent(['--mode', 'ap', '--node-id', 'a', '--dev', '--peer-addr', '127.0.0.1:0', ...peerTlsFlags(a), '--peer-tls-crl-file', both]);
    try {
      assert.equal((await getJson(ok.url, '/v1/status')).cluster.peerLinks.crl, true);
    } finally {
      ok.child.kill('SIGKILL');
      await ok.exited;
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('SIGHUP reads the revocation lists again; lists that would refuse the node itself, or no list, are not taken', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sb-ap-crl-hup-'));
  try {
    const certs = makePeerCerts(dir, { a: 'ca', x: 'ca' });
    const a = certs.a!;
    const file = join(dir, 'lists.pem');
    writeFileSync(file, readFileSync(makeCrl(dir, 'none.pem', [])));
    const agent = await spawnAgent(['--mode', 'ap', '--node-id', 'a', '--dev', '--peer-addr', '127.0.0.1:0', ...peerTlsFlags(a), '--peer-tls-crl-file', file]);
    const logged = (re: RegExp, what: string): Promise<number> => until(async () => re.test(agent.output()), 10_000, what);
    try {
      writeFileSync(file, readFileSync(makeCrl(dir, 'self.pem', ['a'])));
      agent.child.kill('SIGHUP');
      await logged(/peer revocation lists not reloaded, the lists in use stay: .*revokes this node's own certificate/, 'a list revoking the node itself refused');
      writeFileSync(file, 'not a list\n');
      agent.child.kill('SIGHUP');
      await logged(/peer revocation lists not reloaded, the lists in use stay: .*holds no PEM certificate revocation list/, 'a file without a list refused');
      writeFileSync(file, readFileSync(makeCrl(dir, 'x.pem', ['x'])));
      agent.child.kill('SIGHUP');
      await logged(/peer revocation lists read again from/, 'the new lists taken');
      assert.equal(agent.child.exitCode, null, 'the node runs on');
      assert.equal((await getJson(agent.url, '/v1/status')).cluster.peerLinks.crl, true);
    } finally {
      agent.child.kill('SIGKILL');
      await agent.exited;
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
