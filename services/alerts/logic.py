"""Alert rules and the alarm lifecycle: pure, no clock (``now_ns`` is passed in), no I/O.

A rule turns samples (limit, rate, flatline), silence (data_gap), analyses (health,
contribution) or cycle ends (abnormal_stop) into a condition that is on or off. The condition
is judged with hysteresis (``deadband``) and must hold ``delay_on_ms`` before it counts. The
lifecycle turns the condition into alerts: raised -> acknowledged -> cleared. A condition that
comes back within ``reraise_window_s`` of clearing re-raises the same alert with one more
occurrence instead of a new alert, so a flapping signal gives one alert with a count.
Samples are handled run by run (numpy), never sample by sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from schemas.messages import AlertRule, AnalysisCompleted, CycleStateChanged
from schemas.timeutil import NS
from services.common.references import SensorReference

Bools = npt.NDArray[np.bool_]


class RuleState(BaseModel):
    """What a rule remembers between frames (KV ``vertac_alert_state``)."""

    model_config = ConfigDict(extra="ignore")

    condition: bool = False  # hysteresis state at the last sample
    since_ns: int | None = None  # when the current condition run began
    level: int = 0  # 1 warning, 2 critical (limits)
    last_t: int | None = None  # previous sample (rate)
    last_v: float | None = None
    flat_value: float | None = None  # flatline: value and time of the last real change
    flat_since_ns: int | None = None
    last_arrival_ns: int | None = None  # data_gap
    alert_id: str | None = None
    alert_state: str = "none"  # none | raised | acknowledged | cleared
    occurrences: int = 0
    raised_at_ns: int | None = None
    cleared_at_ns: int | None = None
    severity: str = "warning"
    alerts_created: int = 0
    # stream sequence of the last samples message behind a written state: a message at or
    # before it was applied already (a redelivery after a replica died between writing the
    # state and acknowledging), so it is not applied twice
    applied_js_seq: int = 0


@dataclass(frozen=True, slots=True)
class Transition:
    """An alert event to publish: ``state`` raised, acknowledged or cleared."""

    alert_id: str
    state: str
    at_ns: int
    severity: str
    message: str
    occurrences: int
    raised_at_ns: int
    value: float | None = None
    user: str | None = None
    comment: str = ""


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
        return _lifecycle_off(s, at_ns, msg, result.health_score)
    low, high = t.cycles_to_threshold_low, t.cycles_to_threshold_high
    when = f"{low:.0f}" + (f"-{high:.0f}" if high is not None else " or more")
    msg = (
        f"health falls {-t.slope_per_cycle:.1f} points a cycle (last {t.cycles} cycles); it may"
        f" reach {t.threshold:g} in {when} cycles (cycle {result.cycle_id}, health"
        f" {result.health_score:.0f})"
    )
    return _lifecycle_on(rule, s, at_ns, low, msg, rule.severity, window)


def alert_id_for(rule: AlertRule, n: int) -> str:
    return f"{rule.stream_id}.{rule.rule_id}.{n}"


def hysteresis(on: Bools, off: Bools, carried: bool) -> Bools:
    """Condition per sample: set where ``on``, reset where ``off``, else as before."""
    events = np.where(on, 1, np.where(off, -1, 0))
    idx = np.where(events != 0, np.arange(len(events)), -1)
    last = np.maximum.accumulate(idx) if len(idx) else idx
    return np.where(last >= 0, events[np.maximum(last, 0)] == 1, carried)


def _event(
    s: RuleState,
    state: str,
    at_ns: int,
    message: str,
    value: float | None = None,
    user: str | None = None,
    comment: str = "",
) -> Transition:
    if s.alert_id is None or s.raised_at_ns is None:
        raise ValueError("the rule has no alert to report on")
    return Transition(
        s.alert_id,
        state,
        at_ns,
        s.severity,
        message,
        s.occurrences,
        s.raised_at_ns,
        value,
        user,
        comment,
    )


def _lifecycle_on(
    rule: AlertRule,
    s: RuleState,
    at_ns: int,
    value: float | None,
    message: str,
    severity: str,
    reraise_window_ns: int,
) -> tuple[RuleState, list[Transition]]:
    if s.alert_state in ("raised", "acknowledged"):
        if severity == "critical" and s.severity != "critical":  # escalation
            s = s.model_copy(update={"severity": "critical", "alert_state": "raised"})
            return s, [_event(s, "raised", at_ns, message, value)]
        return s, []
    recent = (
        s.alert_state == "cleared"
        and s.cleared_at_ns is not None
        and at_ns - s.cleared_at_ns <= reraise_window_ns
        and s.alert_id is not None
    )
    if recent:
        s = s.model_copy(
            update={"alert_state": "raised", "occurrences": s.occurrences + 1, "severity": severity}
        )
        return s, [_event(s, "raised", at_ns, message, value)]
    n = s.alerts_created + 1
    s = s.model_copy(
        update={
            "alert_id": alert_id_for(rule, n),
            "alert_state": "raised",
            "occurrences": 1,
            "raised_at_ns": at_ns,
            "cleared_at_ns": None,
            "severity": severity,
            "alerts_created": n,
        }
    )
    return s, [_event(s, "raised", at_ns, message, value)]


def _lifecycle_off(
    s: RuleState, at_ns: int, message: str, value: float | None
) -> tuple[RuleState, list[Transition]]:
    if s.alert_state not in ("raised", "acknowledged"):
        return s, []
    s = s.model_copy(update={"alert_state": "cleared", "cleared_at_ns": at_ns})
    return s, [_event(s, "cleared", at_ns, message, value)]


def acknowledge(
    s: RuleState, user: str, comment: str, now_ns: int
) -> tuple[RuleState, list[Transition]]:
    """A user acknowledges the rule's alert (raised or already cleared)."""
    if s.alert_id is None or s.alert_state not in ("raised", "cleared"):
        return s, []
    new_state = "acknowledged" if s.alert_state == "raised" else "cleared"
    s = s.model_copy(update={"alert_state": new_state})
    return s, [_event(s, "acknowledged", now_ns, f"acknowledged by {user}", None, user, comment)]


