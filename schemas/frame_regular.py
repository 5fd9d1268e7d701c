"""The common frame decoded in one go: every sensor on one clock (the same ``n``, ``t0`` and
``dt``), no qualities, no explicit timestamps, ids seen before. Its body is then one matrix per
dtype, sensors x samples: gathered, unshuffled, checked for NaN and infinity and cut into series
with a handful of numpy calls instead of a dozen per sensor. Anything else, or anything wrong,
is left to the general decoder, which checks field by field and says what is wrong; for the
frames taken here both give the same frame."""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.frame_checks import _DTYPE, _GOOD_IDS, _header, _trusted_series
from schemas.frame_model import (
    DTYPES,
    INT64_MAX,
    INT64_MIN,
    MAX_SAMPLES_PER_SERIES,
    Frame,
    FrameError,
    Series,
    Span,
)


def decode_regular(
    data: bytes,
    header: dict[str, Any],
    pos: int,
    sensors: Container[str] | None,
    finite: bool,
) -> Frame | None:
    """The frame whose msgpack ``header`` ends at ``pos`` when it is a regular one (module
    docstring), else None."""
    try:
        if header["v"] != 1:
            return None
        layout = header.get("layout", "plain")
        metas = header["sensors"]
        stream_id, seq = header["stream_id"], header["seq"]
        sent_ns = header.get("sent_ns", 0)
        first = metas[0]
        n, t0, dt = first["n"], first["t0"], first["dt"]
        ids, codes = [], []
        for m in metas:
            mn, mt0, mdt = m["n"], m["t0"], m["dt"]
            if (
                mn != n or mt0 != t0 or mdt != dt
                or type(mn) is not int or type(mt0) is not int or type(mdt) is not int
                or m.get("q", False) is not False or len(m) > 6
            ):  # fmt: skip
                return None
            ids.append(m["id"])
            codes.append(m["dtype"])
    except (KeyError, TypeError, IndexError):
        return None
    if (
        layout not in ("plain", "shuffled")
        or type(n) is not int or type(t0) is not int or type(dt) is not int
        or type(stream_id) is not str or type(seq) is not int or type(sent_ns) is not int
        or not 0 < n <= MAX_SAMPLES_PER_SERIES or dt <= 0 or t0 < 0
        or t0 + (n - 1) * dt > INT64_MAX or not 0 <= seq <= INT64_MAX
        or not -INT64_MAX - 1 <= sent_ns <= INT64_MAX
    ):  # fmt: skip
        return None
    count = len(ids)
    if not all(type(sid) is str and sid in _GOOD_IDS for sid in ids) or len(set(ids)) != count:
        return None
    plan = _plan(tuple(codes), n)
    if plan is None or pos + plan.size != len(data):
        return None
    body = np.frombuffer(data, dtype=np.uint8, count=plan.size, offset=pos)
    shuffled = layout == "shuffled"
    values: list[Any] = [None] * count
    for dtype, members, gather in plan.groups:
        size = dtype.itemsize
        block = body[gather]  # its sensors' bytes, one row each
        if shuffled and size > 1:  # byte planes (byte 0 of every sample, then byte 1, ...)
            block = block.reshape(len(members), size, n).transpose(0, 2, 1).copy()
        matrix = block.view(dtype).reshape(len(members), n)
        if finite and dtype.kind == "f" and not np.isfinite(matrix).all():
            return None  # the general decoder names the sensor and the sample
        matrix.flags.writeable = False  # as the general decoder's arrays over the message
        for row, i in enumerate(members):
            values[i] = matrix[row]
    series: list[Series] = [
        _trusted_series(sid, values[i], t0, dt, None, None)
        for i, sid in enumerate(ids)
        if sensors is None or sid in sensors
    ]
    partial = len(series) < count
    return Frame(
        stream_id=stream_id,
        seq=seq,
        series=tuple(series),
        sent_ns=sent_ns,
        span=Span(count * n, t0, t0 + (n - 1) * dt, tuple(ids), shuffled) if partial else None,
        raw=data if partial else None,
    )


@dataclass(frozen=True, slots=True)
class _Plan:
    """Where each dtype's sensors lie in a body: per dtype, the sensors (by position) and the
    byte index of their rows."""

    size: int  # bytes of the body
    groups: tuple[tuple[np.dtype[Any], tuple[int, ...], npt.NDArray[np.intp]], ...]


_PLANS: dict[tuple[tuple[str, ...], int], _Plan | None] = {}
_PLANS_MAX = 4096  # frames of a plant come in a few layouts; a flood of odd ones is not kept


def _plan(codes: tuple[str, ...], n: int) -> _Plan | None:
    key = (codes, n)
    found = _PLANS.get(key, False)
    if found is not False:
        return found  # type: ignore[return-value]
    plan = _make_plan(codes, n)
    if len(_PLANS) >= _PLANS_MAX:
        _PLANS.clear()
    _PLANS[key] = plan
    return plan


def _make_plan(codes: tuple[str, ...], n: int) -> _Plan | None:
    dtypes = [_DTYPE.get(c) if type(c) is str else None for c in codes]
    if any(d is None for d in dtypes):
        return None
    starts, at = [], 0
    for d in dtypes:
        assert d is not None
        starts.append(at)
        at += n * d.itemsize
    groups = []
    for d in dict.fromkeys(dtypes):
        assert d is not None
        members = tuple(i for i, x in enumerate(dtypes) if x == d)
        width = n * d.itemsize
        gather = np.array([starts[i] for i in members])[:, None] + np.arange(width)
        groups.append((d, members, gather))
    return _Plan(at, tuple(groups))


