"""Rollups of samples: every sample of a batch of frames in one set of arrays, grouped by
(stream, sensor) in time order, and reduced per bucket to min, max, sum, counts and the last
value. Ingest writes them with the frames; the history API reduces raw ranges with them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.frames import QUALITY_GOOD, Frame


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


def rollups(samples: Samples, bucket_ns: int) -> Rollups:
    """min, max, sum, counts and the last value per (stream, sensor, bucket of ``bucket_ns``)."""
    bucket = samples.t // bucket_ns
    if not len(bucket):
        e, f = np.zeros(0, dtype=np.int64), np.zeros(0)
        return Rollups([], [], e, e, e, e, f, f, f, f, e)
    change = np.flatnonzero((np.diff(samples.key) != 0) | (np.diff(bucket) != 0)) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [len(bucket)])) - 1
    v = samples.v
    finite = np.isfinite(v)
    n_values = np.add.reduceat(finite.astype(np.int64), starts)
    lo = np.minimum.reduceat(np.where(finite, v, np.inf), starts)
    hi = np.maximum.reduceat(np.where(finite, v, -np.inf), starts)
    none = n_values == 0
    lo[none] = np.nan
    hi[none] = np.nan
    keys = samples.key[starts]
    return Rollups(
        stream_id=[samples.names[k][0] for k in keys.tolist()],
        sensor_id=[samples.names[k][1] for k in keys.tolist()],
        bucket_ns=bucket[starts] * bucket_ns,
        n=np.diff(np.concatenate((starts, [len(bucket)]))),
        n_bad=np.add.reduceat((samples.q != QUALITY_GOOD).astype(np.int64), starts),
        n_values=n_values,
        min=lo,
        max=hi,
        sum=np.add.reduceat(np.where(finite, v, 0.0), starts),
        last=v[ends],
        last_ns=samples.t[ends],
    )
