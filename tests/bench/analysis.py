"""Analysis benchmark (``make bench``): one 16-sensor x 6,000-point cycle against its reference.

Baseline in the same run: tslearn's unbanded DTW over the same 16 sensor pairs. Prints medians.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np

from edge.simulator import Fault, Simulation, build_machine
from services.analysis.dtw import warm_up
from services.analysis.logic import CycleData, analyse, build_reference, on_common_base

NS = 1_000_000_000
N_POINTS = 6000
REPEATS = int(os.environ.get("VERTAC_BENCH_REPEATS", "5"))


def cycle(seed: int, faults: tuple[Fault, ...] = ()) -> CycleData:
    model = build_machine(sensors=16, rate_hz=600, slow_rate_hz=600, cycle_s=10, seed=seed,
                          faults=faults, drift_per_hour=0.0)  # fmt: skip
    frame = Simulation(model, 0).frame(0, 0, 10 * NS)
    sensors = {s.sensor_id: (s.timestamps(), s.values.astype(np.float64)) for s in frame.series}
    return CycleData("bench", f"c{seed}", 0, 10 * NS - NS // 600, sensors,
                     sensor_types={m.id: m.type for m in model.sensors})  # fmt: skip


def main() -> None:
    t0 = time.perf_counter()
    warm_up()
    print(f"VerTac analysis benchmark: 16 sensors x {N_POINTS} points, {REPEATS} runs")
    print(f"  JIT warm-up at start: {time.perf_counter() - t0:.2f} s")
    t0 = time.perf_counter()
    reference = build_reference([cycle(s) for s in range(1, 6)], version=1, n_points=N_POINTS)
    print(f"  reference from 5 cycles (DBA): {time.perf_counter() - t0:.2f} s")
    target = cycle(42, (Fault("pressure_2", "lag", 5.0), Fault("flow_1", "offset", 2.0)))
    first = time.perf_counter()
    analyse(target, reference)
    print(f"  first analysis in the process: {(time.perf_counter() - first) * 1000:.0f} ms")
    ours = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        result = analyse(target, reference)
        ours.append(time.perf_counter() - t)
    from tslearn.metrics import dtw as tslearn_dtw

    base = on_common_base(target, reference)
    theirs = []
    for _ in range(max(1, REPEATS // 2)):
        t = time.perf_counter()
        for sensor_id, x in base.items():
            tslearn_dtw(x, reference.sensors[sensor_id].mean)
        theirs.append(time.perf_counter() - t)
    ours_ms, theirs_ms = statistics.median(ours) * 1000, statistics.median(theirs) * 1000
    print(
        f"  VerTac analyse(), full comparison: median {ours_ms:.0f} ms per cycle "
        f"(top sensor {result.sensors[0].sensor_id}, score {result.health_score:.0f})"
    )
    print(f"  baseline tslearn unbanded DTW only, 16 pairs: median {theirs_ms:.0f} ms per cycle")
    print(f"  ratio: {theirs_ms / ours_ms:.1f}x faster than the baseline's DTW alone")


if __name__ == "__main__":
    main()
