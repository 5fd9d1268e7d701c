// The post-cycle report: score, metadata, top sensors, first deviator, alerts, recommendations,
// sensor cards with overlays on the reference, exports, and "use as reference" / "save as dataset".
import { api, links, type AlertGroup, type CycleDetail, type OverlaySensor, type SensorDeviation } from "./api";
import { overlayChart } from "./charts";
import { duration, fmt, h, pct, toast, when } from "./dom";
import { gauge } from "./gauge";

export interface ReportOptions {
  compact?: boolean;
}

const generation = new WeakMap<HTMLElement, number>();

export async function renderReport(root: HTMLElement, cycleId: string, opts: ReportOptions = {}): Promise<void> {
  const mine = (generation.get(root) ?? 0) + 1;
  generation.set(root, mine);
  root.replaceChildren(h("p", { class: "muted" }, `Loading cycle ${cycleId}…`));
  let detail: CycleDetail;
  try {
    detail = await api.cycle(cycleId);
  } catch (err) {
    root.replaceChildren(h("p", { class: "error" }, `Cycle ${cycleId}: ${(err as Error).message}`));
    return;
  }
  const c = detail.cycle;
  const overlay = api.overlay(cycleId).catch((err: Error) => err);
  const alertGroups = api.cycleAlerts(cycleId).then((a) => a.groups, (err: Error) => err);
  if (generation.get(root) !== mine) return;

  const a = detail.analysis;
  const head = h("div", { class: "report-head" },
    h("h2", {}, `Cycle ${c.cycle_no} report`, " ", opts.compact ? h("a", { href: `#/cycle/${encodeURIComponent(cycleId)}`, class: "small" }, "open full report") : null),
    h("span", { class: "muted" }, c.cycle_id),
  );
  const meta = h("dl", { class: "facts meta", "data-testid": "cycle-meta" },
    h("dt", {}, "Machine"), h("dd", {}, c.stream_id),
    h("dt", {}, "State"), h("dd", {}, c.state, c.end_reason ? ` (${c.end_reason})` : ""),
    h("dt", {}, "Started"), h("dd", {}, when(c.started_at)),
    h("dt", {}, "Duration"), h("dd", {}, duration(c.duration_s)),
    h("dt", {}, "Samples"), h("dd", {}, Object.values(c.samples).reduce((x, y) => x + y, 0).toLocaleString()),
    h("dt", {}, "Completeness"), h("dd", {}, pct(c.completeness), c.gaps ? ` (${c.gaps} frames missing)` : ""),
    h("dt", {}, "Reference"), h("dd", {}, a?.reference_version ? `v${a.reference_version}` : "none yet"),
  );
  const exports = h("div", { class: "buttons exports" },
    h("a", { class: "button", href: links.samplesCsv(cycleId), download: `${cycleId}.csv`, "data-testid": "export-samples" }, "Samples CSV"),
    h("a", { class: "button", href: links.analysisCsv(cycleId), download: `${cycleId}-analysis.csv`, "data-testid": "export-analysis" }, "Analysis CSV"),
    h("a", { class: "button", href: links.reportPdf(cycleId), download: `${cycleId}.pdf`, "data-testid": "export-pdf" }, "PDF report"),
    h("button", { "data-testid": "use-as-reference", "data-needs": "admin", onclick: () => useAsReference(detail) }, "Use as reference"),
    datasetForm(cycleId),
  );

  const alertBox = h("div", { "data-testid": "alert-summary" }, h("p", { class: "muted" }, "Loading alerts…"));
  void alertGroups.then((groups) =>
    alertBox.replaceChildren(
      groups instanceof Error ? h("p", { class: "error" }, `Alerts unavailable: ${groups.message}`) : alertSummary(groups),
    ),
  );
  if (!a) {
    root.replaceChildren(
      head,
      h("div", { class: "report-top" }, h("div", { class: "gauge-box" }, h("p", { class: "muted" }, "Not analysed yet (no reference, or the analysis is running).")), meta),
      h("div", { class: "report-mid" }, h("div", {}, h("h3", {}, "Alerts during the cycle"), alertBox)),
      exports,
    );
    return;
  }
  const top = a.sensors.slice(0, 5);
  const topList = h("ol", { class: "top-sensors", "data-testid": "top-sensors" },
    top.map((d) => h("li", {},
      h("b", {}, d.sensor_id),
      h("span", { class: "track" }, h("span", { class: d.pattern === "normal" ? "bar" : "bar abnormal", style: `width:${Math.max(1, d.contribution).toFixed(1)}%` })),
      h("span", {}, `${d.contribution.toFixed(0)} % · ${d.pattern}`),
    )),
  );
  const first = a.first_deviation
    ? h("p", { "data-testid": "first-deviator" }, "First to leave its envelope: ", h("b", {}, a.first_deviation.sensor_id), ` at ${a.first_deviation.at_s.toFixed(1)} s (${a.first_deviation.z.toFixed(1)}× the envelope)`)
    : h("p", { "data-testid": "first-deviator", class: "muted" }, "No sensor left its envelope.");
  const recs = h("ul", { class: "recommendations", "data-testid": "recommendations" },
    a.recommendations.length
      ? a.recommendations.map((r) => h("li", {}, h("b", {}, r.sensor_id), `: ${r.text}`, h("div", { class: "evidence" }, r.evidence)))
      : [h("li", { class: "muted" }, "None: every sensor within its normal range.")],
  );
  const cards = h("div", { class: "cards", "data-testid": "sensor-cards" });
  root.replaceChildren(
    head,
    h("div", { class: "report-top" },
      h("div", { class: "gauge-box" }, gauge(a.health_score, a.risk_class), a.qualified ? h("p", { class: "warn" }, a.qualification) : null),
      meta,
      h("div", {}, h("h3", {}, "Top sensors"), topList, first),
    ),
    h("div", { class: "report-mid" },
      h("div", {}, h("h3", {}, "Recommendations"), recs),
      h("div", {}, h("h3", {}, "Alerts during the cycle"), alertBox),
    ),
    exports,
    h("h3", {}, "Sensors"),
    cards,
  );

  const ov = await overlay;
  if (generation.get(root) !== mine) return;
  const curves = new Map<string, OverlaySensor>(ov instanceof Error ? [] : ov.sensors.map((s) => [s.sensor_id, s]));
  a.sensors.forEach((d, i) => cards.append(sensorCard(d, curves.get(d.sensor_id), i === 0 && !opts.compact)));
}

