/**
 * The retained event log: the last `capacity` watch events, in revision order, so that a
 * watcher can resume. Older positions get an explicit reset instead of silent loss.
 */
import type { WatchEvent } from '@switchboard/protocol';

export class EventLog {
  private readonly ring: (WatchEvent | undefined)[];
  private start = 0;
  private size = 0;
  /** Events with a revision at or below this are no longer retained. */
  private compacted: number;

  constructor(
    private readonly capacity: number,
    baseRevision = 0,
  ) {
    if (capacity < 1) throw new Error('event log capacity must be at least 1');
    this.ring = new Array(capacity);
    this.compacted = baseRevision;
  }

  append(event: WatchEvent): void {
    if (this.size === this.capacity) {
      const dropped = this.ring[this.start] as WatchEvent;
      this.compacted = Math.max(this.compacted, dropped.revision);
      this.start = (this.start + 1) % this.capacity;
      this.size--;
    }
    this.ring[(this.start + this.size) % this.capacity] = event;
    this.size++;
  }

  /**
   * Marks the events up to `revision` as missing (a watch that could not resume skipped
   * some): a position at or before it gets a reset instead of a silent gap.
   */
  forgetThrough(revision: number): void {
    this.compacted = Math.max(this.compacted, revision);
  }

  /** The highest revision whose events may be missing from the log. */
  compactedRevision(): number {
    return this.compacted;
  }

  /**
   * Events with revision >= fromRevision, or 'reset' when some of them are gone. A
   * revision that shares its events across the ring's edge counts as gone.
   */
  since(fromRevision: number): WatchEvent[] | 'reset' {
    if (fromRevision <= this.compacted) return 'reset';
    const out: WatchEvent[] = [];
    // Binary search for the first event with revision >= fromRevision.
    let lo = 0;
    let hi = this.size;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.at(mid).revision) < fromRevision) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < this.size; i++) out.push(this.at(i));
    return out;
  }

  get length(): number {
    return this.size;
  }

  private at(i: number): WatchEvent {
    return this.ring[(this.start + i) % this.capacity] as WatchEvent;
  }
}
