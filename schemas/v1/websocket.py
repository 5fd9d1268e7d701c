"""Version 1 contracts: WebSocket messages between the gateway and the dashboard."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from schemas.v1.alerts import AlertChanged
from schemas.v1.analysis import AnalysisCompleted
from schemas.v1.base import Contract, StreamId
from schemas.v1.cycles import CycleStateChanged


class WsSensorTrace(Contract):
    """Decimated samples of one sensor: per bucket the time (ms), min, max and last value."""

    t_ms: list[float]
    min: list[float]
    max: list[float]
    last: float
    count: int = Field(description="Raw samples the buckets summarise.")
    mean: list[float] = Field(default_factory=list, description="Mean per bucket.")


class WsSamples(Contract):
    """Server → browser: decimated samples since the previous message."""

    type: Literal["samples"] = "samples"
    stream_id: StreamId
    seq: int = Field(description="Highest frame seq included.")
    sensors: dict[str, WsSensorTrace]
    sent_ms: list[float] = Field(
        default_factory=list,
        description="Publication time (Unix ms) of each frame included, for latency figures.",
    )


class WsStateChange(Contract):
    """Server → browser: a cycle lifecycle event."""

    type: Literal["state_change"] = "state_change"
    stream_id: StreamId
    event: CycleStateChanged


class WsAnalysisResult(Contract):
    """Server → browser: a post-cycle analysis."""

    type: Literal["analysis_result"] = "analysis_result"
    stream_id: StreamId
    result: AnalysisCompleted


class WsAlert(Contract):
    """Server → browser: an alert was raised, acknowledged or cleared."""

    type: Literal["alert"] = "alert"
    stream_id: StreamId
    alert: AlertChanged


class WsReady(Contract):
    """Server → browser, first on every connection: the gateway now forwards this stream's
    events, so state read over REST from here on misses nothing."""

    type: Literal["ready"] = "ready"
    stream_id: StreamId


class WsPong(Contract):
    """Server → browser: answer to ``ping``."""

    type: Literal["pong"] = "pong"
    ts: float


class WsError(Contract):
    """Server → browser: a command could not be carried out."""

    type: Literal["error"] = "error"
    error: str
    field: str = ""


class WsCommandAck(Contract):
    """Server → browser: a command was published to the bus."""

    type: Literal["command_ack"] = "command_ack"
    command: str
    stream_seq: int


class WsEnvelope(Contract):
    """Server → browser: every WebSocket message, in VerTac v0.2.0's envelope. ``data`` holds the
    fields of the message of that ``type`` (``WsSamples``, ``WsStateChange``,
    ``WsAnalysisResult``, ``WsAlert``, ``WsReady``, ``WsPong``, ``WsError``, ``WsCommandAck``)
    without its ``type``."""

    type: Literal[
        "samples", "state_change", "analysis_result", "alert", "ready", "pong", "error",
        "command_ack",
    ]  # fmt: skip
    timestamp: datetime = Field(description="When the gateway sent it (ISO 8601, UTC).")
    data: dict[str, Any]


class WsCommand(Contract):
    """Browser → server: ``ping``, ``cycle_start`` or ``cycle_stop``, as JSON
    (``{"type": "cycle_start", "reason": "..."}``), or as plain text as v0.2.0 clients send."""

    type: Literal["ping", "cycle_start", "cycle_stop"]
    reason: str = ""
