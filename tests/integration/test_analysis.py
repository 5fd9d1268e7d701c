"""Cycles and analysis together on real servers: a faulty sensor is found, an abort is marked."""

from __future__ import annotations

import asyncio
import json

import psycopg
import pytest
import websockets

from edge.run import SimulateOptions, simulate
from edge.simulator import Fault, build_machine
from schemas.messages import AnalysisCompleted, CycleConfig
from services.common.config import CommonSettings
from tests.conftest import GatewayUrl, eventually
from tests.integration.test_cycles import set_config
from tests.scenarios import start_cycles_and_analysis

pytestmark = pytest.mark.integration


async def test_an_injected_fault_is_ranked_first_and_an_abort_is_marked(
    bus, common: CommonSettings, running, stream_id: str, gateway: GatewayUrl
) -> None:
    await set_config(bus, stream_id, CycleConfig(trigger="signal", signal_sensor="cycle_active",
                                                 start_above=0.5, stop_below=0.5, gap_timeout_s=1))  # fmt: skip
    results: list[AnalysisCompleted] = []

    async def on_result(msg) -> None:
        results.append(AnalysisCompleted.model_validate_json(msg.data))

    await bus.nc.subscribe(f"vertac.analysis.{stream_id}", cb=on_result)
    start_cycles_and_analysis(running, common)
    model = build_machine(stream_id=stream_id, sensors=6, rate_hz=100, cycle_s=4, active_signal=True,
                          faults=(Fault("pressure_2", "offset", 8.0, 4),))  # fmt: skip
    ws_url = gateway.replace("http", "ws") + f"/api/live/ws/stream/{stream_id}"
    browser: list[dict] = []

    async def listen() -> None:
        async with websockets.connect(
            ws_url, max_size=None, additional_headers=gateway.headers
        ) as ws:
            async for text in ws:
                browser.append(json.loads(text))

    listener = asyncio.ensure_future(listen())
    await asyncio.sleep(0.5)
    # cycles 0-2 make the reference, 3 is healthy, 4 has the fault, 5 is cut off by silence
    await simulate(bus, model, SimulateOptions(speed=0, frames=227))

    async def three() -> bool:
        return len(results) >= 3 and sum(m["type"] == "analysis_result" for m in browser) >= 3

    await eventually(three, timeout=60)
    listener.cancel()
    changes = [m["data"]["event"]["state"] for m in browser if m["type"] == "state_change"]
    assert changes.count("completed") == 5
    assert "running" in changes
    assert "aborted" in changes
    shown = [m["data"]["result"]["cycle_id"] for m in browser if m["type"] == "analysis_result"]
    assert shown == [r.cycle_id for r in results[:3]]
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
