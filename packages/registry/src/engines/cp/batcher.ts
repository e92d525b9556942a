/**
 * Group commit for cp writes: guarded transactions that arrive while earlier ones are in
 * flight are sent together as one etcd transaction whose success branch holds each of
 * them as a nested transaction with its own guards (etcd 3.3+). One raft round, one gRPC
 * call and one watch response then carry many writes; each write still succeeds or fails
 * on its own guards. Writes that touch the same key never share a batch (a key one of
 * them writes may be neither written nor read by another), so the order inside a batch
 * does not matter: they commit at one revision, as a batch registration does.
 */
import type * as RPC from 'etcd3';

export interface GuardedTxn {
  compare: RPC.ICompare[];
  success: RPC.IRequestOp[];
}

export interface TxnOutcome {
  succeeded: boolean;
  revision: number;
}

interface Waiting {
  txn: GuardedTxn;
  reads: string[];
  writes: string[];
  bytes: number;
  /** Operations etcd counts for it: the larger of its compares and its success ops. */
  ops: number;
  resolve(o: TxnOutcome): void;
  reject(err: unknown): void;
}

export interface BatcherOptions {
  /** Sends one transaction to etcd. */
  send(txn: RPC.ITxnRequest): Promise<RPC.ITxnResponse>;
  /** Most writes in one batch (at most etcd's --max-txn-ops). */
  maxWrites: number;
  /**
   * etcd's --max-txn-ops. A nested transaction may hold at most that many operations less
   * the number of operations of the transaction around it (etcd's checkTxnRequest), so a
   * large write shares a batch only with few others, and goes alone when it must.
   */
  maxTxnOps: number;
  /** Most value bytes in one batch (etcd refuses requests above --max-request-bytes, 1.5 MiB by default). */
  maxBytes: number;
  /** Batches in flight at once. */
  maxInFlight: number;
  /**
   * Longest a batch is held back for the writers of the batch just answered (ms); 0 sends
   * what is queued at once. See `pump`.
   */
  holdMs?: number;
  /** Writes waiting for a batch; more are refused (the caller answers 503 with Retry-After). */
  maxQueued: number;
  /**
   * Asked when a batch fails: true when etcd is known to be out of reach, and the writes
   * still queued are then refused with the batch's error at once (never sent, they did not
   * happen) instead of each waiting its own deadline in turn. One slow batch or a leader
   * change alone does not refuse the queue.
   */
  unreachable?: (err: unknown) => boolean;
}

/** Refused because `maxQueued` writes already wait: etcd is not keeping up. */
export class QueueFull extends Error {}

const keyText = (b: Buffer | undefined): string => (b ?? Buffer.alloc(0)).toString('latin1');

function keysOf(txn: GuardedTxn): { reads: string[]; writes: string[]; bytes: number; ops: number } {
  const reads = txn.compare.map((c) => keyText(c.key));
  const writes: string[] = [];
  let bytes = 0;
  for (const op of txn.success) {
    if (op.request_put) {
      writes.push(keyText(op.request_put.key));
      bytes += (op.request_put.value?.length ?? 0) + (op.request_put.key?.length ?? 0);
    } else if (op.request_delete_range) writes.push(keyText(op.request_delete_range.key));
  }
  return { reads, writes, bytes, ops: Math.max(txn.compare.length, txn.success.length) };
}

export class TxnBatcher {
  private readonly queue: Waiting[] = [];
  private inFlight = 0;
  /** While held (see `pump`): the queue length that ends the hold, and its timer. */
  private want = 0;
  private holdTimer: ReturnType<typeof setTimeout> | null = null;
  private closed = false;
  /** Batches sent and writes they carried, holds begun and those that ended by time with writes waiting (for the status). */
  batches = 0;
  writes = 0;
  held = 0;
  holdsTimedOut = 0;

  constructor(private readonly opts: BatcherOptions) {}

  submit(txn: GuardedTxn): Promise<TxnOutcome> {
    if (this.closed) return Promise.reject(new QueueFull('the node is shutting down'));
    if (this.queue.length >= this.opts.maxQueued) return Promise.reject(new QueueFull(`${this.queue.length} writes already wait for etcd on this node`));
    return new Promise((resolve, reject) => {
      this.queue.push({ txn, ...keysOf(txn), resolve, reject });
      this.pump();
    });
  }

