/**
 * Rendezvous (highest random weight) hashing: which of a set of nodes a key belongs to.
 * Removing a node moves only that node's keys; adding one takes a fair share from each.
 * cp splits active checks with it, ap chooses the adopter of a removed member's records.
 * Every node of a cluster must compute it alike, so the score is fixed: a 32-bit FNV-1a of
 * the key seeded with the node's own hash, through murmur3's finalizer (FNV-1a alone
 * spreads its low bits poorly); ties go to the smaller node id. Cheap enough to run for
 * every change a node applies (no crypto hash, no allocation).
 */
import { fnv1a } from './replica.js';

function fmix32(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** The node `key` belongs to; undefined when there is none. */
export function rendezvousOwner(key: string, nodes: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestScore = -1;
  for (const n of nodes) {
    const score = fmix32(fnv1a(key, fnv1a(n, 0x811c9dc5)));
    if (score > bestScore || (score === bestScore && best !== undefined && n < best)) {
      best = n;
      bestScore = score;
    }
  }
  return best;
}
