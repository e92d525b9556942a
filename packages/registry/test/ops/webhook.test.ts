// Goal: an alert webhook retries what may pass (5xx, 408, 429, no answer) with backoff, and
// gives up at once on a message the receiver refuses (another 4xx), so that one refused
// message does not hold every later alert up for the whole retry schedule.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_LIMITS, type AlertMessage } from '@switchboard/protocol';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook, type DeliveryResult } from '../../src/alerts/webhooks.js';

test('a 4xx refusal is final at once; 5xx, 408 and 429 are retried', async () => {
  const answers = new Map<string, number[]>([
    ['refused', [400]],
    ['flaky', [503, 408, 429, 204]],
    ['after', [204]],
  ]);
  const posted: string[] = [];
  const fake = (async (_url: string, init: { body: string }) => {
    const id = (JSON.parse(init.body) as { episodeId: string }).episodeId;
    posted.push(id);
    const status = answers.get(id)!.shift() ?? 500;
    return new Response(null, { status });
  }) as unknown as typeof fetch;
  const results: [DeliveryResult, string, string | null][] = [];
  const hook = new Webhook({
    url: 'http://127.0.0.1:9/hook',
    limits: { ...DEFAULT_LIMITS, alertDeliveryAttempts: 8, alertRetryBaseMs: 5, alertRetryMaxMs: 10 },
    fetch: fake,
    onResult: (r, m, e) => results.push([r, (m as unknown as { episodeId: string }).episodeId, e]),
  });
  try {
    for (const id of ['refused', 'flaky', 'after']) hook.send({ episodeId: id } as unknown as AlertMessage);
    const t0 = Date.now();
    while (hook.pending > 0 && Date.now() - t0 < 5_000) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(posted, ['refused', 'flaky', 'flaky', 'flaky', 'flaky', 'after']);
    assert.deepEqual(results.filter(([, id]) => id === 'refused'), [['failed', 'refused', 'the webhook answered 400']]);
    assert.deepEqual(results.filter(([r]) => r === 'delivered').map(([, id]) => id), ['flaky', 'after']);
    assert.equal(hook.status().failed, 1);
  } finally {
    hook.close();
  }
});

test('a webhook URL with a user and password delivers with basic authentication; neither they nor its query show in status or errors', async () => {
  const seen: (string | undefined)[] = [];
  const server = createServer((req, res) => {
    seen.push(req.headers.authorization);
    req.resume();
    res.writeHead(req.headers.authorization === `Basic ${Buffer.from('ops:s3cr:et').toString('base64')}` ? 204 : 401).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as AddressInfo).port;
  const results: [DeliveryResult, string | null][] = [];
  const good = new Webhook({ url: `http://ops:s3cr%3Aet@127.0.0.1:${port}/hook?token=qsecret`, limits: DEFAULT_LIMITS, onResult: (r, _m, e) => results.push([r, e]) });
  // Nothing listens on port 9: the error must not name the query's token.
  const dead = new Webhook({ url: 'http://ops:pw@127.0.0.1:9/hook?token=qsecret', limits: { ...DEFAULT_LIMITS, alertDeliveryAttempts: 1 }, onResult: (r, _m, e) => results.push([r, e]) });
  try {
    good.send({ episodeId: 'e1' } as unknown as AlertMessage);
    dead.send({ episodeId: 'e2' } as unknown as AlertMessage);
    const t0 = Date.now();
    while ((good.pending > 0 || dead.pending > 0) && Date.now() - t0 < 5_000) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(seen, [`Basic ${Buffer.from('ops:s3cr:et').toString('base64')}`], 'the credentials went as basic authentication');
    assert.equal(good.status().delivered, 1);
    assert.equal(good.status().url, `http://127.0.0.1:${port}/hook`);
    const shown = JSON.stringify([good.status(), dead.status(), results]);
    assert.doesNotMatch(shown, /s3cr|qsecret|ops:pw/, shown);
    assert.equal(dead.status().failed, 1);
  } finally {
    good.close();
    dead.close();
    server.close();
  }
});
