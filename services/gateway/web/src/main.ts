// Entry point: stream picker, hash routes (#/live/<stream>, #/history/<stream>, #/cycle/<id>),
// connection indicator.
import "./style.css";
import { api, ApiError, type SiteLinkStatus, type StreamRegistered, type WhoAmI } from "./api";
import { siteLabel, siteOf } from "./sites";
import { h, toast } from "./dom";
import { mountHistory } from "./history";
import { mountLive } from "./live";
import "./perf";
import { renderReport } from "./report";
import type { ConnectionState } from "./socket";

const view = document.getElementById("view") as HTMLElement;
const picker = document.getElementById("stream-picker") as HTMLSelectElement;
const connection = document.getElementById("connection") as HTMLElement;
const navLive = document.getElementById("nav-live") as HTMLAnchorElement;
const navHistory = document.getElementById("nav-history") as HTMLAnchorElement;
const who = document.getElementById("who") as HTMLElement;
const sitesBar = document.getElementById("sites") as HTMLElement;
let cleanup: (() => void) | null = null;
let streams: StreamRegistered[] = [];

function setConnection(s: ConnectionState): void {
  const text = {
    connecting: () => (s.kind === "connecting" && s.attempt > 1 ? `connecting (attempt ${s.attempt})` : "connecting"),
    open: () => "live",
    waiting: () => (s.kind === "waiting" ? `${s.reason}; retry in ${(s.delayMs / 1000).toFixed(1)} s` : ""),
    closed: () => "not connected",
  }[s.kind]();
  connection.hidden = false;
  connection.textContent = text;
  connection.className = `pill pill-${s.kind}`;
  connection.dataset.state = s.kind;
}

// At a central VerTac: each site's link, and its streams grouped by site in the picker
// ("<site>.<stream id>"); elsewhere there are no sites and nothing changes.
async function showSites(): Promise<void> {
  let sites: SiteLinkStatus[] = [];
  try {
    sites = await api.sites();
  } catch {
    return; // not signed in yet, or the gateway is away: the connection pill says so
  }
  sitesBar.hidden = sites.length === 0;
  sitesBar.replaceChildren(
    ...sites.map((s) =>
      h("span", { class: `site site-${s.state}`, "data-site": s.site, title: s.error ?? "" }, siteLabel(s)),
    ),
  );
}

function pickerOptions(): HTMLElement[] {
  const option = (s: StreamRegistered) =>
    h("option", { value: s.stream_id }, s.device_name ? `${s.device_name} (${s.stream_id})` : s.stream_id);
  const local = streams.filter((s) => !siteOf(s.stream_id));
  const bySite = new Map<string, StreamRegistered[]>();
  for (const s of streams) {
    const site = siteOf(s.stream_id);
    if (site) bySite.set(site, [...(bySite.get(site) ?? []), s]);
  }
  if (bySite.size === 0) return local.map(option);
  return [
    ...(local.length ? [h("optgroup", { label: "This plant" }, ...local.map(option))] : []),
    ...[...bySite].map(([site, list]) => h("optgroup", { label: `Site ${site}` }, ...list.map(option))),
  ];
}

function currentStream(): string {
  return picker.value || localStorage.getItem("vertac.stream") || streams[0]?.stream_id || "";
}

function route(): void {
  cleanup?.();
  cleanup = null;
  const [, kind = "", arg = ""] = location.hash.split("/").map(decodeURIComponent);
  const sid = kind === "live" || kind === "history" ? arg : currentStream();
  if (sid && [...picker.options].some((o) => o.value === sid)) picker.value = sid;
  if (sid) localStorage.setItem("vertac.stream", sid);
  navLive.href = `#/live/${encodeURIComponent(sid)}`;
  navHistory.href = `#/history/${encodeURIComponent(sid)}`;
  navLive.classList.toggle("active", kind === "live" || kind === "");
  navHistory.classList.toggle("active", kind === "history");
  if (kind === "cycle" && arg) {
    const box = h("section", { class: "panel report", "data-testid": "report" });
    view.replaceChildren(box);
    void renderReport(box, arg);
    connection.hidden = true;
    return;
  }
  if (!sid) {
    view.replaceChildren(
      h("section", { class: "panel" },
        h("h1", {}, "No machine yet"),
        h("p", {}, "Register a machine (POST /api/live/register), start an edge publisher (vertac edge run) or the simulator (vertac simulate), then reload."),
      ),
    );
    return;
  }
  if (kind === "history") {
    cleanup = mountHistory(view, sid);
    connection.hidden = true;
  } else cleanup = mountLive(view, sid, { setConnection });
}

picker.addEventListener("change", () => {
  location.hash = location.hash.startsWith("#/history/") ? `#/history/${encodeURIComponent(picker.value)}` : `#/live/${encodeURIComponent(picker.value)}`;
});
window.addEventListener("hashchange", () => (location.hash.startsWith("#token=") ? void start() : route()));

/** The sign-in page: paste an API token (``vertac auth token create``, or admin.token). */
function showSignIn(reason: string): void {
  const input = h("input", { type: "password", placeholder: "vtk_…", "aria-label": "API token", "data-testid": "token", autocomplete: "off" }) as HTMLInputElement;
  const form = h("form", { "data-testid": "signin" }, input, h("button", { class: "primary", type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await api.signIn(input.value.trim());
      void start();
    } catch (err) {
      toast(`Sign-in refused: ${(err as Error).message}`, "error");
    }
  });
  view.replaceChildren(
    h("section", { class: "panel signin" },
      h("h1", {}, "Sign in to VerTac"),
      h("p", {}, reason),
      form,
      h("p", { class: "muted" }, "An admin makes tokens with “vertac auth token create NAME --role viewer|operator|admin”; vertac run keeps its admin token in <data-dir>/admin.token."),
    ),
  );
  connection.hidden = true;
}

function showWho(me: WhoAmI): void {
  document.body.dataset.role = me.role;
  document.body.dataset.auth = me.auth === false ? "off" : "on";
  if (me.auth === false) {
    who.hidden = true;
    return;
  }
  const out = h("button", { "data-testid": "signout", onclick: async () => { await api.signOut(); location.reload(); } }, "Sign out");
  who.replaceChildren(h("span", { "data-testid": "who-name" }, `${me.name} (${me.role})`), out);
  who.hidden = false;
}

/** A sign-in link (``/#token=…``, printed by vertac run) signs in and is then forgotten. */
async function signInFromLink(): Promise<void> {
  const found = /^#token=([A-Za-z0-9_-]+)$/.exec(location.hash);
  if (!found) return;
  history.replaceState(null, "", location.pathname + location.search);
  try {
    await api.signIn(found[1]);
  } catch (err) {
    toast(`The sign-in link is not valid: ${(err as Error).message}`, "error");
  }
}

async function start(): Promise<void> {
  await signInFromLink();
  try {
    showWho(await api.me());
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      showSignIn("This VerTac needs an API token.");
      return;
    }
    toast(`Gateway unreachable: ${(err as Error).message}`, "error");
  }
  try {
    streams = await api.streams();
  } catch (err) {
    toast(`Gateway unreachable: ${(err as Error).message}`, "error");
  }
  picker.replaceChildren(...pickerOptions());
  void showSites();
  setInterval(() => void showSites(), 5000);
  const wanted = localStorage.getItem("vertac.stream");
  if (wanted && streams.some((s) => s.stream_id === wanted)) picker.value = wanted;
  route();
}

void start();
