"""Banded Dynamic Time Warping, numerically the same as ``tslearn.metrics.dtw`` with a Sakoe-Chiba
band, but visiting only the cells inside the band (tslearn visits and allocates every cell).

Distance: square root of the smallest sum of squared differences along a warping path whose cells
satisfy ``|i - j| <= radius`` (series of equal length, as after resampling to a common base).
Compiled with numba; call :func:`warm_up` at service start so the first cycle does not stall.
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt

_INF = np.inf


@numba.njit(cache=True, nogil=True)
def _banded(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], radius: int, want_path: bool
) -> tuple[float, npt.NDArray[np.uint8]]:
    """Cumulative cost with two rolling rows of the band; with ``want_path`` also the step taken
    into every cell (0 diagonal, 1 from above, 2 from the left), chosen with tslearn's priority."""
    n = x.shape[0]
    width = 2 * radius + 1
    prev = np.full(width + 1, _INF)  # one spare cell keeps k + 1 in range
    row = np.full(width + 1, _INF)
    steps = np.zeros((n if want_path else 1, width), dtype=np.uint8)
    run = 0.0
    for j in range(min(n - 1, radius) + 1):  # first row: only moves to the right
        d = x[0] - y[j]
        run += d * d
        prev[j + radius] = run
        if want_path:
            steps[0, j + radius] = 2
    for i in range(1, n):
        xi = x[i]
        j_lo = max(0, i - radius)
        j_hi = min(n - 1, i + radius)
        for k in range(width + 1):
            row[k] = _INF
        left = _INF
        for j in range(j_lo, j_hi + 1):
            k = j - i + radius
            diag = prev[k] if j > 0 else _INF
            up = prev[k + 1]
            best = min(diag, min(up, left))  # branch-free: ties are frequent on flat signals
            d = xi - y[j]
            if want_path:
                steps[i, k] = np.uint8(diag > best) * (np.uint8(1) + np.uint8(up > best))
            left = d * d + best
            row[k] = left
        prev, row = row, prev
    return prev[radius], steps


@numba.njit(cache=True, nogil=True)
def _banded_pair(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.float64],
    u: npt.NDArray[np.float64], v: npt.NDArray[np.float64], radius: int,
) -> tuple[float, float, npt.NDArray[np.uint8]]:  # fmt: skip
    """:func:`_banded` of ``(x, y)`` without the path and of ``(u, v)`` with it, in one pass:
    each cell of a band depends on the one to its left, so one DTW keeps the processor waiting;
    two independent ones interleaved cost little more than one. The same arithmetic, in the same
    order, as two calls of :func:`_banded`: the same distances and path, to the bit."""
    n = x.shape[0]
    width = 2 * radius + 1
    prev = np.full(width + 1, _INF)
    row = np.full(width + 1, _INF)
    prev2 = np.full(width + 1, _INF)
    row2 = np.full(width + 1, _INF)
    steps = np.zeros((n, width), dtype=np.uint8)
    run = 0.0
    run2 = 0.0
    for j in range(min(n - 1, radius) + 1):
        d = x[0] - y[j]
        run += d * d
        prev[j + radius] = run
        d2 = u[0] - v[j]
        run2 += d2 * d2
        prev2[j + radius] = run2
        steps[0, j + radius] = 2
    for i in range(1, n):
        xi = x[i]
        ui = u[i]
        j_lo = max(0, i - radius)
        j_hi = min(n - 1, i + radius)
        for k in range(width + 1):
            row[k] = _INF
            row2[k] = _INF
        left = _INF
        left2 = _INF
        for j in range(j_lo, j_hi + 1):
            k = j - i + radius
            diag = prev[k] if j > 0 else _INF
            best = min(diag, min(prev[k + 1], left))
            d = xi - y[j]
            left = d * d + best
            row[k] = left
            diag2 = prev2[k] if j > 0 else _INF
            up2 = prev2[k + 1]
            best2 = min(diag2, min(up2, left2))
            d2 = ui - v[j]
            steps[i, k] = np.uint8(diag2 > best2) * (np.uint8(1) + np.uint8(up2 > best2))
            left2 = d2 * d2 + best2
            row2[k] = left2
        prev, row = row, prev
        prev2, row2 = row2, prev2
    return prev[radius], prev2[radius], steps


