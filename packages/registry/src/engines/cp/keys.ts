/**
 * The key layout of cp mode in etcd, under a prefix (config `etcdPrefix`, default
 * `/switchboard/`); docs/cp.md describes it for operators. Pure code: encoding and
 * decoding only.
 *
 *   <prefix>instances/<namespace>/<service>/<id>  an instance: JSON {instance, specs, reason,
 *                                                 detail, at}; bound to the etcd lease of its
 *                                                 Switchboard lease, or without a lease
 *                                                 (persistent)
 *   <prefix>leases/<leaseId>                      a Switchboard lease: JSON {ttlMs, revoking?, reason?, attached?, detached?};
 *                                                 bound to that same etcd lease, so that it
 *                                                 goes with its instances
 *   <prefix>settings/<namespace>/<service>        service settings: JSON ServiceSettings
 *   <prefix>nodes/<nodeId>                        a live Switchboard node: JSON {address,
 *                                                 scheme, startedAt}; bound to the node's own
 *                                                 lease
 *   <prefix>heard/<ns>/<service>/<id>/<checkId>   the last report into a ttl check: JSON {at};
 *                                                 bound to the instance's lease
 *   <prefix>why                                   why the instances deleted by the latest
 *                                                 deliberate delete went: JSON {<instance key>:
 *                                                 {reason, detail}}; written in the same
 *                                                 transaction as the delete
 *   <prefix>barrier/<nodeId>                      a counter a node writes to learn that its
 *                                                 watch has delivered everything up to now
 *                                                 (on etcd releases whose progress answers
 *                                                 can overtake events; see view.ts)
 *
 * Revisions in Switchboard answers are etcd's: an instance's createRevision and
 * modRevision are its key's create_revision and mod_revision.
 */
import type { CheckSpec, DeleteReason, Instance, PutReason, ServiceSettings } from '@switchboard/protocol';

export interface Layout {
  readonly prefix: string;
}

export interface StoredInstance {
  /** The instance without its revisions (they are the key's). */
  instance: Omit<Instance, 'createRevision' | 'modRevision'>;
  specs: CheckSpec[];
  reason: PutReason;
  detail?: string;
  /** Wall-clock time of the write (ms since the Unix epoch). */
  at: number;
}

export interface StoredLease {
  ttlMs: number;
  /** Set just before the lease is revoked, so that its deletes read `lease_revoked` (or `reason`). */
  revoking?: boolean;
  /** With `revoking`: the session that kept the lease closed without a hand-over. */
  reason?: 'connection_lost';
  /** The node whose session keeps the lease (written when a session takes or resumes it). */
  attached?: string;
  /** The node whose session closed without a hand-over; the lease ends after the grace unless a session resumes it. */
  detached?: string;
}

export interface StoredNode {
  address: string;
  /** How the node serves its API, http or https; absent from nodes of earlier versions. */
  scheme?: 'http' | 'https';
  startedAt: string;
}

export type WhyValue = Record<string, { reason: DeleteReason; detail?: string }>;

export type ParsedKey =
  | { kind: 'instance'; namespace: string; service: string; id: string }
  | { kind: 'lease'; leaseId: string }
  | { kind: 'settings'; namespace: string; service: string }
  | { kind: 'node'; nodeId: string }
  | { kind: 'why' }
  | { kind: 'heard'; namespace: string; service: string; id: string; checkId: string }
  | { kind: 'other' };

export const instanceKeyOf = (l: Layout, namespace: string, service: string, id: string): string => `${l.prefix}instances/${namespace}/${service}/${id}`;
export const leaseKeyOf = (l: Layout, leaseId: string): string => `${l.prefix}leases/${leaseId}`;
export const settingsKeyOf = (l: Layout, namespace: string, service: string): string => `${l.prefix}settings/${namespace}/${service}`;
export const nodeKeyOf = (l: Layout, nodeId: string): string => `${l.prefix}nodes/${nodeId}`;
export const heardKeyOf = (l: Layout, namespace: string, service: string, id: string, checkId: string): string => `${l.prefix}heard/${namespace}/${service}/${id}/${checkId}`;
export const heardPrefixOf = (l: Layout, namespace: string, service: string, id: string): string => `${l.prefix}heard/${namespace}/${service}/${id}/`;
export const whyKeyOf = (l: Layout): string => `${l.prefix}why`;

