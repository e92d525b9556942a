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

const probe = mountTmpfs('64k');
if (probe) {
  execFileSync('umount', [probe]);
  rmSync(probe, { recursive: true, force: true });
}

test('a disk that fills up: the write that does not fit is refused, the agent stops, and restarted it holds exactly what it acknowledged', { skip: probe === null && 'mounting a tmpfs needs root' }, async (t) => {
  const dir = mountTmpfs('1m') as string;
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
    assert.notEqual(code, 'still running', 'the agent stops');
    assert.notEqual(code, 0);
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
    try {
      execFileSync('umount', [dir]);
    } catch {
      execFileSync('umount', ['-l', dir]);
    }
    rmSync(dir, { recursive: true, force: true });
  }
});
