// Goal: the ap cluster name is a configuration key like the others (flag, environment,
// file), defaults to `switchboard`, and a bad value is refused naming where it came from.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, resolveConfig } from '../../src/cli/config.js';

test('the cluster name: default, from any source, and refused when malformed', () => {
  assert.equal(resolveConfig([]).cluster, 'switchboard');
  assert.equal(resolveConfig([{ name: 'flag', values: { cluster: 'blue' } }, { name: 'env', values: { cluster: 'green' } }]).cluster, 'blue', 'a flag wins over the environment');
  assert.equal(resolveConfig([{ name: 'env', values: { cluster: 'green' } }]).cluster, 'green');
  assert.throws(
    () => resolveConfig([{ name: 'env', values: { cluster: 'no spaces' } }]),
    (err: unknown) => err instanceof ConfigError && err.field === 'SWITCHBOARD_CLUSTER' && /1-64 characters/.test(err.message),
  );
});