@dataclass(frozen=True, slots=True)
class RegularFrame:
    """The header of a regular binary frame — every sensor on one clock (same first timestamp,
    period and count), all samples good — and its body, the values sensor after sensor.
    Readers that reduce many frames take such bodies as matrices without decoding sensor by
    sensor. ``dtype`` is the one dtype of every sensor, or "" when they differ (``dtypes``)."""

    stream_id: str
    seq: int
    ids: tuple[str, ...]
    dtype: str
    n: int
    t0_ns: int
    period_ns: int
    shuffled: bool
    body: memoryview
    sent_ns: int = 0
    dtypes: tuple[str, ...] = ()

    def runs(self) -> list[npt.NDArray[Any]]:
        """The values in their own dtypes: one matrix (sensors by samples) per run of sensors
        of one dtype, in sensor order."""
        k, n = len(self.ids), self.n
        body = np.frombuffer(self.body, dtype=np.uint8)
        out = []
        row = pos = 0
        codes = self.dtypes or (self.dtype,) * k
        while row < k:
            code = codes[row]
            run = 1
            while row + run < k and codes[row + run] == code:
                run += 1
            size = _DTYPE[code].itemsize
            chunk = body[pos : pos + run * n * size]
            if self.shuffled:
                chunk = np.ascontiguousarray(chunk.reshape(run, size, n).transpose(0, 2, 1))
            out.append(chunk.view(_DTYPE[code]).reshape(run, n))
            row += run
            pos += run * n * size
        return out

    def rows(self) -> list[npt.NDArray[Any]]:
        """Each sensor's values in its own dtype."""
        return [row for run in self.runs() for row in run]

    def matrix(self) -> npt.NDArray[np.float64]:
        """The values as float64, sensors by samples."""
        runs = self.runs()
        if len(runs) == 1:
            return runs[0].astype(np.float64)
        return np.concatenate(runs).astype(np.float64)


# the regular frames decoded in part last, by their message: a reader of the body (rollups,
# recordings) finds the header parsed already; bounded, as a flood of frames must not grow it
_PEEKED: dict[bytes, RegularFrame] = {}
_PEEKED_MAX = 4096


def _remember(data: bytes, header: dict[str, Any], pos: int) -> None:
    """Keep the :class:`RegularFrame` of ``data``, whose header :func:`decode_regular` took."""
    metas = header["sensors"]
    first = metas[0]
    codes = tuple(m["dtype"] for m in metas)
    uniform = len(set(codes)) == 1
    if len(_PEEKED) >= _PEEKED_MAX:
        _PEEKED.clear()
    _PEEKED[data] = RegularFrame(
        header["stream_id"], header["seq"], tuple(m["id"] for m in metas),
        codes[0] if uniform else "", first["n"], first["t0"], first["dt"],
        header.get("layout", "plain") == "shuffled", memoryview(data)[pos:],
        header.get("sent_ns", 0), () if uniform else codes,
    )  # fmt: skip


def peek_regular(data: bytes, *, one_dtype: bool = True) -> RegularFrame | None:
    """``data`` (a binary frame) as a :class:`RegularFrame`, or None when it is not regular or
    not well-formed (:func:`decode_binary` then decodes it, or says what is wrong). With
    ``one_dtype=False`` the sensors may differ in dtype."""
    known = _PEEKED.get(data) if type(data) is bytes else None
    if known is not None and (not one_dtype or not known.dtypes):
        return known
    try:
        header, pos = _header(data)
    except FrameError:
        return None
    sensors = header.get("sensors")
    stream_id, seq = header.get("stream_id"), header.get("seq")
    layout = header.get("layout", "plain")
    if (
        header.get("v") != 1
        or layout not in ("plain", "shuffled")
        or not isinstance(sensors, list)
        or not sensors
        or not isinstance(stream_id, str)
        or not isinstance(seq, int)
        or not all(isinstance(m, dict) for m in sensors)
    ):
        return None
    first = sensors[0]
    clock = (first.get("n"), first.get("t0"), first.get("dt"))
    n, t0, dt = clock
    if (
        not isinstance(n, int)
        or not isinstance(t0, int)
        or not isinstance(dt, int)
        or dt <= 0
        or not 0 <= n <= MAX_SAMPLES_PER_SERIES
        or not INT64_MIN <= t0 <= INT64_MAX
    ):
        return None
    ids, codes = [], []
    for m in sensors:
        if (m.get("n"), m.get("t0"), m.get("dt")) != clock or m.get("q", False):
            return None
        ids.append(m.get("id"))
        codes.append(m.get("dtype"))
    if not all(c in DTYPES for c in codes) or (one_dtype and len(set(codes)) > 1):
        return None
    if not all(isinstance(i, str) for i in ids) or len(set(ids)) != len(ids):
        return None
    if len(data) - pos != n * sum(_DTYPE[c].itemsize for c in codes):
        return None
    sent_ns = header.get("sent_ns", 0)
    uniform = len(set(codes)) == 1
    return RegularFrame(
        stream_id, seq, tuple(ids), codes[0] if uniform else "", n, t0, dt,
        layout == "shuffled", memoryview(data)[pos:],
        sent_ns if isinstance(sent_ns, int) else 0, () if uniform else tuple(codes),
    )  # fmt: skip
