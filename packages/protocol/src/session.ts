/**
 * The session stream: one WebSocket per client process at `GET /v1/session`, over which
 * the process keeps its lease alive. Messages are JSON text frames. The registry uses the
 * connection to tell a process that died (the socket closes without a hand-over: the lease
 * then expires after a short grace) from one that is merely late (its keep-alives stop
 * but the socket stays: the lease TTL decides).
 *
 * A client that moves to another connection (reconnect, failover to another node) opens
 * the new one and sends `resume` BEFORE closing the old one; the old connection is then
 * told `replaced` and its closing changes nothing.
 */
import type { Problem } from './errors.js';

export const SESSION_PATH = '/v1/session';

export type SessionClientMessage =
  /** Grant a new lease bound to this session. */
  | { type: 'open'; ttlMs: number }
  /** Bind an existing lease to this session (and renew it). */
  | { type: 'resume'; leaseId: string }
  /** Renew the lease; send every ttlMs / 3. `seq` comes back in the ack. */
  | { type: 'keepalive'; seq: number }
  /** End the session on purpose: `revoke` deregisters the lease's instances at once. */
  | { type: 'close'; revoke: boolean };

export type SessionServerMessage =
  /** The lease this session now keeps alive. */
  | { type: 'lease'; leaseId: string; ttlMs: number; nodeId: string; epoch: string; graceMs: number }
  | { type: 'ack'; seq: number; ttlMs: number }
  /** The lease ended; the client must open a new one and register again. */
  | { type: 'ended'; leaseId: string; reason: 'lease_expired' | 'lease_revoked' }
  /** Another connection resumed this lease; this one will close. */
  | { type: 'replaced'; leaseId: string }
  /** The node is going away; the lease is intact: resume it on another connection. */
  | { type: 'goaway' }
  /**
   * A request on this session failed; the session stays open (except after a failed
   * `close`). `request` and `seq` name the message that failed, when it could be read.
   */
  | { type: 'error'; problem: Problem; request?: string; seq?: number };
