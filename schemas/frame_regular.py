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

import msgspec
import numpy as np
import numpy.typing as npt

from schemas.frame_checks import _DTYPE, _GOOD_IDS, _trusted_series
from schemas.frame_model import (
    _PREAMBLE,
    _SENSOR_ID,
    DTYPES,
    INT64_MAX,
    MAGIC,
    MAGIC_COMPACT,
    MAX_SAMPLES_PER_SERIES,
    Frame,
    Series,
    Span,
)


class _Meta(msgspec.Struct, forbid_unknown_fields=True):
    """One sensor of a header, as the regular path takes it (anything else: the general one)."""

    id: str
    dtype: str
    n: int
    t0: int
    dt: int
    q: bool = False


class _Head(msgspec.Struct, forbid_unknown_fields=True):
    v: int
    stream_id: str
    seq: int
    sensors: list[_Meta]
    sent_ns: int = 0
    layout: str = "plain"


_HEAD = msgspec.msgpack.Decoder(_Head)  # typed in C: no dict per sensor, no type checks in Python


class _CompactHead(msgspec.Struct, forbid_unknown_fields=True):
    """The header of a compact frame (``b"VTF2"``): one clock for every sensor, and the sensor
    table as one msgpack blob, the same bytes in every frame of a stream."""

    v: int
    seq: int
    n: int
    t0: int
    dt: int
    table: bytes
    sent_ns: int = 0
    layout: str = "plain"


class _TableBody(msgspec.Struct, forbid_unknown_fields=True):
    stream_id: str
    ids: list[str]
    dtypes: list[str]


_COMPACT = msgspec.msgpack.Decoder(_CompactHead)
_TABLE = msgspec.msgpack.Decoder(_TableBody)


@dataclass(frozen=True, slots=True)
class SensorTable:
    """A compact frame's sensor table, read and checked once per process."""

    stream_id: str
    ids: tuple[str, ...]
    codes: tuple[str, ...]
    dtype: str  # the one dtype of every sensor, or "" when they differ
    row_bytes: int  # bytes of one sample of every sensor
    index: dict[str, int]  # sensor id -> position


_TABLES: dict[bytes, SensorTable | None] = {}
_TABLES_MAX = 4096  # a plant's streams have a few tables each; a flood of odd ones is not kept


def sensor_table(blob: bytes) -> SensorTable | None:
    """The table ``blob`` holds when it is well-formed (ids valid and unique, known dtypes, as
    many dtypes as ids), else None (the general decoder then says what is wrong)."""
    found = _TABLES.get(blob, False)
    if found is not False:
        return found  # type: ignore[return-value]
    table = _read_table(blob)
    if len(_TABLES) >= _TABLES_MAX:
        _TABLES.clear()
    _TABLES[bytes(blob)] = table
    return table


def _read_table(blob: bytes) -> SensorTable | None:
    try:
        body = _TABLE.decode(blob)
    except msgspec.DecodeError:
        return None
    ids, codes = body.ids, body.dtypes
    if not ids or len(codes) != len(ids) or len(set(ids)) != len(ids):
        return None
    if not all(c in DTYPES for c in codes) or not all(_SENSOR_ID.fullmatch(i) for i in ids):
        return None
    return SensorTable(
        body.stream_id, tuple(ids), tuple(codes), codes[0] if len(set(codes)) == 1 else "",
        sum(_DTYPE[c].itemsize for c in codes), {sid: i for i, sid in enumerate(ids)},
    )  # fmt: skip


def _header_end(data: bytes, magic: bytes) -> int | None:
    """Where the header of a binary frame with ``magic`` ends, or None when ``data`` is not
    one or its header runs past its end."""
    if len(data) < _PREAMBLE.size:
        return None
    found, length = _PREAMBLE.unpack_from(data)
    end = _PREAMBLE.size + length
    return end if found == magic and end <= len(data) else None


def _compact_regular(data: bytes) -> tuple[RegularFrame, SensorTable] | None:
    """A well-formed compact frame as a :class:`RegularFrame`, with its table; else None."""
    compact = _compact_header(data)
    if compact is None:
        return None
    head, table, pos = compact
    regular = RegularFrame(
        table.stream_id, head.seq, table.ids, table.dtype, head.n, head.t0, head.dt,
        head.layout == "shuffled", memoryview(data)[pos:], head.sent_ns,
        () if table.dtype else table.codes,
    )  # fmt: skip
    return regular, table


