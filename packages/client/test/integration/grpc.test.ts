// Goal: a grpc-js client dials `switchboard:///echo` through the resolver: calls reach every
// registered instance (round_robin), and an instance that is deregistered stops getting
// calls without the gRPC client doing anything.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { connect } from '../../src/index.js';
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

test('grpc-js dials switchboard:///echo and follows the registry', async () => {
  const agent = await spawnAgent(['--dev']);
  const s1 = await echoServer('one');
  const s2 = await echoServer('two');
  const provider = await connect({ endpoints: [agent.url] });
  const consumer = await connect({ endpoints: [agent.url] });
  const Client = grpc.makeGenericClientConstructor(definition, 'Echo');
  let stub: grpc.Client | undefined;
  try {
    await provider.register({ service: 'echo', id: 'one', address: '127.0.0.1', port: s1.port, protocol: 'grpc' });
    const two = await provider.register({ service: 'echo', id: 'two', address: '127.0.0.1', port: s2.port, protocol: 'grpc' });
    registerGrpcResolver(consumer);
    stub = new Client(grpcTarget('echo'), grpc.credentials.createInsecure());
    const call = () =>
      new Promise<string>((resolve, reject) =>
        (stub as unknown as { Echo(req: Buffer, opts: grpc.CallOptions, cb: (e: Error | null, r?: Buffer) => void): void }).Echo(Buffer.from('hi'), { deadline: Date.now() + 5_000 }, (e, r) => (e ? reject(e) : resolve(r!.toString()))),
      );
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
    stub?.close();
    await provider.close();
    await consumer.close();
    s1.server.forceShutdown();
    s2.server.forceShutdown();
    await agent.kill();
  }
});

test('an unreachable instance does not make the resolver report the same list again and again', async () => {
  const agent = await spawnAgent(['--dev']);
  const live = await echoServer('live');
  const dead = await echoServer('dead');
  const deadPort = dead.port;
  dead.server.forceShutdown(); // its process died before its lease ran out: still listed, up
  const provider = await connect({ endpoints: [agent.url] });
  const consumer = await connect({ endpoints: [agent.url] });
  const Client = grpc.makeGenericClientConstructor(definition, 'Echo');
  let stub: grpc.Client | undefined;
  try {
    await provider.register({ service: 'half', id: 'live', address: '127.0.0.1', port: live.port, protocol: 'grpc' });
    await provider.register({ service: 'half', id: 'dead', address: '127.0.0.1', port: deadPort, protocol: 'grpc' });
    registerGrpcResolver(consumer);
    // The resolver reads the view's instances each time it reports: count the reads.
    const view = consumer.service('half');
    await view.ready();
    const instances = view.instances.bind(view);
    let reads = 0;
    view.instances = () => {
      reads++;
      return instances();
    };
    stub = new Client(grpcTarget('half'), grpc.credentials.createInsecure());
    const call = () =>
      new Promise<string>((resolve) =>
        (stub as unknown as { Echo(req: Buffer, opts: grpc.CallOptions, cb: (e: Error | null, r?: Buffer) => void): void }).Echo(Buffer.from('hi'), { deadline: Date.now() + 2_000 }, (e, r) => resolve(e ? 'error' : r!.toString())),
      );
    const until = Date.now() + 1_500;
    const got = new Set<string>();
    while (Date.now() < until) got.add(await call());
    assert.ok(got.has('live'), `calls reach the live instance: ${[...got].join(', ')}`);
    assert.ok(reads < 50, `${reads} resolutions in 1.5 s`);
  } finally {
    stub?.close();
    await provider.close();
    await consumer.close();
    live.server.forceShutdown();
    await agent.kill();
  }
});

test('a channel that went idle (grpc-js dropped its resolution) resolves again on its next call', async () => {
  const agent = await spawnAgent(['--dev']);
  const s1 = await echoServer('one');
  const provider = await connect({ endpoints: [agent.url] });
  const consumer = await connect({ endpoints: [agent.url] });
  const Client = grpc.makeGenericClientConstructor(definition, 'Echo');
  let stub: grpc.Client | undefined;
  try {
    await provider.register({ service: 'idle', id: 'one', address: '127.0.0.1', port: s1.port, protocol: 'grpc' });
    registerGrpcResolver(consumer);
    stub = new Client(grpcTarget('idle'), grpc.credentials.createInsecure(), { 'grpc.client_idle_timeout_ms': 1_000 });
    const call = () =>
      new Promise<string>((resolve) =>
        (stub as unknown as { Echo(req: Buffer, opts: grpc.CallOptions, cb: (e: Error | null, r?: Buffer) => void): void }).Echo(Buffer.from('hi'), { deadline: Date.now() + 3_000 }, (e, r) => resolve(e ? `error: ${e.message}` : r!.toString())),
      );
    assert.equal(await call(), 'one');
    await new Promise((r) => setTimeout(r, 2_500)); // idle: grpc-js destroys the resolver
    assert.equal(await call(), 'one', 'the same list is reported again after the idle');
  } finally {
    stub?.close();
    await provider.close();
    await consumer.close();
    s1.server.forceShutdown();
    await agent.kill();
  }
});
