/**
 * The web dashboard (packages/dashboard) at /ui/: the files Vite built, served as they are.
 * Client routes (/ui/services/orders, ...) answer index.html so that a reload or a shared
 * link opens the right view; hashed assets are cached for a year, index.html never.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative, sep } from 'node:path';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { SwitchboardError } from '@switchboard/protocol';
import { sendProblem } from './problem.js';

/** Where the built dashboard is: packages/dashboard/dist, found through its package. */
export function defaultDashboardDir(): string | null {
  try {
    const pkg = createRequire(import.meta.url).resolve('@switchboard/dashboard/package.json');
    return join(dirname(pkg), 'dist');
  } catch {
    return null;
  }
}

const IMMUTABLE = 'public, max-age=31536000, immutable';
/** Files that are not content-hashed (favicon, robots) may change with any build. */
const SHORT = 'public, max-age=300';

/**
 * The page loads only its own files and talks only to its own origin; it is never framed.
 * (React sets style properties through the DOM, which style-src does not restrict.)
 */
const PAGE_HEADERS = {
  'content-security-policy': "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'same-origin',
};

/** The last segment names a file (`app.js`), not a client route (`orders`). */
function looksLikeFile(rel: string): boolean {
  const last = rel.slice(rel.lastIndexOf('/') + 1);
  return /\.[A-Za-z0-9]{1,8}$/.test(last);
}

function notBuilt(dir: string | null): SwitchboardError {
  return new SwitchboardError('DASHBOARD_NOT_BUILT', `the dashboard is not built${dir ? ` (no ${join(dir, 'index.html')})` : ' (package @switchboard/dashboard not found)'}`, {
    hint: 'run npm run build at the repository root, then reload; the REST API works without it',
  });
}

export async function uiRoutes(app: FastifyInstance, dir: string | null = defaultDashboardDir()): Promise<void> {
  // Checked per request until found, so that building while the agent runs is enough.
  let built = false;
  const isBuilt = (): boolean => (built ||= dir !== null && existsSync(join(dir, 'index.html')));

  if (dir !== null) {
    const root = dir;
    await app.register(fastifyStatic, {
      root,
      serve: false,
      cacheControl: false,
      decorateReply: true,
      // Only for files that are sent: a 404 must not be cached for a year.
      setHeaders: (res, file) => {
        const rel = relative(root, file);
        res.setHeader('cache-control', rel === 'index.html' ? 'no-cache' : rel.startsWith(`assets${sep}`) ? IMMUTABLE : SHORT);
      },
    });
  }

  const sendIndex = (reply: FastifyReply): FastifyReply =>
    reply.headers(PAGE_HEADERS).type('text/html; charset=utf-8').sendFile('index.html');

  const hide = { schema: { hide: true } };
  app.get('/', hide, async (_req, reply) => reply.redirect('/ui/', 302));
  app.get('/ui', hide, async (req, reply) => {
    const q = req.url.indexOf('?');
    return reply.redirect(q < 0 ? '/ui/' : `/ui/${req.url.slice(q)}`, 301);
  });
  app.get('/ui/*', hide, async (req: FastifyRequest, reply) => {
    if (!isBuilt()) return sendProblem(reply, notBuilt(dir));
    const rel = (req.params as Record<string, string>)['*'] ?? '';
    if (rel === '' || rel === 'index.html') return sendIndex(reply);
    // (A backslash too: the file server reads it as a separator on some systems, and refused
    // `..%5c` with a 403 that became a 400.)
    if (rel.split(/[/\\]/).includes('..') || rel.includes('\0')) {
      return sendProblem(reply, new SwitchboardError('NOT_FOUND', `no file /ui/${rel}`, { hint: 'open /ui/' }));
    }
    // Under services/ every name is the client's (instance ids may contain dots).
    if (rel.startsWith('services/') || !(rel.startsWith('assets/') || looksLikeFile(rel))) return sendIndex(reply);
    // A missing file falls through to the 404 problem of app.ts.
    return reply.sendFile(rel);
  });
}
