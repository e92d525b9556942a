// Test certificates, made with openssl at test time (no key is kept in the repository).
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Writes into `dir` two CAs (ca.crt, other-ca.crt, with their keys), a server
 * certificate for 127.0.0.1 (server.crt, server.key) signed by the first, and a
 * self-signed one for 127.0.0.1 (self.crt, self.key).
 */
export function makeTestPki(dir: string): void {
  const openssl = (...args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '1', '-subj', '/CN=switchboard-test-ca');
  openssl('req', '-x509', ...ec, '-keyout', 'other-ca.key', '-out', 'other-ca.crt', '-days', '1', '-subj', '/CN=switchboard-other-ca');
  writeFileSync(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  openssl('req', '-new', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=switchboard-test-server');
  openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-set_serial', `0x${randomBytes(8).toString('hex')}`, '-days', '1', '-out', 'server.crt', '-extfile', 'server.ext');
  openssl('req', '-x509', ...ec, '-keyout', 'self.key', '-out', 'self.crt', '-days', '1', '-subj', '/CN=switchboard-self-signed', '-addext', 'subjectAltName=IP:127.0.0.1', '-addext', 'extendedKeyUsage=serverAuth');
}

/** One node's peer TLS files (paths) and their contents. */
export interface PeerCerts {
  certFile: string;
  keyFile: string;
  caFile: string;
  cert: Buffer;
  key: Buffer;
  ca: Buffer;
}

/** The agent's flags for these files: `--peer-tls-cert-file`, `-key-file` and `-ca-file`. */
export function peerTlsFlags(c: PeerCerts): string[] {
  return ['--peer-tls-cert-file', c.certFile, '--peer-tls-key-file', c.keyFile, '--peer-tls-ca-file', c.caFile];
}

/**
 * Peer TLS for ap tests: two CAs (peer-ca.crt, peer-other.crt) and, for each node named,
 * a certificate for both ends of a link (serverAuth and clientAuth) signed by either.
 * Members are told apart by the CA, not by a name, so no subjectAltName is needed.
 * Every node's `ca` is the cluster's CA (peer-ca.crt).
 */
export function makePeerCerts(dir: string, nodes: Record<string, 'ca' | 'other'>, opts: { bindIds?: boolean } = {}): Record<string, PeerCerts> {
  const openssl = (...args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  for (const ca of ['ca', 'other']) openssl('req', '-x509', ...ec, '-keyout', `peer-${ca}.key`, '-out', `peer-${ca}.crt`, '-days', '1', '-subj', `/CN=switchboard-peer-${ca}`);
  writeFileSync(join(dir, 'peer.ext'), 'extendedKeyUsage=serverAuth,clientAuth\n');
  const out: Record<string, PeerCerts> = {};
  for (const [name, ca] of Object.entries(nodes)) {
    openssl('req', '-new', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
    // bindIds: the certificate names its node (subjectAltName URI:switchboard:node:<name>).
    if (opts.bindIds) writeFileSync(join(dir, `${name}.ext`), `extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=URI:switchboard:node:${name}\n`);
    openssl('x509', '-req', '-in', `${name}.csr`, '-CA', `peer-${ca}.crt`, '-CAkey', `peer-${ca}.key`, '-set_serial', `0x${randomBytes(8).toString('hex')}`, '-days', '1', '-out', `${name}.crt`, '-extfile', opts.bindIds ? `${name}.ext` : 'peer.ext');
    const files = { certFile: join(dir, `${name}.crt`), keyFile: join(dir, `${name}.key`), caFile: join(dir, 'peer-ca.crt') };
    out[name] = { ...files, cert: readFileSync(files.certFile), key: readFileSync(files.keyFile), ca: readFileSync(files.caFile) };
  }
  return out;
}

/**
 * A certificate revocation list of one of makePeerCerts' CAs (`ca` or `other`) that
 * revokes the named nodes' certificates, written with `openssl ca` into `file` (PEM);
 * good for a day, or (`expired`) past its next update since yesterday.
 */
export function makeCrl(dir: string, file: string, revoke: string[], ca: 'ca' | 'other' = 'ca', opts: { expired?: boolean } = {}): string {
  const openssl = (...args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const db = `${file}.db`;
  writeFileSync(join(dir, db), '');
  writeFileSync(join(dir, `${file}.num`), '01\n');
  writeFileSync(join(dir, `${file}.cnf`), `[ca]\ndefault_ca = c\n[c]\ndatabase = ${db}\ncrlnumber = ${file}.num\ndefault_md = sha256\ndefault_crl_days = 1\n`);
  const signer = ['-config', `${file}.cnf`, '-keyfile', `peer-${ca}.key`, '-cert', `peer-${ca}.crt`];
  for (const name of revoke) openssl('ca', ...signer, '-revoke', `${name}.crt`);
  // expired: a list whose next update was yesterday (and issued the day before).
  const day = 86_400_000;
  const stamp = (ms: number): string => new Date(ms).toISOString().replace(/[-:T]/g, '').slice(0, 14) + 'Z';
  const dates = opts.expired ? ['-crl_lastupdate', stamp(Date.now() - 2 * day), '-crl_nextupdate', stamp(Date.now() - day)] : [];
  openssl('ca', ...signer, '-gencrl', ...dates, '-out', file);
  return join(dir, file);
}
