// Goal: the frame and file-header codecs round-trip, and every kind of damage (cut short,
// flipped payload bit, flipped length bit, wrong magic) is detected rather than misread.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import { crc32, crc32Portable } from '../../src/storage/checksum.js';
import { FILE_HEADER_BYTES, decodeFileHeader, encodeFileHeader } from '../../src/storage/file-header.js';
import { BATCH_END, FRAME_HEADER_BYTES, decodeFrame, encodeFrame } from '../../src/storage/record.js';

test('CRC-32 matches the standard check value, natively and in the portable fallback', () => {
  const data = Buffer.from('123456789');
  assert.equal(crc32Portable(data), 0xcbf43926);
  assert.equal(crc32(data), 0xcbf43926);
  const a = Buffer.from('hello, '), b = Buffer.from('world');
  assert.equal(crc32Portable(b, crc32Portable(a)), crc32(Buffer.concat([a, b])), 'chaining equals one pass');
  const z = (zlib as unknown as { crc32?: (d: Uint8Array) => number }).crc32;
  if (z) assert.equal(crc32Portable(Buffer.from('switchboard')), z(Buffer.from('switchboard')));
});

test('a frame round-trips with its sequence number, flags and payload', () => {
  const payload = Buffer.from(JSON.stringify({ revision: 7, changes: [] }));
  const lsn = 2 ** 40 + 5; // above 32 bits
  const f = encodeFrame(lsn, BATCH_END, payload);
  assert.equal(f.length, FRAME_HEADER_BYTES + payload.length);
  const d = decodeFrame(f, 0);
  assert.equal(d.kind, 'frame');
  if (d.kind !== 'frame') return;
  assert.equal(d.frame.seq, lsn);
  assert.equal(d.frame.flags, BATCH_END);
  assert.equal(d.frame.end, f.length);
  assert.deepEqual(d.frame.payload, payload);
});

test('damage is detected: cut short, flipped payload byte, flipped length, flipped flags', () => {
  const f = encodeFrame(1, 0, Buffer.from('{"revision":1,"changes":[]}'));
  assert.equal(decodeFrame(f.subarray(0, 10), 0).kind, 'short');
  assert.equal(decodeFrame(f.subarray(0, f.length - 1), 0).kind, 'short');
  for (const at of [FRAME_HEADER_BYTES + 3, 0, 16, 9]) {
    const bad = Buffer.from(f);
    bad[at] = (bad[at] as number) ^ 0x01;
    const d = decodeFrame(bad, 0);
    assert.notEqual(d.kind, 'frame', `flip at byte ${at} must be caught`);
  }
});

test('a file header round-trips and is refused when torn or of the wrong kind', () => {
  const h = encodeFileHeader({ kind: 'segment', seq: 12345, epoch: 'abcdef0123456789' });
  assert.equal(h.length, FILE_HEADER_BYTES);
  assert.deepEqual(decodeFileHeader(h, 'segment'), { kind: 'segment', seq: 12345, epoch: 'abcdef0123456789' });
  const torn = decodeFileHeader(h.subarray(0, 20), 'segment');
  assert.ok('error' in torn && torn.torn);
  const wrong = decodeFileHeader(h, 'snapshot');
  assert.ok('error' in wrong && !wrong.torn && /magic/.test(wrong.error));
  const flipped = Buffer.from(h);
  flipped[30] = (flipped[30] as number) ^ 0xff;
  assert.ok('error' in decodeFileHeader(flipped, 'segment'));
});
