"""A cycle as the analysis sees it: its samples, the settings, and each sensor on the reference's
base (as many points as it really has samples). Pure numpy; no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from schemas.frames import Frame
from schemas.timeutil import NS
from services.common.references import (
    Reference,
)

Array = npt.NDArray[np.float64]

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
