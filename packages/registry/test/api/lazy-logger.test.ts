// Goal: the per-request logger is made only when a request logs, and what it logs is what
// a pino child would have logged (level, request id, fields, message).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { lazyChildLogger } from '../../src/api/lazy-logger.js';

test('a request logger is made on the first log call and logs with the request id', () => {
  const lines: Record<string, unknown>[] = [];
  const parent = pino({ level: 'info' }, { write: (s: string) => lines.push(JSON.parse(s)) });
  let children = 0;
  const counting = Object.create(parent, { child: { value: (...a: Parameters<typeof parent.child>) => (children++, parent.child(...a)) } });
  const quiet = lazyChildLogger.call(undefined as never, counting, { reqId: 'req-1' }, {}, undefined as never);
  assert.equal(quiet.level, 'info');
  assert.equal(children, 0, 'no child for a request that does not log');
  const loud = lazyChildLogger.call(undefined as never, counting, { reqId: 'req-2' }, {}, undefined as never);
  loud.error({ code: 'X' }, 'request failed');
  loud.info('second');
  assert.equal(children, 1, 'one child, made once');
  assert.deepEqual(lines.map((l) => [l.level, l.reqId, l.msg, l.code]), [[50, 'req-2', 'request failed', 'X'], [30, 'req-2', 'second', undefined]]);
});
