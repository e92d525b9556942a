// Goal: an operator can use each view of the dashboard in a real Chromium: the empty
// state tells what to do, search narrows the services (keyboard included), the instance
// page shows fields, checks and a history that grows live, the views work on a phone-sized
// screen, an unreachable registry gets a banner that keeps retrying over the last data,
// the cluster view shows what ap and cp nodes report, namespaces switch, and a page
// refused a watch stream by the node's limit says why and gets in later.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { closePages, launchBrowser, openPage, send, startAgent, stopAgent, waitForCount } from './browser.js';

let browser: Browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

test('empty registry: the services view says so and how to register', { timeout: 60_000 }, async () => {
  const agent = await startAgent();
  try {
    const { page, errors } = await openPage(browser, `${agent.url}/`);
    assert.equal(new URL(page.url()).pathname, '/ui/', 'the root redirects to the dashboard');
    await page.getByText('No services are registered in namespace default').waitFor();
    assert.match(await page.locator('.empty pre').innerText(), /curl -XPUT .*\/v1\/services\/orders\/instances\/orders-1/);
    assert.equal(await page.locator('table').count(), 0);
    assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Services');

    await page.getByRole('link', { name: 'Events' }).click();
    await page.getByText('No events yet').waitFor();
    await page.goto(`${agent.url}/ui/services/nothing-here`);
    await page.getByText('No instances of nothing-here are registered').waitFor();
    await page.goto(`${agent.url}/ui/no/such/view`);
    await page.getByRole('heading', { name: 'Page not found' }).waitFor();
    assert.deepEqual(errors, []);
  } finally {
    await closePages();
    await stopAgent(agent);
  }
});

test('search narrows the services; "/" focuses it; no match says so', { timeout: 60_000 }, async () => {
  const agent = await startAgent();
  try {
    for (const [svc, id] of [['orders', 'o-1'], ['orders-archive', 'oa-1'], ['payments', 'p-1'], ['inventory', 'i-1']] as const) {
      await send(agent.url, 'PUT', `/v1/services/${svc}/instances/${id}`, { address: '10.0.0.1', port: 80 });
    }
    const { page, errors } = await openPage(browser, `${agent.url}/ui/`);
    const rows = page.locator('tbody tr');
    await page.locator('tr[data-service="payments"]').waitFor();
    assert.equal(await rows.count(), 4);

    await page.keyboard.press('/');
    const search = page.getByLabel('Search services');
    assert.equal(await search.evaluate((el: any) => el === el.ownerDocument.activeElement), true, '"/" focuses the search field');
    await page.keyboard.type('order');
    await waitForCount(rows, 2);
    assert.deepEqual(await rows.evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-service'))), ['orders', 'orders-archive']);

    await search.fill('zzz');
    await page.getByText('No service matches “zzz”').waitFor();
    await page.getByRole('button', { name: 'Clear the search' }).click();
    await waitForCount(rows, 4);

    // Keyboard only: from the search field to a service link and into it.
    await search.fill('pay');
    await waitForCount(rows, 1);
    await search.focus();
    await page.keyboard.press('Tab'); // the sort select
    await page.keyboard.press('Tab'); // the first service link
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { level: 1, name: 'payments' }).waitFor();
    assert.equal(new URL(page.url()).pathname, '/ui/services/payments');

    // The event view opens with the changes from before the page opened, then live ones.
    await page.getByRole('link', { name: 'Events' }).click();
    const events = page.locator('table.events tbody tr');
    await waitForCount(events, 4);
    assert.equal(await page.locator('tr[data-earlier]').count(), 4, 'replayed events are marked as from before opening');
    await send(agent.url, 'DELETE', '/v1/services/inventory/instances/i-1');
    await waitForCount(events, 5);
    assert.match(await events.first().innerText(), /delete · deregistered[\s\S]*inventory[\s\S]*i-1/);
    assert.equal(await events.first().getAttribute('data-earlier'), null);
    assert.deepEqual(errors, []);
  } finally {
    await closePages();
    await stopAgent(agent);
  }
});

