"""Self-consistency at default settings across sampling rates: a machine sampled at 1 Hz, 10 Hz,
100 Hz or 1 kHz, with noise and cycle-to-cycle jitter, is judged on what was measured."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from edge.simulator import Fault, Simulation, build_machine
from services.analysis.app import params_of
from services.analysis.config import Settings
from services.analysis.logic import CycleData, analyse, build_reference

NS = 1_000_000_000
SETTINGS = Settings()  # every analysis setting at its default
PARAMS = params_of(SETTINGS)
JITTER = 0.004  # per cycle: 0.4 % of the cycle early or late, 0.4 % stronger or weaker
HEALTHY_CYCLES = 8


@dataclass(frozen=True)
class Machine:
    rate_hz: float
    cycle_s: float

    @property
    def name(self) -> str:
        return f"{self.rate_hz:g} Hz x {self.cycle_s:g} s"


MACHINES = [Machine(1, 60), Machine(10, 30), Machine(100, 10), Machine(1000, 10)]


def cycles(machine: Machine, count: int, faults: tuple[Fault, ...] = (), seed: int = 5,
           first: int = 0) -> list[CycleData]:  # fmt: skip
    """``count`` consecutive cycles from cycle ``first`` on; temperatures sample at 1 Hz (or at
    the machine's rate where that is slower), the other sensors at the machine's rate."""
    model = build_machine(sensors=8, rate_hz=machine.rate_hz, slow_rate_hz=min(1.0, machine.rate_hz),
                          cycle_s=machine.cycle_s, noise=0.01, drift_per_hour=0.0, faults=faults,
                          seed=seed, jitter=JITTER)  # fmt: skip
    sim = Simulation(model, 0)
    span = round(machine.cycle_s * NS)
    types = {m.id: m.type for m in model.sensors}
    out = []
    for c in range(first, first + count):
        start = c * span
        frame = sim.frame(c, start, start + span)
        sensors = {s.sensor_id: (s.timestamps(), s.values.astype(np.float64)) for s in frame.series}
        end = start + span - round(NS / machine.rate_hz)  # the last sample of the cycle
        out.append(CycleData("sim", f"c{seed}-{c}", start, end, sensors, sensor_types=types))
    return out


def reference_of(members: list[CycleData]):
    return build_reference(members, version=1, n_points=SETTINGS.n_points, params=PARAMS)


def score(cycle: CycleData, reference) -> float:
    return analyse(cycle, reference, PARAMS).health_score


@pytest.fixture(scope="module", params=MACHINES, ids=lambda m: m.name)
def machine(request) -> tuple[Machine, list[CycleData], object]:
    m: Machine = request.param
    healthy = cycles(m, HEALTHY_CYCLES + SETTINGS.auto_reference_cycles)
    members = healthy[: SETTINGS.auto_reference_cycles]  # the automatic reference's cycles
    return m, healthy, reference_of(members)


def test_each_sensor_is_compared_on_the_samples_it_really_has(machine) -> None:
    m, _, reference = machine
    for sensor_id, ref in reference.sensors.items():
        rate = min(1.0, m.rate_hz) if sensor_id.startswith("temperature") else m.rate_hz
        assert len(ref.mean) == min(SETTINGS.n_points, round(rate * m.cycle_s)), sensor_id


def test_reference_cycles_score_healthy_against_their_reference(machine) -> None:
    _, healthy, reference = machine
    members = healthy[: SETTINGS.auto_reference_cycles]
    scores = [score(c, reference) for c in members]
    assert min(scores) >= 95, scores


def test_a_reference_cycle_left_out_still_scores_healthy(machine) -> None:
    _, healthy, _ = machine
    k = SETTINGS.auto_reference_cycles
    pool = healthy[: k + 1]  # leave each one out of a reference of the other k
    loo = [score(c, reference_of([o for o in pool if o is not c])) for c in pool]
    assert min(loo) >= 85, loo


def test_healthy_cycles_score_healthy(machine) -> None:
    _, healthy, reference = machine
    scores = [score(c, reference) for c in healthy[SETTINGS.auto_reference_cycles :]]
    assert min(scores) >= 85, scores


def fault_cases(m: Machine) -> list[Fault]:
    """One fault of each kind the simulator has, the same at every rate: pressure_1 (150 bar
    amplitude, 1.5 bar noise) shifted by 20 bar, drifting 0.8 bar per cycle (19 bar by the
    cycle judged), 6x noisier, with spikes of 120 bar, 6 % of the cycle late, stuck; flow_1
    (40 l/min amplitude) shifted by 6 l/min."""
    lag = 0.06 * m.cycle_s / 0.05  # the simulator's lag magnitude is in units of 0.05 s
    return [
        Fault("pressure_1", "offset", 20.0),
        Fault("pressure_1", "drift", 0.8),
        Fault("pressure_1", "noise", 6.0),
        Fault("pressure_1", "spike", 4.0),
        Fault("pressure_1", "lag", lag),
        Fault("pressure_1", "stuck"),
        Fault("flow_1", "offset", 6.0),
    ]


@pytest.mark.parametrize("case", range(7), ids=["offset", "drift", "noise", "spike", "lag",
                                                "stuck", "flow-offset"])  # fmt: skip
def test_each_fault_scores_low_with_its_sensor_first(machine, case: int) -> None:
    m, _, reference = machine
    fault = fault_cases(m)[case]
    cycle = cycles(m, 1, (fault,), seed=5, first=SETTINGS.auto_reference_cycles + 20)[0]
    if fault.kind == "spike":
        clean = cycles(m, 1, (), seed=5, first=SETTINGS.auto_reference_cycles + 20)[0]
        _, v = cycle.sensors[fault.sensor_id]
        assert np.any(np.abs(v - clean.sensors[fault.sensor_id][1]) > 50), "no spike was injected"
    result = analyse(cycle, reference, PARAMS)
    assert result.health_score < 60, (fault, result.health_score)
    assert result.sensors[0].sensor_id == fault.sensor_id, [
        (d.sensor_id, round(d.severity, 1)) for d in result.sensors[:3]
    ]
