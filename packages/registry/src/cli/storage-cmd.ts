/**
 * `switchboard storage inspect|repair --data-dir DIR`: look at a standalone node's data
 * directory, and make a damaged one startable again (docs/storage.md). Exit codes: 0
 * success (inspect: the directory is usable as it is), 1 damage found or the repair
 * failed, 2 bad usage.
 */
import { stat } from 'node:fs/promises';
import type { Command } from 'commander';
import { inspectDataDir, type InspectReport } from '../storage/inspect.js';
import { silentLogger } from '../storage/logger.js';
import { repairDataDir, type RepairReport } from '../storage/repair.js';
import { repairCommand } from '../storage/errors.js';

interface Flags {
  dataDir?: string;
  json?: boolean;
}

/** Where the commands print; tests pass their own. */
export interface StorageCmdOutput {
  out(line: string): void;
  err(line: string): void;
}

const stdio: StorageCmdOutput = {
  out: (s) => void process.stdout.write(s + '\n'),
  err: (s) => void process.stderr.write(s + '\n'),
};

function dataDirOf(flags: Flags): string {
  return flags.dataDir ?? process.env.SWITCHBOARD_DATA_DIR ?? './data';
}

async function isDirectory(dir: string): Promise<boolean> {
  try {
    return (await stat(dir)).isDirectory();
  } catch {
    return false;
  }
}

function printInspect(r: InspectReport, { out }: StorageCmdOutput): void {
  out(`data directory ${r.dir}`);
  out(`  epoch     ${r.epoch ?? '(none: empty directory)'}`);
  out(`  lock      ${r.lock === null ? 'free' : `pid ${r.lock.pid ?? '?'} (${r.lock.running ? 'running' : 'not running: stale'})`}`);
  out(`  revision  ${r.revision} at the next start${r.state === 'damaged' ? ', after a repair' : ''} (last LSN ${r.lastLsn})`);
  out(`snapshots (${r.snapshots.length})`);
  for (const s of r.snapshots) {
    const what = s.damage ? `DAMAGED: ${s.damage}` : `revision ${s.revision}, ${s.instances} instances, ${s.leases} leases, ${s.bytes} bytes`;
    out(`  ${s.file}  LSN ${s.lsn}  ${what}${s.file === r.recoverFrom ? '  (recovery starts here)' : ''}`);
  }
  out(`segments (${r.segments.length}); ${r.replayRecords} records to replay`);
  for (const s of r.segments) {
    const what = s.covered ? 'covered by a snapshot (kept as a fallback)' : s.records === null ? 'not read (after damage)' : `LSN ${s.firstLsn}-${s.lastLsn ?? '(none)'}, ${s.records} records, ${s.bytes} bytes`;
    out(`  ${s.file}  ${what}${s.damage ? `  ${s.damage.torn ? 'TORN TAIL' : 'DAMAGED'} at byte ${s.damage.offset}: ${s.damage.reason}` : ''}`);
  }
  if (r.state === 'ok') out('state: ok');
  else if (r.state === 'torn-tail') out(`state: torn tail (${r.damage?.bytes} bytes of an unacknowledged write); the agent cuts it off when it starts`);
  else out(`state: DAMAGED at ${r.damage?.file} byte ${r.damage?.offset}: ${r.damage?.reason}\n  to keep everything before it: ${repairCommand(r.dir)}`);
}

function printRepair(r: RepairReport, { out }: StorageCmdOutput): void {
  if (r.movedTo === null) {
    out(`data directory ${r.dir}: no damage found, nothing moved`);
    return;
  }
  for (const d of r.damage) out(`damage: ${d.file} at byte ${d.offset}: ${d.reason}`);
  if (r.cut) out(`cut ${r.cut.file} at byte ${r.cut.offset} (${r.cut.bytes} bytes saved aside)`);
  out(`moved aside into ${r.movedTo}: ${r.moved.join(', ')}`);
  out(`kept: ${r.snapshot ? `snapshot ${r.snapshot} and ` : ''}${r.keptRecords} log records up to LSN ${r.lastLsn}; the agent can start again`);
  if (r.revisionFloor !== null) out(`revisions continue from ${r.revisionFloor}: none that the moved records may have had is given to another change (clients watching resume with a reset)`);
}

async function withDataDir(flags: Flags, exit: (code: number) => void, { err }: StorageCmdOutput, run: (dir: string) => Promise<number>): Promise<void> {
  const dir = dataDirOf(flags);
  if (!(await isDirectory(dir))) {
    err(`switchboard storage: ${dir} is not a directory (give the agent's --data-dir)`);
    return exit(1);
  }
  try {
    exit(await run(dir));
  } catch (e) {
    err(`switchboard storage: ${e instanceof Error ? e.message : String(e)}`);
    exit(1);
  }
}

export function registerStorageCommands(program: Command, exit: (code: number) => void, io: StorageCmdOutput = stdio): void {
  const storage = program.command('storage').description("inspect or repair a standalone node's data directory");
  storage
    .command('inspect')
    .description('show segments, record counts, snapshots, epoch and any damage (read-only)')
    .option('--data-dir <dir>', 'the data directory (default $SWITCHBOARD_DATA_DIR or ./data)')
    .option('--json', 'print the report as JSON')
    .action((flags: Flags) =>
      withDataDir(flags, exit, io, async (dir) => {
        const r = await inspectDataDir(dir);
        if (flags.json) io.out(JSON.stringify(r, null, 2));
        else printInspect(r, io);
        return r.state === 'damaged' ? 1 : 0;
      }),
    );
  storage
    .command('repair')
    .description('keep everything before the first damage, move the rest into DIR/damaged-<time>/ (stop the agent first)')
    .option('--data-dir <dir>', 'the data directory (default $SWITCHBOARD_DATA_DIR or ./data)')
    .option('--json', 'print the report as JSON')
    .action((flags: Flags) =>
      withDataDir(flags, exit, io, async (dir) => {
        const r = await repairDataDir(dir, silentLogger);
        if (flags.json) io.out(JSON.stringify(r, null, 2));
        else printRepair(r, io);
        return 0;
      }),
    );
}
