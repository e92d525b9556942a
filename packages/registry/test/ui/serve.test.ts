// Goal: the agent serves the dashboard at /ui/ as a single-page app: redirects into it,
// client routes answer index.html, hashed assets are cached for a year and index.html
// never, unknown files and other methods get the usual problems, and a missing build is a
// clear 503 that names the fix and clears once the files exist.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_LIMITS } from '@switchboard/protocol';
import { build, type SwitchboardApp } from '../../src/api/app.js';
import { StandaloneEngine } from '../../src/engines/standalone.js';
import { MemoryStorage } from '../../src/storage/storage.js';

async function appWith(dashboardDir: string | null): Promise<{ app: SwitchboardApp; close: () => Promise<void> }> {
  const engine = await StandaloneEngine.open({ nodeId: 'ui', storage: new MemoryStorage(), limits: DEFAULT_LIMITS, clock: { now: () => performance.now() } });
  const app = await build({ engine, limits: DEFAULT_LIMITS, version: 'test', dashboardDir });
  return { app, close: async () => { await app.shutdown(); await engine.close(); } };
}

const INDEX = '<!doctype html><title>dash</title><script type="module" src="/ui/assets/app-3f2a9c.js"></script>';

test('the built dashboard: redirects, client routes, cache headers, 404 and 405', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sb-ui-dist-'));
  mkdirSync(join(dir, 'assets'));
  writeFileSync(join(dir, 'index.html'), INDEX);
  writeFileSync(join(dir, 'assets', 'app-3f2a9c.js'), 'console.log(1)');
  const { app, close } = await appWith(dir);
  try {
    let r = await app.inject({ method: 'GET', url: '/' });
    assert.equal(r.statusCode, 302);
    assert.equal(r.headers.location, '/ui/');
    r = await app.inject({ method: 'GET', url: '/ui' });
    assert.equal(r.statusCode, 301);
    assert.equal(r.headers.location, '/ui/');
    r = await app.inject({ method: 'GET', url: '/ui?namespace=team-a' });
    assert.equal(r.headers.location, '/ui/?namespace=team-a', 'the query survives the redirect');

    for (const url of ['/ui/', '/ui/index.html', '/ui/services/orders', '/ui/services/orders/instances/a:b.c', '/ui/cluster', '/ui/events/']) {
      r = await app.inject({ method: 'GET', url });
      assert.equal(r.statusCode, 200, url);
      assert.equal(r.body, INDEX, url);
      assert.match(String(r.headers['content-type']), /^text\/html/, url);
      assert.equal(r.headers['cache-control'], 'no-cache', `${url}: index.html is revalidated every time`);
      assert.match(String(r.headers['content-security-policy']), /default-src 'self'.*frame-ancestors 'none'/, url);
      assert.equal(r.headers['x-content-type-options'], 'nosniff', url);
    }
    r = await app.inject({ method: 'HEAD', url: '/ui/services/orders' });
    assert.equal(r.statusCode, 200);

    r = await app.inject({ method: 'GET', url: '/ui/assets/app-3f2a9c.js' });
    assert.equal(r.statusCode, 200);
    assert.equal(r.body, 'console.log(1)');
    assert.match(String(r.headers['content-type']), /javascript/);
    assert.equal(r.headers['cache-control'], 'public, max-age=31536000, immutable');

    for (const url of ['/ui/assets/app-000000.js', '/ui/favicon.png', '/ui/%2e%2e/%2e%2e/etc/passwd.txt', '/ui/assets/..%2f..%2fpackage.json', '/ui/..%5c..%5cpackage.json', '/ui/assets/..%5cindex.html.js']) {
      r = await app.inject({ method: 'GET', url });
      assert.equal(r.statusCode, 404, url);
      assert.equal(r.json().code, 'NOT_FOUND', url);
      assert.equal(r.headers['cache-control'], undefined, `${url}: a 404 is not cached`);
    }

    r = await app.inject({ method: 'POST', url: '/ui/services/orders' });
    assert.equal(r.statusCode, 405);
    assert.equal(r.json().code, 'METHOD_NOT_ALLOWED');
    assert.equal(r.headers.allow, 'GET, HEAD');
    r = await app.inject({ method: 'DELETE', url: '/' });
    assert.equal(r.statusCode, 405);

    // The API around it is unchanged.
    r = await app.inject({ method: 'GET', url: '/v1/nothing' });
    assert.equal(r.statusCode, 404);
    assert.equal(r.json().code, 'NOT_FOUND');
    r = await app.inject({ method: 'GET', url: '/v1/services' });
    assert.equal(r.statusCode, 200);
    const paths = Object.keys(JSON.parse((await app.inject({ method: 'GET', url: '/v1/openapi.json' })).body).paths);
    assert.ok(!paths.some((p) => p.startsWith('/ui') || p === '/'), 'the dashboard is not part of the API document');
  } finally {
    await close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('no build: 503 DASHBOARD_NOT_BUILT naming the fix, until the files appear', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sb-ui-dist-'));
  const { app, close } = await appWith(dir);
  try {
    for (const url of ['/ui/', '/ui/services/orders']) {
      const r = await app.inject({ method: 'GET', url });
      assert.equal(r.statusCode, 503, url);
      assert.match(String(r.headers['content-type']), /application\/problem\+json/);
      const p = r.json();
      assert.equal(p.code, 'DASHBOARD_NOT_BUILT');
      assert.equal(p.type, 'urn:switchboard:error:DASHBOARD_NOT_BUILT');
      assert.match(p.hint, /npm run build/);
    }
    writeFileSync(join(dir, 'index.html'), INDEX);
    const r = await app.inject({ method: 'GET', url: '/ui/' });
    assert.equal(r.statusCode, 200, 'building while the agent runs is enough');
    assert.equal(r.body, INDEX);
  } finally {
    await close();
    rmSync(dir, { recursive: true, force: true });
  }
  const none = await appWith(null);
  try {
    const r = await none.app.inject({ method: 'GET', url: '/ui/' });
    assert.equal(r.statusCode, 503);
    assert.equal(r.json().code, 'DASHBOARD_NOT_BUILT');
  } finally {
    await none.close();
  }
});
