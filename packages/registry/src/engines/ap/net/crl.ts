/**
 * The one field of a certificate revocation list the node needs to read itself: its next
 * update, after which OpenSSL refuses every chain checked against it (CRL_HAS_EXPIRED),
 * so that the node can say ahead of time that the lists need renewing. A reader of the
 * few DER elements before it (RFC 5280, section 5.1); OpenSSL checks the lists themselves.
 */

/**
 * OpenSSL's verdicts that come from the revocation lists (--peer-tls-crl-file) rather than
 * from a certificate: what each means and what to do, for the start's check of the node's
 * own certificate (the agent refuses to start, with `code`) and for the links' logs.
 */
export const CRL_VERDICTS: Readonly<Record<string, { code: string; problem: string; hint: string }>> = {
  UNABLE_TO_GET_CRL: {
    code: 'PEER_TLS_CRL_NOT_OF_CA',
    problem: 'the file holds no revocation list of a CA in the certificate chain (it needs one for each, root included)',
    hint: "give the list of every CA in the members' chains, root and intermediates (openssl ca -gencrl with each), one after another in the file",
  },
  CRL_HAS_EXPIRED: { code: 'PEER_TLS_CRL_EXPIRED', problem: 'a revocation list is past its next update', hint: 'publish fresh lists (openssl ca -gencrl) to every node and send each a SIGHUP' },
  CRL_NOT_YET_VALID: { code: 'PEER_TLS_CRL_EXPIRED', problem: 'a revocation list is not valid yet', hint: "check the machine's clock, or the list's dates" },
  CRL_SIGNATURE_FAILURE: { code: 'PEER_TLS_CRL_INVALID', problem: 'a revocation list is not signed by its CA', hint: 'give the lists the CA of --peer-tls-ca-file issued' },
  UNABLE_TO_DECRYPT_CRL_SIGNATURE: { code: 'PEER_TLS_CRL_INVALID', problem: 'a revocation list is not signed by its CA', hint: 'give the lists the CA of --peer-tls-ca-file issued' },
};

interface Tlv {
  tag: number;
  start: number;
  end: number;
}

function tlv(der: Buffer, at: number, limit: number): Tlv {
  if (at + 2 > limit) throw new Error('a DER element runs past its container');
  const tag = der[at] as number;
  let len = der[at + 1] as number;
  let start = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || start + n > limit) throw new Error('a DER length is malformed');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (der[start + i] as number);
    start += n;
  }
  if (start + len > limit) throw new Error('a DER element runs past its container');
  return { tag, start, end: start + len };
}

const UTC_TIME = 0x17;
const GENERALIZED_TIME = 0x18;

function time(der: Buffer, t: Tlv): Date {
  const s = der.toString('latin1', t.start, t.end);
  const m = t.tag === UTC_TIME ? /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s) : /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s);
  if (!m) throw new Error(`a CRL time is malformed: ${s}`);
  const year = t.tag === UTC_TIME ? (Number(m[1]) < 50 ? 2000 : 1900) + Number(m[1]) : Number(m[1]);
  return new Date(Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])));
}

/** The next update of a PEM certificate revocation list; null when it has none (no end). */
export function crlNextUpdate(pem: Buffer | string): Date | null {
  const text = typeof pem === 'string' ? pem : pem.toString('latin1');
  const body = /-----BEGIN X509 CRL-----([\s\S]+?)-----END X509 CRL-----/.exec(text)?.[1];
  if (body === undefined) throw new Error('no PEM certificate revocation list');
  const der = Buffer.from(body.replace(/\s+/g, ''), 'base64');
  const list = tlv(der, 0, der.length);
  const tbs = tlv(der, list.start, list.end);
  let el = tlv(der, tbs.start, tbs.end);
  if (el.tag === 0x02) el = tlv(der, el.end, tbs.end); // version
  el = tlv(der, el.end, tbs.end); // signature algorithm -> issuer
  el = tlv(der, el.end, tbs.end); // issuer -> thisUpdate
  if (el.tag !== UTC_TIME && el.tag !== GENERALIZED_TIME) throw new Error('a CRL without thisUpdate');
  if (el.end >= tbs.end) return null;
  const next = tlv(der, el.end, tbs.end);
  return next.tag === UTC_TIME || next.tag === GENERALIZED_TIME ? time(der, next) : null;
}

/** The earliest next update of several lists (the one that ends the links first); null when none has one. */
export function earliestNextUpdate(lists: readonly Buffer[]): Date | null {
  let out: Date | null = null;
  for (const l of lists) {
    const d = crlNextUpdate(l);
    if (d !== null && (out === null || d < out)) out = d;
  }
  return out;
}
