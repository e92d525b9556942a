/**
 * The networks active checks may reach (checkDenyNetworks, checkAllowNetworks). A probe is
 * refused before it connects when an address it would connect to is in a denied network,
 * or outside the allowed ones when those are set; deny wins over allow. What is checked is
 * the address, never the name: a host name is resolved once per probe, every address it
 * resolves to is checked, and the connection goes to those checked addresses only (the
 * guard's `lookup` is the connection's own DNS step, so the answer cannot change between
 * the check and the connect).
 */
import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns';
import { BlockList, isIP } from 'node:net';
import type { Logger } from 'pino';
import { parseHostPort, type CheckType } from '@switchboard/protocol';

/**
 * Link-local, in both families, where most cloud metadata services answer (169.254.169.254),
 * and the metadata and platform endpoints outside it: Alibaba Cloud's metadata service
 * (100.100.100.200), Azure's wireserver (168.63.129.16), AWS's IPv6 metadata endpoint
 * (fd00:ec2::254) and Google Cloud's (fd20:ce::254). See docs/health.md.
 */
export const DEFAULT_DENY_NETWORKS: readonly string[] = Object.freeze(['169.254.0.0/16', 'fe80::/10', '100.100.100.200/32', '168.63.129.16/32', 'fd00:ec2::254/128', 'fd20:ce::254/128']);

const family = (address: string): 'ipv4' | 'ipv6' => (isIP(address) === 4 ? 'ipv4' : 'ipv6');

/** One network as given, with the BlockList that matches it. */
interface Network {
  text: string;
  list: BlockList;
}

/**
 * A network as CIDR (`10.0.0.0/8`, `fd00::/8`) or one address (`10.0.0.5`, `::1`); null
 * when it is neither. BlockList matches an IPv4 network against IPv4-mapped IPv6 addresses
 * (::ffff:169.254.169.254) and the other way round, so one form covers both.
 */
export function parseNetwork(text: string): Network | null {
  const m = /^([0-9A-Fa-f:.]+)(?:\/(\d{1,3}))?$/.exec(text.trim());
  const address = m?.[1];
  if (!m || address === undefined || isIP(address) === 0) return null;
  const fam = family(address);
  const prefix = m[2] === undefined ? (fam === 'ipv4' ? 32 : 128) : Number(m[2]);
  if (prefix > (fam === 'ipv4' ? 32 : 128)) return null;
  const list = new BlockList();
  list.addSubnet(address, prefix, fam);
  return { text: text.trim(), list };
}

function networksOf(texts: readonly string[]): Network[] {
  return texts.map((t) => {
    const n = parseNetwork(t);
    if (n === null) throw new Error(`"${t}" is not a network (CIDR or one address)`);
    return n;
  });
}

/** Why an address may not be probed: the denied network it is in, or null when it is outside the allowed ones. */
export interface Denial {
  address: string;
  network: string | null;
}

const UNSPECIFIED_V4 = new BlockList();
UNSPECIFIED_V4.addAddress('0.0.0.0');
const UNSPECIFIED_V6 = new BlockList();
UNSPECIFIED_V6.addAddress('::', 'ipv6');

/**
 * 0.0.0.0 and :: are connected to the node itself (loopback) by the kernel: they are
 * checked as themselves and as the loopback address they reach.
 */
function reachedAs(address: string): string[] {
  if (UNSPECIFIED_V4.check(address, family(address))) return [address, '127.0.0.1'];
  if (UNSPECIFIED_V6.check(address, family(address))) return [address, '::1'];
  return [address];
}

/** The eight 16-bit groups of an IPv6 address (valid, without a zone). */
function ipv6Groups(address: string): number[] {
  let text = address;
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text); // ::ffff:1.2.3.4, 64:ff9b::1.2.3.4
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const part = (s: string): number[] => (s === '' ? [] : s.split(':').map((g) => parseInt(g, 16)));
  if (tail === undefined) return part(head);
  const h = part(head);
  const t = part(tail);
  return [...h, ...new Array<number>(8 - h.length - t.length).fill(0), ...t];
}

/**
 * The IPv4 address an IPv6 address carries to a translator, which connects to it: NAT64's
 * well-known prefix (64:ff9b::/96, RFC 6052) and 6to4 (2002::/16, RFC 3056). Null for
 * every other address (IPv4-mapped ones need none: BlockList matches them as IPv4).
 */
