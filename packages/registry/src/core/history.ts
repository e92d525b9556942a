/**
 * Reason-coded history: the last state changes of each instance, fed by `apply` from the
 * entries themselves (so replay rebuilds it) and kept in snapshots. An instance that is
 * gone keeps its history for a while, since why it went is the question people ask.
 */
import type { HistoryEntry } from '@switchboard/protocol';

export interface HistorySnapshotItem {
  key: string;
  /** The instance is gone; only its history remains. */
  deleted: boolean;
  entries: HistoryEntry[];
}

export class HistoryBook {
  private readonly live = new Map<string, HistoryEntry[]>();
  /** Histories of deleted instances, oldest deletion first. */
  private readonly deleted = new Map<string, HistoryEntry[]>();

  constructor(
    private readonly perInstance: number,
    private readonly maxDeleted: number,
  ) {}

  /** Adds a change of the instance `key` (its deletion when `entry.type` is delete). */
  record(key: string, entry: HistoryEntry): void {
    let list = this.live.get(key);
    if (!list) {
      // A re-registration continues the history of an instance that was deleted.
      list = this.deleted.size > 0 ? this.deleted.get(key) : undefined;
      if (list) this.deleted.delete(key);
      else list = [];
      this.live.set(key, list);
    }
    list.push(entry);
    if (list.length > this.perInstance) list.splice(0, list.length - this.perInstance);
    if (entry.type === 'delete') {
      this.live.delete(key);
      if (this.maxDeleted === 0) return;
      this.deleted.set(key, list);
      while (this.deleted.size > this.maxDeleted) this.deleted.delete(this.deleted.keys().next().value as string);
    }
  }

  /** The history of an instance, oldest first; undefined when none is kept. */
  get(key: string): { exists: boolean; entries: readonly HistoryEntry[] } | undefined {
    const live = this.live.get(key);
    if (live) return { exists: true, entries: live };
    const gone = this.deleted.get(key);
    return gone ? { exists: false, entries: gone } : undefined;
  }

  snapshot(): HistorySnapshotItem[] {
    const out: HistorySnapshotItem[] = [];
    for (const [key, entries] of this.deleted) out.push({ key, deleted: true, entries });
    for (const [key, entries] of this.live) out.push({ key, deleted: false, entries });
    return out;
  }

  restore(items: readonly HistorySnapshotItem[]): void {
    for (const item of items) (item.deleted ? this.deleted : this.live).set(item.key, [...item.entries]);
  }
}
