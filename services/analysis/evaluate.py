"""``vertac evaluate``: how well the analysis tells faulty cycles from healthy ones, measured on
real cycles and on a simulated slow drift, with every analysis setting at its default.

**Rig.** The hydraulic test rig's 1 Hz cycles (``hydraulic-1hz``, labelled component faults). The
reference is what the automatic reference makes of the first ``auto_reference_cycles`` healthy
stable cycles; the learned model learns from those and from the other healthy cycles (stable and
still warming up), as the service does with later healthy cycles. A healthy cycle is judged by a
model that did not learn from it (leave-one-out); a faulty one by the model of every healthy
cycle. For each fault level, the AUC against the healthy cycles (the chance that a healthy cycle
looks healthier than a faulty one) of four methods:

- ``v0.15``: the score before the learned model, clipped to 100 below ``D = 1.5``;
- ``model``: the learned model's ``T²``/``SPE`` over their 99 % limits, alone;
- ``naive z``: per sensor, the cycle's mean level in normal spreads of the healthy cycles'
  means (the largest over the sensors): the baseline a spreadsheet would give;
- ``health``: today's health score (per-sensor comparison and learned model).

**Drift.** The simulated machine with a fault that grows every cycle (``sensor:drift:m:start``),
analysed cycle by cycle as the service does (reference from the first cycles, the model learning
from healthy ones, the trend over the last cycles): the first cycle flagged (trend alert or risk
medium or worse) against the first cycle that scores critical, and the error of the forecast made
at the first trend alert.

The analysis code is the service's own (:mod:`services.analysis.logic`), run in this process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.replay import SENSORS, HydraulicData, load_hydraulic
from edge.simulator import Fault, MachineModel, Simulation, build_machine
from schemas.messages import AnalysisCompleted
from schemas.timeutil import NS
from services.analysis import mspc
from services.analysis.handlers import REFIT_SHARE
from services.analysis.logic import (
    CycleData,
    Params,
    analyse,
    build_reference,
    deviation,
    learns_from,
    model_row,
    result_deviations,
)
from services.analysis.trend import Point, TrendParams, trend
from services.common.references import Reference

Array = npt.NDArray[np.float64]
DEFAULT_DATA = Path("../shared/data/hydraulic-1hz")
RIG_UNITS = {s: unit for s, (_, unit, _) in SENSORS.items()}
RIG_TYPES = {s: kind for s, (kind, _, _) in SENSORS.items()}
# cooler %, valve %, pump leakage, accumulator bar; one component off at a time, the mildest first
HEALTHY = (100, 100, 0, 130)
LEVELS: dict[str, list[tuple[int, int, int, int]]] = {
    "cooler": [(20, 100, 0, 130), (3, 100, 0, 130)],
    "valve": [(100, 90, 0, 130), (100, 80, 0, 130), (100, 73, 0, 130)],
    "pump": [(100, 100, 1, 130), (100, 100, 2, 130)],
    "accumulator": [(100, 100, 0, 115), (100, 100, 0, 100), (100, 100, 0, 90)],
}
METHODS = ("v0.15", "model", "naive z", "health")
FLAGGED = ("medium", "high", "critical")
SIM_CYCLE_S = 10.0  # the simulated machine's cycle, as ``vertac run`` simulates it


def auc(healthy: list[float], faulty: list[float]) -> float:
    """Chance that a healthy cycle rates higher (healthier) than a faulty one; ties count half."""
    h = np.asarray(healthy)[:, None]
    f = np.asarray(faulty)[None, :]
    return float(np.mean((h > f) + 0.5 * (h == f)))


def clipped_score(result: AnalysisCompleted) -> float:
    """The v0.15 score: ``100·exp(-max(0, D - 1.5)/4)`` of the per-sensor severities."""
    d = deviation([s.severity for s in result.sensors])
    return float(100.0 * np.exp(-max(0.0, d - 1.5) / 4.0))


def rig_cycle(rig: HydraulicData, row: int, stream_id: str = "hydraulic-rig") -> CycleData:
    """Row ``row`` of the rig as a cycle (60 samples of every channel, 1 s apart)."""
    start = int(rig.original[row]) * 60 * NS
    t = start + np.arange(60, dtype=np.int64) * NS
    return CycleData(
        stream_id=stream_id,
        cycle_id=f"rig-{int(rig.original[row])}",
        start_ns=start,
        end_ns=start + 59 * NS,
        sensors={s: (t, rig.values[s][row]) for s in SENSORS},
        sensor_types=RIG_TYPES,
    )


@dataclass(frozen=True)
class Rated:
    """One cycle under every method (higher is healthier) and its full result."""

    ratings: dict[str, float]
    result: AnalysisCompleted


@dataclass(frozen=True)
class RigEvaluation:
    members: int
    learnt: int  # cycles the model of the faulty cycles learnt from
    healthy: list[Rated]
    by_level: dict[tuple[int, int, int, int], list[Rated]]

    def ratings(self, cycles: list[Rated], method: str) -> list[float]:
        return [c.ratings[method] for c in cycles]

    def auc(self, level: tuple[int, int, int, int], method: str) -> float:
        return auc(self.ratings(self.healthy, method), self.ratings(self.by_level[level], method))

    def healthy_scores(self) -> Array:
        return np.array(self.ratings(self.healthy, "health"))


def _naive(means: Array, pool: Array) -> float:
    mu, sd = pool.mean(axis=0), pool.std(axis=0, ddof=1)
    return -float(np.max(np.abs(means - mu) / np.maximum(sd, 1e-9)))


def evaluate_rig(folder: Path, params: Params, members: int, n_points: int) -> RigEvaluation:
    """The rig's cycles under every method (see the module docstring)."""
    rig = load_hydraulic(folder)
    chosen = [int(r) for r in rig.rows(*HEALTHY, 0)[:members]]
    reference = build_reference([rig_cycle(rig, r) for r in chosen], version=1,
                                n_points=n_points, params=params, units=RIG_UNITS)  # fmt: skip
    own = reference.members
    assert own is not None
    layout = mspc.layout_of(reference)
    healthy = [int(r) for r in rig.rows(*HEALTHY) if int(r) not in set(chosen)]
    row_of = {r: model_row(rig_cycle(rig, r), reference, params) for r in healthy}
    learnt = {r: v for r, v in row_of.items() if v is not None}
    means = np.stack([rig.values[s].mean(axis=1) for s in SENSORS], axis=1)  # cycles x sensors

    models: dict[int, mspc.Model | None] = {}

    def model_without(left_out: int) -> mspc.Model | None:
        if left_out not in models:
            rows = [
                *own,
                *(learnt[r] for r in healthy if r != left_out and r in learnt),
            ]
            models[left_out] = mspc.fit(layout, np.array(rows[: params.model_cycles]))
        return models[left_out]

    def rate(row: int, left_out: int) -> Rated:
        others = [r for r in healthy if r != left_out]
        result = analyse(rig_cycle(rig, row), reference, params, model_without(left_out))
        stats = result.model
        ratio = stats.ratio_99 if stats is not None and stats.available else None
        assert result.health_score is not None, result.qualification
        return Rated(
            {
                "v0.15": clipped_score(result),
                "model": -ratio if ratio is not None else float("nan"),
                "naive z": _naive(means[row], means[[*chosen, *others]]),
                "health": result.health_score,
            },
            result,
        )

    # a healthy cycle is judged without itself; so that faulty cycles are judged by models of the
    # same size, each leaves one healthy cycle out too, in turn
    rated_healthy = [rate(r, r) for r in healthy]
    by_level = {
        lv: [rate(int(r), healthy[j % len(healthy)]) for j, r in enumerate(rig.rows(*lv))]
        for levels in LEVELS.values()
        for lv in levels
    }
    return RigEvaluation(len(chosen), len(chosen) + len(learnt) - 1, rated_healthy, by_level)


