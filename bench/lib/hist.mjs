/**
 * A fixed-size latency histogram (HDR-like, log-linear buckets): values in microseconds,
 * exact below 2048 µs and within 0.1 % above, up to about 12 days. Memory is bounded
 * (one Float64Array of 2048 + 30 * 1024 counters) whatever the number of samples.
 */

const LINEAR = 2048; // values below this get their own bucket
const SUB = 1024; // buckets per power of two above LINEAR
const EXPONENTS = 30;
const SIZE = LINEAR + EXPONENTS * SUB;

function indexOf(us) {
  if (us < LINEAR) return us;
  let e = Math.floor(Math.log2(us)) - 10; // us / 2^e lies in [1024, 2047]
  let top = Math.floor(us / 2 ** e);
  if (top >= 2 * SUB) {
    e++;
    top = Math.floor(us / 2 ** e);
  } else if (top < SUB) {
    e--;
    top = Math.floor(us / 2 ** e);
  }
  if (e > EXPONENTS) return SIZE - 1;
  return LINEAR + (e - 1) * SUB + (top - SUB);
}

/** The middle of bucket i, in microseconds. */
function valueOf(i) {
  if (i < LINEAR) return i;
  const e = Math.floor((i - LINEAR) / SUB) + 1;
  const top = ((i - LINEAR) % SUB) + SUB;
  return top * 2 ** e + (2 ** e - 1) / 2;
}

export class Histogram {
  constructor() {
    this.counts = new Float64Array(SIZE);
    this.count = 0;
    this.sum = 0;
    this.min = Infinity;
    this.max = -Infinity;
  }

  /** Records one latency given in milliseconds (fractions kept down to 1 µs). */
  recordMs(ms) {
    const us = Math.max(0, Math.round(ms * 1000));
    this.counts[indexOf(us)]++;
    this.count++;
    this.sum += us;
    if (us < this.min) this.min = us;
    if (us > this.max) this.max = us;
  }

  merge(other) {
    for (let i = 0; i < SIZE; i++) this.counts[i] += other.counts[i];
    this.count += other.count;
    this.sum += other.sum;
    this.min = Math.min(this.min, other.min);
    this.max = Math.max(this.max, other.max);
  }

  /** The p-th percentile (0-100) in milliseconds; null without samples. */
  percentileMs(p) {
    if (this.count === 0) return null;
    const rank = Math.max(1, Math.ceil((p / 100) * this.count));
    let seen = 0;
    for (let i = 0; i < SIZE; i++) {
      seen += this.counts[i];
      if (seen >= rank) return Math.min(Math.max(valueOf(i), this.min), this.max) / 1000;
    }
    return this.max / 1000;
  }

  /** A JSON summary: count, mean, min, max and the usual percentiles, in ms. */
  summary() {
    if (this.count === 0) return { count: 0 };
    const r3 = (v) => Math.round(v * 1000) / 1000;
    return {
      count: this.count,
      meanMs: r3(this.sum / this.count / 1000),
      minMs: r3(this.min / 1000),
      p50Ms: r3(this.percentileMs(50)),
      p90Ms: r3(this.percentileMs(90)),
      p99Ms: r3(this.percentileMs(99)),
      p999Ms: r3(this.percentileMs(99.9)),
      maxMs: r3(this.max / 1000),
    };
  }
}
