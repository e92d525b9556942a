/**
 * ap mode: service settings (the protect threshold) replicated between nodes. Each
 * service's settings are one last-writer-wins register: the greater hybrid version wins,
 * so merging is commutative, associative and idempotent like the instance records
 * (replica.ts). Removing settings is a write of `protectThreshold: null`; that register is
 * kept, so that an older value cannot come back, until it is older than the tombstones'
 * longest hold (`collectRemoved`). maxServiceSettings bounds the registers in use.
 *
 * Kept apart from the instance records: settings are few, change rarely, are never
 * owned by a lease and never hidden, and the instance digests stay about instances.
 *
 * Pure: no I/O.
 */
import type { ServiceSettings } from '@switchboard/protocol';
import { serviceKey } from './registry.js';
import { fnv1a } from './replica.js';

export interface SettingsRecord {
  namespace: string;
  service: string;
  /** Hybrid logical clock version (see hlc.ts). */
  v: string;
  /** The node that took the write. */
  o: string;
  settings: ServiceSettings;
}

export class SettingsReplica {
  private readonly records = new Map<string, SettingsRecord>();

  get size(): number {
    return this.records.size;
  }

  get(namespace: string, service: string): SettingsRecord | undefined {
    return this.records.get(serviceKey(namespace, service));
  }

  /** Keeps `rec` if it is newer than the register holds; says whether it did. */
  merge(rec: SettingsRecord): boolean {
    const key = serviceKey(rec.namespace, rec.service);
    const cur = this.records.get(key);
    if (cur && cur.v >= rec.v) return false;
    this.records.set(key, { namespace: rec.namespace, service: rec.service, v: rec.v, o: rec.o, settings: { protectThreshold: rec.settings.protectThreshold } });
    return true;
  }

  /** One number for the whole table: equal digests mean equal tables (two nodes compare it in each anti-entropy round). */
  digest(): number {
    let d = 0;
    for (const [key, r] of this.records) d = (d ^ fnv1a(`${key}\u0000${r.v}`, 0x811c9dc5)) >>> 0;
    return (d ^ this.records.size) >>> 0;
  }

  all(): SettingsRecord[] {
    return [...this.records.values()];
  }

  /** Drops removal registers (null settings) whose version is older than `before` (ms); returns how many. */
  collectRemoved(before: number, versionMs: (v: string) => number): number {
    let n = 0;
    for (const [key, r] of this.records) {
      if (r.settings.protectThreshold === null && versionMs(r.v) < before) {
        this.records.delete(key);
        n++;
      }
    }
    return n;
  }

  /**
   * Settings a node kept before settings were replicated have no version: they get the
   * lowest one, so that any real write wins over them and nodes that disagree converge on
   * one of them (the greater node id) instead of staying different unnoticed.
   */
  adoptUnversioned(settings: readonly { namespace: string; service: string; settings: ServiceSettings }[], nodeId: string): number {
    let n = 0;
    for (const s of settings) {
      if (this.get(s.namespace, s.service)) continue;
      this.merge({ namespace: s.namespace, service: s.service, v: `${UNVERSIONED}@${nodeId}`, o: nodeId, settings: s.settings });
      n++;
    }
    return n;
  }

  static restore(records: readonly SettingsRecord[]): SettingsReplica {
    const t = new SettingsReplica();
    for (const r of records) t.merge(r);
    return t;
  }
}

/** Whether a value from a peer is a well-formed settings record. */
export function validSettingsRecord(x: unknown): x is SettingsRecord {
  if (typeof x !== 'object' || x === null) return false;
  const r = x as Record<string, unknown>;
  if (typeof r.namespace !== 'string' || typeof r.service !== 'string' || typeof r.v !== 'string' || typeof r.o !== 'string') return false;
  const s = r.settings as Record<string, unknown> | null;
  if (typeof s !== 'object' || s === null) return false;
  const t = s.protectThreshold;
  return t === null || (typeof t === 'number' && t >= 0 && t <= 1);
}

/** Below every hybrid version (their physical part is a non-zero base-36 time). */
const UNVERSIONED = '000000000000000';
