// Goal: the peer links between ap nodes over real sockets on 127.0.0.1: messages arrive in
// order over one link per pair; a wrong or malformed id, cluster or protocol version is refused with a
// clear log line; a restarted peer is relinked; the outgoing queue and the frame size are
// bounded; a peer that stops answering turns unreachable within peerPingIntervalMs x
// peerMissedPings; --join learns every member through one address; close says goodbye.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { encodeFrame, FrameDecoder, FrameKind, PEER_PROTOCOL_VERSION, type Frame } from '../../src/engines/ap/net/frame.js';
import { FaultProxy } from '../support/fault-proxy.js';
import { at, node, reachable, sleep, TEST_LIMITS, until, type Node } from './support.js';

const closeAll = async (...ns: (Node | undefined)[]): Promise<void> => {
  await Promise.all(ns.map((n) => n?.t.close()));
};

/** Two nodes a and b started at once, each naming the other in --peers: their dials cross. */
async function crossedPair(opts: { secret?: string } = {}): Promise<[Node, Node]> {
  // Ports are known in advance so that each node names the other in --peers.
  const pa = await node('a');
  const pb = await node('b');
  const portA = pa.t.address().port;
  const portB = pb.t.address().port;
  await closeAll(pa, pb);
  return Promise.all([
    node('a', { port: portA, peers: [{ id: 'b', host: '127.0.0.1', port: portB }], ...opts }),
    node('b', { port: portB, peers: [{ id: 'a', host: '127.0.0.1', port: portA }], ...opts }),
  ]);
}

test('two nodes link once and deliver messages in order both ways', async () => {
  const b = await node('b');
  const a = await node('a', { peers: [at(b, 'b')] });
  try {
    await until(() => reachable(a, 'b') && reachable(b, 'a'), 5_000, 'a and b linked');
    assert.deepEqual(a.t.peerIds(), ['b']);
    assert.deepEqual(b.t.peerIds(), ['a'], 'b learned a from the handshake');
    for (let i = 0; i < 2_000; i++) assert.equal(a.t.send('b', { type: 'n', i }), true);
    for (let i = 0; i < 100; i++) b.t.send('a', { type: 'back', i, blob: new Uint8Array([i]) });
    await until(() => b.inbox.length === 2_000 && a.inbox.length === 100, 5_000, 'every message');
    assert.deepEqual(b.inbox.map((m) => m.msg.i), [...Array(2_000).keys()]);
    assert.ok(b.inbox.every((m) => m.from === 'a'));
    assert.deepEqual([...(a.inbox[5]!.msg.blob as Uint8Array)], [5]);
    assert.equal(a.t.send('nobody', { type: 'n' }), false, 'an unknown peer');
    await until(() => a.t.peers()[0]!.rttMs !== null, 2_000, 'an rtt');
    const s = a.t.peers()[0]!;
    assert.ok(s.rttMs! >= 0 && s.rttMs! < 1_000, `rtt ${s.rttMs}`);
    assert.equal(s.sentFrames, 2_000);
    assert.equal(s.dropped, 0);
    // One link: each side saw the other come up exactly once.
    assert.deepEqual(a.changes, [{ peer: 'b', up: true }]);
    assert.deepEqual(b.changes, [{ peer: 'a', up: true }]);
  } finally {
    await closeAll(a, b);
  }
});

test('when both nodes dial each other, one link survives and both agree on it', async () => {
  const [a, b] = await crossedPair();
  try {
    await until(() => reachable(a, 'b') && reachable(b, 'a'), 5_000, 'linked');
    await sleep(300);
    for (let i = 0; i < 200; i++) a.t.send('b', { type: 'n', i });
    await until(() => b.inbox.length === 200, 5_000, 'messages over the kept link');
    assert.deepEqual(b.inbox.map((m) => m.msg.i), [...Array(200).keys()]);
    assert.equal(a.changes.filter((c) => !c.up).length, 0, 'the duplicate closed without a down');
  } finally {
    await closeAll(a, b);
  }
});

