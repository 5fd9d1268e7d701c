"""The checks of a binary frame's header and arrays as it is decoded: each failure names the
field (:class:`schemas.frame_model.FrameError`)."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt

from schemas.frame_model import (
    _PREAMBLE,
    _SENSOR_ID,
    DTYPES,
    INT64_MAX,
    INT64_MIN,
    MAGIC,
    MAGIC_COMPACT,
    MAX_SAMPLES_PER_SERIES,
    FrameError,
    Series,
)


def _field(mapping: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in mapping:
        raise FrameError(f"{where}{key}", "is missing")
    value = mapping[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise FrameError(f"{where}{key}", f"has the wrong type {type(value).__name__}")
    return value


def _int64(mapping: dict[str, Any], key: str, where: str, *, low: int = INT64_MIN) -> int:
    """An integer header field that must fit a signed 64-bit column (ns timestamps, seq)."""
    value: int = _field(mapping, key, int, where)
    if not low <= value <= INT64_MAX:
        raise FrameError(f"{where}{key}", f"{value} is outside {low}..{INT64_MAX}")
    return value


_DTYPE = {code: np.dtype("<" + code) for code in DTYPES}
_GOOD_IDS: set[str] = set()  # sensor ids already found well-formed (ids repeat frame after frame)
_GOOD_IDS_MAX = 100_000


def _check_sensor_id(sid: str, where: str) -> None:
    if sid in _GOOD_IDS:
        return
    if not _SENSOR_ID.fullmatch(sid):
        raise FrameError(
            f"{where}id",
            f"{sid[:80]!r} is not a sensor id (1-128 characters; no spaces, commas, '=' or "
            "control characters)",
        )
    if len(_GOOD_IDS) < _GOOD_IDS_MAX:
        _GOOD_IDS.add(sid)


def _trusted_series(
    sid: str,
    values: npt.NDArray[Any],
    t0: int,
    dt: int,
    timestamps: npt.NDArray[np.int64] | None,
    quality: npt.NDArray[np.uint8] | None,
) -> Series:
    """A :class:`Series` whose parts :func:`decode_binary` has checked already."""
    s = object.__new__(Series)
    put = object.__setattr__
    put(s, "sensor_id", sid)
    put(s, "values", values)
    put(s, "t0_ns", t0)
    put(s, "period_ns", dt)
    put(s, "timestamps_ns", timestamps)
    put(s, "quality", quality)
    return s


def _sensor_meta(meta: Any, i: int) -> tuple[str, np.dtype[Any], int, int, int, bool]:
    """One sensor's header fields, checked one by one; raises naming the first bad one."""
    where = f"sensors[{i}]."
    if not isinstance(meta, dict):
        raise FrameError(f"sensors[{i}]", "must be a map")
    sid = _field(meta, "id", str, where)
    _check_sensor_id(sid, where)
    code = _field(meta, "dtype", str, where)
    dtype = _DTYPE.get(code)
    if dtype is None:
        raise FrameError(f"{where}dtype", f"{code!r} is not one of {sorted(DTYPES)}")
    n = _field(meta, "n", int, where)
    if not 0 <= n <= MAX_SAMPLES_PER_SERIES:
        raise FrameError(f"{where}n", f"{n} is outside 0..{MAX_SAMPLES_PER_SERIES}")
    t0 = _int64(meta, "t0", where)
    dt = _int64(meta, "dt", where, low=0)
    has_q = meta.get("q", False)
    if not isinstance(has_q, bool):
        raise FrameError(f"{where}q", f"has the wrong type {type(has_q).__name__}")
    return sid, dtype, n, t0, dt, has_q


GOOD_QUALITY = 192  # OPC-UA "good"; below it a sample is uncertain (64..191) or bad (0..63)


def _check_times(where: str, n: int, t0: int, dt: int, timestamps: Any) -> None:
    """Times are ns since 1970 that int64 holds (1970-01-01 .. 2262-04-11), never decreasing."""
    if not n:
        return
    if timestamps is None:
        if t0 < 0 or t0 + (n - 1) * dt > INT64_MAX:
            raise FrameError(
                f"{where}t0",
                f"samples from {t0} every {dt} ns leave 0..{INT64_MAX} (1970-01-01 .. "
                "2262-04-11 in ns)",
            )
        return
    steps = np.diff(timestamps)
    if steps.size and int(steps.min()) < 0:
        k = int(np.argmax(steps < 0)) + 1
        raise FrameError(f"{where}timestamps", f"decrease at sample {k}: times must not go back")
    if int(timestamps[0]) < 0:
        raise FrameError(f"{where}timestamps", "times before 1970-01-01 cannot be stored")


