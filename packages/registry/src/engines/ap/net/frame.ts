/**
 * Peer link frames: a 4-byte big-endian length, then that many bytes of msgpack. Every
 * frame is an array `[kind, body]`: kind 0 carries a replication message (the body is the
 * engine's PeerMessage), the others are the link's own control frames (handshake, ping,
 * membership), so that no engine message type can ever be mistaken for one of them.
 *
 * Pure code: no sockets here, so that framing and its limits are tested byte by byte.
 */
import { Packr } from 'msgpackr';

/** Version of the peer protocol; a peer speaking another version is refused at the handshake. */
export const PEER_PROTOCOL_VERSION = 1;

/** Bytes of the length prefix. */
export const FRAME_HEADER_BYTES = 4;

export enum FrameKind {
  Message = 0,
  Hello = 1,
  Welcome = 2,
  Refuse = 3,
  Ping = 4,
  Pong = 5,
  Members = 6,
  Bye = 7,
  /** The acceptor's challenge, with a cluster secret (peerSecretFile): its nonce. */
  Auth = 8,
  /** The dialer's proof that it knows the secret. */
  Proof = 9,
  /** The acceptor's proof, sent only once the dialer's held: its id and proof. */
  Accepted = 10,
}

/** A member as the membership exchange carries it. */
export interface MemberRecord {
  id: string;
  /** HOST:PORT of the member's peer link listener. */
  address: string;
}

export interface HelloBody {
  proto: number;
  cluster: string;
  id: string;
  /** HOST:PORT the sender accepts peer links on. */
  listen: string;
  /** The id the dialer expects to reach (from --peers), or null when it dials a --join address. */
  expect: string | null;
  members: MemberRecord[];
  /** The dialer's challenge, when it has the cluster's secret (16 random bytes). */
  nonce?: Uint8Array;
}

/**
 * Frame 10. Proofs are HMAC-SHA256 with the secret: the dialer's (frame 9) over "dial",
 * the cluster, its id and both nonces; the acceptor's over "accept", the cluster, both ids
 * and both nonces.
 */
export interface AcceptedBody {
  id: string;
  mac: Uint8Array;
}

export interface WelcomeBody {
  proto: number;
  cluster: string;
  id: string;
  listen: string;
  members: MemberRecord[];
}

export interface RefuseBody {
  /**
   * WRONG_VERSION, WRONG_CLUSTER, WRONG_ID, SAME_ID, TOO_MANY_PEERS, REMOVED (the dialer was
   * removed from the cluster), DUPLICATE (the acceptor keeps another link with the dialer),
   * AUTH_REQUIRED and AUTH_FAILED (the cluster secret: missing, or another).
   */
  code: string;
  detail: string;
  /** The refusing node's id (a --join dial learns whom it reached); left out before authentication. */
  id?: string;
}

export type Frame =
  | [FrameKind.Message, Record<string, unknown>]
  | [FrameKind.Hello, HelloBody]
  | [FrameKind.Welcome, WelcomeBody]
  | [FrameKind.Refuse, RefuseBody]
  | [FrameKind.Ping, { seq: number }]
  | [FrameKind.Pong, { seq: number }]
  | [FrameKind.Members, { members: MemberRecord[] }]
  | [FrameKind.Bye, { reason: string }]
  | [FrameKind.Auth, { nonce: Uint8Array }]
  | [FrameKind.Proof, { mac: Uint8Array }]
  | [FrameKind.Accepted, AcceptedBody];

// Plain msgpack (no record extension), so that any msgpack implementation can read a frame.
const packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true });

/** Raised for a frame that breaks the format or a limit; the link that sent it is closed. */
export class FrameError extends Error {
  constructor(
    readonly code: 'FRAME_TOO_LARGE' | 'FRAME_MALFORMED',
    message: string,
  ) {
    super(message);
    this.name = 'FrameError';
  }
}

/** One frame, length prefix included. Throws FrameError when it would pass `maxFrameBytes`. */
export function encodeFrame(frame: Frame, maxFrameBytes: number): Buffer {
  const body = packr.pack(frame);
  if (body.length > maxFrameBytes) {
    throw new FrameError('FRAME_TOO_LARGE', `a frame of ${body.length} bytes is above peerMaxFrameBytes (${maxFrameBytes})`);
  }
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + body.length);
  out.writeUInt32BE(body.length, 0);
  body.copy(out, FRAME_HEADER_BYTES);
  return out;
}

/**
 * Cuts a byte stream into frames. `push` returns the complete frames so far; it throws
 * FrameError as soon as a length prefix announces more than `maxFrameBytes` (before the
 * bytes are buffered, so a hostile peer cannot make us hold a huge frame).
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;

  /**
   * `maxFrameBytes` may be lowered for a while (a link in its handshake takes only small
   * frames) and `limitName` names the limit in the error.
   */
  constructor(
    public maxFrameBytes: number,
    public limitName = 'peerMaxFrameBytes',
  ) {}

  /** Bytes received and not yet part of a complete frame. */
  get pending(): number {
    return this.buffered;
  }

  push(chunk: Buffer): Frame[] {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const out: Frame[] = [];
    for (;;) {
      if (this.buffered < FRAME_HEADER_BYTES) break;
      const head = this.peek(FRAME_HEADER_BYTES);
      const len = head.readUInt32BE(0);
      if (len > this.maxFrameBytes) {
        throw new FrameError('FRAME_TOO_LARGE', `the peer announced a frame of ${len} bytes, above ${this.limitName} (${this.maxFrameBytes})`);
      }
      if (this.buffered < FRAME_HEADER_BYTES + len) break;
      const whole = this.take(FRAME_HEADER_BYTES + len);
      out.push(decodeBody(whole.subarray(FRAME_HEADER_BYTES)));
    }
    return out;
  }

  private peek(n: number): Buffer {
    if ((this.chunks[0] as Buffer).length >= n) return this.chunks[0] as Buffer;
    const joined = Buffer.concat(this.chunks);
    this.chunks = [joined];
    return joined;
  }

  private take(n: number): Buffer {
    const first = this.peek(n);
    const out = first.subarray(0, n);
    const rest = first.subarray(n);
    this.chunks[0] = rest;
    if (rest.length === 0) this.chunks.shift();
    this.buffered -= n;
    return out;
  }
}

function decodeBody(body: Buffer): Frame {
  let v: unknown;
  try {
    v = packr.unpack(body);
  } catch (err) {
    throw new FrameError('FRAME_MALFORMED', `a frame is not valid msgpack: ${(err as Error).message}`);
  }
  if (!Array.isArray(v) || v.length !== 2 || typeof v[0] !== 'number' || typeof v[1] !== 'object' || v[1] === null) {
    throw new FrameError('FRAME_MALFORMED', 'a frame is not [kind, body]');
  }
  if (v[0] === FrameKind.Message && typeof (v[1] as { type?: unknown }).type !== 'string') {
    throw new FrameError('FRAME_MALFORMED', 'a replication message has no string `type`');
  }
  return v as Frame;
}
