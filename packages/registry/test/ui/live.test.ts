// Goal: the dashboard in a real Chromium follows the registry live through the watch
// stream: a registration shows within a second, a lease expiry removes the instance and
// says why, and when the agent restarts (same data dir) the page notices, keeps its last
// data marked stale, reconnects by itself and shows the state after the restart.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { closePages, launchBrowser, openPage, send, startAgent, stopAgent } from './browser.js';

let browser: Browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

test('a registration shows within a second, on the service list and the service page', { timeout: 60_000 }, async (t) => {
  const agent = await startAgent();
  try {
    const list = await openPage(browser, `${agent.url}/ui/`);
    const svc = await openPage(browser, `${agent.url}/ui/services/orders`);
    await list.page.locator('.conn[data-conn="live"]').waitFor();
    await svc.page.locator('.conn[data-conn="live"]').waitFor();
    await svc.page.getByText('No instances of orders are registered').waitFor();

    const t0 = performance.now();
    await send(agent.url, 'PUT', '/v1/services/orders/instances/orders-1', { address: '10.0.0.5', port: 8080, zone: 'eu-1', version: '1.4.2', weight: 40 });
    await Promise.all([
      svc.page.locator('tr[data-instance="orders-1"]').waitFor({ timeout: 5_000 }),
      list.page.locator('tr[data-service="orders"]').waitFor({ timeout: 5_000 }),
    ]);
    const elapsed = performance.now() - t0;
    t.diagnostic(`registration shown after ${Math.round(elapsed)} ms`);
    assert.ok(elapsed < 1_000, `the registration took ${Math.round(elapsed)} ms to show (at most 1000 ms)`);

    const row = svc.page.locator('tr[data-instance="orders-1"]');
    assert.match(await row.innerText(), /10\.0\.0\.5:8080[\s\S]*passing[\s\S]*up[\s\S]*eu-1[\s\S]*1\.4\.2[\s\S]*40/);
    assert.match(await list.page.locator('tr[data-service="orders"]').innerText(), /1\/1[\s\S]*all passing/);
    assert.deepEqual([...list.errors, ...svc.errors], []);
  } finally {
    await closePages();
    await stopAgent(agent);
  }
});

test('a lease expiry removes the instance and says why', { timeout: 60_000 }, async (t) => {
  const agent = await startAgent();
  try {
    await send(agent.url, 'PUT', '/v1/services/orders/instances/orders-1', { address: '10.0.0.5', port: 8080 });
    const { page, errors } = await openPage(browser, `${agent.url}/ui/services/orders`);
    await page.locator('tr[data-instance="orders-1"]').waitFor();
    await page.locator('.conn[data-conn="live"]').waitFor();

    const t0 = performance.now();
    const { leaseId } = await send(agent.url, 'POST', '/v1/leases', { ttlMs: 2_000 });
    await send(agent.url, 'PUT', '/v1/services/orders/instances/orders-2', { address: '10.0.0.6', port: 8080, leaseId });
    // Seen before it expires, or the test proves nothing.
    await page.locator('tr[data-instance="orders-2"]').waitFor({ timeout: 1_500 });
    await page.locator('[data-gone="orders-2"]').waitFor({ timeout: 10_000 });
    const elapsed = performance.now() - t0;
    t.diagnostic(`expiry shown ${Math.round(elapsed)} ms after the lease was granted (TTL 2000 ms)`);
    assert.ok(elapsed >= 1_900, `shown as gone after ${Math.round(elapsed)} ms, before the TTL ran out`);
    assert.ok(elapsed < 5_000, `the expiry took ${Math.round(elapsed)} ms to show (TTL 2 s + 1 s to expire + margin)`);
    assert.equal(await page.locator('tr[data-instance="orders-2"]').count(), 0, 'the expired instance left the table');
    assert.match(await page.locator('[data-gone="orders-2"]').innerText(), /lease expired/);
    assert.equal(await page.locator('tr[data-instance="orders-1"]').count(), 1, 'the persistent instance stays');
    assert.match(await page.locator('.summary').innerText(), /1\/1/);

    await page.getByRole('link', { name: 'Events' }).click();
    const del = page.locator('tr[data-type="delete"]').first();
    await del.waitFor();
    assert.match(await del.innerText(), /delete · lease expired[\s\S]*orders[\s\S]*orders-2/);
    assert.deepEqual(errors, []);
  } finally {
    await closePages();
    await stopAgent(agent);
  }
});