export function embeddedIPv4(address: string): string | null {
  if (isIP(address) !== 6) return null;
  const g = ipv6Groups(address);
  const v4 = (hi: number, lo: number): string => `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
  if (g[0] === 0x64 && g[1] === 0xff9b && g.slice(2, 6).every((x) => x === 0)) return v4(g[6] as number, g[7] as number);
  if (g[0] === 0x2002) return v4(g[1] as number, g[2] as number);
  return null;
}

const LOOPBACK_V4 = new BlockList();
LOOPBACK_V4.addSubnet('127.0.0.0', 8); // matches ::ffff:127.0.0.0/104 too
const LOOPBACK_V6 = new BlockList();
LOOPBACK_V6.addAddress('::1', 'ipv6');

/**
 * Loopback is the node itself in either family: an IPv4 loopback address is also checked
 * as ::1, and ::1 as 127.0.0.1, so that denying 127.0.0.0/8 (or ::1/128) denies the node
 * whichever family a target names it in (docs/health.md).
 */
function loopbackTwin(address: string): string | null {
  if (LOOPBACK_V4.check(address, family(address))) return '::1';
  if (LOOPBACK_V6.check(address, family(address))) return '127.0.0.1';
  return null;
}

/**
 * What an address is checked as against the denied networks: the addresses it reaches
 * (reachedAs), the IPv4 address it embeds for a translator, and the other family's
 * loopback address for a loopback one. Only denial widens so: an allowed network allows
 * exactly the addresses written.
 */
function deniedAs(reached: string[]): string[] {
  const out = [...reached];
  for (const a of reached) {
    const v4 = embeddedIPv4(a);
    if (v4 !== null) out.push(v4);
  }
  for (const a of [...out]) {
    const twin = loopbackTwin(a);
    if (twin !== null && !out.includes(twin)) out.push(twin);
  }
  return out;
}

/** The policy: the denied and allowed networks of check targets. */
export class CheckNetworks {
  static readonly DEFAULT = new CheckNetworks(DEFAULT_DENY_NETWORKS, []);
  readonly deny: readonly string[];
  readonly allow: readonly string[];
  private readonly denied: Network[];
  private readonly allowed: Network[];

  constructor(deny: readonly string[], allow: readonly string[]) {
    this.denied = networksOf(deny);
    this.allowed = networksOf(allow);
    this.deny = this.denied.map((n) => n.text);
    this.allow = this.allowed.map((n) => n.text);
  }

  /** Why a probe may not connect to this IP address; null when it may. */
  denial(ip: string): Denial | null {
    const address = ip.replace(/%.*$/, ''); // an IPv6 zone (fe80::1%eth0) names the interface only
    if (isIP(address) === 0) return { address: ip, network: null }; // no resolver gives one; refused all the same
    const reached = reachedAs(address);
    for (const a of deniedAs(reached)) {
      const hit = this.denied.find((n) => n.list.check(a, family(a)));
      if (hit) return { address: ip, network: hit.text };
    }
    const allowed = (a: string): boolean => this.allowed.some((n) => n.list.check(a, family(a)));
    return this.allowed.length > 0 && !reached.every(allowed) ? { address: ip, network: null } : null;
  }

  toJSON(): { deny: readonly string[]; allow: readonly string[] } {
    return { deny: this.deny, allow: this.allow };
  }
}

/**
 * What a refusal says, after the target: stable, so that it can be recognised. For a
 * name (`resolved`) the output names neither the address it resolved to nor the denied
 * network: outputs are readable by every client, and whoever can register a check would
 * otherwise learn what internal names resolve to. `full` says both, for the node's log.
 */
export function denialText(d: Denial, resolved: boolean, full = false): string {
  const network = !resolved || full ? `${d.network}, ` : '';
  const where = d.network === null ? 'outside the allowed networks (checkAllowNetworks)' : `in a denied network (${network}checkDenyNetworks)`;
  if (!resolved) return `is ${where}`;
  return full ? `resolves to ${d.address}, ${where}` : `resolves to an address ${where}`;
}

/** A probe refused by the policy; `host` is what the target named (an address or a name). */
export class TargetDenied extends Error {
  readonly code = 'CHECK_TARGET_DENIED';
  constructor(
    readonly host: string,
    readonly denial: Denial,
  ) {
    super(`${host} ${denialText(denial, host !== denial.address)}`);
    this.name = 'TargetDenied';
  }

  /** Whether the target named a host that resolved to the refused address. */
  get resolved(): boolean {
    return this.host !== this.denial.address;
  }

  /**
   * The check's output: `target 169.254.169.254:80 is in a denied network (169.254.0.0/16, checkDenyNetworks): not probed`,
   * or for a name `target http://svc.internal/ resolves to an address in a denied network (checkDenyNetworks): not probed`.
   */
  output(target: string): string {
    return `target ${target} ${denialText(this.denial, this.resolved)}: not probed`;
  }

  /** What the node's log says: the address a name resolved to and the network included. */
  detail(): string {
    return `${this.host} ${denialText(this.denial, this.resolved, true)}`;
  }
}

