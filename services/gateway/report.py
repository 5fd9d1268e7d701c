"""Cycle reports rendered on the server: a PDF (matplotlib) and CSV of the analysis.

Page 1: the cycle (times, duration, completeness, reference version), the health score with its
risk class, the first deviator, recommendations with their evidence, the alerts active during the
cycle (grouped), and the sensors ranked by contribution.
Following pages: each sensor's cycle drawn over the reference's mean and envelope, from the same
overlay (:func:`services.gateway.logic.cycle_overlay`) the dashboard draws.

Drawn with matplotlib's object API (``Figure``, no ``pyplot`` state), so reports rendered at the
same time in several threads do not share anything.
"""

from __future__ import annotations

import csv
import io
import textwrap

import numpy as np
import numpy.typing as npt
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Polygon, Rectangle
from matplotlib.ticker import MaxNLocator

from schemas.messages import (
    AnalysisCompleted,
    CycleAlerts,
    CycleDetail,
    CycleOverlay,
    OverlaySensor,
)
from services.gateway.csvtext import neutral

ALERT_COLOURS = {"critical": "#cf222e", "warning": "#9a6700", "info": "#0969da"}
RISK_COLOURS = {"low": "#2da44e", "medium": "#d4a72c", "high": "#e16f24", "critical": "#cf222e"}


def analysis_csv(detail: CycleDetail) -> str:
    """One row per sensor with every metric of the analysis."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "cycle_id",
            "reference_version",
            "health_score",
            "risk_class",
            "sensor_id",
            "unit",
            "contribution_pct",
            "pattern",
            "severity",
            "offset",
            "offset_z",
            "shape_z",
            "euclidean",
            "dtw",
            "max_deviation",
            "max_deviation_at_s",
            "mean_deviation",
            "outside_envelope_share",
            "timing_share",
            "magnitude_share",
            "max_lag_s",
            "cycle_min",
            "cycle_max",
            "cycle_mean",
            "cycle_std",
            "cycle_rms",
            "reference_mean",
        ]
    )
    a = detail.analysis
    if a is None:
        return out.getvalue()
    for d in a.sensors:
        writer.writerow(
            [
                neutral(a.cycle_id),
                a.reference_version,
                "" if a.health_score is None else f"{a.health_score:.2f}",
                neutral(a.risk_class),
                neutral(d.sensor_id),
                neutral(d.unit),
                f"{d.contribution:.2f}",
                neutral(d.pattern),
                f"{d.severity:.4g}",
                f"{d.offset:.6g}",
                f"{d.offset_z:.4g}",
                f"{d.shape_z:.4g}",
                f"{d.euclidean:.6g}",
                f"{d.dtw:.6g}",
                f"{d.max_deviation:.6g}",
                f"{d.max_deviation_at_s:.3f}",
                f"{d.mean_deviation:.6g}",
                f"{d.outside_envelope_share:.4f}",
                f"{d.timing_share:.4f}",
                f"{d.magnitude_share:.4f}",
                f"{d.max_lag_s:.3f}",
                f"{d.cycle_stats.min:.6g}",
                f"{d.cycle_stats.max:.6g}",
                f"{d.cycle_stats.mean:.6g}",
                f"{d.cycle_stats.std:.6g}",
                f"{d.cycle_stats.rms:.6g}",
                f"{d.reference_stats.mean:.6g}",
            ]
        )
    return out.getvalue()


def _alerts_block(fig: Figure, y: float, alerts: CycleAlerts | None) -> float:
    """The grouped alerts of the cycle, from height ``y`` down; returns the height below it."""
    fig.text(0.06, y, "Alerts during the cycle", fontsize=12, weight="bold")
    y -= 0.022
    groups = alerts.groups if alerts else []
    for g in groups[:6]:
        where = f" on {g.sensor_id}" if g.sensor_id else ""
        plural = "s" if g.alerts > 1 else ""
        line = f"{g.severity.upper()}  {g.kind}{where}: {g.alerts} alert{plural}, {g.occurrences}x"
        fig.text(0.07, y, line, fontsize=9, color=ALERT_COLOURS.get(g.severity, "#1f2328"))
        y -= 0.016
        fig.text(0.09, y, textwrap.shorten(g.last_message, 110), fontsize=7.5, color="#57606a")
        y -= 0.018
    if len(groups) > 6:
        fig.text(0.07, y, f"... and {len(groups) - 6} more groups", fontsize=8)
        y -= 0.018
    if not groups:
        fig.text(0.07, y, "None were active while the cycle ran.", fontsize=9)
        y -= 0.02
    return y


def model_lines(a: AnalysisCompleted) -> list[str]:
    """The learned model's view and the health trend, in words (also for the CLI)."""
    out = []
    m = a.model
    if m is not None and m.available and m.t2 is not None and m.spe is not None:
        top = ", ".join(f"{c.sensor_id} {100 * c.spe_share:.0f} %" for c in m.contributions[:3])
        fed = "feeds the score" if m.feeds_score else "shown, not yet scoring"
        out.append(
            f"Learned model ({m.model_version} cycles, {m.components} components, {fed}): "
            f"T² {m.t2:.1f} (99 % limit {m.t2_limit_99:.1f}), SPE {m.spe:.3g} "
            f"(99 % limit {m.spe_limit_99:.3g}); SPE from {top}"
        )
        if m.level is not None:
            lv = m.level
            out.append(
                f"Operating point (the sensors' levels against the healthy line): "
                f"T² {lv.t2:.2g} (99 % limit {lv.t2_limit_99:.2g}), off the line {lv.spe:.2g} "
                f"(99 % limit {lv.spe_limit_99:.2g})"
            )
    elif m is not None:
        out.append(f"Learned model: {m.note}")
    t = a.trend
    if t is not None:
        slope = f"{t.slope_per_cycle:+.2f} a cycle over {t.cycles} cycles"
        if t.degrading and t.cycles_to_threshold is not None:
            low = "?" if t.cycles_to_threshold_low is None else f"{t.cycles_to_threshold_low:.0f}"
            high = (
                "" if t.cycles_to_threshold_high is None else f"-{t.cycles_to_threshold_high:.0f}"
            )
            out.append(f"Health trend {slope}: {t.threshold:g} may be reached in "
                       f"{t.cycles_to_threshold:.0f} cycles ({low}{high})"
                       + (" - TREND ALERT" if t.alert else ""))  # fmt: skip
        else:
            out.append(f"Health trend {slope}: steady")
    return out


