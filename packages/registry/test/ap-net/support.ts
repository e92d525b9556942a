// Helpers of the peer link tests: transports on 127.0.0.1 with a log that can be read back.
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import { DEFAULT_LIMITS } from '@switchboard/protocol';
import { createTcpTransport, type PeerLinkLimits, type PeerTls, type TcpTransport } from '../../src/engines/ap/net/index.js';
import type { PeerMessage } from '../../src/engines/ap/transport.js';
import { waitUntil } from '../helpers.js';

export interface LogLine {
  level: number;
  msg: string;
  [k: string]: unknown;
}

export function captureLogger(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l.trim() !== '') lines.push(JSON.parse(l) as LogLine);
      cb();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), lines };
}

/**
 * Fast liveness for tests: ping every 100 ms, unreachable after 10 silent intervals (1 s):
 * a loaded 2-core machine can stall a process for several hundred ms, which must not read
 * as a dead peer in tests that expect one link to stay up.
 */
export const TEST_LIMITS: PeerLinkLimits = {
  ...DEFAULT_LIMITS,
  peerPingIntervalMs: 100,
  peerMissedPings: 10,
  peerHandshakeTimeoutMs: 1_000,
  peerReconnectMinMs: 50,
  peerReconnectMaxMs: 400,
};

export interface Node {
  t: TcpTransport;
  lines: LogLine[];
  inbox: { from: string; msg: PeerMessage }[];
  changes: { peer: string; up: boolean }[];
}

export async function node(
  id: string,
  opts: { port?: number; peers?: { id: string; host: string; port: number }[]; join?: { host: string; port: number }[]; limits?: Partial<PeerLinkLimits>; cluster?: string; secret?: string; tls?: PeerTls } = {},
): Promise<Node> {
  const { logger, lines } = captureLogger();
  const t = await createTcpTransport({
    nodeId: id,
    listen: { host: '127.0.0.1', port: opts.port ?? 0 },
    peers: opts.peers ?? [],
    join: opts.join ?? [],
    limits: { ...TEST_LIMITS, ...opts.limits },
    logger,
    ...(opts.cluster ? { cluster: opts.cluster } : {}),
    ...(opts.secret !== undefined ? { secret: Buffer.from(opts.secret) } : {}),
    ...(opts.tls ? { tls: opts.tls } : {}),
  });
  const n: Node = { t, lines, inbox: [], changes: [] };
  t.onMessage((from, msg) => n.inbox.push({ from, msg }));
  t.onPeerChange((peer, up) => n.changes.push({ peer, up }));
  return n;
}

export const at = (n: Node, id: string): { id: string; host: string; port: number } => ({ id, host: '127.0.0.1', port: n.t.address().port });

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `pred` every 10 ms (the link tests measure how long things take); fails with `what` after timeoutMs. */
export function until(pred: () => boolean, timeoutMs: number, what: string): Promise<number> {
  return waitUntil(pred, timeoutMs, what, { intervalMs: 10 });
}

export const reachable = (n: Node, id: string): boolean => n.t.peers().find((p) => p.id === id)?.reachable === true;