def _compact_header(data: bytes) -> tuple[_CompactHead, SensorTable, int] | None:
    """A well-formed compact frame's header, its table and where its body starts; None for
    anything else."""
    end = _header_end(data, MAGIC_COMPACT)
    if end is None:
        return None
    try:
        head = _COMPACT.decode(memoryview(data)[_PREAMBLE.size : end])
    except msgspec.DecodeError:
        return None
    n, t0, dt = head.n, head.t0, head.dt
    if (
        head.v != 2 or head.layout not in ("plain", "shuffled")
        or not 0 < n <= MAX_SAMPLES_PER_SERIES or dt <= 0 or t0 < 0
        or t0 + (n - 1) * dt > INT64_MAX or not 0 <= head.seq <= INT64_MAX
        or not -INT64_MAX - 1 <= head.sent_ns <= INT64_MAX
    ):  # fmt: skip
        return None
    table = sensor_table(head.table)
    if table is None or len(data) - end != n * table.row_bytes:
        return None
    return head, table, end


def _typed_header(data: bytes) -> tuple[_Head, int, tuple[int, int, int]] | None:
    """The header of a binary frame when it has exactly the fields and types of a regular one
    (checked in C) and one clock, where the body starts, and the clock (n, t0, dt); None
    otherwise."""
    end = _header_end(data, MAGIC)
    if end is None:
        return None
    try:
        head = _HEAD.decode(memoryview(data)[_PREAMBLE.size : end])
    except msgspec.DecodeError:  # a validation error is one too
        return None
    clock = _clock(head)
    return None if clock is None else (head, end, clock)


def _clock(head: _Head) -> tuple[int, int, int] | None:
    """(n, t0, dt) shared by every sensor of a well-formed regular header, else None."""
    metas = head.sensors
    if not metas or head.v != 1 or head.layout not in ("plain", "shuffled"):
        return None
    first = metas[0]
    n, t0, dt = first.n, first.t0, first.dt
    for m in metas:
        if m.n != n or m.t0 != t0 or m.dt != dt or m.q:
            return None
    if (
        not 0 < n <= MAX_SAMPLES_PER_SERIES or dt <= 0 or t0 < 0
        or t0 + (n - 1) * dt > INT64_MAX or not 0 <= head.seq <= INT64_MAX
        or not -INT64_MAX - 1 <= head.sent_ns <= INT64_MAX
    ):  # fmt: skip
        return None
    return n, t0, dt


def decode_regular(
    data: bytes,
    sensors: Container[str] | None,
    finite: bool,
) -> Frame | None:
    """``data`` decoded when it is a regular frame (module docstring), else None."""
    if data[:4] == MAGIC_COMPACT:
        found = _compact_regular(data)
        if found is None:
            return None
        regular, table = found
        pos = len(data) - len(regular.body)
        return _decoded(data, pos, regular, table.codes, sensors, finite, table.index)
    typed = _typed_header(data)
    if typed is None:
        return None
    head1, pos, (n, t0, dt) = typed
    metas = head1.sensors
    ids = [m.id for m in metas]
    if not _GOOD_IDS.issuperset(ids) or len(set(ids)) != len(ids):
        return None
    codes = tuple(m.dtype for m in metas)
    uniform = all(c == codes[0] for c in codes)
    regular = RegularFrame(
        head1.stream_id, head1.seq, tuple(ids), codes[0] if uniform else "", n, t0, dt,
        head1.layout == "shuffled", memoryview(data)[pos:], head1.sent_ns,
        () if uniform else codes,
    )  # fmt: skip
    return _decoded(data, pos, regular, codes, sensors, finite)


