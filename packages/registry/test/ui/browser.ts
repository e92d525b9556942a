// Driving the dashboard in a real headless Chromium (Debian's package) through playwright-core.
import { existsSync } from 'node:fs';
import { chromium, type Browser, type Locator, type Page } from 'playwright-core';
import { spawnAgent, type AgentProcess } from '../integration/process.js';
import { waitUntil } from '../support/wait.js';

/** Debian's chromium; SWITCHBOARD_CHROMIUM points elsewhere. */
export const CHROMIUM = process.env.SWITCHBOARD_CHROMIUM ?? '/usr/bin/chromium';

/** Launches headless Chromium; a missing browser fails the test with what to do. */
export async function launchBrowser(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM}: the dashboard tests need it. Install it with "bash scripts/setup-test-env.sh chromium" (Debian package chromium), or set SWITCHBOARD_CHROMIUM to a Chromium binary.`);
  }
  return chromium.launch({ executablePath: CHROMIUM, headless: true, timeout: 30_000 });
}

/** Starts an agent and checks that it serves the built dashboard. */
export async function startAgent(args: string[] = ['--dev']): Promise<AgentProcess> {
  const agent = await spawnAgent(args);
  const res = await fetch(`${agent.url}/ui/`);
  if (res.status !== 200) {
    agent.child.kill('SIGKILL');
    throw new Error(`the agent does not serve the dashboard (GET /ui/ answered ${res.status}: ${await res.text()}); run "npm run build" at the repository root`);
  }
  return agent;
}

const pages = new Set<Page>();

/** Closes every page openPage opened (before the agent they talk to stops for good). */
export async function closePages(): Promise<void> {
  for (const p of pages) await p.close().catch(() => undefined);
  pages.clear();
}

/** A new page at 1280x800 that records page errors and policy violations, so that a test can assert there were none. */
export async function openPage(browser: Browser, url: string, viewport = { width: 1280, height: 800 }): Promise<{ page: Page; errors: string[] }> {
  const page = await browser.newPage({ viewport });
  pages.add(page);
  page.setDefaultTimeout(10_000);
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  // Refused connections are expected while an agent is down; a policy violation never is.
  page.on('console', (m) => {
    if (/Content Security Policy|Refused to/i.test(m.text())) errors.push(m.text());
  });
  await page.goto(url);
  return { page, errors };
}

/** Stops an agent (SIGTERM, then SIGKILL after 5 s) and waits for it to exit. */
export async function stopAgent(agent: AgentProcess): Promise<void> {
  if (agent.child.exitCode !== null || agent.child.signalCode !== null) return;
  agent.child.kill('SIGTERM');
  const timer = setTimeout(() => agent.child.kill('SIGKILL'), 5_000);
  await agent.exited;
  clearTimeout(timer);
}

export async function send(url: string, method: string, path: string, body?: unknown): Promise<any> {
  const res = await fetch(url + path, { method, headers: body === undefined ? {} : { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path} answered ${res.status}: ${text}`);
  return text === '' ? undefined : JSON.parse(text);
}

/** Waits until `loc` matches exactly `n` elements. */
export async function waitForCount(loc: Locator, n: number, timeoutMs = 5_000): Promise<void> {
  let c = 0;
  await waitUntil(async () => (c = await loc.count()) === n, timeoutMs, `${n} elements for ${String(loc)}`, { intervalMs: 25, detail: () => `found ${c}` });
}
