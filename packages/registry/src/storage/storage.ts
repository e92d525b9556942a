/**
 * The seam between the engine and durability. The engine applies an entry in memory,
 * hands it to `append`, and answers the client and announces the events only when
 * `append` has resolved, that is once the entry is on stable storage.
 */
import type { Instance } from '@switchboard/protocol';
import type { Entry, Snapshot } from '../core/entry.js';

/**
 * The JSON the core already holds for an instance of a snapshot (undefined when it has
 * none for exactly that object): a snapshot then reuses it instead of serialising the
 * instance again.
 */
export type InstanceJson = (instance: Instance) => string | undefined;

export interface Recovered {
  /** The epoch of this data directory (a new one when the directory was empty). */
  epoch: string;
  snapshot: Snapshot | null;
  /** Entries logged after the snapshot, in order. */
  entries: Entry[];
  /**
   * The least revision to start at (after a repair moved acknowledged records aside, so
   * that their revisions are not given to other changes); absent or 0: none.
   */
  revisionFloor?: number;
}

export interface Storage {
  /** True when an acknowledged write survives a crash. */
  readonly durable: boolean;
  /** Where the data lives, for status output; null in memory. */
  readonly location: string | null;
  /** Reads what was stored; called once before any append. */
  open(newEpoch: () => string): Promise<Recovered>;
  /** Resolves once the entry is durable; entries become durable in append order. */
  append(entry: Entry): Promise<void>;
  /** Whether enough has been logged since the last snapshot that one is due. */
  snapshotDue(): boolean;
  /**
   * Writes a snapshot and trims the log behind it. Called in the same tick in which the
   * snapshot was taken from the core: every entry appended before the call is in the
   * snapshot and none after it, so the log can be cut exactly there.
   */
  writeSnapshot(snapshot: Snapshot, instanceJson?: InstanceJson): Promise<void>;
  close(): Promise<void>;
}

/** `--dev`: nothing is kept; every start is a new epoch. */
export class MemoryStorage implements Storage {
  readonly durable = false;
  readonly location = null;

  async open(newEpoch: () => string): Promise<Recovered> {
    return { epoch: newEpoch(), snapshot: null, entries: [] };
  }
  append(): Promise<void> {
    return Promise.resolve();
  }
  snapshotDue(): boolean {
    return false;
  }
  async writeSnapshot(): Promise<void> {}
  async close(): Promise<void> {}
}
