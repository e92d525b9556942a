// Goal: the ap cluster name is a configuration key like the others (flag, environment,
// file), defaults to `switchboard`, and a bad value is refused naming where it came from.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { validateNodeId } from '@switchboard/protocol';
import { ConfigError, defaultNodeId, envValues, readConfigFile, resolveConfig } from '../../src/cli/config.js';
import { run, spawnAgent } from '../integration/process.js';
import { makePeerCerts, makeTestPki } from '../support/pki.js';
import { listenRefusal } from '../../src/cli/listen.js';

test('the cluster name: default, from any source, and refused when malformed', () => {
  const ap = { name: 'file', values: { mode: 'ap', nodeId: 'a' } };
  assert.equal(resolveConfig([]).cluster, 'switchboard');
  assert.equal(resolveConfig([{ name: 'flag', values: { cluster: 'blue' } }, { name: 'env', values: { cluster: 'green' } }, ap]).cluster, 'blue', 'a flag wins over the environment');
  assert.equal(resolveConfig([{ name: 'env', values: { cluster: 'green' } }, ap]).cluster, 'green');
  assert.throws(
    () => resolveConfig([{ name: 'env', values: { cluster: 'no spaces' } }, ap]),
    (err: unknown) => err instanceof ConfigError && err.field === 'SWITCHBOARD_CLUSTER' && /1-64 characters/.test(err.message),
  );
});

