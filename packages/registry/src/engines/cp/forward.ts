/**
 * cp: how one node calls another node's HTTP API. A consumer report taken for an instance
 * another node counts is forwarded to that node (docs/cp.md, *API tokens and TLS*): to the
 * address and over the scheme it announced in its nodes/ key, with the forwarding token,
 * trusting the CAs this node was given. A forward that fails is counted here instead; one
 * that fails for a reason that waiting does not fix (a refused token, a certificate this
 * node cannot verify) is also said in the log, naming the setting to change.
 */
import type { Dispatcher } from 'undici';
import { tlsFailureOf } from '@switchboard/protocol';

/** How a cp node reaches the HTTP API of the other nodes. */
export interface PeerApi {
  /** How this node serves its own API (https with tlsCertFile): announced in its nodes/ key, so that the others call it that way. */
  scheme: 'http' | 'https';
  /** The token sent (Authorization: Bearer) when the nodes require tokens; read at each call, as SIGHUP may change it. */
  token: () => string | null;
  /** The dispatcher of these calls: the CAs trusted for nodes that serve https. */
  dispatcher?: Dispatcher;
  /** The same CAs, for the WebSocket to the node that writes for the cluster (writer-link.ts). */
  ca?: string[];
}

/** Why forwards failed, as /v1/status counts them: `auth` (401, 403), `tls` (a certificate not verified, a node without TLS), `other` (no answer in time, the node does not know the instance yet, ...). */
export const FORWARD_FAILURES = ['auth', 'tls', 'other'] as const;
export type ForwardFailureKind = (typeof FORWARD_FAILURES)[number];

export interface ForwardFailure {
  kind: ForwardFailureKind;
  /** What happened, for the log: names the node and its URL. */
  reason: string;
  /** What to change; only for failures that waiting does not fix (these are logged as warnings). */
  hint?: string;
}

/** The same failure towards the same node is a warning at most this often. */
export const FORWARD_WARN_EVERY_MS = 60_000;

const TOKEN_HINT = "give every node of the cluster the same --api-tokens-file: a node forwards with the file's first forward token (else its first write token), which the other nodes must accept";

/** A refusal answer (401 or 403) of the node forwarded to. */
export function refusedForward(node: string, url: string, status: number, problem: { code?: unknown; detail?: unknown } | undefined): ForwardFailure {
  const code = typeof problem?.code === 'string' ? problem.code : `HTTP ${status}`;
  const detail = typeof problem?.detail === 'string' ? `: ${problem.detail}` : '';
  return { kind: 'auth', reason: `node ${node} at ${url} refused this node's token (${code}${detail})`, hint: TOKEN_HINT };
}

/** A forward that got no usable answer: a TLS failure (with its hint) or anything else. */
export function failedForward(node: string, url: string, address: string, err: unknown): ForwardFailure {
  const tls = tlsFailureOf(err);
  if (tls === undefined) return { kind: 'other', reason: `node ${node} at ${url}: ${err instanceof Error ? err.message : String(err)}` };
  switch (tls.kind) {
    case 'untrusted':
      return {
        kind: 'tls',
        reason: `this node does not trust the certificate of node ${node} at ${url} (${tls.code})`,
        hint: "give the CA that signed the nodes' certificates with --tls-ca-file (without it only Node's CAs and the certificates in this node's own --tls-cert-file are trusted)",
      };
    case 'name':
      return {
        kind: 'tls',
        reason: `the certificate of node ${node} is not for the address it announced, ${address} (${tls.code})`,
        hint: "give each node a certificate for the host of its --http-addr (subjectAltName IP:... or DNS:...), the address the other nodes call",
      };
    case 'time':
      return { kind: 'tls', reason: `the certificate of node ${node} at ${url} is not valid now (${tls.code})`, hint: "renew that node's certificate (or check the clocks of both machines)" };
    case 'plain':
      return { kind: 'tls', reason: `node ${node} at ${url} does not answer with TLS (${tls.code})`, hint: 'a node of an earlier version announces no scheme and is called as this node serves: give the nodes the same --tls-cert-file setting, or upgrade that node' };
  }
}

/**
 * Counts failed forwards by kind and says, at most once a minute per node and kind, why
 * those that need an operator failed.
 */
export class ForwardFailures {
  readonly counts: Record<ForwardFailureKind, number> = { auth: 0, tls: 0, other: 0 };
  readonly #warnedAt = new Map<string, number>();

  constructor(
    private readonly warn: (msg: string) => void,
    private readonly now: () => number = () => Date.now(),
  ) {}

  note(node: string, f: ForwardFailure): void {
    this.counts[f.kind]++;
    if (f.hint === undefined) return;
    const key = `${node}\u0000${f.kind}`;
    const at = this.#warnedAt.get(key);
    const now = this.now();
    if (at !== undefined && now - at < FORWARD_WARN_EVERY_MS) return;
    this.#warnedAt.set(key, now);
    this.warn(`a consumer report could not be forwarded: ${f.reason}; it is counted on this node instead (reports of one instance split between nodes). Fix: ${f.hint}`);
  }
}
