/**
 * The addresses the agent listens on (--http-addr, --peer-addr in ap mode, --proxy-addr), tried
 * before anything else starts: a host name that does not resolve, an address that is not
 * this machine's, one in use or one the process may not bind is refused like any invalid
 * setting (a ConfigError naming where the value came from, exit 2), instead of failing
 * after the storage was opened with the socket's bare error. The real listen can still
 * meet such an error (another process took the port meanwhile): listenRefusal() turns it
 * into the same refusal.
 */
import { createServer } from 'node:net';
import { ConfigError, type AgentConfig, type HostPort } from './config.js';

type ListenKey = 'httpAddr' | 'peerAddr' | 'proxyAddr';

/** The listen addresses of a configuration, with the key each one comes from. */
function listenAddresses(cfg: AgentConfig): [ListenKey, HostPort][] {
  const out: [ListenKey, HostPort][] = [['httpAddr', cfg.httpAddr]];
  if (cfg.mode === 'ap') out.push(['peerAddr', cfg.peerAddr]);
  if (cfg.proxyAddr !== null) out.push(['proxyAddr', cfg.proxyAddr]);
  return out;
}

/** Binds each listen address once and lets it go at once; refuses the first that cannot be bound. */
export async function checkListenAddresses(cfg: AgentConfig): Promise<void> {
  for (const [key, addr] of listenAddresses(cfg)) {
    try {
      await bindOnce(addr);
    } catch (err) {
      throw listenRefusal(err, cfg, key) ?? err;
    }
  }
}

function bindOnce(addr: HostPort): Promise<void> {
  const server = createServer();
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(addr.port, addr.host, () => server.close(() => resolve()));
  });
}

const formatted = ({ host, port }: HostPort): string => `${host.includes(':') ? `[${host}]` : host}:${port}`;

const RESOLVE_CODES = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_NONAME', 'EAI_FAIL', 'EAI_NODATA']);

/**
 * The refusal for an error of binding `cfg[key]`, or null when the error is of another kind
 * (it is then reported as it is).
 */
export function listenRefusal(err: unknown, cfg: AgentConfig, key: ListenKey): ConfigError | null {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  if (typeof code !== 'string') return null;
  const where = cfg.listenFrom[key];
  const addr = cfg[key];
  if (addr === null) return null;
  const value = `${where} ${formatted(addr)}`;
  const local = `listen on an address of this machine, like 127.0.0.1:${addr.port} (this machine only) or 0.0.0.0:${addr.port} (every interface)`;
  if (RESOLVE_CODES.has(code)) {
    return new ConfigError(where, `${where}: the host name "${addr.host}" does not resolve (${code})`, { code: 'ADDRESS_UNRESOLVED', hint: local });
  }
  if (code === 'EADDRNOTAVAIL') return new ConfigError(where, `${value}: ${addr.host} is not an address of this machine`, { code: 'ADDRESS_NOT_LOCAL', hint: local });
  if (code === 'EADDRINUSE') {
    return new ConfigError(where, `${value} is in use`, { code: 'ADDRESS_IN_USE', hint: `another agent (or another program) may be running there; stop it, or pick another ${where}` });
  }
  if (code === 'EACCES') {
    const hint = addr.port < 1024 ? 'ports below 1024 need privileges: pick a port above 1023, like 7700' : 'run the agent as a user allowed to listen there, or pick another address';
    return new ConfigError(where, `${value}: this user may not listen there`, { code: 'ADDRESS_NOT_PERMITTED', hint });
  }
  return null;
}
