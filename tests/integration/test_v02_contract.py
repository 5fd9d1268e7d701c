"""A client written from the VerTac v0.2.0 README, unchanged, against the running gateway:
register, post samples, start and stop cycles, follow the WebSocket. The bodies are the README's
own (read from ../shared/seed when it is there, and kept verbatim in schemas/compat.py)."""

from __future__ import annotations

import asyncio
import copy
import json
import re
from datetime import UTC, datetime

import httpx
import pytest
import websockets

from schemas.compat import V02_BATCH, V02_REGISTER, quality_code
from services.common.config import CommonSettings
from services.ingest.app import serve as serve_ingest
from services.ingest.config import Settings as IngestSettings
from tests.conftest import SHARED_DATA, GatewayUrl, eventually
from tests.helpers import stored_frames

pytestmark = pytest.mark.integration

SEED = SHARED_DATA.parent / "seed" / "000_0c6d5e755c7ffb1c.txt"


def seed_bodies() -> dict[str, dict]:
    """The JSON request bodies of the v0.2.0 README's API Reference, by endpoint."""
    if not SEED.exists():
        pytest.skip(f"the v0.2.0 README is not at {SEED} (it lives in the shared folder)")
    text = SEED.read_text(encoding="utf-8", errors="replace")
    bodies = {}
    for path in ("/api/live/register", "/api/live/batch"):
        block = re.search(rf"POST {re.escape(path)}\nContent-Type: application/json\n\n(\{{.*?\n\}})\n",
                          text, re.S)  # fmt: skip
        assert block, f"no request body for {path} in the README"
        bodies[path] = json.loads(block.group(1))
    return bodies


def test_the_examples_kept_in_the_code_are_the_readmes() -> None:
    bodies = seed_bodies()
    assert bodies["/api/live/register"] == V02_REGISTER
    assert bodies["/api/live/batch"] == V02_BATCH


def test_quality_0_to_1_maps_onto_quality_codes() -> None:
    assert [quality_code(q) for q in (1.0, 0.95, 0.8, 0.79, 0.4, 0.39, 0.0)] == [
        192, 192, 192, 64, 64, 0, 0,
    ]  # fmt: skip


async def test_a_v02_client_registers_posts_controls_and_follows(
    gateway: GatewayUrl, common: CommonSettings, running
) -> None:
    running.start(serve_ingest(IngestSettings(metrics_port=0), common, running.stop))
    register = copy.deepcopy(V02_REGISTER)
    register["device_name"] = f"Machine-01 {datetime.now(UTC):%H%M%S%f}"  # a fresh device
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers) as client:
        r = await client.post("/api/live/register", json=register)
        assert r.status_code == 201, r.text
        reg = r.json()
        assert reg["status"] == "registered"
        stream_id = reg["stream_id"]  # made by the server
        assert stream_id.startswith("machine-01-")
        assert reg["dataset_id"] == f"live-{stream_id}"
        assert "sensor_count is 3 but 1 sensor(s) are listed" in reg["warnings"][0]
        r = await client.get("/api/live/streams")
        (record,) = [s for s in r.json() if s["stream_id"] == stream_id]
        assert record["sensors"][0] == {"id": "uuid", "name": "motor_speed", "type": "analog",
                                        "unit": "RPM", "rate_hz": 1.0}  # fmt: skip

        batch = copy.deepcopy(V02_BATCH)
        batch["stream_id"] = stream_id
        batch["samples"].append({**batch["samples"][0], "timestamp": "2026-01-11T10:30:45.223Z",
                                 "sensor_id": None, "value": 1498.0, "quality": 0.5})  # fmt: skip
        r = await client.post("/api/live/batch", json=batch)
        assert r.status_code == 200, r.text
        ack = r.json()
        assert ack["buffer_status"] == "ok" and ack["samples_received"] == 2
        assert ack["ack_id"] and ack["buffer"]["stream"] == "VERTAC_SAMPLES"

        async def stored() -> bool:
            return len(await stored_frames(common.database_url, stream_id)) == 1

        await eventually(stored)
        (frame,) = await stored_frames(common.database_url, stream_id)
        (series,) = frame.series
        assert series.sensor_id == "uuid"
        assert series.values.tolist() == [1500.5, 1498.0]
        assert series.qualities().tolist() == [192, 64]  # 0.95 good, 0.5 uncertain
        t0 = datetime(2026, 1, 11, 10, 30, 45, tzinfo=UTC)
        assert series.timestamps().tolist() == [
            int(t0.timestamp()) * 10**9 + 123_000_000, int(t0.timestamp()) * 10**9 + 223_000_000,
        ]  # fmt: skip

        r = await client.post("/api/live/cycle/start", params={"stream_id": stream_id})
        assert r.status_code == 202, r.text
        r = await client.post("/api/live/cycle/stop", params={"stream_id": stream_id})
        assert r.status_code == 202, r.text
        r = await client.get(f"/api/live/stream/{stream_id}/status")
        assert r.status_code == 200, r.text

        ws_url = gateway.replace("http", "ws") + f"/api/live/ws/stream/{stream_id}"
        async with websockets.connect(ws_url, additional_headers=gateway.headers) as ws:
            for command in ("ping", "cycle_start", "cycle_stop"):
                await ws.send(command)
            replies = []
            while len(replies) < 4:
                replies.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        for m in replies:
            assert set(m) == {"type", "timestamp", "data"}
            datetime.fromisoformat(m["timestamp"])
        assert [m["type"] for m in replies] == ["ready", "pong", "command_ack", "command_ack"]


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        ({"unit": "bar"}, 422, "body.samples.0.unit"),
        ({"sensor_id": None, "sensor_name": "nope"}, 422, "body.samples.0.sensor_name"),
        ({"sensor_id": "nope"}, 422, "body.samples.0.sensor_id"),
        ({"quality": 1.5}, 422, "body.samples.0.quality"),
        ({"value": "fast"}, 422, "body.samples.0.value"),
        ({"sensor_id": None, "sensor_name": None}, 422, "body.samples.0"),
    ],
)
async def test_a_bad_v02_sample_is_refused_naming_its_field(
    gateway: GatewayUrl, change: dict, status: int, field: str
) -> None:
    register = copy.deepcopy(V02_REGISTER)
    register["device_name"] = f"Machine-02 {datetime.now(UTC):%H%M%S%f}"
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers) as client:
        stream_id = (await client.post("/api/live/register", json=register)).json()["stream_id"]
        batch = copy.deepcopy(V02_BATCH)
        batch["stream_id"] = stream_id
        batch["samples"][0].update(change)
        r = await client.post("/api/live/batch", json=batch)
    assert r.status_code == status, r.text
    answer = r.json()
    fields = [d["field"] for d in answer.get("details", [])] or [answer.get("field")]
    assert any(f == field for f in fields), answer


async def test_a_bad_v02_registration_is_refused_naming_its_field(gateway: GatewayUrl) -> None:
    body = copy.deepcopy(V02_REGISTER)
    body["sensors"].append({"name": "no id"})
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers) as client:
        r = await client.post("/api/live/register", json=body)
    assert r.status_code == 422
    assert [d["field"] for d in r.json()["details"]] == ["body.sensors.1.sensor_id"]


async def test_openapi_describes_both_shapes_with_examples(gateway: GatewayUrl) -> None:
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers) as client:
        doc = (await client.get("/openapi.json")).json()
    for path in ("/api/live/register", "/api/live/batch"):
        content = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert len(content["schema"]["oneOf"]) == 2, content["schema"]
        assert set(content["examples"]) == {"current", "v0.2.0"}
    assert "LegacyRegistration" in doc["components"]["schemas"]
