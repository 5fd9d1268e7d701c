"""The simulated machine: rates, continuity across frames, faults."""

from __future__ import annotations

import numpy as np
import pytest

from edge.simulator import Fault, Simulation, build_machine

NS = 1_000_000_000


def test_sensors_keep_their_own_rate_and_frames_join_without_gaps() -> None:
    model = build_machine(sensors=8, rate_hz=1000, slow_rate_hz=1)
    sim = Simulation(model, 0)
    frames = [sim.frame(i, i * NS // 10, (i + 1) * NS // 10) for i in range(20)]
    fast = np.concatenate(
        [s.timestamps() for f in frames for s in f.series if s.sensor_id == "pressure_1"]
    )
    slow = np.concatenate(
        [s.timestamps() for f in frames for s in f.series if s.sensor_id == "temperature_1"]
    )
    assert len(fast) == 2000
    assert np.all(np.diff(fast) == 1_000_000)
    assert slow.tolist() == [0, NS]


@pytest.mark.parametrize("kind", ["offset", "noise", "drift", "lag", "stuck", "spike"])
def test_a_fault_changes_only_its_sensor_from_its_cycle_on(kind: str) -> None:
    healthy = build_machine(sensors=4, rate_hz=100, cycle_s=2, noise=0.01)
    faulty = build_machine(sensors=4, rate_hz=100, cycle_s=2, noise=0.01,
                           faults=(Fault("pressure_2", kind, 8.0, 1),))  # fmt: skip
    a = Simulation(healthy, 0).frame(0, 0, 4 * NS)
    b = Simulation(faulty, 0).frame(0, 0, 4 * NS)
    sa = {s.sensor_id: s.values for s in a.series}
    sb = {s.sensor_id: s.values for s in b.series}
    if kind != "spike":  # spikes draw from the generator, which shifts the others' noise
        assert np.array_equal(sa["pressure_1"], sb["pressure_1"])
    first_cycle = slice(0, 200)
    later = slice(200, 400)
    if kind != "spike":
        assert np.array_equal(sa["pressure_2"][first_cycle], sb["pressure_2"][first_cycle])
    assert not np.allclose(sa["pressure_2"][later], sb["pressure_2"][later])


def test_fault_text_is_parsed_and_checked() -> None:
    assert Fault.parse("pressure_1:offset:5:2") == Fault("pressure_1", "offset", 5.0, 2)
    with pytest.raises(ValueError, match="kind one of"):
        Fault.parse("pressure_1:melt")
    with pytest.raises(ValueError, match="sensors are"):
        build_machine(sensors=2, faults=(Fault("nope", "offset"),))
