"""A learned model of normal cycles: multiway PCA, the way batch processes are monitored
(Nomikos & MacGregor 1995). Pure numpy, scikit-learn and scipy; no I/O.

Each cycle is *unfolded* into one row: a format tag, then per sensor

- its **profile**: the level-free difference from the reference's mean shape in normal spreads,
  ``(x - m - offset) / s``, averaged down to at most :data:`MAX_POINTS` points;
- its **level**: the cycle's mean offset from the reference, in level tolerances.

The model has two parts, each a PCA of the training rows (the reference's own cycles, then later
cycles that scored healthy, up to ``model_cycles``), every column scaled to unit variance over
those rows (*autoscaling*, with a floor so a column that never moved does not make noise a
fault):

- the **profile** part, each sensor's block weighted by ``1/sqrt(points)`` so every sensor weighs
  the same whatever its rate, keeps the fewest components that explain :data:`VARIANCE_SHARE` of
  the variance (at most :data:`MAX_COMPONENTS` and ``n - 2``): how the cycle runs;
- the **operating point** part, the sensors' levels, keeps :data:`LEVEL_COMPONENTS`: the one
  direction the healthy operating point moves along (a warm-up moves every temperature, the
  cooling power and the efficiencies together). A level off that line breaks the relation
  between the sensors: a fault, even when each sensor alone is within its normal scatter.

For a new cycle, in each part:

- Hotelling's ``T²`` = Σ tₐ²/λₐ, its distance inside the part's plane;
- ``SPE`` (Q) = ‖residual‖², its distance from the plane: correlations it breaks.

Control limits at 95 % and 99 %: ``T²`` from the F distribution of a new observation,
``k(n-1)(n+1) / (n(n-k)) · F(k, n-k)``; ``SPE`` from Box's approximation ``g·χ²(h)`` with
``g = v/(2m)``, ``h = 2m²/v``, where ``m`` and ``v`` are the mean and variance of the training
cycles' SPE, each taken *leave-one-out* (a PCA fits its own rows too well: in-sample residuals
would make the limit far too tight for a model of a few cycles). The cycle's ratio is the
largest of the four statistics over their limits.

Contributions: per column, ``SPE`` contributes ``eⱼ²`` and ``T²`` contributes
``xⱼ · Σₐ tₐ pₐⱼ / λₐ`` (they sum to ``SPE`` and ``T²``); each part's are taken over its limit,
so the parts weigh alike, summed per sensor, and the profile's kept per point of the cycle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats as st
from sklearn.decomposition import PCA
from threadpoolctl import ThreadpoolController

from services.common.references import Reference

Array = npt.NDArray[np.float64]
MAX_POINTS = 60  # per sensor in the unfolded row
MIN_CYCLES = 5  # fewer training cycles give no model
VARIANCE_SHARE = 0.7
MAX_COMPONENTS = 5
LEVEL_COMPONENTS = 1  # the operating point's one healthy direction of movement
ROW_FORMAT = 2.0  # the first column of a row: rows of another format are not mixed in
# autoscaling floors: a profile column's spread is at least this share of its part's median; a
# level's at least this many level tolerances (about a healthy level's own scatter)
PROFILE_FLOOR = 0.1
LEVEL_FLOOR = 1.0
LEVEL_RESOLUTION = 0.5  # levels: a deviation under half a tolerance is never beyond a limit
_CHI2_95_99 = float(st.chi2.ppf(0.95, 1) / st.chi2.ppf(0.99, 1))


@dataclass(frozen=True, slots=True)
class Layout:
    """Which columns of the unfolded row belong to which sensor: after the format tag, per
    sensor its profile (``widths`` points) and then its level."""

    sensors: tuple[str, ...]
    widths: tuple[int, ...]

    @property
    def columns(self) -> int:
        return 1 + sum(w + 1 for w in self.widths)

    def blocks(self) -> list[tuple[str, slice, int]]:
        """Per sensor: its profile's columns and its level's column."""
        out, at = [], 1
        for sid, w in zip(self.sensors, self.widths, strict=True):
            out.append((sid, slice(at, at + w), at + w))
            at += w + 1
        return out

    def profile_columns(self) -> npt.NDArray[np.intp]:
        return np.concatenate([np.arange(c.start, c.stop) for _, c, _ in self.blocks()])

    def level_columns(self) -> npt.NDArray[np.intp]:
        return np.array([lv for _, _, lv in self.blocks()], dtype=np.intp)

    def readable(self, rows: Array | None) -> bool:
        """Whether ``rows`` are rows of this layout (width and format)."""
        return (
            rows is not None
            and rows.ndim == 2
            and rows.shape[1] == self.columns
            and bool(np.all(rows[:, 0] == ROW_FORMAT))
        )


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
    widths = tuple(min(MAX_POINTS, len(reference.sensors[sid].mean)) for sid in sensors)
    return Layout(sensors, widths)


def unfold(
    base: dict[str, Array], reference: Reference, tolerances: dict[str, float]
) -> Array | None:
    """A cycle's row (see the module docstring); None when a sensor of the reference has no
    finite point at all (the model cannot judge a cycle that lacks one of its sensors)."""
    parts = [np.array([ROW_FORMAT])]
    for sid, r in reference.sensors.items():
        x = base.get(sid)
        if x is None or not np.isfinite(x).any():
            return None
        dev = np.asarray(x, dtype=np.float64) - r.mean
        offset = float(np.nanmean(dev))
        profile = _block_means((dev - offset) / r.spread, MAX_POINTS)
        parts.append(np.nan_to_num(profile))
        parts.append(np.array([offset / (tolerances.get(sid) or 1.0)]))
    return np.concatenate(parts)


@dataclass(frozen=True, slots=True)
class Stats:
    t2: float  # the profile part's
    spe: float
    t2_limit_95: float
    t2_limit_99: float
    spe_limit_95: float
    spe_limit_99: float
    level: PartStats  # the operating point's
    contributions: dict[str, tuple[float, float]]  # sensor -> (share of SPE, share of T²)
    points: dict[str, list[float]]  # sensor -> per point of its profile, SPE + T² contribution

    @property
    def ratio_99(self) -> float:
        """The largest of the four statistics over their 99 % limits: 1 at the limit."""
        lv = self.level
        return max(self.t2 / self.t2_limit_99, self.spe / self.spe_limit_99,
                   lv.t2 / lv.t2_limit_99, lv.spe / lv.spe_limit_99)  # fmt: skip

    @property
    def ratio_95(self) -> float:
        lv = self.level
        return max(self.t2 / self.t2_limit_95, self.spe / self.spe_limit_95,
                   lv.t2 / lv.t2_limit_95, lv.spe / lv.spe_limit_95)  # fmt: skip


@dataclass(frozen=True, slots=True)
class PartStats:
    components: int
    t2: float
    spe: float
    t2_limit_95: float
    t2_limit_99: float
    spe_limit_95: float
    spe_limit_99: float


def components_for(x: Array) -> int:
    """The fewest components that explain :data:`VARIANCE_SHARE` of the centred rows' variance
    (at most :data:`MAX_COMPONENTS` and ``n - 2``), from the eigenvalues of their Gram matrix
    (``n²``: a tenth of an SVD of the rows)."""
    n = len(x)
    most = max(1, min(MAX_COMPONENTS, n - 2))
    xc = x - x.mean(axis=0)
    lam = np.clip(np.linalg.eigvalsh(xc @ xc.T)[::-1], 0.0, None)
    total = float(lam.sum())
    if total <= 0:
        return 1
    share = np.cumsum(lam) / total
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


def loo_spe(x: Array, weights: Array, floor: Array, k: int) -> tuple[Array, Array]:
    """Each row's SPE, and the mean residual² per column, under the part fitted to all the
    other rows (leave-one-out), the scaling included: a row that is far out widens its own
    columns' spread, so scaling it by a spread it took part in would make it look nearer than a
    new cycle does. The PCAs of the others go through their Gram matrices (``(n-1)²``, not
    ``(n-1) x columns``), decomposed in one call."""
    n = len(x)
    total, squares = x.sum(axis=0), (x * x).sum(axis=0)

    def scaled(i: int) -> tuple[Array, Array]:
        """The others and row ``i``, scaled by the others' mean and spread."""
        mean = (total - x[i]) / (n - 1)
        var = np.maximum((squares - x[i] * x[i] - (n - 1) * mean * mean) / (n - 2), 0.0)
        scale = np.maximum(np.sqrt(var), floor) / weights
        return (np.delete(x, i, axis=0) - mean) / scale, (x[i] - mean) / scale

    if k == 0:
        z = np.array([scaled(i)[1] for i in range(n)])
        return np.sum(z * z, axis=1), np.mean(z * z, axis=0)
    grams = np.empty((n, n - 1, n - 1))
    for i in range(n):
        zo, _ = scaled(i)
        grams[i] = zo @ zo.T
    lam, u = np.linalg.eigh(grams)  # all at once (ascending): small matrices, one call
    lam, u = lam[:, ::-1][:, :k], u[:, :, ::-1][:, :, :k]
    root = np.sqrt(np.maximum(lam, 1e-300))
    out = np.empty(n)
    residual2 = np.zeros(x.shape[1])
    for i in range(n):
        zo, zi = scaled(i)
        loadings = (zo.T @ u[i]) / root[i]  # columns x k
        e = zi - loadings @ (loadings.T @ zi)
        out[i] = float(e @ e)
        residual2 += e * e
    return out, residual2 / n