/** Classifies a key under the prefix. Namespaces, services and lease ids hold no "/". */
export function parseKey(l: Layout, key: string): ParsedKey {
  if (!key.startsWith(l.prefix)) return { kind: 'other' };
  const rest = key.slice(l.prefix.length);
  const slash = rest.indexOf('/');
  const head = slash < 0 ? rest : rest.slice(0, slash);
  const tail = slash < 0 ? '' : rest.slice(slash + 1);
  switch (head) {
    case 'instances': {
      const a = tail.indexOf('/');
      const b = tail.indexOf('/', a + 1);
      if (a <= 0 || b <= a + 1 || b === tail.length - 1) return { kind: 'other' };
      return { kind: 'instance', namespace: tail.slice(0, a), service: tail.slice(a + 1, b), id: tail.slice(b + 1) };
    }
    case 'leases':
      return tail === '' ? { kind: 'other' } : { kind: 'lease', leaseId: tail };
    case 'settings': {
      const a = tail.indexOf('/');
      if (a <= 0 || a === tail.length - 1) return { kind: 'other' };
      return { kind: 'settings', namespace: tail.slice(0, a), service: tail.slice(a + 1) };
    }
    case 'nodes':
      return tail === '' ? { kind: 'other' } : { kind: 'node', nodeId: tail };
    case 'heard': {
      const parts = tail.split('/');
      if (parts.length !== 4 || parts.some((x) => x === '')) return { kind: 'other' };
      const [namespace, service, id, checkId] = parts as [string, string, string, string];
      return { kind: 'heard', namespace, service, id, checkId };
    }
    case 'why':
      return slash < 0 ? { kind: 'why' } : { kind: 'other' };
    default:
      return { kind: 'other' };
  }
}

/** etcd lease ids are int64; Switchboard shows them as 16 hex digits, as etcdctl does. */
export function leaseIdToEtcd(leaseId: string): string | null {
  if (!/^[0-9a-f]{1,16}$/.test(leaseId)) return null;
  return BigInt('0x' + leaseId).toString(10);
}

export function leaseIdFromEtcd(id: string | number): string {
  return BigInt(id).toString(16).padStart(16, '0');
}

/** The end of the key range that holds every key starting with `prefix`. */
export function prefixEnd(prefix: string): Buffer {
  const b = Buffer.from(prefix);
  for (let i = b.length - 1; i >= 0; i--) {
    if ((b[i] as number) < 0xff) {
      const out = Buffer.from(b.subarray(0, i + 1));
      out[i] = (b[i] as number) + 1;
      return out;
    }
  }
  return Buffer.from([0]);
}

export function decodeJson<T>(value: Buffer | string): T | undefined {
  try {
    return JSON.parse(typeof value === 'string' ? value : value.toString('utf8')) as T;
  } catch {
    return undefined;
  }
}

export function encodeInstance(instance: Instance, specs: CheckSpec[], reason: PutReason, detail: string | undefined, at: number): string {
  const { createRevision: _c, modRevision: _m, ...rest } = instance;
  const v: StoredInstance = { instance: rest, specs, reason, at };
  if (detail !== undefined) v.detail = detail;
  return JSON.stringify(v);
}

export function decodeSettings(value: Buffer): ServiceSettings | undefined {
  return decodeJson<ServiceSettings>(value);
}

export const barrierKeyOf = (l: Layout, nodeId: string): string => `${l.prefix}barrier/${nodeId}`;

/**
 * Whether this etcd release answers a watch progress request only after every earlier
 * event of the stream was sent. Older releases send the answer on a separate path that
 * can overtake events still queued (etcd issue 15220, fixed by pull request 15237, and
 * for watchers with no events by 17557): the view would then believe it holds revisions
 * it has not seen. Conservatively: 3.4.31+, 3.5.13+, 3.6+.
 */
export function progressAnswersAreOrdered(version: string): boolean {
  const m = /^(\d+)\.(\d+)\.(\d+)/.exec(version);
  if (!m) return false;
  const [major, minor, patch] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (major !== 3) return major > 3;
  if (minor === 4) return patch >= 31;
  if (minor === 5) return patch >= 13;
  return minor > 5;
}