def _runs(mask: Bools) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _timeline(
    rule: AlertRule,
    s: RuleState,
    t: npt.NDArray[np.int64],
    active: Bools,
    values: npt.NDArray[np.float64],
    critical: Bools,
    describe: str,
    reraise_window_ns: int,
) -> tuple[RuleState, list[Transition]]:
    """Raise and clear along a per-sample condition, with delay-on, run by run."""
    out: list[Transition] = []
    delay = rule.delay_on_ms * 1_000_000
    pos = 0
    for a, b in _runs(active):
        if a > pos and s.condition:  # a gap between runs: the condition ended at sample pos
            s, more = _lifecycle_off(
                s, int(t[pos]), f"{describe} back to normal", float(values[pos])
            )
            out += more
            s = s.model_copy(update={"condition": False, "since_ns": None})
        since = s.since_ns if (a == 0 and s.condition and s.since_ns is not None) else int(t[a])
        s = s.model_copy(update={"condition": True, "since_ns": since})
        k = a + int(np.searchsorted(t[a:b], since + delay))
        if k < b:
            severity = (
                "critical" if (critical[a:b].any() or rule.severity == "critical") else "warning"
            )
            s, more = _lifecycle_on(
                rule,
                s,
                int(t[k]),
                float(values[k]),
                f"{describe}: {values[k]:.6g}",
                severity,
                reraise_window_ns,
            )
            out += more
        pos = b
    if pos < len(active) and s.condition:
        s, more = _lifecycle_off(s, int(t[pos]), f"{describe} back to normal", float(values[pos]))
        out += more
        s = s.model_copy(update={"condition": False, "since_ns": None})
    return s, out


