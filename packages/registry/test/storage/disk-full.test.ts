// Goal: a disk that fills up under a running agent loses nothing it acknowledged and
// corrupts nothing. The write that cannot be made durable is refused (never a 200), the
// agent stops (a log write failed: it cannot keep its promises), and started again with
// room on the disk it holds every registration it acknowledged and no other. A real
// filesystem (a small tmpfs the test mounts and removes itself), a real agent process.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_LIMITS, SwitchboardError } from '@switchboard/protocol';
import { StandaloneEngine } from '../../src/engines/standalone.js';
import { MemoryStorage } from '../../src/storage/storage.js';
import { call } from '../helpers.js';
import { spawnAgent, type AgentProcess } from '../integration/process.js';

/** Mounts a tmpfs of `size` at a new directory; null when this machine does not let the test (not root, no mount). */
function mountTmpfs(size: string): string | null {
  const dir = mkdtempSync(join(tmpdir(), 'sb-disk-full-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir], { stdio: 'ignore' });
    return dir;
  } catch {
    rmSync(dir, { recursive: true, force: true });
    return null;
  }
}

/** Unmounts and removes a directory mountTmpfs made, whatever state it is in; never throws. */
function unmount(dir: string): void {
  for (const args of [[dir], ['-l', dir]]) {
    try {
      execFileSync('umount', args, { stdio: 'ignore' });
      break;
    } catch {
      /* not mounted, or busy: try the lazy unmount, then leave it */
    }
  }
  rmSync(dir, { recursive: true, force: true });
}

test('a disk that fills up: the write that does not fit is refused, the agent stops, and restarted it holds exactly what it acknowledged', async (t) => {
  const dir = mountTmpfs('1m');
  if (dir === null) return t.skip('mounting a tmpfs needs root');
  // A test process ended from outside still leaves no mount behind.
  const atExit = (): void => unmount(dir);
  process.once('exit', atExit);
  const agents: AgentProcess[] = [];
  try {
    const dataDir = join(dir, 'data');
    const a = await spawnAgent(['--data-dir', dataDir]);
    agents.push(a);
    const acked: string[] = [];
    let refused: { id: string; status: number; code: string; detail: string } | null = null;
    // About 8 KiB per registration: the 1 MiB disk fills after a hundred or so.
    for (let i = 0; i < 1_000 && refused === null; i++) {
      const id = `i-${String(i).padStart(4, '0')}`;
      const r = await call(a.url, 'PUT', `/v1/services/full/instances/${id}`, { address: '10.0.0.1', port: 1000 + (i % 50_000), metadata: { pad: 'x'.repeat(8_000) } }).catch((err: Error) => ({ status: 0, body: { code: err.message } }));
      if (r.status === 200) acked.push(id);
      else refused = { id, status: r.status, code: (r.body as { code?: string }).code ?? '', detail: (r.body as { detail?: string }).detail ?? '' };
    }
    assert.ok(refused, 'the disk filled up');
    assert.ok(acked.length >= 50, `${acked.length} registrations fitted before it did`);
    assert.match(refused.detail, /ENOSPC/);
    assert.doesNotMatch(refused.detail, new RegExp(dir), 'no file path of the node');
    assert.deepEqual([refused.status, refused.code], [503, 'STORE_UNAVAILABLE'], `the write that did not fit is answered with an error another node can take, not acknowledged: ${JSON.stringify(refused)}`);
    const code = await Promise.race([a.exited, new Promise((r) => setTimeout(() => r('still running'), 10_000))]);
    assert.equal(code, 70, 'the agent stops with the code of a node that cannot keep its promises');
    assert.match(a.output(), /cannot keep its promises/);
    t.diagnostic(`${acked.length} registrations acknowledged; then ${JSON.stringify(refused)}; the agent exited with ${String(code)}`);

    // Room again: everything acknowledged is there, the refused write is not, and the log reads back.
    execFileSync('mount', ['-o', 'remount,size=16m', dir]);
    const b = await spawnAgent(['--data-dir', dataDir]);
    agents.push(b);
    const listed = (await call(b.url, 'GET', '/v1/services/full')).body.instances as { id: string; metadata: { pad: string } }[];
    assert.deepEqual(listed.map((x) => x.id), acked, 'exactly the acknowledged registrations');
    assert.ok(listed.every((x) => x.metadata.pad.length === 8_000));
    // And it takes writes again.
    assert.equal((await call(b.url, 'PUT', `/v1/services/full/instances/${refused.id}`, { address: '10.0.0.1', port: 1 })).status, 200);
  } finally {
    for (const x of agents) x.child.kill('SIGKILL');
    await Promise.all(agents.map((x) => x.exited));
    process.off('exit', atExit);
    unmount(dir);
  }
});

test('a log that fails: the write is answered 503 STORE_UNAVAILABLE naming the system error, not a path, and so is a write that changes nothing after it', async () => {
  class FailingStorage extends MemoryStorage {
    failing = false;
    override append(): Promise<void> {
      if (!this.failing) return super.append();
      const cause = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
      return Promise.reject(new Error('write-ahead log /var/lib/switchboard/wal-1: write failed: ENOSPC: no space left on device, write', { cause }));
    }
  }
  const storage = new FailingStorage();
  const fatal: unknown[] = [];
  const engine = await StandaloneEngine.open({ nodeId: 't', storage, limits: DEFAULT_LIMITS, clock: { now: () => performance.now() }, onFatal: (err) => fatal.push(err) });
  try {
    const input = { address: '10.0.0.1', port: 1, leaseId: null, zone: null, version: null, tags: [], metadata: {}, weight: 100, protocol: 'http' as const, checks: [] };
    await engine.register({ namespace: 'default', service: 's', id: 'kept', input });
    storage.failing = true;
    const refused = (err: unknown): boolean =>
      err instanceof SwitchboardError && err.code === 'STORE_UNAVAILABLE' && err.status === 503 && /\(ENOSPC\)/.test(err.message) && !err.message.includes('/var/lib') && (err.toProblem().retryAfterSec ?? 0) > 0;
    await assert.rejects(engine.register({ namespace: 'default', service: 's', id: 'new', input }), refused);
    // An identical registration changes nothing, but waits for the writes before it: refused alike.
    await assert.rejects(engine.register({ namespace: 'default', service: 's', id: 'kept', input }), refused);
    assert.equal(fatal.length, 1, 'the engine was told the log failed');
  } finally {
    await engine.close().catch(() => undefined);
  }
});

test('a disk that stops answering: client writes are refused with 503 STORE_UNAVAILABLE once MAX_PENDING_WRITES wait, and taken again when it answers', async () => {
  const MAX_PENDING_WRITES = 500; // (100,000 by default)
  // A log whose appends wait until the test lets them through.
  let release: () => void = () => undefined;
  const gate = new Promise<void>((r) => (release = r));
  class StalledStorage extends MemoryStorage {
    override append(): Promise<void> {
      return gate;
    }
  }
  const engine = await StandaloneEngine.open({ nodeId: 't', storage: new StalledStorage(), maxPendingWrites: MAX_PENDING_WRITES, limits: DEFAULT_LIMITS, clock: { now: () => performance.now() }, activeChecks: false });
  try {
    const item = (i: number) => ({ namespace: 'default', service: 'stall', id: `i${i}`, input: { address: '10.0.0.1', port: 80, protocol: 'http', zone: null, version: null, tags: [], metadata: {}, weight: 100, leaseId: null, checks: [] } });
    const waiting: Promise<number>[] = [];
    for (let i = 0; i < MAX_PENDING_WRITES; i++) waiting.push(engine.register(item(i) as never));
    const refused = await engine.register(item(MAX_PENDING_WRITES) as never).then(() => null, (err: unknown) => err);
    assert.ok(refused instanceof SwitchboardError, 'refused');
    assert.equal(refused.code, 'STORE_UNAVAILABLE');
    assert.equal(refused.limit, 'MAX_PENDING_WRITES');
    assert.equal(refused.retryAfterSec, 1);
    assert.equal(engine.registry.instance('default', 'stall', `i${MAX_PENDING_WRITES}`), undefined, 'a refused write is not applied');
    release();
    await Promise.all(waiting);
    assert.ok((await engine.register(item(MAX_PENDING_WRITES) as never)) > 0, 'taken once the log caught up');
  } finally {
    release();
    await engine.close();
  }
});
