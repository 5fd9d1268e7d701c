"""Alert rules and lifecycle."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.messages import AlertRule
from services.alerts.logic import (
    RuleState,
    acknowledge,
    hysteresis,
    on_frame_arrival,
    on_samples,
    on_tick,
)

MS = 1_000_000
NS = 1_000_000_000


def samples(values, t0_ms=0, step_ms=10):
    t = t0_ms * MS + np.arange(len(values), dtype=np.int64) * step_ms * MS
    return t, np.asarray(values, dtype=np.float64)


def limit(**kw) -> AlertRule:
    return AlertRule(rule_id="p-hi", stream_id="s", kind="limit", sensor_id="p", **kw)


def test_a_limit_violation_raises_once_and_clears_when_back() -> None:
    rule = limit(hi=10.0, deadband=1.0)
    s = RuleState()
    s, out = on_samples(rule, s, *samples([5, 9, 11, 12, 10.5, 9.5, 8.9, 5]), 0)
    assert [(o.state, o.at_ns) for o in out] == [("raised", 20 * MS), ("cleared", 60 * MS)]
    assert out[0].value == 11
    assert out[0].severity == "warning"


def test_delay_on_ignores_short_violations() -> None:
    rule = limit(hi=10.0, delay_on_ms=50)
    _s, out = on_samples(rule, RuleState(), *samples([11, 11, 5, 11, 11, 11, 11, 11, 11, 5]), 0)
    assert [(o.state, o.at_ns) for o in out] == [("raised", 80 * MS), ("cleared", 90 * MS)]


def test_a_condition_carries_across_frames() -> None:
    rule = limit(hi=10.0, delay_on_ms=50)
    s, out = on_samples(rule, RuleState(), *samples([5, 5, 11, 11]), 0)
    assert out == []
    s, out = on_samples(rule, s, *samples([11, 11, 11, 11], t0_ms=40), 0)
    assert [(o.state, o.at_ns) for o in out] == [("raised", 70 * MS)]  # 50 ms after 20 ms


def test_hihi_escalates_to_critical() -> None:
    rule = limit(hi=10.0, hihi=20.0)
    _s, out = on_samples(rule, RuleState(), *samples([11, 12, 25, 25]), 0)
    assert [(o.state, o.severity) for o in out] == [("raised", "critical")]


def test_a_flapping_signal_gives_one_alert_with_a_count() -> None:
    rule = limit(hi=10.0)
    s = RuleState()
    ids = set()
    for k in range(5):
        s, out = on_samples(rule, s, *samples([11, 11, 5, 5], t0_ms=k * 100), 0)
        ids |= {o.alert_id for o in out}
    assert len(ids) == 1
    assert s.occurrences == 5
    assert s.alert_state == "cleared"
    s, out = on_samples(rule, s, *samples([11], t0_ms=120_000), 0)  # long after: a new alert
    assert out[0].alert_id != next(iter(ids))
    assert out[0].occurrences == 1


def test_acknowledge_then_clear() -> None:
    rule = limit(hi=10.0)
    s, _ = on_samples(rule, RuleState(), *samples([11, 12]), 0)
    s, out = acknowledge(s, "ada", "on it", 5)
    assert (out[0].state, out[0].user, out[0].comment) == ("acknowledged", "ada", "on it")
    assert s.alert_state == "acknowledged"
    s, out = on_samples(rule, s, *samples([5], t0_ms=30), 0)
    assert out[0].state == "cleared"


def test_rate_of_change() -> None:
    rule = AlertRule(rule_id="r", stream_id="s", kind="rate", sensor_id="p", max_rate=100.0)
    _s, out = on_samples(rule, RuleState(), *samples([0, 0.5, 1.0, 5.0, 5.2, 5.4]), 0)  # 400/s jump
    assert [o.state for o in out] == ["raised", "cleared"]


def test_flatline_detects_a_stuck_sensor() -> None:
    rule = AlertRule(
        rule_id="f", stream_id="s", kind="flatline", sensor_id="p", flat_s=0.05, flat_band=0.001
    )
    t, v = samples([1, 2, 3, 3, 3, 3, 3, 3, 3, 4])
    _s, out = on_samples(rule, RuleState(), t, v, 0)
    assert [(o.state, o.at_ns) for o in out] == [("raised", 70 * MS), ("cleared", 90 * MS)]


def test_data_gap_raises_on_silence_and_clears_on_data() -> None:
    rule = AlertRule(rule_id="g", stream_id="s", kind="data_gap", gap_s=2.0)
    s, _ = on_frame_arrival(rule, RuleState(), 0)
    s, out = on_tick(rule, s, 1 * NS)
    assert out == []
    s, out = on_tick(rule, s, 3 * NS)
    assert out[0].state == "raised"
    assert "no data for 3.0 s" in out[0].message
    s, out = on_frame_arrival(rule, s, 4 * NS)
    assert out[0].state == "cleared"


def test_rules_name_what_they_miss() -> None:
    with pytest.raises(ValueError, match="a rate rule needs max_rate"):
        AlertRule(rule_id="r", stream_id="s", kind="rate", sensor_id="p")
    with pytest.raises(ValueError, match="at least one of hi"):
        limit()
    with pytest.raises(ValueError, match="hihi must not be below hi"):
        limit(hi=10, hihi=5)


def test_hysteresis_helper() -> None:
    on = np.array([0, 1, 0, 0, 0, 0], bool)
    off = np.array([0, 0, 0, 1, 0, 0], bool)
    assert hysteresis(on, off, False).tolist() == [False, True, True, False, False, False]
    assert hysteresis(on, off, True).tolist() == [True, True, True, False, False, False]


def test_the_rate_guard_holds_back_a_flood_and_summarises_it() -> None:
    from services.alerts.logic import RateGuard, Transition

    guard = RateGuard(per_minute=3)

    def raised(i: int, at_s: float) -> Transition:
        return Transition(f"s.r{i}.1", "raised", int(at_s * NS), "warning", "x", 1, int(at_s * NS))

    admitted = [guard.admit("s", raised(i, i)) for i in range(5)]
    assert admitted == [True, True, True, False, False]
    summary = guard.summary_for("s", 5 * NS, 2)
    assert (summary.state, summary.occurrences) == ("raised", 2)
    assert "2 alerts held back" in summary.message
    cleared = Transition("s.r4.1", "cleared", 6 * NS, "warning", "x", 1, 4 * NS)
    assert guard.admit("s", cleared) is False  # its raise was held back, so is its clear
    assert guard.summary_for("s", 30 * NS, 0) is None
    assert guard.summary_for("s", 70 * NS, 0).state == "cleared"
    assert guard.admit("s", raised(9, 130)) is True


def test_the_envelope_rule_judges_a_running_cycle_against_its_reference() -> None:
    from services.alerts.logic import on_envelope
    from services.common.references import SensorReference

    ref = SensorReference(
        "p", mean=np.linspace(0, 100, 101), spread=np.full(101, 1.0), level_spread=0.0
    )
    rule = AlertRule(rule_id="env", stream_id="s", kind="envelope", sensor_id="p", envelope_k=3)
    t = np.arange(0, 10, dtype=np.int64) * NS  # cycle of 10 s started at 0
    normal = np.linspace(0, 90, 10)
    s, out = on_envelope(rule, RuleState(), t, normal, 0, ref, 10.0, 0)
    assert out == []
    off = normal.copy()
    off[6:] += 10  # leaves the envelope at 6 s
    s, out = on_envelope(rule, RuleState(), t, off, 0, ref, 10.0, 0)
    assert [(o.state, o.at_ns) for o in out] == [("raised", 6 * NS)]
    s, out = on_envelope(rule, s, t + 20 * NS, off, None, ref, 10.0, 0)  # no cycle running
    assert [o.state for o in out] == ["cleared"]


def _analysis(score: float, top: str = "p", contribution: float = 80.0, pattern: str = "offset"):
    from schemas.messages import AnalysisCompleted, SensorDeviation, SensorStats

    stats = SensorStats(min=0, max=1, mean=0.5, std=0.1, rms=0.5)
    dev = SensorDeviation(
        sensor_id=top,
        euclidean=1,
        dtw=1,
        max_deviation=1,
        max_deviation_at_s=1,
        mean_deviation=1,
        outside_envelope_share=0.5,
        offset=1,
        offset_z=3,
        shape_z=1,
        severity=3,
        timing_share=0,
        magnitude_share=1,
        max_lag_s=0,
        pattern=pattern,
        contribution=contribution,
        cycle_stats=stats,
        reference_stats=stats,
    )
    return AnalysisCompleted(
        stream_id="s", cycle_id="c1", health_score=score, risk_class="x", sensors=[dev]
    )


def test_health_and_contribution_rules_judge_each_analysis() -> None:
    from services.alerts.logic import on_analysis

    health = AlertRule(rule_id="h", stream_id="s", kind="health", health_below=60, deadband=5)
    s, out = on_analysis(health, RuleState(), _analysis(40), 1)
    assert out[0].state == "raised"
    assert "health 40 < 60" in out[0].message
    s, out = on_analysis(health, s, _analysis(62), 2)
    assert out == []  # inside the deadband
    s, out = on_analysis(health, s, _analysis(90), 3)
    assert out[0].state == "cleared"
    share = AlertRule(rule_id="c", stream_id="s", kind="contribution", contribution_above=60)
    s, out = on_analysis(share, RuleState(), _analysis(50, "valve", 75), 1)
    assert "valve makes 75 %" in out[0].message
    _, out = on_analysis(share, RuleState(), _analysis(50, "valve", 75, "normal"), 1)
    assert out == []


def test_an_aborted_cycle_raises_and_a_completed_one_clears() -> None:
    from datetime import UTC, datetime

    from schemas.messages import CycleStateChanged
    from services.alerts.logic import on_cycle

    rule = AlertRule(rule_id="a", stream_id="s", kind="abnormal_stop")
    now = datetime.now(UTC)
    aborted = CycleStateChanged(
        stream_id="s", cycle_id="c1", state="aborted", at=now, reason="data gap of 6.0 s"
    )
    s, out = on_cycle(rule, RuleState(), aborted, 1)
    assert "c1 aborted: data gap of 6.0 s" in out[0].message
    done = CycleStateChanged(stream_id="s", cycle_id="c2", state="completed", at=now)
    s, out = on_cycle(rule, s, done, 2)
    assert out[0].state == "cleared"


def test_a_cycle_that_was_not_compared_raises_only_the_built_in_warning() -> None:
    from schemas.messages import AnalysisCompleted
    from services.alerts.logic import comparable_rule, on_analysis

    blind = AnalysisCompleted(stream_id="s", cycle_id="c1", health_score=None,
                              risk_class="unknown", comparable=False,
                              qualification="not comparable: 0 of 3")  # fmt: skip
    scored = blind.model_copy(
        update={"health_score": 95.0, "risk_class": "low", "comparable": True}
    )
    user = AlertRule(rule_id="h", stream_id="s", kind="health", health_below=80)
    assert on_analysis(user, RuleState(), blind, 1) == (RuleState(), [])
    s, (raised,) = on_analysis(comparable_rule("s"), RuleState(), blind, 1)
    assert (raised.state, raised.severity) == ("raised", "warning")
    assert "was not compared: not comparable: 0 of 3" in raised.message
    _, (cleared,) = on_analysis(comparable_rule("s"), s, scored, 2)
    assert cleared.state == "cleared"


def test_the_built_in_trend_rule_warns_before_the_threshold_and_clears_when_it_levels_off() -> None:
    from schemas.messages import AnalysisCompleted
    from services.alerts.logic import on_analysis, trend_rule
    from services.analysis.trend import Point, trend

    def scored(i: int, scores: list[float]) -> AnalysisCompleted:
        points = [Point(60.0 * k, v, {}) for k, v in enumerate(scores)]
        return AnalysisCompleted(stream_id="s", cycle_id=f"c{i}", health_score=scores[-1],
                                 risk_class="low", trend=trend(points))  # fmt: skip

    falling = [95.0 - 1.5 * k for k in range(20)]  # 66.5 at the last: still medium, not critical
    rule = trend_rule("s")
    s, (raised,) = on_analysis(rule, RuleState(), scored(20, falling), 1)
    assert (raised.state, raised.severity) == ("raised", "warning")
    assert "health falls 1.5 points a cycle" in raised.message and "reach 40 in" in raised.message
    assert on_analysis(rule, s, scored(21, [*falling, 65.0]), 2)[1] == []  # still falling: held
    level = [*falling, *([66.0] * 20)]
    _, (cleared,) = on_analysis(rule, s, scored(40, level), 3)
    assert cleared.state == "cleared"
    # a stream with too few scored cycles has no trend, and a cycle with no score says nothing
    assert on_analysis(rule, RuleState(), scored(3, falling[:3]), 4) == (RuleState(), [])
    blind = scored(5, falling).model_copy(update={"health_score": None, "risk_class": "unknown"})
    assert on_analysis(rule, s, blind, 5) == (s, [])
