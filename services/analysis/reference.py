"""Building a reference from good cycles: the mean shape (DTW barycenter averaging), the
per-point normal spread that cannot collapse, the drift-aware level tolerance, and each cycle as
a row of the learned model. Pure numpy; no I/O."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from services.analysis import mspc
from services.analysis.cycle import (
    STATUS_TYPES,
    CycleData,
    Params,
    base_points,
    on_common_base,
    resample,
    sample_span,
    samples_in,
)
from services.analysis.dtw import dtw_distance, dtw_path, refined_path
from services.common.references import (
    SLOW_TYPES,
    Reference,
    SensorReference,
)

Array = npt.NDArray[np.float64]


def noise_level(x: Array) -> float:
    """Standard deviation of white noise in ``x``, from its second differences (a ramp's are
    zero, so a coarsely sampled cycle's steps are not taken for noise), robust: MAD."""
    d = np.diff(x[np.isfinite(x)], n=2)
    if len(d) < 2:
        return 0.0
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(6))


def resolution(x: Array) -> float:
    """The step of a quantised signal: the smallest difference between two distinct values
    (a 16-bit register, a display rounded to 0.01); about zero for a continuous signal."""
    u = np.unique(x[np.isfinite(x)])
    if len(u) < 2:
        return 0.0
    return float(np.min(np.diff(u)))


