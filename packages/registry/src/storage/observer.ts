/**
 * What the storage reports about its own work, for metrics and tracing, without knowing
 * either: the engine passes an observer in, and nothing is measured when none is given.
 */

/** One group commit of the write-ahead log: one write and one fdatasync, or one O_DSYNC write. */
export interface WalCommit {
  /** Log records in the batch. */
  records: number;
  bytes: number;
  /** Seconds spent in the write before a separate fdatasync; null when the write itself synced (O_DSYNC). */
  writeSeconds: number | null;
  /** Seconds until the batch was durable: the fdatasync, or the whole O_DSYNC write. */
  syncSeconds: number;
}

export interface StorageObserver {
  walCommit(commit: WalCommit): void;
}

/** Several observers behind one (metrics of every app built on the engine). */
export class StorageObservers implements StorageObserver {
  private list: StorageObserver[] = [];

  get size(): number {
    return this.list.length;
  }

  add(observer: StorageObserver): () => void {
    this.list = [...this.list, observer];
    return () => {
      this.list = this.list.filter((o) => o !== observer);
    };
  }

  walCommit(commit: WalCommit): void {
    for (const o of this.list) o.walCommit(commit);
  }
}