@numba.njit(cache=True, nogil=True)
def _backtrack(
    steps: npt.NDArray[np.uint8], offset: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """The optimal path from the steps; row ``i`` of ``steps`` holds columns from ``offset[i]``."""
    n = steps.shape[0]
    path = np.empty((2 * n, 2), dtype=np.int64)
    i, j = n - 1, n - 1
    m = 0
    while True:
        path[m, 0] = i
        path[m, 1] = j
        m += 1
        if i == 0 and j == 0:
            break
        step = steps[i, j - offset[i]]
        if step == 0:
            i, j = i - 1, j - 1
        elif step == 1:
            i = i - 1
        else:
            j = j - 1
    return path[:m][::-1].copy()


@numba.njit(cache=True, nogil=True)
def _windowed(
    x: npt.NDArray[np.float64],
    y: npt.NDArray[np.float64],
    lo: npt.NDArray[np.int64],
    hi: npt.NDArray[np.int64],
) -> tuple[float, npt.NDArray[np.int64]]:
    """DTW restricted to cells ``lo[i] <= j <= hi[i]`` (both non-decreasing, row 0 starting at
    0 and the last row ending at ``n - 1``); the cost and the optimal path, with the step
    priorities of :func:`_banded`."""
    n = x.shape[0]
    width = 0
    for i in range(n):
        width = max(width, hi[i] - lo[i] + 1)
    prev = np.full(width + 1, _INF)
    row = np.full(width + 1, _INF)
    steps = np.zeros((n, width), dtype=np.uint8)
    run = 0.0
    for j in range(lo[0], hi[0] + 1):
        d = x[0] - y[j]
        run += d * d
        prev[j - lo[0]] = run
        steps[0, j - lo[0]] = 2
    for i in range(1, n):
        xi = x[i]
        plo, phi = lo[i - 1], hi[i - 1]
        for k in range(width + 1):
            row[k] = _INF
        left = _INF
        for j in range(lo[i], hi[i] + 1):
            diag = prev[j - 1 - plo] if plo <= j - 1 <= phi else _INF
            up = prev[j - plo] if plo <= j <= phi else _INF
            best = min(diag, min(up, left))
            d = xi - y[j]
            steps[i, j - lo[i]] = np.uint8(diag > best) * (np.uint8(1) + np.uint8(up > best))
            left = d * d + best
            row[j - lo[i]] = left
        prev, row = row, prev
    return prev[n - 1 - lo[n - 1]], _backtrack(steps, lo)


def refined_path(
    x: npt.ArrayLike, y: npt.ArrayLike, coarse_path: npt.NDArray[np.int64], block: int,
    radius: int, margin: int = 2,
) -> tuple[npt.NDArray[np.int64], float]:  # fmt: skip
    """The optimal path at full resolution searched near a path found on block means of
    ``block`` samples (FastDTW's projection): every fine cell whose block lies within ``margin``
    blocks of the coarse path, and within the Sakoe-Chiba ``radius``."""
    a, b, r = _check(x, y, radius)
    n = len(a)
    rows = coarse_path[:, 0]
    cols = coarse_path[:, 1]
    blocks = -(-n // block)
    lo_b = np.full(blocks, blocks, dtype=np.int64)
    hi_b = np.full(blocks, -1, dtype=np.int64)
    np.minimum.at(lo_b, rows, cols - margin)
    np.maximum.at(hi_b, rows, cols + margin)
    i = np.arange(n, dtype=np.int64)
    lo = np.clip(lo_b[i // block] * block, 0, n - 1)
    hi = np.clip((hi_b[i // block] + 1) * block - 1, 0, n - 1)
    lo = np.maximum(lo, i - r)
    hi = np.minimum(hi, i + r)
    lo = np.minimum.accumulate(lo[::-1])[::-1]  # non-decreasing, connected from row to row
    hi = np.maximum.accumulate(hi)
    lo[0], hi[-1] = 0, n - 1
    total, path = _windowed(a, b, np.ascontiguousarray(lo), np.ascontiguousarray(hi))
    return path, float(np.sqrt(total))


def _check(
    x: npt.ArrayLike, y: npt.ArrayLike, radius: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], int]:
    a = np.ascontiguousarray(x, dtype=np.float64)
    b = np.ascontiguousarray(y, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1 or len(a) != len(b) or len(a) == 0:
        raise ValueError("banded DTW needs two non-empty 1-D series of the same length")
    return a, b, max(0, min(int(radius), len(a) - 1))


def dtw_distance(x: npt.ArrayLike, y: npt.ArrayLike, radius: int) -> float:
    """DTW distance with a Sakoe-Chiba band of ``radius`` samples."""
    a, b, r = _check(x, y, radius)
    total, _ = _banded(a, b, r, False)
    return float(np.sqrt(total))


def dtw_path(
    x: npt.ArrayLike, y: npt.ArrayLike, radius: int
) -> tuple[npt.NDArray[np.int64], float]:
    """Optimal warping path (pairs ``(i, j)``) and the DTW distance."""
    a, b, r = _check(x, y, radius)
    total, steps = _banded(a, b, r, True)
    offset = np.arange(len(a), dtype=np.int64) - r  # a band row starts at column i - radius
    return _backtrack(steps, offset), float(np.sqrt(total))


def dtw_distance_and_path(
    x: npt.ArrayLike, y: npt.ArrayLike, u: npt.ArrayLike, v: npt.ArrayLike, radius: int
) -> tuple[float, npt.NDArray[np.int64], float]:
    """``dtw_distance(x, y, radius)`` and ``dtw_path(u, v, radius)`` (four series of one
    length) in one pass, for about the time of one: the same results, to the bit."""
    a, b, r = _check(x, y, radius)
    c, d, _ = _check(u, v, radius)
    if len(c) != len(a):
        raise ValueError("both pairs need series of the same length")
    total, total2, steps = _banded_pair(a, b, c, d, r)
    offset = np.arange(len(a), dtype=np.int64) - r
    return float(np.sqrt(total)), _backtrack(steps, offset), float(np.sqrt(total2))


def warm_up() -> None:
    """Compile (or load from cache) the kernels before the first real cycle arrives."""
    x = np.linspace(0.0, 1.0, 16)
    dtw_path(x, x[::-1].copy(), 3)
    dtw_distance_and_path(x, x[::-1].copy(), x, x[::-1].copy(), 3)
    refined_path(x, x[::-1].copy(), np.column_stack([np.arange(4), np.arange(4)]), 4, 3)
