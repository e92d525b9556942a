// Goal: peer link frames survive any cut of the byte stream, and the frame size limit is
// enforced on both sides (a sender cannot build one, a receiver refuses the announcement
// before buffering the body); reconnect waits grow and stay capped.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeFrame, FrameDecoder, FrameError, FrameKind, type Frame } from '../../src/engines/ap/net/frame.js';

const MAX = 64 * 1024;

test('frames decode whatever the chunking, in order, with binary and nested values intact', () => {
  const frames: Frame[] = [
    [FrameKind.Message, { type: 'delta', items: [{ id: 'a', n: 1.5, ok: true, none: null }], blob: new Uint8Array([0, 1, 255]) }],
    [FrameKind.Ping, { seq: 7 }],
    [FrameKind.Message, { type: 'digest', text: 'é'.repeat(1000) }],
  ];
  const bytes = Buffer.concat(frames.map((f) => encodeFrame(f, MAX)));
  for (const step of [1, 3, 7, 100, bytes.length]) {
    const d = new FrameDecoder(MAX);
    const out: Frame[] = [];
    for (let i = 0; i < bytes.length; i += step) out.push(...d.push(bytes.subarray(i, i + step)));
    assert.equal(out.length, 3, `step ${step}`);
    assert.equal(d.pending, 0);
    const first = out[0]![1] as { type: string; items: unknown[]; blob: Uint8Array };
    assert.equal(first.type, 'delta');
    assert.deepEqual(first.items, [{ id: 'a', n: 1.5, ok: true, none: null }]);
    assert.deepEqual([...first.blob], [0, 1, 255]);
    assert.deepEqual(out[1], [FrameKind.Ping, { seq: 7 }]);
    assert.equal((out[2]![1] as { text: string }).text.length, 1000);
  }
});

test('a frame above the limit cannot be encoded, and its announcement is refused before its body arrives', () => {
  assert.throws(() => encodeFrame([FrameKind.Message, { type: 'big', s: 'x'.repeat(MAX) }], MAX), (e: unknown) => e instanceof FrameError && e.code === 'FRAME_TOO_LARGE');
  const d = new FrameDecoder(MAX);
  const head = Buffer.alloc(4);
  head.writeUInt32BE(MAX + 1, 0);
  assert.throws(() => d.push(head), (e: unknown) => e instanceof FrameError && e.code === 'FRAME_TOO_LARGE' && /peerMaxFrameBytes/.test(e.message));
});

test('bytes that are not a frame are refused as malformed', () => {
  const bad = (body: Buffer): void => {
    const head = Buffer.alloc(4);
    head.writeUInt32BE(body.length, 0);
    assert.throws(() => new FrameDecoder(MAX).push(Buffer.concat([head, body])), (e: unknown) => e instanceof FrameError && e.code === 'FRAME_MALFORMED');
  };
  bad(Buffer.from([0xc1])); // never-used msgpack byte
  bad(Buffer.from([0x93, 0x00, 0x01, 0x02])); // [0, 1, 2]: not [kind, body]
  bad(Buffer.from([0x92, 0x00, 0x80])); // a message without a type
});

test('reconnect waits double from the minimum to the cap, each uniform in [cap/2, cap]', async () => {
  const { reconnectDelay } = await import('../../src/engines/ap/net/backoff.js');
  assert.deepEqual([0, 1, 2, 3, 10].map((n) => reconnectDelay(n, 100, 5_000, () => 0)), [50, 100, 200, 400, 2_500]);
  assert.deepEqual([0, 1, 2, 3, 10].map((n) => reconnectDelay(n, 100, 5_000, () => 1)), [100, 200, 400, 800, 5_000]);
  assert.equal(reconnectDelay(1_000, 100, 5_000, () => 0.5), 3_750, 'a long outage stays at the cap');
});
