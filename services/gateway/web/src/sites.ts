// At a central VerTac a site's stream is "<site>.<stream id>" (a local stream id has no ".").
import type { SiteLinkStatus } from "./api";

export function siteOf(streamId: string): string {
  const dot = streamId.indexOf(".");
  return dot > 0 ? streamId.slice(0, dot) : "";
}

export function siteLabel(s: SiteLinkStatus): string {
  const lag = s.lag ? `, ${s.lag} behind` : "";
  const state = {
    linked: "linked",
    catching_up: `catching up${lag}`,
    cut_off: s.last_contact_s == null ? "not heard from" : `cut off ${Math.round(s.last_contact_s)} s`,
    not_linked: "not linked",
  }[s.state];
  return `${s.site}: ${state}`;
}
