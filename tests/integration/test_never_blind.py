"""A VerTac v0.2.0 client, unchanged, that registers its machine again: with new sensor uuids
under the same names it keeps its reference; with a different set of sensors the reference is
retired, the cycle that found the change gets no score (risk ``unknown``, a warning alert), and a
new reference is built from the next cycles, as the first was. Real servers throughout: NATS,
PostgreSQL, the gateway and every service."""

from __future__ import annotations

import asyncio
import copy
import math
import uuid
from datetime import UTC, datetime

import httpx
import psycopg
import pytest

from schemas.compat import V02_REGISTER
from schemas.messages import AnalysisCompleted, CycleConfig
from services.alerts.app import serve as serve_alerts
from services.alerts.config import Settings as AlertsSettings
from services.common.config import CommonSettings
from services.ingest.app import serve as serve_ingest
from services.ingest.config import Settings as IngestSettings
from tests.conftest import GatewayUrl, eventually
from tests.integration.test_cycles import set_config
from tests.scenarios import start_cycles_and_analysis

pytestmark = pytest.mark.integration

RATE_HZ = 50
CYCLE_S = 1.5


def sensors(names: list[str]) -> list[dict[str, str]]:
    """v0.2.0 sensors as such a client registers them: a new uuid each time."""
    return [
        {"sensor_id": str(uuid.uuid4()), "name": n, "type": "analog", "unit": ""} for n in names
    ]


def value(name: str, phase: float) -> float:
    """The same cycle every time: a pressure hump, a flow ramp, a level with a dip."""
    if "pressure" in name or "speed" in name:
        return 100.0 + 50.0 * math.sin(math.pi * phase)
    if "flow" in name or "torque" in name:
        return 20.0 + 10.0 * phase
    return 40.0 - 5.0 * math.sin(2 * math.pi * phase)


async def run_cycle(client: httpx.AsyncClient, stream_id: str, registered: list[dict]) -> None:
    """One cycle as a v0.2.0 client runs it: start, samples as they are measured, stop."""
    r = await client.post("/api/live/cycle/start", params={"stream_id": stream_id})
    assert r.status_code == 202, r.text
    start = datetime.now(UTC).timestamp()
    sent_until = start
    while sent_until < start + CYCLE_S:
        await asyncio.sleep(0.1)
        now = min(datetime.now(UTC).timestamp(), start + CYCLE_S)
        ts = [sent_until + (k + 1) / RATE_HZ for k in range(int((now - sent_until) * RATE_HZ))]
        if not ts:
            if now >= start + CYCLE_S:
                break
            continue
        sent_until = ts[-1]
        samples = [
            {
                "timestamp": datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z"),
                "sensor_id": s["sensor_id"],
                "sensor_name": s["name"],
                "value": value(s["name"], (t - start) / CYCLE_S),
                "unit": "",
                "quality": 1.0,
            }
            for t in ts
            for s in registered
        ]
        r = await client.post("/api/live/batch", json={"stream_id": stream_id, "samples": samples})
        assert r.status_code == 200, r.text
    r = await client.post("/api/live/cycle/stop", params={"stream_id": stream_id})
    assert r.status_code == 202, r.text


@pytest.mark.timeout(300)
async def test_a_v02_client_registering_again_keeps_or_retires_its_reference(
    bus, gateway: GatewayUrl, common: CommonSettings, running
) -> None:
    running.start(serve_ingest(IngestSettings(metrics_port=0), common, running.stop))
    running.start(serve_alerts(AlertsSettings(metrics_port=0), common, running.stop))
    start_cycles_and_analysis(running, common)
    results: list[AnalysisCompleted] = []
    device = f"Press-07 {datetime.now(UTC):%H%M%S%f}"

    async def register(names: list[str]) -> tuple[str, list[dict]]:
        body = copy.deepcopy(V02_REGISTER)
        body.update(device_name=device, sensor_count=len(names), sensors=sensors(names))
        r = await client.post("/api/live/register", json=body)
        assert r.status_code == 201, r.text
        return r.json()["stream_id"], body["sensors"]

    async def analysed(n: int) -> bool:
        return len(results) >= n

    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers, timeout=30) as client:
        stream_id, first = await register(["pressure", "flow", "level"])
        await set_config(bus, stream_id, CycleConfig(trigger="manual", stop_grace_s=0.3))

        async def on_result(msg) -> None:  # type: ignore[no-untyped-def]
            results.append(AnalysisCompleted.model_validate_json(msg.data))

        await bus.nc.subscribe(f"vertac.analysis.{stream_id}", cb=on_result)
        for _ in range(4):  # three make the reference, the fourth is compared with it
            await run_cycle(client, stream_id, first)
        await eventually(lambda: analysed(1), timeout=60)
        assert results[0].reference_version == 1 and results[0].comparable
        assert {d.sensor_id for d in results[0].sensors} == {s["sensor_id"] for s in first}

        # the same sensors, new uuids (a v0.2.0 client makes them on every start)
        _, again = await register(["pressure", "flow", "level"])
        await run_cycle(client, stream_id, again)
        await eventually(lambda: analysed(2), timeout=60)
        kept = results[1]
        assert kept.reference_version == 1, kept.qualification
        assert kept.comparable and kept.health_score is not None, kept.qualification
        assert {d.sensor_id for d in kept.sensors} == {s["sensor_id"] for s in again}
        assert "no data for" not in kept.qualification

        # a real change of the sensor set: no score, the reference retired, a warning alert
        _, changed = await register(["spindle_speed", "torque"])
        await run_cycle(client, stream_id, changed)
        await eventually(lambda: analysed(3), timeout=60)
        blind = results[2]
        assert (blind.comparable, blind.health_score, blind.risk_class) == (False, None, "unknown")
        assert "not comparable: 0 of the reference's 3 sensors compared" in blind.qualification
        assert "reference version 1 retired" in blind.qualification
        detail = (await client.get(f"/api/live/cycles/{blind.cycle_id}")).json()
        assert detail["analysis"]["health_score"] is None
        assert detail["analysis"]["risk_class"] == "unknown"

        async def alert_raised() -> bool:
            r = await client.get("/api/live/alerts", params={"stream_id": stream_id})
            return any(a["rule"] == "_comparable" and a["state"] == "raised" for a in r.json())

        await eventually(alert_raised, timeout=30)
        refs = (await client.get(f"/api/live/stream/{stream_id}/references")).json()
        (v1,) = [x for x in refs if x["reference_version"] == 1]
        assert not v1["active"] and "retired" in v1["description"]

        # the new reference is built from the first three cycles since the change (the one
        # that found it among them), and the next cycle is scored against it
        for _ in range(3):
            await run_cycle(client, stream_id, changed)
        await eventually(lambda: analysed(4), timeout=60)
        rebuilt = results[3]
        assert rebuilt.reference_version == 2 and rebuilt.comparable
        assert rebuilt.health_score is not None and rebuilt.risk_class != "unknown"
        assert {d.sensor_id for d in rebuilt.sensors} == {s["sensor_id"] for s in changed}

        async def alert_cleared() -> bool:
            r = await client.get("/api/live/alerts", params={"stream_id": stream_id})
            return any(a["rule"] == "_comparable" and a["state"] == "cleared" for a in r.json())

        await eventually(alert_cleared, timeout=30)
    async with await psycopg.AsyncConnection.connect(common.database_url) as conn:
        cur = await conn.execute(
            "SELECT health_score, risk_class FROM live_deviations WHERE cycle_id = %s",
            (blind.cycle_id,),
        )
        assert await cur.fetchall() == [(None, "unknown")]
