/**
 * The gRPC check: the standard health protocol, grpc.health.v1.Health/Check. Its two
 * messages are tiny, so they are encoded by hand instead of loading a .proto file:
 *
 *   message HealthCheckRequest  { string service = 1; }
 *   message HealthCheckResponse { ServingStatus status = 1; }
 *   enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
 *
 * SERVING is passing; everything else, and every call error, is critical. Plaintext
 * (h2c) only. Channels are kept per target and reused: an HTTP/2 connection per probe
 * would cost more than the probe. The target's host is resolved before each probe and
 * checked by the guard (networks.ts); the channel connects to that checked address.
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

/**
 * gRPC health probes with their channels, one per target, least recently used closed
 * first. A target's host is resolved by the guard before each probe and the channel goes
 * to the checked address (the target stays its authority); a target that resolves
 * elsewhere gets a new channel.
 */
export class GrpcProber {
  private readonly channels = new Map<string, { address: string; client: Client }>();

  constructor(
    private readonly guard: TargetGuard,
    private readonly maxChannels = MAX_GRPC_CHANNELS,
  ) {}

  /** Closes the channel to a target that is no longer checked. */
  release(target: string): void {
    this.channels.get(target)?.client.close();
    this.channels.delete(target);
  }

  close(): void {
    for (const c of this.channels.values()) c.client.close();
    this.channels.clear();
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
    return this.check(this.channelFor(t.target, ipTarget(address, hp.port)), service, what, t.spec.timeoutMs, signal);
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

  private channelFor(target: string, address: string): Client {
    const known = this.channels.get(target);
    this.channels.delete(target); // re-inserted last: the map stays in least-recently-used order
    if (known && known.address === address) {
      this.channels.set(target, known);
      return known.client;
    }
    known?.client.close();
    // No proxy from the environment (grpc_proxy, https_proxy): the connection must go to the
    // checked address itself, as the HTTP probes' does.
    const client = new Client(address, credentials.createInsecure(), { 'grpc.enable_retries': 0, 'grpc.default_authority': target, 'grpc.enable_http_proxy': 0 });
    this.channels.set(target, { address, client });
    while (this.channels.size > this.maxChannels) {
      const [oldest, c] = this.channels.entries().next().value as [string, { client: Client }];
      this.channels.delete(oldest);
      c.client.close();
    }
    return client;
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