@dataclass(frozen=True, slots=True)
class Part:
    """One part of the model: its columns' centre and scale (autoscaling, weights folded in),
    a ``k``-component PCA of the scaled rows and the control limits."""

    mean: Array
    scale: Array
    k: int
    components: Array  # k x columns
    variances: Array  # k
    t2_limits: tuple[float, float]  # 95 %, 99 %
    spe_limits: tuple[float, float]
    normal_spe: Array  # per column: a normal new cycle's residual², on average

    @classmethod
    def fit(
        cls, x: Array, weights: Array, floor: Array, k: int | None, resolution: float = 0.0
    ) -> Part:
        """The part of the columns ``x`` (``k`` None: by :data:`VARIANCE_SHARE`)."""
        n = len(x)
        mean = x.mean(axis=0)
        scale = np.maximum(x.std(axis=0, ddof=1), floor) / weights
        z = (x - mean) / scale
        k = components_for(z) if k is None else max(0, min(k, n - 2, x.shape[1] - 1))
        if k > 0:
            pca = PCA(n_components=k, svd_solver="full").fit(z)
            comps, lam = pca.components_, pca.explained_variance_
            t2 = (_t2_limit(k, n, 0.95), _t2_limit(k, n, 0.99))
        else:  # nothing to project on: every deviation is residual
            comps, lam = np.zeros((0, x.shape[1])), np.zeros(0)
            t2 = (math.inf, math.inf)
        # leave-one-out SPE for the SPE limit (a model fits its own rows too well)
        loo, normal = loo_spe(x, weights, floor, k)
        spe = (_spe_limit(loo, 0.95), _spe_limit(loo, 0.99))
        if resolution > 0:
            # a deviation smaller than the resolution is never beyond a limit on its own: the
            # limits of a model whose training rows hardly moved do not shrink to their noise
            spe = (max(spe[0], resolution**2 * _CHI2_95_99), max(spe[1], resolution**2))
            if k > 0:
                # along the healthy line a level is judged as each sensor's is on its own: the
                # 99 % T² limit is not reached before one sensor's level moved a tolerance
                reach = 1.0 / np.max(np.abs(comps), axis=1)
                lam = np.maximum(lam, reach**2 / t2[1])
        return cls(mean, scale, k, comps, lam, t2, spe, normal)

    def judge(self, x: Array) -> tuple[float, float, Array, Array]:
        """``T²``, ``SPE`` and their contributions per column of one row's columns ``x``."""
        z = (x - self.mean) / self.scale
        t = self.components @ z
        e = z - t @ self.components
        spe_c = e * e
        t2_c = z * ((t / np.maximum(self.variances, 1e-300)) @ self.components)
        return float(np.sum(t * t / np.maximum(self.variances, 1e-300))), float(spe_c.sum()), \
            spe_c, t2_c  # fmt: skip


