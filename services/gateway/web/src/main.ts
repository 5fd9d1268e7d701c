// Entry point: stream picker, hash routes (#/live/<stream>, #/history/<stream>, #/cycle/<id>),
// connection indicator.
import "./style.css";
import { api, type StreamRegistered } from "./api";
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
window.addEventListener("hashchange", route);

async function start(): Promise<void> {
  try {
    streams = await api.streams();
  } catch (err) {
    toast(`Gateway unreachable: ${(err as Error).message}`, "error");
  }
  picker.replaceChildren(...streams.map((s) => h("option", { value: s.stream_id }, s.device_name ? `${s.device_name} (${s.stream_id})` : s.stream_id)));
  const wanted = localStorage.getItem("vertac.stream");
  if (wanted && streams.some((s) => s.stream_id === wanted)) picker.value = wanted;
  route();
}

void start();