# two-sided 95 % Student t quantiles by degrees of freedom; beyond the table, the normal's 1.96
_T975 = (12.71, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def small_sample_factor(cycles: int, pooled: int = 1) -> float:
    """How much wider than the scatter of ``cycles`` reference cycles a new cycle's normal
    deviation is: the mean itself is uncertain (x sqrt(1 + 1/k)) and a spread estimated from few
    cycles is uncertain too (Student's t over the normal quantile, with the degrees of freedom
    of ``pooled`` neighbouring points per cycle, which are not independent: half count)."""
    k = max(int(cycles), 1)
    dof = max(1, round((k - 1) * max(1.0, pooled / 2)))
    t = _T975[dof - 1] if dof <= len(_T975) else 1.96 + 2.4 / dof
    return float(np.sqrt(1.0 + 1.0 / k) * t / 1.96)


def normal_spread(
    series: list[Array], mean: Array, radius: int, noise: float, step: float, floor: float
) -> Array:
    """Per-point normal spread of the reference cycles around their mean shape.

    It is the point-wise scatter (the comparison is point-wise too), pooled over the DTW band
    (a few cycles give a noisy estimate per point), corrected for the number of cycles
    (:func:`small_sample_factor`), and never below what the data shows anyway: the sensor's
    measurement noise (from successive differences of its real samples), its resolution and a
    floor of 0.1 % of the reference's range. With one cycle only noise, resolution and floor
    remain, widened as for two cycles."""
    n = len(mean)
    k = len(series)
    half = max(1, radius)  # pooled over the DTW band
    window = 2 * half + 1
    if k > 1:
        resid = np.vstack(series) - mean
        var = np.nansum(resid**2, axis=0) / (k - 1)
        var = np.where(np.isfinite(var), var, 0.0)
        # pooled over the band: the mean of the per-point variance of neighbouring points
        kernel = np.ones(window) / window
        padded = np.pad(var, half, mode="edge")
        pooled = np.convolve(padded, kernel, mode="valid")[:n]
        # and shrunk towards the typical spread, which the few cycles estimate better
        scatter = pooled + 0.1 * float(np.median(pooled))
    else:
        scatter = np.zeros(n)
    factor = small_sample_factor(max(k, 2), window)
    least = max(noise**2, step**2, floor**2)
    return np.asarray(factor * np.sqrt(np.maximum(scatter, least)), dtype=np.float64)


def spread_floor(mean: Array) -> float:
    """Smallest spread used: 0.1 % of the reference's range, never zero."""
    span = float(np.nanmax(mean) - np.nanmin(mean)) if len(mean) else 0.0
    return max(1e-3 * span, 1e-6 * max(1.0, float(np.nanmax(np.abs(mean)))), 1e-9)


def medoid(series: list[Array], radius: int) -> int:
    """Index of the series with the smallest sum of DTW distances to the others."""
    k = len(series)
    total = np.zeros(k)
    for i in range(k):
        for j in range(i + 1, k):
            d = dtw_distance(series[i], series[j], radius)
            total[i] += d
            total[j] += d
    return int(np.argmin(total))


COARSE_POINTS = 1000  # above this, the barycenter is found on a coarser copy first
REFINE_STEPS = 3  # DBA steps at full resolution after that, each near the previous paths


def _dba(
    series: list[Array], start: Array, radius: int, max_iter: int, tol: float
) -> tuple[Array, int]:
    """DBA iterations from ``start``; the barycenter and the largest warp of the last paths."""
    bary = np.array(start, dtype=np.float64)
    n = len(bary)
    last_cost = np.inf
    warp = 0
    for _ in range(max_iter):
        sums = np.zeros(n)
        counts = np.zeros(n)
        cost = 0.0
        warp = 0
        for x in series:
            path, d = dtw_path(bary, x, radius)
            sums += np.bincount(path[:, 0], weights=x[path[:, 1]], minlength=n)
            counts += np.bincount(path[:, 0], minlength=n)
            cost += d * d
            warp = max(warp, int(np.max(np.abs(path[:, 0] - path[:, 1]))))
        cost /= len(series)
        bary = np.asarray(sums / counts, dtype=np.float64)
        if abs(last_cost - cost) <= tol * cost or cost > last_cost:
            break  # converged, or only wobbling now (tslearn stops there too)
        last_cost = cost
    return bary, warp


def _block_means(x: Array, f: int) -> Array:
    """Means of consecutive blocks of ``f`` samples (the last block may be shorter)."""
    n = len(x)
    return np.add.reduceat(x, np.arange(0, n, f)) / np.diff(np.append(np.arange(0, n, f), n))


def barycenter(series: list[Array], radius: int, max_iter: int = 15, tol: float = 1e-3) -> Array:
    """DTW barycenter averaging (Petitjean et al.), the iteration of tslearn's
    ``dtw_barycenter_averaging`` with a Sakoe-Chiba band, on the banded kernel: warm start from
    the medoid, sums per point with ``bincount``, stopped when the mean squared DTW cost improves
    by less than ``tol`` of itself.

    Series longer than ``COARSE_POINTS`` are averaged multi-resolution: DBA converges on block
    means (at most ``COARSE_POINTS`` points, the band scaled alike), the result is stretched back
    and refined by one DBA step at full resolution whose paths are searched near the coarse ones
    (:func:`services.analysis.dtw.refined_path`, within the band): a fraction of the cost of
    full-resolution iterations."""
    n = len(series[0])
    if n <= COARSE_POINTS:
        return _dba(series, series[medoid(series, radius)], radius, max_iter, tol)[0]
    f = -(-n // COARSE_POINTS)
    coarse = [_block_means(x, f) for x in series]
    coarse_radius = max(1, -(-radius // f))
    rough, _ = _dba(coarse, coarse[medoid(coarse, coarse_radius)], coarse_radius, max_iter, tol)
    centres = np.arange(len(rough)) * f + (f - 1) / 2.0
    bary = np.interp(np.arange(n, dtype=np.float64), centres, rough)
    guides = [(dtw_path(rough, c, coarse_radius)[0], f) for c in coarse]
    last_cost = np.inf
    for _ in range(REFINE_STEPS):
        sums = np.zeros(n)
        counts = np.zeros(n)
        cost = 0.0
        paths = []
        for x, (guide, block) in zip(series, guides, strict=True):
            path, d = refined_path(bary, x, guide, block, radius, margin=2 * f // block)
            sums += np.bincount(path[:, 0], weights=x[path[:, 1]], minlength=n)
            counts += np.bincount(path[:, 0], minlength=n)
            cost += d * d
            paths.append((path, 1))
        bary = np.asarray(sums / counts, dtype=np.float64)
        if abs(last_cost - cost) <= tol * cost or cost > last_cost:
            break
        last_cost = cost
        guides = paths  # the next step searches near this step's paths
    return bary


def _sensor_reference(
    sensor_id: str,
    cycles: list[CycleData],
    sensor_type: str,
    unit: str,
    duration: float,
    jitter_s: float,
    n_points: int,
    params: Params,
) -> SensorReference:
    spans = [(c.start_ns, max(c.end_ns - c.start_ns, 1)) for c in cycles]
    raw = [c.sensors[sensor_id] for c in cycles]
    n = base_points(
        [samples_in(t, c.start_ns, c.end_ns) for (t, _), c in zip(raw, cycles, strict=True)],
        n_points,
    )
    radius = max(1, round(params.band_share * n))
    series = [resample(t, v, a, span, n) for (t, v), (a, span) in zip(raw, spans, strict=True)]
    coverage = np.logical_and.reduce(
        [sample_span(t, a, span, n) for (t, _), (a, span) in zip(raw, spans, strict=True)]
    )
    mean = barycenter(series, radius) if len(series) > 1 else series[0]
    values = [np.asarray(v, dtype=np.float64) for _, v in raw]
    noise = float(np.median([noise_level(v) for v in values]))
    step = float(np.median([resolution(v) for v in values]))
    spread = normal_spread(series, mean, radius, noise, step, spread_floor(mean))
    base_noise = float(np.median([noise_level(x) for x in series]))
    level_spread = float(np.std([x.mean() for x in series], ddof=1)) if len(series) > 1 else 0.0
    # cycle boundaries wobble by a trigger sample or so; where the signal is steep that alone
    # moves values a lot, so the envelope is widened by slope x the boundary jitter
    slope = np.gradient(mean) * (n - 1) / max(duration, 1e-9)  # unit per second
    spread = np.sqrt(spread**2 + (slope * jitter_s) ** 2)
    if sensor_type in SLOW_TYPES:
        # differences below a slow sensor's accuracy say nothing about the machine
        accuracy = params.slow_accuracy_share * abs(float(np.mean(mean)))
        spread = np.sqrt(spread**2 + accuracy**2)
    return SensorReference(
        sensor_id=sensor_id,
        mean=mean,
        spread=spread,
        level_spread=level_spread,
        sensor_type=sensor_type,
        unit=unit,
        coverage=coverage,
        noise=base_noise,
    )


def build_reference(
    cycles: list[CycleData],
    *,
    version: int,
    n_points: int,
    params: Params = Params(),
    units: dict[str, str] | None = None,
) -> Reference:
    """A reference from one or more good cycles: per sensor, on its own base of at most
    ``n_points`` points, the DBA mean shape and the per-point normal spread. Sensors are built
    in parallel (``params.workers``; the DTW kernels release the GIL)."""
    if not cycles:
        raise ValueError("a reference needs at least one cycle")
    duration = float(np.median([c.duration_s for c in cycles]))
    jitter_s = float(
        np.hypot(
            np.std([c.duration_s for c in cycles], ddof=1) if len(cycles) > 1 else 0.0,
            float(np.median([c.boundary_jitter_s for c in cycles])),
        )
    )
    types = {k: v for c in cycles for k, v in c.sensor_types.items()}
    common = sorted(
        sid
        for sid in set.intersection(*(set(c.sensors) for c in cycles))
        if types.get(sid, "generic") not in STATUS_TYPES
        and all(len(c.sensors[sid][0]) > 0 for c in cycles)
    )
    if not common:
        raise ValueError("the chosen cycles share no process sensor")

    def one(sensor_id: str) -> SensorReference:
        return _sensor_reference(
            sensor_id, cycles, types.get(sensor_id, "generic"), (units or {}).get(sensor_id, ""),
            duration, jitter_s, n_points, params,
        )  # fmt: skip

    if params.workers > 1 and len(common) > 1:
        with ThreadPoolExecutor(max_workers=params.workers) as pool:
            built = list(pool.map(one, common))
    else:
        built = [one(sid) for sid in common]
    reference = Reference(cycles[0].stream_id, version, duration, {r.sensor_id: r for r in built})
    rows = [model_row(c, reference, params) for c in cycles]
    members = np.array([r for r in rows if r is not None])
    return replace(reference, members=members if len(members) else None)


def model_row(cycle: CycleData, reference: Reference, params: Params) -> Array | None:
    """The cycle as a row of the learned model (None when it lacks one of its sensors)."""
    tolerances = {sid: offset_tolerance(r, params) for sid, r in reference.sensors.items()}
    return mspc.unfold(on_common_base(cycle, reference), reference, tolerances)


def offset_tolerance(ref: SensorReference, params: Params) -> float:
    """How far a cycle's mean level may sit from the reference's before it counts.

    Normal level scatter among the reference cycles and the typical spread always count; slow
    sensors (temperature, ...) also get ``drift_share_slow`` of their level, because their operating
    point drifts over hours (warm-up) without anything being wrong."""
    typical = float(np.median(ref.spread))
    tol = float(np.sqrt((3 * ref.level_spread) ** 2 + typical**2))
    if ref.sensor_type in SLOW_TYPES:
        tol = float(np.hypot(tol, params.drift_share_slow * abs(float(np.mean(ref.mean)))))
    return max(tol, spread_floor(ref.mean))