test('a peer with another id at the configured address is refused, with a log line naming both ids', async () => {
  const b = await node('b');
  const a = await node('a', { peers: [at(b, 'x')] });
  try {
    await until(() => b.lines.some((l) => /WRONG_ID|expected node "x"/.test(l.msg)), 5_000, 'the refusal on b');
    await until(() => a.lines.some((l) => /refused/.test(l.msg) && /"x"/.test(l.msg)), 5_000, 'the refusal on a');
    await sleep(300);
    assert.equal(reachable(a, 'x'), false);
    assert.deepEqual(b.t.peerIds(), [], 'b did not take a for a member');
    assert.equal(a.t.send('x', { type: 'n' }), false);
  } finally {
    await closeAll(a, b);
  }
});

test('a node of another cluster is refused on both sides', async () => {
  const b = await node('b', { cluster: 'blue' });
  const a = await node('a', { peers: [at(b, 'b')], cluster: 'green' });
  try {
    await until(() => b.lines.some((l) => l.code === 'WRONG_CLUSTER' && /cluster "green"/.test(l.msg)), 5_000, 'the refusal on b');
    await until(() => a.lines.some((l) => /WRONG_CLUSTER/.test(l.msg)), 5_000, 'the refusal on a');
    assert.equal(reachable(a, 'b'), false);
  } finally {
    await closeAll(a, b);
  }
});

/** A raw client that speaks frames by hand. */
async function raw(port: number): Promise<{ s: Socket; frames: Frame[]; closed: Promise<void> }> {
  const s = connect(port, '127.0.0.1');
  await new Promise((r) => s.once('connect', r));
  const d = new FrameDecoder(1 << 20);
  const frames: Frame[] = [];
  s.on('data', (c: Buffer) => frames.push(...d.push(c)));
  s.on('error', () => undefined);
  return { s, frames, closed: new Promise((r) => s.once('close', () => r())) };
}

const hello = (proto: number, id: string) => encodeFrame([FrameKind.Hello, { proto, cluster: 'switchboard', id, listen: '127.0.0.1:1', expect: null, members: [] }], 1 << 20);

/** A raw hello with `proto` and `id` is refused with `code`, and the refusal is logged saying `logged`. */
async function refusesHello(proto: number, id: string, code: string, logged: RegExp): Promise<void> {
  const b = await node('b');
  try {
    const r = await raw(b.t.address().port);
    r.s.write(hello(proto, id));
    await r.closed;
    assert.equal(r.frames[0]?.[0], FrameKind.Refuse);
    assert.equal((r.frames[0]![1] as { code: string }).code, code);
    assert.ok(b.lines.some((l) => /refused a peer link/.test(l.msg) && logged.test(l.msg)), 'logged');
    assert.deepEqual(b.t.peerIds(), []);
  } finally {
    await closeAll(b);
  }
}

test('a peer speaking another protocol version is refused with WRONG_VERSION and a log line', () => refusesHello(PEER_PROTOCOL_VERSION + 1, 'future', 'WRONG_VERSION', /peer protocol 2/));

test('a peer whose id breaks the node-id rule is refused with INVALID_ID and a log line', () => refusesHello(PEER_PROTOCOL_VERSION, 'bad id', 'INVALID_ID', /"bad id"/));

test('a frame announced above peerMaxFrameBytes closes the link; one too large to send is dropped and logged', async () => {
  const b = await node('b', { limits: { peerMaxFrameBytes: 64 * 1024 } });
  try {
    const r = await raw(b.t.address().port);
    r.s.write(hello(PEER_PROTOCOL_VERSION, 'm'));
    await until(() => reachable(b, 'm'), 2_000, 'the raw peer linked');
    const head = Buffer.alloc(4);
    head.writeUInt32BE(64 * 1024 + 1, 0);
    r.s.write(head);
    await r.closed;
    await until(() => b.lines.some((l) => /FRAME_TOO_LARGE/.test(l.msg)), 2_000, 'the log line');
    assert.equal(reachable(b, 'm'), false);

    const a = await node('a', { peers: [at(b, 'b')], limits: { peerMaxFrameBytes: 64 * 1024 } });
    try {
      await until(() => reachable(a, 'b'), 5_000, 'linked');
      assert.equal(a.t.send('b', { type: 'huge', s: 'x'.repeat(100 * 1024) }), false);
      assert.ok(a.lines.some((l) => /does not fit in one frame/.test(l.msg)));
      assert.equal(a.t.send('b', { type: 'small' }), true);
      await until(() => b.inbox.some((m) => m.msg.type === 'small'), 2_000, 'the next message');
      assert.equal(a.t.peers()[0]!.dropped, 1);
    } finally {
      await closeAll(a);
    }
  } finally {
    await closeAll(b);
  }
});

