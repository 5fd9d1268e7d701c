"""Raw history: stored frames of a range reduced to dense min/max/mean/count buckets.

Each sample is read once, straight from the decompressed frame body, by a compiled kernel that
adds it to its bucket: no per-frame decoding into objects, no intermediate arrays of every
sample. Regular frames (every sensor on one clock, one dtype, all samples good; the usual case)
are read from their byte-shuffled body; other frames are decoded and read series by series.
Callers reduce parts of a range side by side (the kernels and zstd release the GIL) and
combine their buckets.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

import numba
import numpy as np
import numpy.typing as npt
import zstandard

from schemas.frames import GOOD_QUALITY, Frame, RegularFrame, decode_binary, peek_regular

THREADS: Final = 2
_POOL = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="vertac-history")


@dataclass(frozen=True, slots=True)
class Buckets:
    """Dense buckets: row ``i`` is sensor ``ids[i]``, column ``j`` the bucket starting at
    ``start_ns + j * bucket_ns``. ``min``/``max`` are NaN and ``sum`` 0 where a bucket holds no
    value; ``count`` counts every sample, ``n_values`` the finite ones of good quality, ``bad``
    those of a quality that is not good."""

    ids: list[str]
    start_ns: int
    bucket_ns: int
    min: npt.NDArray[np.float64]
    max: npt.NDArray[np.float64]
    sum: npt.NDArray[np.float64]
    count: npt.NDArray[np.int64]
    n_values: npt.NDArray[np.int64]
    bad: npt.NDArray[np.int64]


@numba.njit(cache=True, nogil=True)
def _put(
    row: int, b: int, n: int, c: int, s: float, mn: float, mx: float,
    lo: Any, hi: Any, total: Any, count: Any, n_values: Any,
) -> None:  # fmt: skip
    """Merge a run of ``n`` samples (``c`` finite: sum ``s``, min ``mn``, max ``mx``) into
    bucket ``b`` of ``row``."""
    count[row, b] += n
    if c:
        if n_values[row, b] == 0:
            lo[row, b] = mn
            hi[row, b] = mx
        else:
            lo[row, b] = min(lo[row, b], mn)
            hi[row, b] = max(hi[row, b], mx)
        n_values[row, b] += c
        total[row, b] += s


@numba.njit(cache=True, nogil=True)
def _add_uniform(
    vals: Any, t0: int, period: int, row: int, start: int, end: int, width: int,
    lo: Any, hi: Any, total: Any, count: Any, n_values: Any,
) -> None:  # fmt: skip
    """Add a series sampled at ``t0 + i * period``: bucket by bucket, each a run of samples."""
    n = vals.shape[0]
    i = 0 if t0 >= start else min(n, (start - t0 + period - 1) // period)
    while i < n:
        t = t0 + i * period
        if t >= end:
            break
        b = (t - start) // width
        stop = min(start + (b + 1) * width, end)
        j = min(n, (stop - t0 + period - 1) // period)  # the first sample at or after stop
        c = 0
        s = 0.0
        mn = np.inf
        mx = -np.inf
        for k in range(i, j):
            x = float(vals[k])
            if np.isfinite(x):
                c += 1
                s += x
                mn = min(mn, x)
                mx = max(mx, x)
        _put(row, b, j - i, c, s, mn, mx, lo, hi, total, count, n_values)
        i = j


@numba.njit(cache=True, nogil=True)
def _add_explicit(
    vals: Any, ts: Any, row: int, start: int, end: int, width: int,
    lo: Any, hi: Any, total: Any, count: Any, n_values: Any,
) -> None:  # fmt: skip
    """Add a series with its own timestamps (in any order)."""
    for i in range(vals.shape[0]):
        t = ts[i]
        if start <= t < end:
            x = float(vals[i])
            ok = np.isfinite(x)
            _put(row, (t - start) // width, 1, 1 if ok else 0, x if ok else 0.0, x, x,
                 lo, hi, total, count, n_values)  # fmt: skip


@numba.njit(cache=True, nogil=True)
def _add_shuffled(
    body: Any, n: int, size: int, src: Any, dst: Any, t0: int, period: int, start: int,
    end: int, width: int, word: Any, vals: Any,
    lo: Any, hi: Any, total: Any, count: Any, n_values: Any,
) -> None:  # fmt: skip
    """Add the series ``src`` of a regular frame's byte-shuffled body to rows ``dst``.
    ``word`` is ``vals`` (n values of the frame's dtype) seen as unsigned integers of the same
    size: each value is put together from its bytes, one from each byte plane."""
    for k in range(src.shape[0]):
        base = src[k] * n * size
        if size == 4:  # the usual float32: spelled out, so that the loop vectorises
            p0, p1, p2, p3 = (
                body[base : base + n],
                body[base + n : base + 2 * n],
                body[base + 2 * n : base + 3 * n],
                body[base + 3 * n : base + 4 * n],
            )
            for i in range(n):
                word[i] = (
                    np.uint32(p0[i])
                    | (np.uint32(p1[i]) << np.uint32(8))
                    | (np.uint32(p2[i]) << np.uint32(16))
                    | (np.uint32(p3[i]) << np.uint32(24))
                )
        else:  # plane after plane, each a contiguous run
            for i in range(n):
                word[i] = 0
            for j in range(size):
                plane = body[base + j * n : base + (j + 1) * n]
                shift = np.uint64(8 * j)
                for i in range(n):
                    word[i] = np.uint64(word[i]) | (np.uint64(plane[i]) << shift)
        _add_uniform(vals, t0, period, dst[k], start, end, width, lo, hi, total, count, n_values)


class _Acc:
    """One thread's buckets."""

    def __init__(self, rows: int, columns: int) -> None:
        self.lo = np.full((rows, columns), np.nan)
        self.hi = np.full((rows, columns), np.nan)
        self.total = np.zeros((rows, columns))
        self.count = np.zeros((rows, columns), dtype=np.int64)
        self.n_values = np.zeros((rows, columns), dtype=np.int64)
        self.bad = np.zeros((rows, columns), dtype=np.int64)

    def arrays(self) -> tuple[Any, ...]:
        return self.lo, self.hi, self.total, self.count, self.n_values


def _decompress(payloads: list[bytes]) -> list[RegularFrame | Frame]:
    d = zstandard.ZstdDecompressor()
    out: list[RegularFrame | Frame] = []
    for payload in payloads:
        raw = d.decompress(payload)
        out.append(peek_regular(raw) or decode_binary(raw))
    return out


def _reduce(
    frames: list[RegularFrame | Frame],
    rows: dict[str, int],
    columns: int,
    start_ns: int,
    end_ns: int,
    bucket_ns: int,
) -> _Acc:
    acc = _Acc(len(rows), columns)
    arrays = acc.arrays()
    plans: dict[tuple[str, ...], tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]] = {}
    scratch: dict[tuple[str, int], tuple[npt.NDArray[Any], npt.NDArray[Any]]] = {}
    for f in frames:
        if isinstance(f, RegularFrame):
            plan = plans.get(f.ids)
            if plan is None:
                pairs = [(i, rows[sid]) for i, sid in enumerate(f.ids) if sid in rows]
                plan = plans[f.ids] = (
                    np.array([p[0] for p in pairs], dtype=np.int64),
                    np.array([p[1] for p in pairs], dtype=np.int64),
                )
            src, dst = plan
            if not len(src) or not f.n:
                continue
            body = np.frombuffer(f.body, dtype=np.uint8)
            if not f.shuffled:  # the plain layout: values are readable in place
                vals = body.view("<" + f.dtype).reshape(len(f.ids), f.n)
                for i, row in zip(src.tolist(), dst.tolist(), strict=True):
                    _add_uniform(vals[i], f.t0_ns, f.period_ns, row, start_ns, end_ns,
                                 bucket_ns, *arrays)  # fmt: skip
                continue
            buf = scratch.get((f.dtype, f.n))
            if buf is None:
                v = np.empty(f.n, dtype="<" + f.dtype)
                buf = scratch[(f.dtype, f.n)] = (v.view(f"<u{v.itemsize}"), v)
            _add_shuffled(body, f.n, np.dtype(f.dtype).itemsize, src, dst, f.t0_ns,
                          f.period_ns, start_ns, end_ns, bucket_ns, buf[0], buf[1],
                          *arrays)  # fmt: skip
        else:
            for s in f.series:
                row = rows.get(s.sensor_id)
                if row is None or not s.n:
                    continue
                vals = np.ascontiguousarray(s.values)
                if s.quality is not None:  # not good: no value, counted as bad
                    good = s.quality >= GOOD_QUALITY
                    if not good.all():
                        vals = np.where(good, vals.astype(np.float64), np.nan)
                        ts = s.timestamps()
                        inside = (ts >= start_ns) & (ts < end_ns) & ~good
                        np.add.at(acc.bad[row], (ts[inside] - start_ns) // bucket_ns, 1)
                if s.timestamps_ns is None:
                    _add_uniform(vals, s.t0_ns, max(s.period_ns, 1), row, start_ns, end_ns,
                                 bucket_ns, *arrays)  # fmt: skip
                else:
                    _add_explicit(vals, np.ascontiguousarray(s.timestamps_ns), row, start_ns,
                                  end_ns, bucket_ns, *arrays)  # fmt: skip
    return acc


def raw_buckets(
    payloads: list[bytes], start_ns: int, end_ns: int, bucket_ns: int, sensors: list[str] | None
) -> Buckets:
    """Samples of ``payloads`` (stored frames) in ``[start_ns, end_ns)`` per sensor (all, or
    those of ``sensors``) and bucket of ``bucket_ns`` counted from ``start_ns``; on the calling
    thread (:func:`combine` joins the buckets of frames reduced apart)."""
    columns = max(1, -(-(end_ns - start_ns) // bucket_ns))
    frames = _decompress(payloads)
    wanted = None if sensors is None else set(sensors)
    rows: dict[str, int] = {}
    seen: set[tuple[str, ...]] = set()
    for f in frames:
        ids = f.ids if isinstance(f, RegularFrame) else tuple(s.sensor_id for s in f.series)
        if ids in seen:
            continue
        seen.add(ids)
        for sid in ids:
            if wanted is None or sid in wanted:
                rows.setdefault(sid, len(rows))
    acc = _reduce(frames, rows, columns, start_ns, end_ns, bucket_ns)
    return Buckets(list(rows), start_ns, bucket_ns, acc.lo, acc.hi, acc.total, acc.count,
                   acc.n_values, acc.bad)  # fmt: skip


def combine(parts: list[Buckets]) -> Buckets:
    """The buckets of several sets of frames of one range and bucket width, as one."""
    first = parts[0]
    ids = list(dict.fromkeys(sid for p in parts for sid in p.ids))
    if all(p.ids == ids for p in parts):
        if len(parts) == 1:
            return first
        lo, hi = np.fmin.reduce([p.min for p in parts]), np.fmax.reduce([p.max for p in parts])
        return Buckets(ids, first.start_ns, first.bucket_ns, lo, hi,
                       np.sum([p.sum for p in parts], axis=0),
                       np.sum([p.count for p in parts], axis=0),
                       np.sum([p.n_values for p in parts], axis=0),
                       np.sum([p.bad for p in parts], axis=0))  # fmt: skip
    acc = _Acc(len(ids), first.count.shape[1])
    row = {sid: i for i, sid in enumerate(ids)}
    for p in parts:
        at = [row[sid] for sid in p.ids]
        acc.lo[at] = np.fmin(acc.lo[at], p.min)
        acc.hi[at] = np.fmax(acc.hi[at], p.max)
        acc.total[at] += p.sum
        acc.count[at] += p.count
        acc.n_values[at] += p.n_values
        acc.bad[at] += p.bad
    return Buckets(ids, first.start_ns, first.bucket_ns, acc.lo, acc.hi, acc.total, acc.count,
                   acc.n_values, acc.bad)  # fmt: skip


async def run(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` on the history threads (as many as cores to share, so that concurrent
    queries queue instead of crowding out the event loop)."""
    return await asyncio.get_running_loop().run_in_executor(_POOL, fn, *args)


def warm_up() -> None:
    """Compile the kernels for the common dtypes (at start, so a first query does not wait)."""
    for code in ("f4", "f8"):
        v = np.zeros(2, dtype="<" + code)
        acc = _Acc(1, 1)
        idx = np.zeros(1, dtype=np.int64)
        _add_uniform(v, 0, 1, 0, 0, 2, 2, *acc.arrays())
        _add_explicit(v, np.zeros(2, dtype=np.int64), 0, 0, 2, 2, *acc.arrays())
        body = np.frombuffer(v.tobytes(), dtype=np.uint8)  # read-only, as a stored body
        w = v.copy()
        _add_shuffled(body, 2, v.itemsize, idx, idx, 0, 1, 0, 2, 2, w.view(f"<u{v.itemsize}"),
                      w, *acc.arrays())  # fmt: skip