def on_samples(
    rule: AlertRule,
    s: RuleState,
    t: npt.NDArray[np.int64],
    v: npt.NDArray[np.float64],
    now_ns: int,
    reraise_window_s: float = 60.0,
) -> tuple[RuleState, list[Transition]]:
    """Apply one frame's samples of the rule's sensor. A frame that changes nothing leaves the
    state as it was (nothing to write back)."""
    if not rule.enabled or len(t) == 0:
        return s, []
    window = round(reraise_window_s * NS)
    db = rule.deadband
    name = rule.sensor_id or "value"
    if rule.kind == "limit":
        on = np.zeros(len(v), dtype=bool)
        off = np.ones(len(v), dtype=bool)
        critical = np.zeros(len(v), dtype=bool)
        for level, above, crit in (
            (rule.hi, True, False),
            (rule.hihi, True, True),
            (rule.lo, False, False),
            (rule.lolo, False, True),
        ):
            if level is None:
                continue
            beyond = v > level if above else v < level
            back = v <= level - db if above else v >= level + db
            on |= beyond
            off &= back
            if crit:
                critical |= beyond
        active = hysteresis(on, off & ~on, s.condition)
        return _timeline(rule, s, t, active, v, critical, f"{name} outside its limits", window)
    if rule.kind == "rate":
        assert rule.max_rate is not None
        prev_t = np.concatenate(([s.last_t if s.last_t is not None else t[0]], t[:-1]))
        prev_v = np.concatenate(([s.last_v if s.last_v is not None else v[0]], v[:-1]))
        dt = np.maximum((t - prev_t) / NS, 1e-9)
        rate = np.where(t > prev_t, np.abs(v - prev_v) / dt, 0.0)
        active = hysteresis(rate > rule.max_rate, rate <= rule.max_rate - db, s.condition)
        s = s.model_copy(update={"last_t": int(t[-1]), "last_v": float(v[-1])})
        return _timeline(
            rule, s, t, active, rate, np.zeros(len(v), dtype=bool), f"{name} changes at", window
        )
    if rule.kind == "flatline":
        assert rule.flat_s is not None
        ref_v = s.flat_value if s.flat_value is not None else float(v[0])
        ref_t = s.flat_since_ns if s.flat_since_ns is not None else int(t[0])
        # a real change resets the reference; runs between changes are vectorised via cumsum
        changed = np.abs(np.diff(np.concatenate(([ref_v], v)))) > rule.flat_band
        seg = np.cumsum(changed)
        change_idx = np.flatnonzero(changed)
        seg_start_t = np.where(
            seg == 0, ref_t, t[change_idx[np.maximum(seg - 1, 0)]] if len(change_idx) else ref_t
        )
        still = (t - seg_start_t) >= round(rule.flat_s * NS)
        active = still
        last_change = int(t[change_idx[-1]]) if len(change_idx) else ref_t
        last_value = float(v[change_idx[-1]]) if len(change_idx) else ref_v
        s = s.model_copy(update={"flat_value": last_value, "flat_since_ns": last_change})
        return _timeline(
            rule,
            s,
            t,
            active,
            v,
            np.zeros(len(v), dtype=bool),
            f"{name} stuck for {rule.flat_s:g} s at",
            window,
        )
    return s, []


def on_envelope(
    rule: AlertRule,
    s: RuleState,
    t: npt.NDArray[np.int64],
    v: npt.NDArray[np.float64],
    started_ns: int | None,
    reference: SensorReference | None,
    duration_s: float,
    now_ns: int,
    reraise_window_s: float = 60.0,
) -> tuple[RuleState, list[Transition]]:
    """Samples of a running cycle against the reference's envelope at the same point of the
    cycle (mean ± envelope_k · spread; time since the cycle started over the reference's
    duration). Outside a running cycle, or past the reference's end, nothing is judged."""
    if not rule.enabled or len(t) == 0:
        return s, []
    n = len(reference.mean) if reference is not None else 0
    if started_ns is None or reference is None or n < 2 or duration_s <= 0:
        inside = np.zeros(len(t), dtype=bool)
        return _timeline(rule, s, t, inside, v, inside, "", round(reraise_window_s * NS))
    pos = (t - started_ns) / (duration_s * NS)
    idx = np.clip(np.rint(pos * (n - 1)).astype(np.int64), 0, n - 1)
    judged = (pos >= 0) & (pos <= 1)
    if reference.coverage is not None:
        judged &= reference.coverage[idx]
    half = rule.envelope_k * reference.spread[idx]
    outside = judged & (np.abs(v - reference.mean[idx]) > half)
    back = ~judged | (np.abs(v - reference.mean[idx]) <= np.maximum(half - rule.deadband, 0))
    active = hysteresis(outside, back & ~outside, s.condition)
    name = rule.sensor_id or "value"
    return _timeline(
        rule,
        s,
        t,
        active,
        v,
        np.zeros(len(t), dtype=bool),
        f"{name} outside the reference envelope",
        round(reraise_window_s * NS),
    )


