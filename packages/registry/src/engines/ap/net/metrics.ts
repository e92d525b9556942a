/**
 * Prometheus metrics of the peer links, one series per peer, read from
 * `PeerTransport.peers()` at scrape time (nothing is counted twice, nothing on the hot path).
 *
 * @example
 * registerPeerLinkMetrics(transport, promRegistry); // in the ap engine's registerMetrics()
 */
import client, { type Registry } from 'prom-client';
import type { PeerLinkStatus, PeerTransport } from '../transport.js';

export function registerPeerLinkMetrics(transport: PeerTransport, registry: Registry): void {
  const labelNames = ['peer'] as const;
  const gauge = (name: string, help: string, read: (p: PeerLinkStatus) => number | null) =>
    new client.Gauge({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.reset();
        for (const p of transport.peers()) {
          const v = read(p);
          if (v !== null) this.set({ peer: p.id }, v);
        }
      },
    });
  const counter = (name: string, help: string, read: (p: PeerLinkStatus) => number) => {
    /** The transport's count at the last scrape, per peer it listed then. */
    const seen = new Map<string, number>();
    return new client.Counter({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        const listed = new Set<string>();
        for (const p of transport.peers()) {
          listed.add(p.id);
          const now = read(p);
          const before = seen.get(p.id) ?? 0;
          if (now > before) this.inc({ peer: p.id }, now - before);
          else this.inc({ peer: p.id }, 0);
          seen.set(p.id, now);
        }
        // A peer the transport no longer lists loses its reading and its series, as the
        // gauges' do: both would otherwise grow with every peer ever known. One that comes
        // back starts a new series from the transport's count.
        for (const id of seen.keys()) {
          if (listed.has(id)) continue;
          seen.delete(id);
          this.remove({ peer: id });
        }
      },
    });
  };
  gauge('switchboard_ap_peer_link_up', '1 while the link to the peer is up (ap)', (p) => (p.reachable ? 1 : 0));
  gauge('switchboard_ap_peer_rtt_seconds', 'Round-trip time of the last ping to the peer (ap)', (p) => (p.rttMs === null ? null : p.rttMs / 1000));
  gauge('switchboard_ap_peer_last_seen_seconds', 'Seconds since a frame last arrived from the peer (ap)', (p) => (p.lastSeenMs === null ? null : p.lastSeenMs / 1000));
  gauge('switchboard_ap_peer_queued_messages', 'Messages waiting to be written to the peer (ap)', (p) => p.queued);
  counter('switchboard_ap_peer_dropped_messages_total', 'Messages to the peer dropped: unreachable, queue full or too large (ap)', (p) => p.dropped);
  counter('switchboard_ap_peer_sent_frames_total', 'Replication messages written to the peer (ap)', (p) => p.sentFrames);
  counter('switchboard_ap_peer_received_frames_total', 'Frames received from the peer (ap)', (p) => p.receivedFrames);
}
