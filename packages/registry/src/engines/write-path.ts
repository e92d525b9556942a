/**
 * The write path shared by the engines that keep their own log (standalone and ap):
 *   1. the core has checked the command and applied its entry in memory (so the next
 *      command sees it) and hands over the outcome;
 *   2. the entry goes to storage.append, which resolves once it is fsync'd (group commit);
 *      the log gets the entry's JSON built from each instance's cached JSON;
 *   3. entries are announced to the hub strictly in append order, then the caller is
 *      answered; a snapshot is started when the storage says one is due.
 * What an engine does besides (ap sends the announced changes to its peers) it does in
 * `onAnnounced`, which runs in the same order.
 */
import { SwitchboardError, type Instance } from '@switchboard/protocol';
import { serviceKey, type Registry, type WriteOutcome } from '../core/registry.js';
import type { Entry, Snapshot } from '../core/entry.js';
import type { Storage } from '../storage/storage.js';
import { entryJson, setEntryJson } from '../storage/wal.js';
import { traceAppend } from '../telemetry/index.js';
import type { LeaseEndedListener } from './engine.js';
import type { Hub } from './hub.js';

export interface WritePathOptions {
  registry: Registry;
  storage: Storage;
  hub: Hub;
  /** What a snapshot holds (standalone: the registry's; ap adds its replica tables). */
  snapshot(): Snapshot;
  /** Runs for each announced entry, in append order, after the hub has it. */
  onAnnounced?(entry: Entry): void;
  /** Client writes waiting for the log at most (default MAX_PENDING_WRITES; tests lower it). */
  maxPending?: number;
  /** Storage failed: the process must stop, memory is ahead of disk. */
  onFatal?: (err: unknown) => void;
  /** A snapshot failed; the log is intact, so the node goes on and tries again later. */
  onSnapshotError?: (err: unknown) => void;
}

/**
 * Client writes applied in memory but not yet durable, at most (beyond it a client's write
 * is refused with 503 STORE_UNAVAILABLE until the log catches up). Besides bounding memory
 * when the disk stalls, it bounds the revisions a crash can lose, which the revision floor
 * after an unclean stop must exceed (storage/file-storage.ts, UNCLEAN_STOP_REVISION_GAP).
 */
export const MAX_PENDING_WRITES = 100_000;

interface Pending {
  outcome: WriteOutcome;
  done: boolean;
  after: (() => void) | undefined;
}

export class WritePath {
  private readonly pending: Pending[] = [];
  private lastAppend: Promise<void> = Promise.resolve();
  private snapshotting = false;
  private closed = false;
  private readonly leaseListeners = new Set<LeaseEndedListener>();

  constructor(private readonly opts: WritePathOptions) {}

  /** Refuses a client's write while MAX_PENDING_WRITES writes wait for the log. */
  admit(): void {
    if (this.pending.length < (this.opts.maxPending ?? MAX_PENDING_WRITES)) return;
    throw new SwitchboardError('STORE_UNAVAILABLE', `${this.pending.length} writes are waiting for the disk (fsync is slower than the writes)`, {
      limit: 'MAX_PENDING_WRITES',
      retryAfterSec: 1,
      hint: 'retry after a second; if it lasts, check the disk of the data directory (the switchboard_wal_fsync_duration_seconds metric)',
    });
  }

  /**
   * Makes an outcome durable, announces it in order, and returns the revision to answer.
   * `after` runs right after the announcement (for an outcome without an entry: once every
   * earlier entry is announced).
   */
  async persist(outcome: WriteOutcome, after?: () => void): Promise<number> {
    if (!outcome.entry) {
      // A no-op still waits for earlier writes, so that it never answers before them.
      try {
        await this.lastAppend;
      } catch (err) {
        throw storageFailure(err);
      }
      after?.();
      return outcome.revision;
    }
    const { storage } = this.opts;
    if (storage.durable) setEntryJson(outcome.entry, entryJson(outcome.entry, (c) => this.storedJson(c.instance)));
    const slot: Pending = { outcome, done: false, after };
    this.pending.push(slot);
    const appended = traceAppend(storage.append(outcome.entry), outcome.revision);
    this.lastAppend = appended;
    try {
      await appended;
    } catch (err) {
      this.opts.onFatal?.(err);
      throw storageFailure(err);
    }
    slot.done = true;
    this.announceDone();
    this.maybeSnapshot();
    return outcome.revision;
  }

  onLeaseEnded(listener: LeaseEndedListener): () => void {
    this.leaseListeners.add(listener);
    return () => this.leaseListeners.delete(listener);
  }

  /** The registry's cached JSON of an instance, when it is the one stored (for the log and snapshots). */
  private storedJson(instance: Instance): string | undefined {
    const rec = this.opts.registry.instance(instance.namespace, instance.service, instance.id);
    return rec !== undefined && rec.instance === instance ? rec.json : undefined;
  }

  /** Stops snapshots and waits for the appends in flight (the engine closes the storage). */
  async close(): Promise<void> {
    this.closed = true;
    await this.lastAppend.catch(() => undefined);
  }

  private announceDone(): void {
    const { hub } = this.opts;
    while (this.pending.length > 0 && (this.pending[0] as Pending).done) {
      const { outcome, after } = this.pending.shift() as Pending;
      hub.publish(outcome.events, outcome.revision);
      const entry = outcome.entry as Entry;
      for (const c of entry.changes) {
        if (c.op === 'lease_end') for (const l of this.leaseListeners) l(c.leaseId, c.reason);
        if (c.op === 'settings') hub.wake([serviceKey(c.namespace, c.service)]);
      }
      this.opts.onAnnounced?.(entry);
      after?.();
    }
  }

  private maybeSnapshot(): void {
    const { storage } = this.opts;
    if (this.snapshotting || this.closed || !storage.snapshotDue()) return;
    this.snapshotting = true;
    storage
      .writeSnapshot(this.opts.snapshot(), (instance) => this.storedJson(instance))
      .catch((err) => this.opts.onSnapshotError?.(err))
      .finally(() => {
        this.snapshotting = false;
      });
  }
}

/**
 * A write the log could not make durable, as its client is told: 503 STORE_UNAVAILABLE
 * (another node can take it) naming the system error, not the node's file paths.
 */
function storageFailure(err: unknown): SwitchboardError {
  let code: string | undefined;
  for (let e: unknown = err; e instanceof Error && code === undefined; e = e.cause) code = (e as NodeJS.ErrnoException).code;
  return new SwitchboardError('STORE_UNAVAILABLE', `this node could not make the write durable${code ? ` (${code})` : ''}; it is stopping`, {
    retryAfterSec: 1,
    hint: 'send the write to another node; this one needs its operator (its log says why)',
  });
}
