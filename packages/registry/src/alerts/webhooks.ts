/**
 * Delivery of alert messages to one webhook: a bounded FIFO queue, one message in flight
 * at a time (so that an episode's resolved message never overtakes its firing one), each
 * POSTed until the webhook answers 2xx, retried with capped exponential backoff, given up
 * after a set number of attempts. A message is delivered at most once per webhook as far
 * as this node can tell (a 2xx ends it); a receiver that answered 2xx to a request the
 * node never saw the answer of may get it again: the episode id tells the two apart.
 */
import type { AlertMessage, AlertWebhookStatus } from '@switchboard/protocol';
import { retryDelayMs } from './rules.js';

export interface WebhookLimits {
  alertDeliveryAttempts: number;
  alertMaxPending: number;
  alertRetryBaseMs: number;
  alertRetryMaxMs: number;
  alertWebhookTimeoutMs: number;
}

export type DeliveryResult = 'delivered' | 'retried' | 'failed' | 'dropped';

export interface WebhookOptions {
  url: string;
  limits: WebhookLimits;
  /** Told of every outcome (metrics, logs). */
  onResult?: (result: DeliveryResult, message: AlertMessage, error: string | null) => void;
  /** The HTTP POST; global fetch unless a test replaces it. */
  fetch?: typeof fetch;
}

interface Queued {
  message: AlertMessage;
  attempts: number;
}

/**
 * Where a webhook's messages go: its URL without the user and password it may carry, which
 * are sent as HTTP basic authentication instead (fetch refuses a URL with credentials).
 */
export function webhookTarget(url: string): { url: string; authorization: string | null } {
  const u = new URL(url);
  if (u.username === '' && u.password === '') return { url, authorization: null };
  const credentials = `${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`;
  u.username = '';
  u.password = '';
  return { url: u.toString(), authorization: `Basic ${Buffer.from(credentials).toString('base64')}` };
}

/** `text` with every form of the webhook's URL replaced by its display form. */
function scrub(text: string, ...urls: string[]): string {
  let out = text;
  for (const u of urls) out = out.split(u).join(displayUrl(u));
  return out;
}

/** The URL as shown in status: no credentials, no query (either may hold a secret). */
export function displayUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return '(invalid URL)';
  }
}

export class Webhook {
  private readonly queue: Queued[] = [];
  private running = false;
  private inFlight: Queued | null = null;
  private closed = false;
  private timer: NodeJS.Timeout | null = null;
  private wake: (() => void) | null = null;
  private readonly abort = new AbortController();
  private delivered = 0;
  private failed = 0;
  private dropped = 0;
  private lastError: string | null = null;
  private lastDeliveredAt: string | null = null;

  private readonly target: { url: string; authorization: string | null };

  constructor(private readonly opts: WebhookOptions) {
    this.target = webhookTarget(opts.url);
  }

  get pending(): number {
    return this.queue.length;
  }

  send(message: AlertMessage): void {
    if (this.closed) return;
    const item: Queued = { message, attempts: 0 };
    if (this.queue.length >= Math.max(1, this.opts.limits.alertMaxPending)) {
      // The oldest message not being attempted right now goes; when the only one queued
      // is in flight (alertMaxPending 1), the new one goes instead.
      const at = this.queue.findIndex((q) => q !== this.inFlight);
      const [old] = at >= 0 ? this.queue.splice(at, 1) : [item];
      this.dropped++;
      this.opts.onResult?.('dropped', (old as Queued).message, 'the queue was full (alertMaxPending)');
      if (at < 0) return;
    }
    this.queue.push(item);
    if (!this.running) void this.run();
  }

  status(): AlertWebhookStatus {
    return { url: displayUrl(this.opts.url), pending: this.queue.length, delivered: this.delivered, failed: this.failed, dropped: this.dropped, lastError: this.lastError, lastDeliveredAt: this.lastDeliveredAt };
  }

  /** Stops: pending messages are not delivered, an attempt in flight is cut off. */
  close(): void {
    this.closed = true;
    this.abort.abort();
    if (this.timer) clearTimeout(this.timer);
    this.wake?.();
  }

  private async run(): Promise<void> {
    this.running = true;
    const limits = this.opts.limits;
    try {
      while (!this.closed && this.queue.length > 0) {
        const item = this.queue[0] as Queued;
        item.attempts++;
        this.inFlight = item;
        const error = await this.attempt(item.message);
        this.inFlight = null;
        if (this.closed) return;
        if (error === null) {
          this.queue.shift();
          this.delivered++;
          this.lastDeliveredAt = new Date().toISOString();
          this.opts.onResult?.('delivered', item.message, null);
          continue;
        }
        const why = typeof error === 'string' ? error : error.final;
        this.lastError = why;
        // Given up after the last attempt, or at once when the webhook refuses the message
        // (a 4xx other than 408 and 429): retrying held every later alert up for a minute.
        if (typeof error !== 'string' || item.attempts >= Math.max(1, limits.alertDeliveryAttempts)) {
          this.queue.shift();
          this.failed++;
          this.opts.onResult?.('failed', item.message, why);
          continue;
        }
        this.opts.onResult?.('retried', item.message, why);
        await this.sleep(retryDelayMs(item.attempts + 1, limits.alertRetryBaseMs, limits.alertRetryMaxMs));
      }
    } finally {
      this.running = false;
    }
  }

  /**
   * One POST; null when the webhook answered 2xx, else what went wrong (`final`: a refusal
   * that repeating will not change, a 4xx other than 408 and 429).
   */
  private async attempt(message: AlertMessage): Promise<string | null | { final: string }> {
    const post = this.opts.fetch ?? fetch;
    const signal = AbortSignal.any([this.abort.signal, AbortSignal.timeout(this.opts.limits.alertWebhookTimeoutMs)]);
    const { url, authorization } = this.target;
    try {
      const res = await post(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'user-agent': 'switchboard-alerts/1', ...(authorization ? { authorization } : {}) },
        body: JSON.stringify({ ...message, sentAt: new Date().toISOString() }),
        signal,
      });
      // The reply's body is not needed: released unread, whatever its size.
      await res.body?.cancel().catch(() => undefined);
      if (res.status >= 200 && res.status < 300) return null;
      const why = `the webhook answered ${res.status}`;
      return res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429 ? { final: why } : why;
    } catch (err) {
      const e = err as Error & { cause?: { code?: string; message?: string } };
      if (e.name === 'TimeoutError') return `no answer within ${this.opts.limits.alertWebhookTimeoutMs} ms (alertWebhookTimeoutMs)`;
      // Shown in /v1/status and the log: never the URL's query, which may hold a secret.
      return scrub(e.cause?.code ?? e.cause?.message ?? e.message, this.opts.url, url);
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.wake = resolve;
      this.timer = setTimeout(() => {
        this.timer = null;
        this.wake = null;
        resolve();
      }, ms);
      this.timer.unref();
    });
  }
}