def _decoded(
    data: bytes,
    pos: int,
    regular: RegularFrame,
    codes: tuple[str, ...],
    sensors: Container[str] | None,
    finite: bool,
    index: dict[str, int] | None = None,
) -> Frame | None:
    """The frame ``regular`` describes, its ``sensors`` decoded (all when None). With the
    sensors' positions (``index``), a few sensors asked for cost a few, not a look at all."""
    ids, n = regular.ids, regular.n
    count = len(ids)
    plan = _plan(codes, n)
    if plan is None or pos + plan.size != len(data):
        return None
    wanted: list[int] | None = None
    if sensors is not None and index is not None and isinstance(sensors, (set, frozenset, tuple)):
        wanted = sorted(index[sid] for sid in sensors if sid in index)
        needed = {plan.group_of[i] for i in wanted}
    body = np.frombuffer(data, dtype=np.uint8, count=plan.size, offset=pos)
    shuffled = regular.shuffled
    values: list[Any] = [None] * count
    for g, (dtype, members, gather) in enumerate(plan.groups):
        if not finite and sensors is not None:
            if wanted is not None:
                if g not in needed:
                    continue
            elif not any(ids[i] in sensors for i in members):
                continue  # none of its sensors is asked for, and no value needs checking
        size = dtype.itemsize
        block = body[gather]  # its sensors' bytes, one row each
        if shuffled and size > 1:  # byte planes (byte 0 of every sample, then byte 1, ...)
            block = block.reshape(len(members), size, n).transpose(0, 2, 1).copy()
        matrix = block.view(dtype).reshape(len(members), n)
        if finite and dtype.kind == "f" and not np.isfinite(matrix).all():
            return None  # the general decoder names the sensor and the sample
        matrix.flags.writeable = False  # as the general decoder's arrays over the message
        if wanted is None:
            for row, i in enumerate(members):
                values[i] = matrix[row]
        else:
            for i in wanted:
                if plan.group_of[i] == g:
                    values[i] = matrix[plan.row_of[i]]
    t0, dt = regular.t0_ns, regular.period_ns
    series: list[Series] = (
        [_trusted_series(ids[i], values[i], t0, dt, None, None) for i in wanted]
        if wanted is not None
        else [
            _trusted_series(sid, values[i], t0, dt, None, None)
            for i, sid in enumerate(ids)
            if sensors is None or sid in sensors
        ]
    )
    partial = len(series) < count
    return Frame(
        stream_id=regular.stream_id,
        seq=regular.seq,
        series=tuple(series),
        sent_ns=regular.sent_ns,
        span=Span(count * n, t0, t0 + (n - 1) * dt, ids, shuffled, regular)
        if partial  # decoded in part: its readers (rollups, recordings) look at the body next
        else None,
        raw=data if partial else None,
    )


@dataclass(frozen=True, slots=True)
class _Plan:
    """Where each dtype's sensors lie in a body: per dtype, the sensors (by position) and the
    byte index of their rows."""

    size: int  # bytes of the body
    groups: tuple[tuple[np.dtype[Any], tuple[int, ...], npt.NDArray[np.intp]], ...]
    group_of: tuple[int, ...]  # per sensor: its group
    row_of: tuple[int, ...]  # per sensor: its row in its group's matrix


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
    group_of, row_of = [0] * len(dtypes), [0] * len(dtypes)
    for g, d in enumerate(dict.fromkeys(dtypes)):
        assert d is not None
        members = tuple(i for i, x in enumerate(dtypes) if x == d)
        for row, i in enumerate(members):
            group_of[i], row_of[i] = g, row
        width = n * d.itemsize
        gather = np.array([starts[i] for i in members])[:, None] + np.arange(width)
        groups.append((d, members, gather))
    return _Plan(at, tuple(groups), tuple(group_of), tuple(row_of))


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


def peek_regular(data: bytes, *, one_dtype: bool = True) -> RegularFrame | None:
    """``data`` (a binary frame) as a :class:`RegularFrame`, or None when it is not regular or
    not well-formed (:func:`decode_binary` then decodes it, or says what is wrong). With
    ``one_dtype=False`` the sensors may differ in dtype."""
    if data[:4] == MAGIC_COMPACT:
        found = _compact_regular(data)
        if found is None or (one_dtype and not found[1].dtype):
            return None
        return found[0]
    typed = _typed_header(data)
    if typed is None:
        return None
    head1, pos, clock = typed
    ids = [m.id for m in head1.sensors]
    codes = tuple(m.dtype for m in head1.sensors)
    if not all(c in DTYPES for c in codes) or (one_dtype and len(set(codes)) > 1):
        return None
    if len(set(ids)) != len(ids):
        return None
    if len(data) - pos != clock[0] * sum(_DTYPE[c].itemsize for c in codes):
        return None
    uniform = all(c == codes[0] for c in codes)
    return RegularFrame(
        head1.stream_id, head1.seq, tuple(ids), codes[0] if uniform else "", clock[0],
        clock[1], clock[2], head1.layout == "shuffled", memoryview(data)[pos:],
        head1.sent_ns, () if uniform else codes,
    )  # fmt: skip


def regular_of(frame: Frame) -> RegularFrame | None:
    """The body of a frame decoded in part (:func:`decode_binary` with ``sensors``) as a
    :class:`RegularFrame`, its sensors in any dtypes, without parsing its header again; None
    when it is not regular, or when nothing of it was left undecoded."""
    span = frame.span
    if span is None or frame.raw is None:
        return None
    if isinstance(span.header, RegularFrame):
        return span.header
    return peek_regular(frame.raw, one_dtype=False)
