"""Comparing a cycle with its reference: pure numpy, no I/O, no clock.

Each sensor is put on its own base over the cycle (normalised time): as many points as it really
has samples in a cycle (its rate x the cycle's duration), at most ``n_points``, so a 1 Hz sensor is
judged on its 60 real samples and a 1 kHz one on ``n_points`` of its 10,000; nothing is compared on
interpolated points. Per sensor, with ``m`` the reference mean shape and ``s`` its per-point normal
spread (see :func:`normal_spread`):

- euclidean ``||x - m||``, DTW with a Sakoe-Chiba band (:mod:`services.analysis.dtw`);
- point-wise deviation: max, mean, where, share of points outside ``m ± k·s``;
- ``offset`` = mean(x) - mean(m), judged against a drift-aware tolerance (see
  :func:`offset_tolerance`), and the level-free ``shape_z`` = RMS((x - x̄) - (m - m̄)) / s;
- ``severity`` = sqrt(offset_z² + shape_z²) (about 1 for a normal cycle);
- timing vs magnitude from the warping path: of the squared Euclidean difference E², the part
  DTW removes (E² - DTW²) is timing, the rest magnitude.

The cycle's deviation ``D`` = 0.7·max(severity) + 0.3·RMS(severity): 1 is a sensor at its normal
spread. Once the learned model of normal cycles (:mod:`services.analysis.mspc`) learnt from
``model_feeds_from`` cycles, its own deviation ``D_m = 2·sqrt(r)`` (``r``: the larger of T² and
SPE over their 99 % control limits, so ``D_m`` = 2 at the limit and about 1.4 for a typical normal
cycle) is added in quadrature beyond the normal: ``D = sqrt(D² + max(0, D_m² - 1.4²))``. A cycle
both views find a little off is judged worse than one that only one finds a little off.

The health score is ``100 · exp(-softplus₂(D - 1.5) / 4)`` (``softplus₂(x) = ln(1 + e^(2x)) / 2``),
continuous and falling: 99 at D = 0, 96 at D = 1, 90 at D = 1.64, 85 at D = 2, 80 at D = 2.3,
60 at D = 3.5, 40 at D = 5.2. In terms of the control limits, with the sensors each within their
normal spread (D ≈ 1): a cycle at the model's 99 % limit scores 89, **80** means T² or SPE at 1.6
times its 99 % limit, **60** at 3.4 times and **40** at 6.9 times. Normal cycles spread over about
85-100 instead of all scoring 100, so a drift shows before it is a fault. Risk: low ≥ 80 > medium
≥ 60 > high ≥ 40 > critical.

A cycle with no data, or that compares fewer than ``min_compared_share`` (half) of its
reference's sensors, is *not comparable*: no score, risk ``unknown``, and the reason in
``qualification``. A score from what little was compared would look like a measurement of the
whole machine; it is not one.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from schemas.frames import Frame
from schemas.messages import (
    AnalysisCompleted,
    FirstDeviation,
    ModelContribution,
    ModelStats,
    Recommendation,
    SensorDeviation,
    SensorStats,
)
from services.analysis import mspc
from services.analysis.dtw import dtw_distance, dtw_path, refined_path
from services.common.references import (
    SLOW_TYPES,
    Reference,
    SensorReference,
)

Array = npt.NDArray[np.float64]
NS = 1_000_000_000
# status inputs (a cycle-active bit, a step counter) tell the machine's state, not its health
STATUS_TYPES = frozenset({"digital", "status", "counter", "state"})


@dataclass(frozen=True, slots=True)
class Params:
    """Tuning of the comparison; every field is a service setting."""

    band_share: float = 0.05  # Sakoe-Chiba radius as a share of the common base
    envelope_k: float = 3.0  # envelope half-width in units of normal spread
    drift_share_slow: float = 0.03  # slow sensors may drift by this share of their level
    slow_accuracy_share: float = 0.002  # slow sensors' accuracy, share of level (PT100 class A)
    first_run_share: float = 0.01  # a deviation must last this share of the cycle to count
    qualify_below: float = 0.98  # completeness under which the score is qualified
    # a cycle that compares fewer of its reference's sensors than this share gets no score
    min_compared_share: float = 0.5
    model_cycles: int = 50  # the learned model learns from the last this many healthy cycles
    model_feeds_from: int = 8  # ... and feeds the score once it has this many
    workers: int = 2  # sensors compared in parallel (the DTW kernels release the GIL)


@dataclass(frozen=True, slots=True)
class CycleData:
    """A recorded cycle: per sensor its timestamps (ns) and values."""

    stream_id: str
    cycle_id: str
    start_ns: int
    end_ns: int
    sensors: dict[str, tuple[npt.NDArray[np.int64], Array]]
    aborted: bool = False
    end_reason: str = ""
    completeness: float = 1.0
    gaps: int = 0
    sensor_types: dict[str, str] = field(default_factory=dict)
    boundary_jitter_s: float = 0.0  # how far start and end may sit off (trigger resolution)

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / NS


def resample(
    t_ns: npt.NDArray[np.int64], values: Array, start_ns: int, span_ns: int, n: int
) -> Array:
    """``values`` linearly interpolated at ``n`` points spread evenly over [start, start + span]."""
    if len(values) == 0:
        return np.full(n, np.nan)
    grid = np.linspace(0.0, 1.0, n)
    pos = (np.asarray(t_ns, dtype=np.float64) - start_ns) / span_ns
    return np.interp(grid, pos, np.asarray(values, dtype=np.float64))


def sample_span(
    t_ns: npt.NDArray[np.int64], start_ns: int, span_ns: int, n: int
) -> npt.NDArray[np.bool_]:
    """Which of ``n`` grid points over [start, start + span] lie between the first and the last
    sample: outside that span a value would be extrapolated, so it is not compared."""
    if len(t_ns) == 0:
        return np.zeros(n, dtype=bool)
    grid = np.linspace(0.0, 1.0, n)
    half_step = 0.5 / max(n - 1, 1)
    first = (float(t_ns[0]) - start_ns) / span_ns
    last = (float(t_ns[-1]) - start_ns) / span_ns
    return (grid >= first - half_step) & (grid <= last + half_step)


def base_points(counts: list[int], cap: int) -> int:
    """Points of a sensor's comparison base: the samples it really has in a cycle (the median
    over the given cycles), at most ``cap``, at least 2."""
    return max(2, min(int(cap), int(np.median(counts)) if counts else 2))


def samples_in(t_ns: npt.NDArray[np.int64], start_ns: int, end_ns: int) -> int:
    """How many of the timestamps lie within [start, end]."""
    t = np.asarray(t_ns)
    return int(np.count_nonzero((t >= start_ns) & (t <= end_ns)))


def on_common_base(cycle: CycleData, reference: Reference) -> dict[str, Array]:
    """The cycle's sensors, each on its reference's base. A completed cycle is stretched to its
    own duration (a slow cycle shows as a duration difference and as timing, not as a wrong
    shape); an aborted one keeps absolute time, so its recorded part meets the matching part of
    the reference and the rest is left out (NaN)."""
    out = {}
    for sensor_id, ref in reference.sensors.items():
        if sensor_id not in cycle.sensors:
            continue
        n = len(ref.mean)
        t, v = cycle.sensors[sensor_id]
        if cycle.aborted:
            span = round(reference.duration_s * NS)
            x = resample(t, v, cycle.start_ns, span, n)
            covered = np.linspace(0, 1, n) <= (cycle.end_ns - cycle.start_ns) / span
            x[~covered] = np.nan
        else:
            span = max(cycle.end_ns - cycle.start_ns, 1)
            x = resample(t, v, cycle.start_ns, span, n)
            x[~sample_span(t, cycle.start_ns, span, n)] = np.nan
        out[sensor_id] = x
    return out


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


def model_stats(
    model: mspc.Model, row: Array, reference_version: int, version: int | None = None
) -> ModelStats:
    """What the model says of one cycle's row (``version``: how many cycles it learnt from in
    all; by default its training rows)."""
    got = model.monitor(row)
    order = sorted(got.contributions.items(), key=lambda kv: kv[1][0], reverse=True)
    return ModelStats(
        available=True,
        reference_version=reference_version,
        model_version=model.cycles if version is None else version,
        components=model.k,
        t2=got.t2,
        t2_limit_95=got.t2_limit_95,
        t2_limit_99=got.t2_limit_99,
        spe=got.spe,
        spe_limit_95=got.spe_limit_95,
        spe_limit_99=got.spe_limit_99,
        ratio_99=got.ratio_99,
        contributions=[
            ModelContribution(sensor_id=sid, spe_share=a, t2_share=b, points=got.points[sid])
            for sid, (a, b) in order
        ],
    )


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


def stats(x: Array) -> SensorStats:
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return SensorStats(min=0.0, max=0.0, mean=0.0, std=0.0, rms=0.0)
    return SensorStats(
        min=float(x.min()),
        max=float(x.max()),
        mean=float(x.mean()),
        std=float(x.std()),
        rms=float(np.sqrt(np.mean(x * x))),
    )


@dataclass(frozen=True, slots=True)
class _Compared:
    deviation: SensorDeviation
    exceed: npt.NDArray[np.bool_]  # per point: outside the envelope (drift-compensated for slow)
    z: Array


def classify(
    dev: Array, z_shape: Array, offset_z: float, shape_z: float, timing_share: float
) -> str:
    """The deviation pattern of one sensor (see README, "Recommendations")."""
    severity = float(np.hypot(offset_z, shape_z))
    if severity < 2.0:
        return "normal"
    if offset_z >= 2.0 and shape_z < 2.0:
        return "offset"
    n = len(dev)
    outside = np.abs(z_shape) > 3
    if np.max(np.abs(z_shape)) > 6 and outside.mean() < 0.03:
        return "spike"
    if timing_share > 0.6:
        return "lag"
    t = np.linspace(-1, 1, n)
    resid = dev - dev.mean()
    slope = float(np.dot(t, resid) / np.dot(t, t))
    trend_share = float(np.sum((slope * t) ** 2) / max(np.sum(resid**2), 1e-30))
    if trend_share > 0.6:
        return "drift"
    rough = noise_level(resid)
    smooth = float(np.std(np.convolve(resid, np.ones(9) / 9, mode="same")))
    if rough > 2 * smooth:
        return "noise"
    return "shape"


def local_shape_z(z_shape: Array, radius: int) -> float:
    """The worst RMS of the shape deviation over one DTW band width (``2·radius + 1`` points),
    over 1.2 (about the worst window of a normal cycle): a short deviation (a late ramp, a spike)
    counts as what it is instead of being averaged away over the whole cycle."""
    n = len(z_shape)
    w = min(n, max(3, 2 * radius + 1))
    if n < 3:
        return 0.0
    worst = float(np.convolve(z_shape**2, np.ones(w) / w, mode="valid").max())
    return float(np.sqrt(worst)) / 1.2


def noise_ratio(x: Array, ref: SensorReference) -> float:
    """The cycle's measurement noise over the reference cycles' (both from successive
    differences on the sensor's base); 1 where the reference has no noise figure."""
    if ref.noise <= 0:
        return 1.0
    least = max(ref.noise, spread_floor(ref.mean))
    return max(noise_level(x), least) / least


def noise_excess(ratio: float) -> float:
    """Severity of a rise in measurement noise: none up to twice the reference's (real cycles
    differ that much in roughness), then 2 per doubling (4x noise counts 2, 6x counts 4)."""
    return max(0.0, 2.0 * (ratio / 2.0 - 1.0))


def compare_sensor(x: Array, ref: SensorReference, duration_s: float, params: Params) -> _Compared:
    ok = np.isfinite(x)
    if ref.coverage is not None and ref.coverage.any():
        ok &= ref.coverage
    xs, m, s = x[ok], ref.mean[ok], ref.spread[ok]
    n = len(xs)
    dev = xs - m
    offset = float(dev.mean())
    tol = offset_tolerance(ref, params)
    offset_z = abs(offset) / tol
    slow = ref.sensor_type in SLOW_TYPES
    t = np.linspace(-1.0, 1.0, n)
    # slow sensors also drift within a cycle while warming up: their in-cycle trend is judged
    # against the same tolerance as their level, and left out of the shape
    slope = float(np.dot(t, dev - offset) / np.dot(t, t)) if slow and n > 1 else 0.0
    trend_z = abs(slope) / tol
    shape_dev = dev - offset - slope * t
    z_shape = shape_dev / s
    radius = max(1, round(params.band_share * len(x)))
    shape_z = max(float(np.sqrt(np.mean(z_shape**2))), local_shape_z(z_shape, radius))
    noise_z = noise_excess(noise_ratio(xs, ref))
    severity = float(np.sqrt(offset_z**2 + trend_z**2 + shape_z**2 + noise_z**2))
    dtw = dtw_distance(xs, m, radius)
    # timing vs magnitude: the level difference is magnitude; of the level-free difference, the
    # part that warping removes is timing (DTW alone would also "explain" an offset on a ramp)
    path, dtw_shape = dtw_path(xs - xs.mean(), m - m.mean(), radius)
    euclid_sq = float(np.sum(dev**2))
    level_sq = n * offset * offset
    shape_sq = max(0.0, euclid_sq - level_sq)
    timing_sq = max(0.0, shape_sq - dtw_shape * dtw_shape)
    timing = min(1.0, timing_sq / euclid_sq) if euclid_sq > 0 else 0.0
    lag_s = float(np.max(np.abs(path[:, 0] - path[:, 1]))) / max(len(ref.mean) - 1, 1) * duration_s
    if slow:  # only what exceeds the drift tolerance counts towards leaving the envelope
        excess_offset = np.sign(offset) * max(0.0, abs(offset) - tol)
        excess_slope = np.sign(slope) * max(0.0, abs(slope) - tol)
        judged = shape_dev + excess_offset + excess_slope * t
    else:
        judged = dev
    z = np.abs(judged) / (params.envelope_k * s)
    exceed = np.zeros(len(x), dtype=bool)
    exceed[ok] = z > 1
    z_full = np.zeros(len(x))
    z_full[ok] = z
    worst = int(np.argmax(np.abs(dev)))
    pattern = classify(dev, z_shape, float(np.hypot(offset_z, trend_z)), shape_z, timing)
    deviation = SensorDeviation(
        sensor_id=ref.sensor_id,
        sensor_type=ref.sensor_type,
        unit=ref.unit,
        euclidean=float(np.sqrt(euclid_sq)),
        dtw=dtw,
        max_deviation=float(abs(dev[worst])),
        max_deviation_at_s=float(np.flatnonzero(ok)[worst] / max(len(x) - 1, 1) * duration_s),
        mean_deviation=float(np.mean(np.abs(dev))),
        outside_envelope_share=float(np.mean(np.abs(dev) > params.envelope_k * s)),
        offset=offset,
        offset_z=offset_z,
        shape_z=shape_z,
        severity=severity,
        timing_share=timing,
        magnitude_share=1.0 - timing if euclid_sq > 0 else 0.0,
        max_lag_s=lag_s,
        pattern=pattern,
        contribution=0.0,
        cycle_stats=stats(xs),
        reference_stats=stats(m),
    )
    return _Compared(deviation, exceed, z_full)


def first_deviation(
    compared: dict[str, _Compared], duration_s: float, params: Params
) -> FirstDeviation | None:
    """The sensor whose envelope exceedance that lasts long enough starts first."""
    best: tuple[float, float, str] | None = None
    for sensor_id, c in compared.items():
        n = len(c.exceed)  # each sensor has its own base: compare by time
        run = max(3, int(np.ceil(params.first_run_share * n)))
        if n < run:
            continue
        window = np.convolve(c.exceed.astype(np.int64), np.ones(run, dtype=np.int64), mode="valid")
        starts = np.flatnonzero(window == run)
        if len(starts) == 0:
            continue
        i = int(starts[0])
        at_s = i / max(n - 1, 1) * duration_s
        z = float(c.z[i : i + run].max())
        if best is None or (at_s, -z) < (best[0], -best[1]):
            best = (at_s, z, sensor_id)
    if best is None:
        return None
    return FirstDeviation(sensor_id=best[2], at_s=best[0], z=best[1])


MODEL_D_AT_LIMIT = 2.0  # the model's 99 % control limit counts as this deviation D_m
MODEL_D_NORMAL = 1.4  # D_m of a typical normal cycle (its statistic at about half the limit)


def deviation(severities: list[float], model_ratio: float | None = None) -> float:
    """The cycle's deviation ``D`` (module docstring)."""
    sev = np.asarray(severities) if severities else np.zeros(1)
    d = 0.7 * float(sev.max()) + 0.3 * float(np.sqrt(np.mean(sev**2)))
    if model_ratio is not None:
        d = float(np.sqrt(d * d + model_excess(model_ratio)))
    return d


def model_excess(model_ratio: float) -> float:
    """What the model adds to ``D²``: its ``D_m²`` beyond a typical normal cycle's."""
    return max(0.0, MODEL_D_AT_LIMIT**2 * max(model_ratio, 0.0) - MODEL_D_NORMAL**2)


def sensor_deviations(
    severities: dict[str, float],
    shares: dict[str, tuple[float, float]] | None = None,
    model_ratio: float | None = None,
) -> dict[str, float]:
    """Per sensor, its part of the cycle's deviation: its severity and, when the model fed the
    score, its share of the model's excess (from its SPE and T² contributions), in quadrature.
    The per-sensor health trend follows these, so it points at the sensor the model blames too."""
    if not shares or model_ratio is None:
        return dict(severities)
    weight = {s: max(0.0, a) + max(0.0, b) for s, (a, b) in shares.items()}
    total = sum(weight.values())
    excess = model_excess(model_ratio)
    out = {}
    for sid, sev in severities.items():
        part = excess * weight.get(sid, 0.0) / total if total > 0 else 0.0
        out[sid] = float(np.sqrt(sev * sev + part))
    return out


def result_deviations(result: AnalysisCompleted) -> dict[str, float]:
    """:func:`sensor_deviations` of an analysis result."""
    m = result.model
    fed = m is not None and m.feeds_score and m.ratio_99 is not None
    return sensor_deviations(
        {d.sensor_id: d.severity for d in result.sensors},
        {c.sensor_id: (c.spe_share, c.t2_share) for c in m.contributions} if fed and m else None,
        m.ratio_99 if fed and m else None,
    )


def score_of(d: float) -> float:
    """0-100 from the deviation ``D``: continuous and falling (module docstring)."""
    soft = float(np.logaddexp(0.0, 2.0 * (d - 1.5))) / 2.0
    return float(100.0 * np.exp(-soft / 4.0))


def health_score(severities: list[float], model_ratio: float | None = None) -> float:
    """0-100 from the sensors' severities and the model's statistics (module docstring)."""
    return score_of(deviation(severities, model_ratio))


def risk_class(score: float) -> str:
    if score >= 80:
        return "low"
    if score >= 60:
        return "medium"
    if score >= 40:
        return "high"
    return "critical"


_ADVICE: dict[tuple[str, str], str] = {
    ("temperature", "offset"): "Temperature level is off: check the cooler, coolant flow and fan.",
    ("temperature", "drift"): "Temperature keeps rising within the cycle: check cooling capacity.",
    ("pressure", "offset"): "Pressure level is off: check the relief valve setting and the pump.",
    ("pressure", "lag"): "Pressure builds late: check valve switching and the accumulator charge.",
    ("pressure", "spike"): "Pressure spikes: check for hydraulic shocks and valve chatter.",
    ("pressure", "shape"): "Pressure curve changed shape: check valves, pump and accumulator.",
    ("flow", "offset"): "Flow is off: check pump wear and internal leakage.",
    ("flow", "lag"): "Flow reacts late: check the control valve response.",
    ("vibration", "noise"): "Vibration got noisier: inspect bearings, coupling and mounting.",
    ("vibration", "offset"): "Vibration level rose: inspect the pump and motor bearings.",
    ("position", "lag"): "The axis moves late: check valve response and the drive.",
    ("power", "offset"): "Power draw changed: check for friction, leakage or a failing motor.",
    ("efficiency", "shape"): "Efficiency curve changed: check valve switching and pump leakage.",
    ("efficiency", "offset"): "Efficiency dropped: check pump leakage and the cooler.",
}
_GENERIC: dict[str, str] = {
    "offset": "The level is shifted: check the sensor's calibration and the process set point.",
    "drift": "The value drifts within the cycle: check for heating, wear or a loosening part.",
    "spike": "Short spikes: check wiring, grounding and sudden mechanical events.",
    "lag": "The signal runs late: check actuator response and control timing.",
    "noise": "More noise than usual: check wiring and shielding, then mechanical wear.",
    "shape": "The signal's shape changed: compare with the reference to find the phase.",
}


def recommendations(deviations: list[SensorDeviation]) -> list[Recommendation]:
    """Advice for each sensor that matters (contribution ≥ 10 %) and deviates."""
    out = []
    for d in deviations:
        if d.pattern == "normal" or d.contribution < 10:
            continue
        text = _ADVICE.get((d.sensor_type, d.pattern)) or _GENERIC[d.pattern]
        unit = f" {d.unit}" if d.unit else ""
        evidence = (
            f"{d.sensor_id}: {d.pattern}, offset {d.offset:+.3g}{unit} "
            f"({d.offset_z:.1f}x tolerance), shape {d.shape_z:.1f}x normal spread, "
            f"max deviation {d.max_deviation:.3g}{unit} at {d.max_deviation_at_s:.1f} s, "
            f"{d.outside_envelope_share:.0%} outside the envelope, "
            f"timing share {d.timing_share:.0%}, contribution {d.contribution:.0f} %"
        )
        out.append(
            Recommendation(sensor_id=d.sensor_id, pattern=d.pattern, text=text, evidence=evidence)
        )
    return out


def judged_by_model(
    cycle: CycleData,
    reference: Reference,
    model: mspc.Model | None,
    params: Params,
    learnt: int | None = None,
) -> ModelStats:
    """The learned model's view of a cycle, or why it has none (``learnt``: how many cycles the
    model has learnt from in all, its version; by default its training rows, or the reference's
    own cycles while there is no model)."""
    if learnt is None:
        own = 0 if reference.members is None else len(reference.members)
        learnt = model.cycles if model is not None else own

    def without(note: str) -> ModelStats:
        return ModelStats(available=False, note=note, reference_version=reference.version,
                          model_version=learnt)  # fmt: skip

    if model is None:
        return without(f"learning: {learnt} of the {mspc.MIN_CYCLES} healthy cycles it needs")
    if cycle.aborted:
        return without("an aborted cycle is not judged by the model")
    row = model_row(cycle, reference, params)
    if row is None or len(row) != model.layout.columns:
        return without("the cycle lacks a sensor of the model")
    return model_stats(model, row, reference.version, learnt)


def learns_from(result: AnalysisCompleted) -> bool:
    """Whether the model may learn from this cycle: complete, comparable, of low risk, and (once
    there is a model) within its 95 % limits, so that a slowly growing fault is not learnt."""
    if not result.comparable or result.aborted or result.qualified or result.risk_class != "low":
        return False
    m = result.model
    if m is None or not m.available:
        return True
    assert m.t2 is not None
    assert m.spe is not None
    return m.t2 <= (m.t2_limit_95 or 0) and m.spe <= (m.spe_limit_95 or 0)


def analyse(
    cycle: CycleData,
    reference: Reference,
    params: Params = Params(),
    model: mspc.Model | None = None,
    learnt: int | None = None,
) -> AnalysisCompleted:
    """Compare ``cycle`` with ``reference`` (and with the learned ``model`` of normal cycles,
    when there is one): metrics per sensor, ranking, score, advice."""
    base = on_common_base(cycle, reference)
    duration = reference.duration_s if cycle.aborted else cycle.duration_s
    usable = [(sid, x) for sid, x in base.items() if np.isfinite(x).sum() >= 2]

    def one(item: tuple[str, Array]) -> _Compared:
        return compare_sensor(item[1], reference.sensors[item[0]], duration, params)

    if params.workers > 1 and len(usable) > 1:
        with ThreadPoolExecutor(max_workers=params.workers) as pool:
            results = list(pool.map(one, usable))
    else:
        results = [one(item) for item in usable]
    compared = {sid: r for (sid, _), r in zip(usable, results, strict=True)}
    devs = [c.deviation for c in compared.values()]
    weights = np.array([d.severity**2 for d in devs])
    total = float(weights.sum())
    ranked = sorted(
        (
            d.model_copy(
                update={"contribution": 100.0 * w / total if total > 0 else 100.0 / len(devs)}
            )
            for d, w in zip(devs, weights, strict=True)
        ),
        key=lambda d: d.contribution,
        reverse=True,
    )
    missing = sorted(set(reference.sensors) - set(compared))
    needed = max(1, int(np.ceil(params.min_compared_share * len(reference.sensors))))
    comparable = len(compared) >= needed
    judged = judged_by_model(cycle, reference, model, params, learnt) if comparable else None
    feeds = (
        judged is not None and judged.available and judged.model_version >= params.model_feeds_from
    )
    ratio = judged.ratio_99 if feeds and judged is not None else None
    if feeds and judged is not None:
        judged = judged.model_copy(update={"feeds_score": True})
    score = health_score([d.severity for d in ranked], ratio) if comparable else None
    notes = []
    if not comparable:
        notes.append(
            f"not comparable: {len(compared)} of the reference's {len(reference.sensors)} "
            f"sensors compared, at least {needed} needed"
            + ("" if cycle.sensors else "; the cycle has no data")
        )
    if cycle.completeness < params.qualify_below or cycle.gaps:
        notes.append(f"data {cycle.completeness:.0%} complete, {cycle.gaps} gaps")
    if missing:
        notes.append(f"no data for {', '.join(missing)}")
    if cycle.aborted:
        notes.append(f"cycle aborted ({cycle.end_reason}); compared over its recorded part")
    timing = (
        float(
            np.average(
                [d.timing_share for d in ranked], weights=[d.contribution + 1e-9 for d in ranked]
            )
        )
        if ranked
        else 0.0
    )
    return AnalysisCompleted(
        stream_id=cycle.stream_id,
        cycle_id=cycle.cycle_id,
        reference_version=reference.version,
        health_score=score,
        risk_class=risk_class(score) if score is not None else "unknown",
        comparable=comparable,
        aborted=cycle.aborted,
        end_reason=cycle.end_reason,
        qualified=bool(notes),
        qualification="; ".join(notes),
        duration_s=cycle.duration_s,
        reference_duration_s=reference.duration_s,
        timing_share=timing,
        sensors=ranked,
        first_deviation=first_deviation(compared, duration, params),
        recommendations=recommendations(ranked),
        model=judged,
    )


def cycle_from_recording(
    recording: Frame,
    *,
    cycle_id: str,
    start_ns: int,
    end_ns: int,
    aborted: bool = False,
    end_reason: str = "",
    completeness: float = 1.0,
    gaps: int = 0,
    sensor_types: dict[str, str] | None = None,
) -> CycleData:
    """The :class:`CycleData` of a recorded cycle (good-quality samples only). Its boundaries came
    from a sampled trigger, so they are uncertain by about half the finest sampling period."""
    sensors = {}
    for s in recording.series:
        good = s.qualities() >= 192
        if s.n and good.any():
            sensors[s.sensor_id] = (s.timestamps()[good], s.values[good].astype(np.float64))
    intervals = [float(np.median(np.diff(t))) for t, _ in sensors.values() if len(t) > 1]
    finest = min(intervals) if intervals else 0.0
    return CycleData(
        stream_id=recording.stream_id,
        cycle_id=cycle_id,
        start_ns=start_ns,
        end_ns=end_ns,
        sensors=sensors,
        aborted=aborted,
        end_reason=end_reason,
        completeness=completeness,
        gaps=gaps,
        sensor_types=sensor_types or {},
        boundary_jitter_s=0.5 * finest / NS,
    )