def rig_report(e: RigEvaluation) -> list[str]:
    """The rig's figures as Markdown lines."""
    h = e.healthy_scores()
    lines = [
        f"Hydraulic rig: reference = the first {e.members} healthy stable cycles; "
        f"{len(h)} other healthy cycles, each judged by a model that learnt from {e.learnt} "
        "others",
        f"healthy health score: median {np.median(h):.1f}, min {h.min():.1f}, "
        f"p10 {np.percentile(h, 10):.1f}, p90 {np.percentile(h, 90):.1f}, max {h.max():.1f}, "
        f"{int(np.sum(h >= 99.95))} of {len(h)} at 100",
        "",
        "| fault | level | cycles | median health | "
        + " | ".join(f"AUC {m}" for m in METHODS)
        + " |",
        "| --- | --- | --- | --- | " + " | ".join("---" for _ in METHODS) + " |",
    ]
    for component, levels in LEVELS.items():
        for lv in levels:
            cycles = e.by_level[lv]
            if not cycles:
                continue
            med = float(np.median(e.ratings(cycles, "health")))
            aucs = " | ".join(f"{e.auc(lv, m):.3f}" for m in METHODS)
            lines.append(f"| {component} | {'/'.join(map(str, lv))} | {len(cycles)} | "
                         f"{med:.1f} | {aucs} |")  # fmt: skip
    return lines