def _nonfinite(raw: memoryview, dtype: np.dtype[Any], n: int, shuffled: bool) -> Any:
    """Indices of the NaN and infinite values of a float series, read from the exponent bits of
    its bytes (no copy, plain or shuffled alike); None when every value is finite."""
    size = dtype.itemsize
    b = np.frombuffer(raw, dtype=np.uint8)
    if shuffled:  # plane k holds byte k of every value (little-endian: the last is the highest)
        hi, nxt = b[(size - 1) * n : size * n], b[(size - 2) * n : (size - 1) * n]
    else:
        hi, nxt = b[size - 1 :: size], b[size - 2 :: size]
    low_mask = 0x80 if size == 4 else 0xF0  # the exponent's bits in the second-highest byte
    bad = ((hi & 0x7F) == 0x7F) & ((nxt & low_mask) == low_mask)
    return np.flatnonzero(bad) if bad.any() else None


def _check_finite(where: str, bad: Any, quality: memoryview | None) -> None:
    """NaN and infinity carry no value: such a sample must be sent with a bad or uncertain
    quality (the edge marks a failed read so), never as a good one."""
    q = np.frombuffer(quality, dtype=np.uint8)[bad] if quality is not None else None
    good = bad if q is None else bad[q >= GOOD_QUALITY]
    if len(good):
        raise FrameError(
            f"{where}values",
            f"sample {int(good[0])} is NaN or infinite with good quality: send such a sample "
            f"with a quality below {GOOD_QUALITY} (bad), or leave it out",
        )


def _check_planes(
    data: bytes, planes: list[tuple[int, int, str, memoryview, np.dtype[Any], int, int]]
) -> None:
    """The finite check of a shuffled frame's float sensors in one pass: a NaN or infinity has
    its highest byte at 0x7F or 0xFF, so only a sensor whose highest byte plane holds one is
    looked at closely (a value of 2^127 or more does too, and passes the close look)."""
    marked = (np.frombuffer(data, dtype=np.uint8) & 0x7F) == 0x7F
    bounds = np.array([b for lo, hi, *_ in planes for b in (lo, hi)], dtype=np.int64)
    counts = np.add.reduceat(np.append(marked, False), bounds)[::2]
    for k in np.flatnonzero(counts).tolist():
        _, _, where, raw, dtype, n, q_at = planes[k]  # q_at: where its qualities are, or -1
        bad = _nonfinite(raw, dtype, n, True)
        if bad is not None:
            _check_finite(where, bad, memoryview(data)[q_at : q_at + n] if q_at >= 0 else None)


def _header(data: bytes) -> tuple[dict[str, Any], int]:
    if len(data) < _PREAMBLE.size:
        raise FrameError("frame", f"only {len(data)} bytes; a binary frame starts with 8")
    magic, header_len = _PREAMBLE.unpack_from(data)
    if magic not in (MAGIC, MAGIC_COMPACT):
        raise FrameError("frame", f"magic bytes {magic!r} are not {MAGIC!r} or {MAGIC_COMPACT!r}")
    end = _PREAMBLE.size + header_len
    if end > len(data):
        raise FrameError("header", "header length runs past the end of the message")
    try:
        header = msgpack.unpackb(data[_PREAMBLE.size : end], strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise FrameError("header", f"is not valid msgpack ({exc})") from exc
    if not isinstance(header, dict):
        raise FrameError("header", "must be a msgpack map")
    return header, end


def _compact_metas(header: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """A compact frame's header (``b"VTF2"``) as the stream id and the per-sensor metadata of
    the ``b"VTF1"`` header it stands for; each failure names the field."""
    n = _field(header, "n", int, "")
    t0 = _int64(header, "t0", "")
    dt = _int64(header, "dt", "", low=1)
    if not 0 < n <= MAX_SAMPLES_PER_SERIES:
        raise FrameError("n", f"{n} is outside 1..{MAX_SAMPLES_PER_SERIES}")
    blob = _field(header, "table", bytes, "")
    try:
        table = msgpack.unpackb(blob, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise FrameError("table", f"is not valid msgpack ({exc})") from exc
    if not isinstance(table, dict):
        raise FrameError("table", "must be a msgpack map")
    stream_id = _field(table, "stream_id", str, "table.")
    ids = _field(table, "ids", list, "table.")
    dtypes = _field(table, "dtypes", list, "table.")
    if len(dtypes) != len(ids):
        raise FrameError("table.dtypes", f"has {len(dtypes)} entries for {len(ids)} ids")
    metas = [
        {"id": sid, "dtype": code, "n": n, "t0": t0, "dt": dt, "q": False}
        for sid, code in zip(ids, dtypes, strict=True)
    ]
    return stream_id, metas
