// Goal: cp agents whose API requires tokens and serves HTTPS still add up the consumer
// reports of an instance on the one node that counts them: a node forwards a report to
// that node over the scheme it announced, with the token file's forward token (or, in a
// file without one, its first write token, with a warning at start), trusting the CA it was given
// (--tls-ca-file) or the certificate the nodes share. A forward the other node refuses
// (its token) or that this node cannot verify (its certificate) is counted here instead,
// counted in /v1/status and said in the log with the setting to change, once a minute.
// A SIGHUP while a node starts (waiting for etcd) does not end it: the token file is read
// again once it is ready. The certificates are made here, with openssl; etcd is a real
// 3-member cluster.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { instanceKey } from '../../src/core/registry.js';
import { rendezvousOwner } from '../../src/core/rendezvous.js';
import { BIN, spawnAgent, type AgentProcess } from '../integration/process.js';
import { makeTestPki } from '../support/pki.js';
import { waitUntil } from '../support/wait.js';
import { EtcdCluster } from './etcd-cluster.js';
import { freshPrefix } from './nodes.js';

/** What clients of the test send; every node accepts it. */
const CLIENT = 'cp-client-write-token-0123456789abcdef';
/** What the nodes forward with. */
const FORWARD = 'cp-forward-token-0123456789abcdef0123';
/** A forward token only the node that is given it has. */
const STRAY = 'cp-stray-forward-token-0123456789abcdef';

