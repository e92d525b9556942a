/** Lowercase DNS label: service names, namespaces and zones. */
export const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
/** Instance ids. */
export const INSTANCE_ID = /^[A-Za-z0-9._:-]{1,128}$/;
/** Lease ids are opaque to clients; this is only a sanity bound. */
export const LEASE_ID = /^[A-Za-z0-9._:-]{1,128}$/;
export const DEFAULT_NAMESPACE = 'default';

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const HOST_LABEL = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
const IPV6_CHARS = /^[0-9A-Fa-f:.]+$/;

export function isIPv4(text: string): boolean {
  return IPV4.test(text);
}

/** An IPv6 literal without brackets (optionally with an embedded IPv4 tail). */
export function isIPv6(text: string): boolean {
  if (!IPV6_CHARS.test(text) || !text.includes(':')) return false;
  const halves = text.split('::');
  if (halves.length > 2) return false;
  const groups = (part: string): string[] | null => {
    if (part === '') return [];
    const g = part.split(':');
    return g.every((x) => x.length > 0) ? g : null;
  };
  const left = groups(halves[0] as string);
  const right = halves.length === 2 ? groups(halves[1] as string) : [];
  if (!left || !right) return false;
  const all = [...left, ...right];
  // An IPv4 tail must end the text: in `1.2.3.4::` the last group is followed by `::`.
  const tailAllowed = !text.endsWith(':');
  let slots = 0;
  for (let i = 0; i < all.length; i++) {
    const g = all[i] as string;
    if (i === all.length - 1 && tailAllowed && g.includes('.')) {
      if (!isIPv4(g)) return false;
      slots += 2;
    } else if (/^[0-9A-Fa-f]{1,4}$/.test(g)) {
      slots += 1;
    } else return false;
  }
  return halves.length === 2 ? slots < 8 : slots === 8;
}

/** A hostname (RFC 1123 labels, optional trailing dot) or an IP literal. */
export function isAddress(text: string, maxLength = 253): boolean {
  if (text.length === 0 || text.length > maxLength) return false;
  if (isIPv4(text) || isIPv6(text)) return true;
  const name = text.endsWith('.') ? text.slice(0, -1) : text;
  if (/^[\d.]+$/.test(name)) return false; // looks numeric but is no IPv4
  return name.split('.').every((label) => HOST_LABEL.test(label));
}
