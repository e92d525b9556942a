/**
 * The replicated state of an ap node: one record per instance key, live or deleted
 * (a tombstone), with its version and owner. Merging keeps, for each key, the record with
 * the greatest version, so it is commutative, associative and idempotent: nodes that saw
 * the same records in any order, any number of times, hold the same table.
 *
 * Each service has a digest (an XOR of a hash of each record's key and version, kept up to
 * date on every change) so that two nodes compare whole services in one number.
 *
 * Pure: no I/O, time comes in as arguments.
 */
import type { CheckSpec, DeleteReason, Instance, PutReason } from '@switchboard/protocol';
import { instanceKey, serviceKey } from './registry.js';

/** What travels between nodes: an instance record without any node's revisions. */
export interface ReplicaRecord {
  namespace: string;
  service: string;
  id: string;
  /** Hybrid logical clock version (see hlc.ts). */
  v: string;
  /** The node that owns the record: the one holding its lease (or that took the write). */
  o: string;
  /** The instance (without createRevision, modRevision, unconfirmed), absent in a tombstone. */
  i?: WireInstance;
  specs?: CheckSpec[];
  /** Set in a tombstone: why it was deleted. */
  del?: DeleteReason;
  /** Why it was last put (history on every node shows the owner's reason). */
  why?: PutReason;
  detail?: string;
}

export type WireInstance = Omit<Instance, 'createRevision' | 'modRevision' | 'unconfirmed'>;

export interface StoredRecord extends ReplicaRecord {
  /** Local monotonic time the record (tombstone) was made or learned, for collection. */
  at: number;
}

export interface ServiceDigest {
  /** Two 32-bit hashes XORed over the records: equal digests mean equal services. */
  a: number;
  b: number;
  count: number;
}

export const recordKey = (r: { namespace: string; service: string; id: string }): string => instanceKey(r.namespace, r.service, r.id);
const svcKeyOf = (r: { namespace: string; service: string }): string => serviceKey(r.namespace, r.service);

/** 32-bit FNV-1a of a string, from `seed` (the usual offset basis: 0x811c9dc5). */
export function fnv1a(s: string, seed: number): number {
  let h = seed >>> 0;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** fnv1a(s, 0x811c9dc5) and fnv1a(s, 0x2b1f6a3d) of the record's key, version and kind, in one pass. */
function recordHash(key: string, v: string, deleted: boolean): [number, number] {
  const s = `${key}\u0000${v}\u0000${deleted ? 'd' : 'p'}`;
  let a = 0x811c9dc5;
  let b = 0x2b1f6a3d;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193) >>> 0;
    b = Math.imul(b ^ c, 0x01000193) >>> 0;
  }
  return [a, b];
}

export type MergeResult = 'applied' | 'older' | 'same';

/** One service in the table: its records and their digest. */
interface ServiceEntry extends ServiceDigest {
  /** The records (live and deleted) by instance key. */
  readonly records: Map<string, StoredRecord>;
  /** The records with versions above the table's settled cut, by instance key. */
  readonly young: Map<string, StoredRecord>;
  /** The digest of the records up to the settled cut (the others are in `young`). */
  settled: ServiceDigest;
  /**
   * The greatest version put into the service (not lowered when a record goes: at least
   * the greatest version held), so that `digestUpTo` skips the scan of a service that has
   * nothing newer than the cut.
   */
  newest: string;
}

export class ReplicaTable {
  private readonly records = new Map<string, StoredRecord>();
  /** service key -> its records and digest. */
  private readonly services = new Map<string, ServiceEntry>();
  /**
   * The service keys sorted, until a service appears or goes: anti-entropy asks for them
   * on every page of every round, and the set of services rarely changes in between.
   */
  private sortedKeys: string[] | null = null;
  /** The tombstones by instance key: collection walks these, not the whole table. */
  private readonly deleted = new Map<string, StoredRecord>();
  /** See settle(): every service's `settled` digest covers the records up to it. */
  private settledCut = '';

  get size(): number {
    return this.records.size;
  }
  get tombstones(): number {
    return this.deleted.size;
  }

  get(key: string): StoredRecord | undefined {
    return this.records.get(key);
  }

  values(): IterableIterator<StoredRecord> {
    return this.records.values();
  }

  /** Service keys, sorted: the same array until a service appears or goes, so read only. */
  serviceKeys(): readonly string[] {
    this.sortedKeys ??= [...this.services.keys()].sort();
    return this.sortedKeys;
  }

  digest(service: string): ServiceDigest | undefined {
    const e = this.services.get(service);
    return e && { a: e.a, b: e.b, count: e.count };
  }

  /**
   * The digest of the service's records whose version is at most `cut` (versions compare as
   * strings): the records younger than the cut, which may still be on their way between
   * nodes, left out. Undefined when the service has no record at all.
   */
  digestUpTo(service: string, cut: string): ServiceDigest | undefined {
    const e = this.services.get(service);
    if (!e) return undefined;
    if (e.newest <= cut) return { a: e.a, b: e.b, count: e.count };
    if (cut >= this.settledCut) {
      // The settled digest plus the young records up to the cut: no walk over the service.
      const out = { ...e.settled };
      for (const [key, r] of e.young) if (r.v <= cut) xor(out, key, r, 1);
      return out;
    }
    const out = { a: e.a, b: e.b, count: e.count };
    for (const [key, r] of e.records) if (r.v > cut) xor(out, key, r, -1);
    return out;
  }

  /**
   * Moves the settled cut forward to `cut` (never back): the records up to it leave the
   * services' young sets for their settled digests. `digestUpTo` with a cut at or above it
   * then walks only the young records; the caller settles a little behind the cuts it
   * will ask for (other nodes' clocks differ).
   */
  settle(cut: string): void {
    if (cut <= this.settledCut) return;
    this.settledCut = cut;
    for (const e of this.services.values()) {
      for (const [key, r] of e.young) {
        if (r.v > cut) continue;
        e.young.delete(key);
        xor(e.settled, key, r, 1);
      }
    }
  }

