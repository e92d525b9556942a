/**
 * The one registry of error codes of the public API (see api-v1.md). Each code has a
 * fixed HTTP status and title; the detail and hint are written where the error happens.
 */
export const ERRORS = {
  INVALID_ARGUMENT: { status: 400, title: 'Invalid argument' },
  LIMIT_EXCEEDED: { status: 400, title: 'Limit exceeded' },
  /** A check's target is an address in a network the node's checks may not reach (checkDenyNetworks, checkAllowNetworks). */
  CHECK_TARGET_DENIED: { status: 400, title: 'Check target denied' },
  UNKNOWN_FIELD: { status: 400, title: 'Unknown field' },
  /** The node requires a bearer token (apiTokensFile) and the request has none, or one it does not accept. */
  UNAUTHENTICATED: { status: 401, title: 'Unauthenticated' },
  /** The request's token may read but the request writes. */
  FORBIDDEN: { status: 403, title: 'Forbidden' },
  PAYLOAD_TOO_LARGE: { status: 413, title: 'Payload too large' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, title: 'Unsupported media type' },
  NOT_FOUND: { status: 404, title: 'Not found' },
  METHOD_NOT_ALLOWED: { status: 405, title: 'Method not allowed' },
  LEASE_NOT_FOUND: { status: 404, title: 'Lease not found' },
  INSTANCE_NOT_FOUND: { status: 404, title: 'Instance not found' },
  CHECK_NOT_FOUND: { status: 404, title: 'Check not found' },
  /** ap mode: DELETE /v1/cluster/members/{id} names no member this node knows (or one removed already). */
  MEMBER_NOT_FOUND: { status: 404, title: 'Member not found' },
  /** ap mode: a member cannot be removed while it is reachable: it would keep writing. */
  MEMBER_REACHABLE: { status: 409, title: 'Member reachable' },
  /** ap mode: a node cannot remove itself from the cluster. */
  MEMBER_IS_SELF: { status: 409, title: 'Member is this node' },
  /** The call exists only in another mode (cluster membership: ap mode). */
  UNSUPPORTED_MODE: { status: 409, title: 'Not supported in this mode' },
  RATE_LIMITED: { status: 429, title: 'Rate limited' },
  /** A server-side pick (an extension) found no instance of the service it may answer. */
  NO_INSTANCE: { status: 503, title: 'No instance available' },
  /** The service proxy (an extension) could reach no instance of the service. */
  UPSTREAM_UNAVAILABLE: { status: 502, title: 'Upstream unavailable' },
  /** The service proxy's instance sent no answer in time. */
  UPSTREAM_TIMEOUT: { status: 504, title: 'Upstream timeout' },
  STORE_UNAVAILABLE: { status: 503, title: 'Store unavailable' },
  NOT_READY: { status: 503, title: 'Not ready' },
  INTERNAL: { status: 500, title: 'Internal error' },
  DASHBOARD_NOT_BUILT: { status: 503, title: 'Dashboard not built' },
} as const;

export type ErrorCode = keyof typeof ERRORS;

/** The problem+json body of every error answer. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: ErrorCode;
  /** How to fix the request (a Switchboard extension of RFC 9457). */
  hint?: string;
  /** The field or query parameter at fault, as a JSON-pointer-like path. */
  field?: string;
  /** The named limit that was passed, for LIMIT_EXCEEDED. */
  limit?: string;
  /** Seconds to wait before retrying, mirrored in the Retry-After header. */
  retryAfterSec?: number;
}

export const PROBLEM_TYPE_PREFIX = 'urn:switchboard:error:';

/** An error that carries everything needed to answer with problem+json. */
export class SwitchboardError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly hint: string | undefined;
  readonly field: string | undefined;
  readonly limit: string | undefined;
  readonly retryAfterSec: number | undefined;

  constructor(
    code: ErrorCode,
    detail: string,
    extra: { hint?: string; field?: string; limit?: string; retryAfterSec?: number } = {},
  ) {
    super(detail);
    this.name = 'SwitchboardError';
    this.code = code;
    this.status = ERRORS[code].status;
    this.hint = extra.hint;
    this.field = extra.field;
    this.limit = extra.limit;
    this.retryAfterSec = extra.retryAfterSec;
  }

  toProblem(): Problem {
    const p: Problem = {
      type: PROBLEM_TYPE_PREFIX + this.code,
      title: ERRORS[this.code].title,
      status: this.status,
      detail: this.message,
      code: this.code,
    };
    if (this.hint !== undefined) p.hint = this.hint;
    if (this.field !== undefined) p.field = this.field;
    if (this.limit !== undefined) p.limit = this.limit;
    if (this.retryAfterSec !== undefined) p.retryAfterSec = this.retryAfterSec;
    return p;
  }
}

export function invalid(field: string, detail: string, hint: string): SwitchboardError {
  return new SwitchboardError('INVALID_ARGUMENT', detail, { field, hint });
}

export function limitExceeded(
  limit: string,
  field: string,
  detail: string,
  hint: string,
): SwitchboardError {
  return new SwitchboardError('LIMIT_EXCEEDED', `${detail} (limit ${limit})`, {
    field,
    limit,
    hint,
  });
}
