/**
 * The gRPC check: the standard health protocol, grpc.health.v1.Health/Check. Its two
 * messages are tiny, so they are encoded by hand instead of loading a .proto file:
 *
 *   message HealthCheckRequest  { string service = 1; }
 *   message HealthCheckResponse { ServingStatus status = 1; }
 *   enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
 *
 * SERVING is passing; everything else, and every call error, is critical. Plaintext
 * (h2c) only. Channels are kept per target and resolved address and reused: an HTTP/2
 * connection per probe would cost more than the probe. The target's host is resolved before
 * each probe and checked by the guard (networks.ts); the channel connects to that checked
 * address.
 */
import { isIP } from 'node:net';
import { Client, Metadata, credentials, status as grpcStatus, type ServiceError } from '@grpc/grpc-js';
import { parseHostPort, type CheckResult } from '@switchboard/protocol';
import { deniedOutput, type TargetGuard } from './networks.js';
import { critical, describeError, type ProbeTarget } from './runner.js';

export const HEALTH_CHECK_METHOD = '/grpc.health.v1.Health/Check';

/** Most gRPC channels kept open; the least recently used is closed beyond it. */
export const MAX_GRPC_CHANNELS = 1024;

const SERVING_STATUS = ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN'] as const;

/** Encodes HealthCheckRequest: field 1 (length-delimited) only when the name is not empty. */
export function encodeHealthCheckRequest(service: string): Buffer {
  if (service === '') return Buffer.alloc(0);
  const name = Buffer.from(service, 'utf8');
  return Buffer.concat([Buffer.from([0x0a]), encodeVarint(name.length), name]);
}

/** Decodes HealthCheckResponse; unknown fields are skipped, a missing status is UNKNOWN (0). */
export function decodeHealthCheckResponse(buf: Buffer): { status: number } {
  let status = 0;
  let i = 0;
  while (i < buf.length) {
    const [key, afterKey] = readVarint(buf, i);
    const field = key >>> 3;
    const wire = key & 7;
    i = afterKey;
    if (wire === 0) {
      const [value, next] = readVarint(buf, i);
      if (field === 1) status = value;
      i = next;
    } else if (wire === 2) {
      const [len, next] = readVarint(buf, i);
      i = next + len;
    } else if (wire === 1) i += 8;
    else if (wire === 5) i += 4;
    else throw new Error(`unsupported protobuf wire type ${wire}`);
    if (i > buf.length) throw new Error('truncated HealthCheckResponse');
  }
  return { status };
}

export function encodeVarint(n: number): Buffer {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return Buffer.from(out);
}

function readVarint(buf: Buffer, at: number): [number, number] {
  let value = 0;
  for (let shift = 0, i = at; i < buf.length && shift < 35; shift += 7, i++) {
    const b = buf[i] as number;
    value += (b & 0x7f) * 2 ** shift;
    if ((b & 0x80) === 0) return [value, i + 1];
  }
  throw new Error('malformed varint in HealthCheckResponse');
}

/** The gRPC address of a checked IP (grpc-js resolves no name in it). */
function ipTarget(address: string, port: number): string {
  return isIP(address) === 6 ? `ipv6:[${address}]:${port}` : `ipv4:${address}:${port}`;
}

interface Channel {
  readonly target: string;
  readonly address: string;
  readonly client: Client;
  /** Calls in flight on it: closing the channel would fail them. */
  calls: number;
  /** Out of the map (the target resolved elsewhere, or beyond the bound): closed when its last call ends. */
  retired: boolean;
}

/**
 * gRPC health probes with their channels, one per target and resolved address, least
 * recently used closed first. A target's host is resolved by the guard before each probe
 * and the channel goes to the checked address (the target stays its authority); a target
 * that resolves elsewhere gets a new channel. Another check of the same target may have a
 * call in flight on the old channel (a name answered round-robin): the old channel is
 * closed only once its calls have ended, never under them.
 */
export class GrpcProber {
  /** `<address> <target>` -> its channel, least recently used first. */
  private readonly channels = new Map<string, Channel>();

  constructor(
    private readonly guard: TargetGuard,
    private readonly maxChannels = MAX_GRPC_CHANNELS,
  ) {}

