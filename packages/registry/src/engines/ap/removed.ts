/**
 * The members removed from the cluster, as this node knows them (docs/ap.md, "Removing a
 * member"). A removal is permanent: it is kept in a small file of the data directory,
 * replaced atomically (fsync'ed) before the node acts on it, so that a restart never brings
 * the member back, even when --peers still names it. Under --dev it lives in memory only,
 * like everything else.
 *
 * Its own file rather than log entries: the list is read before the peer links start (a
 * removed member must not be dialed, even once), long before the log is replayed.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isErrno, writeFileAtomic } from '../../storage/fsutil.js';
import { REMOVED_MEMBERS_FILE } from '../../storage/layout.js';

/** What a removed node must do to come back (its peers refuse its id and its old records). */
export const REJOIN_HINT = 'to rejoin, start it with a new --node-id and an empty data directory';

/** Removed members kept; a cluster that removed more has far bigger problems than this list. */
export const MAX_REMOVED_MEMBERS = 1_024;

export class RemovedMembers {
  private readonly ids: Set<string>;
  /** Writes are serialized: two removals at once must not overwrite each other's file. */
  private writing: Promise<void> = Promise.resolve();

  constructor(
    /** The file, or null: memory only (--dev, the simulation). */
    private readonly file: string | null,
    ids: Iterable<string> = [],
  ) {
    this.ids = new Set(ids);
  }

  /** Reads the list of a data directory (null: --dev); a missing file is an empty list. */
  static async load(dataDir: string | null): Promise<RemovedMembers> {
    if (dataDir === null) return new RemovedMembers(null);
    const file = join(dataDir, REMOVED_MEMBERS_FILE);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return new RemovedMembers(file);
      throw err;
    }
    const invalid = (): Error => new Error(`${file} is not a list of removed members (format 1); restore it from a backup or remove it to forget every removal`);
    let doc: { format?: unknown; removed?: unknown };
    try {
      doc = JSON.parse(text) as typeof doc;
    } catch {
      throw invalid();
    }
    if (doc.format !== 1 || !Array.isArray(doc.removed) || !doc.removed.every((x) => typeof x === 'string')) throw invalid();
    return new RemovedMembers(file, doc.removed as string[]);
  }

  has(id: string): boolean {
    return this.ids.has(id);
  }

  get size(): number {
    return this.ids.size;
  }

  list(): string[] {
    return [...this.ids].sort();
  }

  /**
   * Adds a member and makes it durable; false when it was known already. Beyond
   * MAX_REMOVED_MEMBERS the call fails: nothing is forgotten silently.
   */
  async add(id: string): Promise<boolean> {
    if (this.ids.has(id)) return false;
    if (this.ids.size >= MAX_REMOVED_MEMBERS) throw new Error(`this node already keeps ${MAX_REMOVED_MEMBERS} removed members (MAX_REMOVED_MEMBERS)`);
    this.ids.add(id);
    const file = this.file;
    if (file === null) return true;
    // The list is taken when the write starts: a removal whose own write failed (and was
    // taken back) is not saved by the write queued after it.
    const write = this.writing.then(() => writeFileAtomic(file, Buffer.from(JSON.stringify({ format: 1, removed: this.list() }, null, 2) + '\n')));
    this.writing = write.catch(() => undefined);
    try {
      await write;
    } catch (err) {
      // Not durable: not acted on either (a restart would bring the member back).
      this.ids.delete(id);
      throw err;
    }
    return true;
  }
}