test('before its handshake a connection may send only small frames: a stranger cannot make the node buffer peerMaxFrameBytes', async () => {
  const b = await node('b');
  try {
    // 1 MiB announced before any hello: far below peerMaxFrameBytes (16 MiB), far above
    // what a hello needs.
    const r = await raw(b.t.address().port);
    const head = Buffer.alloc(4);
    head.writeUInt32BE(1024 * 1024, 0);
    r.s.write(head);
    await r.closed;
    await until(() => b.lines.some((l) => /FRAME_TOO_LARGE/.test(l.msg) && /handshake frame limit/.test(l.err as string)), 2_000, 'the log line');
    // A real peer still links, and then sends frames of up to peerMaxFrameBytes.
    const a = await node('a', { peers: [at(b, 'b')] });
    try {
      await until(() => reachable(a, 'b'), 5_000, 'linked');
      assert.equal(a.t.send('b', { type: 'big', s: 'x'.repeat(2 * 1024 * 1024) }), true);
      await until(() => b.inbox.some((m) => m.msg.type === 'big'), 5_000, 'a 2 MiB message after the handshake');
    } finally {
      await closeAll(a);
    }
  } finally {
    await closeAll(b);
  }
});

test('the outgoing queue is bounded: sends past peerQueueMaxMessages are dropped and counted', async () => {
  const b = await node('b');
  const a = await node('a', { peers: [at(b, 'b')], limits: { peerQueueMaxMessages: 10 } });
  try {
    await until(() => reachable(a, 'b'), 5_000, 'linked');
    // All in one turn of the event loop: nothing is flushed in between.
    const accepted = Array.from({ length: 100 }, (_, i) => a.t.send('b', { type: 'n', i })).filter(Boolean).length;
    assert.equal(accepted, 10);
    assert.equal(a.t.peers()[0]!.queued, 10);
    assert.equal(a.t.peers()[0]!.dropped, 90);
    await until(() => b.inbox.length === 10, 2_000, 'the queued ten');
    assert.deepEqual(b.inbox.map((m) => m.msg.i), [...Array(10).keys()]);
    assert.equal(a.t.peers()[0]!.queued, 0);
  } finally {
    await closeAll(a, b);
  }
});

test('a restarted peer is relinked with backoff, and messages to it while down are refused', async () => {
  let b = await node('b');
  const port = b.t.address().port;
  const a = await node('a', { peers: [at(b, 'b')] });
  try {
    await until(() => reachable(a, 'b'), 5_000, 'linked');
    await b.t.close();
    const downIn = await until(() => !reachable(a, 'b'), 2_000, 'b down after its goodbye');
    assert.ok(downIn < 1_000, `down after ${downIn} ms`);
    assert.equal(a.t.send('b', { type: 'lost' }), false);
    await sleep(500); // a retries against a closed port meanwhile
    b = await node('b', { port });
    const upIn = await until(() => reachable(a, 'b') && reachable(b, 'a'), 5_000, 'relinked');
    assert.ok(upIn < TEST_LIMITS.peerReconnectMaxMs + 2_000, `relinked after ${upIn} ms`);
    a.t.send('b', { type: 'again' });
    await until(() => b.inbox.some((m) => m.msg.type === 'again'), 2_000, 'a message on the new link');
    assert.ok(!b.inbox.some((m) => m.msg.type === 'lost'));
    assert.deepEqual(a.changes.map((c) => c.up), [true, false, true]);
  } finally {
    await closeAll(a, b);
  }
});

