// A sliding window of decimated buckets for one sensor: time (ms), min, max and mean, kept in
// growable typed arrays so that appending and trimming do not allocate per bucket.

export interface WindowStats {
  min: number;
  max: number;
  avg: number;
  buckets: number;
}

export class SeriesWindow {
  private t: Float64Array;
  private lo: Float64Array;
  private hi: Float64Array;
  private mean: Float64Array;
  private start = 0;
  private end = 0;
  last = Number.NaN;
  lastTime = Number.NaN;
  samples = 0;

  constructor(capacity = 1024) {
    this.t = new Float64Array(capacity);
    this.lo = new Float64Array(capacity);
    this.hi = new Float64Array(capacity);
    this.mean = new Float64Array(capacity);
  }

  get length(): number {
    return this.end - this.start;
  }

  /** Append buckets (times must not go back; older ones are dropped with a rebase). */
  append(t: number[], lo: number[], hi: number[], mean: number[], last: number, count: number): void {
    const n = t.length;
    if (n === 0) return;
    let from = 0;
    if (this.length > 0) {
      const newest = this.t[this.end - 1];
      while (from < n && t[from] <= newest) from++; // replayed or out-of-order buckets
    }
    const add = n - from;
    if (add > 0) {
      this.reserve(add);
      for (let i = from; i < n; i++) {
        const j = this.end++;
        this.t[j] = t[i];
        this.lo[j] = lo[i];
        this.hi[j] = hi[i];
        this.mean[j] = mean.length === n ? mean[i] : (lo[i] + hi[i]) / 2;
      }
      this.lastTime = this.t[this.end - 1];
    }
    this.last = last;
    this.samples += count;
  }

  /**
   * Put older buckets in front (a backfill read over REST): only those before the oldest bucket
   * held, so live data that came first is kept as it is.
   */
  prepend(t: number[], lo: number[], hi: number[], mean: number[], last: number): void {
    const limit = this.length > 0 ? this.t[this.start] : Infinity;
    let n = 0;
    while (n < t.length && t[n] < limit) n++;
    if (n === 0) return;
    const live = this.length;
    const cap = Math.max(this.t.length, 2 * (live + n));
    const join = (a: Float64Array, head: ArrayLike<number>): Float64Array => {
      const b = new Float64Array(cap);
      for (let i = 0; i < n; i++) b[i] = head[i];
      b.set(a.subarray(this.start, this.end), n);
      return b;
    };
    const means = mean.length === t.length ? mean : t.map((_, i) => (lo[i] + hi[i]) / 2);
    this.t = join(this.t, t);
    this.lo = join(this.lo, lo);
    this.hi = join(this.hi, hi);
    this.mean = join(this.mean, means);
    this.start = 0;
    this.end = live + n;
    if (live === 0) {
      this.last = last;
      this.lastTime = this.t[this.end - 1];
    }
  }

  /** Forget buckets older than ``oldestMs``. */
  trim(oldestMs: number): void {
    while (this.start < this.end && this.t[this.start] < oldestMs) this.start++;
    if (this.start === this.end) this.start = this.end = 0;
  }

  /** Statistics of the buckets at or after ``fromMs`` (NaN when there are none). */
  stats(fromMs: number): WindowStats {
    let min = Infinity;
    let max = -Infinity;
    let sum = 0;
    let n = 0;
    for (let i = this.end - 1; i >= this.start && this.t[i] >= fromMs; i--) {
      if (this.lo[i] < min) min = this.lo[i];
      if (this.hi[i] > max) max = this.hi[i];
      const m = this.mean[i];
      if (Number.isFinite(m)) {
        sum += m;
        n++;
      }
    }
    if (n === 0 && min === Infinity) return { min: NaN, max: NaN, avg: NaN, buckets: 0 };
    return { min, max, avg: n ? sum / n : NaN, buckets: n };
  }

  /**
   * The buckets at or after ``fromMs`` as one line through every minimum and maximum
   * (x in seconds, as uPlot's time axis wants): the envelope of the raw signal, drawn at the
   * cost of two points per bucket.
   */
  envelope(fromMs: number): [Float64Array, Float64Array] {
    let i0 = this.end;
    while (i0 > this.start && this.t[i0 - 1] >= fromMs) i0--;
    const n = this.end - i0;
    const x = new Float64Array(2 * n);
    const y = new Float64Array(2 * n);
    for (let k = 0; k < n; k++) {
      const i = i0 + k;
      const next = i + 1 < this.end ? this.t[i + 1] : this.t[i] + 1;
      x[2 * k] = this.t[i] / 1000;
      x[2 * k + 1] = (this.t[i] + (next - this.t[i]) / 2) / 1000;
      y[2 * k] = this.lo[i];
      y[2 * k + 1] = this.hi[i];
    }
    return [x, y];
  }

  private reserve(add: number): void {
    if (this.end + add <= this.t.length) return;
    const live = this.length;
    // reclaim the trimmed head when that is enough room, otherwise grow
    const cap = live + add <= this.t.length ? this.t.length : 2 * (live + add);
    const shift = (a: Float64Array): Float64Array => {
      const b = cap === a.length ? a : new Float64Array(cap);
      b.set(a.subarray(this.start, this.end)); // same-buffer set copies safely
      return b;
    };
    this.t = shift(this.t);
    this.lo = shift(this.lo);
    this.hi = shift(this.hi);
    this.mean = shift(this.mean);
    this.start = 0;
    this.end = live;
  }
}

/** Stale when nothing arrived for ``max(3 s, 3 sample periods)``. */
export function staleAfterMs(rateHz: number): number {
  return Math.max(3000, rateHz > 0 ? 3000 / rateHz : 3000);
}
