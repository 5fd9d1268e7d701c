// Live monitoring of one stream: charts, sensor grid, cycle status with start/stop, alert ticker.
import { api, ApiError, type AlertChanged, type CycleStateChanged, type SensorSpec } from "./api";
import { LiveChart } from "./charts";
import { duration, fmt, h, toast, when } from "./dom";
import { perf, stampAfterPaint, stampArrival } from "./perf";
import { renderReport } from "./report";
import { LiveSocket, type ConnectionState } from "./socket";
import { SeriesWindow, staleAfterMs } from "./window";

const PALETTE = [
  "#0969da", "#cf222e", "#1a7f37", "#8250df", "#bc4c00", "#0a7ea4", "#bf3989", "#4d2d00",
  "#116329", "#953800", "#6639ba", "#1b7c83", "#a40e26", "#3d4451", "#7d4e00", "#0550ae",
];
const WINDOWS_S = [5, 10, 20, 30];
const KEEP_MS = 31_000;

interface Trace {
  t_ms: number[];
  min: number[];
  max: number[];
  mean?: number[];
  last: number;
  count: number;
}

interface SensorView {
  spec: SensorSpec;
  window: SeriesWindow;
  chart: LiveChart;
  arrivedAt: number;
  card: HTMLElement;
  value: HTMLElement;
  stats: HTMLElement;
}

interface ActiveAlert {
  alert_id: string;
  severity: string;
  state: string;
  message: string;
  sensor_id: string | null;
  occurrences: number;
  raised_at: string;
}

export interface LiveContext {
  setConnection(state: ConnectionState): void;
}

export function operatorName(): string {
  return localStorage.getItem("vertac.operator") || "operator";
}