test('a peer that stops answering (stalled path) is unreachable within ping interval x missed pings, and comes back after', async () => {
  const a0 = await node('a');
  const portA = a0.t.address().port;
  await closeAll(a0);
  const b = await node('b');
  // Both directions go through proxies: a dials b through pb; b dials a through pa.
  const pb = await FaultProxy.start({ host: '127.0.0.1', port: b.t.address().port });
  const pa = await FaultProxy.start({ host: '127.0.0.1', port: portA });
  const a = await node('a', { port: portA, peers: [{ id: 'b', host: '127.0.0.1', port: pb.port }] });
  try {
    await until(() => reachable(a, 'b') && reachable(b, 'a'), 5_000, 'linked');
    pb.stall();
    pa.stall();
    const bound = TEST_LIMITS.peerPingIntervalMs * TEST_LIMITS.peerMissedPings; // 1 s
    const took = await until(() => !reachable(a, 'b'), bound + 2_000, 'a sees b unreachable');
    assert.ok(took >= bound / 2, `unreachable after ${took} ms: too early for missed pings`);
    assert.ok(a.lines.some((l) => new RegExp(`nothing heard for ${TEST_LIMITS.peerMissedPings} ping intervals`).test(l.msg)));
    pb.restore();
    pa.restore();
    await until(() => reachable(a, 'b') && reachable(b, 'a'), 5_000, 'relinked after the path came back');
  } finally {
    await closeAll(a, b);
    await pa.close();
    await pb.close();
  }
});

test('--join: a new node that knows one address learns every member and links to all of them', async () => {
  const b = await node('b');
  const a = await node('a', { peers: [at(b, 'b')] });
  try {
    await until(() => reachable(a, 'b'), 5_000, 'a-b');
    const c = await node('c', { join: [{ host: '127.0.0.1', port: a.t.address().port }] });
    try {
      await until(() => reachable(c, 'a') && reachable(c, 'b') && reachable(b, 'c') && reachable(a, 'c'), 5_000, 'c linked to a and b');
      assert.deepEqual(c.t.peerIds().sort(), ['a', 'b']);
      assert.deepEqual(b.t.members().map((m) => m.id).sort(), ['a', 'b', 'c']);
      c.t.send('b', { type: 'hi' });
      await until(() => b.inbox.some((m) => m.from === 'c' && m.msg.type === 'hi'), 2_000, 'c to b');
    } finally {
      await closeAll(c);
    }
  } finally {
    await closeAll(a, b);
  }
});

test('five nodes given the same --peers list (their own entry included) form a full mesh, one link per pair', async () => {
  const ids = ['n1', 'n2', 'n3', 'n4', 'n5'];
  const probes = await Promise.all(ids.map((id) => node(id)));
  const ports = probes.map((p) => p.t.address().port);
  await closeAll(...probes);
  const list = ids.map((id, i) => ({ id, host: '127.0.0.1', port: ports[i]! }));
  const nodes = await Promise.all(ids.map((id, i) => node(id, { port: ports[i]!, peers: list })));
  try {
    await until(() => nodes.every((n) => n.t.peers().length === 4 && n.t.peers().every((p) => p.reachable)), 10_000, 'a full mesh');
    await sleep(500);
    for (const n of nodes) {
      assert.equal(n.changes.filter((c) => !c.up).length, 0, `${n.t.nodeId} saw no link go down`);
      assert.deepEqual(n.t.peerIds().sort(), ids.filter((x) => x !== n.t.nodeId));
    }
    // Every pair exchanges messages over its one link.
    for (const n of nodes) for (const p of n.t.peerIds()) n.t.send(p, { type: 'hi', from: n.t.nodeId });
    await until(() => nodes.every((n) => n.inbox.length === 4), 5_000, 'four messages at every node');
  } finally {
    await closeAll(...nodes);
  }
});

