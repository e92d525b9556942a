// Goal: peer TLS (peerTlsCertFile, peerTlsKeyFile, peerTlsCaFile). Nodes whose certificates
// the cluster's CA signed link (crossed dials too) and exchange messages that cannot be
// read on the wire; a node with a certificate of another CA, or without TLS, is refused on
// both sides with a log line that says what is wrong.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crlNextUpdate } from '../../src/engines/ap/net/crl.js';
import { makeCrl, makePeerCerts } from '../support/pki.js';
import { at, node, reachable, sleep, until, type Node } from './support.js';

/** A TCP relay that keeps a copy of every byte it carries (what someone on the path sees). */
async function tap(target: number): Promise<{ port: number; seen: () => Buffer; server: Server }> {
  const chunks: Buffer[] = [];
  const server = createServer((inbound) => {
    const out = connect(target, '127.0.0.1');
    for (const [from, to] of [[inbound, out], [out, inbound]] as const) {
      from.on('data', (d: Buffer) => {
        chunks.push(Buffer.from(d));
        to.write(d);
      });
      from.on('close', () => to.destroy());
      from.on('error', () => to.destroy());
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as AddressInfo).port, seen: () => Buffer.concat(chunks), server };
}

const closeAll = (...ns: Node[]): Promise<unknown> => Promise.all(ns.map((n) => n.t.close()));

/**
 * Runs `body` with peer certificates made for it (makePeerCerts) and a list of the nodes it
 * starts, which are closed afterwards, with the certificates' directory, whatever happens.
 */
async function withPeerCerts(names: Parameters<typeof makePeerCerts>[1], opts: Parameters<typeof makePeerCerts>[2], body: (certs: ReturnType<typeof makePeerCerts>, nodes: Node[], dir: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'sb-peer-tls-'));
  const nodes: Node[] = [];
  try {
    await body(makePeerCerts(dir, names, opts), nodes, dir);
  } finally {
    await closeAll(...nodes);
    rmSync(dir, { recursive: true, force: true });
  }
}

test('with peer TLS, members of the CA link (crossed dials too) and what they send cannot be read on the wire', () => withPeerCerts({ a: 'ca', b: 'ca', c: 'ca' }, {}, async (certs, nodes) => {
    // Crossed dials: a and b name each other.
    const pa = await node('a');
    const pb = await node('b');
    const [portA, portB] = [pa.t.address().port, pb.t.address().port];
    await closeAll(pa, pb);
    const [a, b] = await Promise.all([
      node('a', { port: portA, peers: [{ id: 'b', host: '127.0.0.1', port: portB }], tls: certs.a }),
      node('b', { port: portB, peers: [{ id: 'a', host: '127.0.0.1', port: portA }], tls: certs.b }),
    ]);
    nodes.push(a!, b!);
    await until(() => reachable(a!, 'b') && reachable(b!, 'a'), 10_000, 'a and b linked over TLS');
    for (let i = 0; i < 20; i++) a!.t.send('b', { type: 'n', i, text: 'plain-text-marker' });
    await until(() => b!.inbox.length === 20, 5_000, 'messages a to b');
    assert.deepEqual(b!.inbox.map((m) => (m.msg as unknown as { i: number }).i), [...Array(20).keys()], 'in order');
    // c reaches a through a relay that records the bytes.
    const relay = await tap(portA);
    try {
      const c = await node('c', { peers: [{ id: 'a', host: '127.0.0.1', port: relay.port }], tls: certs.c });
      nodes.push(c);
      await until(() => reachable(c, 'a'), 10_000, 'c linked to a through the relay');
      c.t.send('a', { type: 'n', text: 'plain-text-marker' });
      await until(() => a!.inbox.some((m) => m.from === 'c'), 5_000, 'the message c to a');
      const wire = relay.seen();
      assert.ok(wire.length > 500, `the relay carried the link (${wire.length} bytes)`);
      // The message's text and the cluster's name, which a plain link carries as they are.
      for (const plain of ['plain-text-marker', 'switchboard']) assert.equal(wire.includes(plain), false, `"${plain}" is not readable on the wire`);
    } finally {
      relay.server.close();
    }
}));

