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

import numpy as np
import numpy.typing as npt

from schemas.messages import AlertRule
from schemas.timeutil import NS
from services.alerts.cycle_rules import (
    COMPARABLE_RULE_ID,
    TREND_RULE_ID,
    comparable_rule,
    on_analysis,
    on_cycle,
    trend_rule,
)
from services.alerts.guard import RateGuard
from services.alerts.lifecycle import (
    RuleState,
    Transition,
    acknowledge,
    alert_id_for,
    lifecycle_off,
    lifecycle_on,
)
from services.common.references import SensorReference

# the rules' public names, wherever they are defined
__all__ = [
    "COMPARABLE_RULE_ID",
    "TREND_RULE_ID",
    "RateGuard",
    "RuleState",
    "Transition",
    "acknowledge",
    "alert_id_for",
    "comparable_rule",
    "hysteresis",
    "on_analysis",
    "on_cycle",
    "on_envelope",
    "on_frame_arrival",
    "on_samples",
    "on_tick",
    "trend_rule",
    "within",
]

Bools = npt.NDArray[np.bool_]


def hysteresis(on: Bools, off: Bools, carried: bool) -> Bools:
    """Condition per sample: set where ``on``, reset where ``off``, else as before."""
    events = np.where(on, 1, np.where(off, -1, 0))
    idx = np.where(events != 0, np.arange(len(events)), -1)
    last = np.maximum.accumulate(idx) if len(idx) else idx
    return np.where(last >= 0, events[np.maximum(last, 0)] == 1, carried)


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
            s, more = lifecycle_off(
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
            s, more = lifecycle_on(
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
        s, more = lifecycle_off(s, int(t[pos]), f"{describe} back to normal", float(values[pos]))
        out += more
        s = s.model_copy(update={"condition": False, "since_ns": None})
    return s, out


def within(rule: AlertRule, v: npt.NDArray[np.float64]) -> bool:
    """Whether no value is beyond the rule's limits (NaN is beyond none)."""
    highs = [x for x in (rule.hi, rule.hihi) if x is not None]
    lows = [x for x in (rule.lo, rule.lolo) if x is not None]
    return not ((highs and (v > min(highs)).any()) or (lows and (v < max(lows)).any()))


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
        if not s.condition and within(rule, v):
            return s, []  # the usual frame: nothing beyond a limit, nothing to clear
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
        return lifecycle_on(
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
    return lifecycle_off(s, now_ns, "data flows again", None)