def on_tick(
    rule: AlertRule, s: RuleState, now_ns: int, reraise_window_s: float = 60.0
) -> tuple[RuleState, list[Transition]]:
    """Time passing: the data_gap rule."""
    if rule.kind != "data_gap" or not rule.enabled or s.last_arrival_ns is None:
        return s, []
    assert rule.gap_s is not None
    silent = (now_ns - s.last_arrival_ns) / NS
    if silent > rule.gap_s:
        return _lifecycle_on(
            rule,
            s,
            now_ns,
            silent,
            f"no data for {silent:.1f} s",
            rule.severity,
            round(reraise_window_s * NS),
        )
    return s, []


def on_frame_arrival(
    rule: AlertRule, s: RuleState, now_ns: int
) -> tuple[RuleState, list[Transition]]:
    """Data arrived: clears a data_gap alert. The arrival time is written back at most every
    tenth of ``gap_s`` (and at most every 0.5 s) while no alert is up, not for every frame."""
    if rule.kind != "data_gap":
        return s, []
    quiet = s.alert_state in ("none", "cleared")
    step = min(0.5, (rule.gap_s or 1.0) / 10) * NS
    if quiet and s.last_arrival_ns is not None and now_ns - s.last_arrival_ns < step:
        return s, []
    s = s.model_copy(update={"last_arrival_ns": now_ns})
    return _lifecycle_off(s, now_ns, "data flows again", None)


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
            return _lifecycle_on(rule, s, at_ns, None, msg, "warning", window)
        if result.health_score < rule.health_below:
            top = result.sensors[0].sensor_id if result.sensors else "?"
            msg = (
                f"cycle {result.cycle_id} health {result.health_score:.0f} < {rule.health_below:g}"
                f" (top sensor {top})"
            )
            return _lifecycle_on(rule, s, at_ns, result.health_score, msg, rule.severity, window)
        if result.health_score >= rule.health_below + rule.deadband:
            return _lifecycle_off(
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
            return _lifecycle_on(rule, s, at_ns, worst.contribution, msg, rule.severity, window)
        return _lifecycle_off(
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
        return _lifecycle_on(
            rule,
            s,
            at_ns,
            None,
            f"cycle {event.cycle_id} aborted: {event.reason}",
            rule.severity,
            round(reraise_window_s * NS),
        )
    if event.state == "completed":
        return _lifecycle_off(s, at_ns, f"cycle {event.cycle_id} completed", None)
    return s, []


class RateGuard:
    """At most ``per_minute`` new alerts per stream in any 60 s; the rest are held back and
    counted by one summary alert, which clears once a minute passes without any held back."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.recent: dict[str, list[int]] = {}
        self.held: dict[str, set[str]] = {}  # stream -> alert ids held back
        self.summary: dict[str, tuple[str, int, int, int]] = {}  # id, count, raised, last held
        self.summaries = 0

    def admit(self, stream_id: str, t: Transition) -> bool:
        """Whether ``t`` may be published (its alert may have been held back before)."""
        held = self.held.setdefault(stream_id, set())
        if t.alert_id in held:
            if t.state == "cleared":
                held.discard(t.alert_id)
            return False
        if t.state != "raised" or t.occurrences != 1:
            return True
        window = [x for x in self.recent.get(stream_id, []) if t.at_ns - x < 60 * NS]
        if len(window) < self.per_minute:
            self.recent[stream_id] = [*window, t.at_ns]
            return True
        self.recent[stream_id] = window
        held.add(t.alert_id)
        return False

    def summary_for(self, stream_id: str, at_ns: int, held_now: int) -> Transition | None:
        """The summary alert's event after ``held_now`` alerts were held back just now."""
        if held_now:
            alert_id, count, raised, _ = self.summary.get(stream_id) or (
                f"{stream_id}._rate.{self.summaries + 1}",
                0,
                at_ns,
                at_ns,
            )
            if stream_id not in self.summary:
                self.summaries += 1
            count += held_now
            self.summary[stream_id] = (alert_id, count, raised, at_ns)
            return Transition(
                alert_id,
                "raised",
                at_ns,
                "warning",
                f"alert rate above {self.per_minute}/min: {count} alerts held back",
                count,
                raised,
            )
        current = self.summary.get(stream_id)
        if current is not None and at_ns - current[3] >= 60 * NS:
            del self.summary[stream_id]
            alert_id, count, raised, _ = current
            return Transition(
                alert_id, "cleared", at_ns, "warning", "alert rate back to normal", count, raised
            )
        return None
