"""Cycle comparison: metrics, timing vs magnitude, ranking, score, advice."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edge.simulator import Fault, Simulation, build_machine
from services.analysis.logic import CycleData, Params, analyse, build_reference, health_score

NS = 1_000_000_000


def sim_cycle(
    faults: tuple[Fault, ...] = (), seed: int = 1, cycle_no: int = 0, stretch: float = 1.0
) -> CycleData:
    """One 10 s cycle of the simulated machine (6 sensors at 100 Hz)."""
    model = build_machine(sensors=6, rate_hz=100, cycle_s=10, noise=0.01, faults=faults, seed=seed,
                          drift_per_hour=0.0)  # fmt: skip
    sim = Simulation(model, 0)
    start = cycle_no * 10 * NS
    frame = sim.frame(0, start, start + 10 * NS)
    sensors = {}
    for s in frame.series:
        t = s.timestamps()
        t = start + ((t - start) * stretch).astype(np.int64)
        sensors[s.sensor_id] = (t, s.values.astype(np.float64))
    end = start + round(10 * NS * stretch) - NS // 100
    types = {m.id: m.type for m in model.sensors}
    return CycleData("sim", f"c{seed}-{cycle_no}", start, end, sensors, sensor_types=types)


@pytest.fixture(scope="module")
def reference():
    return build_reference([sim_cycle(seed=s) for s in range(2, 7)], version=3, n_points=1000)


def test_a_healthy_cycle_scores_high_with_nothing_to_recommend(reference) -> None:
    result = analyse(sim_cycle(seed=11), reference)
    assert result.health_score > 90
    assert result.risk_class == "low"
    assert result.reference_version == 3
    assert result.recommendations == []
    assert sum(d.contribution for d in result.sensors) == pytest.approx(100)


def test_an_offset_is_magnitude_and_ranks_its_sensor_first(reference) -> None:
    result = analyse(sim_cycle((Fault("flow_1", "offset", 4.0),), seed=12), reference)
    top = result.sensors[0]
    assert top.sensor_id == "flow_1"
    assert top.pattern == "offset"
    assert top.offset == pytest.approx(4.0, abs=0.2)
    assert top.magnitude_share > 0.9
    assert result.health_score < 60
    assert result.recommendations[0].sensor_id == "flow_1"
    assert "flow_1: offset, offset +" in result.recommendations[0].evidence


def test_a_lag_is_timing_and_dtw_forgives_it(reference) -> None:
    result = analyse(sim_cycle((Fault("pressure_2", "lag", 8.0),), seed=13), reference)
    top = result.sensors[0]
    assert top.sensor_id == "pressure_2"
    assert top.timing_share > 0.8
    assert top.dtw < 0.3 * top.euclidean
    assert top.pattern == "lag"
    assert top.max_lag_s > 0.2


@pytest.mark.parametrize("kind", ["offset", "noise", "spike", "drift", "lag"])
def test_the_score_falls_monotonically_with_fault_severity(reference, kind: str) -> None:
    scores = [
        analyse(
            sim_cycle((Fault("pressure_1", kind, m),) if m else (), seed=20, cycle_no=1), reference
        ).health_score
        for m in (0.0, 2.0, 4.0, 8.0, 16.0)
    ]
    assert scores == sorted(scores, reverse=True), scores
    assert scores[0] - scores[-1] > 30


def test_the_first_deviator_is_the_sensor_that_left_its_envelope_first(reference) -> None:
    cycle = sim_cycle(seed=14)
    sensors = dict(cycle.sensors)
    for sensor_id, at_s, step in (("power_1", 6.0, 3.0), ("flow_1", 3.0, 8.0)):
        t, v = sensors[sensor_id]
        sensors[sensor_id] = (t, v + np.where(t >= cycle.start_ns + at_s * NS, step, 0.0))
    result = analyse(CycleData("sim", "fd", cycle.start_ns, cycle.end_ns, sensors,
                               sensor_types=cycle.sensor_types), reference)  # fmt: skip
    assert result.first_deviation is not None
    assert result.first_deviation.sensor_id == "flow_1"
    assert result.first_deviation.at_s == pytest.approx(3.0, abs=0.1)


def test_an_aborted_cycle_is_compared_over_its_recorded_part(reference) -> None:
    full = sim_cycle(seed=15)
    half = {
        k: (t[t < full.start_ns + 5 * NS], v[t < full.start_ns + 5 * NS])
        for k, (t, v) in full.sensors.items()
    }
    aborted = CycleData("sim", "ab", full.start_ns, full.start_ns + 5 * NS, half, aborted=True,
                        end_reason="data gap 3.0 s", sensor_types=full.sensor_types)  # fmt: skip
    result = analyse(aborted, reference)
    assert result.aborted
    assert result.end_reason == "data gap 3.0 s"
    assert result.qualified
    assert "aborted" in result.qualification
    assert result.health_score > 80  # what it did run was normal


def test_incomplete_data_qualifies_the_score(reference) -> None:
    cycle = sim_cycle(seed=16)
    gappy = CycleData(cycle.stream_id, cycle.cycle_id, cycle.start_ns, cycle.end_ns, cycle.sensors,
                      completeness=0.9, gaps=2, sensor_types=cycle.sensor_types)  # fmt: skip
    result = analyse(gappy, reference)
    assert result.qualified
    assert "90% complete, 2 gaps" in result.qualification


def test_a_uniformly_slower_cycle_is_not_a_shape_change(reference) -> None:
    result = analyse(sim_cycle(seed=17, stretch=1.1), reference)
    assert result.duration_s == pytest.approx(11.0, abs=0.05)
    assert result.health_score > 85


def test_health_score_is_continuous_high_for_normal_and_decreasing() -> None:
    values = [health_score([s]) for s in (0.0, 0.5, 1.0, 1.5, 2, 3, 5, 8, 13)]
    assert all(a > b for a, b in itertools.pairwise(values))  # strictly falling
    assert 95 < values[0] <= 100
    assert 90 < health_score([0.5, 1.0]) < 100  # a normal cycle: high, but not clipped to 100
    assert values[-1] < 10


def test_the_score_is_calibrated_on_the_models_control_limits() -> None:
    # README, "Calibration": with every sensor at its normal spread (D = 1), the model's 99 %
    # limit scores 89, 1.6 times it 80, 3.4 times it 60, 6.9 times it 40
    assert abs(health_score([1.0], model_ratio=1.0) - 89) < 1
    assert abs(health_score([1.0], model_ratio=1.56) - 80) < 1
    assert abs(health_score([1.0], model_ratio=3.36) - 60) < 1
    assert abs(health_score([1.0], model_ratio=6.91) - 40) < 1
    # a typical normal cycle of the model (half its limit) costs nothing
    assert health_score([1.0], model_ratio=0.45) == health_score([1.0])
    # the model can only lower a score, never raise one
    assert health_score([4.0], model_ratio=0.1) == health_score([4.0])


def test_slow_sensors_tolerate_warm_up_drift_but_not_a_step() -> None:
    n = 60
    t = np.arange(n, dtype=np.int64) * NS
    shape = 40 + 0.3 * np.sin(np.linspace(0, np.pi, n))
    ref = build_reference(
        [CycleData("r", f"r{i}", 0, 59 * NS, {"temp": (t, shape + 0.01 * i)}, sensor_types={"temp": "temperature"})
         for i in range(3)],
        version=1, n_points=n,
    )  # fmt: skip
    warm = CycleData("r", "w", 0, 59 * NS, {"temp": (t, shape - 0.8 + np.linspace(0, 0.3, n))},
                     sensor_types={"temp": "temperature"})  # fmt: skip
    step = CycleData(
        "r", "s", 0, 59 * NS, {"temp": (t, shape + 8.0)}, sensor_types={"temp": "temperature"}
    )
    assert analyse(warm, ref, Params()).health_score > 85
    assert analyse(step, ref, Params()).risk_class in ("high", "critical")


def test_a_cycle_without_data_or_with_too_few_sensors_gets_no_score(reference) -> None:
    import dataclasses

    full = sim_cycle(seed=21)
    empty = analyse(dataclasses.replace(full, sensors={}, aborted=True, end_reason="x"), reference)
    assert (empty.comparable, empty.health_score, empty.risk_class) == (False, None, "unknown")
    assert "the cycle has no data" in empty.qualification and empty.qualified
    n = len(reference.sensors)
    keep = sorted(reference.sensors)[: (n + 1) // 2 - 1]  # one short of half
    few = analyse(dataclasses.replace(full, sensors={k: full.sensors[k] for k in keep}), reference)
    assert few.health_score is None and few.risk_class == "unknown"
    assert (
        f"not comparable: {len(keep)} of the reference's {n} sensors compared" in few.qualification
    )
    half = sorted(reference.sensors)[: (n + 1) // 2]
    enough = analyse(
        dataclasses.replace(full, sensors={k: full.sensors[k] for k in half}), reference
    )
    assert enough.comparable and enough.health_score is not None
    assert "no data for" in enough.qualification


def test_a_reference_finds_its_sensors_again_by_name(reference) -> None:
    from services.common.references import (
        matched,
        reference_from_bytes,
        reference_to_bytes,
        with_names,
    )

    named = with_names(reference, {sid: f"name-{sid}" for sid in reference.sensors})
    stored = reference_from_bytes(reference_to_bytes(named))
    assert {r.name for r in stored.sensors.values()} == {f"name-{s}" for s in reference.sensors}
    today = {f"new-{sid}": f"name-{sid}" for sid in reference.sensors}
    renamed, found = matched(stored, today)
    assert found == len(reference.sensors)
    assert set(renamed.sensors) == set(today)
    assert all(r.sensor_id == sid for sid, r in renamed.sensors.items())
    # a name two of today's sensors bear, or a reference without names, matches nothing
    first = sorted(reference.sensors)[0]
    _, found = matched(stored, {**today, "twin": f"name-{first}"})
    assert found == len(reference.sensors) - 1
    _, found = matched(reference, today)
    assert found == 0


def test_each_sensor_carries_its_share_of_the_models_excess_for_its_trend() -> None:
    from services.analysis.score import model_excess, sensor_deviations

    severities = {"p": 1.0, "v": 1.0}
    assert sensor_deviations(severities) == severities  # no model: the severities
    parts = sensor_deviations(severities, {"p": (0.9, 0.8), "v": (0.1, -0.2)}, model_ratio=4.0)
    assert parts["p"] > 3 * parts["v"] - 2 and parts["v"] >= 1.0
    # the parts add up to the model's excess (beyond a typical normal cycle)
    total = sum(v * v - 1.0 for v in parts.values())
    assert abs(total - model_excess(4.0)) < 1e-9
    assert model_excess(0.3) == 0.0  # a typical normal cycle adds nothing
