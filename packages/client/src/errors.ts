/**
 * Typed errors of the SDK. Every error is a {@link SwitchboardClientError} with a `code`:
 * the registry's own problem codes (api-v1.md, `ERRORS` in @switchboard/protocol) when the
 * registry refused a request, and client-side codes for what happens in this process.
 */
import { ERRORS, type ErrorCode, type Problem, type TlsFailure, type TlsFailureKind } from '@switchboard/protocol';

/**
 * Codes of failures that happen in the client, not in the registry.
 *
 * @example
 * if ((CLIENT_ERROR_CODES as readonly string[]).includes(err.code)) console.warn('client-side failure');
 */
export const CLIENT_ERROR_CODES = [
  /** No instance of the service can take the call (none registered, none up and healthy). */
  'NO_INSTANCE',
  /** The service's bulkhead is full: too many calls in flight and its queue is full too. */
  'BULKHEAD_FULL',
  /** Every candidate instance is ejected by its circuit breaker. */
  'CIRCUIT_OPEN',
  /** A retry was needed but the retry budget of the service is spent. */
  'RETRY_BUDGET_EXHAUSTED',
  /** No registry endpoint could be reached (after failover and backoff). */
  'REGISTRY_UNAVAILABLE',
  /** An operation ran past its deadline. */
  'TIMEOUT',
  /** The client was closed; it takes no new work. */
  'CLIENT_CLOSED',
  /** The call reached instances but every attempt failed (network errors). */
  'UPSTREAM_FAILED',
  /** The registry answered something that is not API v1. */
  'PROTOCOL_ERROR',
  /** A registry node's TLS certificate could not be verified, or the node speaks no TLS; not retried. */
  'TLS_ERROR',
] as const;

/**
 * A client-side error code.
 *
 * @example
 * const code: ClientErrorCode = 'BULKHEAD_FULL';
 */
export type ClientErrorCode = (typeof CLIENT_ERROR_CODES)[number];

/**
 * Every code a {@link SwitchboardClientError} may carry: the registry's and the client's.
 *
 * @example
 * function retryable(code: SwitchboardErrorCode) { return code === 'STORE_UNAVAILABLE' || code === 'REGISTRY_UNAVAILABLE'; }
 */
export type SwitchboardErrorCode = ErrorCode | ClientErrorCode;

/**
 * The base class of every error the SDK throws; switch on `code`.
 *
 * @example
 * try {
 *   await client.fetch('http://orders/v1/orders/42');
 * } catch (err) {
 *   if (err instanceof SwitchboardClientError && err.code === 'NO_INSTANCE') return fallback();
 *   throw err;
 * }
 */
export class SwitchboardClientError extends Error {
  readonly code: SwitchboardErrorCode;

  constructor(code: SwitchboardErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SwitchboardClientError';
    this.code = code;
  }
}

/**
 * The registry answered with a problem+json error. `code` is the registry's code; the
 * subclasses below exist for the codes that callers usually handle on their own.
 *
 * @example
 * try {
 *   await client.register({ service: 'orders', port: 8080, weight: 99999 });
 * } catch (err) {
 *   if (err instanceof RegistryError) console.error(err.code, err.problem.field, err.problem.hint);
 * }
 */
export class RegistryError extends SwitchboardClientError {
  declare readonly code: ErrorCode;
  /** The HTTP status of the answer. */
  readonly status: number;
  /** The problem+json body as the registry sent it. */
  readonly problem: Problem;
  /** The registry endpoint that answered. */
  readonly endpoint: string | undefined;
  /** How long the registry asked us to wait before retrying (Retry-After), if it did. */
  readonly retryAfterMs: number | undefined;

  constructor(problem: Problem, endpoint?: string) {
    super(problem.code, problem.hint ? `${problem.detail} (${problem.hint})` : problem.detail);
    this.name = 'RegistryError';
    this.status = problem.status;
    this.problem = problem;
    this.endpoint = endpoint;
    this.retryAfterMs = problem.retryAfterSec === undefined ? undefined : problem.retryAfterSec * 1000;
  }
}