test('the page survives the agent restarting: stale while down, current after', { timeout: 90_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sb-ui-'));
  let agent = await startAgent(['--data-dir', dir]);
  try {
    const addr = new URL(agent.url).host;
    await send(agent.url, 'PUT', '/v1/services/orders/instances/orders-1', { address: '10.0.0.5', port: 8080 });
    await send(agent.url, 'PUT', '/v1/services/orders/instances/orders-2', { address: '10.0.0.6', port: 8080 });
    const { page, errors } = await openPage(browser, `${agent.url}/ui/services/orders`);
    await page.locator('tr[data-instance="orders-2"]').waitFor();
    await page.locator('.conn[data-conn="live"]').waitFor();

    await stopAgent(agent);
    const banner = page.getByRole('alert').filter({ hasText: 'The registry cannot be reached' });
    await banner.waitFor({ timeout: 10_000 });
    assert.equal(await page.locator('main.stale').count(), 1, 'the data on screen is marked stale');
    assert.equal(await page.locator('tr[data-instance="orders-1"]').count(), 1, 'the last data stays visible');

    // Same data dir, same address; the changes right after the start may land before or
    // after the page reconnects, and the page must end up showing them either way.
    agent = await startAgent(['--data-dir', dir, '--http-addr', addr]);
    await send(agent.url, 'DELETE', '/v1/services/orders/instances/orders-1');
    await send(agent.url, 'PUT', '/v1/services/orders/instances/orders-3', { address: '10.0.0.7', port: 8080 });

    await page.locator('tr[data-instance="orders-3"]').waitFor({ timeout: 15_000 });
    await banner.waitFor({ state: 'detached', timeout: 15_000 });
    await page.locator('tr[data-instance="orders-1"]').waitFor({ state: 'detached', timeout: 5_000 });
    assert.equal(await page.locator('tr[data-instance="orders-2"]').count(), 1, 'the instance kept across the restart is shown');
    assert.equal(await page.locator('main.stale').count(), 0, 'no longer stale');
    assert.equal(await page.locator('.conn[data-conn="live"]').count(), 1);

    // And it is live again, not just relisted once.
    await send(agent.url, 'PUT', '/v1/services/orders/instances/orders-4', { address: '10.0.0.8', port: 8080 });
    await page.locator('tr[data-instance="orders-4"]').waitFor({ timeout: 3_000 });
    assert.deepEqual(errors, []);
  } finally {
    await closePages();
    await stopAgent(agent);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a new epoch (an in-memory agent restarted) relists: what the old one held disappears', { timeout: 90_000 }, async () => {
  let agent = await startAgent(['--dev']);
  try {
    const addr = new URL(agent.url).host;
    const epoch1 = (await send(agent.url, 'GET', '/v1/status')).epoch;
    await send(agent.url, 'PUT', '/v1/services/orders/instances/old-1', { address: '10.0.0.5', port: 8080 });
    // The old epoch reaches revision 11, above every revision of the new one's below.
    for (let i = 0; i < 10; i++) await send(agent.url, 'PUT', `/v1/services/other/instances/x-${i}`, { address: '10.0.0.9', port: 80 });
    const { page, errors } = await openPage(browser, `${agent.url}/ui/services/orders`);
    await page.locator('tr[data-instance="old-1"]').waitFor();
    await page.locator('.conn[data-conn="live"]').waitFor();

    await stopAgent(agent);
    agent = await startAgent(['--dev', '--http-addr', addr]);
    assert.notEqual((await send(agent.url, 'GET', '/v1/status')).epoch, epoch1, 'a new epoch');
    await send(agent.url, 'PUT', '/v1/services/orders/instances/new-1', { address: '10.0.0.6', port: 8080 });
    await page.locator('tr[data-instance="new-1"]').waitFor({ timeout: 15_000 });
    await page.locator('tr[data-instance="old-1"]').waitFor({ state: 'detached', timeout: 5_000 });
    await page.locator('.conn[data-conn="live"]').waitFor();
    // Revisions restarted from 1: live events of the new epoch still apply.
    await send(agent.url, 'PUT', '/v1/services/orders/instances/new-2', { address: '10.0.0.7', port: 8080 });
    await page.locator('tr[data-instance="new-2"]').waitFor({ timeout: 3_000 });
    // ... and the event view counts them as live, not as replayed from before it opened
    // (the new epoch's revisions are below the old one's).
    await page.getByRole('link', { name: 'Events' }).click();
    await send(agent.url, 'PUT', '/v1/services/orders/instances/new-3', { address: '10.0.0.8', port: 8080 });
    const row = page.locator('tbody tr').filter({ hasText: 'new-3' }).first();
    await row.waitFor({ timeout: 5_000 });
    assert.equal(await row.getAttribute('data-earlier'), null, 'not marked as from before the page opened');
    assert.deepEqual(errors, []);
  } finally {
    await closePages();
    await stopAgent(agent);
  }
});

test('a burst of 6,000 registrations keeps the open service page responsive; an instance removed meanwhile opens with its last state', { timeout: 90_000 }, async () => {
  const agent = await startAgent();
  try {
    await send(agent.url, 'PUT', '/v1/services/bigs/instances/gone-1', { address: '10.9.9.9', port: 80 });
    const { page, errors } = await openPage(browser, `${agent.url}/ui/services/bigs`);
    await page.locator('tr[data-instance="gone-1"]').waitFor();
    await page.locator('.conn[data-conn="live"]').waitFor();
    for (let k = 0; k < 6; k++) {
      const instances = Array.from({ length: 1_000 }, (_, j) => ({ service: 'bigs', id: `b-${k * 1_000 + j}`, address: `10.${k}.${j >> 8}.${j & 255}`, port: 8080 }));
      await send(agent.url, 'POST', '/v1/instances/batch', { instances });
    }
    const t0 = Date.now();
    await page.evaluate(() => 1); // answered once the page's thread is free
    const busy = Date.now() - t0;
    await page.getByText('6001/6001').first().waitFor({ timeout: 10_000 });
    // One copy of the instances per event made this several seconds (the square of the service's size).
    assert.ok(busy < 2_000, `the page answered ${busy} ms after the burst`);
    await send(agent.url, 'DELETE', '/v1/services/bigs/instances/gone-1');
    await page.locator('[data-gone="gone-1"] a').click();
    await page.getByRole('heading', { level: 1, name: 'gone-1' }).waitFor();
    await page.getByText('10.9.9.9:80').first().waitFor({ timeout: 5_000 });
    await page.goBack();
    await page.locator('[data-gone="gone-1"]').waitFor({ timeout: 5_000 });
    assert.deepEqual(errors, []);
  } finally {
    await closePages();
    await stopAgent(agent);
  }
});

test('a service page open while many instances come and go keeps the latest 200 removals, not all', { timeout: 90_000 }, async () => {
  const agent = await startAgent();
  try {
    const { page, errors } = await openPage(browser, `${agent.url}/ui/services/churn`);
    await page.locator('.conn[data-conn="live"]').waitFor();
    const n = 230;
    await send(agent.url, 'POST', '/v1/instances/batch', { instances: Array.from({ length: n }, (_, i) => ({ service: 'churn', id: `c${i}`, address: '10.0.0.7', port: 1000 + i })) });
    await page.locator('tr[data-instance="c229"]').waitFor({ timeout: 10_000 });
    for (let i = 0; i < n; i++) await send(agent.url, 'DELETE', `/v1/services/churn/instances/c${i}`);
    await page.locator('[data-gone="c229"]').waitFor({ timeout: 10_000 });
    assert.equal(await page.locator('[data-gone]').count(), 200);
    assert.equal(await page.locator('[data-gone="c0"]').count(), 0, 'the oldest removals are dropped');
    assert.match(await page.locator('#gone-title').innerText(), /the latest 200/);
    assert.deepEqual(errors, []);
  } finally {
    await closePages();
    await stopAgent(agent);
  }
});