  /** Closes the channels to a target that is no longer checked (once their calls end). */
  release(target: string): void {
    for (const [key, c] of this.channels) if (c.target === target) this.retire(key, c);
  }

  close(): void {
    for (const c of this.channels.values()) c.client.close();
    this.channels.clear();
  }

  /** The number of open channels (for tests). */
  get size(): number {
    return this.channels.size;
  }

  readonly probe = async (t: ProbeTarget, signal: AbortSignal): Promise<CheckResult> => {
    const service = t.spec.grpcService ?? '';
    const what = `grpc.health.v1 Check of ${service === '' ? 'the server' : JSON.stringify(service)} at ${t.target}`;
    const hp = parseHostPort(t.target);
    if (!hp) return critical(`${t.target} is not host:port`);
    let address: string;
    try {
      address = (await this.guard.resolve(hp.host)).address;
    } catch (err) {
      return critical(deniedOutput(err, t.target) ?? `${what}: ${describeError(err)}`);
    }
    if (signal.aborted) return critical(`${what}: timed out (cancelled)`);
    const channel = this.channelFor(t.target, ipTarget(address, hp.port));
    channel.calls++;
    try {
      return await this.check(channel.client, service, what, t.spec.timeoutMs, signal);
    } finally {
      if (--channel.calls === 0 && channel.retired) channel.client.close();
    }
  };

  private check(client: Client, service: string, what: string, timeoutMs: number, signal: AbortSignal): Promise<CheckResult> {
    return new Promise((resolve) => {
      let call: ReturnType<Client['makeUnaryRequest']> | undefined;
      const onAbort = (): void => call?.cancel();
      try {
        call = client.makeUnaryRequest(
          HEALTH_CHECK_METHOD,
          (s: string) => encodeHealthCheckRequest(s),
          (b: Buffer) => decodeHealthCheckResponse(b),
          service,
          new Metadata(),
          { deadline: Date.now() + timeoutMs },
          (err: ServiceError | null, res?: { status: number }) => {
            signal.removeEventListener('abort', onAbort);
            if (err) return resolve(critical(`${what}: ${callError(err)}`));
            const name = SERVING_STATUS[res?.status ?? 0] ?? `status ${res?.status}`;
            resolve(name === 'SERVING' ? { status: 'passing', output: `${what}: SERVING` } : critical(`${what}: ${name}`));
          },
        );
      } catch (err) {
        return resolve(critical(`${what}: ${describeError(err)}`));
      }
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  private channelFor(target: string, address: string): Channel {
    const key = `${address} ${target}`;
    const known = this.channels.get(key);
    if (known) {
      this.channels.delete(key); // re-inserted last: the map stays in least-recently-used order
      this.channels.set(key, known);
      return known;
    }
    // The target resolved elsewhere: its channels to other addresses go (once idle).
    for (const [k, c] of this.channels) if (c.target === target) this.retire(k, c);
    // No proxy from the environment (grpc_proxy, https_proxy): the connection must go to the
    // checked address itself, as the HTTP probes' does.
    const client = new Client(address, credentials.createInsecure(), { 'grpc.enable_retries': 0, 'grpc.default_authority': target, 'grpc.enable_http_proxy': 0 });
    const channel: Channel = { target, address, client, calls: 0, retired: false };
    this.channels.set(key, channel);
    while (this.channels.size > this.maxChannels) {
      const [oldest, c] = this.channels.entries().next().value as [string, Channel];
      this.retire(oldest, c);
    }
    return channel;
  }

  /** Takes a channel out of the map; it is closed now if idle, else when its last call ends. */
  private retire(key: string, c: Channel): void {
    this.channels.delete(key);
    c.retired = true;
    if (c.calls === 0) c.client.close();
  }
}

function callError(err: ServiceError): string {
  switch (err.code) {
    case grpcStatus.UNIMPLEMENTED:
      return 'the server does not implement grpc.health.v1.Health (UNIMPLEMENTED)';
    case grpcStatus.DEADLINE_EXCEEDED:
      return 'timed out (DEADLINE_EXCEEDED)';
    case grpcStatus.CANCELLED:
      return 'timed out (cancelled)';
    default:
      return `${err.details || err.message} (${grpcStatus[err.code] ?? err.code})`;
  }
}
