"""The alarm lifecycle: raised -> acknowledged -> cleared, re-raised within the window as one
more occurrence of the same alert. Pure; no I/O."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from schemas.messages import AlertRule

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


def alert_id_for(rule: AlertRule, n: int) -> str:
    return f"{rule.stream_id}.{rule.rule_id}.{n}"


def event_of(
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


def lifecycle_on(
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
            return s, [event_of(s, "raised", at_ns, message, value)]
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
        return s, [event_of(s, "raised", at_ns, message, value)]
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
    return s, [event_of(s, "raised", at_ns, message, value)]


def lifecycle_off(
    s: RuleState, at_ns: int, message: str, value: float | None
) -> tuple[RuleState, list[Transition]]:
    if s.alert_state not in ("raised", "acknowledged"):
        return s, []
    s = s.model_copy(update={"alert_state": "cleared", "cleared_at_ns": at_ns})
    return s, [event_of(s, "cleared", at_ns, message, value)]


def acknowledge(
    s: RuleState, user: str, comment: str, now_ns: int
) -> tuple[RuleState, list[Transition]]:
    """A user acknowledges the rule's alert (raised or already cleared)."""
    if s.alert_id is None or s.alert_state not in ("raised", "cleared"):
        return s, []
    new_state = "acknowledged" if s.alert_state == "raised" else "cleared"
    s = s.model_copy(update={"alert_state": new_state})
    return s, [event_of(s, "acknowledged", now_ns, f"acknowledged by {user}", None, user, comment)]
