"""Version 1 contracts: Samples: frames (JSON and binary headers) and REST batches."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, model_validator

from schemas.v1.base import Contract, Int64, SensorId, StreamId


class SeriesJson(Contract):
    """The samples of one sensor in a JSON frame."""

    sensor_id: SensorId
    values: list[float] = Field(description="Sample values in order.", max_length=10_000_000)
    t0_ns: Int64 | None = Field(
        default=None, description="Timestamp of the first sample, ns since the Unix epoch."
    )
    period_ns: Int64 | None = Field(
        default=None, gt=0, description="Sampling period in ns for uniformly sampled values."
    )
    timestamps_ns: list[Int64] | None = Field(
        default=None, description="Explicit timestamp of every sample, ns since the Unix epoch."
    )
    quality: list[Annotated[int, Field(ge=0, le=255)]] | None = Field(
        default=None, description="OPC DA quality per sample (192 good); omitted means all good."
    )

    @model_validator(mode="after")
    def _timebase(self) -> SeriesJson:
        if self.timestamps_ns is None:
            if self.t0_ns is None or (self.period_ns is None and len(self.values) > 1):
                raise ValueError("give either timestamps_ns or t0_ns with period_ns")
        elif len(self.timestamps_ns) != len(self.values):
            raise ValueError("timestamps_ns and values differ in length")
        if self.quality is not None and len(self.quality) != len(self.values):
            raise ValueError("quality and values differ in length")
        return self


class FrameJson(Contract):
    """A sample frame in its JSON encoding (subject ``vertac.samples.<stream_id>``)."""

    version: Literal[1] = 1
    stream_id: StreamId
    seq: Int64 = Field(ge=0, description="Per-stream monotonic frame number.")
    sent_ns: Int64 = Field(default=0, description="When the publisher sent the frame, ns.")
    sensors: list[SeriesJson] = Field(min_length=1)


class BinarySeriesHeader(Contract):
    """Per-sensor entry of the msgpack header of a binary frame (see ``schemas/frames.py``)."""

    id: SensorId
    dtype: Literal["f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8"] = Field(
        description="numpy type code of the little-endian values."
    )
    n: int = Field(ge=0, description="Number of samples.")
    t0: int = Field(description="Timestamp of the first sample, ns since the Unix epoch.")
    dt: int = Field(
        ge=0, description="Sampling period in ns; 0 means n int64 timestamps precede the values."
    )
    q: bool = Field(default=False, description="True when n uint8 qualities follow the values.")


class BinaryFrameHeader(Contract):
    """The msgpack header of a binary frame: ``b"VTF1" | uint32 LE length | header | body``."""

    v: Literal[1] = 1
    stream_id: StreamId
    seq: int = Field(ge=0)
    sent_ns: int = 0
    layout: Literal["plain", "shuffled"] = Field(
        default="plain",
        description="shuffled: timestamps delta-encoded and arrays byte-shuffled (storage form).",
    )
    sensors: list[BinarySeriesHeader] = Field(min_length=1)


class SensorTable(Contract):
    """The sensor table of a compact binary frame, msgpack-encoded into its header's ``table``:
    the same bytes in every frame of a stream with the same sensors, so a reader decodes it
    once and recognises it by its bytes after."""

    stream_id: StreamId
    ids: list[str] = Field(min_length=1, description="Sensor ids, in the order of the body.")
    dtypes: list[str] = Field(
        min_length=1, description="One dtype per id (f4 f8 i1 i2 i4 i8 u1 u2 u4 u8)."
    )


class CompactFrameHeader(Contract):
    """The msgpack header of a compact binary frame: ``b"VTF2" | uint32 LE length | header |
    body``. Every sensor has ``n`` samples at ``t0 + i*dt``, all of good quality; the body
    holds each sensor's ``n`` values in the table's order (byte-shuffled per sensor when
    ``layout`` is ``shuffled``). VerTac's publishers send a frame of that shape compact, any
    other in ``b"VTF1"``."""

    v: Literal[2] = 2
    seq: int = Field(ge=0)
    sent_ns: int = 0
    layout: Literal["plain", "shuffled"] = "plain"
    n: int = Field(ge=1, description="Samples per sensor.")
    t0: int = Field(ge=0, description="Timestamp of every sensor's first sample, ns.")
    dt: int = Field(ge=1, description="Sampling period of every sensor, ns.")
    table: bytes = Field(description="The SensorTable, msgpack-encoded (a msgpack bin).")


class BatchSample(Contract):
    """One timestamped reading of several sensors."""

    timestamp: datetime | float = Field(
        description="ISO 8601 time, or seconds since the Unix epoch as a number."
    )
    values: dict[str, float] = Field(min_length=1, description="Sensor id to value.")
    quality: dict[str, Annotated[int, Field(ge=0, le=255)]] | None = Field(
        default=None, description="Sensor id to OPC DA quality; missing means good (192)."
    )


class BatchRequest(Contract):
    """Body of ``POST /api/live/batch``."""

    stream_id: StreamId
    samples: list[BatchSample] = Field(min_length=1, max_length=100_000)
    batch_id: str | None = Field(
        default=None,
        max_length=128,
        description="Client's id of this batch; a retried batch with the same id is stored once.",
    )


class BufferStatus(Contract):
    """Where the accepted batch went."""

    stream: str = Field(description="JetStream stream that stored the frame.")
    stream_seq: int = Field(description="Its sequence number in that JetStream stream.")
    duplicate: bool = Field(description="True when JetStream had already stored this batch.")


class BatchAccepted(Contract):
    """Answer of ``POST /api/live/batch``, sent only after JetStream acknowledged the frame."""

    ack_id: str
    buffer_status: Literal["ok"] = Field(
        default="ok", description="v0.2.0's field: ok once JetStream stored the batch."
    )
    samples_received: int
    seq: int
    buffer: BufferStatus = Field(description="Where JetStream stored the batch.")