function sensorCard(d: SensorDeviation, curve: OverlaySensor | undefined, open: boolean): HTMLElement {
  const chart = h("div", { class: "overlay" });
  const card = h("details", { class: "card", "data-testid": `card-${d.sensor_id}`, open },
    h("summary", {},
      h("b", {}, d.sensor_id), ` ${d.contribution.toFixed(0)} % · ${d.pattern} · severity ${fmt(d.severity, 2)}`,
    ),
    chart,
    h("table", { class: "metrics" },
      h("tbody", {},
        row("DTW distance", fmt(d.dtw), "Euclidean", fmt(d.euclidean)),
        row("Max deviation", `${fmt(d.max_deviation)} ${d.unit} at ${d.max_deviation_at_s.toFixed(1)} s`, "Mean deviation", `${fmt(d.mean_deviation)} ${d.unit}`),
        row("Outside envelope", pct(d.outside_envelope_share), "Offset", `${fmt(d.offset)} ${d.unit} (${fmt(d.offset_z, 2)} σ)`),
        row("Timing vs magnitude", `${pct(d.timing_share)} / ${pct(d.magnitude_share)}`, "Largest lag", `${d.max_lag_s.toFixed(2)} s`),
        row("Cycle min / mean / max", `${fmt(d.cycle_stats.min)} / ${fmt(d.cycle_stats.mean)} / ${fmt(d.cycle_stats.max)}`, "Reference min / mean / max", `${fmt(d.reference_stats.min)} / ${fmt(d.reference_stats.mean)} / ${fmt(d.reference_stats.max)}`),
        row("Cycle std / rms", `${fmt(d.cycle_stats.std)} / ${fmt(d.cycle_stats.rms)}`, "Reference std / rms", `${fmt(d.reference_stats.std)} / ${fmt(d.reference_stats.rms)}`),
      ),
    ),
  );
  let drawn = false;
  const draw = () => {
    if (drawn || !card.open) return;
    drawn = true;
    if (curve) overlayChart(chart, curve);
    else chart.replaceChildren(h("p", { class: "muted" }, "No recorded samples for this sensor."));
  };
  card.addEventListener("toggle", draw);
  if (open) requestAnimationFrame(draw);
  return card;
}

function row(k1: string, v1: string, k2: string, v2: string): HTMLTableRowElement {
  return h("tr", {}, h("th", {}, k1), h("td", {}, v1), h("th", {}, k2), h("td", {}, v2));
}

function alertSummary(groups: AlertGroup[]): HTMLElement {
  if (groups.length === 0) return h("p", { class: "muted" }, "No alerts were active during this cycle.");
  return h("ul", { class: "alert-groups" },
    groups.map((g) =>
      h("li", { class: `sev-${g.severity}` },
        h("span", { class: "sev" }, g.severity),
        ` ${g.kind}${g.sensor_id ? ` on ${g.sensor_id}` : ""}: ${g.alerts} alert${g.alerts > 1 ? "s" : ""}, ${g.occurrences}× — ${g.last_message}`,
      ),
    ),
  );
}

async function useAsReference(detail: CycleDetail): Promise<void> {
  const c = detail.cycle;
  if (!window.confirm(`Make cycle ${c.cycle_no} the reference of ${c.stream_id}? New cycles will be compared with it.`)) return;
  try {
    const ref = await api.useAsReference(c.stream_id, c.cycle_id, `from cycle ${c.cycle_no}`);
    if ("state" in ref) {
      toast(`Sent to site ${ref.site}: it makes the reference from cycle ${c.cycle_no} and activates it.`);
      return;
    }
    toast(`Reference v${ref.reference_version} created from cycle ${c.cycle_no} and activated.`);
  } catch (err) {
    toast(`Use as reference failed: ${(err as Error).message}`, "error");
  }
}

function datasetForm(cycleId: string): HTMLElement {
  const name = h("input", { value: localStorage.getItem("vertac.dataset") || "golden-cycles", size: 14, "aria-label": "dataset name", "data-testid": "dataset-name" });
  const label = h("input", { value: "", placeholder: "label, e.g. good", size: 10, "aria-label": "label", "data-testid": "dataset-label" });
  const form = h("form", { class: "dataset", "data-testid": "save-dataset", "data-needs": "operator" }, name, label, h("button", { type: "submit" }, "Save as dataset"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const dataset = name.value.trim();
    try {
      await api.saveToDataset(dataset, cycleId, label.value.trim());
      localStorage.setItem("vertac.dataset", dataset);
      toast(`Saved to dataset ${dataset}.`);
    } catch (err) {
      toast(`Save as dataset failed: ${(err as Error).message}`, "error");
    }
  });
  return form;
}