let etcd: EtcdCluster;
let dir: string;
const at = (f: string): string => join(dir, f);
let client: Agent;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sb-cp-api-auth-'));
  makeTestPki(dir);
  writeFileSync(at('tokens'), `write ${CLIENT}\nforward ${FORWARD}\n`, { mode: 0o600 });
  // The first forward token is the one sent, although a write token comes first; the others are accepted.
  writeFileSync(at('stray-tokens'), `write ${CLIENT}\nforward ${STRAY}\nforward ${FORWARD}\n`, { mode: 0o600 });
  writeFileSync(at('write-only-tokens'), `write ${CLIENT}\n`, { mode: 0o600 });
  client = new Agent({ connect: { ca: [readFileSync(at('ca.crt'), 'utf8'), readFileSync(at('self.crt'), 'utf8')] } });
  etcd = await EtcdCluster.start(3);
});
after(async () => {
  await etcd?.close();
  await client?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A request of the test, with the client token, trusting both test CAs. */
async function api(url: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await request(url + path, {
    method: method as 'GET',
    dispatcher: client,
    headers: { authorization: `Bearer ${CLIENT}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? null : JSON.stringify(body),
  });
  const text = await res.body.text();
  return { status: res.statusCode, body: text === '' ? undefined : JSON.parse(text) };
}

interface Node {
  id: string;
  agent: AgentProcess;
}

/** cp agents over a fresh prefix, started together; each node's extra flags. Resolves once every node knows every other's address. */
async function startNodes(flags: Record<string, string[]>): Promise<Node[]> {
  const prefix = freshPrefix();
  const settled = await Promise.allSettled(
    Object.entries(flags).map(async ([id, extra]) => ({ id, agent: await spawnAgent(['--mode', 'cp', '--etcd', etcd.endpoints.join(','), '--etcd-prefix', prefix, '--node-id', id, ...extra], {}, 30_000) })),
  );
  const nodes = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  const failed = settled.find((s) => s.status === 'rejected');
  if (failed) {
    await stopNodes(nodes);
    throw failed.reason;
  }
  for (const n of nodes) {
    await waitUntil(async () => {
      const members = (await api(n.agent.url, 'GET', '/v1/status')).body.cluster.members as { address: string }[];
      return members.filter((m) => !m.address.endsWith(':0')).length === nodes.length;
    }, 10_000, `${n.id} to know every node's address`);
  }
  return nodes;
}

async function stopNodes(nodes: Node[]): Promise<void> {
  await Promise.all(nodes.map(async (n) => {
    n.agent.child.kill('SIGTERM');
    await n.agent.exited;
  }));
}

/** An instance id of `service` whose reports `owner` counts, among `nodes`. */
function idCountedBy(owner: string, nodes: readonly string[], service: string): string {
  for (let i = 0; ; i++) {
    const id = `${owner}-i${i}`;
    if (rendezvousOwner(instanceKey('default', service, id), nodes) === owner) return id;
  }
}

const byId = (nodes: Node[], id: string): AgentProcess => (nodes.find((n) => n.id === id) as Node).agent;

/** Registers `id` through `via`, then reports it through each of `reporters` (one reporter each); the answers. */
async function reportThrough(nodes: Node[], service: string, id: string, reporters: string[]): Promise<{ reporters: number; warning: boolean }[]> {
  const reg = await api(byId(nodes, reporters[0] as string).url, 'PUT', `/v1/services/${service}/instances/${id}`, { address: '10.4.0.1', port: 80 });
  assert.equal(reg.status, 200, JSON.stringify(reg.body));
  const answers: { reporters: number; warning: boolean }[] = [];
  for (const [i, via] of reporters.entries()) {
    const r = await api(byId(nodes, via).url, 'POST', `/v1/services/${service}/instances/${id}/reports`, { reporter: `consumer-${i}`, kind: 'timeout' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    answers.push({ reporters: r.body.reporters, warning: r.body.warning });
  }
  return answers;
}

async function forwardCounts(agent: AgentProcess): Promise<{ forwarded: number; not: { auth: number; tls: number; other: number } }> {
  const cluster = (await api(agent.url, 'GET', '/v1/status')).body.cluster;
  return { forwarded: cluster.reportsForwarded, not: cluster.reportsNotForwarded };
}

/** Registers `n` instances through `agent` (each must be made); then the node's write forwarding (docs/cp.md, One node writes). */
async function writeThrough(agent: AgentProcess, n: number): Promise<{ writer: string | null; forwarded: number }> {
  for (let i = 0; i < n; i++) {
    const r = await api(agent.url, 'PUT', `/v1/services/fw/instances/w${i}`, { address: '10.4.0.2', port: 8000 + i });
    assert.equal(r.status, 200, JSON.stringify(r.body));
  }
  return (await api(agent.url, 'GET', '/v1/status')).body.cluster.writeForwarding;
}

const warnings = (agent: AgentProcess, re: RegExp): string[] =>
  agent
    .output()
    .split('\n')
    .filter((l) => l.includes('could not be forwarded') && re.test(l));

test('nodes sharing a self-signed certificate and a token file forward consumer reports over https, with the token', { timeout: 90_000 }, async () => {
  const tls = ['--tls-cert-file', at('self.crt'), '--tls-key-file', at('self.key'), '--api-tokens-file', at('tokens')];
  const nodes = await startNodes({ s1: tls, s2: tls });
  try {
    assert.match(byId(nodes, 's1').url, /^https:/);
    // Counted by s2; reported through s1 (forwarded), then through s2.
    const id = idCountedBy('s2', ['s1', 's2'], 'pay');
    const answers = await reportThrough(nodes, 'pay', id, ['s1', 's2']);
    assert.deepEqual(answers, [{ reporters: 1, warning: false }, { reporters: 2, warning: true }], 'one node counted both reporters');
    assert.deepEqual(await forwardCounts(byId(nodes, 's1')), { forwarded: 1, not: { auth: 0, tls: 0, other: 0 } });
    const read = await api(byId(nodes, 's1').url, 'GET', `/v1/services/pay/instances/${id}?consistent=true`);
    assert.equal(read.body.health, 'warning');
    // A forward token forwards reports only: s1 refuses it for writes, and s2 makes its own, saying so once.
    assert.equal((await writeThrough(byId(nodes, 's2'), 20)).forwarded, 0);
    const refusals = byId(nodes, 's2').output().split('\n').filter((l) => /refused this node's token for forwarded writes \(HTTP 40[13]\): a token of scope forward forwards consumer reports only/.test(l));
    assert.equal(refusals.length, 1, byId(nodes, 's2').output());
    for (const n of nodes) {
      assert.ok(!n.agent.output().includes(CLIENT) && !n.agent.output().includes(FORWARD), 'no token in the log');
      assert.ok(!n.agent.output().includes('holds no forward token'), 'no warning about the forward token');
    }
  } finally {
    await stopNodes(nodes);
  }
});

test('certificates a private CA signed: trusted with --tls-ca-file; without it the forward fails, is counted here and logged naming --tls-ca-file', { timeout: 90_000 }, async () => {
  const tls = ['--tls-cert-file', at('server.crt'), '--tls-key-file', at('server.key'), '--api-tokens-file', at('tokens')];
  const nodes = await startNodes({ c1: [...tls, '--tls-ca-file', at('ca.crt')], c2: tls });
  try {
    const ids = ['c1', 'c2'];
    // c1 trusts the CA: its report on an instance c2 counts goes there.
    const toC2 = await reportThrough(nodes, 'pay', idCountedBy('c2', ids, 'pay'), ['c1', 'c2']);
    assert.deepEqual(toC2.map((a) => a.reporters), [1, 2]);
    assert.deepEqual(await forwardCounts(byId(nodes, 'c1')), { forwarded: 1, not: { auth: 0, tls: 0, other: 0 } });
    // c2 trusts Node's CAs and its own (CA-signed) certificate only: not c1's.
    const toC1 = await reportThrough(nodes, 'pay', idCountedBy('c1', ids, 'pay'), ['c2', 'c2', 'c1']);
    assert.deepEqual(toC1.map((a) => a.reporters), [1, 2, 1], 'c2 counted its reports itself');
    assert.deepEqual(await forwardCounts(byId(nodes, 'c2')), { forwarded: 0, not: { auth: 0, tls: 2, other: 0 } });
    const c2 = byId(nodes, 'c2');
    const said = warnings(c2, /does not trust the certificate of node c1 at https:\/\/127\.0\.0\.1:\d+ \(UNABLE_TO_VERIFY_LEAF_SIGNATURE\)/);
    assert.equal(said.length, 1, `one warning a minute:\n${c2.output()}`);
    assert.match(said[0] as string, /"level":40/);
    assert.match(said[0] as string, /--tls-ca-file/);
  } finally {
    await stopNodes(nodes);
  }
});

test('a node whose token the other node refuses counts its reports itself and says which node refused it and why', { timeout: 90_000 }, async () => {
  const tls = ['--tls-cert-file', at('self.crt'), '--tls-key-file', at('self.key')];
  // r1 forwards with STRAY (first in its file), which r2 does not know.
  const nodes = await startNodes({ r1: [...tls, '--api-tokens-file', at('stray-tokens')], r2: [...tls, '--api-tokens-file', at('tokens')] });
  try {
    const answers = await reportThrough(nodes, 'pay', idCountedBy('r2', ['r1', 'r2'], 'pay'), ['r1', 'r1', 'r2']);
    assert.deepEqual(answers.map((a) => a.reporters), [1, 2, 1], 'r1 counted its reports itself');
    assert.deepEqual(await forwardCounts(byId(nodes, 'r1')), { forwarded: 0, not: { auth: 2, tls: 0, other: 0 } });
    const r1 = byId(nodes, 'r1');
    const said = warnings(r1, /node r2 at https:\/\/127\.0\.0\.1:\d+ refused this node's token \(UNAUTHENTICATED: the bearer token is not one this node accepts\)/);
    assert.equal(said.length, 1, `one warning a minute:\n${r1.output()}`);
    assert.match(said[0] as string, /same --api-tokens-file/);
    // The other way round r2's forward token is accepted.
    const back = await reportThrough(nodes, 'pay', idCountedBy('r1', ['r1', 'r2'], 'pay'), ['r2', 'r1']);
    assert.deepEqual(back.map((a) => a.reporters), [1, 2]);
    for (const n of nodes) assert.ok(![STRAY, CLIENT, FORWARD].some((t) => n.agent.output().includes(t)), 'no token in the log');
  } finally {
    await stopNodes(nodes);
  }
});

test('a node on plain HTTP forwards to a node on HTTPS and back, each called as it announced (a cluster moving to TLS); a file without a forward token forwards with its write token, with a warning', { timeout: 90_000 }, async () => {
  const nodes = await startNodes({
    h1: ['--api-tokens-file', at('write-only-tokens'), '--tls-ca-file', at('ca.crt')],
    h2: ['--api-tokens-file', at('write-only-tokens'), '--tls-cert-file', at('server.crt'), '--tls-key-file', at('server.key')],
  });
  try {
    assert.match(byId(nodes, 'h1').url, /^http:/);
    assert.match(byId(nodes, 'h2').url, /^https:/);
    const ids = ['h1', 'h2'];
    assert.deepEqual((await reportThrough(nodes, 'pay', idCountedBy('h2', ids, 'pay'), ['h1', 'h2'])).map((a) => a.reporters), [1, 2]);
    assert.deepEqual((await reportThrough(nodes, 'pay', idCountedBy('h1', ids, 'pay'), ['h2', 'h1'])).map((a) => a.reporters), [1, 2]);
    for (const id of ids) assert.deepEqual(await forwardCounts(byId(nodes, id)), { forwarded: 1, not: { auth: 0, tls: 0, other: 0 } }, id);
    // With a write token h2 sends its writes to h1, which writes for both (after the first, which open the link).
    await waitUntil(async () => (await writeThrough(byId(nodes, 'h2'), 5)).forwarded > 0, 20_000, 'h2 forwarding its writes to h1');
    assert.equal((await writeThrough(byId(nodes, 'h2'), 1)).writer, 'h1');
    // The nodes forward with CLIENT, a write token, and say so at start.
    for (const id of ids) assert.match(byId(nodes, id).output(), /"level":40[^\n]*write-only-tokens holds no forward token, so this node forwards consumer reports to the other nodes with its first write token \(line 1\), which allows every write; add a line \\"forward TOKEN\\"/);
  } finally {
    await stopNodes(nodes);
  }
});

test('a SIGHUP while the node starts (etcd not reachable yet) does not end it; the token file is read again once it is ready', { timeout: 60_000 }, async () => {
  const one = await EtcdCluster.start(1);
  const file = at('startup-tokens');
  const NEW = 'cp-startup-new-write-token-0123456789ab';
  writeFileSync(file, `write ${CLIENT}\n`, { mode: 0o600 });
  await one.kill(0);
  const child = spawn(process.execPath, [BIN, 'agent', '--http-addr', '127.0.0.1:0', '--log-format', 'json', '--mode', 'cp', '--etcd', one.endpoints.join(','), '--etcd-prefix', freshPrefix(), '--api-tokens-file', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<string>((resolve) => child.once('exit', (code, signal) => resolve(`${code} ${signal}`)));
  try {
    await waitUntil(() => out.includes('cannot be read yet'), 20_000, 'the node to wait for etcd');
    child.kill('SIGHUP');
    const ended = await Promise.race([exited, new Promise((r) => setTimeout(() => r(null), 1_000))]);
    assert.equal(ended, null, `the node ended on SIGHUP:\n${out}`);
    assert.match(out, /signal received while starting: the API token file is read again once the node is ready/);
    // The file changes meanwhile; etcd comes back; the node starts with the file as it is now.
    writeFileSync(file, `write ${NEW}\n`);
    one.restart(0);
    await waitUntil(() => /listening on https?:\/\//.test(out) && out.includes('API tokens read again'), 30_000, `the node to start and read the file again:\n${out}`);
    const url = (/listening on (https?:\/\/[^\s"]+)/.exec(out) as RegExpExecArray)[1] as string;
    const status = (token: string): Promise<number> => request(`${url}/v1/services`, { headers: { authorization: `Bearer ${token}` } }).then(async (r) => (await r.body.text(), r.statusCode));
    assert.equal(await status(NEW), 200);
    assert.equal(await status(CLIENT), 401, 'the token taken out while the node started is refused');
  } finally {
    child.kill('SIGTERM');
    await exited;
    await one.close();
  }
});
