/**
 * What the scheduler needs from a check runner, and the helpers they share. A runner turns
 * one probe into a CheckResult; it never throws (every failure is a critical result with a
 * readable output) and it stops when its signal aborts (the scheduler's time box).
 */
import type { CheckResult, CheckSpec } from '@switchboard/protocol';

export interface ProbeTarget {
  spec: CheckSpec;
  /** http: a URL; tcp and grpc: host:port. */
  target: string;
}

export type Probe = (t: ProbeTarget, signal: AbortSignal) => Promise<CheckResult>;

/** Node's error codes, as a few words people recognise. */
const CODES: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ETIMEDOUT: 'connection timed out',
  ENOTFOUND: 'host name does not resolve',
  EAI_AGAIN: 'host name lookup failed',
  EPIPE: 'connection closed',
  UND_ERR_SOCKET: 'connection closed by the other side',
  UND_ERR_CONNECT_TIMEOUT: 'connection timed out',
  UND_ERR_HEADERS_TIMEOUT: 'no answer in time',
  UND_ERR_BODY_TIMEOUT: 'the answer stalled',
  CERT_HAS_EXPIRED: 'TLS certificate expired',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'self-signed TLS certificate',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'TLS certificate not trusted',
  ERR_TLS_CERT_ALTNAME_INVALID: 'TLS certificate is for another host',
};

/** A failure as a short output line: what happened and its code. */
export function describeError(err: unknown): string {
  let e = err as { code?: string; message?: string; cause?: unknown; errors?: unknown[] } | undefined;
  // Happy eyeballs wraps the attempts in an AggregateError; undici wraps the cause.
  for (let i = 0; i < 3 && e && !e.code && (e.cause || e.errors?.length); i++) e = (e.cause ?? e.errors?.[0]) as typeof e;
  const code = e?.code;
  if (code && CODES[code]) return `${CODES[code]} (${code})`;
  if (code) return `${e?.message ?? code} (${code})`;
  return e?.message ?? String(err);
}

export const critical = (output: string): CheckResult => ({ status: 'critical', output });
