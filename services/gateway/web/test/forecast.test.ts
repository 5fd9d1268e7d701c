import { describe, expect, it } from "vitest";
import type { CycleSummary } from "../src/api";
import { trendText } from "../src/forecast";

const base = {
  stream_id: "s", state: "completed", started_at: null, ended_at: null, duration_s: 10,
  end_reason: "", samples: {}, frames: 1, gaps: 0, completeness: 1,
} as const;

function cycle(no: number, trend: CycleSummary["trend"]): CycleSummary {
  return { ...base, cycle_id: `c${no}`, cycle_no: no, trend } as CycleSummary;
}

const falling = {
  cycles: 30, slope_per_cycle: -1.5, slope_low: -1.8, slope_high: -1.2, threshold: 40,
  cycles_to_threshold: 14, cycles_to_threshold_low: 11, cycles_to_threshold_high: 18,
  seconds_to_threshold: 140, degrading: true, alert: true, sensors: { pressure_1: 0.2, temp: 0 },
};

describe("trendText", () => {
  it("says when the threshold may be reached, with the interval and the sensor that grows", () => {
    const said = trendText([cycle(31, falling), cycle(30, null)]);
    expect(said.alert).toBe(true);
    expect(said.text).toContain("40 may be reached in 14 cycles (11–18");
    expect(said.text).toContain("growing most: pressure_1");
  });

  it("says steady, or that there is no trend yet, instead of a number", () => {
    const steady = { ...falling, slope_per_cycle: 0.1, slope_high: 0.4, degrading: false, alert: false };
    expect(trendText([cycle(3, steady)]).text).toMatch(/^Health steady/);
    expect(trendText([cycle(1, null)]).text).toMatch(/^No trend yet/);
  });
});
