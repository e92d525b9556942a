/**
 * The HTTP check: GET the target; 2xx is passing, 429 (the instance is alive but shedding
 * load) is warning, anything else critical. With `expectBody`, a 2xx answer passes only if
 * its body contains that text. Redirects are not followed: a health endpoint that
 * redirects is misconfigured, and following could probe another host.
 */
import { STATUS_CODES } from 'node:http';
import { Client, buildConnector, request } from 'undici';
import type { CheckResult } from '@switchboard/protocol';
import { deniedOutput, type TargetGuard } from './networks.js';
import { critical, describeError, type ProbeTarget } from './runner.js';

/** Bytes of a body searched for `expectBody`; a health page is small. */
export const MAX_HEALTH_BODY_BYTES = 64 * 1024;

/**
 * The connections of HTTP checks, through the guard: an IP literal is checked before it is
 * dialed, a name by the connection's own lookup (TLS still verifies the name).
 */
function guardedConnector(guard: TargetGuard): buildConnector.connector {
  const connect = buildConnector({ lookup: guard.lookup });
  return (opts, callback) => {
    try {
      guard.checkLiteral(opts.hostname);
    } catch (err) {
      return callback(err as Error, null);
    }
    connect(opts, callback);
  };
}

/**
 * HTTP probes of one node, their connections checked by its guard. Each probe has a client
 * of its own, destroyed when the probe ends: one connection per run, closed after it. A
 * node checking thousands of targets must not hold thousands of idle sockets, and a fresh
 * connection is what a new client would see. A shared pool did neither: it kept idle
 * sockets for seconds (after the check was gone too) and opened a spare connection after
 * each aborted probe.
 */
export class HttpProber {
  private readonly connect: buildConnector.connector;
  /** The clients of the probes in progress, destroyed by close(). */
  private readonly clients = new Set<Client>();

  constructor(guard: TargetGuard) {
    this.connect = guardedConnector(guard);
  }

  close(): void {
    for (const client of this.clients) client.destroy().catch(() => undefined);
    this.clients.clear();
  }

  readonly probe = async (t: ProbeTarget, signal: AbortSignal): Promise<CheckResult> => {
    let origin: string;
    try {
      origin = new URL(t.target).origin;
    } catch {
      return critical(`${t.target} is not a URL`);
    }
    const client = new Client(origin, { connect: this.connect, pipelining: 1 });
    this.clients.add(client);
    try {
      return await probeHttp(t, signal, client);
    } finally {
      this.clients.delete(client);
      client.destroy().catch(() => undefined);
    }
  };
}

async function probeHttp(t: ProbeTarget, signal: AbortSignal, client: Client): Promise<CheckResult> {
  let res: Awaited<ReturnType<typeof request>>;
  try {
    res = await request(t.target, {
      method: 'GET',
      signal,
      dispatcher: client,
      reset: true,
      headers: { 'user-agent': 'switchboard-health-check', accept: 'text/plain, application/json, */*' },
    });
  } catch (err) {
    return critical(deniedOutput(err, t.target) ?? `GET ${t.target}: ${describeError(err)}`);
  }
  const code = res.statusCode;
  const line = `HTTP ${code} ${STATUS_CODES[code] ?? ''}`.trim();
  const expect = t.spec.expectBody;
  if (code < 200 || code >= 300 || expect === null) {
    // The status is the answer: the rest of the body is not waited for. Destroying it
    // closes the connection now; draining it in the background (after the check's slot
    // and deadline were released) kept a socket open per run for as long as a streaming
    // or slow body lasted.
    res.body.on('error', () => undefined); // the abort this causes is the point
    res.body.destroy();
    if (code >= 200 && code < 300) return { status: 'passing', output: line };
    return { status: code === 429 ? 'warning' : 'critical', output: line };
  }
  try {
    const found = await bodyContains(res.body, Buffer.from(expect, 'utf8'), MAX_HEALTH_BODY_BYTES);
    return found ? { status: 'passing', output: `${line}, body contains ${JSON.stringify(expect)}` } : critical(`${line}, but the body lacks ${JSON.stringify(expect)}`);
  } catch (err) {
    return critical(`${line}, reading the body failed: ${describeError(err)}`);
  }
}

/**
 * Whether the first `max` bytes of a body hold `needle`, searched after each chunk: a
 * health page that streams on (or stalls) after the text passes as soon as the text is
 * seen, instead of timing out waiting for its end. The last `needle.length - 1` bytes are
 * kept for the next search, so a match split between chunks is found. The body is
 * destroyed once the answer is known (the connection goes with the probe's client).
 */
async function bodyContains(body: AsyncIterable<Buffer> & { destroy(): void }, needle: Buffer, max: number): Promise<boolean> {
  let tail = Buffer.alloc(0);
  let size = 0;
  let found = false;
  for await (const chunk of body) {
    const part = chunk.subarray(0, max - size);
    size += part.length;
    const window = Buffer.concat([tail, part]);
    if (window.includes(needle)) found = true;
    if (found || size >= max) break;
    tail = window.subarray(Math.max(0, window.length - (needle.length - 1)));
  }
  (body as unknown as NodeJS.EventEmitter).on('error', () => undefined);
  body.destroy();
  return found;
}
