// Canvas charts (uPlot): live strips, report overlays and the health trend.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import type { CycleSummary, HistoryTrace, OverlaySensor } from "./api";
import { interp } from "./interp";

function sized(el: HTMLElement, height: number): { width: number; height: number } {
  return { width: Math.max(200, el.clientWidth || 300), height };
}

/** Keep a chart as wide as its container. */
function follow(el: HTMLElement, chart: uPlot, height: number): ResizeObserver {
  const ro = new ResizeObserver(() => chart.setSize(sized(el, height)));
  ro.observe(el);
  return ro;
}

const clock = (s: number): string =>
  new Date(s * 1000).toLocaleTimeString(undefined, { hour12: false, hour: "2-digit", minute: "2-digit", second: "2-digit" });

export class LiveChart {
  readonly plot: uPlot;
  private readonly ro: ResizeObserver;

  constructor(el: HTMLElement, unit: string, colour: string, height = 120) {
    this.plot = new uPlot(
      {
        ...sized(el, height),
        legend: { show: false },
        cursor: { show: false },
        pxAlign: 0,
        scales: { x: { time: true, auto: false }, y: { auto: true } },
        axes: [
          { size: 24, font: "11px system-ui", ticks: { size: 3 }, values: (_u, splits) => splits.map(clock) },
          { size: 48, font: "11px system-ui", label: unit || undefined, labelSize: 14, ticks: { size: 3 } },
        ],
        series: [{}, { stroke: colour, width: 1, points: { show: false } }],
      },
      [[], []],
      el,
    );
    this.ro = follow(el, this.plot, height);
  }

  /** New data and window in one redraw. */
  update(x: Float64Array, y: Float64Array, xmin: number, xmax: number): void {
    this.plot.batch(() => {
      this.plot.setData([x as unknown as number[], y as unknown as number[]], false);
      this.plot.setScale("x", { min: xmin, max: xmax });
    });
  }

  destroy(): void {
    this.ro.disconnect();
    this.plot.destroy();
  }
}

/** Cycle over the reference mean and envelope. The server puts the reference on the cycle's own
 * points (the PDF draws the same geometry); only an answer on other points is interpolated. */
export function overlayChart(el: HTMLElement, s: OverlaySensor, height = 220): uPlot {
  const x = s.t_s;
  const hasRef = s.ref_mean.length > 0;
  const data: (number[] | Float64Array)[] = [x, s.value];
  const series: uPlot.Series[] = [
    { label: "t (s)" },
    { label: "cycle", stroke: "#cf222e", width: 1.5, points: { show: false } },
  ];
  const bands: uPlot.Band[] = [];
  if (hasRef) {
    const same = s.ref_t_s.length === x.length;
    const on = (v: number[]): number[] | Float64Array => (same ? v : interp(x, s.ref_t_s, v));
    data.push(on(s.ref_mean), on(s.ref_upper), on(s.ref_lower));
    series.push(
      { label: "reference", stroke: "#0969da", width: 1, points: { show: false } },
      { label: "upper", stroke: "#9ecbff", width: 0.5, points: { show: false } },
      { label: "lower", stroke: "#9ecbff", width: 0.5, points: { show: false } },
    );
    bands.push({ series: [3, 4], fill: "rgba(84, 174, 255, 0.18)" });
  }
  const plot = new uPlot(
    {
      ...sized(el, height),
      scales: { x: { time: false } },
      axes: [{ label: "s", labelSize: 14, font: "11px system-ui" }, { label: s.unit || undefined, size: 52, font: "11px system-ui" }],
      series,
      bands,
    },
    data as unknown as uPlot.AlignedData,
    el,
  );
  follow(el, plot, height);
  return plot;
}

/** Health score per cycle, oldest left, with the risk thresholds as guides. */
export function trendChart(el: HTMLElement, cycles: CycleSummary[], height = 200): uPlot {
  const scored = cycles.filter((c) => c.health_score !== null).sort((a, b) => a.cycle_no - b.cycle_no);
  const x = scored.map((c) => c.cycle_no);
  const y = scored.map((c) => c.health_score as number);
  const plot = new uPlot(
    {
      ...sized(el, height),
      scales: { x: { time: false }, y: { auto: false, range: [0, 100] } },
      axes: [
        { label: "cycle", labelSize: 14, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] },
        { label: "health", size: 40 },
      ],
      series: [
        { label: "cycle" },
        {
          label: "health score",
          stroke: "#0969da",
          width: 1.5,
          points: { show: true, size: 6, fill: "#0969da" },
        },
      ],
    },
    [x, y],
    el,
  );
  follow(el, plot, height);
  return plot;
}

