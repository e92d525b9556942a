// Shared pieces of the storage tests: temporary directories, entries, a capturing logger
// and a registry driven through real commands.
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { DEFAULT_LIMITS, type Instance } from '@switchboard/protocol';
import { registerStorageCommands } from '../../src/cli/storage-cmd.js';
import { ManualClock } from '../../src/core/clock.js';
import type { Entry } from '../../src/core/entry.js';
import { Registry } from '../../src/core/registry.js';
import { FileStorage, type FileStorageOptions } from '../../src/storage/file-storage.js';
import { FILE_HEADER_BYTES } from '../../src/storage/file-header.js';
import { decodeFrame } from '../../src/storage/record.js';
import type { StorageLogger } from '../../src/storage/logger.js';

export function tempDir(prefix: string): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `sb-${prefix}-`));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface LogLine {
  level: 'info' | 'warn';
  obj: Record<string, unknown>;
  msg: string;
}

export function captureLogger(): StorageLogger & { lines: LogLine[] } {
  const lines: LogLine[] = [];
  return {
    lines,
    info: (obj, msg) => void lines.push({ level: 'info', obj: obj as Record<string, unknown>, msg }),
    warn: (obj, msg) => void lines.push({ level: 'warn', obj: obj as Record<string, unknown>, msg }),
  };
}

export function instance(id: string, revision: number, service = 'web'): Instance {
  return {
    id, service, namespace: 'default', address: '10.0.0.1', port: 8080, protocol: 'http', zone: null, version: null,
    tags: [], metadata: {}, weight: 100, status: 'up', health: 'passing', checks: [], leaseId: null,
    createRevision: revision, modRevision: revision,
  };
}

/** A registration entry at `revision`, padded so that records have some size. */
export function putEntry(revision: number, id = `i${revision}`): Entry {
  const inst = instance(id, revision);
  inst.metadata = { note: 'x'.repeat(64) };
  return { revision, changes: [{ op: 'put', instance: inst, specs: [] }] };
}

let epochs = 0;
export const freshEpoch = (): string => `e${process.pid}x${++epochs}`;

export function storage(dir: string, opts: Partial<FileStorageOptions> = {}): FileStorage {
  return new FileStorage({ dataDir: dir, logger: captureLogger(), ...opts });
}

/** Appends entries one at a time, so that each is its own write (its own batch). */
export async function appendEach(s: FileStorage, entries: Entry[]): Promise<void> {
  for (const e of entries) await s.append(e);
}

export function entries(from: number, to: number): Entry[] {
  const out: Entry[] = [];
  for (let r = from; r <= to; r++) out.push(putEntry(r));
  return out;
}

/** A registry whose commands the test drives, with every outcome appended to storage. */
export function registry(epoch: string): { reg: Registry; clock: ManualClock } {
  const clock = new ManualClock(1_000);
  return { reg: new Registry({ epoch, limits: DEFAULT_LIMITS, clock }), clock };
}

/** Rebuilds a registry from what storage recovered, as the standalone engine does. */
export function rebuild(rec: { epoch: string; snapshot: Parameters<typeof Registry.fromSnapshot>[0] | null; entries: Entry[]; revisionFloor?: number }): Registry {
  const base = { limits: DEFAULT_LIMITS, clock: new ManualClock(1_000) };
  const reg = rec.snapshot ? Registry.fromSnapshot(rec.snapshot, base) : new Registry({ ...base, epoch: rec.epoch });
  for (const e of rec.entries) reg.apply(e);
  reg.raiseRevision(rec.revisionFloor ?? 0);
  return reg;
}

/** Runs `switchboard storage ARGS` in-process; returns the exit code and what it printed. */
export async function storageCli(args: string[]): Promise<{ code: number | undefined; stdout: string; stderr: string }> {
  let code: number | undefined;
  let stdout = '';
  let stderr = '';
  const program = new Command('switchboard').exitOverride();
  registerStorageCommands(program, (c) => (code = c), { out: (s) => (stdout += s + '\n'), err: (s) => (stderr += s + '\n') });
  await program.parseAsync(['storage', ...args], { from: 'user' });
  return { code, stdout, stderr };
}

/** Start offsets of the frames in a segment file, and the file's size. */
export function frameOffsets(path: string): { offsets: number[]; size: number } {
  const buf = readFileSync(path);
  const offsets: number[] = [];
  for (let at = FILE_HEADER_BYTES; at < buf.length; ) {
    const d = decodeFrame(buf, at);
    if (d.kind !== 'frame') break;
    offsets.push(at);
    at = d.frame.end;
  }
  return { offsets, size: buf.length };
}

export function segmentFiles(dir: string): string[] {
  return readdirSync(dir).filter((n) => /^wal-\d+\.log$/.test(n)).sort();
}

/** Flips one byte of a file in place. */
export function flipByte(path: string, offset: number): void {
  const buf = readFileSync(path);
  buf[offset] = (buf[offset] as number) ^ 0x5a;
  writeFileSync(path, buf);
}