@dataclass
class DriftEvaluation:
    fault: Fault
    scores: list[float | None] = field(default_factory=list)  # per cycle (None: reference)
    risks: list[str] = field(default_factory=list)
    first_flagged: int | None = None
    flagged_by: str = ""
    first_critical: int | None = None
    first_alert: int | None = None  # the first trend alert
    forecast_at_alert: float | None = None  # cycles to the threshold, said at the first alert
    forecast_low: float | None = None
    forecast_high: float | None = None

    @property
    def lead(self) -> int | None:
        if self.first_flagged is None or self.first_critical is None:
            return None
        return self.first_critical - self.first_flagged

    @property
    def forecast_error(self) -> float | None:
        """Forecast critical cycle minus the real one (positive: forecast late)."""
        if self.forecast_at_alert is None or self.first_critical is None:
            return None
        assert self.first_alert is not None
        return self.first_alert + self.forecast_at_alert - self.first_critical


def simulated_cycles(
    fault: Fault, cycles: int, seed: int = 7, machine: MachineModel | None = None
) -> list[CycleData]:
    """``cycles`` cycles of the simulated machine (as ``vertac run`` runs it) with ``fault``."""
    if machine is None:
        machine = build_machine(faults=(fault,), seed=seed, cycle_s=SIM_CYCLE_S)
    start = 1_700_000_000 * NS
    sim = Simulation(machine, start)
    length = round(machine.cycle_s * NS)
    types = {s.id: s.type for s in machine.sensors}
    out = []
    for i in range(cycles):
        a, b = start + i * length, start + (i + 1) * length
        series = [sim.series(s, a, b) for s in machine.sensors]
        sensors = {
            s.sensor_id: (s.t0_ns + np.arange(s.n, dtype=np.int64) * s.period_ns,
                          np.asarray(s.values, dtype=np.float64))
            for s in series
        }  # fmt: skip
        out.append(CycleData(machine.stream_id, f"sim-{i}", a, b - 1, sensors, sensor_types=types))
    return out


