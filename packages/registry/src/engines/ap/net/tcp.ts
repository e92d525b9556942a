/**
 * The peer links of an ap node over TCP (see docs/ap-network.md).
 *
 * - One link per pair of nodes. Every node dials each known peer it has no link to; two
 *   links between the same nodes (crossed dials, a --join address that names a member)
 *   are settled by the acceptor at the hello, before either side uses the new link (the
 *   link dialed by the smaller node id is kept, the other refused with DUPLICATE), so no
 *   message goes over a link that is then closed (see onHello).
 * - Handshake: the dialer sends `hello` (protocol version, cluster name, its id, the id it
 *   expects, its listen address, the members it knows), the acceptor answers `welcome`
 *   or `refuse` with a code; refusals are logged with what to fix.
 * - Liveness: a ping every `peerPingIntervalMs`; a peer from which nothing arrived for
 *   `peerMissedPings` intervals is unreachable: its link is closed and redialed with
 *   capped, jittered backoff.
 * - Sending: messages go to a bounded per-peer queue (`peerQueueMaxMessages`,
 *   `peerQueueMaxBytes`); the queue is written in batches once per turn of the event loop
 *   and only while the socket accepts more (backpressure), so a slow peer fills its own
 *   queue and nothing else.
 * - `--join`: a node that knows one address dials it, learns the members from `welcome`,
 *   and every node passes on newly learned members (`members` frames).
 * - Removed members (`forget`, `removed`): never dialed, never learned from `members`,
 *   `hello` or `welcome`, and refused with code REMOVED when they dial; a node refused so
 *   says in its log that it was removed and how to rejoin.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, Socket, type AddressInfo, type Server } from 'node:net';
import { connect as tlsConnect, createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from 'node:tls';
import { CRL_VERDICTS, earliestNextUpdate } from './crl.js';
import type { Logger } from 'pino';
import { NODE_ID_RULE, PEER_ID_URI_PREFIX, isNodeId, peerIdsOfSubjectAltName, tlsFailureOf, type Limits } from '@switchboard/protocol';
import type { PeerLinkStatus, PeerMessage, PeerTransport } from '../transport.js';
import { encodeFrame, FrameDecoder, FrameError, FrameKind, PEER_PROTOCOL_VERSION, type AcceptedBody, type Frame, type HelloBody, type MemberRecord, type RefuseBody, type WelcomeBody } from './frame.js';
import { reconnectDelay } from './backoff.js';
import { REJOIN_HINT } from '../removed.js';

export type PeerLinkLimits = Pick<
  Limits,
  | 'peerMaxPeers'
  | 'peerMaxFrameBytes'
  | 'peerQueueMaxMessages'
  | 'peerQueueMaxBytes'
  | 'peerPingIntervalMs'
  | 'peerMissedPings'
  | 'peerHandshakeTimeoutMs'
  | 'peerReconnectMinMs'
  | 'peerReconnectMaxMs'
>;

export interface HostPort {
  host: string;
  port: number;
}

export interface TcpTransportOptions {
  nodeId: string;
  /** Where this node accepts peer links (port 0 picks a free port; see `address()`). */
  listen: HostPort;
  /** HOST:PORT other nodes should dial; default the listen address (with the bound port). */
  advertise?: HostPort;
  /** Peers known by id (--peers). */
  peers: ({ id: string } & HostPort)[];
  /** Addresses of running nodes to learn the members from (--join). */
  join: HostPort[];
  limits: PeerLinkLimits;
  logger: Logger;
  /** Nodes of different clusters refuse each other. Default `switchboard`. */
  cluster?: string;
  /** For tests: the random source of the reconnect jitter. */
  random?: () => number;
  /** Members removed from the cluster (kept in the data directory): never dialed, refused. */
  removed?: string[];
  /**
   * The cluster's shared secret (peerSecretFile): every link proves, both ways, that its
   * ends know it before anything else is said (see the authentication section below). Null: links are not
   * authenticated (the peer port must then be reachable by the nodes only).
   */
  secret?: Buffer | null;
  /**
   * TLS on every peer link (peerTlsCertFile, peerTlsKeyFile, peerTlsCaFile): both ends
   * present a certificate signed by `ca` and check the other's (mutual TLS, 1.3 only), so
   * the frames are encrypted and cannot be changed on the way. Null: plain TCP.
   */
  tls?: PeerTls | null;
}

/** The certificates of peer TLS (PEM): this node's certificate and key, and the CA that signs every member's. */
export interface PeerTls {
  cert: Buffer;
  key: Buffer;
  ca: Buffer;
  /** The CAs' revocation lists (PEM, one per CA of the chains): a peer whose certificate one lists is refused. Null: none. */
  crl?: Buffer[] | null;
}

/** The TLS settings both ends of a peer link use (the listener, each dial, the start's self-check). */
export function secureOptions(tls: PeerTls): { cert: Buffer; key: Buffer; ca: Buffer; crl?: Buffer[]; minVersion: 'TLSv1.3' } {
  return { cert: tls.cert, key: tls.key, ca: tls.ca, ...(tls.crl ? { crl: tls.crl } : {}), minVersion: 'TLSv1.3' };
}

/** How long before the revocation lists' next update the node warns that they need renewing. */
const CRL_WARN_AHEAD_MS = 24 * 3_600_000;
/** The longest delay a Node timer takes. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** A revocation-list verdict (CRL_VERDICTS) as a log line says it; undefined for any other failure. */
function crlProblem(code: string): string | undefined {
  const v = CRL_VERDICTS[code];
  return v === undefined ? undefined : `--peer-tls-crl-file: ${v.problem}: ${v.hint}`;
}

/**
 * What a dialing node says about a TLS failure (tlsFailureOf sorts Node's codes): they are
 * set-up errors, not an unreachable peer, so the log says what to change.
 */
function peerTlsProblem(err: NodeJS.ErrnoException): string | undefined {
  const f = tlsFailureOf(err) ?? (err.code === 'ERR_SSL_PACKET_LENGTH_TOO_LONG' ? { kind: 'plain' as const, code: err.code } : undefined);
  if (f === undefined) return undefined;
  // Revocation lists are this node's settings, not the peer's certificate.
  const list = crlProblem(f.code);
  if (list !== undefined) return list;
  switch (f.kind) {
    case 'time':
      return 'its certificate is not valid now: renew it (or check the clocks)';
    case 'plain':
      return 'it does not speak TLS (give every node the --peer-tls-* settings)';
    default:
      if (f.code === 'CERT_REVOKED') return 'its certificate is revoked (--peer-tls-crl-file lists it)';
      return f.code === 'INVALID_PURPOSE' ? 'its certificate may not serve this end of a link (it needs the extended key usages serverAuth and clientAuth)' : 'its certificate does not lead to a CA of --peer-tls-ca-file';
  }
}

/**
 * Peer TLS: the node ids the other end's certificate is issued for (its subjectAltName
 * URIs `switchboard:node:ID`); null when it names none (any id, as the CA decides).
 */
function certifiedIds(socket: Socket): string[] | null {
  const ids = peerIdsOfSubjectAltName((socket as TLSSocket).getPeerCertificate?.()?.subjectaltname);
  return ids.length > 0 ? ids : null;
}

const idList = (ids: string[]): string => ids.map((id) => shownId(id)).join(', ');

/** The TCP PeerTransport plus what an operator (and a test) needs to see. */
export interface TcpTransport extends PeerTransport {
  /** The address the listener is bound to. */
  address(): HostPort;
  /** Every member this node knows, itself included. */
  members(): MemberRecord[];
}