export function mountLive(root: HTMLElement, streamId: string, ctx: LiveContext): () => void {
  let windowS = Number(localStorage.getItem("vertac.window")) || 10;
  const sensors = new Map<string, SensorView>();
  const alerts = new Map<string, ActiveAlert>();
  let pendingSent: number[] = [];
  let dirty = false;
  let raf = 0;
  let cycle = { state: "idle", startedAt: 0, samples: 0, joinedLate: false, id: "" };
  // what the WebSocket told since the last REST read began: newer than that read, so it wins
  let seenLive = { cycle: false, report: false, alerts: new Set<string>() };

  // --- layout -------------------------------------------------------------------------------
  const stateBadge = h("span", { class: "badge state-idle", "data-testid": "cycle-state" }, "idle");
  const cycleNo = h("span", { "data-testid": "cycle-no" }, "–");
  const elapsed = h("span", { "data-testid": "cycle-elapsed" }, "–");
  const sampleCount = h("span", { "data-testid": "cycle-samples" }, "–");
  const startBtn = h("button", { class: "primary", "data-testid": "start", "data-needs": "operator", onclick: () => command("start") }, "Start cycle");
  const stopBtn = h("button", { "data-testid": "stop", "data-needs": "operator", onclick: () => command("stop") }, "Stop cycle");
  const windowSel = h(
    "select",
    {
      "data-testid": "window",
      onchange: (e: Event) => {
        windowS = Number((e.target as HTMLSelectElement).value);
        localStorage.setItem("vertac.window", String(windowS));
        dirty = true;
      },
    },
    WINDOWS_S.map((s) => h("option", { value: s, selected: s === windowS }, `${s} s`)),
  );
  const operator = h("input", {
    value: operatorName(),
    size: 10,
    "aria-label": "operator name",
    onchange: (e: Event) => localStorage.setItem("vertac.operator", (e.target as HTMLInputElement).value.trim()),
  });
  const ticker = h("ul", { class: "ticker", "data-testid": "alerts" });
  const grid = h("div", { class: "sensor-grid", "data-testid": "sensor-grid" });
  const charts = h("div", { class: "charts", "data-testid": "charts" });
  const lastReport = h("section", { class: "panel last-report", "data-testid": "last-report", hidden: true });
  const title = h("h1", {}, streamId);

  root.replaceChildren(
    h("div", { class: "live" },
      h("section", { class: "panel status" },
        title,
        h("dl", { class: "facts" },
          h("dt", {}, "Cycle"), h("dd", {}, stateBadge),
          h("dt", {}, "Number"), h("dd", {}, cycleNo),
          h("dt", {}, "Elapsed"), h("dd", {}, elapsed),
          h("dt", {}, "Samples"), h("dd", {}, sampleCount),
        ),
        h("div", { class: "buttons" }, startBtn, stopBtn),
        h("label", { class: "window" }, "Window ", windowSel),
      ),
      h("section", { class: "panel alerts" },
        h("div", { class: "panel-head" }, h("h2", {}, "Alerts"), h("label", { "data-needs": "anonymous" }, "Operator ", operator)),
        ticker,
      ),
      h("section", { class: "panel sensors" }, h("h2", {}, "Sensors"), grid),
      h("section", { class: "panel" }, h("h2", {}, "Signals"), charts),
      lastReport,
    ),
  );

  // --- sensors ------------------------------------------------------------------------------
  function addSensor(spec: SensorSpec): SensorView {
    const existing = sensors.get(spec.id);
    if (existing) return existing;
    const colour = PALETTE[sensors.size % PALETTE.length];
    const value = h("span", { class: "value" }, "–");
    const stats = h("span", { class: "stats" }, "min – · max – · avg –");
    const card = h("div", { class: "sensor stale", "data-testid": `sensor-${spec.id}`, title: spec.name || spec.id },
      h("div", { class: "sensor-head" }, h("i", { class: "swatch", style: `background:${colour}` }), h("b", {}, spec.name || spec.id), h("span", { class: "stale-marker" }, "stale")),
      h("div", {}, value, " ", h("span", { class: "unit" }, spec.unit)),
      stats,
    );
    grid.append(card);
    const box = h("div", { class: "chart", "data-testid": `chart-${spec.id}` }, h("div", { class: "chart-title" }, spec.name || spec.id, spec.unit ? ` (${spec.unit})` : ""));
    charts.append(box);
    const view: SensorView = { spec, window: new SeriesWindow(), chart: new LiveChart(box, spec.unit, colour), arrivedAt: 0, card, value, stats };
    sensors.set(spec.id, view);
    return view;
  }

  function onSamples(msg: { sensors: Record<string, Trace>; sent_ms?: number[] }): void {
    const now = Date.now();
    let count = 0;
    for (const [id, tr] of Object.entries(msg.sensors)) {
      const view = sensors.get(id) ?? addSensor({ id, name: id, type: "generic", unit: "", rate_hz: 1 });
      view.window.append(tr.t_ms, tr.min, tr.max, tr.mean ?? [], tr.last, tr.count);
      view.arrivedAt = now;
      count += tr.count;
    }
    if (cycle.state === "running") cycle.samples += count;
    if (msg.sent_ms) {
      stampArrival(msg.sent_ms);
      pendingSent.push(...msg.sent_ms);
    }
    dirty = true;
  }

  function draw(): void {
    raf = requestAnimationFrame(draw);
    perf.frames++;
    if (!dirty) return;
    dirty = false;
    let newest = -Infinity;
    for (const v of sensors.values()) if (v.window.lastTime > newest) newest = v.window.lastTime;
    if (!Number.isFinite(newest)) return;
    const t0 = performance.now();
    const from = newest - windowS * 1000;
    for (const v of sensors.values()) {
      v.window.trim(newest - KEEP_MS);
      const [x, y] = v.window.envelope(from);
      v.chart.update(x, y, from / 1000, newest / 1000);
    }
    perf.paints++;
    if (perf.drawMs.length < 100_000) perf.drawMs.push(performance.now() - t0);
    stampAfterPaint(pendingSent);
    pendingSent = [];
  }

  function refreshGrid(): void {
    const now = Date.now();
    let newest = -Infinity;
    for (const v of sensors.values()) if (v.window.lastTime > newest) newest = v.window.lastTime;
    for (const v of sensors.values()) {
      const stale = v.arrivedAt === 0 || now - v.arrivedAt > staleAfterMs(v.spec.rate_hz);
      v.card.classList.toggle("stale", stale);
      v.value.textContent = fmt(v.window.last);
      const s = v.window.stats(newest - windowS * 1000);
      v.stats.textContent = `min ${fmt(s.min)} · max ${fmt(s.max)} · avg ${fmt(s.avg)}`;
    }
    if (cycle.state === "running" && cycle.startedAt) {
      elapsed.textContent = duration((now - cycle.startedAt) / 1000);
      sampleCount.textContent = `${cycle.joinedLate ? "≥ " : ""}${cycle.samples.toLocaleString()}`;
    }
  }

  // --- cycle --------------------------------------------------------------------------------
  function showState(state: string): void {
    cycle.state = state;
    stateBadge.textContent = state;
    stateBadge.className = `badge state-${state}`;
    startBtn.disabled = state === "running" || state === "stopping";
    stopBtn.disabled = state !== "running";
  }

  function onCycle(ev: CycleStateChanged): void {
    seenLive.cycle = true;
    if (ev.state === "running") {
      cycle = { state: "running", startedAt: Date.parse(ev.started_at ?? ev.at), samples: 0, joinedLate: false, id: ev.cycle_id };
      cycleNo.textContent = String(ev.cycle_no);
      showState("running");
    } else {
      showState("idle");
      cycleNo.textContent = String(ev.cycle_no);
      elapsed.textContent = duration(ev.duration_s);
      const total = Object.values(ev.samples).reduce((a, b) => a + b, 0);
      sampleCount.textContent = total.toLocaleString();
      toast(`Cycle ${ev.cycle_no} ${ev.state}${ev.reason ? `: ${ev.reason}` : ""}`, ev.state === "aborted" ? "error" : "info");
    }
  }

  async function command(which: "start" | "stop"): Promise<void> {
    const button = which === "start" ? startBtn : stopBtn;
    button.disabled = true;
    try {
      await api.command(streamId, which);
      if (which === "stop" && cycle.state === "running") showState("stopping");
    } catch (err) {
      toast(`Could not ${which} the cycle: ${(err as Error).message}`, "error");
      showState(cycle.state);
    }
  }

  // --- alerts -------------------------------------------------------------------------------
  function upsertAlert(a: ActiveAlert): void {
    if (a.severity === "info") return;
    if (a.state === "cleared") alerts.delete(a.alert_id);
    else alerts.set(a.alert_id, a);
    renderAlerts();
  }

  function renderAlerts(): void {
    const rows = [...alerts.values()].sort((a, b) => b.raised_at.localeCompare(a.raised_at));
    ticker.replaceChildren(
      ...(rows.length === 0
        ? [h("li", { class: "empty" }, "No active warnings or critical alerts.")]
        : rows.map((a) =>
            h("li", { class: `alert sev-${a.severity} st-${a.state}`, "data-testid": "alert", "data-alert-id": a.alert_id },
              h("span", { class: "sev" }, a.severity),
              h("span", { class: "msg" }, a.message, a.occurrences > 1 ? ` (×${a.occurrences})` : ""),
              h("time", {}, when(a.raised_at)),
              a.state === "raised"
                ? h("button", { "data-testid": "ack", "data-needs": "operator", onclick: (ev: Event) => acknowledge(a, ev.currentTarget as HTMLButtonElement) }, "Acknowledge")
                : h("span", { class: "acked" }, "acknowledged"),
            ),
          )),
    );
  }

  async function acknowledge(a: ActiveAlert, button: HTMLButtonElement): Promise<void> {
    // one request per click: the button waits for the answer, a second click cannot send another
    button.disabled = true;
    button.textContent = "Acknowledging\u2026";
    try {
      const answer = await api.ack(a.alert_id, operator.value.trim() || "operator");
      if (answer?.state === "sent") {
        // a site's alert: the site acknowledges it, and its event updates the ticker
        button.textContent = `Sent to site ${answer.site ?? ""}`;
        return;
      }
      const now = alerts.get(a.alert_id) ?? a;
      upsertAlert({ ...now, state: "acknowledged" });
    } catch (err) {
      button.disabled = false;
      button.textContent = "Acknowledge";
      toast(`Acknowledge failed: ${(err as Error).message}`, "error");
    }
  }

  const fromEvent = (e: AlertChanged): ActiveAlert => ({ ...e, raised_at: e.raised_at ?? e.at });

  // --- wiring -------------------------------------------------------------------------------
  const socket = new LiveSocket(
    `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/live/ws/stream/${encodeURIComponent(streamId)}`,
    {
      onState: (s) => ctx.setConnection(s),
      onMessage: (m) => {
        perf.messages++;
        const d = m.data;
        switch (m.type) {
          case "samples":
            onSamples(d as unknown as { sensors: Record<string, Trace>; sent_ms?: number[] });
            break;
          case "state_change":
            onCycle((d as unknown as { event: CycleStateChanged }).event);
            break;
          case "ready":
            void load(); // (re)connected and subscribed: read the current state
            break;
          case "analysis_result": {
            seenLive.report = true;
            const cid = (d as unknown as { result: { cycle_id: string } }).result.cycle_id;
            lastReport.hidden = false;
            void renderReport(lastReport, cid, { compact: true });
            break;
          }
          case "alert": {
            const alert = fromEvent((d as unknown as { alert: AlertChanged }).alert);
            seenLive.alerts.add(alert.alert_id);
            upsertAlert(alert);
            break;
          }
          case "error":
            toast(`Gateway: ${String(d.error)}`, "error");
            break;
        }
      },
    },
  );

  /** The last 30 s from the bus, so the charts open full instead of filling up. */
  async function backfill(): Promise<void> {
    try {
      const recent = await api.recent(streamId, KEEP_MS / 1000 - 1);
      for (const [id, tr] of Object.entries(recent.sensors)) {
        const view = sensors.get(id) ?? addSensor({ id, name: id, type: "generic", unit: "", rate_hz: 1 });
        view.window.prepend(tr.t_ms, tr.min, tr.max, tr.mean, tr.last);
        perf.backfilled += tr.t_ms.length;
      }
      dirty = true;
    } catch (err) {
      console.warn("no backfill of the charts", err);
    }
  }

  /** Current state over REST; runs on every (re)connection, once the gateway forwards events. */
  async function load(): Promise<void> {
    seenLive = { cycle: false, report: false, alerts: new Set<string>() };
    try {
      const status = await api.status(streamId);
      title.textContent = status.device_name ? `${status.device_name} (${streamId})` : streamId;
      status.sensors.forEach(addSensor);
      void backfill();
      const recent = await api.cycles(streamId, 10);
      const latest = recent[0];
      const analysed = recent.find((c) => c.state !== "running" && c.risk_class !== null);
      if (!seenLive.cycle) {
        showState(status.cycle_state);
        if (latest) cycleNo.textContent = String(latest.cycle_no);
        if (latest?.state === "running" && latest.started_at && cycle.id !== latest.cycle_id) {
          cycle = { state: "running", startedAt: Date.parse(latest.started_at), samples: 0, joinedLate: true, id: latest.cycle_id };
        }
      }
      if (analysed && !seenLive.report && lastReport.hidden) {
        lastReport.hidden = false; // the newest analysed cycle until the next analysis arrives
        void renderReport(lastReport, analysed.cycle_id, { compact: true });
      }
      const rows = await api.alerts({ stream_id: streamId, limit: "100" });
      const current = new Map(rows.map((r) => [r.alert_id, r]));
      for (const id of [...alerts.keys()]) {
        if (!current.has(id) && !seenLive.alerts.has(id)) alerts.delete(id); // gone meanwhile
      }
      for (const r of rows) if (!seenLive.alerts.has(r.alert_id)) upsertAlert(r);
      renderAlerts();
    } catch (err) {
      const msg = err instanceof ApiError && err.status === 404 ? `Machine ${streamId} is not known to the gateway.` : `Could not load ${streamId}: ${(err as Error).message}`;
      toast(msg, "error");
    }
  }

  showState("idle");
  renderAlerts();
  socket.open(); // its "ready" message triggers load()
  raf = requestAnimationFrame(draw);
  const gridTimer = window.setInterval(refreshGrid, 250);

  return () => {
    cancelAnimationFrame(raf);
    window.clearInterval(gridTimer);
    socket.close();
    for (const v of sensors.values()) v.chart.destroy();
  };
}
