"""Alerts against real servers: limits raise and clear, flapping counts, acknowledge, browser."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta

import httpx
import pytest
import websockets

from services.alerts.app import serve as serve_alerts
from services.alerts.config import Settings as AlertsSettings
from services.common.config import CommonSettings
from tests.conftest import GatewayUrl, admin_token, eventually
from tests.scenarios import start_cycles_and_analysis

pytestmark = pytest.mark.integration


def samples(values: list[float], t0: float) -> list[dict]:
    return [{"timestamp": t0 + 0.1 * i, "values": {"pressure": v}} for i, v in enumerate(values)]


async def test_limit_alerts_raise_clear_flap_and_are_acknowledged(
    gateway: GatewayUrl, bus, common: CommonSettings, running, stream_id: str
) -> None:
    running.start(serve_alerts(AlertsSettings(metrics_port=0, rules_refresh_s=0.1, tick_s=0.1),
                               common, running.stop))  # fmt: skip
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers, timeout=30) as client:
        reg = {
            "device_name": "Press",
            "stream_id": stream_id,
            "sensors": [{"id": "pressure", "unit": "bar"}],
        }
        assert (await client.post("/api/live/register", json=reg)).status_code == 201
        r = await client.put(
            f"/api/live/stream/{stream_id}/alert-rules/p-high", json={"kind": "limit"}
        )
        assert r.status_code == 422
        assert "a limit rule needs sensor_id" in r.json()["error"]
        r = await client.put(f"/api/live/stream/{stream_id}/alert-rules/p-high",
                             json={"kind": "limit", "sensor_id": "nope", "hi": 100})  # fmt: skip
        assert r.json()["details"][0]["field"] == "body.sensor_id"
        rule = {"kind": "limit", "sensor_id": "pressure", "hi": 100, "hihi": 200, "deadband": 5}
        r = await client.put(f"/api/live/stream/{stream_id}/alert-rules/p-high", json=rule)
        assert r.status_code == 200, r.text
        assert [
            x["rule_id"]
            for x in (await client.get(f"/api/live/stream/{stream_id}/alert-rules")).json()
        ] == ["p-high"]
        await asyncio.sleep(0.5)  # the alerts service re-reads its rules

        ws = await websockets.connect(
            gateway.replace("http", "ws") + f"/api/live/ws/stream/{stream_id}",
            additional_headers=gateway.headers,
        )
        t0 = 1_800_000_000.0
        await client.post("/api/live/batch", json={"stream_id": stream_id,
                                                   "samples": samples([50, 150, 160, 97, 94, 50], t0)})  # fmt: skip

        async def alerts() -> list[dict]:
            return (await client.get("/api/live/alerts", params={"stream_id": stream_id})).json()

        async def cleared() -> list[dict] | None:
            rows = await alerts()
            return rows if rows and rows[0]["state"] == "cleared" else None

        (first,) = await eventually(cleared)
        assert first["severity"] == "warning"
        assert first["value"] == 150
        history = (await client.get(f"/api/live/alerts/{first['alert_id']}/history")).json()
        assert [h["state"] for h in history] == ["raised", "cleared"]

        # flapping: five more crossings within the re-raise window -> the same alert, counted
        for k in range(5):
            await client.post("/api/live/batch", json={"stream_id": stream_id,
                                                       "samples": samples([150, 50], t0 + 1 + k)})  # fmt: skip

        async def counted() -> list[dict] | None:
            rows = await alerts()
            return rows if rows[0]["occurrences"] == 6 and rows[0]["state"] == "cleared" else None

        rows = await eventually(counted)
        assert len(rows) == 1

        # alerts of a time span (a cycle's report asks for the alerts active during the cycle)
        raised_at = datetime.fromisoformat(rows[0]["raised_at"])
        cleared_at = datetime.fromisoformat(rows[0]["cleared_at"])
        second = timedelta(seconds=1)

        async def active(**span: datetime) -> list[str]:
            params = {"stream_id": stream_id, **{k: v.isoformat() for k, v in span.items()}}
            return [a["rule"] for a in (await client.get("/api/live/alerts", params=params)).json()]

        assert await active(since=raised_at, until=cleared_at) == ["p-high"]
        assert await active(since=cleared_at + second) == []
        assert await active(until=raised_at - second) == []
        r = await client.get("/api/live/alerts", params={"since": "yesterday"})
        assert r.status_code == 422

        # raised and staying high, escalating to critical; then acknowledged
        await client.post("/api/live/batch", json={"stream_id": stream_id,
                                                   "samples": samples([150, 250, 260], t0 + 10)})  # fmt: skip

        async def raised() -> list[dict] | None:
            rows = await alerts()
            return (
                rows if rows[0]["state"] == "raised" and rows[0]["severity"] == "critical" else None
            )

        (alert,) = await eventually(raised)
        # the signed-in operator is recorded, whatever name the body gives
        ada = {
            "Authorization": f"Bearer {await admin_token(common.database_url, 'ada', 'operator')}"
        }
        r = await client.post(
            f"/api/live/alerts/{alert['alert_id']}/ack",
            json={"user": "mallory", "comment": "valve checked"},
            headers=ada,
        )
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "acknowledged"
        r = await client.post(f"/api/live/alerts/{alert['alert_id']}/ack", json={"user": "ada"})
        assert r.status_code == 409
        (acked,) = await alerts()
        assert (acked["state"], acked["acknowledged_by"], acked["comment"]) == (
            "acknowledged",
            "ada",
            "valve checked",
        )
        r = await client.post("/api/live/alerts/nope.x.1/ack", json={"user": "ada"})
        assert r.status_code in (404, 422)

        seen = []
        while len([m for m in seen if m["type"] == "alert"]) < 3:
            seen.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        await ws.close()
        assert {m["data"]["alert"]["state"] for m in seen if m["type"] == "alert"} >= {
            "raised", "cleared",
        }  # fmt: skip


async def test_the_envelope_rule_fires_during_a_faulty_cycle(
    bus, common: CommonSettings, running, stream_id: str
) -> None:
    from edge.run import SimulateOptions, simulate
    from edge.simulator import Fault, build_machine
    from schemas import subjects
    from schemas.messages import AlertChanged, AlertRule, CycleConfig, CycleStateChanged

    kv_config = await bus.js.key_value(subjects.KV_CYCLE_CONFIG)
    await kv_config.put(stream_id, CycleConfig(trigger="signal", signal_sensor="cycle_active",
                                               start_above=0.5, stop_below=0.5).model_dump_json().encode())  # fmt: skip
    kv_rules = await bus.js.key_value(subjects.KV_ALERT_RULES)
    rule = AlertRule(
        rule_id="env", stream_id=stream_id, kind="envelope", sensor_id="flow_1", delay_on_ms=50
    )
    await kv_rules.put(f"{stream_id}.env", rule.model_dump_json().encode())
    alerts: list[AlertChanged] = []
    ends: list[CycleStateChanged] = []

    async def on_alert(msg) -> None:
        alerts.append(AlertChanged.model_validate_json(msg.data))

    async def on_cycle(msg) -> None:
        ends.append(CycleStateChanged.model_validate_json(msg.data))

    await bus.nc.subscribe(f"vertac.alerts.{stream_id}.*", cb=on_alert)
    await bus.nc.subscribe(f"vertac.cycles.{stream_id}.completed", cb=on_cycle)
    start_cycles_and_analysis(running, common)
    running.start(
        serve_alerts(AlertsSettings(metrics_port=0, rules_refresh_s=0.1), common, running.stop)
    )
    model = build_machine(stream_id=stream_id, sensors=4, rate_hz=50, cycle_s=4, active_signal=True,
                          faults=(Fault("flow_1", "offset", 8.0, 4),))  # fmt: skip
    # 3 reference cycles, 1 normal one, 1 faulty one; paced so the reference exists in time
    await simulate(bus, model, SimulateOptions(speed=2, frames=200))

    async def five() -> bool:
        return len(ends) >= 5

    await eventually(five, timeout=30)
    raised = [a for a in alerts if a.state == "raised"]
    assert raised, "no envelope alert during the faulty cycle"
    alert = raised[0]
    assert ends[3].ended_at < alert.at < ends[4].ended_at  # during the faulty cycle
    assert alert.kind == "envelope"
    assert alert.sensor_id == "flow_1"
    assert "outside the reference envelope" in alert.message
