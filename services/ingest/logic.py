"""Pure logic of ingest: the storage form of a frame and its InfluxDB line protocol (its
rollups: ``services.common.rollups``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zstandard

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
    came, with their own timestamps and qualities (one point when they are the same sample or
    the sensor has one; none when it has none). Same stream, sequence number and send time, so
    it is stored and deduplicated like the frame it stands for; peaks survive, shapes within a
    frame do not."""
    whole = frame.complete()
    series = []
    for s in whole.series:
        if s.n == 0:
            series.append(s)
            continue
        picks = np.unique(np.array([np.argmin(s.values), np.argmax(s.values)]))  # sorted
        series.append(
            Series(
                s.sensor_id,
                s.values[picks],
                int(s.timestamps()[picks[0]]),
                0,
                timestamps_ns=s.timestamps()[picks],
                quality=None if s.quality is None else s.quality[picks],
            )
        )
    return Frame(whole.stream_id, whole.seq, tuple(series), sent_ns=whole.sent_ns)
