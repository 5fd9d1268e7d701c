// Canvas charts (uPlot): live strips, report overlays and the health trend.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import type { CycleSummary, OverlaySensor } from "./api";
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