@dataclass(frozen=True, slots=True)
class Model:
    """A fitted model of ``cycles`` training rows: the profile and the operating point."""

    layout: Layout
    cycles: int
    profile: Part
    level: Part
    profile_columns: npt.NDArray[np.intp]  # the layout's, found once per fit
    level_columns: npt.NDArray[np.intp]

    @property
    def k(self) -> int:
        """The profile's components (the operating point keeps :data:`LEVEL_COMPONENTS`)."""
        return self.profile.k

    @property
    def t2_limits(self) -> tuple[float, float]:
        return self.profile.t2_limits

    @property
    def spe_limits(self) -> tuple[float, float]:
        return self.profile.spe_limits

    def monitor(self, row: Array) -> Stats:
        p, lv = self.profile, self.level
        t2, spe, spe_c, t2_c = p.judge(row[self.profile_columns])
        lt2, lspe, lspe_c, lt2_c = lv.judge(row[self.level_columns])
        # each part's contributions over its 99 % limits, so that both parts weigh alike; SPE is
        # blamed by what a sensor's residual has beyond a normal cycle's, so that sensors which
        # only show their usual noise take none (all of it alike when nothing stands out)
        spe_w = (spe_c / p.spe_limits[1], lspe_c / lv.spe_limits[1])
        normal_w = (p.normal_spe / p.spe_limits[1], lv.normal_spe / lv.spe_limits[1])
        t2_w = (t2_c / p.t2_limits[1], lt2_c / lv.t2_limits[1])
        raw, beyond, t2_part, points, at = {}, {}, {}, {}, 0
        for i, (sid, cols, _) in enumerate(self.layout.blocks()):
            w = cols.stop - cols.start
            mine = slice(at, at + w)
            raw[sid] = float(spe_w[0][mine].sum() + spe_w[1][i])
            beyond[sid] = max(0.0, float(spe_w[0][mine].sum() - normal_w[0][mine].sum())) + max(
                0.0, float(spe_w[1][i] - normal_w[1][i])
            )
            t2_part[sid] = float(t2_w[0][mine].sum() + t2_w[1][i])
            points[sid] = [round(float(v), 4) for v in spe_c[mine] + t2_c[mine]]
            at += w
        blame = beyond if sum(beyond.values()) > 0 else raw
        spe_all, t2_all = sum(blame.values()), sum(t2_part.values())
        contributions = {
            sid: (blame[sid] / spe_all if spe_all > 0 else 0.0,
                  t2_part[sid] / t2_all if t2_all > 0 else 0.0)
            for sid in raw
        }  # fmt: skip
        level = PartStats(lv.k, lt2, lspe, *lv.t2_limits, *lv.spe_limits)
        return Stats(t2, spe, *p.t2_limits, *p.spe_limits, level, contributions, points)


