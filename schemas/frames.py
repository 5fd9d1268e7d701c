"""Sample frames: the in-memory type and its two wire encodings.

A frame carries many samples of one stream, column by column: one :class:`Series` per sensor,
each with its own timestamps (uniform ``t0_ns + i * period_ns`` or an explicit int64 array), so
sensors of different rates travel in one frame. ``seq`` is monotonic per stream.

Binary encoding (``Content-Type: application/vnd.vertac.frame.v1+msgpack``), all little-endian::

    b"VTF1" | uint32 header_len | msgpack header (header_len bytes) | body

The header is a map ``{"v": 1, "stream_id": str, "seq": int, "sent_ns": int, "layout": "plain" |
"shuffled", "sensors": [{"id": str, "dtype": "f4", "n": int, "t0": int, "dt": int, "q": bool}]}``.
The body holds, sensor after sensor: the int64 timestamps when ``dt == 0``, then ``n`` values of
``dtype`` (a numpy type code: f4 f8 i1 i2 i4 i8 u1 u2 u4 u8), then ``n`` uint8 qualities when
``q``. Without ``q`` every sample is good. With ``layout == "shuffled"`` (the storage form)
explicit timestamps are delta-encoded and every array is byte-shuffled (byte 0 of every item,
then byte 1, ...), which makes a generic compressor several times more effective.

VerTac's own publishers (edge, gateway) send the shuffled layout, so ingest stores a frame as it
arrived, without encoding it again; readers take both layouts.

JSON encoding (``Content-Type: application/json``): :class:`schemas.messages.FrameJson`.

Quality codes follow OPC DA: 192 good, 64 uncertain, 0 bad (any value 0-255 is carried).
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

import msgpack
import numpy as np
import zstandard
from pydantic import ValidationError

from schemas.frame_checks import (
    _DTYPE,
    _GOOD_IDS,
    GOOD_QUALITY,
    _check_finite,
    _check_planes,
    _check_sensor_id,
    _check_times,
    _compact_metas,
    _field,
    _header,
    _int64,
    _nonfinite,
    _sensor_meta,
    _trusted_series,
)
from schemas.frame_model import (
    _PREAMBLE,
    CONTENT_TYPE_BINARY,
    CONTENT_TYPE_JSON,
    DTYPES,
    INT64_MAX,
    INT64_MIN,
    MAGIC,
    MAGIC_COMPACT,
    MAX_SAMPLES_PER_SERIES,
    QUALITY_BAD,
    QUALITY_GOOD,
    QUALITY_UNCERTAIN,
    Frame,
    FrameError,
    Series,
    Span,
)
from schemas.frame_regular import RegularFrame, decode_regular, peek_regular, regular_of
from schemas.messages import FrameJson, SeriesJson
from schemas.subjects import HEADER_CONTENT_TYPE, InvalidStreamId, check_stream_id

# the frame's public names, wherever they are defined
__all__ = [
    "CONTENT_TYPE_BINARY",
    "CONTENT_TYPE_JSON",
    "DTYPES",
    "GOOD_QUALITY",
    "INT64_MAX",
    "INT64_MIN",
    "MAGIC",
    "MAGIC_COMPACT",
    "MAX_SAMPLES_PER_SERIES",
    "QUALITY_BAD",
    "QUALITY_GOOD",
    "QUALITY_UNCERTAIN",
    "Frame",
    "FrameError",
    "RegularFrame",
    "Series",
    "Span",
    "decode",
    "decode_binary",
    "decode_json",
    "encode_binary",
    "from_json_model",
    "pack",
    "peek_regular",
    "regular_of",
    "to_json_model",
    "unpack",
]


def _shuffle(raw: bytes, itemsize: int) -> bytes:
    if itemsize == 1:
        return raw
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, itemsize).T.tobytes()


def _unshuffle(raw: bytes | memoryview, itemsize: int) -> bytes:
    if itemsize == 1:
        return bytes(raw)
    return np.frombuffer(raw, dtype=np.uint8).reshape(itemsize, -1).T.tobytes()


def encode_binary(frame: Frame, *, shuffled: bool = False, compact: bool = True) -> bytes:
    """Encode ``frame`` in the binary layout (``shuffled=True`` for the storage form): a
    regular frame (every sensor on one clock, all samples good) as a compact one
    (``b"VTF2"``, its sensor table one blob) unless ``compact`` is off, anything else with a
    header entry per sensor (``b"VTF1"``)."""
    if compact:
        table = _regular_table(frame)
        if table is not None:
            return _encode_compact(frame, table, shuffled)
    sensors: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for s in frame.series:
        code = s.values.dtype.str[1:]
        item = s.values.dtype.itemsize
        # a series with no period (one sample, or none) travels with its timestamp: in the header,
        # dt 0 means "explicit timestamps follow"
        explicit = s.timestamps_ns is not None or s.period_ns <= 0
        sensors.append(
            {
                "id": s.sensor_id,
                "dtype": code,
                "n": s.n,
                "t0": s.first_ns() if explicit else s.t0_ns,
                "dt": 0 if explicit else s.period_ns,
                "q": s.quality is not None,
            }
        )
        if explicit:
            ts = np.ascontiguousarray(s.timestamps(), dtype="<i8")
            if shuffled:
                chunks.append(_shuffle(np.diff(ts, prepend=ts[:1]).tobytes(), 8))
            else:
                chunks.append(ts.tobytes())
        values = np.ascontiguousarray(s.values, dtype=s.values.dtype.newbyteorder("<"))
        chunks.append(_shuffle(values.tobytes(), item) if shuffled else values.tobytes())
        if s.quality is not None:
            chunks.append(np.ascontiguousarray(s.quality, dtype=np.uint8).tobytes())
    header = msgpack.packb(
        {
            "v": 1,
            "stream_id": frame.stream_id,
            "seq": frame.seq,
            "sent_ns": frame.sent_ns,
            "layout": "shuffled" if shuffled else "plain",
            "sensors": sensors,
        }
    )
    return b"".join([_PREAMBLE.pack(MAGIC, len(header)), header, *chunks])


_TABLE_BLOBS: dict[tuple[str, tuple[str, ...], tuple[str, ...]], bytes] = {}


def _regular_table(frame: Frame) -> bytes | None:
    """The msgpack sensor table of ``frame`` when it is regular, else None."""
    series = frame.series
    if not series:
        return None
    s0 = series[0]
    n, t0, dt = s0.n, s0.t0_ns, s0.period_ns
    if n <= 0 or dt <= 0 or t0 < 0:
        return None
    for s in series:
        if s.timestamps_ns is not None or s.quality is not None:
            return None
        if s.n != n or s.t0_ns != t0 or s.period_ns != dt:
            return None
    ids = tuple(s.sensor_id for s in series)
    codes = tuple(s.values.dtype.str[1:] for s in series)
    key = (frame.stream_id, ids, codes)
    blob = _TABLE_BLOBS.get(key)
    if blob is None:
        if not DTYPES.issuperset(codes) or len(set(ids)) != len(ids):
            return None
        blob = msgpack.packb(
            {"stream_id": frame.stream_id, "ids": list(ids), "dtypes": list(codes)}
        )
        if len(_TABLE_BLOBS) >= 4096:
            _TABLE_BLOBS.clear()
        _TABLE_BLOBS[key] = blob
    return blob


def _encode_compact(frame: Frame, table: bytes, shuffled: bool) -> bytes:
    s0 = frame.series[0]
    header = msgpack.packb(
        {
            "v": 2,
            "seq": frame.seq,
            "sent_ns": frame.sent_ns,
            "layout": "shuffled" if shuffled else "plain",
            "n": s0.n,
            "t0": s0.t0_ns,
            "dt": s0.period_ns,
            "table": table,
        }
    )
    chunks = []
    for s in frame.series:
        values = np.ascontiguousarray(s.values, dtype=s.values.dtype.newbyteorder("<"))
        item = values.dtype.itemsize
        chunks.append(_shuffle(values.tobytes(), item) if shuffled else values.tobytes())
    return b"".join([_PREAMBLE.pack(MAGIC_COMPACT, len(header)), header, *chunks])


def decode_binary(
    data: bytes, sensors: Container[str] | None = None, *, finite: bool = False
) -> Frame:
    """Decode a binary frame, raising :class:`FrameError` naming the bad field.

    With ``sensors``, only those sensors' arrays are built (every sensor is checked all the
    same): the frame's ``span`` tells what it holds in all, and :meth:`Frame.complete` decodes
    the rest from ``raw``. With ``finite`` (what is stored), a NaN or infinite value of good
    quality is refused too.
    """
    regular = decode_regular(data, sensors, finite)
    if regular is not None:
        return regular
    header, pos = _header(data)
    compact = data[:4] == MAGIC_COMPACT
    version = 2 if compact else 1
    if header.get("v") != version:
        raise FrameError("v", f"version {header.get('v')!r} is not supported (expected {version})")
    layout = header.get("layout", "plain")
    if layout not in ("plain", "shuffled"):
        raise FrameError("layout", f"{layout!r} is not 'plain' or 'shuffled'")
    shuffled = layout == "shuffled"
    if compact:  # errors below name a sensor by its place in the table, as sensors[i]
        stream_id, metas = _compact_metas(header)
    else:
        stream_id, metas = _field(header, "stream_id", str, ""), _field(header, "sensors", list, "")
    if not metas:
        raise FrameError("sensors", "a frame needs at least one sensor")
    view = memoryview(data)
    series: list[Series] = []
    seen: dict[str, None] = {}  # in order
    total, first, last = 0, INT64_MAX, INT64_MIN
    planes: list[tuple[int, int, str, memoryview, np.dtype[Any], int, int]] = []
    for i, meta in enumerate(metas):
        try:  # the well-formed case in one go; anything else is checked field by field
            sid, dtype, n, t0, dt = (
                meta["id"],
                _DTYPE[meta["dtype"]],
                meta["n"],
                meta["t0"],
                meta["dt"],
            )
            has_q = meta.get("q", False)
            well_formed = (
                type(sid) is str and type(n) is int and type(t0) is int and type(dt) is int
                and type(has_q) is bool and 0 <= n <= MAX_SAMPLES_PER_SERIES
                and INT64_MIN <= t0 <= INT64_MAX and 0 <= dt <= INT64_MAX
            )  # fmt: skip
        except (KeyError, TypeError):
            well_formed = False
        where = f"sensors[{i}]."
        if not well_formed:
            sid, dtype, n, t0, dt, has_q = _sensor_meta(meta, i)
        if sid not in _GOOD_IDS:
            _check_sensor_id(sid, where)
        if sid in seen:
            raise FrameError("sensors", "sensor ids repeat within the frame")
        seen[sid] = None
        need = n * dtype.itemsize + (n * 8 if dt == 0 else 0) + (n if has_q else 0)
        if pos + need > len(data):
            raise FrameError(f"{where}n", f"{n} samples need {need} bytes past the end of the body")
        wanted = sensors is None or sid in sensors
        timestamps = None
        if dt == 0:
            raw = view[pos : pos + n * 8]
            pos += n * 8
            if shuffled:
                timestamps = np.cumsum(np.frombuffer(_unshuffle(raw, 8), dtype="<i8"))
                if n:
                    timestamps = timestamps - timestamps[0] + t0
            else:
                timestamps = np.frombuffer(raw, dtype="<i8")
        if dt == 0 or t0 < 0 or t0 + (n - 1) * dt > INT64_MAX:
            _check_times(where, n, t0, dt, timestamps)
        total += n
        if n:
            a, b = (int(timestamps[0]), int(timestamps[-1])) if timestamps is not None else (
                t0, t0 + (n - 1) * dt)  # fmt: skip
            first, last = min(first, a), max(last, b)
        raw = view[pos : pos + n * dtype.itemsize]
        if wanted:
            values = np.frombuffer(
                _unshuffle(raw, dtype.itemsize) if shuffled else raw, dtype=dtype
            )
        if finite and n and dtype.kind == "f":
            if shuffled:  # its highest byte plane, looked at with all the others at the end
                high = pos + (dtype.itemsize - 1) * n
                q_at = pos + n * dtype.itemsize if has_q else -1
                planes.append((high, high + n, where, raw, dtype, n, q_at))
            else:
                bad = _nonfinite(raw, dtype, n, shuffled)
                if bad is not None:
                    q_at = pos + n * dtype.itemsize
                    _check_finite(where, bad, view[q_at : q_at + n] if has_q else None)
        pos += n * dtype.itemsize
        quality = None
        if has_q:
            if wanted:
                quality = np.frombuffer(view[pos : pos + n], dtype=np.uint8)
            pos += n
        if wanted:
            series.append(_trusted_series(sid, values, t0, dt, timestamps, quality))
    if pos != len(data):
        raise FrameError("frame", f"{len(data) - pos} bytes left over after the last sensor")
    if planes:
        _check_planes(data, planes)
    partial = len(series) < len(metas)
    if not total:  # only empty series: the frame's time is its sensors' t0, as Frame reckons
        first = min(m["t0"] for m in metas)
        last = max(m["t0"] for m in metas)
    return Frame(
        stream_id=stream_id,
        seq=_int64(header, "seq", "", low=0),
        series=tuple(series),
        sent_ns=_int64(header, "sent_ns", "") if "sent_ns" in header else 0,
        span=Span(total, first, last, tuple(seen), shuffled) if partial else None,
        raw=data if partial else None,
    )


def pack(frame: Frame, level: int = 3) -> bytes:
    """The storage form of ``frame``: the shuffled binary layout, zstd-compressed. Used for
    ``live_frames.payload`` and for recorded cycles in the ``vertac_cycles`` object store."""
    return zstandard.ZstdCompressor(level=level).compress(encode_binary(frame, shuffled=True))


def unpack(data: bytes) -> Frame:
    """The frame stored by :func:`pack`."""
    try:
        raw = zstandard.ZstdDecompressor().decompress(data)
    except zstandard.ZstdError as exc:
        raise FrameError("payload", f"is not zstd-compressed ({exc})") from exc
    return decode_binary(raw)


def from_json_model(model: FrameJson) -> Frame:
    """Build a frame from its validated JSON form."""
    series = []
    for s in model.sensors:
        values = np.asarray(s.values, dtype=np.float64)
        ts = None if s.timestamps_ns is None else np.asarray(s.timestamps_ns, dtype=np.int64)
        t0 = s.t0_ns if s.t0_ns is not None else (int(ts[0]) if ts is not None and len(ts) else 0)
        q = None if s.quality is None else np.asarray(s.quality, dtype=np.uint8)
        series.append(Series(s.sensor_id, values, t0, s.period_ns or 0, ts, q))
    return Frame(model.stream_id, model.seq, tuple(series), model.sent_ns)


def to_json_model(frame: Frame) -> FrameJson:
    """The JSON form of ``frame`` (values as float)."""
    return FrameJson(
        stream_id=frame.stream_id,
        seq=frame.seq,
        sent_ns=frame.sent_ns,
        sensors=[
            SeriesJson(
                sensor_id=s.sensor_id,
                values=s.values.astype(np.float64).tolist(),
                t0_ns=s.t0_ns if s.timestamps_ns is None else None,
                period_ns=s.period_ns if s.timestamps_ns is None else None,
                timestamps_ns=None if s.timestamps_ns is None else s.timestamps_ns.tolist(),
                quality=None if s.quality is None else s.quality.tolist(),
            )
            for s in frame.series
        ],
    )


def decode_json(data: bytes, *, finite: bool = False) -> Frame:
    """Decode a JSON frame, raising :class:`FrameError` naming the bad field (with ``finite``,
    also a NaN or infinite value of good quality)."""
    try:
        model = FrameJson.model_validate_json(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "frame"
        raise FrameError(where, err["msg"]) from exc
    frame = from_json_model(model)
    for i, series in enumerate(frame.series):
        where = f"series[{i}]."
        _check_times(where, len(series.values), series.t0_ns, series.period_ns,
                     series.timestamps_ns)  # fmt: skip
        if finite and series.values.dtype.kind == "f":
            bad = np.flatnonzero(~np.isfinite(series.values))
            if len(bad):
                q = series.quality
                _check_finite(where, bad, memoryview(q.tobytes()) if q is not None else None)
    return frame


def decode(
    data: bytes,
    headers: dict[str, str] | None,
    sensors: Container[str] | None = None,
    *,
    finite: bool = False,
) -> Frame:
    """Decode a frame in either encoding, told apart by its Content-Type header (binary frames
    for ``sensors`` only, when given: see :func:`decode_binary`).

    Without the header the magic bytes decide, so a hand-written ``nats pub`` still works.
    """
    content_type = (headers or {}).get(HEADER_CONTENT_TYPE, "")
    if content_type.startswith(CONTENT_TYPE_BINARY):
        frame = decode_binary(data, sensors, finite=finite)
    elif content_type.startswith(CONTENT_TYPE_JSON):
        frame = decode_json(data, finite=finite)
    elif content_type:
        raise FrameError(
            HEADER_CONTENT_TYPE,
            f"{content_type!r} is neither {CONTENT_TYPE_BINARY!r} nor {CONTENT_TYPE_JSON!r}",
        )
    elif data[:4] in (MAGIC, MAGIC_COMPACT):
        frame = decode_binary(data, sensors, finite=finite)
    else:
        frame = decode_json(data, finite=finite)
    try:  # a frame on the wire names its publisher's own stream (a site's id is central's)
        check_stream_id(frame.stream_id)
    except InvalidStreamId as exc:
        raise FrameError("stream_id", str(exc)) from exc
    return frame
