// Log-bucketed latency histogram: 32 buckets per power of two (about 2 % resolution),
// cheap to record on the hot path and mergeable across worker processes.
const PER_OCTAVE = 32;
const BUCKETS = PER_OCTAVE * 34; // up to 2^34 µs (about 4.7 hours)

export class Histogram {
  constructor(counts) {
    this.counts = counts ? Float64Array.from(counts) : new Float64Array(BUCKETS);
    this.total = this.counts.reduce((a, b) => a + b, 0);
  }

  /** Records a latency in microseconds. */
  record(us) {
    const i = us < 1 ? 0 : Math.min(BUCKETS - 1, Math.floor(Math.log2(us) * PER_OCTAVE));
    this.counts[i]++;
    this.total++;
  }

  merge(other) {
    for (let i = 0; i < BUCKETS; i++) this.counts[i] += other.counts[i];
    this.total += other.total;
    return this;
  }

  /** Value (µs) at quantile q in [0, 1], the geometric middle of its bucket; NaN when empty. */
  quantile(q) {
    if (this.total === 0) return NaN;
    const target = Math.max(1, Math.ceil(q * this.total));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i];
      if (seen >= target) return i === 0 ? 1 : Math.pow(2, (i + 0.5) / PER_OCTAVE);
    }
    return NaN;
  }

  /** Plain data for IPC: only the non-empty buckets. */
  toJSON() {
    const sparse = [];
    for (let i = 0; i < BUCKETS; i++) if (this.counts[i] > 0) sparse.push([i, this.counts[i]]);
    return sparse;
  }

  static fromJSON(sparse) {
    const h = new Histogram();
    for (const [i, c] of sparse) {
      h.counts[i] += c;
      h.total += c;
    }
    return h;
  }
}
