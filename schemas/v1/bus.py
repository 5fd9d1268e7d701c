"""Version 1 contracts: Dead letters: what a consumer could not use, and why."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from schemas.v1.alerts import RULE_ID_PATTERN
from schemas.v1.base import DATASET_PATTERN, Contract


class DeadLetter(Contract):
    """A message a service could not process, on ``vertac.dlq.<service>``."""

    version: Literal[1] = 1
    service: str
    subject: str
    reason: str
    field: str = Field(default="", description="The offending field, when one is known.")
    error_type: str = Field(
        default="", description="Type of the failure (FrameError, ValueError, MaxDeliveries, ...)."
    )
    deliveries: int = 1
    stream: str = Field(default="", description="The JetStream stream the message came from.")
    stream_seq: int | None = Field(default=None, description="Sequence in the source stream.")
    headers: dict[str, str] = Field(default_factory=dict)
    payload_bytes: int = Field(default=0, description="Size of the original payload.")
    payload_inline: bool = Field(
        default=True,
        description="False when the payload was too large to copy: read it from `stream` at "
        "`stream_seq` (while the stream's retention keeps it).",
    )
    payload_b64: str = Field(
        default="", description="The original payload, base64 (empty when not inline)."
    )
    at: datetime


class EdgeStatus(Contract):
    """What an edge agent says of itself every few seconds, on ``vertac.edge.<stream_id>.status``
    (and in its log): its store-and-forward buffer and how fast it publishes."""

    stream_id: str
    depth: int = Field(description="Frames in the buffer, not yet acknowledged by JetStream.")
    bytes: int = Field(description="Bytes the buffer holds.")
    oldest_age_s: float | None = Field(description="Age of the oldest buffered frame, seconds.")
    next_seq: int = Field(description="The seq the next frame gets.")
    published: int = Field(description="Frames published since start.")
    refused: int = Field(description="Frames the bus refused (dead-lettered by the edge).")
    publish_rate_fps: float = Field(description="Frames published a second, last 10 s.")
    clock_offset_s: float | None = Field(
        description="The edge clock minus the server's, seconds (None until measured)."
    )


class AlertControlRequest(Contract):
    """Request on ``vertac.alertctl.<stream_id>.ack``, answered by the alerts service: acknowledge
    one of the stream's alerts (the gateway's ``POST /api/live/alerts/{alert_id}/ack`` sends it).
    The reply is ``{"alert_id", "state"}`` or ErrorBody."""

    alert_id: str
    user: str
    comment: str = ""


class RemoveAlertRule(Contract):
    """Request on ``vertac.alertctl.<stream_id>.rule_delete``, answered by the alerts service
    (which owns the rules): remove one of the stream's rules. ``rule_put`` carries the
    AlertRule itself. The reply is ``{"removed": true}`` or ErrorBody (404: no such rule)."""

    rule_id: str = Field(pattern=RULE_ID_PATTERN)


class DatasetRequest(Contract):
    """Request on ``vertac.datasets.<stream_id>.<op>``, answered by the cycles service (which
    owns cycles and datasets): ``add`` files the stream's cycle ``cycle_id`` into ``dataset``
    (again: updates label and note), ``remove`` takes it out, ``import`` stores the cycles of
    the file ``upload`` (an object in ``vertac_uploads``, named ``filename``) on the stream and
    files them. The reply is DatasetEntry, ``{"removed": true}``, DatasetImported or ErrorBody,
    with header ``Vertac-Status``."""

    dataset: str = Field(pattern=DATASET_PATTERN)
    cycle_id: str = Field(default="", max_length=128, description="add, remove")
    label: str = Field(default="", max_length=200, description="add, import")
    note: str = Field(default="", max_length=2000, description="add")
    upload: str = Field(default="", max_length=128, description="import: the object's name")
    filename: str = Field(default="cycle.csv", max_length=200, description="import")
