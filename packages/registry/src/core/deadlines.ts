/**
 * A min-heap of deadlines with lazy deletion: moving a deadline pushes a new one and the
 * old one is skipped when it surfaces (the owner says, through `isLive`, whether a deadline
 * still stands). Used for lease expiry and for the time rules of checks.
 */

export interface Deadline<T> {
  at: number;
  item: T;
}

export class DeadlineHeap<T> {
  private readonly heap: Deadline<T>[] = [];

  /**
   * @param isLive whether a deadline popped from the heap still stands.
   * @param live every deadline that stands now, for compaction; called rarely.
   * @param liveCount how many deadlines stand now: the heap is compacted when it holds far more.
   */
  constructor(
    private readonly isLive: (d: Deadline<T>) => boolean,
    private readonly live: () => Iterable<Deadline<T>>,
    private readonly liveCount: () => number,
  ) {}

  get length(): number {
    return this.heap.length;
  }

  push(at: number, item: T): void {
    // Frequent moves leave stale deadlines behind; rebuild before they pile up.
    if (this.heap.length > 4 * this.liveCount() + 1024) this.rebuild();
    const h = this.heap;
    const d = { at, item };
    h.push(d);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if ((h[p] as Deadline<T>).at <= at) break;
      h[i] = h[p] as Deadline<T>;
      i = p;
    }
    h[i] = d;
  }

  /** The earliest deadline that stands, or undefined. */
  peek(): Deadline<T> | undefined {
    this.dropStale();
    return this.heap[0];
  }

  /** Removes and returns the standing deadlines at or before `now`, earliest first. */
  popDue(now: number): Deadline<T>[] {
    const out: Deadline<T>[] = [];
    for (;;) {
      const top = this.peek();
      if (!top || top.at > now) return out;
      this.pop();
      out.push(top);
    }
  }

  clear(): void {
    this.heap.length = 0;
  }

  private dropStale(): void {
    for (;;) {
      const top = this.heap[0];
      if (!top || this.isLive(top)) return;
      this.pop();
    }
  }

  private rebuild(): void {
    const live = [...this.live()];
    live.sort((a, b) => a.at - b.at); // a sorted array is a valid min-heap
    this.heap.length = 0;
    for (const d of live) this.heap.push(d);
  }

  private pop(): void {
    const h = this.heap;
    const last = h.pop() as Deadline<T>;
    if (h.length === 0) return;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= h.length) break;
      const r = l + 1;
      const c = r < h.length && (h[r] as Deadline<T>).at < (h[l] as Deadline<T>).at ? r : l;
      if ((h[c] as Deadline<T>).at >= last.at) break;
      h[i] = h[c] as Deadline<T>;
      i = c;
    }
    h[i] = last;
  }
}