/**
 * A malformed or out-of-range field (`INVALID_ARGUMENT`, or `CHECK_TARGET_DENIED` for a check
 * target the registry's nodes may not probe); `problem.field` names it. Also
 * thrown before any request when the SDK can tell the input is malformed.
 *
 * @example
 * await client.register({ service: 'Orders', port: 8080 }).catch((e) => e instanceof InvalidArgumentError);
 */
export class InvalidArgumentError extends RegistryError {
  constructor(problem: Problem, endpoint?: string) {
    super(problem, endpoint);
    this.name = 'InvalidArgumentError';
  }
}

/**
 * A named registry limit would be passed (`LIMIT_EXCEEDED`); `problem.limit` names it.
 *
 * @example
 * if (err instanceof LimitExceededError) console.error('limit', err.problem.limit);
 */
export class LimitExceededError extends RegistryError {
  constructor(problem: Problem, endpoint?: string) {
    super(problem, endpoint);
    this.name = 'LimitExceededError';
  }
}

/**
 * The lease does not exist (`LEASE_NOT_FOUND`). The SDK handles it itself by opening a new
 * lease and registering again; you see it only from low-level calls.
 *
 * @example
 * if (err instanceof LeaseNotFoundError) console.warn('lease gone');
 */
export class LeaseNotFoundError extends RegistryError {
  constructor(problem: Problem, endpoint?: string) {
    super(problem, endpoint);
    this.name = 'LeaseNotFoundError';
  }
}

/**
 * The instance does not exist (`INSTANCE_NOT_FOUND`).
 *
 * @example
 * await registration.setStatus('draining').catch((e) => { if (!(e instanceof InstanceNotFoundError)) throw e; });
 */
export class InstanceNotFoundError extends RegistryError {
  constructor(problem: Problem, endpoint?: string) {
    super(problem, endpoint);
    this.name = 'InstanceNotFoundError';
  }
}

/**
 * The registry refused for load (`RATE_LIMITED`, with `retryAfterMs`).
 *
 * @example
 * if (err instanceof RateLimitedError) await sleep(err.retryAfterMs ?? 1000);
 */
export class RateLimitedError extends RegistryError {
  constructor(problem: Problem, endpoint?: string) {
    super(problem, endpoint);
    this.name = 'RateLimitedError';
  }
}

/**
 * The registry cannot take writes now (`STORE_UNAVAILABLE`, cp mode without quorum) or is
 * not ready (`NOT_READY`). The SDK fails over to another endpoint on these.
 *
 * @example
 * if (err instanceof RegistryUnavailableAnswerError) console.warn(err.code);
 */
export class RegistryUnavailableAnswerError extends RegistryError {
  constructor(problem: Problem, endpoint?: string) {
    super(problem, endpoint);
    this.name = 'RegistryUnavailableAnswerError';
  }
}

/**
 * The registry requires a bearer token and refused the one sent (`UNAUTHENTICATED`, 401:
 * none, or one it does not accept) or found it may only read (`FORBIDDEN`, 403: a write
 * or the session with a `read` token). Never retried: the client stops what needed it
 * (registrations reject, views fail `ready()`) and reports it once as 'registry-error'.
 * Give a valid token with the `token` option or `SWITCHBOARD_TOKEN`. A certificate the
 * client cannot verify is handled the same way: {@link TlsError}.
 *
 * @example
 * await client.register({ service: 'orders', port: 8080 }).catch((e) => { if (e instanceof AuthError) console.error('check SWITCHBOARD_TOKEN:', e.message); });
 */
export class AuthError extends RegistryError {
  constructor(problem: Problem, endpoint?: string) {
    super(problem, endpoint);
    this.name = 'AuthError';
  }
}

/** What the SDK says about each kind of TLS failure, and what to change. */
const TLS_TEXT: Readonly<Record<TlsFailureKind, { reason: string; hint: string }>> = {
  untrusted: { reason: "the registry's TLS certificate is not trusted", hint: 'give the CA that signed it with the ca or caFile option (or SWITCHBOARD_CA_FILE=FILE)' },
  name: { reason: "the registry's TLS certificate is not for this address", hint: "use an endpoint with the name or address the certificate was issued for (its subjectAltName)" },
  time: { reason: "the registry's TLS certificate has expired or is not valid yet", hint: "the registry's certificate must be renewed (or this machine's clock is wrong)" },
  plain: { reason: 'the registry does not answer with TLS', hint: 'give the endpoint as http://, or start the registry with --tls-cert-file' },
};

