/** A Histogram (bench/lib/hist.mjs) as a small JSON object and back, to merge across processes. */
import { Histogram } from '../../lib/hist.mjs';

export function histToWire(h) {
  const buckets = [];
  for (let i = 0; i < h.counts.length; i++) if (h.counts[i] > 0) buckets.push(i, h.counts[i]);
  return { buckets, count: h.count, sum: h.sum, min: h.min, max: h.max };
}

export function histFromWire(w) {
  const h = new Histogram();
  if (!w) return h;
  for (let i = 0; i < w.buckets.length; i += 2) h.counts[w.buckets[i]] = w.buckets[i + 1];
  h.count = w.count;
  h.sum = w.sum;
  h.min = w.min ?? Infinity;
  h.max = w.max ?? -Infinity;
  return h;
}