const fmt = (a: HostPort): string => (a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`);

function parseAddress(s: string): HostPort | null {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]+)):(\d{1,5})$/.exec(s);
  if (!m) return null;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return null;
  return { host: (m[1] ?? m[2]) as string, port };
}

const UNSPECIFIED = new Set(['0.0.0.0', '::', '']);

/** Incoming connections that fail (refused, malformed, timed out) are warnings at most this many times a minute. */
const INBOUND_WARNINGS_PER_MINUTE = 20;

/**
 * With a cluster secret, the refusals an acceptor may send before it proved itself, and
 * what this node logs for them (not the acceptor's own text: anyone can send one).
 */
const PRE_AUTH_REFUSALS: Readonly<Record<string, string>> = {
  AUTH_FAILED: 'the node there does not accept this node\'s proof of the cluster secret: give every node the same --peer-secret-file (and --cluster)',
  AUTH_REQUIRED: 'the node there asks for a proof of a cluster secret this node did not give',
  WRONG_VERSION: 'the node there speaks another peer protocol version: run the same Switchboard version on every node',
  INVALID_ID: "the node there does not take this node's id: give it a --node-id of 1-253 characters of A-Z a-z 0-9 . _ -",
  CERT_REFUSED: "the node there does not take this node's certificate (not signed by its --peer-tls-ca-file, expired, or without the key usages a peer certificate needs)",
  NO_SECRET: 'the node there has no cluster secret: give every node the same --peer-secret-file',
};

/** An id or name from the other end, as a log line shows it: quoted, at most 64 characters. */
function shownId(v: unknown): string {
  const s = typeof v === 'string' ? v : String(v);
  return JSON.stringify(s.length > 64 ? `${s.slice(0, 64)}...` : s);
}

/** Bytes of each end's challenge when links authenticate with a cluster secret. */
const NONCE_BYTES = 16;

/** The handshake frame limit: this much, plus this much per member a hello or welcome may list. */
const HANDSHAKE_FRAME_BASE_BYTES = 16 * 1024;
const HANDSHAKE_FRAME_PER_MEMBER_BYTES = 1024;

/** A peer's live link replaced twice within this window is logged as a warning (two processes with one id?)... */
const REPLACE_WARN_WINDOW_MS = 10_000;
/** ...at most once in this long. */
const SHARED_ID_WARN_EVERY_MS = 60_000;

interface Queued {
  bytes: Buffer;
}

/** What this node knows of one peer; lives as long as the transport. */
class Peer {
  link: Link | null = null;
  /** Connections being dialed to this peer's address (at most one at a time). */
  dialing: Link | null = null;
  attempt = 0;
  retryTimer: NodeJS.Timeout | undefined;
  queue: Queued[] = [];
  queuedBytes = 0;
  dropped = 0;
  sentFrames = 0;
  receivedFrames = 0;
  lastSeenAt: number | null = null;
  rttMs: number | null = null;
  /** The last refusal logged, so that a retry loop logs a problem once, not every second. */
  lastProblem: string | null = null;
  flushScheduled = false;
  /** A hello from this peer waiting for our own crossed dial to be answered (see onHello). */
  held: { link: Link; hello: HelloBody } | null = null;
  /** When a link of this peer was last replaced by a new dial of it (see replaced()). */
  replacedAt: number | null = null;
  sharedIdWarnedAt: number | null = null;

  constructor(
    readonly id: string,
    public address: HostPort,
    /** Named by --peers: its address is the operator's and is never replaced by a learned one. */
    readonly configured: boolean,
  ) {}
}

type LinkState = 'handshake' | 'up' | 'closed';

/** One TCP connection to a peer, through its handshake and its life. */
class Link {
  state: LinkState = 'handshake';
  peer: Peer | null = null;
  remoteId: string | null = null;
  readonly decoder: FrameDecoder;
  pingSeq = 0;
  pingSentAt = new Map<number, number>();
  lastHeardAt = performance.now();
  writable = true;
  /** An outgoing link: its hello went out (the connection is established). */
  helloSent = false;
  /** Any byte came in on it. */
  heard = false;
  /** An incoming link whose hello is held (see onHello): the peer it is from. */
  heldFor: Peer | null = null;
  /** With a cluster secret: this end's challenge (the dialer's in its hello, the acceptor's in auth). */
  nonce: Buffer | null = null;
  /** The dialer's side: the acceptor's challenge, answered with our proof. */
  peerNonce: Uint8Array | null = null;
  /** With a cluster secret: the other end proved it knows it. */
  authed = false;
  /** The acceptor's side: the hello waiting for the dialer's proof. */
  authHello: HelloBody | null = null;
  /** The dialer's side: the id of the acceptor that proved itself. */
  authId: string | null = null;
  handshakeTimer: NodeJS.Timeout | undefined;
  /** Called once the handshake succeeded (a --join seed marks itself done). */
  onUp: (() => void) | undefined;

  constructor(
    readonly socket: Socket,
    /** The id of the node that dialed this connection. */
    public dialer: string | null,
    /** For an outgoing link: the peer it was dialed for (null for a --join seed). */
    readonly target: Peer | null,
    /** For an outgoing link: the address dialed. */
    readonly dialed: HostPort | null,
    maxFrameBytes: number,
  ) {
    this.decoder = new FrameDecoder(maxFrameBytes, 'the handshake frame limit');
  }
}

export class TcpPeerTransport implements TcpTransport {
  readonly nodeId: string;
  private readonly cluster: string;
  private readonly secret: Buffer | null;
  /** Warnings about incoming connections in the current minute, and those not logged as warnings (see inboundWarning). */
  private inboundWindowAt = -Infinity;
  /** The last problem logged for each --join address (see problem()). */
  private readonly addressProblems = new Map<string, string>();
  private inboundWarned = 0;
  private inboundSuppressed = 0;
  private readonly limits: PeerLinkLimits;
  private readonly log: Logger;
  private readonly random: () => number;
  private readonly peersById = new Map<string, Peer>();
  /** Messages already encoded, and their frames (see send): messages are not changed once sent, and nothing is kept alive here. */
  private readonly encoded = new WeakMap<PeerMessage, Buffer>();
  private readonly links = new Set<Link>();
  private readonly seeds: { address: HostPort; attempt: number; timer: NodeJS.Timeout | undefined; dialing: boolean; done: boolean }[];
  private readonly messageHandlers: ((from: string, msg: PeerMessage) => void)[] = [];
  private readonly changeHandlers: ((peer: string, up: boolean) => void)[] = [];
  private server: Server | null = null;
  /** Every connection the listener took (TCP level), to end those no link holds at close. */
  private readonly accepted = new Set<Socket>();
  /** Peer TLS: connections in their TLS handshake, by remote "address:port". */
  private readonly inTls = new Map<string, Socket>();
  private bound: HostPort;
  private advertised: HostPort;
  private pingTimer: NodeJS.Timeout | undefined;
  private closed = false;
  /** Members removed from the cluster; bounded by the removals kept (MAX_REMOVED_MEMBERS). */
  private readonly removed: Set<string>;
  /** A peer refused this node as removed: said once in the log, not on every redial. */
  private toldRemoved = false;

  constructor(private readonly opts: TcpTransportOptions) {
    this.nodeId = opts.nodeId;
    this.cluster = opts.cluster ?? 'switchboard';
    this.secret = opts.secret ?? null;
    this.limits = opts.limits;
    this.log = opts.logger;
    this.random = opts.random ?? Math.random;
    this.bound = opts.listen;
    this.advertised = opts.advertise ?? opts.listen;
    this.removed = new Set(opts.removed ?? []);
    for (const p of opts.peers) {
      if (p.id === opts.nodeId) continue; // a shared --peers list may name this node too
      if (this.removed.has(p.id)) {
        this.log.warn({ peer: p.id }, `--peers names member ${p.id}, which was removed from the cluster: it is not dialed (drop it from --peers)`);
        continue;
      }
      if (this.peersById.has(p.id)) throw new Error(`--peers names node "${p.id}" twice`);
      this.peersById.set(p.id, new Peer(p.id, { host: p.host, port: p.port }, true));
    }
    if (this.peersById.size > this.limits.peerMaxPeers) {
      throw new Error(`--peers names ${this.peersById.size} peers, above peerMaxPeers (${this.limits.peerMaxPeers})`);
    }
    this.seeds = opts.join.map((address) => ({ address, attempt: 0, timer: undefined, dialing: false, done: false }));
  }

  /** Binds the listener and starts dialing. */
  async start(): Promise<void> {
    const tls = this.opts.tls ?? null;
    const server = tls
      ? // The client's certificate is checked in accept(), which refuses it in words the
        // dialer can log (rejectUnauthorized would only hang up on it).
        createTlsServer({ ...secureOptions(tls), requestCert: true, rejectUnauthorized: false, handshakeTimeout: this.limits.peerHandshakeTimeoutMs }, (socket) => this.accept(socket))
      : createServer((socket) => this.accept(socket));
    if (tls) {
      server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => {
        // The listener only reports a failed or timed-out TLS handshake: the connection
        // would stay open, holding a slot, if it were not ended here.
        const address = socket.remoteAddress;
        const from = `${address}:${socket.remotePort}`;
        socket.destroy();
        // A connection already gone has no address left to name: closed by the per-address
        // bound below (logged there), or hung up by its other end. Debug level only.
        if (address === undefined) return void this.log.debug({ err: err.message }, 'a peer connection closed during its TLS handshake');
        const why = err.code === 'ERR_SSL_HTTP_REQUEST' || err.code === 'ERR_SSL_WRONG_VERSION_NUMBER' ? 'it does not speak TLS' : err.code === 'ERR_TLS_HANDSHAKE_TIMEOUT' ? `no TLS handshake within peerHandshakeTimeoutMs (${this.limits.peerHandshakeTimeoutMs} ms)` : err.message;
        this.inboundWarning({ from, err: err.message }, `a peer connection from ${from} failed its TLS handshake: ${why}`);
      });
    }
    // Links, crossed dials, and room beyond what one address may hold in handshakes.
    server.maxConnections = this.limits.peerMaxPeers * 3 + 4;
    server.on('connection', (raw: Socket) => {
      this.accepted.add(raw);
      const key = `${raw.remoteAddress}:${raw.remotePort}`;
      raw.once('close', () => {
        this.accepted.delete(raw);
        if (this.inTls.get(key) === raw) this.inTls.delete(key);
      });
      if (!tls) return;
      // Peer TLS: the handshake is a handshake too, bounded per address like the link's.
      if (this.handshakesFrom(raw.remoteAddress) >= this.limits.peerMaxPeers + 1) {
        this.inboundWarning({ from: key }, `closed a peer connection from ${raw.remoteAddress}: it already has ${this.limits.peerMaxPeers + 1} connections in their handshake (peerMaxPeers + 1)`);
        return void raw.destroy();
      }
      this.inTls.set(key, raw);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.opts.listen.port, this.opts.listen.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => this.log.error({ err }, 'peer link listener failed'));
    this.server = server;
    this.watchRevocationLists();
    const a = server.address() as AddressInfo;
    this.bound = { host: this.opts.listen.host, port: a.port };
    this.advertised = this.opts.advertise ?? this.bound;
    if (UNSPECIFIED.has(this.advertised.host)) {
      this.log.warn({ listen: fmt(this.bound) }, 'peer links listen on every interface; peers learn this node through the address they dial (set --peer-addr to a routable address for --join)');
    }
    this.log.info({ nodeId: this.nodeId, listen: fmt(this.bound), peers: [...this.peersById.values()].map((p) => `${p.id}@${fmt(p.address)}`), join: this.seeds.map((s) => fmt(s.address)) }, `peer links listening on ${fmt(this.bound)}`);
    this.pingTimer = setInterval(() => this.tick(), this.limits.peerPingIntervalMs);
    this.pingTimer.unref();
    for (const p of this.peersById.values()) this.dial(p);
    for (const s of this.seeds) this.dialSeed(s);
  }

  address(): HostPort {
    return { ...this.bound };
  }

  members(): MemberRecord[] {
    return [{ id: this.nodeId, address: fmt(this.advertised) }, ...[...this.peersById.values()].map((p) => ({ id: p.id, address: fmt(p.address) }))];
  }

  peerIds(): string[] {
    return [...this.peersById.keys()];
  }

  /**
   * New revocation lists (SIGHUP): taken by the listener and every later dial. Every link
   * there is now was (or is being) checked against the old lists: those up are ended and
   * made again (both ends redial at once), and connections still in a handshake (TLS's,
   * or the hello after it) are cut, so that none of them can come up on the old lists'
   * word. A member the new lists revoke is refused on the way
   * back. What was queued for a peer is repaired by anti-entropy, as after any dropped
   * link. Returns how many links were made again or cut.
   */
  reloadRevocationLists(crl: Buffer[]): number {
    const tls = this.opts.tls;
    if (!tls) throw new Error('peer TLS is off: there are no revocation lists to reload');
    // The same lists (a SIGHUP for the token file, or lists not published anew): nothing to
    // check again, and no link is dropped.
    const cur = tls.crl;
    const same = cur != null && cur.length === crl.length && cur.every((b, i) => b.equals(crl[i] as Buffer));
    if (same) {
      this.log.info('peer revocation lists unchanged; the links stay');
      return 0;
    }
    tls.crl = crl;
    (this.server as TlsServer | null)?.setSecureContext(secureOptions(tls));
    this.watchRevocationLists();
    let reset = 0;
    for (const l of [...this.links]) {
      if (l.state === 'up') {
        l.socket.end();
        this.drop(l, 'revocation lists reloaded', true);
      } else if (l.state === 'handshake') this.kill(l);
      else continue;
      reset++;
    }
    // Connections still in the TLS handshake itself finish it on the context they began
    // with, the old lists' (setSecureContext applies to connections accepted after it).
    for (const raw of [...this.inTls.values()]) {
      raw.destroy();
      reset++;
    }
    this.inTls.clear();
    this.log.info({ links: reset }, `peer revocation lists reloaded; ${reset} links made again to be checked against them`);
    return reset;
  }

  security(): { tls: boolean; secret: boolean; crl: boolean; crlNextUpdate?: string | null } {
    if (!this.opts.tls?.crl) return { tls: Boolean(this.opts.tls), secret: this.secret !== null, crl: false };
    return { tls: true, secret: this.secret !== null, crl: true, crlNextUpdate: this.crlNext?.toISOString() ?? null };
  }

  private crlTimer: NodeJS.Timeout | undefined;
  /** The earliest next update of the revocation lists in use (read when they are set); null without lists or without an end. */
  private crlNext: Date | null = null;

  /**
   * Reads the revocation lists' earliest next update, and says ahead of time that they
   * need renewing: past it OpenSSL refuses every new link. A warning CRL_WARN_AHEAD_MS
   * before it (at once when that is past), and an error when it comes.
   */
  private watchRevocationLists(): void {
    clearTimeout(this.crlTimer);
    try {
      this.crlNext = earliestNextUpdate(this.opts.tls?.crl ?? []);
    } catch {
      this.crlNext = null; // OpenSSL took the lists; a date this reader cannot find is not worth refusing them for
    }
    this.checkRevocationListsDue();
  }

  private checkRevocationListsDue(): void {
    const next = this.crlNext;
    if (next === null || this.closed) return;
    const left = next.getTime() - Date.now();
    const when = next.toISOString();
    if (left <= 0) {
      this.log.error({ nextUpdate: when }, `the peer revocation lists (--peer-tls-crl-file) expired at ${when}: every new peer link fails (CRL_HAS_EXPIRED); publish fresh lists to every node and send each a SIGHUP`);
      return;
    }
    if (left <= CRL_WARN_AHEAD_MS) {
      this.log.warn({ nextUpdate: when }, `the peer revocation lists (--peer-tls-crl-file) expire at ${when}, in ${Math.round(left / 60_000)} min: publish fresh lists to every node and send each a SIGHUP before then, or every new peer link will fail`);
    }
    // Next look: at the warning time, else at the expiry. Timers hold at most about 24.8
    // days: a longer wait is taken in steps.
    const wait = left > CRL_WARN_AHEAD_MS ? left - CRL_WARN_AHEAD_MS : left;
    this.crlTimer = setTimeout(() => this.checkRevocationListsDue(), Math.min(wait, MAX_TIMER_MS));
    this.crlTimer.unref();
  }

  peers(): PeerLinkStatus[] {
    const now = performance.now();
    return [...this.peersById.values()].map((p) => ({
      id: p.id,
      address: fmt(p.address),
      reachable: p.link !== null,
      lastSeenMs: p.lastSeenAt === null ? null : Math.round(now - p.lastSeenAt),
      rttMs: p.rttMs,
      queued: p.queue.length,
      dropped: p.dropped,
      sentFrames: p.sentFrames,
      receivedFrames: p.receivedFrames,
    }));
  }

  onMessage(handler: (from: string, msg: PeerMessage) => void): void {
    this.messageHandlers.push(handler);
  }

  onPeerChange(handler: (peer: string, up: boolean) => void): void {
    this.changeHandlers.push(handler);
  }

  send(to: string, msg: PeerMessage): boolean {
    const p = this.peersById.get(to);
    if (!p) return false;
    if (!p.link || this.closed) {
      p.dropped++;
      return false;
    }
    let bytes: Buffer;
    try {
      // The same message to several peers (a batch goes to every one) is encoded once.
      const encoded = this.encoded.get(msg);
      if (encoded) bytes = encoded;
      else {
        bytes = encodeFrame([FrameKind.Message, msg as Record<string, unknown>], this.limits.peerMaxFrameBytes);
        this.encoded.set(msg, bytes);
      }
    } catch (err) {
      p.dropped++;
      this.log.error({ peer: to, type: msg.type, err: (err as Error).message }, 'peer message not sent: it does not fit in one frame (split it, or raise peerMaxFrameBytes)');
      return false;
    }
    if (p.queue.length >= this.limits.peerQueueMaxMessages || p.queuedBytes + bytes.length > this.limits.peerQueueMaxBytes) {
      p.dropped++;
      return false;
    }
    p.queue.push({ bytes });
    p.queuedBytes += bytes.length;
    this.scheduleFlush(p);
    return true;
  }

  forget(id: string): void {
    if (id === this.nodeId || this.removed.has(id)) return;
    this.removed.add(id);
    const p = this.peersById.get(id);
    if (!p) return;
    this.peersById.delete(id);
    clearTimeout(p.retryTimer);
    p.retryTimer = undefined;
    p.queue = [];
    p.queuedBytes = 0;
    const links = [p.link, p.dialing, p.held?.link ?? null].filter((l): l is Link => l !== null);
    p.link = null;
    p.dialing = null;
    p.held = null;
    // The engine dropped the member already: no peer-down report, no redial (see drop()).
    for (const l of links) {
      l.peer = null;
      this.kill(l);
    }
    this.log.info({ peer: id }, `member ${id} removed from the cluster: its link is closed and it is never dialed again`);
  }

  async close(): Promise<void> {
    clearTimeout(this.crlTimer);
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.pingTimer);
    for (const p of this.peersById.values()) clearTimeout(p.retryTimer);
    for (const s of this.seeds) clearTimeout(s.timer);
    const ended: Promise<void>[] = [];
    for (const l of [...this.links]) {
      if (l.state === 'up') {
        // Flush what is queued (all of it, whatever the socket buffers: the queue is
        // bounded), say goodbye, then end: the peer marks us down at once.
        if (l.peer) this.flush(l.peer, true);
        this.write(l, encodeFrame([FrameKind.Bye, { reason: 'closing' }], this.limits.peerMaxFrameBytes));
      }
      ended.push(
        new Promise<void>((resolve) => {
          if (l.socket.destroyed) return resolve();
          const t = setTimeout(() => l.socket.destroy(), 1_000);
          t.unref();
          l.socket.once('close', () => {
            clearTimeout(t);
            resolve();
          });
          l.socket.end();
        }),
      );
      this.drop(l, 'closing', false);
    }
    await Promise.all(ended);
    // Connections that never became links (in a TLS handshake, or refused and closing)
    // would hold the listener's close until they time out.
    for (const raw of this.accepted) raw.destroy();
    const server = this.server;
    this.server = null;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  // ---- connections ----

  private dial(p: Peer): void {
    if (this.closed || p.link || p.dialing || p.retryTimer || this.removed.has(p.id)) return;
    // A --join dial to the same address is in its handshake: it will most likely link to
    // this peer; a second dial of ours would only make a duplicate. Try again after it.
    if (this.seeds.some((s) => s.dialing && !s.done && s.address.host === p.address.host && s.address.port === p.address.port)) return this.retry(p);
    const link = this.connect(p.address, p, (l) => this.sendHello(l, p.id));
    p.dialing = link;
  }

  /**
   * Dials `address` (over TLS when configured: the hello goes once both ends trust each
   * other) and wires the new link.
   */
  private connect(address: HostPort, target: Peer | null, connected: (link: Link) => void): Link {
    const tls = this.opts.tls ?? null;
    let link: Link;
    if (tls) {
      // Members are recognised by the cluster's CA, not by a host name: a node may be
      // dialed at any address it is reachable at (docs/ap-network.md, Peer TLS).
      const socket = tlsConnect({ ...secureOptions(tls), host: address.host, port: address.port, checkServerIdentity: () => undefined }, () => connected(link));
      link = new Link(socket, this.nodeId, target, address, this.handshakeMaxFrameBytes);
      this.wire(link);
      return link;
    }
    const socket = new Socket();
    link = new Link(socket, this.nodeId, target, address, this.handshakeMaxFrameBytes);
    this.wire(link);
    socket.connect(address.port, address.host, () => connected(link));
    return link;
  }

  private dialSeed(s: (typeof this.seeds)[number]): void {
    if (this.closed || s.done || s.dialing) return;
    s.dialing = true;
    const link = this.connect(s.address, null, (l) => this.sendHello(l, null));
    link.socket.once('close', () => {
      s.dialing = false;
      if (this.closed || s.done) return;
      const wait = reconnectDelay(s.attempt++, this.limits.peerReconnectMinMs, this.limits.peerReconnectMaxMs, this.random);
      s.timer = setTimeout(() => {
        s.timer = undefined;
        this.dialSeed(s);
      }, wait);
      s.timer.unref();
    });
    // A seed that turns out to be a member is done: from now on the member is dialed by id.
    link.onUp = () => {
      s.done = true;
    };
  }

  /** Connections from `address` in a handshake: links not up yet, and (peer TLS) TLS handshakes. */
  private handshakesFrom(address: string | undefined): number {
    let pending = 0;
    for (const l of this.links) if (this.fromOutside(l) && l.socket.remoteAddress === address) pending++;
    for (const raw of this.inTls.values()) if (raw.remoteAddress === address) pending++;
    return pending;
  }

  private accept(socket: Socket): void {
    if (this.opts.tls) this.inTls.delete(`${socket.remoteAddress}:${socket.remotePort}`);
    if (this.closed) return void socket.destroy();
    // One address may not hold more than a few connections in their handshake: whoever
    // reaches the port could otherwise take every connection the listener allows.
    // (Every node of a cluster on one machine comes from the same address: a node has no
    // more honest handshakes from one address than it may have peers.)
    const cap = this.limits.peerMaxPeers + 1;
    if (this.handshakesFrom(socket.remoteAddress) >= cap) {
      this.inboundWarning({ from: socket.remoteAddress }, `closed a peer connection from ${socket.remoteAddress}: it already has ${cap} connections in their handshake (peerMaxPeers + 1)`);
      return void socket.destroy();
    }
    if (this.opts.tls && !(socket as TLSSocket).authorized) return this.refuseCertificate(socket as TLSSocket);
    const link = new Link(socket, null, null, null, this.handshakeMaxFrameBytes);
    this.wire(link);
  }

  /**
   * Peer TLS: a connection whose certificate the cluster's CA did not sign (or without
   * one) is told so in a refusal, the only frame it gets, and closed.
   */
  private refuseCertificate(socket: TLSSocket): void {
    const from = `${socket.remoteAddress}:${socket.remotePort}`;
    const why = String(socket.authorizationError ?? 'no certificate');
    const revoked = why === 'CERT_REVOKED';
    const list = crlProblem(why);
    const text = revoked ? `its certificate is revoked (${why}; --peer-tls-crl-file)` : list !== undefined ? `${list} (${why})` : `its certificate is not one of this cluster's (${why}; --peer-tls-ca-file)`;
    this.inboundWarning({ from, code: 'CERT_REFUSED', err: why }, `refused a peer link from ${from}: ${text}`);
    socket.on('error', () => undefined);
    const detail = revoked
      ? `the certificate of this node is revoked: the peer's revocation list names it (${why})`
      : list !== undefined
        ? `the peer cannot check this node's certificate against its revocation lists (${why}): its --peer-tls-crl-file needs fixing`
        : `the certificate of this node is not signed by the CA the peer trusts (${why})`;
    socket.end(encodeFrame([FrameKind.Refuse, { code: 'CERT_REFUSED', detail }], this.handshakeMaxFrameBytes));
    setTimeout(() => socket.destroy(), 1_000).unref();
  }

  private wire(link: Link): void {
    this.links.add(link);
    const { socket } = link;
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 5_000);
    link.handshakeTimer = setTimeout(() => {
      if (link.state === 'handshake') this.fail(link, `no handshake within peerHandshakeTimeoutMs (${this.limits.peerHandshakeTimeoutMs} ms)`);
    }, this.limits.peerHandshakeTimeoutMs);
    link.handshakeTimer.unref();
    socket.on('data', (chunk: Buffer) => this.onData(link, chunk));
    socket.on('drain', () => {
      link.writable = true;
      if (link.peer && link.peer.link === link) this.flush(link.peer);
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (link.state !== 'handshake' || !link.dialed) return;
      const who = `${link.target ? `peer ${link.target.id} at ` : ''}${fmt(link.dialed)}`;
      // Closed in the middle of the TLS handshake: most likely a node without peer TLS,
      // which took the TLS greeting for a malformed frame.
      const plainPeer = this.opts.tls && !link.helloSent && (err.code === 'ECONNRESET' || err.code === 'EPIPE') ? 'it closed the connection during the TLS handshake (a node without the --peer-tls-* settings does; so does one that is full, or restarting)' : undefined;
      const tlsFailure = (this.opts.tls ? peerTlsProblem(err) : undefined) ?? plainPeer;
      // A certificate refused either way is a set-up error: a warning, not an unreachable peer.
      if (tlsFailure) this.problem(link.target, `no TLS link with ${who}: ${tlsFailure} (${err.code}; retrying with backoff)`, 'warn');
      else this.problem(link.target, `cannot reach ${who} (retrying with backoff): ${err.message}`, 'info');
    });
    socket.on('close', () => {
      // A node with peer TLS closes a plain link without a word (it cannot speak to it).
      if (!this.opts.tls && link.state === 'handshake' && link.dialed && link.helloSent && !link.heard) {
        this.problem(link.target, `peer link to ${fmt(link.dialed)} closed by the peer before it answered the hello; if that node runs with peer TLS (--peer-tls-*), this one needs it too`, 'info');
      }
      this.drop(link, 'connection closed', true);
    });
  }

  private onData(link: Link, chunk: Buffer): void {
    if (link.state === 'closed') return;
    // A TLS handshake record (0x16 0x03 ...) as the first bytes of a plain link: the other
    // node runs with peer TLS and this one without.
    const tlsGreeting = !link.heard && !this.opts.tls && chunk.length >= 2 && chunk[0] === 0x16 && chunk[1] === 0x03;
    link.heard = true;
    let frames: Frame[];
    try {
      frames = link.decoder.push(chunk);
    } catch (err) {
      const who = link.remoteId ?? (link.dialed ? fmt(link.dialed) : `${link.socket.remoteAddress}:${link.socket.remotePort}`);
      const fields = { peer: who, err: (err as Error).message };
      const msg = tlsGreeting
        ? `peer link from ${who} closed: it speaks TLS (that node runs with --peer-tls-*): give every node the same peer TLS settings`
        : `peer link to ${who} closed: ${(err as FrameError).code ?? 'FRAME_MALFORMED'}`;
      if (this.fromOutside(link)) this.inboundWarning(fields, msg);
      else this.log.warn(fields, msg);
      return this.kill(link);
    }
    link.lastHeardAt = performance.now();
    for (const f of frames) {
      if ((link.state as LinkState) === 'closed') return;
      try {
        this.onFrame(link, f);
      } catch (err) {
        // A frame this node cannot act on (a field of the wrong type, an answer too large
        // to encode) ends the link, never the process: the socket's data handler is no
        // place for an error to escape from.
        const who = link.remoteId ?? (link.dialed ? fmt(link.dialed) : `${link.socket.remoteAddress}:${link.socket.remotePort}`);
        const fields = { peer: who, err: (err as Error).message };
        const msg = `peer link to ${who} closed: a frame it sent could not be handled`;
        if (this.fromOutside(link)) this.inboundWarning(fields, msg);
        else this.log.warn(fields, msg);
        return this.kill(link);
      }
    }
  }

  private onFrame(link: Link, f: Frame): void {
    const p = link.peer;
    if (p && p.link === link) {
      p.lastSeenAt = link.lastHeardAt;
      p.receivedFrames++;
    }
    switch (f[0]) {
      case FrameKind.Message:
        if (link.state !== 'up' || !p) return;
        if (p.link !== link) return; // a duplicate being closed: its peer speaks on the kept link
        for (const h of this.messageHandlers) {
          try {
            h(p.id, f[1] as PeerMessage);
          } catch (err) {
            this.log.error({ err, peer: p.id, type: (f[1] as PeerMessage).type }, 'peer message handler failed');
          }
        }
        return;
      case FrameKind.Hello:
        return this.onHello(link, f[1]);
      case FrameKind.Welcome:
        return this.onWelcome(link, f[1]);
      case FrameKind.Refuse:
        return this.onRefuse(link, f[1]);
      case FrameKind.Ping:
        // Only a number is echoed: anything else could make the answer larger than allowed.
        if (link.state === 'up' && typeof f[1]?.seq === 'number') this.write(link, encodeFrame([FrameKind.Pong, { seq: f[1].seq }], this.limits.peerMaxFrameBytes));
        return;
      case FrameKind.Pong: {
        const sent = link.pingSentAt.get(f[1].seq);
        if (sent !== undefined && p) {
          p.rttMs = Math.round((performance.now() - sent) * 100) / 100;
          for (const s of link.pingSentAt.keys()) if (s <= f[1].seq) link.pingSentAt.delete(s);
        }
        return;
      }
      case FrameKind.Members:
        if (link.state === 'up') this.learn(f[1].members);
        return;
      case FrameKind.Auth:
        return this.onAuth(link, f[1]?.nonce);
      case FrameKind.Proof:
        return this.onProof(link, f[1]?.mac);
      case FrameKind.Accepted:
        return this.onAccepted(link, f[1]);
      case FrameKind.Bye:
        this.log.info({ peer: link.remoteId, reason: f[1].reason }, `peer ${link.remoteId ?? '?'} is leaving`);
        return this.kill(link);
      default:
        return;
    }
  }

  // ---- handshake ----

  private sendHello(link: Link, expect: string | null): void {
    if (link.state !== 'handshake') return;
    const hello: HelloBody = { proto: PEER_PROTOCOL_VERSION, cluster: this.cluster, id: this.nodeId, listen: fmt(this.advertised), expect, members: this.members() };
    if (this.secret !== null) hello.nonce = link.nonce = randomBytes(NONCE_BYTES);
    this.write(link, encodeFrame([FrameKind.Hello, hello], this.limits.peerMaxFrameBytes));
    link.helloSent = true;
  }

  /** The acceptor's side of the handshake. */
  private onHello(link: Link, h: HelloBody): void {
    if (link.state !== 'handshake' || link.dialer !== null) return this.kill(link);
    const refuse = (code: string, detail: string, level: 'warn' | 'debug' = 'warn'): void => this.refuseHello(link, h.id, code, detail, level);
    if (h.proto !== PEER_PROTOCOL_VERSION) return refuse('WRONG_VERSION', `node ${shownId(h.id)} speaks peer protocol ${h.proto}, this node ${PEER_PROTOCOL_VERSION}: run the same Switchboard version on every node`);
    if (!isNodeId(h.id)) return refuse('INVALID_ID', `the dialing node's id ${shownId(h.id)} is not ${NODE_ID_RULE}: give it a --node-id that is`);
    // With a cluster secret, the dialer proves it knows it before anything else of the hello
    // is looked at (cluster, ids, removal: a stranger learns none of them); all of this runs
    // again when its proof arrives (onProof).
    if (this.secret !== null && !link.authed) return this.challenge(link, h);
    // Peer TLS with certificates bound to ids: the dialer is the node its certificate names.
    const certified = this.opts.tls ? certifiedIds(link.socket) : null;
    if (certified && !certified.includes(h.id)) return refuse('CERT_ID_MISMATCH', `node ${shownId(h.id)} presents a certificate issued for node ${idList(certified)}: each node needs its own certificate (subjectAltName URI:${PEER_ID_URI_PREFIX}ID)`);
    // The dialer has a cluster secret and this node none: refused before it is taken up
    // here (a welcome would make this node count it as linked, until the dialer hung up).
    if (this.secret === null && h.nonce !== undefined) return refuse('NO_SECRET', `node ${shownId(h.id)} proves a cluster secret, and this node has none: give every node the same --peer-secret-file`);
    if (h.cluster !== this.cluster) return refuse('WRONG_CLUSTER', `node "${h.id}" belongs to cluster ${shownId(h.cluster)}, this node to "${this.cluster}"`);
    if (h.id === this.nodeId) return refuse('SAME_ID', `the dialing node has this node's id "${h.id}": every node needs its own --node-id`);
    if (h.expect !== null && h.expect !== this.nodeId) {
      return refuse('WRONG_ID', `node "${h.id}" expected node ${shownId(h.expect)} at this address, but this is node "${this.nodeId}": fix its --peers`);
    }
    if (this.removed.has(h.id)) {
      return refuse('REMOVED', `node "${h.id}" was removed from the cluster: ${REJOIN_HINT}`);
    }
    if (!this.peersById.has(h.id) && this.peersById.size >= this.limits.peerMaxPeers) {
      return refuse('TOO_MANY_PEERS', `this node already links to peerMaxPeers (${this.limits.peerMaxPeers}) peers`);
    }
    let address = parseAddress(h.listen);
    if (address && UNSPECIFIED.has(address.host)) address = { host: link.socket.remoteAddress ?? address.host, port: address.port };
    const p = this.ensurePeer(h.id, address);
    if (!p) return refuse('TOO_MANY_PEERS', `this node already links to peerMaxPeers (${this.limits.peerMaxPeers}) peers`);
    link.dialer = h.id;
    link.remoteId = h.id;
    // Two links to one peer are settled here, before either side takes the new one for up:
    // a link closed as a duplicate after messages went over it would lose them (a node
    // reads messages only from the link it keeps). See docs/ap-network.md, "One link per pair".
    const pending = p.dialing;
    const current = p.link;
    const live = current !== null && !this.silent(current);
    // A --join dial (it does not know whom it reaches) to a node already linked or being
    // dialed: the dialer learns the id from the refusal and goes on by id.
    if (h.expect === null && (live || pending)) return refuse('DUPLICATE', `this node links to node "${h.id}" already, or is dialing it`, 'debug');
    if (pending?.helloSent && this.nodeId < h.id) {
      // Crossed dials: ours was sent first and wins if it is answered. The peer's waits
      // for that (bounded by its handshake timer): refused once ours is welcomed,
      // welcomed if ours fails. Refusing at once would keep the peer out for as long as a
      // dial of ours that connects and is never answered (a stale address) keeps trying.
      if (p.held) this.refuseHello(p.held.link, p.id, 'DUPLICATE', 'this node holds a newer link from the same node', 'debug');
      p.held = { link, hello: h };
      link.heldFor = p;
      return;
    }
    if (live && (current.dialer ?? '') < h.id) {
      return refuse('DUPLICATE', `this node has a working link with node "${h.id}", dialed by the smaller id`, 'debug');
    }
    this.welcome(link, h, p);
  }

  private refuseHello(link: Link, peer: unknown, code: string, detail: string, level: 'warn' | 'debug' = 'warn'): void {
    const from = `${link.socket.remoteAddress}:${link.socket.remotePort}`;
    const fields = { from, peer: shownId(peer), code };
    if (level === 'warn') this.inboundWarning(fields, `refused a peer link from ${from}: ${detail}`);
    else this.log.debug(fields, `refused a peer link from ${from}: ${detail}`);
    // Before the dialer proved it knows the cluster secret, this node does not say who it is.
    const id = this.secret === null || link.authed ? this.nodeId : undefined;
    this.write(link, encodeFrame([FrameKind.Refuse, { code, detail, ...(id !== undefined && { id }) }], this.limits.peerMaxFrameBytes));
    link.socket.end();
    this.drop(link, 'refused', false);
  }

  /**
   * A warning about a connection from outside that did not become a link (refused, malformed,
   * timed out): anyone who reaches the port can cause one, so at most
   * INBOUND_WARNINGS_PER_MINUTE are warnings; the rest go to debug level and are counted in
   * the next warning.
   */
  private inboundWarning(fields: Record<string, unknown>, msg: string): void {
    const now = performance.now();
    if (now - this.inboundWindowAt >= 60_000) {
      if (this.inboundSuppressed > 0) this.log.warn({ suppressed: this.inboundSuppressed }, `${this.inboundSuppressed} more refused or failed incoming peer connections in the last minute (logged at debug level)`);
      this.inboundWindowAt = now;
      this.inboundWarned = 0;
      this.inboundSuppressed = 0;
    }
    if (this.inboundWarned < INBOUND_WARNINGS_PER_MINUTE) {
      this.inboundWarned++;
      this.log.warn(fields, msg);
    } else {
      this.inboundSuppressed++;
      this.log.debug(fields, msg);
    }
  }

  // ---- authentication (a cluster secret: peerSecretFile) ----
  //
  // hello (the dialer's nonce) -> auth (the acceptor's nonce) -> proof (the dialer's) ->
  // accepted (the acceptor's id and proof), then welcome or refuse as without a secret.
  // Each proof is an HMAC-SHA256 with the secret over the role, the cluster, the ids and
  // both nonces: fresh for every link (no replay), bound to its direction (a proof cannot
  // be reflected back), and proving the secret without sending it. The dialer proves
  // first: a stranger that connects to the port gets no proof to guess the secret from
  // offline. It authenticates the ends when the link is made; it does not encrypt or sign
  // what follows (docs/ap-network.md, "Security").

  private proofOf(role: 'accept' | 'dial', dialer: string, acceptor: string | null, dialerNonce: Uint8Array, acceptorNonce: Uint8Array): Buffer {
    const h = createHmac('sha256', this.secret as Buffer);
    for (const part of [role, this.cluster, dialer, ...(acceptor === null ? [] : [acceptor])]) h.update(`${part}\u0000`);
    h.update(dialerNonce);
    h.update(acceptorNonce);
    return h.digest();
  }

  private static sameProof(a: unknown, b: Buffer): boolean {
    return a instanceof Uint8Array && a.length === b.length && timingSafeEqual(a, b);
  }

  private static isNonce(n: unknown): n is Uint8Array {
    return n instanceof Uint8Array && n.length === NONCE_BYTES;
  }

  /** The acceptor's side: challenge the dialer (nothing else is said before it proved itself). */
  private challenge(link: Link, h: HelloBody): void {
    if (!TcpPeerTransport.isNonce(h.nonce)) {
      return this.refuseHello(link, h.id, 'AUTH_REQUIRED', `node "${h.id}" has no cluster secret, and this cluster's links authenticate with one: give every node the same --peer-secret-file`);
    }
    if (link.authHello !== null) return this.kill(link); // a second hello while the first waits
    link.nonce = randomBytes(NONCE_BYTES);
    link.authHello = h;
    this.write(link, encodeFrame([FrameKind.Auth, { nonce: link.nonce }], this.limits.peerMaxFrameBytes));
  }

  /** The dialer's side: answer the acceptor's challenge with our proof. */
  private onAuth(link: Link, nonce: unknown): void {
    if (link.state !== 'handshake' || link.dialer !== this.nodeId || !link.dialed || link.peerNonce !== null) return this.kill(link);
    if (this.secret === null || link.nonce === null) return this.failAuth(link, 'it authenticates its links with a cluster secret and this node has none: give every node the same --peer-secret-file');
    if (!TcpPeerTransport.isNonce(nonce)) return this.failAuth(link, 'its authentication frame is malformed');
    link.peerNonce = nonce;
    this.write(link, encodeFrame([FrameKind.Proof, { mac: this.proofOf('dial', this.nodeId, null, link.nonce, nonce) }], this.limits.peerMaxFrameBytes));
  }

  /** The acceptor's side: the dialer's proof; if it holds, ours, and the hello is taken up again. */
  private onProof(link: Link, mac: unknown): void {
    const h = link.authHello;
    if (link.state !== 'handshake' || link.dialer !== null || h === null || link.nonce === null || link.authed) return this.kill(link);
    link.authHello = null;
    if (!TcpPeerTransport.sameProof(mac, this.proofOf('dial', h.id, null, h.nonce as Uint8Array, link.nonce))) {
      return this.refuseHello(link, h.id, 'AUTH_FAILED', `node "${h.id}" does not know this cluster's secret (or belongs to another --cluster): give every node the same --peer-secret-file`);
    }
    link.authed = true;
    const mac2 = this.proofOf('accept', h.id, this.nodeId, h.nonce as Uint8Array, link.nonce);
    this.write(link, encodeFrame([FrameKind.Accepted, { id: this.nodeId, mac: mac2 }], this.limits.peerMaxFrameBytes));
    this.onHello(link, h);
  }

  /** The dialer's side: the acceptor proved itself (or not); its welcome or refusal counts only after this. */
  private onAccepted(link: Link, a: AcceptedBody): void {
    if (link.state !== 'handshake' || link.dialer !== this.nodeId || !link.dialed || link.peerNonce === null || link.nonce === null || link.authed) return this.kill(link);
    if (!isNodeId(a?.id) || a.id === this.nodeId) return this.failAuth(link, 'its authentication frame is malformed');
    if (link.target && a.id !== link.target.id) return this.failAuth(link, `it is node "${a.id}", but --peers names "${link.target.id}" at that address`);
    if (!TcpPeerTransport.sameProof(a.mac, this.proofOf('accept', this.nodeId, a.id, link.nonce, link.peerNonce))) {
      return this.failAuth(link, `node "${a.id}" does not know this cluster's secret: give every node the same --peer-secret-file`);
    }
    link.authed = true;
    link.authId = a.id;
  }

  private failAuth(link: Link, detail: string): void {
    const at = fmt(link.dialed as HostPort);
    this.problem(link.target, `peer link to ${at} refused by this node: ${detail}`, 'warn', at);
    this.kill(link);
  }

  /** Welcomes a link from `p` that is to be its link (see onHello). */
  private welcome(link: Link, h: HelloBody, p: Peer): void {
    const pending = p.dialing;
    const current = p.link;
    if (current) {
      // The dialer's id is smaller, or the peer dialed again while its link looked alive
      // here (it gave the old link up, or it restarted), or the old link went silent. For
      // the peer this is a new link: it is reported down and up here too, so that the
      // engine starts over with it (what was queued for the old link is dropped).
      p.link = null;
      current.peer = null;
      current.socket.end();
      this.drop(current, 'replaced', false);
      this.replaced(p, current);
    }
    link.heldFor = null;
    const welcome: WelcomeBody = { proto: PEER_PROTOCOL_VERSION, cluster: this.cluster, id: this.nodeId, listen: fmt(this.advertised), members: this.members() };
    this.write(link, encodeFrame([FrameKind.Welcome, welcome], this.limits.peerMaxFrameBytes));
    this.up(link, p);
    // Our own dial lost (the peer's id is smaller, or it had not connected): abandoned
    // before it was welcomed.
    if (pending && p.dialing === pending) this.kill(pending);
    this.learn(h.members);
  }

  /** The old link of a peer that dialed again is gone: the engine is told, as for any link lost. */
  private replaced(p: Peer, old: Link): void {
    if (p.queue.length > 0) {
      p.dropped += p.queue.length;
      p.queue = [];
      p.queuedBytes = 0;
    }
    const now = performance.now();
    const alive = !this.silent(old);
    // Twice within a few seconds while the old link was alive: most likely two processes
    // with the same --node-id, taking the link from each other.
    if (alive && p.replacedAt !== null && now - p.replacedAt < REPLACE_WARN_WINDOW_MS) {
      if (p.sharedIdWarnedAt === null || now - p.sharedIdWarnedAt > SHARED_ID_WARN_EVERY_MS) {
        p.sharedIdWarnedAt = now;
        this.log.warn({ peer: p.id }, `node ${p.id} dialed again while its link was alive, twice within ${REPLACE_WARN_WINDOW_MS / 1000} s: two processes may share the id "${p.id}" (every node needs its own --node-id)`);
      }
    } else {
      this.log.info({ peer: p.id }, `peer ${p.id} dialed again: its new link replaces the old one (it restarted, or gave the old link up)`);
    }
    p.replacedAt = now;
    for (const h of this.changeHandlers) h(p.id, false);
  }

  /** A held hello (see onHello): refused when our own dial was welcomed, taken when it failed. */
  private settleHeld(p: Peer): void {
    const held = p.held;
    if (!held || p.dialing) return;
    p.held = null;
    held.link.heldFor = null;
    if (held.link.state !== 'handshake') return;
    if (p.link) return this.refuseHello(held.link, p.id, 'DUPLICATE', `this node's own link with node "${p.id}" was answered first (dialed by the smaller id)`, 'debug');
    this.welcome(held.link, held.hello, p);
  }

  /** The dialer's side: the acceptor said who it is. */
  private onWelcome(link: Link, w: WelcomeBody): void {
    if (link.state !== 'handshake' || link.dialer !== this.nodeId || !link.dialed) return this.kill(link);
    const at = fmt(link.dialed);
    const fail = (detail: string): void => {
      this.problem(link.target, `peer link to ${at} refused by this node: ${detail}`, 'warn');
      this.kill(link);
    };
    if (w.proto !== PEER_PROTOCOL_VERSION) return fail(`it speaks peer protocol ${w.proto}, this node ${PEER_PROTOCOL_VERSION}`);
    if (this.secret !== null && !link.authed) return fail('it welcomed this node without proving it knows the cluster secret (it runs without --peer-secret-file?)');
    if (link.authed && w.id !== link.authId) return fail(`it proved itself as node "${link.authId}" and welcomed as "${w.id}"`);
    if (w.cluster !== this.cluster) return fail(`it belongs to cluster "${w.cluster}", this node to "${this.cluster}"`);
    if (!isNodeId(w.id)) return fail(`its id ${JSON.stringify(w.id)} is not ${NODE_ID_RULE}`);
    const certified = this.opts.tls ? certifiedIds(link.socket) : null;
    if (certified && !certified.includes(w.id)) return fail(`it is node "${w.id}", but its certificate is issued for node ${idList(certified)}`);
    if (w.id === this.nodeId) {
      // A --join list that names this node itself: nothing to link to.
      this.log.debug({ at }, 'a --join address is this node itself');
      if (!link.target) {
        const s = this.seeds.find((x) => x.address === link.dialed);
        if (s) s.done = true;
      }
      return this.kill(link);
    }
    if (link.target && w.id !== link.target.id) return fail(`it is node "${w.id}", but --peers names "${link.target.id}" at that address`);
    if (this.removed.has(w.id)) {
      // A --join address that turns out to be a removed member is dropped, not redialed.
      if (!link.target) {
        const s = this.seeds.find((x) => x.address === link.dialed);
        if (s) s.done = true;
      }
      return fail(`it is node "${w.id}", which was removed from the cluster`);
    }
    const p = link.target ?? this.ensurePeer(w.id, link.dialed);
    if (!p) return fail(`this node already links to peerMaxPeers (${this.limits.peerMaxPeers}) peers`);
    link.remoteId = w.id;
    link.onUp?.();
    this.up(link, p);
    this.learn(w.members);
  }

  private onRefuse(link: Link, r: RefuseBody): void {
    // Only the answer to a hello of ours, before its handshake ended, is a refusal.
    if (link.state !== 'handshake' || link.dialer !== this.nodeId || !link.dialed) return this.kill(link);
    const at = fmt(link.dialed);
    const code = typeof r?.code === 'string' ? r.code.slice(0, 40) : '?';
    const detail = typeof r?.detail === 'string' ? r.detail.slice(0, 500) : '';
    // With a cluster secret, a refusal from an acceptor that has not proved itself is
    // anyone's word: the link failed, nothing more (a stranger's REMOVED or DUPLICATE must
    // not count). The refusals of the authentication itself come before any proof.
    if (this.secret !== null && !link.authed) {
      // Its text is anyone's too: what is logged is this node's own.
      // With peer TLS the acceptor's certificate held: its word on certificates may be shown.
      const said = code === 'CERT_REFUSED' && this.opts.tls && detail !== '' ? detail : PRE_AUTH_REFUSALS[code];
      if (said !== undefined) this.problem(link.target, `peer link to ${at} refused by the peer (${code}): ${said}`, 'warn', at);
      else this.log.debug({ peer: link.target?.id, at, code }, `peer link to ${at} refused before the peer proved it knows the cluster secret: not taken into account`);
      return this.kill(link);
    }
    if (code === 'DUPLICATE') {
      // The peer keeps another link with this node (see onHello).
      const id = this.secret !== null ? link.authId : r.id;
      this.log.debug({ peer: link.target?.id ?? id, at }, `peer link to ${at} not needed: ${detail}`);
      this.kill(link);
      if (!link.target) this.seedIsMember(link, id);
      return;
    }
    if (code === 'REMOVED') {
      if (!this.toldRemoved) {
        this.toldRemoved = true;
        this.log.error({ nodeId: this.nodeId, refusedBy: at }, `this node ("${this.nodeId}") was removed from the cluster by an operator: its peers refuse it and it serves only what it had: ${REJOIN_HINT}`);
      }
      return this.kill(link);
    }
    this.problem(link.target, `peer link to ${at} refused by the peer (${code}): ${detail}`, 'warn');
    this.kill(link);
  }

  /** Whether nothing arrived on a link for more than a ping interval and a half. */
  private silent(l: Link): boolean {
    return performance.now() - l.lastHeardAt > this.limits.peerPingIntervalMs * 1.5;
  }

  /**
   * Frames a link takes before its handshake is done: a hello or welcome (its members list
   * included) fits well within this. A stranger that reaches the port can make the node
   * buffer no more than this per connection, not peerMaxFrameBytes.
   */
  private get handshakeMaxFrameBytes(): number {
    return Math.min(this.limits.peerMaxFrameBytes, HANDSHAKE_FRAME_BASE_BYTES + (this.limits.peerMaxPeers + 1) * HANDSHAKE_FRAME_PER_MEMBER_BYTES);
  }

  /** A link finished its handshake: it becomes the peer's link, or loses to the one it has. */
  private up(link: Link, p: Peer): void {
    clearTimeout(link.handshakeTimer);
    link.state = 'up';
    link.decoder.maxFrameBytes = this.limits.peerMaxFrameBytes;
    link.decoder.limitName = 'peerMaxFrameBytes';
    link.peer = p;
    if (p.dialing === link) p.dialing = null;
    const current = p.link;
    if (current && current !== link) {
      // Two links to one peer that the acceptor could not settle (a --join address that
      // names a node also known by another address): keep the one dialed by the smaller
      // id; of two links this node dialed, the one dialed by id (the acceptor replaces a
      // --join link with it too). A current link that has been silent for more than a ping
      // interval is most likely dead without a reset (the peer's host restarted): the new
      // link wins then.
      const newDialer = link.dialer ?? '';
      const curDialer = current.dialer ?? '';
      const byIdOverSeed = newDialer === curDialer && newDialer === this.nodeId && link.target !== null && current.target === null;
      const keepNew = this.silent(current) || newDialer < curDialer || byIdOverSeed;
      const loser = keepNew ? current : link;
      const winner = keepNew ? link : current;
      p.link = winner;
      loser.peer = null;
      loser.socket.end();
      this.drop(loser, 'duplicate link', false);
      this.log.debug({ peer: p.id, kept: winner.dialer }, 'two links to one peer: kept the one dialed by the smaller id');
      // What waited for the loser's 'drain' goes out on the winner.
      if (keepNew) this.flush(p);
      this.settleHeld(p);
      return;
    }
    p.link = link;
    p.attempt = 0;
    p.lastSeenAt = performance.now();
    clearTimeout(p.retryTimer);
    p.retryTimer = undefined;
    if (p.lastProblem !== null) this.log.info({ peer: p.id }, `peer link to ${p.id} works again`);
    p.lastProblem = null;
    this.log.info({ peer: p.id, address: fmt(p.address), dialedBy: link.dialer }, `peer ${p.id} is reachable`);
    for (const h of this.changeHandlers) h(p.id, true);
    // Tell the other members about a peer they may not know (a node that came by --join).
    this.broadcastMembers(p.id);
    this.settleHeld(p);
  }

  /**
   * A --join address turned out to be a node that links to this one already (refused with
   * DUPLICATE): the seed is done, and the node is known by id from now on.
   */
  private seedIsMember(link: Link, id: unknown): void {
    const s = this.seeds.find((x) => x.address === link.dialed);
    if (s) s.done = true;
    if (typeof id !== 'string' || !isNodeId(id) || id === this.nodeId || !link.dialed) return;
    const p = this.ensurePeer(id, link.dialed);
    if (p) this.dial(p);
  }

  private ensurePeer(id: string, address: HostPort | null): Peer | null {
    if (this.removed.has(id)) return null;
    let p = this.peersById.get(id);
    if (p) {
      if (address && !p.configured && !p.link && (p.address.host !== address.host || p.address.port !== address.port)) p.address = address;
      return p;
    }
    if (this.peersById.size >= this.limits.peerMaxPeers) return null;
    if (!address) return null;
    p = new Peer(id, address, false);
    this.peersById.set(id, p);
    this.log.info({ peer: id, address: fmt(address) }, `learned member ${id} at ${fmt(address)}`);
    return p;
  }

  private learn(members: MemberRecord[]): void {
    if (!Array.isArray(members)) return;
    for (const m of members.slice(0, this.limits.peerMaxPeers + 1)) {
      if (!m || !isNodeId(m.id) || typeof m.address !== 'string' || m.id === this.nodeId) continue;
      if (this.peersById.has(m.id)) continue; // (ensurePeer refuses removed members)
      const a = parseAddress(m.address);
      if (!a || UNSPECIFIED.has(a.host)) continue;
      const p = this.ensurePeer(m.id, a);
      if (p) this.dial(p);
    }
  }

  private broadcastMembers(except: string): void {
    const frame = encodeFrame([FrameKind.Members, { members: this.members() }], this.limits.peerMaxFrameBytes);
    for (const p of this.peersById.values()) if (p.id !== except && p.link) this.write(p.link, frame);
  }

  // ---- liveness ----

  private tick(): void {
    const now = performance.now();
    const deadMs = this.limits.peerPingIntervalMs * this.limits.peerMissedPings;
    for (const p of this.peersById.values()) {
      const l = p.link;
      if (!l) continue;
      if (now - l.lastHeardAt > deadMs) {
        this.log.warn({ peer: p.id, silentMs: Math.round(now - l.lastHeardAt) }, `peer ${p.id} is unreachable: nothing heard for ${this.limits.peerMissedPings} ping intervals`);
        this.kill(l);
        continue;
      }
      l.pingSeq++;
      l.pingSentAt.set(l.pingSeq, now);
      if (l.pingSentAt.size > this.limits.peerMissedPings + 1) l.pingSentAt.delete(l.pingSeq - this.limits.peerMissedPings - 1);
      this.write(l, encodeFrame([FrameKind.Ping, { seq: l.pingSeq }], this.limits.peerMaxFrameBytes));
    }
  }

  // ---- writing ----

  private scheduleFlush(p: Peer): void {
    if (p.flushScheduled) return;
    p.flushScheduled = true;
    setImmediate(() => {
      p.flushScheduled = false;
      this.flush(p);
    });
  }

  /** Writes queued frames while the socket takes them; the rest waits for 'drain'. */
  private flush(p: Peer, all = false): void {
    const l = p.link;
    if (!l || l.state !== 'up') return;
    while (p.queue.length > 0 && (l.writable || all)) {
      // One write per batch of up to 256 KiB: few syscalls, bounded copies.
      let n = 0;
      let bytes = 0;
      while (n < p.queue.length && bytes < 256 * 1024) bytes += (p.queue[n++] as Queued).bytes.length;
      const batch = p.queue.splice(0, n);
      p.queuedBytes -= bytes;
      p.sentFrames += n;
      this.write(l, n === 1 ? (batch[0] as Queued).bytes : Buffer.concat(batch.map((q) => q.bytes), bytes));
    }
  }

  private write(l: Link, bytes: Buffer): void {
    if (l.socket.destroyed || !l.socket.writable) return;
    if (!l.socket.write(bytes)) l.writable = false;
  }

  // ---- ending ----

  /** Closes a link at once (protocol error, dead peer, bye, refusal seen). */
  private kill(link: Link): void {
    link.socket.destroy();
    this.drop(link, 'closed', true);
  }

  private fail(link: Link, why: string): void {
    const at = link.dialed ? fmt(link.dialed) : `${link.socket.remoteAddress}:${link.socket.remotePort}`;
    if (this.fromOutside(link)) this.inboundWarning({ from: at }, `peer link from ${at}: ${why}`);
    else this.problem(link.target, `peer link to ${at}: ${why}`, 'warn', at);
    this.kill(link);
  }

  /** A connection someone made to this node that has not become a link yet: anyone's. */
  private fromOutside(link: Link): boolean {
    return link.dialed === null && link.state === 'handshake';
  }

  /** Forgets a link; when it was a peer's link, the peer is down and is redialed. */
  private drop(link: Link, _why: string, redial: boolean): void {
    if (link.state === 'closed') return;
    const wasUp = link.state === 'up';
    link.state = 'closed';
    clearTimeout(link.handshakeTimer);
    this.links.delete(link);
    if (!link.socket.destroyed && !redial) {
      const t = setTimeout(() => link.socket.destroy(), 1_000);
      t.unref();
    }
    const target = link.target;
    const wasPending = target !== null && target.dialing === link;
    if (wasPending) target.dialing = null;
    const held = link.heldFor;
    if (held && held.held?.link === link) held.held = null;
    link.heldFor = null;
    const p = link.peer;
    if (wasUp && p && p.link === link) {
      p.link = null;
      if (p.queue.length > 0) {
        p.dropped += p.queue.length;
        p.queue = [];
        p.queuedBytes = 0;
      }
      if (!this.closed) {
        this.log.warn({ peer: p.id }, `peer ${p.id} is unreachable`);
        for (const h of this.changeHandlers) h(p.id, false);
      }
    }
    if (this.closed) return;
    // Our dial that held a crossed hello failed: that hello is taken now.
    if (wasPending) this.settleHeld(target);
    // Redial a peer we have no link to (ours failed, or its dial to us broke).
    for (const q of [target, p]) {
      if (q && !q.link && !q.dialing && !q.retryTimer && !this.removed.has(q.id)) this.retry(q);
    }
  }

  private retry(p: Peer): void {
    const wait = reconnectDelay(p.attempt++, this.limits.peerReconnectMinMs, this.limits.peerReconnectMaxMs, this.random);
    p.retryTimer = setTimeout(() => {
      p.retryTimer = undefined;
      this.dial(p);
    }, wait);
    p.retryTimer.unref();
  }

  /** Logs a link problem once until it changes (a retry loop does not flood the log). */
  private problem(p: Peer | null, msg: string, level: 'warn' | 'info', address?: string): void {
    if (p) {
      if (p.lastProblem === msg) return;
      p.lastProblem = msg;
    } else if (address !== undefined) {
      // A --join address (no peer yet): once per address and message as well.
      if (this.addressProblems.get(address) === msg) return;
      if (this.addressProblems.size >= this.limits.peerMaxPeers * 4) this.addressProblems.clear();
      this.addressProblems.set(address, msg);
    }
    this.log[level]({ peer: p?.id }, msg);
  }
}

/**
 * Starts the peer links of one node: binds the listener, dials the peers and the --join
 * addresses, and returns the running transport.
 *
 * @example
 * const t = await createTcpTransport({ nodeId: 'a', listen: { host: '127.0.0.1', port: 7701 },
 *   peers: [{ id: 'b', host: '127.0.0.1', port: 7702 }], join: [], limits: DEFAULT_LIMITS, logger });
 * t.onMessage((from, msg) => console.log(from, msg.type));
 */
export async function createTcpTransport(opts: TcpTransportOptions): Promise<TcpTransport> {
  const t = new TcpPeerTransport(opts);
  await t.start();
  return t;
}