test('peer link metrics: one series per peer, read at scrape time', async () => {
  const { Registry } = await import('prom-client');
  const { registerPeerLinkMetrics } = await import('../../src/engines/ap/net/index.js');
  const b = await node('b');
  const a = await node('a', { peers: [at(b, 'b')] });
  try {
    const reg = new Registry();
    registerPeerLinkMetrics(a.t, reg);
    await until(() => reachable(a, 'b') && a.t.peers()[0]!.rttMs !== null, 5_000, 'linked with an rtt');
    for (let i = 0; i < 5; i++) a.t.send('b', { type: 'n', i });
    await until(() => b.inbox.length === 5, 2_000, 'delivered');
    let text = await reg.metrics();
    assert.match(text, /switchboard_ap_peer_link_up\{peer="b"\} 1/);
    assert.match(text, /switchboard_ap_peer_sent_frames_total\{peer="b"\} 5/);
    assert.match(text, /switchboard_ap_peer_rtt_seconds\{peer="b"\} \d/);
    await b.t.close();
    await until(() => !reachable(a, 'b'), 2_000, 'b down');
    a.t.send('b', { type: 'lost' });
    text = await reg.metrics();
    assert.match(text, /switchboard_ap_peer_link_up\{peer="b"\} 0/);
    assert.match(text, /switchboard_ap_peer_dropped_messages_total\{peer="b"\} 1/);
    assert.match(text, /switchboard_ap_peer_sent_frames_total\{peer="b"\} 5/, 'a counter never goes back');
  } finally {
    await closeAll(a, b);
  }
});

test('a hello whose fields have the wrong types closes the link and never the process', async () => {
  const b = await node('b');
  try {
    // `{ toString: 1 }` cannot be turned into a string: building the refusal threw, uncaught.
    for (const bad of [{ proto: { toString: 1 } }, { cluster: { toString: 1 } }, { listen: { toString: 1 } }]) {
      const r = await raw(b.t.address().port);
      r.s.write(encodeFrame([FrameKind.Hello, { proto: PEER_PROTOCOL_VERSION, cluster: 'switchboard', id: 'odd', listen: '127.0.0.1:1', expect: null, members: [], ...bad }] as unknown as Frame, 1 << 20));
      await r.closed;
    }
    // The node is alive and still links normally.
    const a = await node('a', { peers: [at(b, 'b')] });
    try {
      await until(() => reachable(a, 'b') && reachable(b, 'a'), 5_000, 'a and b linked');
    } finally {
      await closeAll(a);
    }
  } finally {
    await closeAll(b);
  }
});

test('when both nodes dial each other at once, no message sent from the moment a peer is reachable is lost or reordered', async () => {
  // The race is between the two handshakes: each node may take the link it accepted for
  // up before the link it dialed is welcomed, and send on it. Several rounds, each with
  // two fresh nodes that dial each other at the same moment and send at once.
  const rounds = 12;
  const perSide = 300;
  for (let r = 0; r < rounds; r++) {
    const [a, b] = await crossedPair();
    const sent = { a: 0, b: 0 };
    const pump = (n: Node, self: 'a' | 'b', to: string): void => {
      // From the first peer-up on: a message every turn until perSide were accepted.
      const step = (): void => {
        if (sent[self] >= perSide) return;
        if (n.t.send(to, { type: 'n', i: sent[self] })) sent[self]++;
        setImmediate(step);
      };
      n.t.onPeerChange((peer, up) => {
        if (peer === to && up && sent[self] === 0) step();
      });
    };
    pump(a, 'a', 'b');
    pump(b, 'b', 'a');
    try {
      await until(() => sent.a === perSide && sent.b === perSide, 10_000, `round ${r}: every message accepted`);
      await sleep(300);
      assert.deepEqual(b.inbox.map((m) => m.msg.i), [...Array(perSide).keys()], `round ${r}: b got every message of a, in order`);
      assert.deepEqual(a.inbox.map((m) => m.msg.i), [...Array(perSide).keys()], `round ${r}: a got every message of b, in order`);
      assert.equal(a.changes.filter((c) => !c.up).length + b.changes.filter((c) => !c.up).length, 0, `round ${r}: no peer-down`);
    } finally {
      await closeAll(a, b);
    }
  }
});

