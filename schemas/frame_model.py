"""The frame in memory: a stream's samples, sensor by sensor (see :mod:`schemas.frames` for the
wire encodings)."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field, replace
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from schemas.subjects import InvalidStreamId, check_any_stream_id
from schemas.v1.base import SENSOR_ID_PATTERN

MAGIC: Final = b"VTF1"
# a regular frame (every sensor on one clock, all samples good) with its sensor table as one
# blob that repeats frame after frame: read once per process, recognised by its bytes after
MAGIC_COMPACT: Final = b"VTF2"
CONTENT_TYPE_BINARY: Final = "application/vnd.vertac.frame.v1+msgpack"
CONTENT_TYPE_JSON: Final = "application/json"
QUALITY_GOOD: Final = 192
QUALITY_UNCERTAIN: Final = 64
QUALITY_BAD: Final = 0
DTYPES: Final = frozenset({"f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8"})
MAX_SAMPLES_PER_SERIES: Final = 10_000_000
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
_PREAMBLE = struct.Struct("<4sI")
_SENSOR_ID = re.compile(SENSOR_ID_PATTERN.removeprefix("^").removesuffix("+$") + "{1,128}")


class FrameError(ValueError):
    """A frame that cannot be decoded; ``field`` names the offending part."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True, eq=False)
class Series:
    """The samples of one sensor inside a frame."""

    sensor_id: str
    values: npt.NDArray[Any]
    t0_ns: int
    period_ns: int = 0
    timestamps_ns: npt.NDArray[np.int64] | None = None
    quality: npt.NDArray[np.uint8] | None = None

    def __post_init__(self) -> None:
        n = len(self.values)
        if self.values.ndim != 1:
            raise FrameError(f"sensors[{self.sensor_id}].values", "must be one-dimensional")
        if self.values.dtype.str[1:] not in DTYPES:
            raise FrameError(
                f"sensors[{self.sensor_id}].dtype", f"{self.values.dtype} is not supported"
            )
        if self.timestamps_ns is None:
            if self.period_ns <= 0 and n > 1:
                raise FrameError(
                    f"sensors[{self.sensor_id}].period_ns",
                    "must be > 0 when no explicit timestamps are given",
                )
        elif len(self.timestamps_ns) != n:
            raise FrameError(
                f"sensors[{self.sensor_id}].timestamps_ns",
                f"has {len(self.timestamps_ns)} items for {n} values",
            )
        if self.quality is not None and len(self.quality) != n:
            raise FrameError(
                f"sensors[{self.sensor_id}].quality",
                f"has {len(self.quality)} items for {n} values",
            )

    @property
    def n(self) -> int:
        return len(self.values)

    def timestamps(self) -> npt.NDArray[np.int64]:
        """Nanosecond timestamps of every sample."""
        if self.timestamps_ns is not None:
            return self.timestamps_ns
        return self.t0_ns + np.arange(self.n, dtype=np.int64) * self.period_ns

    def qualities(self) -> npt.NDArray[np.uint8]:
        """Quality of every sample (all good when the frame carried none)."""
        if self.quality is not None:
            return self.quality
        return np.full(self.n, QUALITY_GOOD, dtype=np.uint8)

    def first_ns(self) -> int:
        if self.timestamps_ns is not None and self.n:
            return int(self.timestamps_ns[0])
        return self.t0_ns

    def last_ns(self) -> int:
        if self.timestamps_ns is not None:
            return int(self.timestamps_ns[-1]) if self.n else self.t0_ns
        return self.t0_ns + max(self.n - 1, 0) * self.period_ns

    def equals(self, other: Series) -> bool:
        return (
            self.sensor_id == other.sensor_id
            and np.array_equal(self.values, other.values)
            and np.array_equal(self.timestamps(), other.timestamps())
            and np.array_equal(self.qualities(), other.qualities())
        )


@dataclass(frozen=True, slots=True)
class Span:
    """What a whole frame holds, for a frame of which only some sensors were decoded."""

    n_samples: int
    first_ns: int
    last_ns: int
    ids: tuple[str, ...]  # every sensor of the frame, in its order
    shuffled: bool = False  # the message is in the storage layout
    # a regular frame's header as parsed (schemas.frame_regular), for the readers of its body
    header: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True, eq=False)
class Frame:
    """Many samples of one stream; ``seq`` is monotonic per stream.

    A frame decoded for some of its sensors only (:func:`decode_binary` with ``sensors``) holds
    those in ``series``, what the whole frame holds in ``span``, and the message itself in
    ``raw``: :meth:`complete` decodes the rest when it is needed after all.
    """

    stream_id: str
    seq: int
    series: tuple[Series, ...]
    sent_ns: int = 0
    span: Span | None = field(default=None, repr=False)
    raw: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        try:
            check_any_stream_id(self.stream_id)
        except InvalidStreamId as exc:
            raise FrameError("stream_id", str(exc)) from exc
        if self.seq < 0:
            raise FrameError("seq", "must be >= 0")
        if not self.series and self.span is None:
            raise FrameError("sensors", "a frame needs at least one sensor")
        if len(self.series) > 1:
            ids = [s.sensor_id for s in self.series]
            if len(set(ids)) != len(ids):
                raise FrameError("sensors", "sensor ids repeat within the frame")

    @property
    def n_samples(self) -> int:
        if self.span is not None:
            return self.span.n_samples
        return sum(s.n for s in self.series)

    @property
    def n_sensors(self) -> int:
        return len(self.span.ids) if self.span is not None else len(self.series)

    def first_ns(self) -> int:
        if self.span is not None:
            return self.span.first_ns
        return min(s.first_ns() for s in self.series)

    def last_ns(self) -> int:
        if self.span is not None:
            return self.span.last_ns
        return max(s.last_ns() for s in self.series)

    def has(self, sensor_id: str) -> bool:
        """Whether the frame carries ``sensor_id`` (decoded or not)."""
        if self.span is not None:
            return sensor_id in self.span.ids
        return any(s.sensor_id == sensor_id for s in self.series)

    def complete(self) -> Frame:
        """The frame with every sensor decoded (itself when it already is)."""
        if self.span is None or self.raw is None:
            return self
        from schemas.frames import decode_binary  # the codec builds on this module

        whole = decode_binary(self.raw)
        # a site's frame at central keeps the id central gives it (the message has the site's)
        if whole.stream_id == self.stream_id:
            return whole
        return replace(whole, stream_id=self.stream_id)

    def equals(self, other: Frame) -> bool:
        a, b = self.complete(), other.complete()
        return (
            a.stream_id == b.stream_id
            and a.seq == b.seq
            and len(a.series) == len(b.series)
            and all(x.equals(y) for x, y in zip(a.series, b.series, strict=True))
        )