def _summary_page(pdf: PdfPages, detail: CycleDetail, alerts: CycleAlerts | None) -> None:
    c, a = detail.cycle, detail.analysis
    fig = Figure(figsize=(8.27, 11.69))
    fig.text(0.06, 0.95, "VerTac cycle report", fontsize=18, weight="bold")
    lines = [
        f"Stream {c.stream_id}   cycle {c.cycle_id} (no. {c.cycle_no})",
        f"Started {c.started_at:%Y-%m-%d %H:%M:%S} UTC, duration {c.duration_s or 0:.2f} s, "
        f"state {c.state}{' (' + c.end_reason + ')' if c.end_reason else ''}"
        if c.started_at
        else f"state {c.state}",
        f"Frames {c.frames}, gaps {c.gaps}, completeness {c.completeness:.1%}",
    ]
    if a is not None:
        lines.append(f"Reference version {a.reference_version}")
        if a.qualified:
            lines.append(f"Qualified: {a.qualification}")
        lines.extend(model_lines(a))
    for i, line in enumerate(lines):
        fig.text(0.06, 0.91 - i * 0.022, line, fontsize=10)
    if a is None:
        fig.text(0.06, 0.75, "No analysis yet (no active reference).", fontsize=12)
        _alerts_block(fig, 0.71, alerts)
        pdf.savefig(fig)  # type: ignore[no-untyped-call]
        return
    gauge = fig.add_axes((0.62, 0.79, 0.32, 0.14))
    gauge.barh([0], [100], color="#eaeef2")
    gauge.set_xlim(0, 100)
    gauge.set_yticks([])
    if a.health_score is None:
        gauge.set_title("Not comparable — no score, risk unknown", fontsize=11, color="#9a6700")
    else:
        gauge.barh([0], [a.health_score], color=RISK_COLOURS.get(a.risk_class, "#57606a"))
        gauge.set_title(f"Health {a.health_score:.0f} / 100 — risk {a.risk_class}", fontsize=11)
    y = 0.76
    if a.first_deviation is not None:
        fd = a.first_deviation
        fig.text(
            0.06,
            y,
            f"First deviator: {fd.sensor_id} at {fd.at_s:.2f} s",
            fontsize=10,
            weight="bold",
        )
        y -= 0.03
    fig.text(0.06, y, "Recommendations", fontsize=12, weight="bold")
    y -= 0.025
    for r in a.recommendations[:6] or []:
        for k, line in enumerate(textwrap.wrap(f"{r.sensor_id}: {r.text}", 100)):
            fig.text(0.07, y, line, fontsize=9, weight="bold" if k == 0 else "normal")
            y -= 0.018
        for line in textwrap.wrap(r.evidence, 110):
            fig.text(0.09, y, line, fontsize=7.5, color="#57606a")
            y -= 0.015
        y -= 0.006
    if not a.recommendations:
        fig.text(0.07, y, "None: every sensor within its normal range.", fontsize=9)
        y -= 0.02
    y = _alerts_block(fig, y - 0.01, alerts)
    fig.text(0.06, y - 0.01, "Sensors by contribution", fontsize=12, weight="bold")
    y -= 0.03
    head = ("sensor", "share", "pattern", "severity", "DTW", "Euclidean", "max dev", "timing")
    widths = (16, 7, 9, 9, 10, 10, 16, 7)

    def columns(cells: tuple[str, ...]) -> str:
        return "".join(c[: w - 1].ljust(w) for c, w in zip(cells, widths, strict=True))

    fig.text(0.06, y, columns(head), fontsize=8, family="monospace", weight="bold")
    for d in a.sensors[:20]:
        y -= 0.0145
        if y < 0.03:
            break
        cells = (
            d.sensor_id,
            f"{d.contribution:.0f} %",
            d.pattern,
            f"{d.severity:.2f}",
            f"{d.dtw:.4g}",
            f"{d.euclidean:.4g}",
            f"{d.max_deviation:.4g} {d.unit}",
            f"{d.timing_share:.0%}",
        )
        fig.text(0.06, y, columns(cells), fontsize=8, family="monospace")
    pdf.savefig(fig)  # type: ignore[no-untyped-call]


