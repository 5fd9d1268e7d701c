"""Rules judged once per cycle: health and contribution (on its analysis), abnormal stops (on its
end), and the built-in rules of every stream (`_comparable`, `_trend`). Pure; no I/O."""

from __future__ import annotations

from schemas.messages import AlertRule, AnalysisCompleted, CycleStateChanged
from schemas.timeutil import NS
from services.alerts.lifecycle import RuleState, Transition, lifecycle_off, lifecycle_on

COMPARABLE_RULE_ID = "_comparable"


def _built_in(rule_id: str, stream_id: str, description: str) -> AlertRule:
    """A built-in warning rule (``health_below`` 0: no score alone raises it)."""
    return AlertRule(rule_id=rule_id, stream_id=stream_id, kind="health", health_below=0.0,
                     severity="warning", description=f"built in: {description}")  # fmt: skip


def comparable_rule(stream_id: str) -> AlertRule:
    """The built-in rule of every stream: a warning while its cycles are not comparable with
    the reference (no score could be given), cleared by the next cycle that is."""
    return _built_in(
        COMPARABLE_RULE_ID, stream_id, "cycles that could not be compared with the reference"
    )


TREND_RULE_ID = "_trend"


def trend_rule(stream_id: str) -> AlertRule:
    """The built-in rule of every stream: a warning while its health trend may reach the
    threshold within the horizon (``AnalysisCompleted.trend.alert``), before any cycle is that
    bad; cleared by a cycle whose trend no longer says so."""
    return _built_in(
        TREND_RULE_ID, stream_id, "the health trend falls toward the critical threshold"
    )


def _on_trend(
    rule: AlertRule, s: RuleState, result: AnalysisCompleted, at_ns: int, window: int
) -> tuple[RuleState, list[Transition]]:
    t = result.trend
    if result.health_score is None:
        return s, []  # a cycle with no score says nothing of the trend
    if t is None or not t.alert:
        msg = f"cycle {result.cycle_id}: the health trend no longer falls toward the threshold"
        return lifecycle_off(s, at_ns, msg, result.health_score)
    low, high = t.cycles_to_threshold_low, t.cycles_to_threshold_high
    when = f"{low:.0f}" + (f"-{high:.0f}" if high is not None else " or more")
    msg = (
        f"health falls {-t.slope_per_cycle:.1f} points a cycle (last {t.cycles} cycles); it may"
        f" reach {t.threshold:g} in {when} cycles (cycle {result.cycle_id}, health"
        f" {result.health_score:.0f})"
    )
    return lifecycle_on(rule, s, at_ns, low, msg, rule.severity, window)


def on_analysis(
    rule: AlertRule,
    s: RuleState,
    result: AnalysisCompleted,
    at_ns: int,
    reraise_window_s: float = 60.0,
) -> tuple[RuleState, list[Transition]]:
    """A cycle's analysis: health and contribution rules (judged once per cycle)."""
    window = round(reraise_window_s * NS)
    if not rule.enabled:
        return s, []
    if rule.rule_id == TREND_RULE_ID:
        return _on_trend(rule, s, result, at_ns, window)
    if rule.kind == "health":
        assert rule.health_below is not None
        if result.health_score is None:  # not comparable: only the built-in rule speaks
            if rule.rule_id != COMPARABLE_RULE_ID:
                return s, []
            msg = f"cycle {result.cycle_id} was not compared: {result.qualification}"
            return lifecycle_on(rule, s, at_ns, None, msg, "warning", window)
        if result.health_score < rule.health_below:
            top = result.sensors[0].sensor_id if result.sensors else "?"
            msg = (
                f"cycle {result.cycle_id} health {result.health_score:.0f} < {rule.health_below:g}"
                f" (top sensor {top})"
            )
            return lifecycle_on(rule, s, at_ns, result.health_score, msg, rule.severity, window)
        if result.health_score >= rule.health_below + rule.deadband:
            return lifecycle_off(
                s,
                at_ns,
                f"cycle {result.cycle_id} health {result.health_score:.0f}",
                result.health_score,
            )
        return s, []
    if rule.kind == "contribution":
        assert rule.contribution_above is not None
        candidates = [d for d in result.sensors if rule.sensor_id in (None, d.sensor_id)]
        worst = max(candidates, key=lambda d: d.contribution, default=None)
        if (
            worst is not None
            and worst.contribution > rule.contribution_above
            and worst.pattern != "normal"
        ):
            msg = (
                f"{worst.sensor_id} makes {worst.contribution:.0f} % of cycle {result.cycle_id}'s"
                f" deviation ({worst.pattern})"
            )
            return lifecycle_on(rule, s, at_ns, worst.contribution, msg, rule.severity, window)
        return lifecycle_off(
            s, at_ns, f"cycle {result.cycle_id} without a dominant deviation", None
        )
    return s, []


def on_cycle(
    rule: AlertRule,
    s: RuleState,
    event: CycleStateChanged,
    at_ns: int,
    reraise_window_s: float = 60.0,
) -> tuple[RuleState, list[Transition]]:
    """A cycle ended: the abnormal_stop rule."""
    if rule.kind != "abnormal_stop" or not rule.enabled:
        return s, []
    if event.state == "aborted":
        return lifecycle_on(
            rule,
            s,
            at_ns,
            None,
            f"cycle {event.cycle_id} aborted: {event.reason}",
            rule.severity,
            round(reraise_window_s * NS),
        )
    if event.state == "completed":
        return lifecycle_off(s, at_ns, f"cycle {event.cycle_id} completed", None)
    return s, []