  /**
   * Sends what is queued, unless held. Writers who wait for their answer before they write
   * again (a client registering its instances one after another, a deploy of many such
   * processes) fall into cohorts: those queued behind the batch in flight go as the next
   * batch the moment it is answered, while that batch's writers are still being answered,
   * and then queue behind it in turn. With n such writers every batch carries about n/2
   * of them, and a transaction costs etcd and this node far more than a write in it. So
   * when a batch of several writes is answered, or one with writes queued behind it, the
   * next batch is held until the answered writers can be back in the queue (it has grown
   * by the answered batch's size) or `holdMs` has passed, whichever is first: the cohorts
   * merge, and each transaction carries all n. The price: a write that arrives during a
   * hold waits for it, up to `holdMs`, even when it is not one of the answered writers.
   * Nothing is held after a batch of one write with nothing queued (a writer alone), or
   * when the queue already holds what the hold would wait for.
   */
  private pump(): void {
    while (!this.closed && this.inFlight < this.opts.maxInFlight && this.queue.length > 0) {
      if (this.holdTimer !== null && this.queue.length < this.want) return;
      this.release();
      this.sendBatch(this.take());
    }
  }

  private hold(answered: number): void {
    const ms = this.opts.holdMs ?? 0;
    if (ms <= 0 || this.closed || this.queue.length + answered <= 1) return;
    this.release();
    this.want = Math.min(this.opts.maxWrites, this.queue.length + answered);
    if (this.queue.length >= this.want) return;
    this.held++;
    this.holdTimer = setTimeout(() => {
      this.holdTimer = null;
      if (this.queue.length > 0) this.holdsTimedOut++;
      this.pump();
    }, ms);
    this.holdTimer.unref?.();
  }

  private release(): void {
    if (this.holdTimer !== null) clearTimeout(this.holdTimer);
    this.holdTimer = null;
  }

  /**
   * The node is shutting down: the writes still queued are refused with `err` (they were
   * never sent, so they did not happen), and nothing more is sent. A batch in flight
   * still gets its answer.
   */
  close(err: Error): void {
    this.closed = true;
    this.release();
    for (const w of this.queue.splice(0)) w.reject(err);
  }

  /** The next batch: queued writes in order, skipping those that touch a key already in it. */
  private take(): Waiting[] {
    const batch: Waiting[] = [];
    const written = new Set<string>();
    const read = new Set<string>();
    let bytes = 0;
    let ops = 0;
    for (let i = 0; i < this.queue.length && batch.length < this.opts.maxWrites; ) {
      const w = this.queue[i] as Waiting;
      const clash = w.writes.some((k) => written.has(k) || read.has(k)) || w.reads.some((k) => written.has(k));
      // Nested in a batch of n writes, each may hold at most maxTxnOps - n operations.
      const tooLarge = batch.length > 0 && Math.max(ops, w.ops) > this.opts.maxTxnOps - (batch.length + 1);
      if (clash || tooLarge || (batch.length > 0 && bytes + w.bytes > this.opts.maxBytes)) {
        i++;
        continue;
      }
      this.queue.splice(i, 1);
      batch.push(w);
      bytes += w.bytes;
      ops = Math.max(ops, w.ops);
      for (const k of w.writes) written.add(k);
      for (const k of w.reads) read.add(k);
    }
    return batch;
  }

  private sendBatch(batch: Waiting[]): void {
    this.inFlight++;
    this.batches++;
    this.writes += batch.length;
    const single = batch.length === 1;
    const req: RPC.ITxnRequest = single
      ? { compare: (batch[0] as Waiting).txn.compare, success: (batch[0] as Waiting).txn.success, failure: [] }
      : { compare: [], success: batch.map((w) => ({ request_txn: { compare: w.txn.compare, success: w.txn.success, failure: [] } })), failure: [] };
    this.opts
      .send(req)
      .then(
        (res) => {
          const revision = Number(res.header.revision);
          batch.forEach((w, i) => w.resolve({ succeeded: single ? res.succeeded : Boolean(res.responses[i]?.response_txn?.succeeded), revision }));
          this.hold(batch.length);
        },
        (err: unknown) => {
          for (const w of batch) w.reject(err);
          if (this.opts.unreachable?.(err)) for (const w of this.queue.splice(0)) w.reject(err);
        },
      )
      .finally(() => {
        this.inFlight--;
        this.pump();
      });
  }
}
