/**
 * What the ap engine needs from the network between nodes. The real implementation keeps
 * one persistent TCP link per peer with length-prefixed msgpack frames; the simulation
 * implements the same interface over a fake network on a fake clock, so that the engine's
 * replication logic runs unchanged in both.
 *
 * Delivery is best effort and in order per link while the link is up: a message sent while
 * a peer is unreachable, or while its queue is full, is dropped and `send` says so. The
 * replication protocol never relies on delivery (anti-entropy repairs anything lost).
 */

/** Any value msgpack can encode: plain objects, arrays, strings, numbers, booleans, null, Uint8Array. */
export type PeerMessage = { readonly type: string } & Record<string, unknown>;

export interface PeerLinkStatus {
  id: string;
  /** HOST:PORT of the peer's link listener. */
  address: string;
  reachable: boolean;
  /** Milliseconds since a frame last arrived from the peer (null: never). */
  lastSeenMs: number | null;
  /** Round-trip time of the last ping, in milliseconds (null: none yet). */
  rttMs: number | null;
  /** Messages waiting in the outgoing queue, and how many were dropped since start. */
  queued: number;
  dropped: number;
  sentFrames: number;
  receivedFrames: number;
}

export interface PeerTransport {
  readonly nodeId: string;
  /** Queues a message to one peer; false when it was dropped (unreachable, queue full, unknown peer). */
  send(to: string, msg: PeerMessage): boolean;
  /** Every message that arrives from a peer, in the order that peer sent it. */
  onMessage(handler: (from: string, msg: PeerMessage) => void): void;
  /** A peer's link came up (after the handshake) or went down. */
  onPeerChange(handler: (peer: string, up: boolean) => void): void;
  /** The ids of every known peer (not this node), reachable or not. */
  peerIds(): string[];
  peers(): PeerLinkStatus[];
  /**
   * The member was removed from the cluster for good (docs/ap.md, "Removing a member"): its
   * link is closed without a peer-down report, it is never dialed again nor learned again
   * from other members, and a link from it is refused. Idempotent.
   */
  forget(id: string): void;
  /** How the links are protected (the status shows it); absent for in-memory transports. */
  security?(): { tls: boolean; secret: boolean; crl: boolean; crlNextUpdate?: string | null };
  /** Peer TLS: new certificate revocation lists; the links up are made again. Returns how many. */
  reloadRevocationLists?(crl: Buffer[]): number;
  close(): Promise<void>;
}
