/**
 * Peer TLS with a revocation list: what OpenSSL makes of this node's own certificate under
 * the node's settings, by one TLS handshake of the node with itself on a loopback port
 * (the node's certificate both ends). A list that is not the CA's (every link would fail
 * with UNABLE_TO_GET_CRL), one that has expired, or one that revokes this node itself is
 * then said at start, instead of by every peer.
 */
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { connect, createServer, type TLSSocket } from 'node:tls';
import type { PeerTls } from './tcp.js';

/** How long the self-check may take before it is given up (and the start goes on). */
const SELF_CHECK_TIMEOUT_MS = 5_000;

/** OpenSSL's verdict on this node's certificate under `tls` (its code, such as CERT_REVOKED); null when it would be accepted. */
export async function ownCertificateVerdict(tls: PeerTls): Promise<string | null> {
  const options = { cert: tls.cert, key: tls.key, ca: tls.ca, ...(tls.crl ? { crl: tls.crl } : {}), minVersion: 'TLSv1.3' as const };
  let verdict: string | null = null;
  const server = createServer({ ...options, requestCert: true, rejectUnauthorized: false }, (socket: TLSSocket) => {
    verdict = socket.authorized ? null : String(socket.authorizationError ?? 'no certificate');
    socket.end();
  });
  server.on('tlsClientError', () => undefined);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  try {
    const socket = connect({ ...options, host: '127.0.0.1', port: (server.address() as AddressInfo).port, rejectUnauthorized: false, checkServerIdentity: () => undefined });
    socket.on('error', () => undefined);
    const timer = setTimeout(() => socket.destroy(), SELF_CHECK_TIMEOUT_MS);
    await once(socket, 'close');
    clearTimeout(timer);
    return verdict;
  } finally {
    server.close();
  }
}
