// Goal: the agent's check network settings reach the check runner in every mode. An agent
// started from its configuration (checkDenyNetworks given as a flag) in standalone, ap and
// cp mode registers an instance on loopback, and its tcp check is refused without a
// connection, with the clear output and the refusal counted in /metrics.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import pino from 'pino';
import { startAgent } from '../../src/cli/agent.js';
import { resolveConfig } from '../../src/cli/config.js';
import { EtcdCluster } from '../cp/etcd-cluster.js';
import { freshPrefix } from '../cp/nodes.js';
import { call, sleep } from '../helpers.js';
import { waitUntil } from '../support/wait.js';

const quiet = () => pino({ level: 'warn' }, new Writable({ write: (_c, _e, cb) => cb() }));

let etcd: EtcdCluster;
before(async () => {
  etcd = await EtcdCluster.start(1);
});
after(async () => {
  await etcd?.close();
});

async function refusedIn(flags: Record<string, unknown>): Promise<void> {
  // (Resolved first: a refused configuration must not leave the target server open.)
  const cfg = resolveConfig([{ name: 'flag', values: { dev: true, httpAddr: '127.0.0.1:0', checkDenyNetworks: '169.254.0.0/16,127.0.0.0/8', ...flags } }]);
  let connections = 0;
  const srv = net.createServer((s) => (connections++, s.destroy()));
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as AddressInfo).port;
  const agent = await startAgent(cfg, quiet());
  try {
    const put = await call(agent.url, 'PUT', '/v1/services/db/instances/d1', { address: '127.0.0.1', port, checks: [{ type: 'tcp', interval: '100ms', criticalThreshold: 1 }] });
    assert.equal(put.status, 200);
    const want = `target 127.0.0.1:${port} is in a denied network (127.0.0.0/8, checkDenyNetworks): not probed`;
    let last = '';
    await waitUntil(async () => (last = (await call(agent.url, 'GET', '/v1/services/db/instances/d1')).body.checks[0].output) === want, 10_000, `the refusal in ${cfg.mode} mode`, { detail: () => `last output: ${last}` });
    await sleep(300);
    assert.equal(connections, 0, 'no connection reached the target');
    assert.match((await call(agent.url, 'GET', '/metrics')).body, /^switchboard_check_targets_denied_total [1-9]/m);
  } finally {
    await agent.stop();
    srv.close();
  }
}

test('standalone: the configured deny list reaches the checks', () => refusedIn({}));

test('ap: the configured deny list reaches the checks', () => refusedIn({ mode: 'ap', nodeId: 'ap-1', peerAddr: '127.0.0.1:0' }));

test('cp: the configured deny list reaches the checks', { timeout: 60_000 }, () => refusedIn({ mode: 'cp', dev: undefined, nodeId: 'cp-1', etcd: etcd.endpoints.join(','), etcdPrefix: freshPrefix() }));
