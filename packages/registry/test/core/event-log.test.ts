// Goal: the retained log returns exactly the events at or after a revision, and answers
// 'reset' (never a silent gap) once any of them has been dropped.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { WatchEvent } from '@switchboard/protocol';
import { EventLog } from '../../src/core/event-log.js';

const ev = (revision: number, id = 'x'): WatchEvent => ({ epoch: 'e', revision, type: 'put', service: 's', namespace: 'default', instance: { id } as WatchEvent['instance'] });

test('since() returns events with revision >= N in order', () => {
  const log = new EventLog(10);
  for (let r = 1; r <= 5; r++) log.append(ev(r));
  assert.deepEqual((log.since(3) as WatchEvent[]).map((e) => e.revision), [3, 4, 5]);
  assert.deepEqual(log.since(6), []);
  assert.deepEqual((log.since(1) as WatchEvent[]).length, 5);
});

test('positions older than the retained log get reset, including a half-dropped revision', () => {
  const log = new EventLog(3);
  log.append(ev(1));
  log.append(ev(2, 'a'));
  log.append(ev(2, 'b'));
  log.append(ev(3)); // drops revision 1
  assert.equal(log.since(1), 'reset');
  assert.deepEqual((log.since(2) as WatchEvent[]).map((e) => e.instance.id), ['a', 'b', 'x']);
  log.append(ev(4)); // drops half of revision 2
  assert.equal(log.compactedRevision(), 2);
  assert.equal(log.since(2), 'reset');
  assert.deepEqual((log.since(3) as WatchEvent[]).map((e) => e.revision), [3, 4]);
});

test('a log that starts at a base revision cannot replay what came before it', () => {
  const log = new EventLog(5, 100);
  assert.equal(log.since(100), 'reset');
  assert.deepEqual(log.since(101), []);
});
