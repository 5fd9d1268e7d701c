"""The degradation trend: a robust line through the last scored cycles and its forecast."""

from __future__ import annotations

import numpy as np

from services.analysis.trend import Point, TrendParams, trend


def points(scores: list[float], period_s: float = 30.0) -> list[Point]:
    return [Point(period_s * i, s, {"p": 100 - s, "t": 1.0}) for i, s in enumerate(scores)]


def test_a_steady_stream_is_not_degrading() -> None:
    rng = np.random.default_rng(1)
    found = trend(points(list(90 + rng.normal(0, 2, 30))))
    assert found is not None and not found.degrading and not found.alert
    assert found.cycles == 30 and found.slope_low < 0 < found.slope_high


def test_a_falling_score_is_forecast_with_an_interval_in_cycles_and_seconds() -> None:
    rng = np.random.default_rng(2)
    scores = list(95 - 1.0 * np.arange(30) + rng.normal(0, 1.5, 30))  # ~66 at the last
    found = trend(points(scores))
    assert found is not None and found.degrading
    assert not found.alert  # 26 cycles away: beyond the horizon of 20
    soon = trend(points(scores), TrendParams(horizon_cycles=30))
    assert soon is not None and soon.alert
    assert abs(found.slope_per_cycle + 1.0) < 0.2
    low, mid, high = (found.cycles_to_threshold_low, found.cycles_to_threshold,
                      found.cycles_to_threshold_high)  # fmt: skip
    assert low is not None and mid is not None and high is not None
    assert low <= mid <= high and 20 < mid < 32  # 66 -> 40 at 1 a cycle: 26 cycles
    assert found.seconds_to_threshold is not None
    assert abs(found.seconds_to_threshold - 30.0 * mid) < 1e-6
    assert found.sensors["p"] > 0.5 and abs(found.sensors["t"]) < 1e-9  # which sensor grows


def test_too_few_cycles_give_no_trend_and_the_window_keeps_the_last() -> None:
    assert trend(points([90.0] * 7)) is None
    old_fall = [95 - 3.0 * i for i in range(20)]
    found = trend(points([*old_fall, *([60.0] * 30)]), TrendParams(window=30))
    assert found is not None and found.cycles == 30 and not found.degrading


def test_the_trend_starts_again_when_the_learned_model_begins_to_feed_the_score() -> None:
    before = [Point(30.0 * i, 97.0, {}, model_fed=False) for i in range(10)]
    after = [Point(30.0 * (10 + i), 88.0 + (i % 2), {}, model_fed=True) for i in range(10)]
    found = trend([*before, *after])
    assert found is not None and found.cycles == 10 and not found.degrading