/** The learned model's statistics per cycle, each over its 99 % control limit (1 = at the
 * limit, drawn as a dashed line): the profile's T² (distance inside the model) and SPE (broken
 * correlations), and the operating point's (the sensors' levels against the healthy line). */
export function modelChart(el: HTMLElement, cycles: CycleSummary[], height = 180): uPlot | null {
  const judged = cycles
    .filter((c) => c.t2 != null && c.t2_limit_99 && c.spe != null && c.spe_limit_99)
    .sort((a, b) => a.cycle_no - b.cycle_no);
  if (judged.length === 0) return null;
  const x = judged.map((c) => c.cycle_no);
  const t2 = judged.map((c) => (c.t2 as number) / (c.t2_limit_99 as number));
  const spe = judged.map((c) => (c.spe as number) / (c.spe_limit_99 as number));
  const level = judged.map((c) => (c.level_ratio_99 == null ? null : c.level_ratio_99));
  const plot = new uPlot(
    {
      ...sized(el, height),
      scales: { x: { time: false }, y: { distr: 3, log: 10 } },
      axes: [
        { label: "cycle", labelSize: 14, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] },
        { label: "× 99 % limit", size: 48 },
      ],
      series: [
        { label: "cycle" },
        { label: "T² / limit", stroke: "#8250df", width: 1.5, points: { show: true, size: 5, fill: "#8250df" } },
        { label: "SPE / limit", stroke: "#bf8700", width: 1.5, points: { show: true, size: 5, fill: "#bf8700" } },
        { label: "operating point / limit", stroke: "#1a7f37", width: 1.5, points: { show: true, size: 5, fill: "#1a7f37" } },
        { label: "99 % limit", stroke: "#cf222e", width: 1, dash: [6, 4], points: { show: false } },
      ],
    },
    [x, t2, spe, level, x.map(() => 1)],
    el,
  );
  follow(el, plot, height);
  return plot;
}

/** A sensor's history buckets: mean line over the min-max band, gaps where buckets are empty.
 * Dragging across the chart selects a range, handed to ``onZoom`` (seconds). */
export function signalChart(
  el: HTMLElement,
  label: string,
  unit: string,
  trace: HistoryTrace,
  bucketMs: number,
  onZoom: (startS: number, endS: number) => void,
  height = 140,
): uPlot {
  const x: number[] = [];
  const lo: (number | null)[] = [];
  const hi: (number | null)[] = [];
  const mean: (number | null)[] = [];
  for (let i = 0; i < trace.t_ms.length; i++) {
    const t = trace.t_ms[i] as number;
    if (i > 0 && t - (trace.t_ms[i - 1] as number) > 1.5 * bucketMs) {
      x.push((t - bucketMs) / 1000); // an empty bucket: break the lines
      lo.push(null);
      hi.push(null);
      mean.push(null);
    }
    x.push(t / 1000);
    lo.push(trace.min[i] ?? null);
    hi.push(trace.max[i] ?? null);
    mean.push(trace.mean[i] ?? null);
  }
  const plot = new uPlot(
    {
      ...sized(el, height),
      title: label,
      legend: { show: false },
      cursor: { drag: { x: true, y: false, setScale: false }, sync: { key: "vertac-history" } },
      scales: { x: { time: true }, y: { auto: true } },
      axes: [
        { size: 30, font: "11px system-ui" },
        { size: 52, font: "11px system-ui", label: unit || undefined, labelSize: 14 },
      ],
      series: [
        {},
        { label: "min", stroke: "#9ecbff", width: 0.5, points: { show: false } },
        { label: "max", stroke: "#9ecbff", width: 0.5, points: { show: false } },
        { label: "mean", stroke: "#0969da", width: 1.2, points: { show: false } },
      ],
      bands: [{ series: [2, 1], fill: "rgba(84, 174, 255, 0.25)" }],
      hooks: {
        setSelect: [
          (u) => {
            if (u.select.width < 3) return;
            const a = u.posToVal(u.select.left, "x");
            const b = u.posToVal(u.select.left + u.select.width, "x");
            u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
            onZoom(a, b);
          },
        ],
      },
    },
    [x, lo, hi, mean] as unknown as uPlot.AlignedData,
    el,
  );
  follow(el, plot, height);
  return plot;
}
