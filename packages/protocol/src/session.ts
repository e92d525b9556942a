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
  | { type: 'close'; revoke: boolean }
  | SessionRequest;

/**
 * Requests over the session (an extension of API v1): the REST calls a client process
 * makes most, on the connection it holds anyway. Each carries an `id` of the client's
 * choosing (a non-negative integer), echoed by its `result` or `error`. Requests run
 * concurrently, like requests on separate HTTP connections: their results may come in
 * any order, so a request that depends on another is sent after that one's result.
 */
export type SessionRequest = (
  /** PUT /v1/services/{service}/instances/{instanceId}: `instance` is the same body. */
  | { type: 'register'; id: number; service: string; instanceId: string; namespace?: string; instance: unknown }
  /** DELETE /v1/services/{service}/instances/{instanceId}. */
  | { type: 'deregister'; id: number; service: string; instanceId: string; namespace?: string }
  /** GET /v1/services/{service} with the same filters (`tag` a list). */
  | { type: 'read'; id: number; service: string; namespace?: string; healthy?: boolean; zone?: string; tag?: string[]; version?: string; consistent?: boolean }
) & SessionRequestOptions;

/** What any request may carry besides its fields. */
export interface SessionRequestOptions {
  /** Refuse unknown fields (400 UNKNOWN_FIELD) instead of ignoring them, as the Switchboard-Strict header does. */
  strict?: boolean;
  /** W3C trace context of the caller, as the HTTP headers of the same names carry it. */
  traceparent?: string;
  tracestate?: string;
}

export type SessionRequestType = SessionRequest['type'];
export const SESSION_REQUEST_TYPES: readonly SessionRequestType[] = ['register', 'deregister', 'read'];

/**
 * Requests of one session running at once; beyond it a request gets `error` with
 * RATE_LIMITED (the session stays open).
 */
export const SESSION_MAX_INFLIGHT_REQUESTS = 256;

/**
 * Bytes of answers a session may have queued for a client that does not read them: beyond
 * it requests are refused (RATE_LIMITED), and beyond twice it the connection is cut.
 */
export const SESSION_MAX_BUFFERED_BYTES = 4 * 1024 * 1024;

export type SessionServerMessage =
  /** The lease this session now keeps alive. */
  | { type: 'lease'; leaseId: string; ttlMs: number; nodeId: string; epoch: string; graceMs: number; maxMessageBytes?: number }
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
  | { type: 'error'; problem: Problem; request?: string; seq?: number; id?: number; at?: number }
  /**
   * A request's answer: `revision` (and `warnings`, unknown fields it ignored) for
   * register and deregister, `answer` (the service answer of GET /v1/services/{service})
   * for read.
   */
  | { type: 'result'; id: number; revision?: number; warnings?: string[]; answer?: unknown; at?: number }
  /**
   * cp, on a node's link for forwarded writes only: the node's clock (ms, monotonic), sent
   * when the link opens and every second; its results and errors carry `at` too. The
   * sending node states each write's `planBy` on this clock.
   */
  | { type: 'clock'; at: number };
