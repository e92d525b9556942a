/**
 * The HTTP check: GET the target; 2xx is passing, 429 (the instance is alive but shedding
 * load) is warning, anything else critical. With `expectBody`, a 2xx answer passes only if
 * its body contains that text. Redirects are not followed: a health endpoint that
 * redirects is misconfigured, and following could probe another host.
 */
import { STATUS_CODES } from 'node:http';
import { Agent, request } from 'undici';
import type { CheckResult } from '@switchboard/protocol';
import { critical, describeError, type ProbeTarget } from './runner.js';

/** Bytes of a body searched for `expectBody`; a health page is small. */
export const MAX_HEALTH_BODY_BYTES = 64 * 1024;

/**
 * One connection per request, closed after it (`reset`): a node checking thousands of
 * targets must not hold thousands of idle sockets, and a fresh connection is what a new
 * client would see.
 */
const agent = new Agent({ pipelining: 0 });

export async function probeHttp(t: ProbeTarget, signal: AbortSignal): Promise<CheckResult> {
  let res: Awaited<ReturnType<typeof request>>;
  try {
    res = await request(t.target, {
      method: 'GET',
      signal,
      dispatcher: agent,
      reset: true,
      headers: { 'user-agent': 'switchboard-health-check', accept: 'text/plain, application/json, */*' },
    });
  } catch (err) {
    return critical(`GET ${t.target}: ${describeError(err)}`);
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
    const body = await readSome(res.body, MAX_HEALTH_BODY_BYTES);
    return body.includes(expect) ? { status: 'passing', output: `${line}, body contains ${JSON.stringify(expect)}` } : critical(`${line}, but the body lacks ${JSON.stringify(expect)}`);
  } catch (err) {
    return critical(`${line}, reading the body failed: ${describeError(err)}`);
  }
}

async function readSome(body: AsyncIterable<Buffer> & { destroy(): void }, max: number): Promise<string> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    parts.push(chunk);
    size += chunk.length;
    if (size >= max) {
      (body as unknown as NodeJS.EventEmitter).on('error', () => undefined);
      body.destroy();
      break;
    }
  }
  return Buffer.concat(parts).subarray(0, max).toString('utf8');
}
