/** Defaults for a provider's identity: its instance id and the address it is reached at. */
import { hostname, networkInterfaces } from 'node:os';

/**
 * The address a provider registers when none is given: the first non-internal IPv4
 * address of the host (in the order the OS lists its interfaces), else 127.0.0.1.
 *
 * Why IPv4 first: in containers and most data centres the routable address is IPv4, and
 * IPv6 addresses that appear first are often link-local (fe80::, unusable without a zone
 * id). A host with several interfaces (VPN, Docker bridge) may pick the wrong one: give
 * `address` explicitly there, or set it from the environment (`POD_IP`).
 *
 * @example
 * defaultAddress(); // '10.0.3.17' on a typical host, '127.0.0.1' on a laptop offline
 */
export function defaultAddress(): string {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) {
      if (a.family === 'IPv4' && !a.internal) return a.address;
    }
  }
  return '127.0.0.1';
}

/** The hostname reduced to what an instance id may contain. */
function idSafe(text: string): string {
  return text.replace(/[^A-Za-z0-9._:-]/g, '-');
}

/**
 * The id a provider registers when none is given: `<service>-<hostname>-<pid>`, and
 * `-<n>` from the second instance of the same service in one process on. Stable for the
 * life of the process, unique across hosts and processes, readable in dashboards.
 *
 * @example
 * defaultInstanceId('orders', 1); // 'orders-web-7f9c-41234'
 * defaultInstanceId('orders', 2); // 'orders-web-7f9c-41234-2'
 */
export function defaultInstanceId(service: string, n: number, host = hostname(), pid = process.pid): string {
  const suffix = `-${pid}${n > 1 ? `-${n}` : ''}`;
  // Instance ids hold at most 128 characters: shorten the hostname, never the rest.
  const room = 128 - service.length - 1 - suffix.length;
  return `${service}-${idSafe(host).slice(0, Math.max(1, room))}${suffix}`;
}
