// A child process for crash.test.ts: appends registrations through FileStorage with
// small snapshot and segment limits (so snapshots, rotation and trimming happen all the
// time), prints "ack <revision>" once each append is durable, and runs until it is killed.
// Usage: node crash-writer.js DATA_DIR START_REVISION
import { DEFAULT_LIMITS } from '@switchboard/protocol';
import { Registry } from '../../src/core/registry.js';
import { FileStorage } from '../../src/storage/file-storage.js';
import { silentLogger } from '../../src/storage/logger.js';

const [dir, startArg] = process.argv.slice(2);
const CONCURRENT_APPENDS = 16;

async function main(): Promise<void> {
  const storage = new FileStorage({ dataDir: dir as string, logger: silentLogger, snapshotEveryRecords: 150, segmentMaxBytes: 16 * 1024 });
  const rec = await storage.open(() => `crash${process.pid}`);
  const base = { limits: { ...DEFAULT_LIMITS, maxInstancesPerNode: 1_000_000 }, clock: { now: () => performance.now() } };
  const reg = rec.snapshot ? Registry.fromSnapshot(rec.snapshot, base) : new Registry({ ...base, epoch: rec.epoch });
  for (const e of rec.entries) reg.apply(e);
  process.stdout.write(`ready ${reg.revision}\n`);
  let n = Number(startArg);
  const input = { address: '10.0.0.1', port: 8080, leaseId: null, zone: null, version: null, tags: [], metadata: {}, weight: 100, protocol: 'http' as const, checks: [] };
  let snapshotting = false;
  const one = async (): Promise<void> => {
    const out = reg.register({ namespace: 'default', service: `s${n % 5}`, id: `w${n++}`, input });
    await storage.append(out.entry!);
    process.stdout.write(`ack ${out.revision}\n`);
    if (!snapshotting && storage.snapshotDue()) {
      snapshotting = true;
      storage.writeSnapshot(reg.snapshot()).finally(() => (snapshotting = false));
    }
  };
  const loop = async (): Promise<void> => {
    for (;;) await one();
  };
  await Promise.all(Array.from({ length: CONCURRENT_APPENDS }, loop));
}

main().catch((err) => {
  process.stderr.write(`crash-writer: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