  /** The records (live and deleted) of one service. */
  serviceRecords(service: string): StoredRecord[] {
    const e = this.services.get(service);
    return e ? [...e.records.values()] : [];
  }

  /** Keeps `rec` if it is newer than what the table holds for its key. */
  merge(rec: ReplicaRecord, at: number): MergeResult {
    const key = recordKey(rec);
    return this.mergeKnown(key, this.records.get(key), rec, at);
  }

  /** merge() for a caller that has looked the record up: `key` is its key, `cur` what get(key) returned. */
  mergeKnown(key: string, cur: StoredRecord | undefined, rec: ReplicaRecord, at: number): MergeResult {
    if (cur) {
      if (cur.v === rec.v) return 'same';
      if (cur.v > rec.v) return 'older';
    }
    this.put(key, stored(rec, at), cur);
    return 'applied';
  }

  /** Removes a tombstone (collection) or any record (rebuild); the digest follows. */
  remove(key: string): void {
    const cur = this.records.get(key);
    if (!cur) return;
    this.records.delete(key);
    this.deleted.delete(key);
    const sk = svcKeyOf(cur);
    const e = this.services.get(sk) as ServiceEntry;
    this.unlink(e, key, cur);
    e.records.delete(key);
    if (e.records.size === 0) {
      this.services.delete(sk);
      this.sortedKeys = null;
    }
  }

  /** Tombstones that `collectable` allows to drop; returns how many were dropped. */
  collect(collectable: (rec: StoredRecord) => boolean): StoredRecord[] {
    const out: StoredRecord[] = [];
    for (const rec of this.deleted.values()) if (collectable(rec)) out.push(rec);
    for (const rec of out) this.remove(recordKey(rec));
    return out;
  }

  snapshot(): StoredRecord[] {
    return [...this.records.values()];
  }

  /**
   * The table of a snapshot. Each record is dated `now` (the time of this process), as log
   * replay dates what it learns: a date from before a restart would count the time the node
   * was down as a tombstone's age, and collect it before any peer could have it.
   */
  static restore(records: StoredRecord[], now: number): ReplicaTable {
    const t = new ReplicaTable();
    for (const r of records) t.merge(r, now);
    return t;
  }

  private put(key: string, rec: StoredRecord, cur: StoredRecord | undefined): void {
    const sk = svcKeyOf(rec);
    let e = this.services.get(sk);
    if (!e) {
      e = { records: new Map(), young: new Map(), settled: { a: 0, b: 0, count: 0 }, a: 0, b: 0, count: 0, newest: '' };
      this.services.set(sk, e);
      this.sortedKeys = null;
    }
    if (cur) this.unlink(e, key, cur);
    if (rec.del) this.deleted.set(key, rec);
    else if (cur?.del) this.deleted.delete(key);
    this.records.set(key, rec);
    e.records.set(key, rec);
    xor(e, key, rec, 1);
    if (rec.v > this.settledCut) e.young.set(key, rec);
    else xor(e.settled, key, rec, 1);
    if (rec.v > e.newest) e.newest = rec.v;
  }

  /** Takes `cur`, the record held for `key`, out of the service's digests. */
  private unlink(e: ServiceEntry, key: string, cur: StoredRecord): void {
    xor(e, key, cur, -1);
    if (cur.v > this.settledCut) e.young.delete(key);
    else xor(e.settled, key, cur, -1);
  }
}

/** The optional fields of T: a `Record<OptionalKeys<T>, true>` listing them fails to compile when one is added. */
export type OptionalKeys<T> = { [K in keyof T]-?: object extends Pick<T, K> ? K : never }[keyof T];

/** The optional fields stored() copies. */
const STORED_OPTIONAL: Record<OptionalKeys<ReplicaRecord>, true> = { i: true, specs: true, del: true, why: true, detail: true };
void STORED_OPTIONAL;

/**
 * A copy of `rec` to keep, dated `at`: its fields assigned in one order (a spread copies the
 * shape of whatever object came in, a decoded message's or a caller's, so the table's
 * records would each have one of many shapes).
 */
function stored(rec: ReplicaRecord, at: number): StoredRecord {
  const s: StoredRecord = { namespace: rec.namespace, service: rec.service, id: rec.id, v: rec.v, o: rec.o, at };
  if (rec.i !== undefined) s.i = rec.i;
  if (rec.specs !== undefined) s.specs = rec.specs;
  if (rec.del !== undefined) s.del = rec.del;
  if (rec.why !== undefined) s.why = rec.why;
  if (rec.detail !== undefined) s.detail = rec.detail;
  return s;
}

/**
 * Each stored record's hash, made once: a record enters and leaves digests several times
 * (the service's, the settled or young one, the cut digests of anti-entropy rounds), and
 * hashing its key and version is most of what that costs. Stored records are never
 * changed in place (a change stores a new object), so the hash stays right.
 */
const hashes = new WeakMap<StoredRecord, [number, number]>();

function xor(d: ServiceDigest, key: string, rec: StoredRecord, delta: 1 | -1): void {
  let h = hashes.get(rec);
  if (h === undefined) {
    h = recordHash(key, rec.v, rec.del !== undefined);
    hashes.set(rec, h);
  }
  d.a = (d.a ^ h[0]) >>> 0;
  d.b = (d.b ^ h[1]) >>> 0;
  d.count += delta;
}

/** The version of an expiry tombstone: just after the incarnation it deletes, before any newer write. */
export function expiryVersion(incarnation: string): string {
  return `${incarnation}+`;
}
