"""Cycles and analysis together on real servers: a faulty sensor is found, an abort is marked."""

from __future__ import annotations

import psycopg
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

pytestmark = pytest.mark.integration


async def test_an_injected_fault_is_ranked_first_and_an_abort_is_marked(
    bus, common: CommonSettings, running, stream_id: str
) -> None:
    await set_config(bus, stream_id, CycleConfig(trigger="signal", signal_sensor="cycle_active",
                                                 start_above=0.5, stop_below=0.5, gap_timeout_s=1))  # fmt: skip
    results: list[AnalysisCompleted] = []

    async def on_result(msg) -> None:
        results.append(AnalysisCompleted.model_validate_json(msg.data))

    await bus.nc.subscribe(f"vertac.analysis.{stream_id}", cb=on_result)
    running.start(serve_cycles(CyclesSettings(metrics_port=0, tick_s=0.1), common, running.stop))
    running.start(
        serve_analysis(AnalysisSettings(metrics_port=0, n_points=500), common, running.stop)
    )
    model = build_machine(stream_id=stream_id, sensors=6, rate_hz=100, cycle_s=4, active_signal=True,
                          faults=(Fault("pressure_2", "offset", 8.0, 4),))  # fmt: skip
    # cycles 0-2 make the reference, 3 is healthy, 4 has the fault, 5 is cut off by silence
    await simulate(bus, model, SimulateOptions(speed=0, frames=227))

    async def three() -> bool:
        return len(results) >= 3

    await eventually(three, timeout=60)
    healthy, faulty, cut = results[:3]
    assert healthy.reference_version == 1
    assert healthy.health_score > 85
    assert faulty.sensors[0].sensor_id == "pressure_2"
    assert faulty.sensors[0].pattern == "offset"
    assert faulty.health_score < healthy.health_score - 30
    assert faulty.recommendations[0].sensor_id == "pressure_2"
    assert cut.aborted
    assert "no data for" in cut.end_reason
    assert cut.qualified
    async with await psycopg.AsyncConnection.connect(common.database_url) as conn:
        cur = await conn.execute(
            "SELECT cycle_id, reference_version, health_score FROM live_deviations WHERE stream_id = %s"
            " ORDER BY created_at",
            (stream_id,),
        )
        rows = await cur.fetchall()
        cur = await conn.execute(
            "SELECT version, active, array_length(source_cycles, 1) FROM live_references WHERE stream_id = %s",
            (stream_id,),
        )
        refs = await cur.fetchall()
    assert [r[0] for r in rows] == [healthy.cycle_id, faulty.cycle_id, cut.cycle_id]
    assert refs == [(1, True, 3)]
