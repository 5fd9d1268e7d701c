"""Comparing one sensor of a cycle with its reference: distances, point-wise deviation, level
and shape in units of the normal spread, timing vs magnitude, the pattern; and the first
deviator. Pure numpy; no I/O."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from schemas.messages import (
    FirstDeviation,
    SensorDeviation,
    SensorStats,
)
from services.analysis.cycle import Params
from services.analysis.dtw import dtw_distance_and_path
from services.analysis.reference import noise_level, offset_tolerance, spread_floor
from services.common.references import (
    SLOW_TYPES,
    SensorReference,
)

Array = npt.NDArray[np.float64]


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
    """The deviation pattern of one sensor (docs/concepts/analysis.md, "Patterns")."""
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
    # timing vs magnitude: the level difference is magnitude; of the level-free difference, the
    # part that warping removes is timing (DTW alone would also "explain" an offset on a ramp).
    # Both DTWs in one pass
    dtw, path, dtw_shape = dtw_distance_and_path(xs, m, xs - xs.mean(), m - m.mean(), radius)
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
