"""Rollups of frames: per frame, sensor and bucket, min, max, sum, counts and the last value
(ingest writes them with the frames, and SQL folds them into its tables); and every sample of a
batch of frames in one set of arrays (``vertac export``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from schemas.frames import QUALITY_GOOD, Frame, RegularFrame, regular_of


@dataclass(frozen=True, slots=True)
class Rollups:
    """Column-wise rollup rows: one per (stream, sensor, bucket) of a batch of frames."""

    stream_id: list[str]
    sensor_id: list[str]
    bucket_ns: npt.NDArray[np.int64]
    n: npt.NDArray[np.int64]
    n_bad: npt.NDArray[np.int64]
    n_values: npt.NDArray[np.int64]
    min: npt.NDArray[np.float64]  # NaN where the bucket holds no finite value
    max: npt.NDArray[np.float64]
    sum: npt.NDArray[np.float64]
    last: npt.NDArray[np.float64]
    last_ns: npt.NDArray[np.int64]
    frame: npt.NDArray[np.int64]  # index of the row's frame in the batch

    def __len__(self) -> int:
        return len(self.bucket_ns)


@dataclass(frozen=True, slots=True)
class Samples:
    """Every sample of a batch of frames, sorted by (stream and sensor, time)."""

    names: list[tuple[str, str]]  # key -> (stream_id, sensor_id)
    key: npt.NDArray[np.int64]
    t: npt.NDArray[np.int64]
    v: npt.NDArray[np.float64]
    q: npt.NDArray[np.uint8]  # quality


def samples_of(frames: list[Frame]) -> Samples:
    """All samples of ``frames`` in one set of arrays, grouped by (stream, sensor) and in time
    order within each (numpy; a sort only for a sensor whose frames came out of time order)."""
    index: dict[tuple[str, str], int] = {}
    parts: list[tuple[list[Any], list[Any], list[Any]]] = []
    for f in frames:
        for s in f.series:
            k = index.setdefault((f.stream_id, s.sensor_id), len(index))
            if k == len(parts):
                parts.append(([], [], []))
            parts[k][0].append(s.timestamps())
            parts[k][1].append(np.asarray(s.values, dtype=np.float64))
            parts[k][2].append(s.qualities())
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return Samples([], empty, empty, np.zeros(0), np.zeros(0, dtype=np.uint8))
    keys, ts, vs, qs = [], [], [], []
    for k, (tl, vl, ql) in enumerate(parts):
        t, v, q = np.concatenate(tl), np.concatenate(vl), np.concatenate(ql)
        if len(t) > 1 and np.any(t[1:] < t[:-1]):
            order = np.argsort(t, kind="stable")
            t, v, q = t[order], v[order], q[order]
        keys.append(np.full(len(t), k, dtype=np.int64))
        ts.append(t)
        vs.append(v)
        qs.append(q)
    return Samples(
        list(index), np.concatenate(keys), np.concatenate(ts), np.concatenate(vs),
        np.concatenate(qs),
    )  # fmt: skip


# -- rollups straight from frames ------------------------------------------------------------
#
# Most frames are regular: every sensor sampled on one clock (same first timestamp, period and
# count), one dtype. Such frames of one stream and sensor set stack into one matrix, sensors by
# samples, so that a handful of numpy reductions along its rows answer every sensor at once.
# Other frames (explicit timestamps, sensors of different rates) are reduced series by series.


@dataclass(frozen=True, slots=True)
class Block:
    """Regular frames of one stream and sensor set: ``values[r]`` is sensor ``ids[r]`` over
    every frame in turn, ``t`` the shared timestamps and ``frame`` the frame index of each."""

    stream_id: str
    ids: tuple[str, ...]
    values: npt.NDArray[Any]  # (sensors, samples)
    quality: npt.NDArray[np.uint8] | None  # the same shape, or None when all are good
    t: npt.NDArray[np.int64]
    frame: npt.NDArray[np.int64]


def _regular(f: Frame) -> tuple[tuple[Any, ...] | None, RegularFrame | None]:
    """The stacking key of a regular frame (None for another) and, for a frame decoded in part,
    its body as the message has it (read once: its header is not parsed again)."""
    if f.span is not None and f.raw is not None:  # decoded in part: the message says
        r = regular_of(f)
        return (None if r is None else (f.stream_id, r.ids, r.n, r.period_ns, False)), r
    first = f.series[0]
    if first.timestamps_ns is not None or first.period_ns <= 0:
        return None, None
    has_q = first.quality is not None
    for s in f.series:
        if (
            s.timestamps_ns is not None
            or s.t0_ns != first.t0_ns
            or s.period_ns != first.period_ns
            or s.n != first.n
            or (s.quality is not None) != has_q
        ):
            return None, None
    ids = tuple(s.sensor_id for s in f.series)
    # sensors of other dtypes stack into their common one (a u1 input beside f4 values: f4)
    return (f.stream_id, ids, first.n, first.period_ns, has_q), None


def _matrix(f: Frame, regular: RegularFrame | None) -> npt.NDArray[Any]:
    """The values of a regular frame, sensors by samples."""
    if regular is not None:
        return regular.matrix()
    return np.stack([s.values for s in f.series])


def block(
    stream_id: str,
    ids: tuple[str, ...],
    values: npt.NDArray[Any],
    quality: npt.NDArray[np.uint8] | None,
    t0_ns: npt.NDArray[np.int64],
    period_ns: int,
    frame: npt.NDArray[np.int64],
) -> Block:
    """A block from ``values`` of shape (frames, sensors, samples) and each frame's first
    timestamp."""
    n_frames, n_sensors, n = values.shape
    t = (t0_ns[:, None] + np.arange(n, dtype=np.int64) * period_ns).ravel()

    def rows(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return np.ascontiguousarray(a.transpose(1, 0, 2)).reshape(n_sensors, n_frames * n)

    q = None if quality is None else rows(quality)
    return Block(stream_id, ids, rows(values), q, t, np.repeat(frame, n))


def _empty() -> Rollups:
    e, f = np.zeros(0, dtype=np.int64), np.zeros(0)
    return Rollups([], [], e, e, e, e, f, f, f, f, e, e)


def _reduce(
    v: npt.NDArray[Any],
    q: npt.NDArray[np.uint8] | None,
    t: npt.NDArray[np.int64],
    seg: npt.NDArray[np.int64],
    bucket_ns: int,
    origin_ns: int,
) -> tuple[npt.NDArray[np.int64], dict[str, npt.NDArray[Any]]]:
    """Reduce every row of ``v`` (rows x samples, samples in time order within each run of
    ``seg``) per run of equal (``seg``, bucket); returns the run starts and the row-major
    columns."""
    b = (t - origin_ns) // bucket_ns
    m = len(t)
    change = np.flatnonzero((seg[1:] != seg[:-1]) | (b[1:] != b[:-1])) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [m])) - 1
    n = np.diff(np.concatenate((starts, [m])))
    rows = v.shape[0]
    # a value is a finite sample of good quality; the others are counted, not reduced
    valid = None if q is None or bool((q == QUALITY_GOOD).all()) else q == QUALITY_GOOD
    if v.dtype.kind == "f" and not bool(np.isfinite(v).all()):
        valid = np.isfinite(v) if valid is None else valid & np.isfinite(v)
    if valid is None:
        lo = np.minimum.reduceat(v, starts, axis=1).astype(np.float64)
        hi = np.maximum.reduceat(v, starts, axis=1).astype(np.float64)
        total = np.add.reduceat(v, starts, axis=1, dtype=np.float64)
        n_values = np.broadcast_to(n, (rows, len(n)))
    else:
        finite = valid
        n_values = np.add.reduceat(finite, starts, axis=1, dtype=np.int64)
        lo = np.minimum.reduceat(np.where(finite, v, np.inf), starts, axis=1).astype(np.float64)
        hi = np.maximum.reduceat(np.where(finite, v, -np.inf), starts, axis=1).astype(np.float64)
        total = np.add.reduceat(np.where(finite, v, 0), starts, axis=1, dtype=np.float64)
        lo[n_values == 0] = np.nan
        hi[n_values == 0] = np.nan
    if q is None:
        n_bad = np.zeros((rows, len(n)), dtype=np.int64)
    else:
        n_bad = np.add.reduceat(q != QUALITY_GOOD, starts, axis=1, dtype=np.int64)
    cols = {
        "bucket_ns": np.tile(b[starts] * bucket_ns + origin_ns, rows),
        "n": np.tile(n, rows),
        "n_bad": n_bad.ravel(),
        "n_values": np.asarray(n_values, dtype=np.int64).ravel(),
        "min": lo.ravel(),
        "max": hi.ravel(),
        "sum": total.ravel(),
        "last": v[:, ends].astype(np.float64).ravel(),
        "last_ns": np.tile(t[ends], rows),
    }
    return starts, cols


def block_rollups(b: Block, bucket_ns: int, origin_ns: int = 0) -> Rollups:
    """Rollups of a block per (frame, sensor, bucket)."""
    if not len(b.t):
        return _empty()
    starts, cols = _reduce(b.values, b.quality, b.t, b.frame, bucket_ns, origin_ns)
    runs = len(starts)
    return Rollups(
        stream_id=[b.stream_id] * (runs * len(b.ids)),
        sensor_id=[sid for sid in b.ids for _ in range(runs)],
        frame=np.tile(b.frame[starts], len(b.ids)),
        **cols,
    )


def frame_rollups(frames: Sequence[Frame], bucket_ns: int, origin_ns: int = 0) -> Rollups:
    """Rollups of ``frames`` per (frame, sensor, bucket of ``bucket_ns`` counted from
    ``origin_ns``); ``frame`` is each row's index in ``frames``."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    bodies: dict[int, RegularFrame | None] = {}
    other: list[int] = []
    for i, f in enumerate(frames):
        key, bodies[i] = _regular(f)
        if key is None:
            other.append(i)
        else:
            groups.setdefault(key, []).append(i)
    parts = []
    for (stream_id, ids, _, period, has_q), members in groups.items():
        fs = [frames[i] for i in members]
        values = np.stack([_matrix(frames[i], bodies[i]) for i in members])
        quality = None
        if has_q:
            quality = np.stack([np.stack([cast(Any, s.quality) for s in f.series]) for f in fs])
        t0 = np.array([f.first_ns() for f in fs], dtype=np.int64)
        blk = block(stream_id, ids, values, quality, t0, period, np.array(members))
        parts.append(block_rollups(blk, bucket_ns, origin_ns))
    if other:
        r = _series_rollups([frames[i].complete() for i in other], bucket_ns, origin_ns)
        parts.append(replace(r, frame=np.array(other, dtype=np.int64)[r.frame]))
    return concat(parts)