/**
 * A registry node's TLS certificate could not be verified: no CA the client trusts signed
 * it (`kind` `untrusted`: `SELF_SIGNED_CERT_IN_CHAIN`, `UNABLE_TO_VERIFY_LEAF_SIGNATURE`,
 * ...), it is for another name or address (`name`), it has expired (`time`); or an
 * https:// endpoint speaks no TLS (`plain`). Waiting does not change any of these, so it
 * is handled like an {@link AuthError}: never retried, no failover to other endpoints;
 * registrations reject, views fail `ready()`, and the client reports it once as
 * 'registry-error'. `hint` says what to change (for a private CA: the `ca` or `caFile`
 * option, or `SWITCHBOARD_CA_FILE`).
 *
 * @example
 * await client.service('orders').ready().catch((e) => { if (e instanceof TlsError) console.error(e.tlsCode, e.hint); });
 */
export class TlsError extends SwitchboardClientError {
  declare readonly code: 'TLS_ERROR';
  /** The registry endpoint dialed. */
  readonly endpoint: string;
  /** What is wrong: `untrusted`, `name`, `time` or `plain`. */
  readonly kind: TlsFailureKind;
  /** Node's code of the failure, such as `SELF_SIGNED_CERT_IN_CHAIN` or `ERR_TLS_CERT_ALTNAME_INVALID`. */
  readonly tlsCode: string;
  /** What to change. */
  readonly hint: string;

  constructor(endpoint: string, failure: TlsFailure, cause?: unknown) {
    const text = TLS_TEXT[failure.kind];
    super('TLS_ERROR', `${endpoint}: ${text.reason} (${failure.code}); ${text.hint}`, { cause });
    this.name = 'TlsError';
    this.endpoint = endpoint;
    this.kind = failure.kind;
    this.tlsCode = failure.code;
    this.hint = text.hint;
  }
}

const BY_CODE: Partial<Record<ErrorCode, new (p: Problem, e?: string) => RegistryError>> = {
  UNAUTHENTICATED: AuthError,
  FORBIDDEN: AuthError,
  INVALID_ARGUMENT: InvalidArgumentError,
  // A check target the registry's nodes may not probe: a refused field too.
  CHECK_TARGET_DENIED: InvalidArgumentError,
  LIMIT_EXCEEDED: LimitExceededError,
  LEASE_NOT_FOUND: LeaseNotFoundError,
  INSTANCE_NOT_FOUND: InstanceNotFoundError,
  RATE_LIMITED: RateLimitedError,
  STORE_UNAVAILABLE: RegistryUnavailableAnswerError,
  NOT_READY: RegistryUnavailableAnswerError,
};

/**
 * The typed error for a problem+json body (an unknown code becomes `INTERNAL`).
 *
 * @example
 * const err = registryError({ type: 'urn:switchboard:error:LEASE_NOT_FOUND', title: 'Lease not found', status: 404, detail: 'gone', code: 'LEASE_NOT_FOUND' });
 * err instanceof LeaseNotFoundError; // true
 */
export function registryError(problem: Problem, endpoint?: string): RegistryError {
  const known = Object.hasOwn(ERRORS, problem.code);
  const p: Problem = known ? problem : { ...problem, code: 'INTERNAL' };
  const Ctor = BY_CODE[p.code] ?? RegistryError;
  return new Ctor(p, endpoint);
}

/**
 * No instance can take the call: the view is empty, or no instance is `up` and not
 * `critical` (after filters).
 *
 * @example
 * const res = await view.fetch('/x').catch((e) => (e instanceof NoInstanceError ? null : Promise.reject(e)));
 */
export class NoInstanceError extends SwitchboardClientError {
  readonly service: string;
  constructor(service: string, detail = 'no instance is up and healthy') {
    super('NO_INSTANCE', `service ${service}: ${detail}`);
    this.name = 'NoInstanceError';
    this.service = service;
  }
}

/**
 * The bulkhead of a service is full: `maxConcurrent` calls are in flight and `maxQueued`
 * more are waiting. Shed load or raise the limits.
 *
 * @example
 * if (err instanceof BulkheadFullError) res.writeHead(503).end();
 */
