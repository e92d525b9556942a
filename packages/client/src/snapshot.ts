/**
 * On-disk snapshots of service views (the `cacheDir` option): a consumer that starts while
 * every registry node is down serves the last known instances. Each write goes to a temp
 * file that is fsync'd and then renamed over the old one, so a crash leaves either the old
 * snapshot or the new one, never a torn file.
 */
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Instance } from '@switchboard/protocol';

/**
 * A service view as written to disk.
 *
 * @example
 * const snap = await readSnapshot('/var/cache/myapp', 'default', 'orders');
 * if (snap) console.log(`${snap.instances.length} instances as of ${snap.savedAt}`);
 */
export interface ServiceSnapshot {
  format: 1;
  namespace: string;
  service: string;
  epoch: string | null;
  revision: number;
  savedAt: string;
  instances: Instance[];
}

/**
 * The file of one service (namespaces and service names are DNS labels: safe in a name).
 *
 * @example
 * snapshotPath('/var/cache/app', 'default', 'orders'); // '/var/cache/app/default~orders.json'
 */
export function snapshotPath(dir: string, namespace: string, service: string): string {
  return join(dir, `${namespace}~${service}.json`);
}

let tmpCounter = 0;

/**
 * Writes a snapshot atomically (temp file, fsync, rename).
 *
 * @example
 * await writeSnapshot('/tmp/sb', { format: 1, namespace: 'default', service: 'orders', epoch: 'e1', revision: 9, savedAt: new Date().toISOString(), instances: [] });
 */
export async function writeSnapshot(dir: string, snap: ServiceSnapshot): Promise<void> {
  await mkdir(dir, { recursive: true });
  const file = snapshotPath(dir, snap.namespace, snap.service);
  const tmp = `${file}.${process.pid}.${++tmpCounter}.tmp`;
  const fh = await open(tmp, 'w', 0o644);
  try {
    await fh.writeFile(JSON.stringify(snap));
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

/**
 * Reads a snapshot; undefined when there is none or it is not a valid snapshot of that
 * service (a damaged cache must never stop a consumer from starting).
 *
 * @example
 * const snap = await readSnapshot('/tmp/sb', 'default', 'orders');
 */
export async function readSnapshot(dir: string, namespace: string, service: string): Promise<ServiceSnapshot | undefined> {
  let text: string;
  try {
    text = await readFile(snapshotPath(dir, namespace, service), 'utf8');
  } catch {
    return undefined;
  }
  try {
    const s = JSON.parse(text) as ServiceSnapshot;
    const ok =
      s.format === 1 &&
      s.namespace === namespace &&
      s.service === service &&
      Number.isSafeInteger(s.revision) &&
      Array.isArray(s.instances) &&
      s.instances.every((i) => typeof i?.id === 'string' && typeof i.address === 'string' && typeof i.port === 'number');
    return ok ? s : undefined;
  } catch {
    return undefined;
  }
}