// Goal: a node id the agent starts with is one the API accepts (removing a member, the
// CLI), whether it comes from --node-id, from --peers or from the host name.
test('node ids: --node-id and --peers ids follow the API rule; the host name default is made to', () => {
  const long = 'n'.repeat(253);
  assert.equal(resolveConfig([{ name: 'flag', values: { nodeId: long } }]).nodeId, long, 'a host-name-long id');
  assert.deepEqual(resolveConfig([{ name: 'flag', values: { mode: 'ap', nodeId: 'a', peers: 'b_1@127.0.0.1:7711' } }]).peers, [{ id: 'b_1', host: '127.0.0.1', port: 7711 }]);
  for (const bad of ['a b', 'a/b', 'ü', 'n'.repeat(254)]) {
    assert.throws(() => resolveConfig([{ name: 'flag', values: { nodeId: bad } }]), (err: unknown) => err instanceof ConfigError && err.field === '--node-id' && /1-253 characters/.test(err.message), bad);
    assert.throws(() => validateNodeId(bad), /not valid/);
    assert.throws(() => resolveConfig([{ name: 'flag', values: { mode: 'ap', nodeId: 'a', peers: `${bad}@127.0.0.1:7711` } }]), (err: unknown) => err instanceof ConfigError && err.field === '--peers' && /the id of peer/.test(err.message), `peer ${bad}`);
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
    const refused = (values: Record<string, unknown>, code: string, field: RegExp, env: Record<string, unknown> = {}): void => refusedBy([{ name: 'flag', values: { mode: 'cp', ...values } }, { name: 'env', values: env }], code, field);
    refused({ etcd: 'http://127.0.0.1:1,https://127.0.0.1:2' }, 'ETCD_MIXED_SCHEMES', /^--etcd$/);
    refused({ etcd: 'http://127.0.0.1:1', etcdCaFile: notPem }, 'ETCD_TLS_WITHOUT_HTTPS', /^--etcd-ca-file$/);
    refused({ etcd: 'https://127.0.0.1:1', etcdCertFile: notPem }, 'ETCD_CERT_KEY_PAIR', /^--etcd-cert-file$/);
    refused({ etcd: 'https://127.0.0.1:1', etcdKeyFile: notPem }, 'ETCD_CERT_KEY_PAIR', /^--etcd-key-file$/);
    refused({ etcd: 'https://127.0.0.1:1', etcdCaFile: join(dir, 'missing.pem') }, 'FILE_UNREADABLE', /^--etcd-ca-file$/);
    refused({ etcd: 'https://127.0.0.1:1', etcdCaFile: notPem }, 'TLS_FILE_INVALID', /^--etcd-ca-file$/);
    refused({ etcd: 'https://127.0.0.1:1' }, 'TLS_FILE_INVALID', /^SWITCHBOARD_ETCD_CERT_FILE$/, { etcdCertFile: notPem, etcdKeyFile: notPem });
    // The CA of the other nodes' API certificates (forwarded reports).
    refused({ etcd: 'http://127.0.0.1:1', tlsCaFile: notPem }, 'TLS_FILE_INVALID', /^--tls-ca-file$/);
    refused({ etcd: 'http://127.0.0.1:1' }, 'FILE_UNREADABLE', /^SWITCHBOARD_TLS_CA_FILE$/, { tlsCaFile: join(dir, 'missing.pem') });
    refused({ etcdUsername: 'sb' }, 'ETCD_PASSWORD_MISSING', /^--etcd-username$/);
    refused({}, 'ETCD_USERNAME_MISSING', /^SWITCHBOARD_ETCD_PASSWORD$/, { etcdPassword: 's3cret' });
    refused({ etcdUsername: 'sb', etcdPasswordFile: notPem }, 'ETCD_PASSWORD_TWICE', /^SWITCHBOARD_ETCD_PASSWORD$/, { etcdPassword: 's3cret' });
    refused({ etcdUsername: 'sb', etcdPasswordFile: join(dir, 'missing') }, 'FILE_UNREADABLE', /^--etcd-password-file$/);
    refused({ etcdUsername: 'sb', etcdPassword: 's3cret' }, 'SECRET_NOT_FROM_ENV', /^--etcd-password$/);
    // A config file's password is refused even when the environment, which wins, gives one.
    refusedBy([{ name: 'env', values: { etcdPassword: 's3cret' } }, { name: 'sb.json', values: { mode: 'cp', etcd: 'http://127.0.0.1:1', etcdUsername: 'sb', etcdPassword: 's3cret' } }], 'SECRET_NOT_FROM_ENV', /^sb\.json key etcdPassword$/);
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
    assert.equal(resolveConfig([{ name: 'flag', values: { mode: 'cp', etcd: 'http://127.0.0.1:2379' } }]).etcdTls, null);

    const env = envValues({ SWITCHBOARD_ETCD_USERNAME: 'sb', SWITCHBOARD_ETCD_PASSWORD: 's3cret' });
    const fromEnv = resolveConfig([{ name: 'flag', values: { mode: 'cp', etcd: 'https://127.0.0.1:2379' } }, { name: 'env', values: env }]);
    assert.equal(fromEnv.etcdAuth?.password.reveal(), 's3cret');
    assert.doesNotMatch(JSON.stringify(fromEnv), /s3cret/);
    assert.doesNotMatch(inspect(fromEnv, { depth: 10 }), /s3cret/);
    assert.doesNotMatch(String(fromEnv.etcdAuth?.password), /s3cret/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the ap cluster secret: the bytes of a file (one trailing newline dropped), at least 32, never serialized', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sb-config-'));
  try {
    const file = join(dir, 'peer-secret');
    writeFileSync(file, 'a long enough cluster secret, 35 B\r\n');
    const cfg = resolveConfig([{ name: 'flag', values: { mode: 'ap', nodeId: 'a', peerSecretFile: file } }]);
    assert.equal(cfg.peerSecret?.reveal().toString(), 'a long enough cluster secret, 35 B');
    assert.doesNotMatch(JSON.stringify(cfg), /long enough/);
    assert.doesNotMatch(inspect(cfg, { depth: 10 }), /long enough/);
    // Binary secrets are taken byte for byte (a UTF-8 round trip changed them).
    const binary = Buffer.from(Array.from({ length: 32 }, (_, i) => 0x80 + i));
    writeFileSync(file, binary);
    assert.deepEqual(resolveConfig([{ name: 'flag', values: { mode: 'ap', nodeId: 'a', peerSecretFile: file } }]).peerSecret?.reveal(), binary);
    writeFileSync(file, Buffer.from(Array.from({ length: 12 }, () => 0xe9)));
    assert.throws(() => resolveConfig([{ name: 'flag', values: { mode: 'ap', nodeId: 'a', peerSecretFile: file } }]), /holds 12 bytes, at least 32/);
    assert.equal(resolveConfig([{ name: 'flag', values: { mode: 'ap', nodeId: 'a' } }]).peerSecret, null);
    writeFileSync(file, 'short\n');
    assert.throws(
      () => resolveConfig([{ name: 'file', values: { mode: 'ap', nodeId: 'a', peerSecretFile: file } }]),
      (err: unknown) => err instanceof ConfigError && err.code === 'PEER_SECRET_TOO_SHORT' && /holds 5 bytes, at least 32/.test(err.message) && /openssl rand/.test(err.hint ?? ''),
    );
    assert.throws(
      () => resolveConfig([{ name: 'env', values: envValues({ SWITCHBOARD_MODE: 'ap', SWITCHBOARD_NODE_ID: 'a', SWITCHBOARD_PEER_SECRET_FILE: join(dir, 'missing') }) }]),
      (err: unknown) => err instanceof ConfigError && err.code === 'FILE_UNREADABLE' && /SWITCHBOARD_PEER_SECRET_FILE/.test(err.message),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('peer TLS: the three files together, a key of the certificate, both key usages, signed by the CA; ap only', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sb-config-'));
  try {
    const certs = makePeerCerts(dir, { a: 'ca', x: 'other' });
    makeTestPki(dir); // server.crt: serverAuth only
    mkdirSync(join(dir, 'bound'));
    const a = certs.a!;
    const ap = (values: Record<string, unknown>) => [{ name: 'flag', values: { mode: 'ap', nodeId: 'a', ...values } }];
    const refused = (values: Record<string, unknown>, code: string, field: RegExp, mode = 'ap'): void => {
      assert.throws(
        () => resolveConfig([{ name: 'flag', values: { mode, nodeId: 'a', ...values } }]),
        (err: unknown) => err instanceof ConfigError && err.code === code && field.test(err.field) && typeof err.hint === 'string' && err.hint.length > 0,
        code,
      );
    };
    const cfg = resolveConfig(ap({ peerTlsCertFile: a.certFile, peerTlsKeyFile: a.keyFile, peerTlsCaFile: a.caFile }));
    assert.deepEqual(cfg.peerTls?.cert, a.cert);
    assert.deepEqual(cfg.peerTls?.ca, a.ca);
    assert.doesNotMatch(inspect(cfg) + JSON.stringify(cfg), /PRIVATE KEY/, 'the key is never shown');
    assert.ok(cfg.secretFiles.some((f) => f.path === a.keyFile), 'the key file is checked for its permissions');
    assert.equal(resolveConfig(ap({})).peerTls, null);
    refused({ peerTlsCertFile: a.certFile }, 'PEER_TLS_INCOMPLETE', /^--peer-tls-cert-file$/);
    refused({ peerTlsKeyFile: a.keyFile, peerTlsCaFile: a.caFile }, 'PEER_TLS_INCOMPLETE', /^--peer-tls-key-file$/);
    refused({ peerTlsCertFile: a.certFile, peerTlsKeyFile: certs.x!.keyFile, peerTlsCaFile: a.caFile }, 'TLS_CERT_KEY_MISMATCH', /^--peer-tls-cert-file$/);
    refused({ peerTlsCertFile: certs.x!.certFile, peerTlsKeyFile: certs.x!.keyFile, peerTlsCaFile: a.caFile }, 'PEER_TLS_NOT_SIGNED', /^--peer-tls-cert-file$/);
    refused({ peerTlsCertFile: join(dir, 'server.crt'), peerTlsKeyFile: join(dir, 'server.key'), peerTlsCaFile: join(dir, 'ca.crt') }, 'PEER_TLS_KEY_USAGE', /^--peer-tls-cert-file$/);
    refused({ peerTlsCertFile: a.keyFile, peerTlsKeyFile: a.keyFile, peerTlsCaFile: a.caFile }, 'TLS_FILE_INVALID', /^--peer-tls-cert-file$/);
    refused({ peerTlsCertFile: a.certFile, peerTlsKeyFile: a.keyFile, peerTlsCaFile: join(dir, 'missing.crt') }, 'FILE_UNREADABLE', /^--peer-tls-ca-file$/);
    refused({ peerTlsCertFile: a.certFile, peerTlsKeyFile: a.keyFile, peerTlsCaFile: a.caFile }, 'INVALID_CONFIG', /^--peer-tls-cert-file$/, 'standalone');
    // An intermediate CA: after the node's certificate in its file, with the root as the CA
    // file; the intermediate alone as the CA file is refused (TLS trusts up to a root only).
    const openssl = (...args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    writeFileSync(join(dir, 'inter.ext'), 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n');
    openssl('req', '-new', ...ec, '-keyout', 'inter.key', '-out', 'inter.csr', '-subj', '/CN=inter');
    openssl('x509', '-req', '-in', 'inter.csr', '-CA', 'peer-ca.crt', '-CAkey', 'peer-ca.key', '-set_serial', '0x51', '-days', '1', '-out', 'inter.crt', '-extfile', 'inter.ext');
    openssl('req', '-new', ...ec, '-keyout', 'leaf.key', '-out', 'leaf.csr', '-subj', '/CN=leaf');
    openssl('x509', '-req', '-in', 'leaf.csr', '-CA', 'inter.crt', '-CAkey', 'inter.key', '-set_serial', '0x52', '-days', '1', '-out', 'leaf.crt', '-extfile', 'peer.ext');
    openssl('x509', '-req', '-in', 'leaf.csr', '-CA', 'peer-ca.crt', '-CAkey', 'peer-ca.key', '-set_serial', '0x53', '-days', '-1', '-out', 'expired.crt', '-extfile', 'peer.ext');
    writeFileSync(join(dir, 'leaf-chain.crt'), Buffer.concat([readFileSync(join(dir, 'leaf.crt')), readFileSync(join(dir, 'inter.crt'))]));
    const leaf = (certFile: string, caFile: string) => ({ peerTlsCertFile: join(dir, certFile), peerTlsKeyFile: join(dir, 'leaf.key'), peerTlsCaFile: join(dir, caFile) });
    assert.notEqual(resolveConfig(ap(leaf('leaf-chain.crt', 'peer-ca.crt'))).peerTls, null);
    refused(leaf('leaf.crt', 'peer-ca.crt'), 'PEER_TLS_NOT_SIGNED', /^--peer-tls-cert-file$/);
    refused(leaf('leaf-chain.crt', 'inter.crt'), 'PEER_TLS_CA_NOT_ROOT', /^--peer-tls-ca-file$/);
    refused(leaf('expired.crt', 'peer-ca.crt'), 'PEER_TLS_EXPIRED', /^--peer-tls-cert-file$/);
    // A certificate bound to a node id (URI:switchboard:node:ID) serves that node only.
    const bound = makePeerCerts(join(dir, 'bound'), { a: 'ca' }, { bindIds: true }).a!;
    const boundFiles = { peerTlsCertFile: bound.certFile, peerTlsKeyFile: bound.keyFile, peerTlsCaFile: bound.caFile };
    assert.notEqual(resolveConfig(ap(boundFiles)).peerTls, null);
    assert.throws(() => resolveConfig([{ name: 'flag', values: { mode: 'ap', nodeId: 'b', ...boundFiles } }]), (err: unknown) => err instanceof ConfigError && err.code === 'PEER_TLS_WRONG_ID' && /issued for node "a", and this node is "b"/.test(err.message));
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
// others; the default denies the cloud metadata services, an empty deny list is
// possible and explicit, and a malformed network stops the agent at start naming where it
// came from.
test('check networks: the metadata services denied by default, lists from every source, an empty deny list opts out, a bad network is refused', async () => {
  const networks = (sources: Parameters<typeof resolveConfig>[0]) => resolveConfig(sources).checkNetworks.toJSON();
  const metadata = ['169.254.0.0/16', 'fe80::/10', '100.100.100.200/32', '168.63.129.16/32', 'fd00:ec2::254/128', 'fd20:ce::254/128'];
  assert.deepEqual(networks([]), { deny: metadata, allow: [] });
  assert.deepEqual(networks([{ name: 'flag', values: { checkAllowNetworks: '10.0.0.0/8, fd00::/8' } }]), { deny: metadata, allow: ['10.0.0.0/8', 'fd00::/8'] });
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

// Goal: a data directory another agent has open is refused like an address in use: exit
// 2, DATA_DIR_IN_USE, the owner's pid and a hint; the first agent goes on.
test('a second agent on a data directory in use exits 2 with DATA_DIR_IN_USE', { timeout: 30_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sb-dir-in-use-'));
  const first = await spawnAgent(['--data-dir', dir]);
  try {
    const r = await run(['agent', '--http-addr', '127.0.0.1:0', '--data-dir', dir]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, new RegExp(`invalid configuration: data directory .* is in use by process ${first.child.pid} .*\\[DATA_DIR_IN_USE\\]\\n {2}hint: stop that agent first, or use another --data-dir`));
    assert.equal((await fetch(`${first.url}/healthz`)).status, 200, 'the first agent goes on');
  } finally {
    first.child.kill('SIGTERM');
    await first.exited;
    rmSync(dir, { recursive: true, force: true });
  }
});

// Goal: every address the agent listens on or dials is HOST:PORT with both parts; a bare
// port (taken as the host 0.0.30.20 before) or a host alone is refused with a hint, never
// completed, and an etcd URL without its port (the client dialed 443) likewise.
test('addresses: a bare port, a host alone or a bracketless IPv6 address is refused with a hint', () => {
  const refused = (values: Record<string, unknown>, field: string, message: RegExp, hint: RegExp): void => {
    assert.throws(
      () => resolveConfig([{ name: 'flag', values }]),
      (err: unknown) => err instanceof ConfigError && err.code === 'INVALID_CONFIG' && err.field === field && message.test(err.message) && hint.test(err.hint ?? ''),
      JSON.stringify(values),
    );
  };
  const listenHint = /^use HOST:PORT, like 127\.0\.0\.1:7700/;
  refused({ httpAddr: '7700' }, '--http-addr', /"7700" is not HOST:PORT: a port without a host/, listenHint);
  refused({ httpAddr: 'localhost' }, '--http-addr', /"localhost" is not HOST:PORT: the port is missing/, listenHint);
  refused({ httpAddr: ':7700' }, '--http-addr', /the host is missing/, listenHint);
  refused({ httpAddr: 'nope:port' }, '--http-addr', /the port "port" is not a number/, listenHint);
  refused({ httpAddr: '[::1]' }, '--http-addr', /the port is missing/, listenHint);
  refused({ httpAddr: '::1:7700' }, '--http-addr', /IPv6 address goes in brackets/, listenHint);
  refused({ httpAddr: 'localhost:99999' }, '--http-addr', /"localhost:99999" is not HOST:PORT: the port must be 0-65535/, listenHint);
  refused({ httpAddr: 'a b:1' }, '--http-addr', /is not HOST:PORT/, listenHint);
  refused({ mode: 'ap', nodeId: 'a', peerAddr: '7701' }, '--peer-addr', /a port without a host/, /like 127\.0\.0\.1:7701/);
  refused({ mode: 'ap', nodeId: 'a', peers: 'b@7802' }, '--peers', /"7802" is not HOST:PORT/, /ID@HOST:PORT, like b@10\.0\.0\.2:7701/);
  refused({ mode: 'ap', nodeId: 'a', join: '10.0.0.1' }, '--join', /the port is missing/, /like 10\.0\.0\.1:7701/);
  refused({ mode: 'ap', nodeId: 'a', join: '10.0.0.1:0' }, '--join', /the port must be 1-65535/, /HOST:PORT/);
  refused({ mode: 'cp', etcd: 'http://127.0.0.1' }, '--etcd', /"http:\/\/127\.0\.0\.1" has no port/, /2379/);
  refused({ mode: 'ap', nodeId: 'a', httpAddr: '127.0.0.1:7700', peerAddr: '127.0.0.1:7700' }, '--peer-addr', /address of the REST API too/, /a port of their own/);
  // What is accepted: hosts, IPv4 and bracketed IPv6, port 0 to listen on a free port.
  assert.deepEqual(resolveConfig([{ name: 'env', values: { httpAddr: '[::1]:0' } }]).httpAddr, { host: '::1', port: 0 });
  assert.deepEqual(resolveConfig([{ name: 'env', values: { httpAddr: 'localhost:7700' } }]).httpAddr, { host: 'localhost', port: 7700 });
  const ap = resolveConfig([{ name: 'flag', values: { mode: 'ap', nodeId: 'a', peerAddr: '0.0.0.0:7701', join: '10.0.0.1:7701,node-b.internal:7701' } }]);
  assert.deepEqual(ap.join, [{ host: '10.0.0.1', port: 7701 }, { host: 'node-b.internal', port: 7701 }]);
  assert.deepEqual(ap.listenFrom, { httpAddr: '--http-addr', peerAddr: '--peer-addr', proxyAddr: '--proxy-addr' });
  assert.equal(resolveConfig([{ name: 'env', values: { httpAddr: '127.0.0.1:1' } }]).listenFrom.httpAddr, 'SWITCHBOARD_HTTP_ADDR');
});

// Goal: an address lost between the start's check and the real listen (another process
// took the port meanwhile) is refused the same way, naming where the setting came from.
test('a listen error of the real listen becomes the same refusal; other errors are left as they are', () => {
  const cfg = resolveConfig([{ name: 'env', values: { mode: 'ap', nodeId: 'a', httpAddr: '127.0.0.1:7700' } }, { name: 'config file sb.json', values: { peerAddr: '127.0.0.1:7701' } }]);
  const sysErr = (code: string) => Object.assign(new Error(`listen ${code}`), { code, syscall: 'listen' });
  const inUse = listenRefusal(sysErr('EADDRINUSE'), cfg, 'peerAddr');
  assert.equal(inUse?.code, 'ADDRESS_IN_USE');
  assert.equal(inUse?.field, 'config file sb.json key peerAddr');
  assert.match(inUse?.hint ?? '', /pick another config file sb\.json key peerAddr/);
  assert.equal(listenRefusal(sysErr('EACCES'), cfg, 'httpAddr')?.code, 'ADDRESS_NOT_PERMITTED');
  assert.equal(listenRefusal(sysErr('EADDRNOTAVAIL'), cfg, 'httpAddr')?.field, 'SWITCHBOARD_HTTP_ADDR');
  assert.equal(listenRefusal(new Error('something else'), cfg, 'httpAddr'), null);
  assert.equal(listenRefusal(sysErr('EIO'), cfg, 'httpAddr'), null);
});

// Goal: a setting of another mode is refused at start, from a flag, the environment or
// the config file alike, with a hint that names the mode it is for and how to take it
// out; standalone started without a word with --peers or --etcd, and cp with --dev.
test('settings of another mode are refused from every source, with a hint', () => {
  const refused = (sources: Parameters<typeof resolveConfig>[0], field: string, message: RegExp, hint: RegExp): void => {
    assert.throws(
      () => resolveConfig(sources),
      (err: unknown) => err instanceof ConfigError && err.code === 'INVALID_CONFIG' && err.field === field && message.test(err.message) && hint.test(err.hint ?? ''),
      JSON.stringify(sources),
    );
  };
  const flags = (values: Record<string, unknown>) => [{ name: 'flag', values }];
  refused(flags({ dev: true, peers: 'b@127.0.0.1:7802' }), '--peers', /^--peers is for --mode ap, but the mode is standalone \(the default\)$/, /^did you mean --mode ap\? Otherwise drop --peers$/);
  refused(flags({ dev: true, etcd: 'http://127.0.0.1:2379' }), '--etcd', /^--etcd is for --mode cp, but the mode is standalone \(the default\)$/, /^did you mean --mode cp\?/);
  refused(flags({ mode: 'cp', dev: true, dataDir: '/tmp/x', peers: 'x@127.0.0.1:7802', etcd: 'http://127.0.0.1:2379' }), '--data-dir', /^--data-dir is for --mode standalone or --mode ap, but the mode is cp \(--mode\); --dev and --peers do not apply to cp either$/, /^drop --data-dir, drop --dev, drop --peers: --mode cp does not use them$/);
  refused(flags({ mode: 'ap', nodeId: 'a', etcd: 'http://127.0.0.1:2379' }), '--etcd', /but the mode is ap \(--mode\)/, /^drop --etcd: --mode ap does not use it$/);
  refused([{ name: 'env', values: { cluster: 'blue' } }], 'SWITCHBOARD_CLUSTER', /is for --mode ap/, /unset SWITCHBOARD_CLUSTER/);
  refused([{ name: 'env', values: { mode: 'cp', etcd: 'http://127.0.0.1:2379', etcdPassword: 's3cret', dev: 'true' } }], 'SWITCHBOARD_DEV', /but the mode is cp \(SWITCHBOARD_MODE\)/, /unset SWITCHBOARD_DEV/);
  refused([{ name: 'flag', values: { dev: true } }, { name: 'config file sb.json', values: { join: ['10.0.0.1:7701'] } }], 'config file sb.json key join', /is for --mode ap/, /remove key join from config file sb\.json/);
  refused([{ name: 'flag', values: { mode: 'standalone' } }, { name: 'env', values: { etcdUsername: 'sb' } }], 'SWITCHBOARD_ETCD_USERNAME', /is for --mode cp, but the mode is standalone \(--mode\)/, /unset SWITCHBOARD_ETCD_USERNAME: --mode standalone does not use it/);
  refused(flags({ mode: 'ap', nodeId: 'a', dev: true, tlsCaFile: '/etc/ca.pem' }), '--tls-ca-file', /^--tls-ca-file is for --mode cp, but the mode is ap \(--mode\)$/, /^drop --tls-ca-file: --mode ap does not use it$/);
  // What asks for nothing is no setting of another mode: dev off, an empty list.
  assert.equal(resolveConfig([{ name: 'flag', values: { mode: 'cp', etcd: 'http://127.0.0.1:2379' } }, { name: 'env', values: { dev: 'false', peers: '' } }, { name: 'file', values: { join: [] } }]).mode, 'cp');
  assert.equal(resolveConfig([{ name: 'flag', values: { mode: 'ap', nodeId: 'a', dataDir: '/tmp/a', peers: 'b@127.0.0.1:7802', cluster: 'blue' } }]).cluster, 'blue');
});

test('the service proxy: off by default; its settings need --proxy-addr; its address may not be the API\'s', () => {
  const off = resolveConfig([{ name: 'flag', values: {} }]);
  assert.equal(off.proxyAddr, null);
  const on = resolveConfig([{ name: 'flag', values: { proxyAddr: '127.0.0.1:7780', proxyStrategy: 'weighted', proxyNamespace: 'team-a' } }]);
  assert.deepEqual([on.proxyAddr, on.proxyStrategy, on.proxyNamespace], [{ host: '127.0.0.1', port: 7780 }, 'weighted', 'team-a']);
  assert.throws(() => resolveConfig([{ name: 'flag', values: { proxyStrategy: 'random' } }]), (err: unknown) => err instanceof ConfigError && err.field === '--proxy-strategy' && /--proxy-addr/.test(err.hint ?? ''));
  assert.throws(() => resolveConfig([{ name: 'flag', values: { proxyAddr: '127.0.0.1:7780', proxyStrategy: 'p2c' } }]), (err: unknown) => err instanceof ConfigError && err.field === '--proxy-strategy');
  assert.throws(() => resolveConfig([{ name: 'flag', values: { proxyAddr: '127.0.0.1:7700' } }]), (err: unknown) => err instanceof ConfigError && err.field === '--proxy-addr' && /REST API/.test(err.message));
  assert.throws(() => resolveConfig([{ name: 'flag', values: { proxyAddr: '127.0.0.1:7780', proxyNamespace: 'Bad_NS' } }]), (err: unknown) => err instanceof ConfigError && err.field === '--proxy-namespace');
});

// Goal: a webhook URL whose user or password cannot be percent-decoded for basic
// authentication is refused with the configuration (exit 2, naming --alert-webhooks),
// never at the first alert with a bare "URI malformed", and the password is not shown.
test('alert webhooks: a "%" not followed by two hex digits in the user or password is refused at start, without showing it', async () => {
  const secret = '50%off';
  for (const url of [`http://ops:${secret}@127.0.0.1:9000/hook`, 'https://50%zz:pw@hooks.example/a']) {
    assert.throws(
      () => resolveConfig([{ name: 'flag', values: { alertWebhooks: url } }]),
      (err: unknown) => err instanceof ConfigError && err.field === '--alert-webhooks' && err.code === 'INVALID_CONFIG' && /%25/.test(err.hint ?? '') && !/off|zz|pw|ops/.test(err.message) && /not followed by two hex digits/.test(err.message),
      url,
    );
  }
  assert.deepEqual(resolveConfig([{ name: 'flag', values: { alertWebhooks: 'http://ops:50%25off@127.0.0.1:9000/hook' } }]).alertWebhooks, ['http://ops:50%25off@127.0.0.1:9000/hook'], 'encoded as %25 it is taken');
  const r = await run(['agent', '--dev', '--http-addr', '127.0.0.1:0', '--alert-webhooks', `http://ops:${secret}@127.0.0.1:9/hook`]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /invalid configuration: --alert-webhooks: .* \[INVALID_CONFIG\]\n {2}hint: percent-encode a "%"/);
  assert.ok(!r.stderr.includes(secret) && !r.stdout.includes(secret), 'the password is never printed');
});
