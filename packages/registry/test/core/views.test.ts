// Goal: the byte form of a service answer is the UTF-8 of its text form, is encoded once
// per service revision and filter, and follows every change of the service.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_LIMITS, validateInstanceInput } from '@switchboard/protocol';
import { ManualClock } from '../../src/core/clock.js';
import { Registry } from '../../src/core/registry.js';
import { NO_FILTER, serviceAnswerBytes, serviceAnswerJson } from '../../src/core/views.js';

test('service answers as bytes: the same bytes as the text, cached per revision and filter', () => {
  const reg = new Registry({ epoch: 'e1', limits: DEFAULT_LIMITS, clock: new ManualClock(1000) });
  const put = (id: string, zone: string) => reg.register({ namespace: 'default', service: 'web', id, input: validateInstanceInput({ address: '10.0.0.1', port: 80, zone, metadata: { note: 'zoë ✓' } }, DEFAULT_LIMITS) });
  put('a', 'z1');
  put('b', 'z2');
  const answer = (q = NO_FILTER) => {
    const svc = reg.service('default', 'web');
    const rev = reg.serviceRevision('default', 'web');
    return { text: serviceAnswerJson(svc, 'web', rev, q, null, reg.epoch), bytes: serviceAnswerBytes(svc, 'web', rev, q, null, reg.epoch) };
  };
  const first = answer();
  assert.deepEqual(first.bytes, Buffer.from(first.text, 'utf8'));
  assert.equal(answer().bytes, first.bytes, 'the second request gets the cached bytes');
  const zoned = answer({ ...NO_FILTER, zone: 'z1' });
  assert.deepEqual(zoned.bytes, Buffer.from(zoned.text, 'utf8'));
  assert.equal(JSON.parse(zoned.bytes.toString('utf8')).instances.length, 1);
  put('c', 'z1');
  const after = answer();
  assert.notEqual(after.bytes, first.bytes);
  assert.equal(JSON.parse(after.bytes.toString('utf8')).instances.length, 3, 'a change is seen at once');
  assert.deepEqual(serviceAnswerBytes(undefined, 'none', 0, NO_FILTER), Buffer.from(serviceAnswerJson(undefined, 'none', 0, NO_FILTER)));
});

test('filters whose tags contain the separators get answers of their own, not a cached one of another filter', () => {
  const reg = new Registry({ epoch: 'e1', limits: DEFAULT_LIMITS, clock: new ManualClock(1000) });
  const put = (id: string, tags: string[]) => reg.register({ namespace: 'default', service: 'web', id, input: validateInstanceInput({ address: '10.0.0.1', port: 80, tags }, DEFAULT_LIMITS) });
  put('one', ['a,b']);
  put('two', ['a', 'b']);
  const ids = (tags: string[]) => {
    const svc = reg.service('default', 'web');
    const rev = reg.serviceRevision('default', 'web');
    return (JSON.parse(serviceAnswerJson(svc, 'web', rev, { ...NO_FILTER, tags }, null, reg.epoch)).instances as { id: string }[]).map((i) => i.id);
  };
  assert.deepEqual(ids(['a,b']), ['one']);
  assert.deepEqual(ids(['a', 'b']), ['two'], 'not the cached answer of tag "a,b"');
  assert.deepEqual(ids(['a,b']), ['one']);
});
