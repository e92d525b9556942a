// Goal: the ap cluster name is a configuration key like the others (flag, environment,
// file), defaults to `switchboard`, and a bad value is refused naming where it came from.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { validateNodeId } from '@switchboard/protocol';
import { ConfigError, defaultNodeId, envValues, readConfigFile, resolveConfig } from '../../src/cli/config.js';
import { run } from '../integration/process.js';

test('the cluster name: default, from any source, and refused when malformed', () => {
  assert.equal(resolveConfig([]).cluster, 'switchboard');
  assert.equal(resolveConfig([{ name: 'flag', values: { cluster: 'blue' } }, { name: 'env', values: { cluster: 'green' } }]).cluster, 'blue', 'a flag wins over the environment');
  assert.equal(resolveConfig([{ name: 'env', values: { cluster: 'green' } }]).cluster, 'green');
  assert.throws(
    () => resolveConfig([{ name: 'env', values: { cluster: 'no spaces' } }]),
    (err: unknown) => err instanceof ConfigError && err.field === 'SWITCHBOARD_CLUSTER' && /1-64 characters/.test(err.message),
  );
});

// Goal: a node id the agent starts with is one the API accepts (removing a member, the
// CLI), whether it comes from --node-id, from --peers or from the host name.
test('node ids: --node-id and --peers ids follow the API rule; the host name default is made to', () => {
  const long = 'n'.repeat(253);
  assert.equal(resolveConfig([{ name: 'flag', values: { nodeId: long } }]).nodeId, long, 'a host-name-long id');
  assert.deepEqual(resolveConfig([{ name: 'flag', values: { peers: 'b_1@127.0.0.1:7711' } }]).peers, [{ id: 'b_1', host: '127.0.0.1', port: 7711 }]);
  for (const bad of ['a b', 'a/b', 'ü', 'n'.repeat(254)]) {
    assert.throws(() => resolveConfig([{ name: 'flag', values: { nodeId: bad } }]), (err: unknown) => err instanceof ConfigError && err.field === '--node-id' && /1-253 characters/.test(err.message), bad);
    assert.throws(() => validateNodeId(bad), /not valid/);
    assert.throws(() => resolveConfig([{ name: 'flag', values: { peers: `${bad}@127.0.0.1:7711` } }]), (err: unknown) => err instanceof ConfigError && err.field === '--peers' && /the id of peer/.test(err.message), `peer ${bad}`);
  }
  for (const host of ['web-1.example.com', 'WIN_HOST', 'höst name', '', 'x'.repeat(300)]) {
    const id = defaultNodeId(host);
    assert.equal(validateNodeId(id), id, `from host name ${JSON.stringify(host)}`);
  }
  assert.equal(defaultNodeId('web-1.example.com'), 'web-1.example.com');
  assert.equal(defaultNodeId('höst name'), 'h-st-name');
});

