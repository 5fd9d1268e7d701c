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
def _banded_cost(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], radius: int
) -> npt.NDArray[np.float64]:
    # acc[i, k] holds the cumulative cost of cell (i, j = i + k - radius)
    n = x.shape[0]
    width = 2 * radius + 1
    acc = np.full((n, width), _INF)
    run = 0.0
    for j in range(min(n - 1, radius) + 1):  # first row: only moves to the right
        d = x[0] - y[j]
        run += d * d
        acc[0, j + radius] = run
    for i in range(1, n):
        xi = x[i]
        j_lo = max(0, i - radius)
        j_hi = min(n - 1, i + radius)
        prev = acc[i - 1]
        row = acc[i]
        left = _INF
        for j in range(j_lo, j_hi + 1):
            k = j - i + radius
            best = prev[k]  # (i-1, j-1), +inf where it is outside the band
            if k + 1 < width and prev[k + 1] < best:  # (i-1, j)
                best = prev[k + 1]
            if left < best:  # (i, j-1)
                best = left
            if j == 0:
                best = prev[k + 1]
            d = xi - y[j]
            left = d * d + best
            row[k] = left
    return acc


@numba.njit(cache=True, nogil=True)
def _backtrack(acc: npt.NDArray[np.float64], radius: int) -> npt.NDArray[np.int64]:
    n = acc.shape[0]
    path = np.empty((2 * n, 2), dtype=np.int64)
    i, j = n - 1, n - 1
    m = 0
    while True:
        path[m, 0] = i
        path[m, 1] = j
        m += 1
        if i == 0 and j == 0:
            break
        k = j - i + radius
        diag = acc[i - 1, k] if i > 0 and j > 0 else _INF
        up = acc[i - 1, k + 1] if i > 0 and k + 1 < acc.shape[1] else _INF
        left = acc[i, k - 1] if j > 0 and k > 0 else _INF
        if diag <= up and diag <= left:
            i, j = i - 1, j - 1
        elif up <= left:
            i = i - 1
        else:
            j = j - 1
    return path[:m][::-1].copy()


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
    acc = _banded_cost(a, b, r)
    return float(np.sqrt(acc[-1, r]))


def dtw_path(
    x: npt.ArrayLike, y: npt.ArrayLike, radius: int
) -> tuple[npt.NDArray[np.int64], float]:
    """Optimal warping path (pairs ``(i, j)``) and the DTW distance."""
    a, b, r = _check(x, y, radius)
    acc = _banded_cost(a, b, r)
    return _backtrack(acc, r), float(np.sqrt(acc[-1, r]))


def warm_up() -> None:
    """Compile (or load from cache) the kernels before the first real cycle arrives."""
    x = np.linspace(0.0, 1.0, 16)
    dtw_path(x, x[::-1].copy(), 3)
