"""A 1 Hz machine and a 1 kHz machine through the running system, every analysis setting at its
default: the automatic reference, healthy cycles, and a faulty one found with its sensor."""

from __future__ import annotations

import pytest

from edge.run import SimulateOptions, simulate
from edge.simulator import Fault, build_machine
from schemas.messages import AnalysisCompleted, CycleConfig
from services.analysis.app import serve as serve_analysis
from services.analysis.config import Settings as AnalysisSettings
from services.common.config import CommonSettings
from services.cycles.app import serve as serve_cycles
from services.cycles.config import Settings as CyclesSettings
from tests.conftest import eventually
from tests.integration.test_cycles import set_config
from tests.scenarios import SIGNAL_TRIGGER

pytestmark = pytest.mark.e2e

FAULTY = 6  # cycles 0-2 make the automatic reference, 3-5 are healthy, 6 has the fault


@pytest.mark.parametrize(
    ("rate_hz", "cycle_s", "frame_ms"),
    [(1.0, 60.0, 1000.0), (1000.0, 10.0, 100.0)],
    ids=["1 Hz x 60 s", "1 kHz x 10 s"],
)
async def test_a_machine_is_judged_on_what_it_measures(
    bus, common: CommonSettings, running, stream_id: str, rate_hz: float, cycle_s: float,
    frame_ms: float,
) -> None:  # fmt: skip
    await set_config(bus, stream_id, CycleConfig(**SIGNAL_TRIGGER))
    results: dict[str, AnalysisCompleted] = {}

    async def on_result(msg) -> None:
        r = AnalysisCompleted.model_validate_json(msg.data)
        results[r.cycle_id] = r

    await bus.nc.subscribe(f"vertac.analysis.{stream_id}", cb=on_result)
    settings = AnalysisSettings(metrics_port=0)  # every analysis setting at its default
    running.start(serve_cycles(CyclesSettings(metrics_port=0), common, running.stop))
    running.start(serve_analysis(settings, common, running.stop))
    model = build_machine(stream_id=stream_id, sensors=6, rate_hz=rate_hz, cycle_s=cycle_s,
                          active_signal=True, jitter=0.004, drift_per_hour=0.0,
                          faults=(Fault("flow_1", "offset", 6.0, FAULTY),))  # fmt: skip
    frames = round((FAULTY + 1.5) * cycle_s * 1000 / frame_ms)
    await simulate(bus, model, SimulateOptions(speed=0, frames=frames, frame_ms=frame_ms))

    async def analysed() -> bool:
        return len(results) >= FAULTY + 1 - settings.auto_reference_cycles

    await eventually(analysed, timeout=120)
    ordered = sorted(results.values(), key=lambda r: r.cycle_id)
    *healthy, faulty = ordered[: FAULTY + 1 - settings.auto_reference_cycles]
    assert all(r.reference_version == 1 for r in ordered)
    assert min(r.health_score for r in healthy) >= 85, [r.health_score for r in healthy]
    assert faulty.health_score < 60, faulty.health_score
    assert faulty.sensors[0].sensor_id == "flow_1"
    assert faulty.sensors[0].pattern == "offset"