test('instance detail: fields, checks and a history that grows live', { timeout: 60_000 }, async () => {
  const agent = await startAgent();
  try {
    await send(agent.url, 'PUT', '/v1/services/orders/instances/orders-1', {
      address: '10.0.0.5', port: 8080, zone: 'eu-1', version: '1.4.2', weight: 70, tags: ['primary'], metadata: { git: 'a1b2c3' },
      checks: [{ id: 'alive', type: 'ttl', ttl: '30s' }],
    });
    await send(agent.url, 'PUT', '/v1/services/orders/instances/orders-1/checks/alive', { status: 'passing', output: 'all good' });
    const { page, errors } = await openPage(browser, `${agent.url}/ui/`);
    await page.getByRole('link', { name: 'orders', exact: true }).click();
    await page.getByRole('link', { name: 'orders-1' }).click();
    await page.getByRole('heading', { level: 1, name: 'orders-1' }).waitFor();
    assert.equal(new URL(page.url()).pathname, '/ui/services/orders/instances/orders-1');

    const details = await page.locator('.facts').first().innerText();
    for (const want of ['10.0.0.5:8080', 'eu-1', '1.4.2', '70', 'primary', 'none (persistent)']) assert.ok(details.includes(want), `details show ${want}: ${details}`);
    assert.match(await page.locator('.card').filter({ hasText: 'Metadata' }).innerText(), /git\s+a1b2c3/);
    assert.match(await page.locator('table.checks tbody').innerText(), /alive\s+ttl\s+passing\s+all good/);

    const history = page.locator('table.history-table tbody tr');
    await waitForCount(history, 2);
    assert.match(await history.nth(0).innerText(), /check passed/, 'newest first');
    assert.match(await history.nth(1).innerText(), /registered/);

    // A failing check shows at once, in the header, the checks and the history.
    await send(agent.url, 'PUT', '/v1/services/orders/instances/orders-1/checks/alive', { status: 'critical', output: 'disk full' });
    await waitForCount(history, 3);
    assert.match(await history.nth(0).innerText(), /check failed[\s\S]*critical[\s\S]*disk full/);
    assert.match(await page.locator('.page-head').innerText(), /critical/);
    assert.match(await page.locator('table.checks tbody').innerText(), /critical\s+disk full/);

    // Deregistered while open: the page says so and keeps the last state and the history.
    await send(agent.url, 'DELETE', '/v1/services/orders/instances/orders-1');
    await page.getByText('This instance is gone: deregistered').waitFor({ timeout: 5_000 });
    await waitForCount(history, 4);
    assert.match(await history.nth(0).innerText(), /deregistered/);

    // Back in the browser history returns to the service, which now has no instance.
    await page.goBack();
    await page.getByText('No instances of orders are registered').waitFor();
    assert.deepEqual(errors, []);
  } finally {
    await closePages();
    await stopAgent(agent);
  }
});

test('phone-sized screen: tables become labelled cards, nothing overflows', { timeout: 60_000 }, async () => {
  const agent = await startAgent();
  try {
    await send(agent.url, 'PUT', '/v1/services/orders/instances/orders-1', { address: 'a-rather-long-host-name.eu-west-1.compute.internal', port: 8080, zone: 'eu-1', version: '1.4.2' });
    const { page, errors } = await openPage(browser, `${agent.url}/ui/services/orders`, { width: 390, height: 844 });
    const row = page.locator('tr[data-instance="orders-1"]');
    await row.waitFor();
    const zone = row.locator('td[data-label="Zone"]');
    assert.equal(await zone.evaluate((td: any) => td.ownerDocument.defaultView.getComputedStyle(td, '::before').content), '"Zone"', 'each cell carries its label');
    for (const path of ['/ui/', '/ui/services/orders', '/ui/services/orders/instances/orders-1', '/ui/cluster', '/ui/events']) {
      await page.goto(agent.url + path);
      await page.locator('h1').waitFor();
      await page.waitForTimeout(200);
      const overflow = await page.evaluate(() => {
        const root = (globalThis as any).document.documentElement;
        return root.scrollWidth - root.clientWidth;
      });
      assert.ok(overflow <= 0, `${path} scrolls sideways by ${overflow} px on a 390 px screen`);
    }
    assert.deepEqual(errors, []);
  } finally {
    await closePages();
    await stopAgent(agent);
  }
});

