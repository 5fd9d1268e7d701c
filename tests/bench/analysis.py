"""Analysis benchmark (``make bench``): comparison, reference building, PDF reports, and the
health score's separation of real faults on the hydraulic rig data (at default settings).

Baselines measured in the same run: tslearn's DTW (unbanded, and with the same Sakoe-Chiba band)
over the same 16 sensor pairs, and tslearn's DTW barycenter averaging over the same cycles.
Prints medians; nothing here asserts a speed.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import numpy as np

from edge.simulator import Fault, Simulation, build_machine
from schemas.messages import CycleDetail, CycleSummary, ReferenceInfo
from services.analysis.app import params_of
from services.analysis.config import Settings
from services.analysis.dtw import warm_up
from services.analysis.logic import CycleData, analyse, build_reference, on_common_base
from services.analysis.requests import reference_curves
from services.gateway.logic import cycle_overlay
from services.gateway.report import cycle_pdf

NS = 1_000_000_000
N_POINTS = 6000
REPEATS = int(os.environ.get("VERTAC_BENCH_REPEATS", "5"))
SETTINGS = Settings()
PARAMS = params_of(SETTINGS)


def cycle(seed: int, faults: tuple[Fault, ...] = (), rate_hz: float = 600) -> CycleData:
    model = build_machine(sensors=16, rate_hz=rate_hz, slow_rate_hz=rate_hz, cycle_s=10,
                          seed=seed, faults=faults, drift_per_hour=0.0, jitter=0.003)  # fmt: skip
    frame = Simulation(model, 0).frame(0, 0, 10 * NS)
    sensors = {s.sensor_id: (s.timestamps(), s.values.astype(np.float64)) for s in frame.series}
    return CycleData("bench", f"c{seed}", 0, 10 * NS - round(NS / rate_hz), sensors,
                     sensor_types={m.id: m.type for m in model.sensors})  # fmt: skip


def median_s(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def comparison() -> None:
    print(f"  16 sensors x {N_POINTS} points, {REPEATS} runs, medians")
    members = [cycle(s) for s in range(1, 6)]
    reference = build_reference(members, version=1, n_points=N_POINTS, params=PARAMS)
    ours = median_s(
        lambda: build_reference(members, version=1, n_points=N_POINTS, params=PARAMS),
        max(3, REPEATS // 2),
    )
    from tslearn.barycenters import dtw_barycenter_averaging

    radius = round(PARAMS.band_share * N_POINTS)
    one = np.stack([on_common_base(c, reference)["pressure_1"] for c in members])[:, :, None]
    banded = {"global_constraint": "sakoe_chiba", "sakoe_chiba_radius": radius}
    t = time.perf_counter()
    dtw_barycenter_averaging(one, metric_params=banded, max_iter=1)
    theirs_one = time.perf_counter() - t
    print(f"  reference from 5 cycles (banded DBA from the medoid, 16 sensors): {ours:.2f} s")
    print(f"  baseline tslearn banded DBA, one iteration of one sensor: {theirs_one:.2f} s "
          f"(x16 sensors = {16 * theirs_one:.1f} s per iteration; ratio "
          f"{16 * theirs_one / ours:.0f}x for one iteration against our whole reference)")  # fmt: skip
    target = cycle(42, (Fault("pressure_2", "lag", 5.0), Fault("flow_1", "offset", 2.0)))
    result = analyse(target, reference, PARAMS)
    mine = median_s(lambda: analyse(target, reference, PARAMS), REPEATS)
    from tslearn.metrics import dtw as tslearn_dtw

    base = on_common_base(target, reference)
    pairs = [(x, reference.sensors[sid].mean) for sid, x in base.items()]
    unbanded = median_s(lambda: [tslearn_dtw(x, m) for x, m in pairs], max(1, REPEATS // 2))
    with_band = median_s(
        lambda: [tslearn_dtw(x, m, **banded) for x, m in pairs], max(1, REPEATS // 2)
    )
    print(f"  VerTac analyse(), full comparison: {mine * 1000:.0f} ms per cycle "
          f"(top sensor {result.sensors[0].sensor_id}, score {result.health_score:.0f})")  # fmt: skip
    print(f"  baseline tslearn DTW only, 16 pairs: unbanded {unbanded * 1000:.0f} ms, banded "
          f"{with_band * 1000:.0f} ms; ratio {unbanded / mine:.1f}x and {with_band / mine:.1f}x "
          "against the whole comparison")  # fmt: skip


def reports() -> None:
    rate = 1000.0
    members = [cycle(s, rate_hz=rate) for s in range(1, 4)]
    reference = build_reference(members, version=1, n_points=SETTINGS.n_points, params=PARAMS)
    target = cycle(9, (Fault("flow_1", "offset", 4.0),), rate_hz=rate)
    result = analyse(target, reference, PARAMS)
    model = build_machine(sensors=16, rate_hz=rate, slow_rate_hz=rate, cycle_s=10, seed=9,
                          faults=(Fault("flow_1", "offset", 4.0),), drift_per_hour=0.0)  # fmt: skip
    recording = Simulation(model, 0).frame(0, 0, 10 * NS)
    now = datetime.now(UTC)
    detail = CycleDetail(
        cycle=CycleSummary(cycle_id="c9", stream_id="bench", cycle_no=9, state="completed",
                           started_at=now, ended_at=now, duration_s=10.0, end_reason="",
                           samples={s.sensor_id: s.n for s in recording.series}, frames=100,
                           gaps=0, completeness=1.0),
        analysis=result,
    )  # fmt: skip
    info = ReferenceInfo(stream_id="bench", reference_version=1, active=True, source_cycles=[],
                         n_points=reference.n_points, duration_s=reference.duration_s,
                         description="", created_at=now, sensors=sorted(reference.sensors),
                         curves=reference_curves(reference, PARAMS.envelope_k))  # fmt: skip
    order = [d.sensor_id for d in result.sensors]

    def one() -> bytes:
        overlay = cycle_overlay("c9", recording, info, order, {}, 800)
        return cycle_pdf(detail, overlay, None)

    pages = one()
    single = median_s(one, REPEATS)
    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(lambda _: one(), range(6)))
    six = time.perf_counter() - t
    print(f"  PDF report, 16 sensors x 10,000 samples ({len(pages) // 1024} KiB): {single:.2f} s; "
          f"six at once in threads: {six:.2f} s for all six")  # fmt: skip


def evaluation() -> None:
    """``vertac evaluate``'s figures (rig AUCs per method, healthy spread, drift lead)."""
    from pathlib import Path

    from services.analysis import evaluate as ev
    from services.analysis.app import params_of, trend_params_of

    params = params_of(SETTINGS)
    data = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "hydraulic-1hz"
    print("  vertac evaluate, default settings:")
    if (data / "profile.txt").exists():
        found = ev.evaluate_rig(data, params, SETTINGS.auto_reference_cycles, SETTINGS.n_points)
        for line in ev.rig_report(found):
            print(f"    {line}")
    else:
        print(f"    hydraulic data set not found at {data}: the rig table is skipped")
    drift = ev.evaluate_drift(
        Fault.parse("pressure_1:drift:0.1:10"), params, trend_params_of(SETTINGS),
        SETTINGS.auto_reference_cycles, SETTINGS.n_points,
    )  # fmt: skip
    healthy = ev.evaluate_drift(
        Fault.parse("pressure_1:drift:0:10"), params, trend_params_of(SETTINGS),
        SETTINGS.auto_reference_cycles, SETTINGS.n_points,
    )  # fmt: skip
    for line in [*ev.drift_report(drift, ev.SIM_CYCLE_S), *ev.baseline_report(healthy)]:
        print(f"    {line}")


def main() -> None:
    t0 = time.perf_counter()
    warm_up()
    print("VerTac analysis benchmark")
    print(f"  JIT warm-up at start: {time.perf_counter() - t0:.2f} s")
    comparison()
    reports()
    evaluation()


if __name__ == "__main__":
    main()
