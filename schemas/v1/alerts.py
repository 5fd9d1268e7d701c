"""Version 1 contracts: Alert rules and alert lifecycle events."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from schemas.v1.base import Contract, Int64, StreamId
from schemas.v1.references import RuleKind

RULE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class AlertRule(Contract):
    """A live alert rule of one stream (KV ``vertac_alert_rules``, REST ``/api/live/stream/{id}/
    alert-rules``). Which fields matter depends on ``kind``; the validator names a missing one."""

    version: Literal[1] = 1
    rule_id: str = Field(pattern=RULE_ID_PATTERN, description="Unique within the stream.")
    stream_id: StreamId
    kind: RuleKind
    sensor_id: str | None = Field(
        default=None, description="The sensor (limit, rate, flatline; contribution: optional)."
    )
    severity: Literal["warning", "critical"] = "warning"
    hi: float | None = Field(default=None, description="limit: warning above this.")
    hihi: float | None = Field(default=None, description="limit: critical above this.")
    lo: float | None = Field(default=None, description="limit: warning below this.")
    lolo: float | None = Field(default=None, description="limit: critical below this.")
    max_rate: float | None = Field(default=None, gt=0, description="rate: units per second.")
    flat_s: float | None = Field(default=None, gt=0, description="flatline: unchanged this long.")
    flat_band: float = Field(
        default=0.0, ge=0, description="flatline: changes below this count as none."
    )
    gap_s: float | None = Field(default=None, gt=0, description="data_gap: no frames this long.")
    envelope_k: float = Field(
        default=3.0, gt=0, description="envelope: half-width in normal spreads of the reference."
    )
    health_below: float | None = Field(default=None, ge=0, le=100)
    contribution_above: float | None = Field(default=None, ge=0, le=100)
    delay_on_ms: int = Field(default=0, ge=0, description="The condition must hold this long.")
    deadband: float = Field(default=0.0, ge=0, description="Hysteresis before the alert clears.")
    enabled: bool = True
    description: str = Field(default="", max_length=500)
    notify: list[Literal["webhook", "email"]] | None = Field(
        default=None,
        description="Channels for this rule's alerts; unset: every channel, by severity.",
    )

    @model_validator(mode="after")
    def _fields_for_kind(self) -> AlertRule:
        needs: dict[str, tuple[str, ...]] = {
            "limit": ("sensor_id",),
            "rate": ("sensor_id", "max_rate"),
            "flatline": ("sensor_id", "flat_s"),
            "envelope": ("sensor_id",),
            "data_gap": ("gap_s",),
            "health": ("health_below",),
            "contribution": ("contribution_above",),
            "abnormal_stop": (),
        }
        missing = [f for f in needs[self.kind] if getattr(self, f) is None]
        if missing:
            raise ValueError(f"a {self.kind} rule needs {', '.join(missing)}")
        if self.kind == "limit":
            levels = [self.hi, self.hihi, self.lo, self.lolo]
            if all(v is None for v in levels):
                raise ValueError("a limit rule needs at least one of hi, hihi, lo, lolo")
            if self.hi is not None and self.hihi is not None and self.hihi < self.hi:
                raise ValueError("hihi must not be below hi")
            if self.lo is not None and self.lolo is not None and self.lolo > self.lo:
                raise ValueError("lolo must not be above lo")
        return self


class AlertChanged(Contract):
    """Event on ``vertac.alerts.<stream_id>.<severity>``: an alert was raised (again),
    acknowledged or cleared."""

    version: Literal[1] = 1
    alert_id: str
    stream_id: StreamId
    rule_id: str
    kind: str
    severity: Literal["info", "warning", "critical"]
    state: Literal["raised", "acknowledged", "cleared"]
    message: str
    at: datetime
    sensor_id: str | None = None
    value: float | None = None
    occurrences: int = Field(default=1, description="How often the condition came back.")
    raised_at: datetime | None = None
    acknowledged_by: str | None = None
    comment: str = ""
    at_ns: Int64 | None = Field(
        default=None, description="at exactly, in ns since the epoch (at carries microseconds)."
    )


class AcknowledgeAlert(Contract):
    """Body of ``POST /api/live/alerts/{alert_id}/ack``."""

    user: str = Field(
        default="",
        max_length=100,
        description="Who acknowledges; with auth on, the signed-in name is recorded instead.",
    )
    comment: str = Field(default="", max_length=2000)
