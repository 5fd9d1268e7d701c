// A stream's signals over any range, from GET /api/live/stream/{id}/samples: raw frames for
// short ranges, the 1 s or 1 min rollups for long ones. Preset ranges, drag-to-zoom on any
// chart, back and zoom out, CSV and Parquet of what is shown.
import type uPlot from "uplot";
import { api, links, type HistorySamples, type SensorSpec } from "./api";
import { signalChart } from "./charts";
import { h } from "./dom";

const PRESETS: [string, number][] = [
  ["10 min", 600],
  ["1 h", 3600],
  ["24 h", 86_400],
  ["7 d", 7 * 86_400],
];

const stamp = (ms: number): string =>
  new Date(ms).toLocaleString(undefined, { hour12: false, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" });

function bucketText(ms: number): string {
  if (ms < 1000) return `${+ms.toFixed(3)} ms`;
  if (ms < 60_000) return `${+(ms / 1000).toFixed(1)} s`;
  return `${+(ms / 60_000).toFixed(1)} min`;
}

export function mountSignals(root: HTMLElement, streamId: string, sensors: SensorSpec[] = []): () => void {
  const units = new Map(sensors.map((s) => [s.id, s.unit]));
  const names = new Map(sensors.map((s) => [s.id, s.name || s.id]));
  const status = h("span", { class: "muted", "data-testid": "history-range" }, "");
  const charts = h("div", { class: "signal-charts", "data-testid": "signal-charts" });
  const csv = h("a", { class: "button", "data-testid": "history-csv", download: "" }, "CSV");
  const parquet = h("a", { class: "button", "data-testid": "history-parquet", download: "" }, "Parquet");
  const back = h("button", { "data-testid": "history-back", disabled: true }, "Back");
  const out = h("button", { "data-testid": "history-zoom-out" }, "Zoom out");
  let plots: uPlot[] = [];
  const opened = Date.now();
  let range: [number, number] = [opened - 3600_000, opened];
  const previous: [number, number][] = [];
  let request = 0;

  const points = (): number => Math.max(100, Math.min(2000, Math.round(charts.clientWidth || 1000)));

  function draw(body: HistorySamples): void {
    for (const p of plots) p.destroy();
    plots = [];
    charts.replaceChildren();
    const ids = Object.keys(body.sensors);
    if (ids.length === 0) {
      charts.append(h("p", { class: "muted", "data-testid": "no-samples" }, "No samples stored in this range."));
      return;
    }
    for (const sid of ids) {
      const trace = body.sensors[sid];
      if (!trace) continue;
      const box = h("div", { class: "signal", "data-testid": "signal-chart", "data-sensor": sid, "data-buckets": trace.t_ms.length });
      charts.append(box);
      plots.push(
        signalChart(box, names.get(sid) ?? sid, units.get(sid) ?? "", trace, body.bucket_ms, (a, b) => {
          zoom([a * 1000, b * 1000]);
        }),
      );
    }
  }

  function load(): void {
    const mine = ++request;
    const [start, end] = range;
    const n = points();
    status.textContent = `${stamp(start)} – ${stamp(end)} · loading…`;
    csv.setAttribute("href", links.samples(streamId, start, end, n, "csv"));
    parquet.setAttribute("href", links.samples(streamId, start, end, n, "parquet"));
    back.disabled = previous.length === 0;
    void api
      .samples(streamId, start, end, n)
      .then((body) => {
        if (mine !== request) return; // a newer range was asked for meanwhile
        const source = body.resolution === "raw" ? "raw samples" : `${body.resolution} rollups`;
        status.textContent = `${stamp(start)} – ${stamp(end)} · ${source}, buckets of ${bucketText(body.bucket_ms)}`;
        status.dataset.resolution = body.resolution;
        status.dataset.bucketMs = String(body.bucket_ms);
        status.dataset.startMs = String(start);
        status.dataset.endMs = String(end);
        draw(body);
      })
      .catch((err: Error) => {
        if (mine !== request) return;
        status.textContent = `Could not load samples: ${err.message}`;
        status.dataset.resolution = "error";
      });
  }

  function zoom(next: [number, number]): void {
    if (next[1] - next[0] < 1) return; // below a millisecond: nothing to show
    // the charts share their cursor, so one drag selects on each of them: zoom once
    if (Math.abs(next[0] - range[0]) < 1 && Math.abs(next[1] - range[1]) < 1) return;
    previous.push(range);
    range = next;
    load();
  }

  back.addEventListener("click", () => {
    const last = previous.pop();
    if (last) {
      range = last;
      load();
    }
  });
  out.addEventListener("click", () => {
    const [a, b] = range;
    const half = b - a;
    zoom([a - half, Math.min(Date.now(), b + half)]);
  });
  // one clock read per range, so that a preset spans exactly its length
  const lastSeconds = (seconds: number) => {
    const now = Date.now();
    zoom([now - seconds * 1000, now]);
  };
  const presets = PRESETS.map(([label, seconds]) =>
    h("button", { "data-testid": `range-${label.replace(" ", "")}`, onclick: () => lastSeconds(seconds) }, label),
  );
  root.replaceChildren(
    h("div", { class: "buttons" }, ...presets, back, out, csv, parquet, status),
    h("p", { class: "muted hint" }, "Drag across a chart to zoom in."),
    charts,
  );
  load();
  return () => {
    request++;
    for (const p of plots) p.destroy();
  };
}
