/**
 * The figures of the watch fan-out workload from its parts: one writer part (the send time
 * of each change, the writer's acknowledgements) and the receipts of every watcher, from
 * one generator process or several (loadgen.mjs, watch()). Times are wall-clock ms of
 * this machine, the same clock in every process.
 */
import { Histogram } from '../../lib/hist.mjs';
import { histFromWire } from './histwire.mjs';
import { mergeErrors } from '../../lib/harness.mjs';

export function watchFigures(parts) {
  const writer = parts.find((p) => p.part === 'writer');
  if (!writer) throw new Error('the watch workload returned no writer part');
  const { sentAt, measuredFrom } = writer;
  const latency = new Histogram();
  const first = new Histogram();
  const spread = new Histogram();
  const firstAt = [];
  const lastAt = [];
  let watchers = 0;
  let seen = 0;
  let received = 0;
  let duplicates = 0;
  for (const p of parts) {
    watchers += p.watchers;
    received += p.received;
    duplicates += p.duplicates;
    for (const row of p.receipts) {
      for (let i = measuredFrom; i < sentAt.length; i++) {
        const off = row[i];
        if (off === null || off === undefined) continue;
        const at = p.receiptOrigin + off;
        seen++;
        latency.recordMs(at - sentAt[i]);
        if (firstAt[i] === undefined || at < firstAt[i]) firstAt[i] = at;
        if (lastAt[i] === undefined || at > lastAt[i]) lastAt[i] = at;
      }
    }
  }
  for (let i = measuredFrom; i < sentAt.length; i++) {
    if (firstAt[i] === undefined) continue;
    first.recordMs(firstAt[i] - sentAt[i]);
    spread.recordMs(lastAt[i] - firstAt[i]);
  }
  const measuredChanges = sentAt.length - measuredFrom;
  const expected = measuredChanges * watchers;
  const streamErrors = mergeErrors(parts.map((p) => p.streamErrors));
  return {
    watchers,
    generators: parts.length,
    watchRate: writer.watchRate,
    warmupMs: writer.warmupMs,
    durationMs: writer.durationMs,
    connectMs: Math.max(...parts.map((p) => p.connectMs)),
    changes: sentAt.length,
    changesAcknowledged: writer.changesAcknowledged,
    measuredChanges,
    writerBehind: writer.writerBehind,
    deliveriesExpected: expected,
    deliveriesSeen: seen,
    /** Changes a watcher never saw (ZooKeeper coalesces changes between two listings). */
    missed: expected - seen,
    duplicates,
    deliveriesPerSec: (received * 1000) / writer.writeMs,
    ops: seen,
    ratePerSec: (seen * 1000) / writer.durationMs,
    latency: latency.summary(),
    firstWatcher: first.summary(),
    spreadFirstToLast: spread.summary(),
    writeAck: histFromWire(writer.writeAckWire).summary(),
    drainMs: Math.max(...parts.map((p) => p.drainMs)),
    writeErrors: writer.writeErrors,
    streamErrors,
    errors: { total: writer.writeErrors.total + streamErrors.total },
  };
}
