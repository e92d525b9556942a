/**
 * TLS failures of a connection to a node, as Node reports them (OpenSSL's certificate
 * verification results and Node's own host name check), sorted by what fixes them. Pure
 * code: the SDK, the CLI and a cp node calling another node read a failed connection
 * with it, so that a certificate they cannot verify is told apart from a node that is
 * down (waiting never fixes the first).
 */

/**
 * - `untrusted`: the certificate does not chain to a CA the caller trusts (give that CA);
 * - `name`: it is not for the name or address dialed (see its subjectAltName);
 * - `time`: it has expired or is not valid yet (renew it, or check the clock);
 * - `plain`: the node does not speak TLS at all (an https:// address for an http node).
 */
export type TlsFailureKind = 'untrusted' | 'name' | 'time' | 'plain';

export interface TlsFailure {
  kind: TlsFailureKind;
  /** Node's code, such as `SELF_SIGNED_CERT_IN_CHAIN` or `ERR_TLS_CERT_ALTNAME_INVALID`. */
  code: string;
}

const KIND_OF_CODE: Readonly<Record<string, TlsFailureKind>> = {
  UNABLE_TO_GET_ISSUER_CERT: 'untrusted',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'untrusted',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'untrusted',
  UNABLE_TO_DECRYPT_CERT_SIGNATURE: 'untrusted',
  UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY: 'untrusted',
  SELF_SIGNED_CERT_IN_CHAIN: 'untrusted',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'untrusted',
  CERT_UNTRUSTED: 'untrusted',
  CERT_REJECTED: 'untrusted',
  CERT_REVOKED: 'untrusted',
  UNABLE_TO_GET_CRL: 'untrusted',
  UNABLE_TO_DECRYPT_CRL_SIGNATURE: 'untrusted',
  CRL_SIGNATURE_FAILURE: 'untrusted',
  CRL_HAS_EXPIRED: 'time',
  CRL_NOT_YET_VALID: 'time',
  CERT_SIGNATURE_FAILURE: 'untrusted',
  CERT_CHAIN_TOO_LONG: 'untrusted',
  INVALID_CA: 'untrusted',
  INVALID_PURPOSE: 'untrusted',
  PATH_LENGTH_EXCEEDED: 'untrusted',
  ERR_TLS_CERT_ALTNAME_INVALID: 'name',
  ERR_TLS_CERT_ALTNAME_FORMAT: 'name',
  HOSTNAME_MISMATCH: 'name',
  CERT_HAS_EXPIRED: 'time',
  CERT_NOT_YET_VALID: 'time',
  ERR_SSL_WRONG_VERSION_NUMBER: 'plain',
};

/**
 * The TLS failure behind `err` (the error itself, its causes, or the errors of an
 * AggregateError, as fetch and undici wrap them); undefined when it is not one.
 *
 * @example
 * tlsFailureOf(Object.assign(new Error('self-signed certificate in certificate chain'), { code: 'SELF_SIGNED_CERT_IN_CHAIN' })); // { kind: 'untrusted', code: 'SELF_SIGNED_CERT_IN_CHAIN' }
 */
export function tlsFailureOf(err: unknown, depth = 0): TlsFailure | undefined {
  if (err === null || typeof err !== 'object' || depth > 8) return undefined;
  const e = err as { code?: unknown; message?: unknown; cause?: unknown; errors?: unknown };
  const code = typeof e.code === 'string' ? e.code : '';
  const kind = Object.hasOwn(KIND_OF_CODE, code) ? KIND_OF_CODE[code] : undefined;
  if (kind !== undefined) return { kind, code };
  // OpenSSL's text when Node gives no code of its own.
  if (typeof e.message === 'string' && /\bwrong version number\b/i.test(e.message)) return { kind: 'plain', code: 'ERR_SSL_WRONG_VERSION_NUMBER' };
  for (const inner of [e.cause, ...(Array.isArray(e.errors) ? e.errors : [])]) {
    const found = tlsFailureOf(inner, depth + 1);
    if (found !== undefined) return found;
  }
  return undefined;
}

/**
 * ap peer TLS: a certificate may name the node it is for as a subjectAltName URI with this
 * prefix and the node id (`URI:switchboard:node:a`); such a node links only under that id.
 */
export const PEER_ID_URI_PREFIX = 'switchboard:node:';

/**
 * The node ids a peer certificate names, from its subjectAltName as Node shows it
 * (`"DNS:x, URI:switchboard:node:a"`); empty when it names none (any id may use it).
 *
 * @example
 * peerIdsOfSubjectAltName('DNS:n1, URI:switchboard:node:a'); // ['a']
 */
export function peerIdsOfSubjectAltName(san: string | undefined): string[] {
  const uri = `URI:${PEER_ID_URI_PREFIX}`;
  return (san ?? '').split(', ').filter((x) => x.startsWith(uri)).map((x) => x.slice(uri.length));
}