test('unreachable registry: a banner that retries, over the last data marked stale', { timeout: 60_000 }, async () => {
  const agent = await startAgent();
  try {
    await send(agent.url, 'PUT', '/v1/services/orders/instances/orders-1', { address: '10.0.0.5', port: 8080 });
    // A page whose API calls fail from the start has no data to show, and says so.
    const blocked = await browser.newPage();
    await blocked.route('**/v1/**', (route) => route.abort('connectionrefused'));
    await blocked.goto(`${agent.url}/ui/`);
    await blocked.getByRole('alert').filter({ hasText: 'No data has been received yet' }).waitFor({ timeout: 10_000 });
    await blocked.getByText('No data yet').waitFor();
    // Once the API answers, it recovers by itself.
    await blocked.unroute('**/v1/**');
    await blocked.locator('tr[data-service="orders"]').waitFor({ timeout: 15_000 });
    assert.equal(await blocked.getByRole('alert').count(), 0);
    await blocked.close();

    const { page, errors } = await openPage(browser, `${agent.url}/ui/`);
    await page.locator('tr[data-service="orders"]').waitFor();
    assert.equal(await page.getByRole('alert').count(), 0, 'no banner while the registry answers');

    agent.child.kill('SIGKILL');
    await agent.exited;
    const banner = page.getByRole('alert').filter({ hasText: 'The registry cannot be reached' });
    await banner.waitFor({ timeout: 10_000 });
    assert.match(await banner.innerText(), /The data below is from .* and may be out of date/);
    assert.match(await banner.innerText(), /Retrying/);
    assert.equal(await page.locator('.conn[data-conn="unreachable"]').count(), 1);
    assert.equal(await page.locator('main.stale tr[data-service="orders"]').count(), 1, 'the last data stays, marked stale');

    // "Retry now" tries at once; the registry is still down, so the banner stays.
    await page.getByRole('button', { name: 'Retry now' }).click();
    await page.waitForTimeout(500);
    assert.equal(await banner.count(), 1);
    assert.deepEqual(errors, []);

  } finally {
    await closePages();
    await stopAgent(agent);
  }
});

test('cluster view: standalone shows the one node; a cluster status shows members, lag, store and alerts', { timeout: 60_000 }, async () => {
  const agent = await startAgent();
  try {
    const { page, errors } = await openPage(browser, `${agent.url}/ui/cluster`);
    await page.getByText('Standalone: one node, no peers').waitFor();
    const self = page.locator('tr[data-member]');
    await waitForCount(self, 1);
    // The answering node is reachable as soon as its status arrived (the watch stream may still be opening).
    assert.match(await self.innerText(), /this node[\s\S]*yes[\s\S]*now/);
    assert.match(await page.locator('.card').filter({ hasText: 'Mode' }).innerText(), /standalone[\s\S]*0 probes refused by the check networks[\s\S]*memory only/);
    assert.equal(await page.getByRole('heading', { name: 'Alerts' }).count(), 0, 'no alerts section while nothing is active and no webhook is set');

    // ap and cp nodes add `cluster` (and, with alerting, `alerts`) to the real status.
    await page.route('**/v1/status', async (route) => {
      const response = await route.fetch().catch(() => null);
      if (!response) return route.abort('connectionrefused');
      const json = await response.json();
      json.mode = 'cp';
      json.cluster = {
        ready: true,
        members: [
          { id: json.nodeId, address: '127.0.0.1:7700', self: true, reachable: true, lastSeenMs: 0, revision: 120 },
          { id: 'node-b', address: '10.0.0.2:7700', self: false, reachable: true, lastSeenMs: 850, lagMs: 42, revision: 118 },
          { id: 'node-c', address: '10.0.0.3:7700', self: false, reachable: false, lastSeenMs: 31_000, lagMs: 9_500, revision: 90 },
        ],
        store: { kind: 'etcd', endpoints: ['http://10.0.0.9:2379'], reachable: true, leader: '8e9e05c52164694d', revision: 120, viewRevision: 119, lagMs: 12, lastContactMs: 300 },
        // What a mode adds beyond the common fields is shown as it comes.
        prefix: '/switchboard',
        writeBatches: { batches: 3, writes: 10 },
      };
      json.alerts = {
        active: [{ alert: 'peer_unreachable', severity: 'warning', episodeId: 'e1', subject: 'node-c', summary: 'node-c has not been heard from for 31 s', startedAt: new Date().toISOString(), resolvedAt: null, details: {} }],
        webhooks: [{ url: 'http://hooks.example/alerts', pending: 1, delivered: 4, failed: 0, dropped: 0, lastError: 'connect ECONNREFUSED', lastDeliveredAt: null }],
      };
      await route.fulfill({ response, json });
    });
    await page.getByText('cp mode · 2 of 3 nodes reachable · ready').waitFor({ timeout: 10_000 });
    await waitForCount(page.locator('tr[data-member]'), 3);
    assert.match(await page.locator('tr[data-member="node-b"]').innerText(), /10\.0\.0\.2:7700[\s\S]*yes[\s\S]*850 ms ago[\s\S]*118[\s\S]*42 ms/);
    assert.match(await page.locator('tr[data-member="node-c"]').innerText(), /no[\s\S]*31 s ago[\s\S]*90[\s\S]*9\.5 s/);
    assert.match(await page.locator('.card').filter({ hasText: 'Store (etcd)' }).innerText(), /8e9e05c52164694d[\s\S]*120 \(view 119\)/);
    assert.match(await page.locator('.card').filter({ hasText: 'cp details' }).innerText(), /prefix\s+\/switchboard[\s\S]*writeBatches\.batches\s+3[\s\S]*writeBatches\.writes\s+10/);
    assert.match(await page.locator('.alerts').innerText(), /warning[\s\S]*peer unreachable[\s\S]*node-c[\s\S]*node-c has not been heard from/);
    assert.match(await page.locator('.alerts').innerText(), /hooks\.example\/alerts: 4 delivered, 1 pending, 0 failed[\s\S]*ECONNREFUSED/);
    // The header tells every view that an alert is active, and leads here.
    await page.getByRole('link', { name: 'Services', exact: true }).click();
    await page.getByRole('link', { name: '1 alert' }).click();
    await page.getByRole('heading', { name: 'Alerts' }).waitFor();
    assert.deepEqual(errors, []);
  } finally {
    await closePages();
    await stopAgent(agent);
  }
});

