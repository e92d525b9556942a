/**
 * Makes sure the peers are installed: Debian's etcd 3.4 (`etcd-server`, `etcd-client`) and
 * ZooKeeper 3.8 (`zookeeper`). Missing packages are installed with apt-get (after
 * `apt-get update`), and the suite says so. Every command is bounded in time.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';

export const PEER_PACKAGES = { etcd: ['etcd-server', 'etcd-client'], zookeeper: ['zookeeper'] };

function installed(pkg) {
  const r = spawnSync('dpkg-query', ['-W', '-f=${Status} ${Version}', pkg], { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) return null;
  const [a, b, c, version] = r.stdout.trim().split(' ');
  return `${a} ${b} ${c}` === 'install ok installed' ? version : null;
}

function run(cmd, args, log, timeoutMs) {
  log(`  $ ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs, env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }, stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.error || r.status !== 0) {
    const why = r.error ? r.error.message : `exit code ${r.status}`;
    const tail = `${r.stdout ?? ''}\n${r.stderr ?? ''}`.trim().split('\n').slice(-15).join('\n');
    throw new Error(`${cmd} ${args.join(' ')} failed (${why}):\n${tail}`);
  }
}

/**
 * Installs what is missing of `systems` (['etcd', 'zookeeper']). Returns the Debian
 * package versions. Throws (clearly) when installing is impossible.
 */
export function ensurePeers(systems, log) {
  const wanted = systems.flatMap((s) => PEER_PACKAGES[s]);
  ensurePackages(wanted, 'peers', log);
  const versions = {};
  for (const p of wanted) versions[p] = installed(p);
  if (systems.includes('etcd')) {
    try {
      versions.etcdBinary = execFileSync('etcd', ['--version'], { encoding: 'utf8', timeout: 10_000 }).split('\n')[0].replace('etcd Version: ', '').trim();
    } catch (err) {
      throw new Error(`etcd is installed but \`etcd --version\` fails: ${err.message}`);
    }
  }
  if (systems.includes('zookeeper')) {
    zookeeperClasspath(); // throws when the jars are missing
    versions.java = javaVersion();
  }
  return versions;
}

/**
 * Installs the Debian packages of `wanted` that are missing (apt-get, saying so under
 * `label`); throws clearly when that is impossible.
 */
export function ensurePackages(wanted, label, log) {
  const missing = wanted.filter((p) => installed(p) === null);
  if (missing.length === 0) return;
  log(`${label}: ${missing.join(', ')} not installed; installing with apt-get (Debian packages)`);
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new Error(`the packages ${missing.join(', ')} are missing and installing them needs root: run  sudo apt-get update && sudo apt-get install -y ${missing.join(' ')}`);
  }
  run('apt-get', ['update'], log, 300_000);
  run('apt-get', ['install', '-y', ...missing], log, 600_000);
  const still = missing.filter((p) => installed(p) === null);
  if (still.length > 0) throw new Error(`apt-get install did not install ${still.join(', ')}`);
  log(`${label}: installed ${missing.join(', ')}`);
}

/**
 * A Java compiler for the cross-check's ZooKeeper client (bench/crosscheck/ZkLoad.java):
 * `javac` on the PATH, or Debian's default-jdk-headless installed. Returns its version.
 */
export function ensureJavac(log) {
  const probe = () => spawnSync('javac', ['-version'], { encoding: 'utf8', timeout: 20_000 });
  let r = probe();
  if (r.error || r.status !== 0) {
    ensurePackages(['default-jdk-headless'], 'cross-check', log);
    r = probe();
    if (r.error || r.status !== 0) throw new Error('javac is still not available after installing default-jdk-headless');
  }
  return (r.stdout || r.stderr).trim();
}

/** `java -version`'s first line (stderr). */
export function javaVersion() {
  const r = spawnSync('java', ['-version'], { encoding: 'utf8', timeout: 20_000 });
  if (r.error || r.status !== 0) throw new Error('java is not available (the zookeeper package depends on a Java runtime)');
  return (r.stderr || r.stdout).split('\n')[0].trim();
}

/**
 * The classpath of the Debian ZooKeeper server: zookeeper.jar (whose manifest names its
 * dependencies under /usr/share/java) plus an SLF4J binding to log4j 1.2, whose
 * configuration comes from the directory of the config file (first entry).
 */
export function zookeeperClasspath() {
  const dir = '/usr/share/java';
  const need = ['zookeeper.jar', 'zookeeper-jute.jar'];
  for (const j of need) if (!existsSync(`${dir}/${j}`)) throw new Error(`${dir}/${j} is missing: is the Debian package zookeeper installed?`);
  const jars = [`${dir}/zookeeper.jar`, `${dir}/zookeeper-jute.jar`];
  const names = new Set(readdirSync(dir));
  if (names.has('slf4j-log4j12.jar') && names.has('log4j-1.2.jar')) jars.push(`${dir}/slf4j-log4j12.jar`, `${dir}/log4j-1.2.jar`);
  else if (names.has('slf4j-simple.jar')) jars.push(`${dir}/slf4j-simple.jar`);
  return jars;
}
