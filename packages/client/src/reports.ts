/**
 * Consumer failure reports: when a discovery-aware fetch sees an instance fail (refused,
 * connect timeout, timeout, reset, HTTP 5xx), the client tells the registry in the
 * background (`POST /v1/services/{service}/instances/{id}/reports`). Several distinct
 * consumers reporting one instance within the registry's window turn it `warning`.
 * Reports never block or fail the caller's request: they are deduplicated per instance,
 * capped in number in flight, and dropped (and counted) beyond the cap.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { TimeoutError } from './errors.js';
import type { RegistryHttp } from './registry-http.js';
import type { Clock } from './time.js';

/** The kinds of failure the registry accepts in a consumer report. */
export type FailureKind = 'connect_refused' | 'connect_timeout' | 'timeout' | 'reset' | 'http_5xx' | 'grpc_unavailable' | 'tls_error' | 'other';

/**
 * Settings of consumer failure reports (`reportFailures` of the client).
 *
 * @example
 * await connect({ reportFailures: { minIntervalMs: 5_000, maxPending: 16 } });
 */
export interface FailureReportOptions {
  /** At most one report per instance within this time. Default 10 s (a third of the registry's default 30 s window). */
  minIntervalMs?: number;
  /** Most reports in flight at once; more are dropped and counted. Default 32. */
  maxPending?: number;
  /** Who reports (an instance id: 1-128 of A-Z a-z 0-9 . _ : -). Default: host, pid and a random suffix made at connect. */
  reporterId?: string;
}

/** Counters of consumer failure reports (`client.failureReports`). */
export interface FailureReportStats {
  reporterId: string;
  /** Reports the registry accepted. */
  sent: number;
  /** Reports the registry refused or did not answer. */
  failed: number;
  /** Reports dropped because `maxPending` were in flight. */
  dropped: number;
  /** Failures not reported because the instance was reported within `minIntervalMs`. */
  deduplicated: number;
  /** Reports in flight now. */
  pending: number;
}

/** Default least time between two reports of one instance. */
export const DEFAULT_REPORT_INTERVAL_MS = 10_000;
/** Default most reports in flight. */
export const DEFAULT_MAX_PENDING_REPORTS = 32;
/** Most instances remembered for deduplication before old entries are pruned. */
const MAX_REMEMBERED = 4_096;
const MAX_DETAIL = 200;

/** A reporter id for this process: host, pid and 6 random hex characters. */
export function defaultReporterId(): string {
  const host = hostname().replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 80) || 'host';
  return `${host}-${process.pid}-${randomBytes(3).toString('hex')}`;
}

/** @internal */
export class FailureReporter {
  readonly reporterId: string;
  private readonly minIntervalMs: number;
  private readonly maxPending: number;
  private readonly last = new Map<string, number>();
  private readonly stats = { sent: 0, failed: 0, dropped: 0, deduplicated: 0, pending: 0 };
  private closed = false;

  constructor(
    private readonly http: RegistryHttp,
    private readonly clock: Clock,
    opts: FailureReportOptions = {},
  ) {
    this.reporterId = opts.reporterId ?? defaultReporterId();
    this.minIntervalMs = Math.max(0, opts.minIntervalMs ?? DEFAULT_REPORT_INTERVAL_MS);
    this.maxPending = Math.max(1, opts.maxPending ?? DEFAULT_MAX_PENDING_REPORTS);
  }

  /** Reports in the background; never throws, never waits. */
  report(namespace: string, service: string, id: string, kind: FailureKind, detail?: string): void {
    if (this.closed) return;
    const key = `${namespace}/${service}/${id}`;
    const now = this.clock.now();
    const prev = this.last.get(key);
    if (prev !== undefined && now - prev < this.minIntervalMs) {
      this.stats.deduplicated++;
      return;
    }
    if (this.stats.pending >= this.maxPending) {
      this.stats.dropped++;
      return;
    }
    this.last.delete(key);
    this.last.set(key, now);
    if (this.last.size > MAX_REMEMBERED) {
      // Oldest first (insertion order): forget those past the interval, or the oldest one.
      for (const [k, t] of this.last) {
        if (this.last.size <= MAX_REMEMBERED && now - t < this.minIntervalMs) break;
        this.last.delete(k);
      }
    }
    this.stats.pending++;
    const body: Record<string, string> = { reporter: this.reporterId, kind };
    if (detail) body.detail = detail.slice(0, MAX_DETAIL);
    this.http
      .any({ method: 'POST', path: `/v1/services/${service}/instances/${encodeURIComponent(id)}/reports`, query: { namespace }, body })
      .then(
        (a) => (a.status === 200 ? this.stats.sent++ : this.stats.failed++),
        () => this.stats.failed++,
      )
      .finally(() => this.stats.pending--);
  }

  snapshot(): FailureReportStats {
    return { reporterId: this.reporterId, ...this.stats };
  }

  close(): void {
    this.closed = true;
  }
}

function errorCode(err: unknown): string | undefined {
  for (let e = err as { code?: unknown; cause?: unknown } | undefined, n = 0; e && n < 5; e = e.cause as typeof e, n++) {
    if (typeof e.code === 'string') return e.code;
  }
  return undefined;
}

/**
 * The report kind of a failed attempt, or undefined when the error says nothing about the
 * instance (the caller's own abort, a bad URL, an error of user code).
 */
export function failureKindOf(err: unknown, attemptSignal: AbortSignal, callerSignal?: AbortSignal): { kind: FailureKind; detail: string } | undefined {
  if (callerSignal?.aborted) return undefined;
  if (attemptSignal.aborted) return attemptSignal.reason instanceof TimeoutError ? { kind: 'timeout', detail: 'no answer within the attempt deadline' } : undefined;
  const code = errorCode(err);
  if (code === undefined) return undefined;
  const detail = code;
  switch (code) {
    case 'ECONNREFUSED':
      return { kind: 'connect_refused', detail };
    case 'UND_ERR_CONNECT_TIMEOUT':
    case 'ETIMEDOUT':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return { kind: 'connect_timeout', detail };
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_BODY_TIMEOUT':
      return { kind: 'timeout', detail };
    case 'ECONNRESET':
    case 'EPIPE':
    case 'UND_ERR_SOCKET':
    case 'UND_ERR_CLOSED':
      return { kind: 'reset', detail };
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return undefined; // name resolution: the resolver's problem, not the instance's
  }
  if (/^(ERR_TLS_|ERR_SSL_|CERT_|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT)/.test(code)) return { kind: 'tls_error', detail };
  if (/^(E[A-Z]+|UND_ERR_[A-Z_]+)$/.test(code)) return { kind: 'other', detail };
  return undefined;
}