test('namespaces: the namespace field switches the whole view and stays in the URL', { timeout: 60_000 }, async () => {
  const agent = await startAgent();
  try {
    await send(agent.url, 'PUT', '/v1/services/orders/instances/o-1', { address: '10.0.0.1', port: 80 });
    await send(agent.url, 'PUT', '/v1/services/billing/instances/b-1?namespace=team-a', { address: '10.0.0.2', port: 80 });
    const { page, errors } = await openPage(browser, `${agent.url}/ui/`);
    await page.locator('tr[data-service="orders"]').waitFor();
    const field = page.getByRole('textbox', { name: 'Namespace' });
    await field.fill('Team A');
    await field.press('Enter');
    await page.getByText('lowercase letters, digits and dashes').waitFor();
    await field.fill('team-a');
    await field.press('Enter');
    await page.locator('tr[data-service="billing"]').waitFor();
    assert.equal(await page.locator('tr[data-service="orders"]').count(), 0);
    assert.equal(new URL(page.url()).search, '?namespace=team-a');

    // Live in that namespace, and links keep it.
    await send(agent.url, 'PUT', '/v1/services/billing/instances/b-2?namespace=team-a', { address: '10.0.0.3', port: 80 });
    await page.getByRole('link', { name: 'billing' }).click();
    await page.locator('tr[data-instance="b-2"]').waitFor();
    assert.equal(new URL(page.url()).search, '?namespace=team-a');
    await page.reload();
    await page.locator('tr[data-instance="b-1"]').waitFor();
    // Back and Forward across the change of namespace show the namespace of their URL.
    await page.goBack(); // the services of team-a
    await page.goBack(); // the services of default, before the switch
    assert.equal(new URL(page.url()).search, '');
    await page.locator('tr[data-service="orders"]').waitFor();
    assert.equal(await page.locator('tr[data-service="billing"]').count(), 0);
    assert.equal(await field.inputValue(), 'default');
    assert.equal(await page.getByRole('link', { name: 'Services' }).first().getAttribute('href'), '/ui/');
    await page.goForward();
    await page.locator('tr[data-service="billing"]').waitFor();
    assert.equal(await field.inputValue(), 'team-a');
    assert.deepEqual(errors, []);
  } finally {
    await closePages();
    await stopAgent(agent);
  }
});

test('a long metadata key and value wrap inside their card: the page stays a readable height and a phone does not scroll sideways', { timeout: 60_000 }, async () => {
  const agent = await startAgent();
  try {
    await send(agent.url, 'PUT', '/v1/services/webx/instances/w-1', { address: '10.0.0.1', port: 80, metadata: { ['k'.repeat(128)]: 'v'.repeat(8_000), short: 'x' } });
    for (const viewport of [{ width: 1280, height: 800 }, { width: 390, height: 800 }]) {
      const { page, errors } = await openPage(browser, `${agent.url}/ui/services/webx/instances/w-1`, viewport);
      await page.getByRole('heading', { level: 1, name: 'w-1' }).waitFor();
      const layout = (await page.evaluate(`({
        height: document.documentElement.scrollHeight,
        scrollW: document.documentElement.scrollWidth,
        clientW: document.documentElement.clientWidth,
        narrowest: Math.min(...[...document.querySelectorAll('.facts dd')].map((d) => d.getBoundingClientRect().width)),
      })`)) as { height: number; scrollW: number; clientW: number; narrowest: number };
      assert.ok(layout.scrollW <= layout.clientW, `no sideways scroll at ${viewport.width} px: ${JSON.stringify(layout)}`);
      assert.ok(layout.narrowest > 100, `every value gets room: ${JSON.stringify(layout)}`);
      assert.ok(layout.height < 30_000, `a readable height: ${JSON.stringify(layout)}`);
      assert.deepEqual(errors, []);
    }
  } finally {
    await closePages();
    await stopAgent(agent);
  }
});