// Goal (etcd TLS and auth): the keys resolve from every source, each refusal has a stable
// code and a hint, and the password never comes from a flag or the config file nor shows
// in a message, a JSON dump or an inspection of the configuration.
test('etcd TLS and auth keys: refusals name the key, carry a code and a hint', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sb-config-'));
  try {
    const notPem = join(dir, 'not.pem');
    writeFileSync(notPem, 'hello\n');
    const refusedBy = (sources: Parameters<typeof resolveConfig>[0], code: string, field: RegExp): void => {
      assert.throws(
        () => resolveConfig(sources),
        (err: unknown) => err instanceof ConfigError && err.code === code && field.test(err.field) && typeof err.hint === 'string' && err.hint.length > 0 && !/s3cret/.test(err.message + err.hint),
        code,
      );
    };
    const refused = (values: Record<string, unknown>, code: string, field: RegExp, env: Record<string, unknown> = {}): void => refusedBy([{ name: 'flag', values }, { name: 'env', values: env }], code, field);
    refused({ etcd: 'http://127.0.0.1:1,https://127.0.0.1:2' }, 'ETCD_MIXED_SCHEMES', /^--etcd$/);
    refused({ etcd: 'http://127.0.0.1:1', etcdCaFile: notPem }, 'ETCD_TLS_WITHOUT_HTTPS', /^--etcd-ca-file$/);
    refused({ etcd: 'https://127.0.0.1:1', etcdCertFile: notPem }, 'ETCD_CERT_KEY_PAIR', /^--etcd-cert-file$/);
    refused({ etcd: 'https://127.0.0.1:1', etcdKeyFile: notPem }, 'ETCD_CERT_KEY_PAIR', /^--etcd-key-file$/);
    refused({ etcd: 'https://127.0.0.1:1', etcdCaFile: join(dir, 'missing.pem') }, 'FILE_UNREADABLE', /^--etcd-ca-file$/);
    refused({ etcd: 'https://127.0.0.1:1', etcdCaFile: notPem }, 'TLS_FILE_INVALID', /^--etcd-ca-file$/);
    refused({ etcd: 'https://127.0.0.1:1' }, 'TLS_FILE_INVALID', /^SWITCHBOARD_ETCD_CERT_FILE$/, { etcdCertFile: notPem, etcdKeyFile: notPem });
    refused({ etcdUsername: 'sb' }, 'ETCD_PASSWORD_MISSING', /^--etcd-username$/);
    refused({}, 'ETCD_USERNAME_MISSING', /^SWITCHBOARD_ETCD_PASSWORD$/, { etcdPassword: 's3cret' });
    refused({ etcdUsername: 'sb', etcdPasswordFile: notPem }, 'ETCD_PASSWORD_TWICE', /^SWITCHBOARD_ETCD_PASSWORD$/, { etcdPassword: 's3cret' });
    refused({ etcdUsername: 'sb', etcdPasswordFile: join(dir, 'missing') }, 'FILE_UNREADABLE', /^--etcd-password-file$/);
    refused({ etcdUsername: 'sb', etcdPassword: 's3cret' }, 'SECRET_NOT_FROM_ENV', /^--etcd-password$/);
    // A config file's password is refused even when the environment, which wins, gives one.
    refusedBy([{ name: 'env', values: { etcdPassword: 's3cret' } }, { name: 'sb.json', values: { etcd: 'http://127.0.0.1:1', etcdUsername: 'sb', etcdPassword: 's3cret' } }], 'SECRET_NOT_FROM_ENV', /^sb\.json key etcdPassword$/);
    const emptyFile = join(dir, 'empty');
    writeFileSync(emptyFile, '\n');
    refused({ etcdUsername: 'sb', etcdPasswordFile: emptyFile }, 'ETCD_PASSWORD_EMPTY', /^--etcd-password-file$/);

    // The config file may name the password file, never hold the password itself.
    const file = join(dir, 'config.json');
    writeFileSync(file, JSON.stringify({ etcdUsername: 'sb', etcdPassword: 's3cret' }));
    assert.throws(
      () => resolveConfig([{ name: `config file ${file}`, values: readConfigFile(file) }]),
      (err: unknown) => err instanceof ConfigError && err.code === 'SECRET_NOT_FROM_ENV' && err.field === `config file ${file} key etcdPassword`,
    );
    // Without a code of its own, an error is INVALID_CONFIG.
    assert.throws(() => resolveConfig([{ name: 'flag', values: { mode: 'quorum' } }]), (err: unknown) => err instanceof ConfigError && err.code === 'INVALID_CONFIG');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the etcd password: from a file (one trailing newline dropped) or SWITCHBOARD_ETCD_PASSWORD, and never serialized', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sb-config-'));
  try {
    const pw = join(dir, 'pw');
    writeFileSync(pw, 's3cret pass\n');
    const fromFile = resolveConfig([{ name: 'flag', values: { mode: 'cp', etcd: 'https://127.0.0.1:2379', etcdUsername: 'sb', etcdPasswordFile: pw } }]);
    assert.equal(fromFile.etcdAuth?.username, 'sb');
    assert.equal(fromFile.etcdAuth?.password.reveal(), 's3cret pass');
    assert.equal(fromFile.etcdTls?.ca, null, 'https without a CA file trusts the system CAs');
    assert.equal(resolveConfig([{ name: 'flag', values: { etcd: 'http://127.0.0.1:2379' } }]).etcdTls, null);

    const env = envValues({ SWITCHBOARD_ETCD_USERNAME: 'sb', SWITCHBOARD_ETCD_PASSWORD: 's3cret' });
    const fromEnv = resolveConfig([{ name: 'env', values: env }]);
    assert.equal(fromEnv.etcdAuth?.password.reveal(), 's3cret');
    assert.doesNotMatch(JSON.stringify(fromEnv), /s3cret/);
    assert.doesNotMatch(inspect(fromEnv, { depth: 10 }), /s3cret/);
    assert.doesNotMatch(String(fromEnv.etcdAuth?.password), /s3cret/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the ap cluster secret: from a file (one trailing newline dropped), at least 16 bytes, never serialized', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sb-config-'));
  try {
    const file = join(dir, 'peer-secret');
    writeFileSync(file, 'a long enough cluster secret\n');
    const cfg = resolveConfig([{ name: 'flag', values: { mode: 'ap', nodeId: 'a', peerSecretFile: file } }]);
    assert.equal(cfg.peerSecret?.reveal().toString(), 'a long enough cluster secret');
    assert.doesNotMatch(JSON.stringify(cfg), /long enough/);
    assert.doesNotMatch(inspect(cfg, { depth: 10 }), /long enough/);
    assert.equal(resolveConfig([{ name: 'flag', values: { mode: 'ap', nodeId: 'a' } }]).peerSecret, null);
    writeFileSync(file, 'short\n');
    assert.throws(
      () => resolveConfig([{ name: 'file', values: { mode: 'ap', nodeId: 'a', peerSecretFile: file } }]),
      (err: unknown) => err instanceof ConfigError && err.code === 'PEER_SECRET_TOO_SHORT' && /holds 5 bytes, at least 16/.test(err.message) && /openssl rand/.test(err.hint ?? ''),
    );
    assert.throws(
      () => resolveConfig([{ name: 'env', values: envValues({ SWITCHBOARD_MODE: 'ap', SWITCHBOARD_NODE_ID: 'a', SWITCHBOARD_PEER_SECRET_FILE: join(dir, 'missing') }) }]),
      (err: unknown) => err instanceof ConfigError && err.code === 'FILE_UNREADABLE' && /SWITCHBOARD_PEER_SECRET_FILE/.test(err.message),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('limits that contradict each other or would turn a limit off are refused, naming the key', () => {
  const limits = (l: Record<string, number>) => () => resolveConfig([{ name: 'file', values: { limits: l } }]);
  for (const [l, key] of [
    [{ blockingWaitDefaultMs: 120_000, blockingWaitMaxMs: 60_000 }, 'blockingWaitMaxMs'],
    [{ leaseTtlMinMs: 0 }, 'leaseTtlMinMs'],
    [{ maxSessionMessageBytes: 0 }, 'maxSessionMessageBytes'],
    [{ maxBodyBytes: 10 }, 'maxBodyBytes'],
  ] as const) {
    assert.throws(limits(l), (err: unknown) => err instanceof ConfigError && err.field.endsWith(key), `${JSON.stringify(l)} refused at ${key}`);
  }
  assert.equal(resolveConfig([{ name: 'file', values: { limits: { blockingWaitDefaultMs: 30_000, blockingWaitMaxMs: 30_000 } } }]).limits.blockingWaitMaxMs, 30_000);
});

// Goal (check networks): the networks active checks may reach are settings like the
// others; the default denies link-local (the metadata services), an empty deny list is
// possible and explicit, and a malformed network stops the agent at start naming where it
// came from.
test('check networks: link-local denied by default, lists from every source, an empty deny list opts out, a bad network is refused', async () => {
  const networks = (sources: Parameters<typeof resolveConfig>[0]) => resolveConfig(sources).checkNetworks.toJSON();
  assert.deepEqual(networks([]), { deny: ['169.254.0.0/16', 'fe80::/10'], allow: [] });
  assert.deepEqual(networks([{ name: 'flag', values: { checkAllowNetworks: '10.0.0.0/8, fd00::/8' } }]), { deny: ['169.254.0.0/16', 'fe80::/10'], allow: ['10.0.0.0/8', 'fd00::/8'] });
  assert.deepEqual(networks([{ name: 'flag', values: { checkDenyNetworks: '' } }]), { deny: [], allow: [] }, 'the flag given empty');
  assert.deepEqual(networks([{ name: 'env', values: envValues({ SWITCHBOARD_CHECK_DENY_NETWORKS: '' }) }]), { deny: [], allow: [] }, 'the variable set empty');
  assert.deepEqual(networks([{ name: 'file', values: { checkDenyNetworks: [] } }]), { deny: [], allow: [] }, 'an empty array in the file');
  assert.deepEqual(networks([{ name: 'env', values: { checkDenyNetworks: '127.0.0.0/8' } }, { name: 'file', values: { checkDenyNetworks: [] } }]).deny, ['127.0.0.0/8'], 'the environment wins over the file');

  const refused = (values: Record<string, unknown>, field: string, message: RegExp): void => {
    assert.throws(
      () => resolveConfig([{ name: 'flag', values }]),
      (err: unknown) => err instanceof ConfigError && err.code === 'INVALID_CONFIG' && err.field === field && message.test(err.message) && typeof err.hint === 'string',
      JSON.stringify(values),
    );
  };
  refused({ checkDenyNetworks: '169.254.0.0/16,10.0.0.0/33' }, '--check-deny-networks', /"10\.0\.0\.0\/33" is not a network/);
  refused({ checkAllowNetworks: 'localhost' }, '--check-allow-networks', /"localhost" is not a network/);
  refused({ checkAllowNetworks: 'fe80::/129' }, '--check-allow-networks', /"fe80::\/129" is not a network/);
  assert.throws(() => resolveConfig([{ name: 'file', values: { checkDenyNetworks: 16 } }]), (err: unknown) => err instanceof ConfigError && err.field === 'file key checkDenyNetworks');

  const dir = mkdtempSync(join(tmpdir(), 'sb-config-'));
  try {
    const file = join(dir, 'config.json');
    writeFileSync(file, JSON.stringify({ checkDenyNetworks: ['169.254.0.0/16', '127.0.0.0/8'], checkAllowNetworks: ['10.0.0.0/8'] }));
    assert.deepEqual(networks([{ name: `config file ${file}`, values: readConfigFile(file) }]), { deny: ['169.254.0.0/16', '127.0.0.0/8'], allow: ['10.0.0.0/8'] });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  // The agent itself refuses to start: exit code 2, the message, the code and a hint.
  const r = await run(['agent', '--dev', '--http-addr', '127.0.0.1:0', '--check-deny-networks', '169.254.0.0/16,10.0.0.0/33']);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /invalid configuration: --check-deny-networks: "10\.0\.0\.0\/33" is not a network \[INVALID_CONFIG\]\n {2}hint: /);
});
