// Unit tests of tlsFailureOf: Node's codes of TLS failures, found on an error, its causes
// or the errors of an AggregateError, sorted by what fixes them; other failures are not.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tlsFailureOf } from '../src/index.js';

const withCode = (code: string, message = code): Error => Object.assign(new Error(message), { code });

test('certificate failures are told apart by what fixes them, wherever the error wraps them', () => {
  assert.deepEqual(tlsFailureOf(withCode('SELF_SIGNED_CERT_IN_CHAIN')), { kind: 'untrusted', code: 'SELF_SIGNED_CERT_IN_CHAIN' });
  assert.deepEqual(tlsFailureOf(withCode('UNABLE_TO_VERIFY_LEAF_SIGNATURE')), { kind: 'untrusted', code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' });
  assert.deepEqual(tlsFailureOf(withCode('DEPTH_ZERO_SELF_SIGNED_CERT')), { kind: 'untrusted', code: 'DEPTH_ZERO_SELF_SIGNED_CERT' });
  assert.deepEqual(tlsFailureOf(withCode('ERR_TLS_CERT_ALTNAME_INVALID')), { kind: 'name', code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
  assert.deepEqual(tlsFailureOf(withCode('CERT_HAS_EXPIRED')), { kind: 'time', code: 'CERT_HAS_EXPIRED' });
  assert.deepEqual(tlsFailureOf(new Error('write EPROTO 0080:error:0A00010B:SSL routines:ssl3_get_record:wrong version number')), { kind: 'plain', code: 'ERR_SSL_WRONG_VERSION_NUMBER' });
  // fetch: TypeError('fetch failed') with the TLS error as its cause; happy eyeballs: an AggregateError.
  assert.deepEqual(tlsFailureOf(new TypeError('fetch failed', { cause: withCode('CERT_NOT_YET_VALID') })), { kind: 'time', code: 'CERT_NOT_YET_VALID' });
  assert.deepEqual(tlsFailureOf(new AggregateError([withCode('ECONNREFUSED'), withCode('CERT_UNTRUSTED')])), { kind: 'untrusted', code: 'CERT_UNTRUSTED' });
});

test('other failures are not TLS failures', () => {
  for (const err of [withCode('ECONNREFUSED'), withCode('ECONNRESET'), withCode('UND_ERR_CONNECT_TIMEOUT'), new Error('socket hang up'), null, undefined, 'SELF_SIGNED_CERT_IN_CHAIN', { code: 'toString' }]) {
    assert.equal(tlsFailureOf(err), undefined, String(err));
  }
  // A cycle of causes ends.
  const a = withCode('EPIPE') as Error & { cause?: unknown };
  a.cause = a;
  assert.equal(tlsFailureOf(a), undefined);
});