/** Told of every probe the policy refuses (the node logs it). */
export type DenialObserver = (refusal: TargetDenied) => void;

/**
 * Logs each refusal at debug level with what its output leaves out (the address a name
 * resolved to, the denied network): the operator may read it, the registry's clients not.
 */
export function logDenials(logger: Pick<Logger, 'debug'>): DenialObserver {
  return (r) => logger.debug({ host: r.host, address: r.denial.address, network: r.denial.network }, `check not probed: ${r.detail()}`);
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;
type Resolver = (hostname: string, options: LookupOptions & { all: true }, callback: (err: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void) => void;

/**
 * The policy as the probes of one node apply it, counting what it refuses. Every probe
 * goes through it: IP literals with `checkLiteral`, names with `lookup` (net, undici) or
 * `resolve` (gRPC, which connects to the address it returns).
 */
export class TargetGuard {
  /** Probes refused by the policy. */
  denied = 0;

  constructor(
    readonly networks: CheckNetworks,
    private readonly resolver: Resolver = dnsLookup,
    private readonly onDenied?: DenialObserver,
  ) {}

  /** Throws TargetDenied for an IP literal the policy refuses; names pass (their addresses are checked by `lookup`). */
  checkLiteral(host: string): void {
    if (isIP(host) === 0) return;
    const denial = this.networks.denial(host);
    if (denial !== null) throw this.refuse(host, denial);
  }

  /**
   * dns.lookup for a connection (net.connect's and undici's `lookup` option): the name is
   * resolved once, every address is checked, and the connection gets only those.
   */
  readonly lookup = (hostname: string, options: LookupOptions, callback: LookupCallback): void => {
    this.resolver(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, []);
      const refused = this.check(hostname, addresses);
      if (refused) return callback(refused, []);
      const first = addresses[0] as LookupAddress;
      if (options.all) callback(null, addresses);
      else callback(null, first.address, first.family);
    });
  };

  /** One address to connect to for `host` (an IP literal or a name), checked like `lookup`. */
  async resolve(host: string): Promise<LookupAddress> {
    if (isIP(host) !== 0) {
      this.checkLiteral(host);
      return { address: host, family: isIP(host) };
    }
    return new Promise((resolve, reject) => {
      this.lookup(host, { all: true }, (err, addresses) => (err ? reject(err) : resolve((addresses as LookupAddress[])[0] as LookupAddress)));
    });
  }

  private check(hostname: string, addresses: LookupAddress[]): Error | null {
    if (addresses.length === 0) return Object.assign(new Error(`${hostname} resolves to no address`), { code: 'ENOTFOUND' });
    for (const a of addresses) {
      const denial = this.networks.denial(a.address);
      if (denial !== null) return this.refuse(hostname, denial);
    }
    return null;
  }

  private refuse(host: string, denial: Denial): TargetDenied {
    this.denied++;
    const refusal = new TargetDenied(host, denial);
    this.onDenied?.(refusal);
    return refusal;
  }
}

/** The output of a probe refused by the policy, or null when `err` is another failure. */
export function deniedOutput(err: unknown, target: string): string | null {
  return err instanceof TargetDenied ? err.output(target) : null;
}

/**
 * The IPv4 address a host names in another spelling of IPv4 (`0x7f.1`, `0x7f000001`,
 * `0xA9.0xFE.0xA9.0xFE`), read as the URL parser reads an http target's host; null for a
 * name or an address already in its usual form. The system resolver reads these spellings
 * as the address too (inet_aton), so a tcp or gRPC target written so connects there.
 */
export function numericIPv4(host: string): string | null {
  if (isIP(host) !== 0 || !/^[0-9A-Fa-fXx.]+$/.test(host)) return null;
  try {
    const hostname = new URL(`http://${host}/`).hostname;
    return isIP(hostname) === 4 ? hostname : null;
  } catch {
    return null; // not an IPv4 address in any spelling (db.0x7f): a name
  }
}

/**
 * The host a check target names: for http the URL's (without IPv6 brackets), for tcp and
 * grpc host:port's; other spellings of an IPv4 address are the address (both normalise
 * `0x7f.1` to 127.0.0.1), so that registration refuses them as it refuses the address.
 */
export function targetHost(type: CheckType, target: string): string | null {
  if (type !== 'http') {
    const host = parseHostPort(target)?.host;
    return host === undefined ? null : (numericIPv4(host) ?? host);
  }
  try {
    return new URL(target).hostname.replace(/^\[|\]$/g, '');
  } catch {
    return null;
  }
}
