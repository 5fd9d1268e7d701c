import { describe, expect, it } from "vitest";
import { interp } from "../src/interp";

describe("interp", () => {
  it("interpolates linearly and holds the ends", () => {
    const out = interp([-1, 0, 0.5, 1, 2.5, 9], [0, 1, 2, 3], [0, 10, 20, 40]);
    expect(Array.from(out)).toEqual([0, 0, 5, 10, 30, 40]);
  });

  it("handles unsorted queries and an empty reference", () => {
    expect(Array.from(interp([2, 0.5], [0, 1, 2], [0, 1, 4]))).toEqual([4, 0.5]);
    expect(Number.isNaN(interp([1], [], [])[0])).toBe(true);
  });
});
