// Goal: against an agent that requires tokens, the dashboard asks for one instead of
// showing a broken page: a "this registry needs a token" form; once a read token is
// entered it is kept for the tab (sessionStorage), sent on every call and on the watch
// stream (fetch streaming: EventSource cannot send the header), and live updates arrive.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { spawnAgent, type AgentProcess } from '../integration/process.js';
import { closePages, launchBrowser, openPage, stopAgent } from './browser.js';

const READ = 'ui-read-token-0123456789abcdef01234';
const WRITE = 'ui-write-token-0123456789abcdef0123';
const FORWARD = 'ui-forward-token-0123456789abcdef01';
let browser: Browser;
let agent: AgentProcess;
let dir: string;

before(async () => {
  browser = await launchBrowser();
  dir = mkdtempSync(join(tmpdir(), 'sb-ui-token-'));
  writeFileSync(join(dir, 'tokens'), `read ${READ}\nwrite ${WRITE}\nforward ${FORWARD}\n`);
  agent = await spawnAgent(['--dev', '--api-tokens-file', join(dir, 'tokens')]);
});
after(async () => {
  await closePages();
  await browser.close();
  await stopAgent(agent);
  rmSync(dir, { recursive: true, force: true });
});

async function register(id: string): Promise<void> {
  const res = await fetch(`${agent.url}/v1/services/orders/instances/${id}`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${WRITE}` },
    body: JSON.stringify({ address: '10.0.0.5', port: 8080 }),
  });
  assert.equal(res.status, 200, await res.text());
}

test('the dashboard asks for a token, keeps it for the tab and then shows live data', { timeout: 60_000 }, async () => {
  await register('o-1');
  const { page, errors } = await openPage(browser, `${agent.url}/ui/`);
  const form = page.locator('form.token-form');
  await form.waitFor();
  assert.match(await form.innerText(), /This registry needs a token/);
  await form.locator('input[name="token"]').fill('not-the-right-token-0123456789');
  await form.locator('button[type="submit"]').click();
  await page.locator('form.token-form', { hasText: 'The token given was not accepted' }).waitFor();
  await page.locator('form.token-form input[name="token"]').fill(READ);
  await page.locator('form.token-form button[type="submit"]').click();
  await page.getByRole('link', { name: 'orders' }).first().waitFor();
  assert.equal(await page.locator('form.token-form').count(), 0);
  assert.equal(await page.evaluate("sessionStorage.getItem('switchboard.token')"), READ);
  // Live: an instance registered now shows up through the watch stream.
  await page.goto(`${agent.url}/ui/services/orders`);
  await page.getByText('o-1').first().waitFor();
  await register('o-2');
  await page.getByText('o-2').first().waitFor();
  assert.deepEqual(errors, []);
});

test('a token pasted with an invisible character is cleaned; one that cannot be sent, or whose scope does not read, brings the form back', { timeout: 60_000 }, async () => {
  await register('o-3');
  const { page, errors } = await openPage(browser, `${agent.url}/ui/`);
  const form = page.locator('form.token-form');
  await form.waitFor();
  // A forward token: 403, and the form comes back naming why (it used to retry for ever).
  await form.locator('input[name="token"]').fill(FORWARD);
  await form.locator('button[type="submit"]').click();
  await page.locator('form.token-form', { hasText: /403.*scope forward/ }).waitFor();
  // A character outside printable ASCII: refused by the form, nothing stored.
  await page.locator('form.token-form input[name="token"]').fill(`${READ}é`);
  await page.locator('form.token-form button[type="submit"]').click();
  await page.locator('form.token-form', { hasText: 'a character a token cannot have' }).waitFor();
  assert.equal(await page.evaluate("sessionStorage.getItem('switchboard.token')"), FORWARD);
  // The read token with a zero-width space and a byte order mark around it: they are dropped.
  await page.locator('form.token-form input[name="token"]').fill(`\ufeff${READ}\u200b`);
  await page.locator('form.token-form button[type="submit"]').click();
  await page.getByRole('link', { name: 'orders' }).first().waitFor();
  assert.equal(await page.evaluate("sessionStorage.getItem('switchboard.token')"), READ);
  assert.deepEqual(errors, []);
});