test('a node that joins through two addresses, one of them delayed, links to each member once: no peer-down, no message lost, no seed redialed', async () => {
  for (let r = 0; r < 4; r++) {
    const a = await node('a');
    const b = await node('b', { peers: [at(a, 'a')] });
    await until(() => reachable(a, 'b'), 5_000, 'a and b linked');
    // The second address reaches a through a proxy that delays every chunk: b's welcome
    // (which names a) arrives while the --join dial to a is still in its handshake.
    const slow = await FaultProxy.start({ host: '127.0.0.1', port: a.t.address().port });
    slow.delay(5 + r * 6);
    const c = await node('c', { join: [{ host: '127.0.0.1', port: b.t.address().port }, { host: '127.0.0.1', port: slow.port }] });
    const sent = { c: 0, a: 0 };
    const pump = (n: Node, self: 'a' | 'c', to: string): void => {
      const step = (): void => {
        if (sent[self] >= 200) return;
        if (n.t.send(to, { type: 'n', i: sent[self] })) sent[self]++;
        setImmediate(step);
      };
      n.t.onPeerChange((peer, up) => peer === to && up && sent[self] === 0 && step());
    };
    pump(c, 'c', 'a');
    pump(a, 'a', 'c');
    try {
      await until(() => sent.c === 200 && sent.a === 200, 10_000, `round ${r}: every message accepted`);
      await until(() => a.inbox.filter((m) => m.from === 'c').length >= 200 && c.inbox.filter((m) => m.from === 'a').length >= 200, 5_000, `round ${r}: every message delivered`);
      assert.deepEqual(a.inbox.filter((m) => m.from === 'c').map((m) => m.msg.i), [...Array(200).keys()], `round ${r}: c to a in order`);
      assert.deepEqual(c.inbox.filter((m) => m.from === 'a').map((m) => m.msg.i), [...Array(200).keys()], `round ${r}: a to c in order`);
      // A --join address refused as a duplicate is done: it is not dialed again.
      // (The delayed --join dial settles within a few delays: once refused, at most.)
      const refusals = (): number => a.lines.filter((l) => /refused a peer link/.test(l.msg)).length;
      await sleep(500);
      const settled = refusals();
      assert.ok(settled <= 2, `round ${r}: ${settled} dials refused while joining`);
      await sleep(1_000);
      assert.equal(refusals(), settled, `round ${r}: no dial refused after the join settled`);
      assert.deepEqual([...a.changes, ...c.changes].filter((x) => !x.up), [], `round ${r}: no peer-down`);
    } finally {
      await closeAll(a, b, c);
      await slow.close();
    }
  }
});

test('a dial that connects and is never answered keeps the crossed dial of the peer out no longer than the handshake timeout', async () => {
  // a knows b by an address where something accepts connections and never answers (a
  // stale address); b reaches a. a's dial has sent its hello when b's arrives.
  const held: Socket[] = [];
  const sink = createServer((s) => held.push(s));
  await new Promise<void>((r) => sink.listen(0, '127.0.0.1', r));
  const sinkPort = (sink.address() as AddressInfo).port;
  const pb = await node('b');
  const portB = pb.t.address().port;
  await closeAll(pb);
  const a = await node('a', { peers: [{ id: 'b', host: '127.0.0.1', port: sinkPort }] });
  let b: Node | undefined;
  try {
    await until(() => held.length > 0, 5_000, "a's dial connected");
    await sleep(50);
    const t0 = performance.now();
    b = await node('b', { port: portB, peers: [at(a, 'a')] });
    await until(() => reachable(a, 'b') && reachable(b!, 'a'), TEST_LIMITS.peerHandshakeTimeoutMs + 3_000, 'linked');
    const ms = performance.now() - t0;
    assert.ok(ms < TEST_LIMITS.peerHandshakeTimeoutMs + 2_000, `linked after ${Math.round(ms)} ms`);
    assert.ok(a.lines.filter((l) => /refused a peer link/.test(l.msg)).length <= 1, 'the peer was not refused again and again');
  } finally {
    await closeAll(a, b);
    for (const s of held) s.destroy();
    await new Promise<void>((r) => sink.close(() => r()));
  }
});

