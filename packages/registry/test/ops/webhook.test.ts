// Goal: an alert webhook retries what may pass (5xx, 408, 429, no answer) with backoff, and
// gives up at once on a message the receiver refuses (another 4xx), so that one refused
// message does not hold every later alert up for the whole retry schedule.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_LIMITS, type AlertMessage } from '@switchboard/protocol';
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
