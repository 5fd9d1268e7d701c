"""The cycles service against real servers: commands, signal trigger, recordings, restarts."""

from __future__ import annotations

import asyncio
import signal

import psycopg
import pytest

from edge.run import SimulateOptions, simulate
from edge.simulator import build_machine
from schemas import subjects
from schemas.frames import unpack
from schemas.messages import CycleConfig, CycleStateChanged
from schemas.timeutil import datetime_of
from services.common.config import CommonSettings
from services.cycles.app import serve
from services.cycles.config import Settings
from tests.conftest import bus_url, eventually
from tests.e2e.test_processes import service_env, start_service, still_running

pytestmark = pytest.mark.integration


async def collect_events(bus, stream_id: str) -> list[CycleStateChanged]:
    events: list[CycleStateChanged] = []

    async def on_msg(msg) -> None:
        events.append(CycleStateChanged.model_validate_json(msg.data))

    await bus.nc.subscribe(f"vertac.cycles.{stream_id}.*", cb=on_msg)
    return events


async def cycle_rows(url: str, stream_id: str) -> list[tuple]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            "SELECT cycle_id, state, end_reason, frames, completeness FROM live_cycles"
            " WHERE stream_id = %s ORDER BY started_at",
            (stream_id,),
        )
        return await cur.fetchall()


async def set_config(bus, stream_id: str, config: CycleConfig) -> None:
    kv = await bus.js.key_value(subjects.KV_CYCLE_CONFIG)
    await kv.put(stream_id, config.model_dump_json().encode())


def settings() -> Settings:
    return Settings(metrics_port=0, tick_s=0.1)


async def test_a_signal_triggered_cycle_is_recorded_completely(
    bus, common: CommonSettings, running, stream_id: str
) -> None:
    await set_config(bus, stream_id, CycleConfig(trigger="signal", signal_sensor="cycle_active",
                                                 start_above=0.5, stop_below=0.5))  # fmt: skip
    events = await collect_events(bus, stream_id)
    running.start(serve(settings(), common, running.stop))
    model = build_machine(
        stream_id=stream_id, sensors=4, rate_hz=100, cycle_s=4, active_signal=True
    )
    # 2.5 machine cycles: two complete ones (active from 0.4 s to 3.2 s of each 4 s cycle)
    await simulate(bus, model, SimulateOptions(speed=0, frames=100))

    async def two_completed() -> list[CycleStateChanged]:
        return [e for e in events if e.state == "completed"]

    done = await eventually(two_completed)
    await asyncio.sleep(0.5)
    completed = [e for e in events if e.state == "completed"]
    assert len(completed) == 2
    first = completed[0]
    assert first.duration_s == pytest.approx(2.8, abs=0.02)
    assert first.samples["pressure_1"] == pytest.approx(281, abs=2)
    assert first.completeness == 1.0
    assert first.gaps == 0
    store = await bus.js.object_store(subjects.OBJ_CYCLES)
    recording = unpack((await store.get(first.recording)).data)
    pressure = next(s for s in recording.series if s.sensor_id == "pressure_1")
    assert pressure.n == first.samples["pressure_1"]
    assert first.started_ns is not None and first.ended_ns is not None  # exact, in ns
    assert first.started_at == datetime_of(first.started_ns)
    assert first.ended_at == datetime_of(first.ended_ns)
    assert first.started_ns <= pressure.timestamps()[0]
    assert pressure.timestamps()[-1] <= first.ended_ns
    rows = await cycle_rows(common.database_url, stream_id)
    assert [r[1] for r in rows][:2] == ["completed", "completed"]
    assert done[0].cycle_id == rows[0][0]


async def test_manual_commands_and_an_abnormal_stop(
    bus, common: CommonSettings, running, stream_id: str
) -> None:
    from datetime import UTC, datetime

    from schemas.messages import CycleCommand

    events = await collect_events(bus, stream_id)
    running.start(serve(settings(), common, running.stop))
    model = build_machine(stream_id=stream_id, sensors=2, rate_hz=50)
    sim = asyncio.ensure_future(simulate(bus, model, SimulateOptions(speed=1, duration_s=6)))
    await asyncio.sleep(1)

    async def command(name: str) -> None:
        cmd = CycleCommand(
            stream_id=stream_id, command=name, issued_at=datetime.now(UTC), source="test"
        )
        await bus.js.publish(subjects.control(stream_id), cmd.model_dump_json().encode())

    await command("cycle_start")
    await asyncio.sleep(1.5)
    await command("cycle_stop")

    async def completed() -> bool:
        return any(e.state == "completed" for e in events)

    await eventually(completed)
    done = next(e for e in events if e.state == "completed")
    assert done.duration_s == pytest.approx(1.5, abs=0.3)
    assert done.samples["pressure_1"] == pytest.approx(done.duration_s * 50, abs=3)
    await command("cycle_start")
    await sim  # the machine stops sending: the running cycle must end on the data gap

    async def aborted() -> bool:
        return any(e.state == "aborted" for e in events)

    await eventually(aborted, timeout=20)
    gone = next(e for e in events if e.state == "aborted")
    assert "no data for" in gone.reason
    rows = await cycle_rows(common.database_url, stream_id)
    assert [r[1] for r in rows] == ["completed", "aborted"]


async def test_cycles_killed_mid_cycle_and_restarted_completes_the_cycle_once(
    bus, common: CommonSettings, nats_server, stream_id: str, tmp_path
) -> None:
    await set_config(bus, stream_id, CycleConfig(trigger="signal", signal_sensor="cycle_active",
                                                 start_above=0.5, stop_below=0.5))  # fmt: skip
    events = await collect_events(bus, stream_id)
    env = service_env(common, bus_url(nats_server, "cycles"), VERTAC_CYCLES_METRICS_PORT="0")
    proc = start_service("cycles", env, tmp_path)
    model = build_machine(
        stream_id=stream_id, sensors=4, rate_hz=100, cycle_s=4, active_signal=True
    )
    sim = asyncio.ensure_future(simulate(bus, model, SimulateOptions(speed=1, frames=42)))
    try:

        async def started() -> bool:
            still_running(proc, "cycles", tmp_path)
            return any(e.state == "running" for e in events)

        await eventually(started)
        await asyncio.sleep(0.8)  # in the middle of the cycle
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        await asyncio.sleep(1.0)
        proc = start_service("cycles", env, tmp_path)
        await sim

        async def completed() -> bool:
            return any(e.state == "completed" for e in events)

        await eventually(completed, timeout=30)
        await asyncio.sleep(1.0)
    finally:
        proc.terminate()
        proc.wait(10)
    done = [e for e in events if e.state == "completed"]
    assert len(done) == 1  # one cycle, not split, not duplicated
    assert done[0].duration_s == pytest.approx(2.8, abs=0.02)
    assert done[0].completeness == 1.0
    rows = await cycle_rows(common.database_url, stream_id)
    assert [(r[0], r[1]) for r in rows] == [(done[0].cycle_id, "completed")]