test('a peer that comes back under the same id while its old link still looks alive here is reported down and up, so replication starts over with it', async () => {
  const a = await node('a');
  const proxy = await FaultProxy.start({ host: '127.0.0.1', port: a.t.address().port });
  const b1 = await node('b', { peers: [{ id: 'a', host: '127.0.0.1', port: proxy.port }] });
  let b2: Node | undefined;
  try {
    // Both ends: a takes the link up when it welcomes b, b when the welcome arrives; a b
    // that closes before that ends a link still in its handshake, which a then sees go.
    await until(() => reachable(a, 'b') && reachable(b1, 'a'), 5_000, 'a and b linked');
    // b's host vanishes: its bye never arrives and a's side of the old link stays open.
    proxy.stall();
    void b1.t.close();
    await sleep(50);
    b2 = await node('b', { peers: [at(a, 'a')] });
    await until(() => reachable(b2!, 'a') && a.changes.length === 3, 5_000, 'the new link');
    assert.deepEqual(a.changes, [
      { peer: 'b', up: true },
      { peer: 'b', up: false },
      { peer: 'b', up: true },
    ]);
    assert.ok(a.lines.some((l) => l.level === 30 && /peer b dialed again: its new link replaces the old one/.test(l.msg)));
  } finally {
    await closeAll(a, b2);
    await proxy.close();
  }
});

