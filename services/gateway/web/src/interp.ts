/** Linear interpolation of (xp, fp) at ``xs`` (xp ascending), held flat beyond both ends. */
export function interp(xs: ArrayLike<number>, xp: ArrayLike<number>, fp: ArrayLike<number>): Float64Array {
  const out = new Float64Array(xs.length);
  const n = xp.length;
  if (n === 0) return out.fill(NaN);
  let j = 0;
  for (let i = 0; i < xs.length; i++) {
    const x = xs[i];
    if (x <= xp[0]) {
      out[i] = fp[0];
      continue;
    }
    if (x >= xp[n - 1]) {
      out[i] = fp[n - 1];
      continue;
    }
    while (j < n - 2 && xp[j + 1] < x) j++;
    if (xp[j] > x) j = 0;
    while (j < n - 2 && xp[j + 1] < x) j++;
    const span = xp[j + 1] - xp[j];
    const w = span > 0 ? (x - xp[j]) / span : 0;
    out[i] = fp[j] + w * (fp[j + 1] - fp[j]);
  }
  return out;
}