test('watch limit: a page beyond maxWatchStreamsPerClient says why, waits Retry-After, and gets in once a stream frees up', { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sb-ui-limits-'));
  const config = join(dir, 'config.json');
  writeFileSync(config, JSON.stringify({ limits: { maxWatchStreamsPerClient: 1 } }));
  const agent = await startAgent(['--dev', '--config', config]);
  try {
    await send(agent.url, 'PUT', '/v1/services/orders/instances/o-1', { address: '10.0.0.1', port: 80 });
    const first = await openPage(browser, `${agent.url}/ui/`);
    await first.page.locator('.conn[data-conn="live"]').waitFor();
    const second = await openPage(browser, `${agent.url}/ui/`);
    const banner = second.page.getByRole('alert').filter({ hasText: 'Live updates are interrupted' });
    await banner.waitFor();
    assert.match(await banner.innerText(), /the node answered 429: client .* already has 1 watch streams/, 'the banner gives the node\'s reason');
    assert.match(await banner.innerText(), /Retrying in [3-6] s/, 'it waits the Retry-After (5 s) the node asked for');
    // The lists still load: only the stream is refused.
    await second.page.locator('tr[data-service="orders"]').waitFor();

    await first.page.close();
    await second.page.locator('.conn[data-conn="live"]').waitFor({ timeout: 15_000 });
    assert.equal(await banner.count(), 0);
    await send(agent.url, 'PUT', '/v1/services/orders/instances/o-2', { address: '10.0.0.2', port: 80 });
    await second.page.locator('tr[data-service="orders"]').filter({ hasText: '2/2' }).waitFor({ timeout: 3_000 });
    assert.deepEqual([...first.errors, ...second.errors], []);
  } finally {
    await closePages();
    await stopAgent(agent);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('service view: spread over zones and versions, filter by text and health, least healthy first', { timeout: 60_000 }, async () => {
  const agent = await startAgent();
  try {
    const ttl = [{ id: 'alive', type: 'ttl', ttl: '30s' }];
    await send(agent.url, 'PUT', '/v1/services/orders/instances/a-1', { address: '10.0.0.1', port: 80, zone: 'eu-1', version: '1.4.2' });
    await send(agent.url, 'PUT', '/v1/services/orders/instances/b-1', { address: '10.0.0.2', port: 80, zone: 'eu-2', version: '1.5.0', checks: ttl });
    await send(agent.url, 'PUT', '/v1/services/orders/instances/c-1', { address: '10.0.0.3', port: 80, zone: 'eu-2', version: '1.5.0', tags: ['canary'], checks: ttl });
    await send(agent.url, 'PUT', '/v1/services/orders/instances/c-1/checks/alive', { status: 'warning', output: 'slow' });
    const { page, errors } = await openPage(browser, `${agent.url}/ui/services/orders`);
    const rows = page.locator('table.instances tbody tr');
    await waitForCount(rows, 3);
    assert.match(await page.locator('.spread').innerText(), /Zones: eu-1 ×1, eu-2 ×2 · Versions: 1\.4\.2 ×1, 1\.5\.0 ×2/);
    assert.match(await page.locator('.page-head .summary').innerText(), /1\/3/);

    const order = () => rows.evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-instance')));
    await page.getByLabel('Sort').selectOption('worst');
    assert.deepEqual(await order(), ['b-1', 'c-1', 'a-1'], 'critical, then warning, then passing');
    await page.getByLabel('Health').selectOption('warning');
    assert.deepEqual(await order(), ['c-1']);
    await page.getByLabel('Health').selectOption('all');
    await page.getByLabel('Filter instances').fill('canary');
    assert.deepEqual(await order(), ['c-1'], 'tags are searched');
    await page.getByLabel('Filter instances').fill('10.0.0.1:80');
    assert.deepEqual(await order(), ['a-1'], 'addresses are searched');
    await page.getByLabel('Filter instances').fill('nothing');
    await page.getByText('No instance matches the filter').waitFor();
    assert.deepEqual(errors, []);
  } finally {
    await closePages();
    await stopAgent(agent);
  }
});
