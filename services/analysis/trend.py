"""The degradation trend of a stream: a Theil-Sen line through its last scored cycles (robust:
a few odd cycles do not tilt it), and when it would reach the threshold. Pure; no I/O.

The stream is *degrading* when the whole window's slope is below zero with 90 % confidence. The
forecast ("cycles until the threshold", with the interval from the slope's 90 % interval) follows
the current rate: a Theil-Sen line through the recent half of the window. The trend alert is
raised while the stream degrades and the earliest forecast is within ``horizon_cycles``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as st

from schemas.messages import Trend


@dataclass(frozen=True, slots=True)
class TrendParams:
    window: int = 30  # the last this many scored cycles
    min_cycles: int = 8  # fewer give no trend
    threshold: float = 40.0  # the score the forecast counts down to (critical below)
    horizon_cycles: float = 20.0  # alert when the earliest forecast is this close
    confidence: float = 0.90  # of the slope's interval


@dataclass(frozen=True, slots=True)
class Point:
    """One scored cycle: its end time (s), score and per-sensor severities."""

    at_s: float
    score: float
    severities: dict[str, float]
    model_fed: bool = False  # whether the learned model fed the score


def _cycles_to(level: float, slope: float, threshold: float) -> float | None:
    if slope >= 0:
        return None
    return max(0.0, (level - threshold) / -slope)


def trend(points: list[Point], params: TrendParams = TrendParams()) -> Trend | None:
    """The trend of ``points`` (oldest first; the last is the cycle just analysed); None with
    fewer than ``min_cycles``."""
    last = points[-params.window :]
    # scores with and without the learned model are on different footings: the trend starts
    # again when the model begins to feed the score
    fed = [p.model_fed for p in last]
    if fed and not all(f == fed[-1] for f in fed):
        last = last[max(i for i, f in enumerate(fed) if f != fed[-1]) + 1 :]
    n = len(last)
    if n < params.min_cycles:
        return None
    x = np.arange(n, dtype=np.float64)
    y = np.array([p.score for p in last])
    slope, _, low, high = st.theilslopes(y, x, alpha=params.confidence)
    # the forecast follows the current rate: a line through the recent half of the window (a
    # wear that set in a while ago falls faster now than over the whole window)
    k = min(n, max(params.min_cycles, n // 2))
    now_slope, now_icpt, now_low, now_high = st.theilslopes(y[-k:], x[-k:], alpha=params.confidence)
    level = float(now_icpt + now_slope * (n - 1))  # where the line stands at the last cycle
    expected = _cycles_to(level, float(now_slope), params.threshold)
    earliest = _cycles_to(level, float(now_low), params.threshold)
    latest = _cycles_to(level, float(now_high), params.threshold)
    gaps = np.diff([p.at_s for p in last])
    period = float(np.median(gaps)) if len(gaps) else 0.0
    degrading = bool(high < 0)
    sensors = {}
    for sid in sorted(set.intersection(*(set(p.severities) for p in last))):
        sev = np.array([p.severities[sid] for p in last])
        sensors[sid] = round(float(st.theilslopes(sev, x)[0]), 5)
    return Trend(
        cycles=n,
        slope_per_cycle=float(slope),
        slope_low=float(low),
        slope_high=float(high),
        threshold=params.threshold,
        cycles_to_threshold=expected,
        cycles_to_threshold_low=earliest,
        cycles_to_threshold_high=latest,
        seconds_to_threshold=expected * period if expected is not None else None,
        degrading=degrading,
        alert=degrading and earliest is not None and earliest <= params.horizon_cycles,
        sensors=sensors,
    )