def fit(layout: Layout, rows: Array) -> Model | None:
    """The model of ``rows`` (None with fewer than :data:`MIN_CYCLES`, or rows of another
    layout)."""
    x = np.asarray(rows, dtype=np.float64)
    n = len(x)
    if n < MIN_CYCLES or not layout.readable(x):
        return None
    # matrices of a few dozen rows: BLAS threads cost more than they bring (about 2.5 times the
    # time on 2 cores) and take a core from the other services
    with _threads().limit(limits=1, user_api="blas"):
        return _fit(layout, x)


_CONTROLLER: list[ThreadpoolController] = []


def _threads() -> ThreadpoolController:
    """The process's BLAS libraries, found once (finding them takes about 1.5 ms)."""
    if not _CONTROLLER:
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0]


def _fit(layout: Layout, x: Array) -> Model:
    n = len(x)
    pc, lc = layout.profile_columns(), layout.level_columns()
    weights = np.concatenate([np.full(w, 1 / math.sqrt(w)) for w in layout.widths])
    spread = x[:, pc].std(axis=0, ddof=1)
    floor = np.full(len(pc), max(PROFILE_FLOOR * float(np.median(spread)), 1e-9))
    profile = Part.fit(x[:, pc], weights, floor, None)
    level = Part.fit(x[:, lc], np.ones(len(lc)), np.full(len(lc), LEVEL_FLOOR), LEVEL_COMPONENTS,
                     LEVEL_RESOLUTION)  # fmt: skip
    return Model(layout, n, profile, level, pc, lc)
