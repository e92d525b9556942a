// Reading the registry's REST API (docs/api.md) from the page's own origin.
import type { InstanceHistory, NodeStatus, Problem, ServiceAnswer, ServiceList, WatchEvent, ResetEvent } from '@switchboard/protocol';

export type { Instance, InstanceHistory, HistoryEntry, NodeStatus, ServiceAnswer, ServiceList, ServiceSummary, WatchEvent, ResetEvent, ClusterMember, ClusterStatus, StoreStatus, CheckState } from '@switchboard/protocol';

/** Longest a plain read may take before the registry counts as unreachable. */
export const REQUEST_TIMEOUT_MS = 5_000;

/** What a call that got no answer at all says. */
export const UNREACHABLE = 'the registry cannot be reached';

/** A failed call: the problem+json answer when there was one, else a network failure. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number | null,
    readonly problem: Partial<Problem> | null,
    readonly retryAfterSec: number | null,
  ) {
    super(message);
  }

  /** No answer at all (refused, reset, timed out): the registry is unreachable. */
  get unreachable(): boolean {
    return this.status === null;
  }
}

export async function problemOf(res: Response): Promise<ApiError> {
  let problem: Partial<Problem> | null = null;
  try {
    problem = (await res.json()) as Partial<Problem>;
  } catch {
    /* not problem+json (a proxy's page) */
  }
  const ra = Number(res.headers.get('retry-after'));
  const detail = problem?.detail ?? `${res.status} ${res.statusText}`;
  return new ApiError(detail, res.status, problem, Number.isFinite(ra) && ra > 0 ? ra : null);
}

const TOKEN_KEY = 'switchboard.token';

/**
 * The bearer token of a registry that requires one (api.md, Authentication), kept in
 * sessionStorage: for this tab only, gone when it closes, never sent anywhere but the
 * page's own origin.
 */
/**
 * A token as typed or pasted, without the white space and invisible characters a copy may
 * bring along (a zero-width space, a byte order mark); null when what is left cannot be
 * sent in a header (a character outside printable ASCII), which the form then says.
 */
export function cleanToken(value: string): string | null {
  const t = value.replace(/[\s\u200B-\u200D\u2060\uFEFF]/g, '');
  return t !== '' && /^[\x21-\x7e]+$/.test(t) ? t : null;
}

export const token = {
  get(): string | null {
    try {
      const t = sessionStorage.getItem(TOKEN_KEY);
      // One that cannot be sent (kept by an earlier version) would make every call fail as
      // if the registry were down: asked for again instead.
      return t !== null && cleanToken(t) === t ? t : null;
    } catch {
      return null;
    }
  },
  set(value: string): void {
    sessionStorage.setItem(TOKEN_KEY, value);
  },
};

/** The Authorization header of every API call, when a token was given. */
export function authHeaders(): Record<string, string> {
  const t = token.get();
  return t ? { authorization: `Bearer ${t}` } : {};
}

/**
 * The registry refused the call for want of an accepted token: none or a wrong one (401
 * UNAUTHENTICATED), or one whose scope does not allow reading (403 FORBIDDEN, such as a
 * forward token): either way the form asks for another.
 */
export const needsToken = (err: unknown): boolean => err instanceof ApiError && (err.status === 401 || err.status === 403);

/** GET a JSON document; throws ApiError. */
export async function getJson<T>(path: string, signal?: AbortSignal): Promise<T> {
  const timeout = AbortSignal.timeout(REQUEST_TIMEOUT_MS);
  const both = signal ? AbortSignal.any([signal, timeout]) : timeout;
  let res: Response;
  try {
    res = await fetch(path, { signal: both, headers: { accept: 'application/json', ...authHeaders() }, cache: 'no-store' });
  } catch (err) {
    if (signal?.aborted) throw err;
    throw new ApiError(timeout.aborted ? `no answer within ${REQUEST_TIMEOUT_MS / 1000} s` : UNREACHABLE, null, null, null);
  }
  if (!res.ok) throw await problemOf(res);
  return (await res.json()) as T;
}

const q = encodeURIComponent;
const nsQuery = (ns: string): string => `namespace=${q(ns)}`;

export const api = {
  status: (signal?: AbortSignal) => getJson<NodeStatus>('/v1/status', signal),
  services: (ns: string, signal?: AbortSignal) => getJson<ServiceList>(`/v1/services?${nsQuery(ns)}`, signal),
  service: (ns: string, name: string, signal?: AbortSignal) => getJson<ServiceAnswer & { epoch?: string }>(`/v1/services/${q(name)}?${nsQuery(ns)}`, signal),
  history: (ns: string, service: string, id: string, signal?: AbortSignal) =>
    getJson<InstanceHistory>(`/v1/services/${q(service)}/instances/${q(id)}/history?${nsQuery(ns)}`, signal),
};

/** One message of an SSE stream. */
export interface SseMessage {
  event: string;
  data: string;
  id: string | null;
}

/**
 * Reads a text/event-stream body (the WHATWG rules that matter here: `event`, `data`,
 * `id`, comments) and calls `onMessage` for each event; `onBytes` for any data at all,
 * keep-alive comments included. Resolves when the server ends the stream.
 */
export async function readSse(body: ReadableStream<Uint8Array>, onMessage: (m: SseMessage) => void, onBytes: () => void): Promise<void> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  let event = '';
  let data: string[] = [];
  let id: string | null = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    onBytes();
    buf += decoder.decode(value, { stream: true });
    let nl: number;
    while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + (buf.startsWith('\r\n', nl) ? 2 : 1));
      if (line === '') {
        if (data.length > 0) onMessage({ event: event || 'message', data: data.join('\n'), id });
        event = '';
        data = [];
        id = null;
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value2 = colon < 0 ? '' : line.slice(colon + 1);
      if (value2.startsWith(' ')) value2 = value2.slice(1);
      if (field === 'event') event = value2;
      else if (field === 'data') data.push(value2);
      else if (field === 'id') id = value2;
    }
  }
}

export type { Problem };
export type WatchMessage = { kind: 'change'; ev: WatchEvent; id: string | null } | { kind: 'reset'; ev: ResetEvent };
