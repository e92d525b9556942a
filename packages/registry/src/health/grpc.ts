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
 * would cost more than the probe.
 */
import { Client, Metadata, credentials, status as grpcStatus, type ServiceError } from '@grpc/grpc-js';
import type { CheckResult } from '@switchboard/protocol';
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

/** gRPC health probes with their channels, one per target, least recently used closed first. */
export class GrpcProber {
  private readonly channels = new Map<string, Client>();

  constructor(private readonly maxChannels = MAX_GRPC_CHANNELS) {}

  /** Closes the channel to a target that is no longer checked. */
  release(target: string): void {
    this.channels.get(target)?.close();
    this.channels.delete(target);
  }

  close(): void {
    for (const c of this.channels.values()) c.close();
    this.channels.clear();
  }

  readonly probe = (t: ProbeTarget, signal: AbortSignal): Promise<CheckResult> => {
    const service = t.spec.grpcService ?? '';
    const what = `grpc.health.v1 Check of ${service === '' ? 'the server' : JSON.stringify(service)} at ${t.target}`;
    return new Promise((resolve) => {
      let call: ReturnType<Client['makeUnaryRequest']> | undefined;
      const onAbort = (): void => call?.cancel();
      try {
        call = this.channelFor(t.target).makeUnaryRequest(
          HEALTH_CHECK_METHOD,
          (s: string) => encodeHealthCheckRequest(s),
          (b: Buffer) => decodeHealthCheckResponse(b),
          service,
          new Metadata(),
          { deadline: Date.now() + t.spec.timeoutMs },
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
  };

  private channelFor(target: string): Client {
    let c = this.channels.get(target);
    if (c) {
      this.channels.delete(target); // keep the map in least-recently-used order
      this.channels.set(target, c);
      return c;
    }
    c = new Client(target, credentials.createInsecure(), { 'grpc.enable_retries': 0 });
    this.channels.set(target, c);
    while (this.channels.size > this.maxChannels) {
      const [oldest, client] = this.channels.entries().next().value as [string, Client];
      this.channels.delete(oldest);
      client.close();
    }
    return c;
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
