// Goal: restart time stays bounded for a long log. 200,000 records written directly
// through FileStorage (no snapshot) reopen within REPLAY_BUDGET_MS; on the reference
// machine (2 cores) this takes about REPLAY_TYPICAL_MS, so the budget leaves a wide margin
// for a loaded CI machine.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { freshEpoch, putEntry, storage, tempDir } from './fixtures.js';

const RECORDS = 200_000;
const REPLAY_BUDGET_MS = 30_000;
const WRITE_WINDOW = 2_000; // appends in flight at once while filling the log

test(`${RECORDS} records reopen within ${REPLAY_BUDGET_MS} ms`, { timeout: 120_000 }, async () => {
  const t = tempDir('replay');
  try {
    const s = storage(t.dir, { snapshotEveryRecords: 10 * RECORDS });
    await s.open(freshEpoch);
    for (let r = 1; r <= RECORDS; r += WRITE_WINDOW) {
      const acks: Promise<void>[] = [];
      for (let k = r; k < r + WRITE_WINDOW && k <= RECORDS; k++) acks.push(s.append(putEntry(k)));
      await Promise.all(acks);
    }
    await s.close();

    const started = performance.now();
    const s2 = storage(t.dir);
    const rec = await s2.open(freshEpoch);
    const ms = performance.now() - started;
    await s2.close();
    assert.equal(rec.entries.length, RECORDS);
    assert.equal(rec.entries[RECORDS - 1]!.revision, RECORDS);
    assert.ok(ms < REPLAY_BUDGET_MS, `reopening ${RECORDS} records took ${Math.round(ms)} ms`);
    process.stdout.write(`# replay of ${RECORDS} records: ${Math.round(ms)} ms\n`);
  } finally {
    t.remove();
  }
});
