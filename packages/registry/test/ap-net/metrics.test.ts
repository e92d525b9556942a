// Goal: the peer link counters keep state for the peers the transport lists now, not for
// every peer it ever listed, and a counter never goes back while its peer stays listed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import { registerPeerLinkMetrics } from '../../src/engines/ap/net/metrics.js';
import type { PeerLinkStatus, PeerTransport } from '../../src/engines/ap/transport.js';

/** A transport whose peer list the test sets before each scrape. */
function fakeTransport(): { t: PeerTransport; list: PeerLinkStatus[] } {
  const list: PeerLinkStatus[] = [];
  const t: PeerTransport = {
    nodeId: 'self',
    send: () => false,
    onMessage: () => undefined,
    onPeerChange: () => undefined,
    peerIds: () => list.map((p) => p.id),
    peers: () => list.map((p) => ({ ...p })),
    forget: () => undefined,
    close: async () => undefined,
  };
  return { t, list };
}

const peer = (id: string, sentFrames: number): PeerLinkStatus => ({ id, address: `${id}:1`, reachable: true, lastSeenMs: null, rttMs: null, queued: 0, dropped: 0, sentFrames, receivedFrames: 0 });

const series = (text: string, metric: string): string[] => text.split('\n').filter((l) => l.startsWith(`${metric}{`));

test('peer link counters: a peer no longer listed leaves no series behind; one still listed keeps counting up', async () => {
  const { t, list } = fakeTransport();
  const reg = new Registry();
  registerPeerLinkMetrics(t, reg);
  list.push(peer('stays', 3));
  for (let i = 0; i < 200; i++) {
    list.splice(1, list.length - 1, peer(`passing-${i}`, 1));
    await reg.metrics();
  }
  list.splice(1);
  list[0] = peer('stays', 7);
  let text = await reg.metrics();
  assert.deepEqual(series(text, 'switchboard_ap_peer_sent_frames_total'), ['switchboard_ap_peer_sent_frames_total{peer="stays"} 7']);
  assert.deepEqual(series(text, 'switchboard_ap_peer_dropped_messages_total'), ['switchboard_ap_peer_dropped_messages_total{peer="stays"} 0']);
  assert.deepEqual(series(text, 'switchboard_ap_peer_link_up'), ['switchboard_ap_peer_link_up{peer="stays"} 1']);

  // A lower count from a peer still listed is not a reset: the counter holds.
  list[0] = peer('stays', 5);
  text = await reg.metrics();
  assert.deepEqual(series(text, 'switchboard_ap_peer_sent_frames_total'), ['switchboard_ap_peer_sent_frames_total{peer="stays"} 7']);

  // Gone, then back with a count of its own: a new series from that count.
  list.splice(0);
  text = await reg.metrics();
  assert.deepEqual(series(text, 'switchboard_ap_peer_sent_frames_total'), []);
  list.push(peer('stays', 2));
  text = await reg.metrics();
  assert.deepEqual(series(text, 'switchboard_ap_peer_sent_frames_total'), ['switchboard_ap_peer_sent_frames_total{peer="stays"} 2']);
});