def evaluate_drift(
    fault: Fault, params: Params, trend_params: TrendParams, members: int, n_points: int,
    cycles: int = 150, machine: MachineModel | None = None,
) -> DriftEvaluation:  # fmt: skip
    """Cycle by cycle, as the service analyses a stream (see the module docstring)."""
    data = simulated_cycles(fault, cycles, machine=machine)
    reference: Reference = build_reference(data[:members], version=1, n_points=n_points,
                                           params=params)  # fmt: skip
    out = DriftEvaluation(fault, scores=[None] * members, risks=["reference"] * members)
    layout = mspc.layout_of(reference)
    own = [] if reference.members is None else list(reference.members)
    learnt: list[Array] = []  # the last healthy cycles' rows, as the service keeps them
    keep = max(1, params.model_cycles - len(own))
    model = mspc.fit(layout, np.array(own)) if own else None
    fitted = len(own)  # the version the model was fitted at (the service refits as it does)
    points: list[Point] = []
    for i in range(members, cycles):
        cycle = data[i]
        result = analyse(cycle, reference, params, model, fitted)
        if result.health_score is not None:
            at = cycle.end_ns / NS
            fed = result.model is not None and result.model.feeds_score
            points = [*points, Point(at, result.health_score, result_deviations(result), fed)]
            result = result.model_copy(update={"trend": trend(points, trend_params)})
        out.scores.append(result.health_score)
        out.risks.append(result.risk_class)
        t = result.trend
        alert = t is not None and t.alert
        if out.first_flagged is None and (alert or result.risk_class in FLAGGED):
            out.first_flagged = i
            out.flagged_by = "trend alert" if alert else f"{result.risk_class} risk"
        if alert and out.first_alert is None:
            assert t is not None
            out.first_alert = i
            out.forecast_at_alert = t.cycles_to_threshold
            out.forecast_low = t.cycles_to_threshold_low
            out.forecast_high = t.cycles_to_threshold_high
        if result.risk_class == "critical":
            out.first_critical = i
            break
        if params.model_cycles > 0 and learns_from(result):
            row = model_row(cycle, reference, params)
            if row is not None:
                learnt.append(row)
                version = len(own) + len(learnt)
                if model is None or version - fitted >= max(1, int(fitted * REFIT_SHARE)):
                    model = mspc.fit(layout, np.array([*own, *learnt[-keep:]]))
                    fitted = version
    return out


def baseline_report(e: DriftEvaluation) -> list[str]:
    """The same machine without the fault: false alarms and the healthy score spread."""
    scored = np.array([s for s in e.scores if s is not None])
    flagged = (
        "never flagged"
        if e.first_flagged is None
        else f"FALSE ALARM: flagged at cycle {e.first_flagged} ({e.flagged_by})"
    )
    return [
        f"The same machine without the fault, {len(e.scores)} cycles: {flagged}; health median "
        f"{np.median(scored):.1f}, min {scored.min():.1f}, max {scored.max():.1f}"
    ]


def drift_report(e: DriftEvaluation, cycle_s: float) -> list[str]:
    f = e.fault
    lines = [
        f"Simulated drift: {f.sensor_id} grows {f.magnitude:g} a cycle from cycle {f.start_cycle}"
        f" (cycles of {cycle_s:g} s; the first {e.risks.count('reference')} make the reference)",
    ]
    if e.first_critical is None:
        lines.append("  the fault never scored critical within the cycles simulated: no lead "
                     "time measured")  # fmt: skip
    else:
        lines.append(f"  first scored critical: cycle {e.first_critical}")
    if e.first_flagged is None:
        lines.append(f"  never flagged in {len(e.scores)} cycles")
    else:
        lines.append(f"  first flagged: cycle {e.first_flagged} ({e.flagged_by})")
    if e.lead is not None:
        lines.append(f"  flagged {e.lead} cycles ({e.lead * cycle_s:g} s) before critical")
    if e.forecast_at_alert is not None:
        low = "?" if e.forecast_low is None else f"{e.forecast_low:.0f}"
        high = "?" if e.forecast_high is None else f"{e.forecast_high:.0f}"
        lines.append(f"  first trend alert: cycle {e.first_alert}")
        lines.append(f"  forecast at the first trend alert: critical in {e.forecast_at_alert:.1f}"
                     f" cycles (interval {low}-{high})")  # fmt: skip
        err = e.forecast_error
        if err is not None:
            lines.append(f"  forecast error: {err:+.1f} cycles (positive: forecast too late)")
    else:
        lines.append("  no trend alert: no forecast to check")
    scored = [s for s in e.scores if s is not None]
    if scored:
        lines.append("  scores: " + " ".join(f"{s:.0f}" for s in scored))
    return lines
