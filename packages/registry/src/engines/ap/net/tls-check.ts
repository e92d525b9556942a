/**
 * Peer TLS with revocation lists: what OpenSSL makes of this node's own certificate under
 * the node's settings, by one TLS handshake of the node with itself on a loopback port
 * (the node's certificate at both ends). Lists that miss a CA of the chain (every link
 * would fail with UNABLE_TO_GET_CRL), one that has expired, or one that revokes this node
 * itself are then said at start, instead of by every peer.
 */
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { connect, createServer, type TLSSocket } from 'node:tls';
import { secureOptions, type PeerTls } from './tcp.js';

/** How long the self-check may take before it is given up (the start goes on, with a warning). */
const SELF_CHECK_TIMEOUT_MS = 5_000;

export type OwnCertificateCheck =
  /** The handshake ran: `verdict` is OpenSSL's code for this node's certificate (such as CERT_REVOKED), null when it passes. */
  | { checked: true; verdict: string | null }
  /** The handshake could not be made here (no loopback address, a timeout): nothing is known. */
  | { checked: false; reason: string };

export async function checkOwnCertificate(tls: PeerTls): Promise<OwnCertificateCheck> {
  const options = secureOptions(tls);
  let result: OwnCertificateCheck | null = null;
  const server = createServer({ ...options, requestCert: true, rejectUnauthorized: false }, (socket: TLSSocket) => {
    result = { checked: true, verdict: socket.authorized ? null : String(socket.authorizationError ?? 'no certificate') };
    socket.end();
  });
  let failure = 'the handshake did not finish';
  server.on('tlsClientError', (err) => (failure = err.message));
  try {
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const socket = connect({ ...options, host: '127.0.0.1', port: (server.address() as AddressInfo).port, rejectUnauthorized: false, checkServerIdentity: () => undefined });
    socket.on('error', (err) => (failure = err.message));
    const timer = setTimeout(() => {
      failure = `no handshake within ${SELF_CHECK_TIMEOUT_MS} ms`;
      socket.destroy();
    }, SELF_CHECK_TIMEOUT_MS).unref();
    try {
      await once(socket, 'close');
    } finally {
      clearTimeout(timer);
    }
  } catch (err) {
    failure = (err as Error).message;
  } finally {
    server.close();
  }
  return result ?? { checked: false, reason: failure };
}
