import { describe, expect, it } from "vitest";
import type { SiteLinkStatus } from "../src/api";
import { siteLabel, siteOf } from "../src/sites";

const site = (over: Partial<SiteLinkStatus>): SiteLinkStatus =>
  ({ version: 1, site: "north", state: "linked", lag: 0, last_contact_s: 0.3, messages: 10, error: null, ...over }) as SiteLinkStatus;

describe("sites", () => {
  it("tells a site's stream from a local one", () => {
    expect(siteOf("north.press-1")).toBe("north");
    expect(siteOf("press-1")).toBe("");
  });

  it("says each link state in words, with what is behind", () => {
    expect(siteLabel(site({}))).toBe("north: linked");
    expect(siteLabel(site({ state: "catching_up", lag: 840 }))).toBe("north: catching up, 840 behind");
    expect(siteLabel(site({ state: "cut_off", last_contact_s: 12.4 }))).toBe("north: cut off 12 s");
    expect(siteLabel(site({ state: "cut_off", last_contact_s: null, lag: null }))).toBe("north: not heard from");
    expect(siteLabel(site({ state: "not_linked" }))).toBe("north: not linked");
  });
});
