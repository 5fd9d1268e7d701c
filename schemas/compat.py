"""The REST bodies of VerTac v0.2.0, accepted beside today's (``POST /api/live/register`` and
``POST /api/live/batch``), and the unions that tell the two shapes apart.

v0.2.0 registered a device with ``sensor_count`` and ``sensors: [{sensor_id, name, type, unit}]``
and no stream id (the server made one), and posted one record per sample
(``timestamp, sensor_id, sensor_name, value, unit, quality`` with quality 0-1). Each shape is told
apart by its own fields, so a body is validated against one shape only and its errors name that
shape's fields.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import ConfigDict, Discriminator, Field, Tag, model_validator

from schemas.messages import (
    DATASET_PATTERN,
    BatchRequest,
    Contract,
    SensorId,
    StreamId,
    StreamRegistration,
)

# quality 0-1 of v0.2.0 onto OPC DA quality codes (what VerTac stores)
QUALITY_GOOD_FROM = 0.8  # at or above: good (192)
QUALITY_UNCERTAIN_FROM = 0.4  # at or above: uncertain (64); below: bad (0)


def quality_code(q: float) -> int:
    """v0.2.0's quality (0 bad ... 1 good) as an OPC DA quality code: 192 good from 0.8,
    64 uncertain from 0.4, 0 bad below."""
    if q >= QUALITY_GOOD_FROM:
        return 192
    if q >= QUALITY_UNCERTAIN_FROM:
        return 64
    return 0


class LegacySensor(Contract):
    """A sensor as v0.2.0 registered it."""

    sensor_id: SensorId = Field(description="The sensor's id (v0.2.0 clients send a UUID).")
    name: str = Field(default="", max_length=200, examples=["motor_speed"])
    type: str = Field(default="generic", max_length=64, examples=["analog"])
    unit: str = Field(default="", max_length=32, examples=["RPM"])
    rate_hz: float = Field(default=1.0, gt=0, le=1_000_000, description="Nominal rate (optional).")


class LegacyRegistration(Contract):
    """v0.2.0 body of ``POST /api/live/register``: the server makes the stream id (from the
    device name, so registering the same device again updates it) and a dataset id."""

    device_name: str = Field(min_length=1, max_length=200, examples=["Machine-01"])
    sensor_count: int | None = Field(
        default=None,
        strict=True,
        ge=0,
        le=4096,
        description="Informational, as in v0.2.0: the listed sensors are registered; a count "
        "that differs is reported in the answer's warnings.",
    )
    sensors: list[LegacySensor] = Field(min_length=1, max_length=4096)
    stream_id: StreamId | None = Field(default=None, description="Optional chosen id.")
    dataset_id: str | None = Field(
        default=None,
        pattern=DATASET_PATTERN,
        description="Dataset the stream's cycles are filed under; made by the server when omitted.",
    )
    description: str = Field(default="", max_length=2000)

    @model_validator(mode="after")
    def _unique(self) -> LegacyRegistration:
        ids = [s.sensor_id for s in self.sensors]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"sensor ids repeat: {', '.join(dupes)}")
        return self

    def warnings(self) -> list[str]:
        if self.sensor_count is not None and self.sensor_count != len(self.sensors):
            return [
                f"sensor_count is {self.sensor_count} but {len(self.sensors)} sensor(s) are "
                "listed; the listed sensors were registered"
            ]
        return []

    def current(self) -> StreamRegistration:
        from schemas.messages import SensorSpec

        return StreamRegistration(
            device_name=self.device_name,
            stream_id=self.stream_id,
            description=self.description,
            dataset_id=self.dataset_id,
            sensors=[
                SensorSpec(id=s.sensor_id, name=s.name, type=s.type, unit=s.unit,
                           rate_hz=s.rate_hz)
                for s in self.sensors
            ],
        )  # fmt: skip


class LegacySample(Contract):
    """One reading as v0.2.0 posted it. ``sensor_id`` or ``sensor_name`` names the sensor
    (the id, or the registered name); ``unit``, when given, must be the registered unit."""

    model_config = ConfigDict(
        **Contract.model_config,
        json_schema_extra={
            "anyOf": [
                {"required": [name], "properties": {name: {"type": "string", "minLength": 1}}}
                for name in ("sensor_id", "sensor_name")
            ]
        },
    )
    timestamp: datetime | float = Field(description="ISO 8601, or seconds since the Unix epoch.")
    sensor_id: str | None = Field(default=None, max_length=128)
    sensor_name: str | None = Field(default=None, max_length=200)
    value: float
    unit: str | None = Field(default=None, max_length=32)
    quality: float = Field(
        default=1.0, ge=0, le=1, description="0 bad ... 1 good; good from 0.8, uncertain from 0.4."
    )

    @model_validator(mode="after")
    def _named(self) -> LegacySample:
        if not self.sensor_id and not self.sensor_name:
            raise ValueError("a sample needs sensor_id or sensor_name")
        return self


class LegacyBatch(Contract):
    """v0.2.0 body of ``POST /api/live/batch``: one record per sample."""

    stream_id: StreamId
    samples: list[LegacySample] = Field(min_length=1, max_length=100_000)
    batch_id: str | None = Field(default=None, max_length=128)


def _registration_shape(body: Any) -> str:
    if isinstance(body, dict):
        sensors = body.get("sensors")
        legacy = "sensor_count" in body or (
            isinstance(sensors, list) and any(isinstance(s, dict) and "sensor_id" in s
                                              for s in sensors)
        )  # fmt: skip
        return "v0.2" if legacy else "current"
    return "v0.2" if isinstance(body, LegacyRegistration) else "current"


def _batch_shape(body: Any) -> str:
    if isinstance(body, dict):
        samples = body.get("samples")
        first = samples[0] if isinstance(samples, list) and samples else None
        return "v0.2" if isinstance(first, dict) and "values" not in first and (
            "value" in first or "sensor_id" in first or "sensor_name" in first
        ) else "current"  # fmt: skip
    return "v0.2" if isinstance(body, LegacyBatch) else "current"


RegisterBody = Annotated[
    Annotated[StreamRegistration, Tag("current")] | Annotated[LegacyRegistration, Tag("v0.2")],
    Discriminator(_registration_shape),
]
BatchBody = Annotated[
    Annotated[BatchRequest, Tag("current")] | Annotated[LegacyBatch, Tag("v0.2")],
    Discriminator(_batch_shape),
]


# the bodies of the v0.2.0 README, verbatim, and today's, as OpenAPI examples
V02_REGISTER: dict[str, Any] = {
    "device_name": "Machine-01",
    "sensor_count": 3,
    "sensors": [{"sensor_id": "uuid", "name": "motor_speed", "type": "analog", "unit": "RPM"}],
}
V02_BATCH: dict[str, Any] = {
    "stream_id": "uuid",
    "samples": [
        {
            "timestamp": "2026-01-11T10:30:45.123Z",
            "sensor_id": "uuid",
            "sensor_name": "motor_speed",
            "value": 1500.5,
            "unit": "RPM",
            "quality": 0.95,
        }
    ],
}
REGISTER_EXAMPLES: dict[str, Any] = {
    "current": {
        "summary": "Today's body",
        "value": {
            "device_name": "Press 1",
            "stream_id": "press-01",
            "sensors": [
                {
                    "id": "pressure_1",
                    "name": "Main pressure",
                    "type": "pressure",
                    "unit": "bar",
                    "rate_hz": 1000,
                },
                {"id": "temperature_1", "type": "temperature", "unit": "°C", "rate_hz": 1},
            ],
        },
    },
    "v0.2.0": {
        "summary": "VerTac v0.2.0's body (the server makes the stream id)",
        "value": V02_REGISTER,
    },
}
BATCH_EXAMPLES: dict[str, Any] = {
    "current": {
        "summary": "Today's columnar body",
        "value": {
            "stream_id": "press-01",
            "batch_id": "line-a-000123",
            "samples": [
                {"timestamp": "2026-01-11T10:30:45.123Z", "values": {"pressure_1": 151.2}},
                {
                    "timestamp": 1768127445.124,
                    "values": {"pressure_1": 151.4},
                    "quality": {"pressure_1": 64},
                },
            ],
        },
    },
    "v0.2.0": {
        "summary": "VerTac v0.2.0's body: one record per sample, quality 0-1",
        "value": V02_BATCH,
    },
}