def _series_rollups(frames: Sequence[Frame], bucket_ns: int, origin_ns: int) -> Rollups:
    """Rollups of irregular frames, one run of samples per series."""
    streams: list[str] = []
    sensors: list[str] = []
    owners: list[int] = []
    ts, vs, qs, segs = [], [], [], []
    for index, f in enumerate(frames):
        for s in f.series:
            if not s.n:
                continue
            t, v, q = s.timestamps(), np.asarray(s.values, dtype=np.float64), s.qualities()
            if len(t) > 1 and np.any(t[1:] < t[:-1]):
                order = np.argsort(t, kind="stable")
                t, v, q = t[order], v[order], q[order]
            segs.append(np.full(len(t), len(streams), dtype=np.int64))
            streams.append(f.stream_id)
            sensors.append(s.sensor_id)
            owners.append(index)
            ts.append(t)
            vs.append(v)
            qs.append(q)
    if not streams:
        return _empty()
    seg = np.concatenate(segs)
    starts, cols = _reduce(
        np.concatenate(vs)[None, :], np.concatenate(qs)[None, :], np.concatenate(ts), seg,
        bucket_ns, origin_ns,
    )  # fmt: skip
    owner = seg[starts].tolist()
    return Rollups(
        stream_id=[streams[k] for k in owner],
        sensor_id=[sensors[k] for k in owner],
        frame=np.array([owners[k] for k in owner], dtype=np.int64),
        **cols,
    )


def concat(parts: Sequence[Rollups]) -> Rollups:
    """One set of rows from several."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return _empty()
    if len(parts) == 1:
        return parts[0]
    arrays = {
        name: np.concatenate([getattr(p, name) for p in parts])
        for name in ("bucket_ns", "n", "n_bad", "n_values", "min", "max", "sum", "last",
                     "last_ns", "frame")
    }  # fmt: skip
    return Rollups(
        stream_id=[x for p in parts for x in p.stream_id],
        sensor_id=[x for p in parts for x in p.sensor_id],
        **arrays,
    )
