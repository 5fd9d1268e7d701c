import { describe, expect, it } from "vitest";
import { backoffDelay } from "../src/socket";

describe("backoffDelay", () => {
  it("doubles from half a second and stops at 15 s", () => {
    const mid = () => 0.5;
    expect([1, 2, 3, 4, 5, 6, 7, 10].map((a) => backoffDelay(a, mid))).toEqual([500, 1000, 2000, 4000, 8000, 15000, 15000, 15000]);
  });

  it("spreads reconnects by +/-20 %", () => {
    expect(backoffDelay(3, () => 0)).toBe(1600);
    expect(backoffDelay(3, () => 0.999999)).toBe(2400);
  });
});
