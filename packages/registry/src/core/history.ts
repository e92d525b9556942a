/**
 * Reason-coded history: the last state changes of each instance, fed by `apply` from the
 * entries themselves (so replay rebuilds it) and kept in snapshots. A live instance's
 * history is held by its record in the registry; this book keeps the histories of
 * instances that are gone, for a while, since why one went is the question people ask.
 *
 * A history is an array that is never changed once made: a change makes a new one. So a
 * snapshot taken at a cut holds the histories of that moment while it is written in the
 * background (changing them in place put later changes into the snapshot, and a restart
 * then replayed them a second time), and a new instance's history costs one small array,
 * not an entry in one map of every instance's key.
 */
import type { HistoryEntry } from '@switchboard/protocol';

export interface HistorySnapshotItem {
  key: string;
  /** The instance is gone; only its history remains. */
  deleted: boolean;
  entries: readonly HistoryEntry[];
}

/** The history of an instance that has none yet (shared: histories are never changed). */
export const NO_HISTORY: readonly HistoryEntry[] = Object.freeze([]);

export class HistoryBook {
  /** Histories of deleted instances, oldest deletion first. */
  private readonly deleted = new Map<string, readonly HistoryEntry[]>();

  constructor(
    private readonly perInstance: number,
    private readonly maxDeleted: number,
  ) {}

  /** `history` with `entry` added: a new array of the newest `perInstance` entries. */
  extend(history: readonly HistoryEntry[], entry: HistoryEntry): readonly HistoryEntry[] {
    const n = Math.min(history.length + 1, this.perInstance);
    if (n <= 0) return NO_HISTORY;
    if (n === 1) return [entry];
    const out = new Array<HistoryEntry>(n);
    const skip = history.length + 1 - n;
    for (let k = 0; k < n - 1; k++) out[k] = history[skip + k] as HistoryEntry;
    out[n - 1] = entry;
    return out;
  }

  /**
   * The history a new instance `key` starts from: the one it had when it was deleted, if
   * that is still kept (a re-registration continues it), else none.
   */
  resume(key: string): readonly HistoryEntry[] {
    if (this.deleted.size === 0) return NO_HISTORY;
    const history = this.deleted.get(key);
    if (history === undefined) return NO_HISTORY;
    this.deleted.delete(key);
    return history;
  }

  /** Keeps the history of the deleted instance `key` (ending with its deletion). */
  retire(key: string, history: readonly HistoryEntry[]): void {
    if (this.maxDeleted === 0) return;
    this.deleted.delete(key);
    this.deleted.set(key, history);
    while (this.deleted.size > this.maxDeleted) this.deleted.delete(this.deleted.keys().next().value as string);
  }

  /** The kept history of the deleted instance `key`. */
  retired(key: string): readonly HistoryEntry[] | undefined {
    return this.deleted.get(key);
  }

  /** The deleted instances' histories, oldest deletion first. */
  snapshot(): HistorySnapshotItem[] {
    const out: HistorySnapshotItem[] = [];
    for (const [key, entries] of this.deleted) out.push({ key, deleted: true, entries });
    return out;
  }
}
