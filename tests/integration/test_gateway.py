"""The gateway's REST and WebSocket API against real servers."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime

import httpx
import pytest
import websockets

from edge.run import SimulateOptions, simulate
from edge.simulator import build_machine
from schemas import subjects
from schemas.messages import CycleCommand
from services.common.config import CommonSettings
from services.gateway.state import DASHBOARD
from services.ingest.app import serve as serve_ingest
from services.ingest.config import Settings as IngestSettings
from tests.conftest import GatewayUrl, eventually
from tests.helpers import frame_count, stored_frames

pytestmark = pytest.mark.integration


def registration(stream_id: str) -> dict:
    return {
        "device_name": "Press 7",
        "stream_id": stream_id,
        "sensors": [
            {"id": "pressure", "type": "pressure", "unit": "bar", "rate_hz": 10},
            {"id": "temp", "type": "temperature", "unit": "°C", "rate_hz": 1},
        ],
    }


async def test_register_then_batch_is_persisted(
    gateway: GatewayUrl, common: CommonSettings, running, stream_id: str
) -> None:
    running.start(serve_ingest(IngestSettings(metrics_port=0), common, running.stop))
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers) as client:
        r = await client.post("/api/live/register", json=registration(stream_id))
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "registered"
        assert r.json()["samples_subject"] == f"vertac.samples.{stream_id}"
        body = {
            "stream_id": stream_id,
            "samples": [
                {"timestamp": "2026-01-01T00:00:00Z", "values": {"pressure": 1.5, "temp": 20.0}},
                {
                    "timestamp": 1767225600.1,
                    "values": {"pressure": 2.5},
                    "quality": {"pressure": 64},
                },
            ],
        }
        r = await client.post("/api/live/batch", json=body)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["samples_received"] == 3
        assert answer["buffer_status"] == "ok"
        assert answer["buffer"]["stream"] == "VERTAC_SAMPLES"
        assert answer["buffer"]["duplicate"] is False

        async def stored() -> bool:
            return await frame_count(common.database_url, stream_id) == 1

        await eventually(stored)
        (frame,) = await stored_frames(common.database_url, stream_id)
        series = {s.sensor_id: s for s in frame.series}
        assert series["pressure"].values.tolist() == [1.5, 2.5]
        assert series["pressure"].timestamps().tolist() == [
            1767225600_000_000_000,
            1767225600_100_000_000,
        ]
        assert series["pressure"].qualities().tolist() == [192, 64]
        assert series["temp"].values.tolist() == [20.0]

        r = await client.get(f"/api/live/stream/{stream_id}/status")
        assert r.status_code == 200
        status = r.json()
        assert status["registered"] is True
        assert status["samples_persisted"] == 3
        assert status["cycle_state"] == "idle"


async def test_a_retried_batch_with_the_same_batch_id_is_stored_once(
    gateway: GatewayUrl, common: CommonSettings, running, stream_id: str
) -> None:
    running.start(serve_ingest(IngestSettings(metrics_port=0), common, running.stop))
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers) as client:
        await client.post("/api/live/register", json=registration(stream_id))
        body = {
            "stream_id": stream_id,
            "batch_id": "b-1",
            "samples": [{"timestamp": 1.0, "values": {"pressure": 1.0}}],
        }
        first = (await client.post("/api/live/batch", json=body)).json()
        second = (await client.post("/api/live/batch", json=body)).json()
        assert first["buffer"]["duplicate"] is False
        assert second["buffer"]["duplicate"] is True
        marker = {**body, "batch_id": "b-2"}
        await client.post("/api/live/batch", json=marker)

        async def two() -> bool:
            return await frame_count(common.database_url, stream_id) == 2

        await eventually(two)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"samples": [{"timestamp": 1, "values": {"pressure": 1}}]}, "body.stream_id"),
        ({"stream_id": "S", "samples": []}, "body.samples"),
        ({"stream_id": "S", "samples": [{"timestamp": "yesterday", "values": {"pressure": 1}}]},
         "body.samples.0.timestamp"),
        ({"stream_id": "S", "samples": [{"timestamp": 1, "values": {"pressure": "high"}}]},
         "body.samples.0.values.pressure"),
        ({"stream_id": "S", "samples": [{"timestamp": 1, "values": {"nope": 1}}]},
         "body.samples.0.values.nope"),
        ({"stream_id": "has space", "samples": [{"timestamp": 1, "values": {"p": 1}}]},
         "body.stream_id"),
        ({"stream_id": "S", "samples": [{"timestamp": 1, "values": {"pressure": 1}}], "x": 1},
         "body.x"),
    ],
)  # fmt: skip
async def test_bad_batch_bodies_get_422_naming_the_field(
    gateway: GatewayUrl, stream_id: str, body: dict, field: str
) -> None:
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers) as client:
        await client.post("/api/live/register", json=registration(stream_id))
        if body.get("stream_id") == "S":
            body = {**body, "stream_id": stream_id}
        r = await client.post("/api/live/batch", json=body)
    assert r.status_code == 422, r.text
    fields = [d["field"] for d in r.json()["details"]]
    assert any(f.startswith(field) for f in fields), fields


async def test_bad_registrations_and_unknown_streams_get_clear_errors(
    gateway: GatewayUrl, stream_id: str
) -> None:
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers) as client:
        r = await client.post(
            "/api/live/register",
            json={"device_name": "x", "sensors": [{"id": "a"}, {"id": "a"}]},
        )
        assert r.status_code == 422
        assert "sensor ids repeat: a" in r.text
        r = await client.post(
            "/api/live/batch",
            json={"stream_id": stream_id, "samples": [{"timestamp": 1, "values": {"a": 1}}]},
        )
        assert r.status_code == 404
        assert r.json()["details"][0]["field"] == "stream_id"
        assert "not registered" in r.json()["error"]
        r = await client.get(f"/api/live/stream/{stream_id}/status")
        assert r.status_code == 404
        r = await client.post("/api/live/cycle/start", params={"stream_id": "bad id"})
        assert r.status_code == 422


async def test_cycle_commands_over_rest_reach_the_control_subject(
    gateway: GatewayUrl, bus, stream_id: str
) -> None:
    received: list[CycleCommand] = []

    async def on_msg(msg) -> None:
        received.append(CycleCommand.model_validate_json(msg.data))

    await bus.nc.subscribe(subjects.control(stream_id), cb=on_msg)
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers) as client:
        await client.post("/api/live/register", json=registration(stream_id))
        r = await client.post("/api/live/cycle/start", params={"stream_id": stream_id})
        assert r.status_code == 202
        r = await client.post("/api/live/cycle/stop", params={"stream_id": stream_id})
        assert r.status_code == 202

    async def both() -> bool:
        return len(received) == 2

    await eventually(both)
    assert [c.command for c in received] == ["cycle_start", "cycle_stop"]
    assert all(c.source == "rest" for c in received)


async def test_websocket_receives_decimated_samples_and_answers_commands(
    gateway: GatewayUrl, bus, stream_id: str
) -> None:
    model = build_machine(stream_id=stream_id, sensors=16, rate_hz=1000)
    commands: list[CycleCommand] = []

    async def on_cmd(msg) -> None:
        commands.append(CycleCommand.model_validate_json(msg.data))

    await bus.nc.subscribe(subjects.control(stream_id), cb=on_cmd)
    ws_url = gateway.replace("http", "ws") + f"/api/live/ws/stream/{stream_id}"
    async with websockets.connect(ws_url, additional_headers=gateway.headers) as ws:
        # first, once subscribed: "ready" (the browser reads its state over REST from then on)
        ready = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert set(ready) == {"type", "timestamp", "data"}  # the v0.2.0 envelope
        assert ready["type"] == "ready" and ready["data"] == {"stream_id": stream_id}
        assert datetime.fromisoformat(ready["timestamp"]).tzinfo is not None
        sim = asyncio.ensure_future(
            simulate(bus, model, SimulateOptions(speed=1, duration_s=1.5, frame_ms=100))
        )
        samples = []
        while len(samples) < 5:
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if message["type"] == "samples":
                samples.append(message)
        await sim
        await ws.send(json.dumps({"type": "ping"}))
        await ws.send(json.dumps({"type": "cycle_start"}))
        await ws.send(json.dumps({"type": "dance"}))
        await ws.send("ping")  # the plain-text commands of v0.2.0 clients
        await ws.send("cycle_stop")
        await ws.send("dance")
        replies = []
        while len(replies) < 6:
            r = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if r["type"] != "samples":
                replies.append(r)
    assert [r["type"] for r in replies] == ["pong", "command_ack", "error"] * 2
    assert all(set(r) == {"type", "timestamp", "data"} for r in replies)
    assert replies[0]["data"]["ts"] > 0
    assert [r["data"]["command"] for r in replies if r["type"] == "command_ack"] == [
        "cycle_start", "cycle_stop",
    ]  # fmt: skip
    assert replies[2]["data"]["field"] == "type"
    assert "unknown command 'dance'" in replies[5]["data"]["error"]
    pressure = [
        m["data"]["sensors"]["pressure_1"] for m in samples if "pressure_1" in m["data"]["sensors"]
    ]
    assert pressure, "no pressure samples reached the browser"
    # 1 kHz decimated to at most 200 points per second per sensor (10 per 50 ms message)
    for trace in pressure:
        assert len(trace["t_ms"]) <= 10
        assert trace["count"] >= len(trace["t_ms"])
        assert all(lo <= hi for lo, hi in zip(trace["min"], trace["max"], strict=True))
    assert sum(t["count"] for t in pressure) > 100

    async def command_arrived() -> bool:
        return any(c.command == "cycle_start" and c.source == "websocket" for c in commands)

    await eventually(command_arrived)


async def test_health_asyncapi_and_metrics(gateway: GatewayUrl) -> None:
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers) as client:
        r = await client.get("/api/health")
        assert r.status_code == 200
        assert r.json()["bus"] == "ok"
        assert r.json()["database"] == "ok"
        doc = (await client.get("/api/asyncapi.json")).json()
        assert doc["asyncapi"] == "3.0.0"
        assert doc["channels"]["samples"]["address"] == "vertac.samples.{stream_id}"
        openapi = (await client.get("/openapi.json")).json()
        assert "/api/live/batch" in openapi["paths"]
        metrics = (await client.get("/metrics")).text
        assert "vertac_websocket_clients" in metrics
        page = await client.get("/")
        assert page.status_code == 200
        if (DASHBOARD / "index.html").is_file():  # built by make web / make test
            script = re.search(r'src="(/assets/[^"]+\.js)"', page.text)
            assert script, page.text
            js = await client.get(script.group(1))
            assert js.status_code == 200
            assert "javascript" in js.headers["content-type"]
        else:
            assert "make web" in page.text


async def test_recent_samples_fill_a_window_at_once(
    gateway: GatewayUrl, bus, stream_id: str
) -> None:
    model = build_machine(stream_id=stream_id, sensors=4, rate_hz=1000)
    sent = await simulate(bus, model, SimulateOptions(speed=0, frames=20, frame_ms=100))
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers, timeout=30) as client:
        r = await client.get(f"/api/live/stream/{stream_id}/recent", params={"seconds": 30})
        assert r.status_code == 200, r.text
        recent = r.json()
        assert recent["type"] == "samples" and recent["sent_ms"] == []
        assert sum(t["count"] for t in recent["sensors"].values()) == sent.samples
        p = recent["sensors"]["pressure_1"]
        assert p["count"] == 2000  # 2 s at 1 kHz
        assert len(p["t_ms"]) == 2000  # fewer samples than 200 buckets/s x 30 s: all of them
        assert p["t_ms"] == sorted(p["t_ms"])
        r = await client.get(f"/api/live/stream/{stream_id}/recent", params={"seconds": 1})
        assert len(r.json()["sensors"]["pressure_1"]["t_ms"]) <= 200
        r = await client.get("/api/live/stream/nobody-here/recent")
        assert r.json()["sensors"] == {}
        r = await client.get(f"/api/live/stream/{stream_id}/recent", params={"seconds": 0})
        assert r.status_code == 422
