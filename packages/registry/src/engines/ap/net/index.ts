/** The peer links of ap mode over TCP: what the ap engine opens (see docs/ap-network.md). */
export { createTcpTransport, TcpPeerTransport, type TcpTransport, type TcpTransportOptions, type PeerLinkLimits, type PeerTls, type HostPort } from './tcp.js';
export { encodeFrame, FrameDecoder, FrameError, FrameKind, PEER_PROTOCOL_VERSION, FRAME_HEADER_BYTES, type Frame, type MemberRecord } from './frame.js';
export { reconnectDelay } from './backoff.js';
export { registerPeerLinkMetrics } from './metrics.js';
