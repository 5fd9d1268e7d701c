"""Version 1 contracts: The stream registry: machines and their sensors."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from schemas.v1.base import DATASET_PATTERN, Contract, SensorId, StreamId


class SensorSpec(Contract):
    """One sensor of a registered stream."""

    id: SensorId
    name: str = Field(default="", max_length=200, description="Human-readable name.")
    type: str = Field(
        default="generic", max_length=64, description="pressure, temperature, flow, ..."
    )
    unit: str = Field(default="", max_length=32, description="Engineering unit, e.g. bar.")
    rate_hz: float = Field(default=1.0, gt=0, le=1_000_000, description="Nominal sampling rate.")


class StreamRegistration(Contract):
    """Body of ``POST /api/live/register``: a machine and its sensors."""

    version: Literal[1] = 1
    device_name: str = Field(min_length=1, max_length=200, examples=["Press 1"])
    stream_id: StreamId | None = Field(
        default=None, description="Chosen id; derived from device_name when omitted."
    )
    description: str = Field(default="", max_length=2000)
    dataset_id: str | None = Field(
        default=None,
        pattern=DATASET_PATTERN,
        description="Dataset the stream's cycles are filed under; live-<stream_id> when omitted.",
    )
    sensors: list[SensorSpec] = Field(min_length=1, max_length=4096)

    @model_validator(mode="after")
    def _unique_sensors(self) -> StreamRegistration:
        ids = [s.id for s in self.sensors]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"sensor ids repeat: {', '.join(dupes)}")
        return self


class StreamRegistered(Contract):
    """Event on ``vertac.registry.<stream_id>``: a stream was registered or updated."""

    version: Literal[1] = 1
    stream_id: StreamId
    device_name: str
    description: str = ""
    sensors: list[SensorSpec]
    registered_at: datetime
    dataset_id: str = Field(default="", description="Dataset of the stream's cycles.")


class RegisterResponse(Contract):
    """Answer of ``POST /api/live/register``."""

    stream_id: StreamId
    dataset_id: str = Field(description="Dataset the stream's cycles are filed under.")
    status: Literal["registered", "updated"]
    warnings: list[str] = Field(default_factory=list, description="What was taken as given.")
    samples_subject: str
    control_subject: str
    websocket: str


class RegistryRequest(Contract):
    """Request on ``vertac.register.<stream_id>``, answered by the ingest service: the only way
    an edge changes the registry or draws frame numbers. The stream is the subject's; an edge
    may send to its own subject only."""

    op: Literal["register", "reserve", "release", "clock"] = Field(
        description="register (the registration), reserve (count numbers), release (give back "
        "reserved_end..next_seq), clock (the server's time only)."
    )
    registration: StreamRegistration | None = Field(
        default=None, description="For register: its stream_id is the subject's or omitted."
    )
    count: int = Field(
        default=0, ge=0, le=1_000_000, description="Frame numbers to reserve (register, reserve)."
    )
    reserved_end: int | None = Field(default=None, ge=0, description="For release.")
    next_seq: int | None = Field(default=None, ge=0, description="For release.")


class RegistryReply(Contract):
    """Reply to a :class:`RegistryRequest` (header ``Vertac-Status`` holds ``status`` too)."""

    status: int = Field(description="200, or 4xx with the reason in error, 503 to retry.")
    error: str = ""
    registered: StreamRegistered | None = None
    existed: bool = False
    first_seq: int | None = Field(default=None, description="First reserved frame number.")
    released: bool = False
    server_time_ns: int = Field(description="The server's clock when it answered (ns).")