test('with peer TLS, a node whose certificate another CA signed, or one without TLS, is refused on both sides and told why', () => withPeerCerts({ a: 'ca', x: 'other' }, {}, async (certs, nodes, dir) => {
    const a = await node('a', { tls: certs.a });
    nodes.push(a);
    // x trusts the cluster's CA, but its own certificate comes from another CA.
    const x = await node('x', { peers: [at(a, 'a')], tls: certs.x! });
    nodes.push(x);
    await until(() => x.lines.some((l) => /refused by the peer \(CERT_REFUSED\): the certificate of this node is not signed by the CA the peer trusts \(UNABLE_TO_VERIFY_LEAF_SIGNATURE\)/.test(l.msg)), 10_000, 'the refusal on x');
    await until(() => a.lines.some((l) => l.code === 'CERT_REFUSED' && /its certificate is not one of this cluster's/.test(l.msg)), 5_000, 'the refusal on a');
    // y has no TLS at all: a says y does not speak TLS, and y that a closed on it.
    const y = await node('y', { peers: [at(a, 'a')] });
    nodes.push(y);
    await until(() => a.lines.some((l) => /failed its TLS handshake: it does not speak TLS/.test(l.msg)), 10_000, 'a names the plain node');
    await until(() => y.lines.some((l) => /closed by the peer before it answered the hello; if that node runs with peer TLS/.test(l.msg)), 10_000, 'y is told why');
    // a TLS node dialing y: y names the TLS greeting, and the TLS node names the plain peer.
    const w = await node('w', { peers: [at(y, 'y')], tls: certs.a! });
    nodes.push(w);
    await until(() => y.lines.some((l) => /it speaks TLS \(that node runs with --peer-tls-\*\)/.test(l.msg)), 10_000, 'y names the TLS node');
    await until(() => w.lines.some((l) => /no TLS link with peer y at .*it closed the connection during the TLS handshake \(a node without the --peer-tls-\* settings does/.test(l.msg)), 10_000, 'w names the plain node');
    // a node trusting only the other CA refuses a's certificate when it dials a.
    const z = await node('z', { peers: [at(a, 'a')], tls: { ...certs.x!, ca: readFileSync(join(dir, 'peer-other.crt')) } });
    nodes.push(z);
    await until(() => z.lines.some((l) => /no TLS link with peer a at .*its certificate does not lead to a CA of --peer-tls-ca-file/.test(l.msg)), 10_000, 'z refuses a\'s certificate');
    await sleep(300);
    assert.deepEqual(a.t.peers().filter((p) => p.reachable), [], 'a linked to nobody');
    for (const n of [x, y, z, w]) assert.equal(n.t.peers().some((p) => p.reachable), false, `${n.t.nodeId} linked to nobody`);
}));

test('with peer TLS, connections that never finish the TLS handshake are bounded per address and closed after peerHandshakeTimeoutMs', () => withPeerCerts({ a: 'ca', b: 'ca' }, {}, async (certs, nodes) => {
    const idle: Socket[] = [];
    try {
      const a = await node('a', { tls: certs.a! });
      nodes.push(a);
      // As many idle connections as the listener takes, from another address (another host):
      // they connect and never say a word.
      const closed: number[] = [];
      const t0 = performance.now();
      for (let i = 0; i < 52; i++) {
        const sock = connect({ port: a.t.address().port, host: '127.0.0.1', localAddress: '127.0.0.2' });
        sock.on('error', () => undefined);
        sock.on('close', () => closed.push(performance.now() - t0));
        idle.push(sock);
      }
      // Beyond peerMaxPeers + 1 (17) in their handshake from one address: closed at once.
      await until(() => closed.length >= 52 - 17, 5_000, 'the connections beyond the per-address bound closed');
      // The rest: closed once the handshake timeout (1 s in these tests) has passed.
      await until(() => closed.length === 52, 5_000, 'every idle connection closed');
      assert.ok(Math.max(...closed) < 4_000, `the last idle connection closed after ${Math.max(...closed).toFixed(0)} ms`);
      await until(() => a.lines.some((l) => /no TLS handshake within peerHandshakeTimeoutMs/.test(l.msg)), 2_000, 'the timeout logged');
      // A member links meanwhile, even while a new wave holds what one address may hold.
      for (let i = 0; i < 20; i++) {
        const sock = connect({ port: a.t.address().port, host: '127.0.0.1', localAddress: '127.0.0.2' });
        sock.on('error', () => undefined);
        idle.push(sock);
      }
      const b = await node('b', { peers: [at(a, 'a')], tls: certs.b! });
      nodes.push(b);
      await until(() => reachable(b, 'a') && reachable(a, 'b'), 5_000, 'b linked to a');
    } finally {
      for (const sock of idle) sock.destroy();
    }
}));

test('with peer TLS and certificates bound to ids (URI:switchboard:node:ID), a node may link only as the id its certificate names', () => withPeerCerts({ a: 'ca', b: 'ca', mallory: 'ca' }, { bindIds: true }, async (certs, nodes) => {
    const a = await node('a', { tls: certs.a! });
    nodes.push(a);
    const b = await node('b', { peers: [at(a, 'a')], tls: certs.b! });
    nodes.push(b);
    await until(() => reachable(a, 'b') && reachable(b, 'a'), 10_000, 'a and b linked with their own certificates');
    // mallory holds a certificate the CA signed, for "mallory", and claims to be b.
    const fake = await node('b', { peers: [at(a, 'a')], tls: certs.mallory! });
    nodes.push(fake);
    await until(() => a.lines.some((l) => l.code === 'CERT_ID_MISMATCH' && /node "b" presents a certificate issued for node "mallory"/.test(l.msg)), 10_000, 'a refuses the false b');
    await until(() => fake.lines.some((l) => /refused by the peer \(CERT_ID_MISMATCH\)/.test(l.msg)), 5_000, 'the false b is told');
    // Dialing: a node that answers as "c" with mallory's certificate is refused by the
    // dialer (another process of node a, with a's own certificate).
    const c = await node('c', { tls: certs.mallory! });
    nodes.push(c);
    const d = await node('a', { peers: [at(c, 'c')], tls: certs.a! });
    nodes.push(d);
    await until(() => d.lines.some((l) => /it is node "c", but its certificate is issued for node "mallory"/.test(l.msg)), 10_000, 'the dialer refuses the false c');
    await sleep(200);
    assert.equal(a.t.peers().find((p) => p.id === 'b')?.reachable, true, 'the real b stays linked');
    assert.equal(a.inbox.length, 0);
    assert.equal(d.t.peers().some((p) => p.reachable), false, 'd linked to nobody');
}));

test('with a revocation list (peerTlsCrlFile), a member whose certificate it revokes is refused both ways and told why; the others link', () => withPeerCerts({ a: 'ca', b: 'ca', m: 'ca' }, {}, async (certs, nodes, dir) => {
    const crl = [readFileSync(makeCrl(dir, 'crl.pem', ['m']))];
    const a = await node('a', { tls: { ...certs.a!, crl } });
    nodes.push(a);
    // The list is good for a day: inside the day before its next update the node says so.
    const next = crlNextUpdate(crl[0]!);
    assert.ok(next !== null && Math.abs(next.getTime() - (Date.now() + 86_400_000)) < 120_000, `next update ${next?.toISOString()}`);
    assert.equal(a.t.security?.().crlNextUpdate, next.toISOString());
    await until(() => a.lines.some((l) => l.level === 40 && /the peer revocation lists \(--peer-tls-crl-file\) expire at .* publish fresh lists/.test(l.msg)), 5_000, 'the warning that the lists need renewing');
    const b = await node('b', { peers: [at(a, 'a')], tls: { ...certs.b!, crl } });
    nodes.push(b);
    await until(() => reachable(a, 'b') && reachable(b, 'a'), 10_000, 'a and b linked, with the list');
    // m, revoked, dials a: a refuses it and says why; m is told it is revoked.
    const m = await node('m', { peers: [at(a, 'a')], tls: certs.m! });
    nodes.push(m);
    await until(() => a.lines.some((l) => l.code === 'CERT_REFUSED' && /its certificate is revoked \(CERT_REVOKED; --peer-tls-crl-file\)/.test(l.msg)), 10_000, 'the refusal on a');
    await until(() => m.lines.some((l) => /refused by the peer \(CERT_REFUSED\): the certificate of this node is revoked/.test(l.msg)), 10_000, 'm is told');
    // b dials m: b's end refuses m's certificate.
    const b2 = await node('b2', { peers: [at(m, 'm')], tls: { ...certs.b!, crl } });
    nodes.push(b2);
    await until(() => b2.lines.some((l) => /no TLS link with peer m at .*its certificate is revoked \(--peer-tls-crl-file lists it\)/.test(l.msg)), 10_000, 'b2 refuses m');
    await sleep(300);
    assert.equal(m.t.peers().some((p) => p.reachable), false, 'm linked to nobody');
    assert.equal(reachable(a, 'b'), true, 'a and b still linked');
}));

test('revocation lists reloaded: the links up are made again and checked against the new lists, so a member revoked now is cut off now', () => withPeerCerts({ a: 'ca', b: 'ca', c: 'ca' }, {}, async (certs, nodes, dir) => {
    const none = [readFileSync(makeCrl(dir, 'none.pem', []))];
    const a = await node('a', { tls: { ...certs.a!, crl: none } });
    nodes.push(a);
    const b = await node('b', { peers: [at(a, 'a')], tls: certs.b! });
    const c = await node('c', { peers: [at(a, 'a')], tls: certs.c! });
    nodes.push(b, c);
    await until(() => reachable(a, 'b') && reachable(a, 'c'), 10_000, 'a linked to b and c');
    // The same lists again (a SIGHUP for the token file alone): no link is made again.
    assert.equal(a.t.reloadRevocationLists!([readFileSync(join(dir, 'none.pem'))]), 0, 'the same lists drop no link');
    assert.equal(reachable(a, 'b') && reachable(a, 'c'), true, 'a still linked to b and c');
    // b's certificate is revoked: a takes the new lists.
    const made = a.t.reloadRevocationLists!([readFileSync(makeCrl(dir, 'b-revoked.pem', ['b']))]);
    assert.equal(made, 2, 'both links made again');
    await until(() => a.lines.some((l) => l.code === 'CERT_REFUSED' && /its certificate is revoked/.test(l.msg)), 10_000, 'b refused on its way back');
    await until(() => reachable(a, 'c'), 10_000, 'c linked again');
    await sleep(500);
    assert.equal(reachable(a, 'b'), false, 'b stays out');
}));

test('revocation lists reloaded: connections still in a handshake (TLS\'s, or the hello after it) are cut', () => withPeerCerts({ a: 'ca', b: 'ca' }, {}, async (certs, nodes, dir) => {
    // A long handshake timeout: only the reload can end the connections within the test.
    const a = await node('a', { tls: { ...certs.a!, crl: [readFileSync(makeCrl(dir, 'none.pem', []))] }, limits: { peerHandshakeTimeoutMs: 60_000 } });
    nodes.push(a);
    // b's certificate passes TLS under the old lists; the peer hello never comes.
    const hello = tlsConnect({ host: '127.0.0.1', port: a.t.address().port, cert: certs.b!.cert, key: certs.b!.key, ca: certs.b!.ca, servername: 'a', rejectUnauthorized: false, minVersion: 'TLSv1.3' });
    // A connection that never begins its TLS handshake (it would finish it on the old lists).
    const silent = connect(a.t.address().port, '127.0.0.1');
    const closed = new Set<string>();
    for (const [name, s] of [['hello', hello], ['silent', silent]] as const) {
      s.on('close', () => closed.add(name));
      s.on('error', () => {});
    }
    try {
      await new Promise<void>((resolve, reject) => {
        hello.once('secureConnect', () => resolve());
        hello.once('error', reject);
      });
      await new Promise<void>((resolve) => (silent.readyState === 'open' ? resolve() : silent.once('connect', () => resolve())));
      await sleep(200);
      assert.equal(closed.size, 0, 'both connections wait for their handshake');
      assert.equal(a.t.reloadRevocationLists!([readFileSync(makeCrl(dir, 'b-revoked.pem', ['b']))]), 2, 'both connections are counted');
      await until(() => closed.size === 2, 10_000, 'both connections cut');
    } finally {
      hello.destroy();
      silent.destroy();
    }
}));

test('the next update of a revocation list is read from its DER; what is not a list is refused', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sb-crl-'));
  try {
    makePeerCerts(dir, { a: 'ca' });
    const pem = readFileSync(makeCrl(dir, 'l.pem', ['a']));
    const next = crlNextUpdate(pem);
    assert.ok(next !== null && Math.abs(next.getTime() - (Date.now() + 86_400_000)) < 120_000, String(next));
    assert.throws(() => crlNextUpdate('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'), /no PEM certificate revocation list/);
    assert.throws(() => crlNextUpdate('-----BEGIN X509 CRL-----\nMAM=\n-----END X509 CRL-----\n'), /DER/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('revocation lists past their next update: the node says so at once, and a link checked against them is refused as the lists\' fault', () => withPeerCerts({ a: 'ca', b: 'ca' }, {}, async (certs, nodes, dir) => {
    const a = await node('a', { tls: { ...certs.a!, crl: [readFileSync(makeCrl(dir, 'old.pem', [], 'ca', { expired: true }))] } });
    nodes.push(a);
    await until(() => a.lines.some((l) => l.level === 50 && /the peer revocation lists \(--peer-tls-crl-file\) expired at .*every new peer link fails/.test(l.msg)), 5_000, 'the error at start');
    const b = await node('b', { peers: [at(a, 'a')], tls: certs.b! });
    nodes.push(b);
    await until(() => a.lines.some((l) => l.code === 'CERT_REFUSED' && /--peer-tls-crl-file: a revocation list is past its next update/.test(l.msg)), 10_000, 'a names its lists');
    await until(() => b.lines.some((l) => /refused by the peer \(CERT_REFUSED\): the peer cannot check this node's certificate against its revocation lists \(CRL_HAS_EXPIRED\)/.test(l.msg)), 10_000, 'b is told the fault is the peer\'s lists');
    assert.equal(reachable(a, 'b'), false);
}));
