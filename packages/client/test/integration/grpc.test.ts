// Goal: a grpc-js client dials `switchboard:///echo` through the resolver: calls reach every
// registered instance (round_robin), and an instance that is deregistered stops getting
// calls without the gRPC client doing anything.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { connect, type SwitchboardClient } from '../../src/index.js';
import { grpcTarget, registerGrpcResolver } from '../../src/grpc.js';
import { spawnAgent, waitFor } from '../helpers.js';

const identity = (b: Buffer): Buffer => b;
const definition: grpc.ServiceDefinition = {
  Echo: { path: '/test.Echo/Echo', requestStream: false, responseStream: false, requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity },
};

async function echoServer(name: string): Promise<{ port: number; server: grpc.Server }> {
  const server = new grpc.Server();
  server.addService(definition, { Echo: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, Buffer.from(name)) });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  return { port, server };
}

/**
 * An agent, a provider and a consumer client with the resolver registered, and the echo
 * servers named; `dial` makes a stub for a service with channel options. Everything is
 * closed by `close()`.
 */
async function world(names: string[]): Promise<{
  provider: SwitchboardClient;
  consumer: SwitchboardClient;
  servers: Map<string, { port: number; server: grpc.Server }>;
  dial(service: string, options?: grpc.ChannelOptions): (deadlineMs?: number) => Promise<string>;
  close(): Promise<void>;
}> {
  const agent = await spawnAgent(['--dev']);
  const servers = new Map<string, { port: number; server: grpc.Server }>();
  for (const n of names) servers.set(n, await echoServer(n));
  const provider = await connect({ endpoints: [agent.url] });
  const consumer = await connect({ endpoints: [agent.url] });
  registerGrpcResolver(consumer);
  const Client = grpc.makeGenericClientConstructor(definition, 'Echo');
  const stubs: grpc.Client[] = [];
  return {
    provider,
    consumer,
    servers,
    dial(service, options = {}) {
      const stub = new Client(grpcTarget(service), grpc.credentials.createInsecure(), options);
      stubs.push(stub);
      // Resolves with the answering server's name, or `error: <message>`.
      return (deadlineMs = 5_000) =>
        new Promise<string>((resolve) =>
          (stub as unknown as { Echo(req: Buffer, opts: grpc.CallOptions, cb: (e: Error | null, r?: Buffer) => void): void }).Echo(Buffer.from('hi'), { deadline: Date.now() + deadlineMs }, (e, r) => resolve(e ? `error: ${e.message}` : r!.toString())),
        );
    },
    async close() {
      for (const s of stubs) s.close();
      await provider.close();
      await consumer.close();
      for (const { server } of servers.values()) server.forceShutdown();
      await agent.kill();
    },
  };
}

test('grpc-js dials switchboard:///echo and follows the registry', async () => {
  const w = await world(['one', 'two']);
  try {
    await w.provider.register({ service: 'echo', id: 'one', address: '127.0.0.1', port: w.servers.get('one')!.port, protocol: 'grpc' });
    const two = await w.provider.register({ service: 'echo', id: 'two', address: '127.0.0.1', port: w.servers.get('two')!.port, protocol: 'grpc' });
    const call = w.dial('echo');
    const seen = new Set<string>();
    for (let i = 0; i < 20; i++) seen.add(await call());
    assert.deepEqual([...seen].sort(), ['one', 'two']);
    await two.deregister();
    await waitFor(async () => {
      const got = new Set<string>();
      for (let i = 0; i < 6; i++) got.add(await call());
      return got.size === 1 && got.has('one');
    }, 5_000, 'calls to go to "one" only');
  } finally {
    await w.close();
  }
});

test('an unreachable instance does not make the resolver report the same list again and again', async () => {
  const w = await world(['live', 'dead']);
  try {
    const dead = w.servers.get('dead')!;
    dead.server.forceShutdown(); // its process died before its lease ran out: still listed, up
    await w.provider.register({ service: 'half', id: 'live', address: '127.0.0.1', port: w.servers.get('live')!.port, protocol: 'grpc' });
    await w.provider.register({ service: 'half', id: 'dead', address: '127.0.0.1', port: dead.port, protocol: 'grpc' });
    // The resolver reads the view's instances each time it reports: count the reads.
    const view = w.consumer.service('half');
    await view.ready();
    const instances = view.instances.bind(view);
    let reads = 0;
    view.instances = () => {
      reads++;
      return instances();
    };
    const call = w.dial('half');
    const until = Date.now() + 1_500;
    const got = new Set<string>();
    while (Date.now() < until) got.add(await call(2_000));
    assert.ok(got.has('live'), `calls reach the live instance: ${[...got].join(', ')}`);
    assert.ok(reads < 50, `${reads} resolutions in 1.5 s`);
  } finally {
    await w.close();
  }
});

test('a channel that went idle (grpc-js dropped its resolution) resolves again on its next call', async () => {
  const w = await world(['one']);
  try {
    await w.provider.register({ service: 'idle', id: 'one', address: '127.0.0.1', port: w.servers.get('one')!.port, protocol: 'grpc' });
    const call = w.dial('idle', { 'grpc.client_idle_timeout_ms': 1_000 });
    assert.equal(await call(3_000), 'one');
    await new Promise((r) => setTimeout(r, 2_500)); // idle: grpc-js destroys the resolver
    assert.equal(await call(3_000), 'one', 'the same list is reported again after the idle');
  } finally {
    await w.close();
  }
});
