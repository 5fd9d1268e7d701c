"""Version 1 contracts: cycle commands, configuration, state, lifecycle events and reads."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from schemas.v1.analysis import AnalysisCompleted, Trend
from schemas.v1.base import Contract, Int64, StreamId


class CycleCommand(Contract):
    """Command on ``vertac.control.<stream_id>``."""

    version: Literal[1] = 1
    stream_id: StreamId
    command: Literal["cycle_start", "cycle_stop", "cycle_abort"]
    issued_at: datetime
    source: str = Field(default="api", description="rest, websocket, cli, ...")
    reason: str = ""


class CommandAccepted(Contract):
    """Answer of ``POST /api/live/cycle/start|stop``."""

    stream_id: StreamId
    command: str
    stream_seq: int


class CycleConfig(Contract):
    """How cycles of one stream start and end (KV ``vertac_cycle_config``, REST
    ``PUT /api/live/stream/{id}/cycle-config``). Manual commands always work as well. Values
    are taken as they are typed: a number in quotes is refused, not converted."""

    model_config = ConfigDict(**Contract.model_config, strict=True)
    version: Literal[1] = 1
    trigger: Literal["manual", "signal"] = Field(
        default="manual",
        description="manual: commands only; signal: a sensor crossing thresholds (a digital "
        "'cycle active' input is start_above 0.5, stop_below 0.5).",
    )
    signal_sensor: str | None = Field(default=None, description="Sensor that drives the trigger.")
    start_above: float | None = Field(
        default=None, description="Start when the value rises to this."
    )
    stop_below: float | None = Field(
        default=None, description="Stop when the value falls to this (hysteresis: <= start_above)."
    )
    debounce_s: float = Field(default=0.0, ge=0, description="A crossing must hold this long.")
    gap_timeout_s: float = Field(default=5.0, gt=0, description="No data this long aborts a cycle.")
    min_duration_s: float = Field(default=0.0, ge=0, description="Shorter cycles end aborted.")
    max_duration_s: float = Field(default=3600.0, gt=0, description="Longer cycles are aborted.")
    stop_grace_s: float = Field(
        default=2.0, ge=0, description="After a stop command, wait this long for in-flight data."
    )

    @model_validator(mode="after")
    def _consistent(self) -> CycleConfig:
        if self.trigger == "signal":
            if not self.signal_sensor or self.start_above is None or self.stop_below is None:
                raise ValueError("a signal trigger needs signal_sensor, start_above and stop_below")
            if self.stop_below > self.start_above:
                raise ValueError("stop_below must not exceed start_above (hysteresis)")
        if self.min_duration_s >= self.max_duration_s:
            raise ValueError("min_duration_s must be below max_duration_s")
        return self


class CycleStateRecord(Contract):
    """Cycle state of one stream, kept in KV ``vertac_cycle_state`` under the stream id, so a
    restarted or second ``cycles`` instance continues where the last one stopped."""

    version: Literal[1] = 1
    stream_id: StreamId
    state: Literal["idle", "running", "stopping"] = "idle"
    cycle_no: int = 0
    cycle_id: str | None = None
    started_ns: int | None = None
    start_js_seq: int | None = None
    start_reason: str = ""
    stop_at_ns: int | None = None
    stop_state: Literal["completed", "aborted"] = "completed"
    stop_reason: str = ""
    stop_requested_ns: int | None = Field(default=None, description="Wall clock of the stop.")
    last_js_seq: int = Field(default=0, description="Last samples message applied (idempotency).")
    last_seq: int = -1
    last_data_ns: int | None = None
    last_arrival_ns: int | None = None
    candidate_since_ns: int | None = Field(default=None, description="Debounce of the trigger.")
    armed: bool = Field(
        default=False,
        description="The trigger signal was low since the last cycle, so a rise starts one.",
    )
    recent: list[tuple[int, int]] = Field(
        default_factory=list,
        description="(JetStream sequence, first sample ns) of the last frames, so a cycle started "
        "by a command also records frames applied just before the command arrived.",
    )
    frames: int = 0
    gaps: int = 0
    late_frames: int = 0
    replayed_frames: int = 0


class CycleStateChanged(Contract):
    """Event on ``vertac.cycles.<stream_id>.<event>``: a cycle started, completed or aborted."""

    version: Literal[1] = 1
    stream_id: StreamId
    cycle_id: str
    state: Literal["running", "completed", "aborted"]
    at: datetime
    reason: str = Field(default="", description="Why it ended (or what started it).")
    cycle_no: int = 0
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration_s: float | None = None
    samples: dict[str, int] = Field(default_factory=dict, description="Samples per sensor.")
    frames: int = 0
    gaps: int = Field(default=0, description="Frames missing from the seq sequence.")
    late_frames: int = Field(default=0, description="Frames that arrived out of order.")
    replayed_frames: int = Field(default=0, description="Frames seen twice with the same seq.")
    completeness: float = Field(default=1.0, ge=0, le=1)
    recording: str | None = Field(
        default=None, description="Object name of the recorded samples in 'vertac_cycles'."
    )
    started_ns: Int64 | None = Field(
        default=None,
        description="started_at exactly, in ns since the epoch on the samples' clock "
        "(started_at carries microseconds).",
    )
    ended_ns: Int64 | None = Field(default=None, description="ended_at exactly, in ns.")


class CycleSummary(Contract):
    """A cycle as listed by ``GET /api/live/stream/{id}/cycles``."""

    cycle_id: str
    stream_id: StreamId
    cycle_no: int
    state: str
    started_at: datetime | None
    ended_at: datetime | None
    duration_s: float | None
    end_reason: str
    samples: dict[str, int]
    frames: int
    gaps: int
    completeness: float
    health_score: float | None = None
    risk_class: str | None = None
    reference_version: int | None = None
    t2: float | None = Field(default=None, description="The learned model's Hotelling T².")
    t2_limit_99: float | None = None
    spe: float | None = Field(default=None, description="The learned model's SPE (Q).")
    spe_limit_99: float | None = None
    level_ratio_99: float | None = Field(
        default=None, description="The learned model's operating point: its larger statistic "
        "over its 99 % limit.",
    )  # fmt: skip
    trend: Trend | None = Field(
        default=None, description="The stream's health trend as of this cycle."
    )


class CycleDetail(Contract):
    """Answer of ``GET /api/live/cycles/{cycle_id}``: the cycle and its latest analysis."""

    cycle: CycleSummary
    analysis: AnalysisCompleted | None = None
