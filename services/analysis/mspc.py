"""A learned model of normal cycles: multiway PCA, the way batch processes are monitored
(Nomikos & MacGregor 1995). Pure numpy, scikit-learn and scipy; no I/O.

Each cycle is *unfolded* into one row: per sensor, its profile on the reference's base as the
normalised difference from the reference, ``(x - m) / s`` (``m`` the mean shape, ``s`` the normal
spread), averaged down to at most :data:`MAX_POINTS` points. A slow sensor (temperature, ...)
contributes its level-free shape plus one column for the part of its level that exceeds the
drift tolerance: a warm-up is not a fault. Each sensor's block is weighted by ``1/sqrt(points)``,
so every sensor weighs the same whatever its rate.

A PCA of the training rows (the reference's own cycles, then later cycles that scored healthy,
up to ``model_cycles``) keeps the fewest components that explain :data:`VARIANCE_SHARE` of the
variance (at most :data:`MAX_COMPONENTS` and ``n - 2``). For a new cycle:

- Hotelling's ``T²`` = Σ tₐ²/λₐ, its distance inside the model's plane;
- ``SPE`` (Q) = ‖residual‖², its distance from the plane: correlations it breaks.

Control limits at 95 % and 99 %: ``T²`` from the F distribution of a new observation,
``k(n-1)(n+1) / (n(n-k)) · F(k, n-k)``; ``SPE`` from Box's approximation ``g·χ²(h)`` with
``g = v/(2m)``, ``h = 2m²/v``, where ``m`` and ``v`` are the mean and variance of the training
cycles' SPE, each taken *leave-one-out* (a PCA fits its own rows too well: in-sample residuals
would make the limit far too tight for a model of a few cycles).

Contributions: per column, ``SPE`` contributes ``eⱼ²`` and ``T²`` contributes
``xⱼ · Σₐ tₐ pₐⱼ / λₐ`` (they sum to ``SPE`` and ``T²``); they are summed per sensor and kept per
point of the cycle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats as st
from sklearn.decomposition import PCA

from services.common.references import SLOW_TYPES, Reference

Array = npt.NDArray[np.float64]
MAX_POINTS = 60  # per sensor in the unfolded row
MIN_CYCLES = 5  # fewer training cycles give no model
VARIANCE_SHARE = 0.7
MAX_COMPONENTS = 5


@dataclass(frozen=True, slots=True)
class Layout:
    """Which columns of the unfolded row belong to which sensor."""

    sensors: tuple[str, ...]
    widths: tuple[int, ...]

    @property
    def columns(self) -> int:
        return sum(self.widths)

    def blocks(self) -> list[tuple[str, slice]]:
        out, at = [], 0
        for sid, w in zip(self.sensors, self.widths, strict=True):
            out.append((sid, slice(at, at + w)))
            at += w
        return out


def _block_means(x: Array, points: int) -> Array:
    """``x`` averaged down to ``points`` nearly equal blocks (NaN-aware)."""
    if len(x) <= points:
        return x
    edges = np.linspace(0, len(x), points + 1).astype(np.int64)
    sums = np.add.reduceat(np.nan_to_num(x), edges[:-1])
    counts = np.add.reduceat(np.isfinite(x).astype(np.float64), edges[:-1])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def layout_of(reference: Reference) -> Layout:
    sensors = tuple(reference.sensors)  # the reference's order (kept when ids are renamed)
    widths = []
    for sid in sensors:
        r = reference.sensors[sid]
        w = min(MAX_POINTS, len(r.mean))
        widths.append(w + (1 if r.sensor_type in SLOW_TYPES else 0))
    return Layout(sensors, tuple(widths))


def unfold(
    base: dict[str, Array], reference: Reference, tolerances: dict[str, float]
) -> Array | None:
    """A cycle's row (see the module docstring); None when a sensor of the reference has no
    finite point at all (the model cannot judge a cycle that lacks one of its sensors)."""
    parts = []
    for sid, r in reference.sensors.items():
        x = base.get(sid)
        if x is None or not np.isfinite(x).any():
            return None
        dev = np.asarray(x, dtype=np.float64) - r.mean
        if r.sensor_type in SLOW_TYPES:
            offset = float(np.nanmean(dev))
            tol = tolerances.get(sid) or 1.0
            z = (dev - offset) / r.spread
            excess = math.copysign(max(0.0, abs(offset) - tol), offset) / tol
            block = _block_means(z, MAX_POINTS)
            block = np.append(block, excess * math.sqrt(len(block)))
        else:
            block = _block_means(dev / r.spread, MAX_POINTS)
        parts.append(np.nan_to_num(block) / math.sqrt(len(block)))
    return np.concatenate(parts)


@dataclass(frozen=True, slots=True)
class Stats:
    t2: float
    spe: float
    t2_limit_95: float
    t2_limit_99: float
    spe_limit_95: float
    spe_limit_99: float
    contributions: dict[str, tuple[float, float]]  # sensor -> (share of SPE, share of T²)
    points: dict[str, list[float]]  # sensor -> per point, its SPE + T² contribution

    @property
    def ratio_99(self) -> float:
        """The larger of T² and SPE over their 99 % limits: 1 at the limit."""
        return max(self.t2 / self.t2_limit_99, self.spe / self.spe_limit_99)

    @property
    def ratio_95(self) -> float:
        return max(self.t2 / self.t2_limit_95, self.spe / self.spe_limit_95)


class _Pca:
    """Centred PCA with ``k`` components (an SVD; the rows are few)."""

    def __init__(self, x: Array, k: int) -> None:
        self.mean = x.mean(axis=0)
        self.pca = PCA(n_components=k, svd_solver="full").fit(x - self.mean)
        self.k = k

    def scores(self, x: Array) -> tuple[Array, Array]:
        """Scores and residual of one row."""
        xc = x - self.mean
        t = self.pca.components_ @ xc
        return t, xc - t @ self.pca.components_

    def stats(self, x: Array) -> tuple[float, float]:
        t, e = self.scores(x)
        return float(np.sum(t * t / self.pca.explained_variance_)), float(e @ e)


@dataclass(frozen=True, slots=True)
class Model:
    """A fitted model; ``cycles`` training rows, ``k`` components."""

    layout: Layout
    rows: Array  # the training rows (cycles x columns)
    k: int
    pca: _Pca
    t2_limits: tuple[float, float]  # 95 %, 99 %
    spe_limits: tuple[float, float]

    @property
    def cycles(self) -> int:
        return len(self.rows)

    def monitor(self, row: Array) -> Stats:
        t, e = self.pca.scores(row)
        lam = self.pca.pca.explained_variance_
        xc = row - self.pca.mean
        spe_c = e * e
        t2_c = xc * ((t / lam) @ self.pca.pca.components_)
        spe, t2 = float(spe_c.sum()), float(np.sum(t * t / lam))
        contributions, points = {}, {}
        for sid, cols in self.layout.blocks():
            a, b = float(spe_c[cols].sum()), float(t2_c[cols].sum())
            contributions[sid] = (a / spe if spe > 0 else 0.0, b / t2 if t2 > 0 else 0.0)
            points[sid] = [round(float(v), 4) for v in spe_c[cols] + t2_c[cols]]
        return Stats(t2, spe, *self.t2_limits, *self.spe_limits, contributions, points)


def components_for(x: Array) -> int:
    n = len(x)
    most = max(1, min(MAX_COMPONENTS, n - 2))
    pca = PCA(n_components=min(most, n - 1), svd_solver="full").fit(x - x.mean(axis=0))
    share = np.cumsum(pca.explained_variance_ratio_)
    return int(min(most, int(np.searchsorted(share, VARIANCE_SHARE)) + 1))


def _t2_limit(k: int, n: int, alpha: float) -> float:
    return float(k * (n - 1) * (n + 1) / (n * (n - k)) * st.f.ppf(alpha, k, n - k))


def _spe_limit(spe: Array, alpha: float) -> float:
    m = float(np.mean(spe))
    v = float(np.var(spe, ddof=1))
    if m <= 0 or v <= 0:
        return max(m, 1e-12) * 3.0
    g, h = v / (2 * m), 2 * m * m / v
    return float(g * st.chi2.ppf(alpha, h))


def loo_spe(x: Array, k: int) -> Array:
    """Each row's SPE under a ``k``-component PCA of all the other rows (leave-one-out), all of
    it in the rows' Gram matrix and for every row at once: ``n`` eigendecompositions of
    ``(n-1)²`` in one call instead of ``n`` PCAs of ``(n-1) x columns`` (about 5 ms instead of
    290 ms for 50 cycles of 17 sensors)."""
    n = len(x)
    gram = x @ x.T
    others = np.array([np.delete(np.arange(n), i) for i in range(n)])  # (n, n-1)
    g = gram[others[:, :, None], others[:, None, :]]  # each row's Gram of the others
    row_mean = g.mean(axis=2)
    total_mean = row_mean.mean(axis=1)
    centred = g - row_mean[:, :, None] - row_mean[:, None, :] + total_mean[:, None, None]
    lam, u = np.linalg.eigh(centred)  # ascending
    lam, u = lam[:, ::-1][:, :k], u[:, :, ::-1][:, :, :k]
    cross = gram[others, np.arange(n)[:, None]]  # the others . the left-out row
    # (the others, centred) . (the left-out row, centred on the others' mean)
    proj = cross - row_mean - cross.mean(axis=1)[:, None] + total_mean[:, None]
    scores = np.einsum("nmk,nm->nk", u, proj) / np.sqrt(np.maximum(lam, 1e-300))
    norm2 = np.diag(gram) - 2 * cross.mean(axis=1) + total_mean
    return np.asarray(np.maximum(0.0, norm2 - np.sum(scores * scores, axis=1)), dtype=np.float64)


def fit(layout: Layout, rows: Array) -> Model | None:
    """The model of ``rows`` (None with fewer than :data:`MIN_CYCLES`)."""
    x = np.asarray(rows, dtype=np.float64)
    n = len(x)
    if n < MIN_CYCLES or x.shape[1] != layout.columns:
        return None
    k = components_for(x)
    # leave-one-out SPE for the SPE limit (a model fits its own rows too well)
    loo = loo_spe(x, k)
    t2 = (_t2_limit(k, n, 0.95), _t2_limit(k, n, 0.99))
    spe = (_spe_limit(loo, 0.95), _spe_limit(loo, 0.99))
    return Model(layout, x, k, _Pca(x, k), t2, spe)
