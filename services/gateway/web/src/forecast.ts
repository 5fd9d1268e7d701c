// The health trend in words (history page): pure, no DOM.
import type { CycleSummary } from "./api";
import { duration } from "./dom";

/** What the newest trend says, in words: the slope, and when the threshold may be reached. */
export function trendText(cycles: CycleSummary[]): { text: string; alert: boolean } {
  const latest = cycles.find((c) => c.trend != null);
  const t = latest?.trend;
  if (!t) return { text: "No trend yet: it needs 8 scored cycles under one reference.", alert: false };
  const slope = `${t.slope_per_cycle >= 0 ? "+" : ""}${t.slope_per_cycle.toFixed(2)} points a cycle over the last ${t.cycles} cycles`;
  if (!t.degrading || t.cycles_to_threshold == null) return { text: `Health steady (${slope}).`, alert: false };
  const low = t.cycles_to_threshold_low == null ? "?" : t.cycles_to_threshold_low.toFixed(0);
  const high = t.cycles_to_threshold_high == null ? "or more" : `–${t.cycles_to_threshold_high.toFixed(0)}`;
  const time = t.seconds_to_threshold == null ? "" : `, about ${duration(t.seconds_to_threshold)}`;
  const top = Object.entries(t.sensors).sort((a, b) => b[1] - a[1])[0];
  const who = top && top[1] > 0 ? `; growing most: ${top[0]}` : "";
  return {
    text: `Health falling (${slope}): ${t.threshold} may be reached in ${t.cycles_to_threshold.toFixed(0)} cycles (${low}${high}${time})${who}.`,
    alert: t.alert,
  };
}
