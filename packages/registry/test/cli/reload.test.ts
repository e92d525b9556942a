// Goal: SIGHUP reloads (RunningAgent.reload) run one at a time. Signals that come while
// one runs share a single further run, which reads the files as they are when it starts;
// none runs once the node is stopping.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { startAgent } from '../../src/cli/agent.js';
import { resolveConfig } from '../../src/cli/config.js';

const FIRST = 'write-token-first-0123456789abcdef01234';
const SECOND = 'write-token-second-0123456789abcdef0123';

test('reloads asked for while one runs share one more run, which reads the file as it is then; none after stop', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sb-reload-'));
  const file = join(dir, 'tokens');
  writeFileSync(file, `write ${FIRST}\n`, { mode: 0o600 });
  const lines: string[] = [];
  const logger = pino({ level: 'info' }, new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) }));
  const agent = await startAgent(resolveConfig([{ name: 'flag', values: { dev: true, httpAddr: '127.0.0.1:0', apiTokensFile: file } }]), logger);
  const reloads = (): number => lines.filter((l) => l.includes('API tokens read again')).length;
  const status = async (token: string): Promise<number> => (await fetch(`${agent.url}/v1/services`, { headers: { authorization: `Bearer ${token}` } })).status;
  try {
    assert.equal(await status(FIRST), 200);
    const first = agent.reload(); // runs now, with the file as it is
    writeFileSync(file, `write ${SECOND}\n`, { mode: 0o600 });
    const more = [agent.reload(), agent.reload(), agent.reload(), agent.reload()];
    await Promise.all([first, ...more]);
    assert.equal(reloads(), 2, 'five signals, two reloads: the one running and one after it');
    assert.equal(await status(SECOND), 200, 'the last reload read the file as it was after the signals');
    assert.equal(await status(FIRST), 401);
  } finally {
    await agent.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  await agent.reload();
  assert.equal(reloads(), 2, 'no reload once the node is stopping');
});