export class BulkheadFullError extends SwitchboardClientError {
  readonly service: string;
  /** The limit that was hit: `maxQueued`. */
  readonly limit: string;
  constructor(service: string, maxConcurrent: number, maxQueued: number) {
    super('BULKHEAD_FULL', `service ${service}: ${maxConcurrent} calls in flight and ${maxQueued} queued (limit maxQueued)`);
    this.name = 'BulkheadFullError';
    this.service = service;
    this.limit = 'maxQueued';
  }
}

/**
 * Every instance that could take the call is ejected by its circuit breaker.
 *
 * @example
 * if (err instanceof CircuitOpenError) console.warn(`${err.service}: all ${err.ejected} instances ejected`);
 */
export class CircuitOpenError extends SwitchboardClientError {
  readonly service: string;
  readonly ejected: number;
  constructor(service: string, ejected: number) {
    super('CIRCUIT_OPEN', `service ${service}: all ${ejected} candidate instances are ejected by their circuit breakers`);
    this.name = 'CircuitOpenError';
    this.service = service;
    this.ejected = ejected;
  }
}

/**
 * A retry was needed but the service's retry budget is spent; `cause` is the failure that
 * would have been retried.
 *
 * @example
 * if (err instanceof RetryBudgetExhaustedError) console.warn('retries shed', err.cause);
 */
export class RetryBudgetExhaustedError extends SwitchboardClientError {
  readonly service: string;
  constructor(service: string, cause: unknown) {
    super('RETRY_BUDGET_EXHAUSTED', `service ${service}: the retry budget is spent; not retrying`, { cause });
    this.name = 'RetryBudgetExhaustedError';
    this.service = service;
  }
}

/**
 * No registry endpoint answered. `cause` is the last failure.
 *
 * @example
 * await view.ready({ timeoutMs: 2000 }).catch((e) => { if (e instanceof RegistryUnavailableError) startDegraded(); });
 */
export class RegistryUnavailableError extends SwitchboardClientError {
  readonly endpoints: readonly string[];
  constructor(endpoints: readonly string[], cause?: unknown, detail?: string) {
    super('REGISTRY_UNAVAILABLE', detail ?? `no registry endpoint answered (${endpoints.join(', ')})`, { cause });
    this.name = 'RegistryUnavailableError';
    this.endpoints = endpoints;
  }
}

/**
 * An operation ran past its deadline (`timeoutMs`).
 *
 * @example
 * await client.fetch('http://orders/slow', { timeoutMs: 100 }).catch((e) => e instanceof TimeoutError);
 */
export class TimeoutError extends SwitchboardClientError {
  readonly timeoutMs: number;
  constructor(what: string, timeoutMs: number) {
    super('TIMEOUT', `${what} did not finish within ${timeoutMs} ms`);
    this.name = 'TimeoutError';
    this.timeoutMs = timeoutMs;
  }
}

/**
 * The client was closed.
 *
 * @example
 * await client.close();
 * await client.register({ service: 'x', port: 1 }).catch((e) => e instanceof ClientClosedError); // true
 */
export class ClientClosedError extends SwitchboardClientError {
  constructor(what = 'the client') {
    super('CLIENT_CLOSED', `${what} is closed`);
    this.name = 'ClientClosedError';
  }
}

/**
 * Every attempt of a call failed at the network level (connection refused, reset,
 * timeout); `cause` is the last failure, `attempts` how many were made.
 *
 * @example
 * if (err instanceof UpstreamError) console.warn(`${err.attempts} attempts failed`, err.cause);
 */
export class UpstreamError extends SwitchboardClientError {
  readonly service: string;
  readonly attempts: number;
  constructor(service: string, attempts: number, cause: unknown) {
    super('UPSTREAM_FAILED', `service ${service}: ${attempts} attempt(s) failed: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    this.name = 'UpstreamError';
    this.service = service;
    this.attempts = attempts;
  }
}

/**
 * The registry answered something that is not API v1 (not JSON, wrong shape).
 *
 * @example
 * if (err instanceof ProtocolError) console.error('is this a Switchboard registry?', err.message);
 */
export class ProtocolError extends SwitchboardClientError {
  constructor(detail: string) {
    super('PROTOCOL_ERROR', detail);
    this.name = 'ProtocolError';
  }
}
