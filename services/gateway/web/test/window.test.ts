import { describe, expect, it } from "vitest";
import { SeriesWindow, staleAfterMs } from "../src/window";

const ramp = (from: number, n: number, step = 10) => Array.from({ length: n }, (_, i) => from + i * step);

describe("SeriesWindow", () => {
  it("keeps buckets in order, drops replayed ones and counts samples", () => {
    const w = new SeriesWindow(4);
    w.append(ramp(0, 3), [1, 2, 3], [2, 3, 4], [1.5, 2.5, 3.5], 4, 30);
    w.append(ramp(10, 3), [9, 9, 9], [9, 9, 9], [9, 9, 9], 9, 30); // 10 and 20 already seen
    expect(w.length).toBe(4);
    expect(w.samples).toBe(60);
    expect(w.last).toBe(9);
    expect(w.lastTime).toBe(30);
  });

  it("grows past its capacity and trims old buckets", () => {
    const w = new SeriesWindow(2);
    for (let k = 0; k < 50; k++) w.append([k * 100], [k], [k + 1], [k + 0.5], k, 10);
    expect(w.length).toBe(50);
    w.trim(4000);
    expect(w.length).toBe(10);
    for (let k = 50; k < 60; k++) w.append([k * 100], [k], [k + 1], [k + 0.5], k, 10);
    const s = w.stats(5000);
    expect(s.min).toBe(50);
    expect(s.max).toBe(60);
    expect(s.avg).toBeCloseTo(55, 6);
  });

  it("draws every minimum and maximum of the window, in seconds", () => {
    const w = new SeriesWindow();
    w.append([1000, 1100, 1200], [-1, -2, -3], [1, 2, 3], [], 0, 300);
    const [x, y] = w.envelope(1100);
    expect(Array.from(x)).toEqual([1.1, 1.15, 1.2, 1.2005]);
    expect(Array.from(y)).toEqual([-2, 2, -3, 3]);
    expect(w.stats(0).avg).toBe(0); // mid-range when no means were sent
  });

  it("reports nothing for an empty window", () => {
    const s = new SeriesWindow().stats(0);
    expect(Number.isNaN(s.min)).toBe(true);
    expect(s.buckets).toBe(0);
  });

  it("calls a slow sensor stale only after three of its periods", () => {
    expect(staleAfterMs(1000)).toBe(3000);
    expect(staleAfterMs(0.1)).toBe(30000);
  });
});

describe("SeriesWindow.prepend", () => {
  it("puts older buckets in front and keeps live ones", () => {
    const w = new SeriesWindow(2);
    w.append([300, 400], [3, 4], [3, 4], [3, 4], 4, 20);
    w.prepend([100, 200, 300, 350], [1, 2, 9, 9], [1, 2, 9, 9], [1, 2, 9, 9], 9);
    expect(w.length).toBe(4);
    const [x, y] = w.envelope(0);
    expect(Array.from(x).filter((_, i) => i % 2 === 0)).toEqual([0.1, 0.2, 0.3, 0.4]);
    expect(Array.from(y).filter((_, i) => i % 2 === 0)).toEqual([1, 2, 3, 4]);
    expect(w.last).toBe(4); // live value wins
    w.append([500], [5], [5], [5], 5, 10);
    expect(w.length).toBe(5);
  });

  it("fills an empty window", () => {
    const w = new SeriesWindow();
    w.prepend([1, 2], [0, 1], [2, 3], [], 2.5);
    expect(w.length).toBe(2);
    expect(w.last).toBe(2.5);
    expect(w.lastTime).toBe(2);
    expect(w.stats(0).avg).toBe(1.5);
  });
});
