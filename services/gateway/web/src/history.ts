// Cycle history of one stream: health trend chart and the list of cycles, each opening its report.
import type uPlot from "uplot";
import { api } from "./api";
import { modelChart, trendChart } from "./charts";
import { duration, fmt, h, RISK_COLOURS, when } from "./dom";
import { trendText } from "./forecast";
import { mountSignals } from "./signals";

export function mountHistory(root: HTMLElement, streamId: string): () => void {
  const chartBox = h("div", { class: "trend", "data-testid": "health-trend" });
  const trendLine = h("p", { "data-testid": "trend-forecast" }, "");
  const modelBox = h("div", { class: "trend", "data-testid": "model-chart" });
  const modelNote = h("p", { class: "muted" }, "");
  const table = h("tbody", {});
  const signals = h("div", { "data-testid": "signals" });
  root.replaceChildren(
    h("section", { class: "panel" },
      h("h1", {}, `History of ${streamId}`),
      h("h2", {}, "Signals"),
      signals,
      h("h2", {}, "Health trend"),
      chartBox,
      trendLine,
      h("h2", {}, "Learned model of normal cycles (T² and SPE over their 99 % limits)"),
      modelNote,
      modelBox,
      h("h2", {}, "Cycles"),
      h("table", { class: "cycles", "data-testid": "cycle-list" },
        h("thead", {}, h("tr", {}, ["#", "Started", "Duration", "State", "Health", "Risk", "Reference", "Completeness", ""].map((t) => h("th", {}, t)))),
        table,
      ),
    ),
  );
  let chart: uPlot | null = null;
  let model: uPlot | null = null;
  let unmountSignals = (): void => undefined;
  let closed = false;
  void api
    .streams()
    .then((all) => all.find((s) => s.stream_id === streamId)?.sensors ?? [])
    .catch(() => []) // names and units are a nicety: the ids do
    .then((sensors) => {
      if (!closed) unmountSignals = mountSignals(signals, streamId, sensors);
    });
  void api
    .cycles(streamId, 500)
    .then((cycles) => {
      if (cycles.length === 0) {
        table.append(h("tr", {}, h("td", { colspan: 9, class: "muted" }, "No cycles recorded yet.")));
        return;
      }
      chart = trendChart(chartBox, cycles);
      const said = trendText(cycles);
      trendLine.textContent = said.text;
      trendLine.className = said.alert ? "error" : "";
      model = modelChart(modelBox, cycles);
      if (!model) modelNote.textContent = "The model is still learning: it is judged once it has learnt from 5 healthy cycles.";
      for (const c of cycles) {
        const link = `#/cycle/${encodeURIComponent(c.cycle_id)}`;
        table.append(
          h("tr", { "data-testid": "cycle-row", "data-cycle-id": c.cycle_id },
            h("td", {}, h("a", { href: link }, String(c.cycle_no))),
            h("td", {}, when(c.started_at)),
            h("td", {}, duration(c.duration_s)),
            h("td", {}, c.state, c.end_reason && c.state !== "completed" ? ` (${c.end_reason})` : ""),
            h("td", { class: "num" }, fmt(c.health_score, 1)),
            h("td", {}, c.risk_class ? h("span", { class: "risk", style: `background:${RISK_COLOURS[c.risk_class] ?? "#57606a"}` }, c.risk_class) : "–"),
            h("td", {}, c.reference_version ? `v${c.reference_version}` : "–"),
            h("td", { class: "num" }, `${(100 * c.completeness).toFixed(0)} %`),
            h("td", {}, h("a", { href: link }, "report")),
          ),
        );
      }
    })
    .catch((err: Error) => table.append(h("tr", {}, h("td", { colspan: 9, class: "error" }, `Could not load cycles: ${err.message}`))));
  return () => {
    closed = true;
    chart?.destroy();
    model?.destroy();
    unmountSignals();
  };
}
