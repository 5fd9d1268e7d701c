"""The InfluxDB sink against a real line-protocol server (VictoriaMetrics' /api/v2/write)."""

from __future__ import annotations

import json

import httpx
import pytest

from edge.registry_client import register
from edge.run import SimulateOptions, simulate
from edge.simulator import build_machine
from schemas import subjects
from schemas.frames import Frame
from services.common.config import CommonSettings
from services.embedded import free_port
from services.ingest.app import serve
from services.ingest.config import Settings
from tests.conftest import eventually
from tests.helpers import frame_count

pytestmark = pytest.mark.integration


async def exported(victoria_url: str, stream_id: str) -> dict[str, list]:
    async with httpx.AsyncClient() as client:
        await client.get(f"{victoria_url}/internal/force_flush")
        r = await client.get(
            f"{victoria_url}/api/v1/export",
            params={"match[]": f'{{__name__=~"sensor_readings_.*",stream_id="{stream_id}"}}'},
        )
    series: dict[str, list] = {}
    for line in r.text.splitlines():
        item = json.loads(line)
        key = f"{item['metric']['__name__']}/{item['metric']['sensor_name']}"
        series.setdefault(key, []).extend(zip(item["timestamps"], item["values"], strict=True))
        series.setdefault("dataset_id", []).append(item["metric"].get("dataset_id"))
    return series


async def test_frames_are_written_as_sensor_readings_and_read_back(
    bus, common: CommonSettings, running, stream_id: str, victoria
) -> None:
    settings = Settings(metrics_port=0, influx_url=victoria.url, influx_bucket="vertac")
    running.start(serve(settings, common, running.stop))
    sent: list[Frame] = []
    model = build_machine(stream_id=stream_id, sensors=4, rate_hz=100)
    kv = await bus.js.key_value(subjects.KV_STREAMS)
    registration = model.registration().model_copy(update={"dataset_id": "line-a"})
    await register(bus.js, kv, registration)
    await simulate(bus, model, SimulateOptions(speed=0, frames=30), on_frame=sent.append)
    expected = sum(f.n_samples for f in sent)

    async def all_points() -> dict[str, list] | None:
        got = await exported(victoria.url, stream_id)
        values = [p for k, v in got.items() if k.startswith("sensor_readings_value/") for p in v]
        return got if len(values) == expected else None

    got = await eventually(all_points, timeout=40, interval=0.5)
    flow = sorted(got["sensor_readings_value/flow_1"])
    sent_flow = [
        (int(t // 1_000_000), float(v))
        for f in sent
        for s in f.series
        if s.sensor_id == "flow_1"
        for t, v in zip(s.timestamps(), s.values, strict=True)
    ]
    assert [t for t, _ in flow] == [t for t, _ in sent_flow]
    assert [v for _, v in flow] == pytest.approx([v for _, v in sent_flow], rel=1e-6)
    assert {v for _, v in got["sensor_readings_quality/flow_1"]} == {192}
    assert set(got["dataset_id"]) == {"line-a"}  # the stream's dataset, as v0.2.0 tagged it
    # latency = ingest time - sample time; the accelerated simulator runs ahead of the clock
    latency = got["sensor_readings_latency_ms/flow_1"]
    assert len(latency) == len(sent_flow)
    assert all(abs(v) < 60_000 for _, v in latency)


async def test_an_unreachable_influxdb_never_holds_back_postgresql(
    bus, common: CommonSettings, running, stream_id: str
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    settings = Settings(metrics_port=0, influx_url=dead, influx_retry_delay_s=0.2)
    running.start(serve(settings, common, running.stop))
    model = build_machine(stream_id=stream_id, sensors=4, rate_hz=100)
    await simulate(bus, model, SimulateOptions(speed=0, frames=40))

    async def all_in_postgres() -> bool:
        return await frame_count(common.database_url, stream_id) == 40

    await eventually(all_in_postgres)

    async def kept() -> bool:
        info = await bus.js.consumer_info("VERTAC_SAMPLES", "ingest-influx")
        return info.num_ack_pending + info.num_pending == 40

    await eventually(kept)  # the sink's frames wait on the bus, retried in place, not dropped
    info = await bus.js.consumer_info("VERTAC_SAMPLES", "ingest-influx")
    assert info.num_redelivered == 0  # kept alive while retrying: never counted towards poison
    assert (await bus.js.stream_info("VERTAC_DLQ")).state.messages == 0