test('with a cluster secret, nodes that share it link (crossed dials too) and nodes that do not are refused on both sides', async () => {
  const SECRET = 'correct horse battery staple';
  // Crossed dials, both with the secret: one link, messages both ways.
  const [a, b] = await crossedPair({ secret: SECRET });
  const outsiders: Node[] = [];
  try {
    await until(() => reachable(a, 'b') && reachable(b, 'a'), 5_000, 'a and b linked');
    for (let i = 0; i < 50; i++) a.t.send('b', { type: 'n', i });
    await until(() => b.inbox.length === 50, 5_000, 'messages');
    assert.deepEqual([...a.changes, ...b.changes].filter((c) => !c.up), []);

    // Without the secret: refused by a, and told why.
    const none = await node('x', { peers: [at(a, 'a')] });
    outsiders.push(none);
    await until(() => a.lines.some((l) => l.code === 'AUTH_REQUIRED' && /node "x" has no cluster secret/.test(l.msg)), 5_000, 'AUTH_REQUIRED on a');
    await until(() => none.lines.some((l) => /refused by the peer \(AUTH_REQUIRED\)/.test(l.msg)), 5_000, 'the refusal on x');
    // Another secret: y proves first (a stranger learns nothing to guess from), and a refuses.
    const other = await node('y', { peers: [at(a, 'a')], secret: 'another secret entirely' });
    outsiders.push(other);
    await until(() => a.lines.some((l) => l.code === 'AUTH_FAILED' && /node "y" does not know this cluster's secret/.test(l.msg)), 5_000, 'AUTH_FAILED on a');
    await until(() => other.lines.some((l) => /refused by the peer \(AUTH_FAILED\)/.test(l.msg)), 5_000, 'the refusal on y');
    // A node with the secret dialing one without it: refused by the node without, which
    // never counts it as linked, not even for a moment.
    const plain = await node('z');
    outsiders.push(plain);
    const c = await node('c', { peers: [at(plain, 'z')], secret: SECRET });
    outsiders.push(c);
    await until(() => c.lines.some((l) => /refused by the peer \(NO_SECRET\): the node there has no cluster secret/.test(l.msg)), 5_000, 'the refusal on c');
    await until(() => plain.lines.some((l) => l.code === 'NO_SECRET' && /proves a cluster secret, and this node has none/.test(l.msg)), 5_000, 'the refusal on z');
    assert.deepEqual(plain.changes, [], 'z never took c for linked');
    await sleep(300);
    for (const n of outsiders) assert.equal(n.t.peers().some((p) => p.reachable), false, `${n.t.nodeId} linked to nobody`);
    assert.deepEqual(a.t.peers().filter((p) => p.reachable).map((p) => p.id), ['b']);
  } finally {
    await closeAll(a, b, ...outsiders);
  }
});

test('with a cluster secret, a stranger learns nothing: no id, no proof to guess from, a forged proof refused, its refusals not believed', async () => {
  const b = await node('b', { secret: 'the cluster secret, long enough' });
  try {
    // A dialer without the secret's proof: b challenges, and says nothing else.
    const r = await raw(b.t.address().port);
    r.s.write(encodeFrame([FrameKind.Hello, { proto: PEER_PROTOCOL_VERSION, cluster: 'switchboard', id: 'm', listen: '127.0.0.1:1', expect: null, members: [], nonce: new Uint8Array(16).fill(7) }], 1 << 20));
    await until(() => r.frames.length >= 1, 2_000, 'the challenge');
    assert.equal(r.frames[0]![0], FrameKind.Auth);
    assert.deepEqual(Object.keys(r.frames[0]![1] as object), ['nonce'], 'only a nonce: no id, no proof');
    assert.equal(((r.frames[0]![1] as { nonce: Uint8Array }).nonce).length, 16);
    r.s.write(encodeFrame([FrameKind.Proof, { mac: new Uint8Array(32).fill(1) }], 1 << 20));
    await r.closed;
    assert.deepEqual(r.frames.map((f) => f[0]), [FrameKind.Auth, FrameKind.Refuse]);
    const refusal = r.frames[1]![1] as { code: string; id?: string };
    assert.equal(refusal.code, 'AUTH_FAILED');
    assert.equal(refusal.id, undefined, 'the refusal does not name the node');
    assert.equal(b.t.peers().length, 0, 'b did not even learn of m');
    // Other clusters and removed ids are not told apart before authentication either.
    const r2 = await raw(b.t.address().port);
    r2.s.write(encodeFrame([FrameKind.Hello, { proto: PEER_PROTOCOL_VERSION, cluster: 'other', id: 'm2', listen: '127.0.0.1:1', expect: 'zz', members: [] }], 1 << 20));
    await r2.closed;
    assert.equal((r2.frames[0]![1] as { code: string }).code, 'AUTH_REQUIRED');
    // A refusal sent to b on a connection b did not dial is no refusal: no "removed" error.
    const r3 = await raw(b.t.address().port);
    r3.s.write(encodeFrame([FrameKind.Refuse, { code: 'REMOVED', detail: 'you were removed' }], 1 << 20));
    await r3.closed;
    assert.ok(!b.lines.some((l) => /was removed from the cluster by an operator/.test(l.msg)), 'no removal believed');
  } finally {
    await closeAll(b);
  }
});

test('with a cluster secret, a --join address held by a stranger cannot refuse the joining node out of the cluster or plant a member', async () => {
  // The stranger answers the hello at once with a refusal, before any proof.
  const liar = createServer((s) => {
    s.on('error', () => undefined);
    s.once('data', () => {
      s.write(encodeFrame([FrameKind.Refuse, { code: 'REMOVED', detail: 'removed', id: 'evil' }], 1 << 20));
      s.end();
    });
  });
  await new Promise<void>((r) => liar.listen(0, '127.0.0.1', r));
  const liarPort = (liar.address() as AddressInfo).port;
  const c = await node('c', { join: [{ host: '127.0.0.1', port: liarPort }], secret: 'the cluster secret, long enough' });
  try {
    await until(() => c.lines.some((l) => /not taken into account/.test(l.msg)), 5_000, 'the refusal ignored');
    assert.ok(!c.lines.some((l) => /was removed from the cluster/.test(l.msg)), 'no removal believed');
    assert.deepEqual(c.t.peerIds(), [], 'no member planted');
  } finally {
    await closeAll(c);
    await new Promise<void>((r) => liar.close(() => r()));
  }
});