def _panel(fig: Figure, rect: tuple[float, float, float, float], s: OverlaySensor) -> None:
    """One sensor's chart drawn straight onto the figure (no ``Axes``, whose set-up and tick
    machinery cost most of a report's time): frame, envelope, reference mean, cycle, ticks."""
    x0, y0, w, h = rect
    t = np.asarray(s.t_s, dtype=np.float64)
    v = np.asarray(s.value, dtype=np.float64)
    lower = np.asarray(s.ref_lower, dtype=np.float64)
    upper = np.asarray(s.ref_upper, dtype=np.float64)
    unit = f" ({s.unit})" if s.unit else ""
    fig.text(x0, y0 + h + 0.006, f"{s.sensor_id}{unit}", fontsize=10)
    fig.add_artist(Rectangle((x0, y0), w, h, fill=False, linewidth=0.6, edgecolor="#57606a",
                             transform=fig.transFigure))  # fmt: skip
    if len(t) == 0:
        return
    values = [v[np.isfinite(v)], lower[np.isfinite(lower)], upper[np.isfinite(upper)]]
    finite = np.concatenate(values)
    lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.05 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    t1 = float(t[-1]) if t[-1] > 0 else 1.0

    def fx(a: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return x0 + w * np.clip(a / t1, 0.0, 1.0)

    def fy(a: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return y0 + h * np.clip((a - lo) / (hi - lo), 0.0, 1.0)

    if s.ref_mean:
        rt = np.asarray(s.ref_t_s, dtype=np.float64)
        outline = np.column_stack([np.r_[fx(rt), fx(rt)[::-1]], np.r_[fy(upper), fy(lower)[::-1]]])
        fig.add_artist(Polygon(outline, closed=True, facecolor="#ddf4ff", edgecolor="none",
                               transform=fig.transFigure))  # fmt: skip
        mean = np.asarray(s.ref_mean, dtype=np.float64)
        fig.add_artist(Line2D(fx(rt), fy(mean), color="#0969da", linewidth=1,
                              transform=fig.transFigure))  # fmt: skip
    fig.add_artist(Line2D(fx(t), fy(v), color="#cf222e", linewidth=0.8,
                          transform=fig.transFigure))  # fmt: skip
    for tick in MaxNLocator(5).tick_values(lo, hi):
        if lo <= tick <= hi:
            y = float(fy(np.array([tick]))[0])
            fig.text(x0 - 0.006, y, f"{tick:.4g}", fontsize=7, ha="right", va="center")
    for tick in MaxNLocator(6).tick_values(0.0, t1):
        if 0.0 <= tick <= t1:
            x = float(fx(np.array([tick]))[0])
            fig.text(x, y0 - 0.012, f"{tick:.4g}", fontsize=7, ha="center", va="top")


def _overlay_pages(pdf: PdfPages, overlay: CycleOverlay) -> None:
    """Four sensors per page: the cycle (red) over the reference mean (blue) and envelope."""
    sensors = overlay.sensors
    for page in range(0, len(sensors), 4):
        fig = Figure(figsize=(8.27, 11.69))
        fig.text(0.1, 0.975, "Cycle (red) over the reference mean (blue) and its envelope "
                 "(shaded); time in s since the cycle started", fontsize=8,
                 color="#57606a")  # fmt: skip
        for k, s in enumerate(sensors[page : page + 4]):
            _panel(fig, (0.1, 0.74 - k * 0.235, 0.86, 0.19), s)
        pdf.savefig(fig)  # type: ignore[no-untyped-call]


def cycle_pdf(
    detail: CycleDetail,
    overlay: CycleOverlay | None,
    alerts: CycleAlerts | None = None,
) -> bytes:
    """The report as PDF bytes; ``overlay`` (the dashboard's chart data) draws the sensor pages."""
    out = io.BytesIO()
    with PdfPages(out) as pdf:
        _summary_page(pdf, detail, alerts)
        if overlay is not None:
            _overlay_pages(pdf, overlay)
        info = pdf.infodict()
        info["Title"] = f"VerTac cycle report {detail.cycle.cycle_id}"
        info["Creator"] = "VerTac"
    return out.getvalue()
