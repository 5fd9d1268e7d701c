"""Pure logic of ingest: the storage form of a frame and its InfluxDB line protocol (its
rollups: ``services.common.rollups``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zstandard

from schemas.frame_regular import regular_of
from schemas.frames import Frame, Series, encode_binary, unpack

MEASUREMENT = "sensor_readings"


@dataclass(frozen=True, slots=True)
class FrameRow:
    """One row of ``live_frames``."""

    stream_id: str
    seq: int
    t_first_ns: int
    t_last_ns: int
    n_samples: int
    n_sensors: int
    payload: bytes


def to_row(frame: Frame, compressor: zstandard.ZstdCompressor) -> FrameRow:
    """The storage row of ``frame``: byte-shuffled binary layout, zstd-compressed; a frame that
    arrived in that layout is stored as it arrived, encoded by nobody again."""
    as_sent = frame.raw if frame.span is not None and frame.span.shuffled else None
    body = as_sent if as_sent is not None else encode_binary(frame.complete(), shuffled=True)
    return FrameRow(
        stream_id=frame.stream_id,
        seq=frame.seq,
        t_first_ns=frame.first_ns(),
        t_last_ns=frame.last_ns(),
        n_samples=frame.n_samples,
        n_sensors=frame.n_sensors,
        payload=compressor.compress(body),
    )


def from_payload(payload: bytes) -> Frame:
    """The frame stored in a ``live_frames.payload``."""
    return unpack(payload)


def _escape_tag(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def influx_lines(
    frame: Frame, now_ns: int, *, cycle_id: str | None = None, dataset_id: str | None = None
) -> bytes:
    """Line protocol for ``sensor_readings``, one line per sample, built with numpy string ops.

    Tags: stream_id, sensor_name, and cycle_id/dataset_id when known. Fields: value, quality,
    latency_ms (ingest time minus sample time).
    """
    tags = f"stream_id={_escape_tag(frame.stream_id)}"
    if cycle_id:
        tags += f",cycle_id={_escape_tag(cycle_id)}"
    if dataset_id:
        tags += f",dataset_id={_escape_tag(dataset_id)}"
    parts: list[np.ndarray] = []
    for s in frame.complete().series:
        if not s.n:
            continue
        # NaN and infinity have no line-protocol form; PostgreSQL keeps them.
        finite = np.isfinite(s.values) if s.values.dtype.kind == "f" else slice(None)
        ts = s.timestamps()[finite]
        values = s.values[finite]
        prefix = f"{MEASUREMENT},{tags},sensor_name={_escape_tag(s.sensor_id)} value="
        add = np.strings.add
        line = add(prefix, values.astype(str))
        line = add(add(line, ",quality="), s.qualities()[finite].astype(str))
        line = add(add(line, "i,latency_ms="), np.round((now_ns - ts) / 1e6, 3).astype(str))
        parts.append(add(add(line, " "), ts.astype(str)))
    if not parts:
        return b""
    return "\n".join(np.concatenate(parts).tolist()).encode()


def digest(frame: Frame) -> Frame:
    """The digest of ``frame``: per sensor its lowest and its highest sample, in the order they
    came. Same stream, sequence number and send time, so it is stored and deduplicated like the
    frame it stands for; peaks survive, shapes within a frame do not.

    A regular frame (every sensor on one clock, all good: what edges send) gives a regular
    digest, two samples per sensor stamped at the frame's start and middle, reduced as one
    matrix per dtype and sent compact. In another, each sensor on a clock of its own gets its
    two on that clock, each with explicit timestamps keeps its extremes' own times; qualities
    go with their samples, and a sensor of one sample or none is kept as it is."""
    regular = regular_of(frame)
    if regular is not None and regular.n > 0:
        half = max(regular.n * regular.period_ns // 2, 1)
        ids = iter(regular.ids)
        series = []
        for run in regular.runs():  # sensors by samples, one dtype
            lo, hi = run.argmin(axis=1), run.argmax(axis=1)
            picks = np.stack([np.minimum(lo, hi), np.maximum(lo, hi)], axis=1)
            two = np.take_along_axis(run, picks, axis=1)
            series += [Series(next(ids), row, regular.t0_ns, half) for row in two]
        return Frame(frame.stream_id, frame.seq, tuple(series), sent_ns=regular.sent_ns)
    whole = frame.complete()
    return Frame(whole.stream_id, whole.seq, tuple(map(_extremes, whole.series)),
                 sent_ns=whole.sent_ns)  # fmt: skip


def _extremes(s: Series) -> Series:
    """One sensor's lowest and highest sample in the order they came: on its own clock (the
    start and middle of its span) when it has one, at their own times when it has none."""
    values = s.values
    if len(values) <= 1:
        return s
    lo, hi = int(values.argmin()), int(values.argmax())
    picks = [lo, hi] if lo <= hi else [hi, lo]
    quality = None if s.quality is None else s.quality[picks]
    if s.timestamps_ns is None:
        half = max(len(values) * s.period_ns // 2, 1)
        return Series(s.sensor_id, values[picks], s.t0_ns, half, quality=quality)
    return Series(s.sensor_id, values[picks], int(s.timestamps_ns[picks[0]]), 0,
                  timestamps_ns=s.timestamps_ns[picks], quality=quality)  # fmt: skip
