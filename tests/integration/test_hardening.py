"""What an attacker, a fuzzer and unfamiliar peers tried: reads that must leave nothing behind
on the server, records in buckets that must not break anyone, edges that may do no more than
send frames and register. Against a real gateway, nats-server and PostgreSQL at default
settings (auth on, the bus closed)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from schemas import subjects
from schemas.client import Bus
from services.common.config import CommonSettings
from tests.conftest import GatewayUrl, admin_token

pytestmark = pytest.mark.integration


def registration(stream_id: str) -> dict:
    return {
        "device_name": f"Press {stream_id}",
        "stream_id": stream_id,
        "sensors": [{"id": "p", "type": "pressure", "unit": "bar", "rate_hz": 10}],
    }


async def consumers(bus: Bus) -> dict[str, int]:
    """The number of consumers of every stream and bucket on the server."""
    return {
        info.config.name: info.state.consumer_count
        for info in await bus.js.streams_info()
        if info.config.name
    }


async def test_a_viewers_reads_leave_no_consumer_behind(
    gateway: GatewayUrl, common: CommonSettings, bus: Bus, stream_id: str
) -> None:
    viewer = {"Authorization": f"Bearer {await admin_token(common.database_url, 'hmi', 'viewer')}"}
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers, timeout=60) as admin:
        r = await admin.post("/api/live/register", json=registration(stream_id))
        assert r.status_code == 201, r.text
        rule = {"kind": "limit", "sensor_id": "p", "hi": 100}
        r = await admin.put(f"/api/live/stream/{stream_id}/alert-rules/p-high", json=rule)
        assert r.status_code == 200, r.text
        now = time.time()
        samples = [{"timestamp": now - 1 + i / 10, "values": {"p": float(i)}} for i in range(10)]
        r = await admin.post("/api/live/batch", json={"stream_id": stream_id, "samples": samples})
        assert r.status_code == 200, r.text
    before = await consumers(bus)
    paths = (
        "/api/live/streams",
        f"/api/live/stream/{stream_id}/alert-rules",
        f"/api/live/stream/{stream_id}/recent?seconds=60",
        f"/api/live/stream/{stream_id}/status",
    )
    async with httpx.AsyncClient(base_url=gateway, headers=viewer, timeout=60) as client:
        for _ in range(50):  # 1,200 reads, 24 at a time
            answers = await asyncio.gather(*(client.get(p) for p in paths * 6))
            assert {a.status_code for a in answers} == {200}, answers[0].text
        listed = (await client.get(paths[0])).json()
        rules = (await client.get(paths[1])).json()
        recent = (await client.get(paths[2])).json()
    # the reads answered what is there ...
    assert stream_id in [s["stream_id"] for s in listed]
    assert [r["rule_id"] for r in rules] == ["p-high"]
    assert sum(len(v["mean"]) for v in recent["sensors"].values()) > 0
    # ... and left the server as it was
    assert await consumers(bus) == before
    # so an admin's change still goes through
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers, timeout=60) as admin:
        rule["hi"] = 120
        r = await admin.put(f"/api/live/stream/{stream_id}/alert-rules/p-high", json=rule)
        assert r.status_code == 200, r.text
        rules = (await admin.get(paths[1])).json()
        assert rules[0]["hi"] == 120


async def test_a_malformed_record_in_a_bucket_is_skipped_not_raised(
    gateway: GatewayUrl, bus: Bus, stream_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    other = f"{stream_id}-b"
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers, timeout=60) as admin:
        for sid in (stream_id, other):
            r = await admin.post("/api/live/register", json=registration(sid))
            assert r.status_code == 201, r.text
        rule = {"kind": "limit", "sensor_id": "p", "hi": 100}
        r = await admin.put(f"/api/live/stream/{stream_id}/alert-rules/good", json=rule)
        assert r.status_code == 200, r.text
        streams = await bus.js.key_value(subjects.KV_STREAMS)
        rules = await bus.js.key_value(subjects.KV_ALERT_RULES)
        config = await bus.js.key_value(subjects.KV_CYCLE_CONFIG)
        await streams.put(stream_id, b"not json")
        # a valid record under another key, naming a stream that exists
        spoof = (await streams.get(other)).value or b""
        await streams.put(f"{stream_id}-spoof", spoof)
        await rules.put(f"{stream_id}.bad", b"{}")
        await config.put(stream_id, b"[1, 2]")
        listed = await admin.get("/api/live/streams")
        assert listed.status_code == 200, listed.text
        ids = [s["stream_id"] for s in listed.json()]
        assert ids.count(other) == 1 and stream_id not in ids
        status = await admin.get(f"/api/live/stream/{stream_id}/status")
        assert status.status_code == 404, status.text  # no valid registration, nothing stored
        r = await admin.get(f"/api/live/stream/{stream_id}/alert-rules")
        assert r.status_code == 200 and [x["rule_id"] for x in r.json()] == ["good"]
        r = await admin.get(f"/api/live/stream/{stream_id}/cycle-config")
        assert r.status_code == 200 and r.json()["trigger"] == "manual"
        # registering again replaces the bad record
        r = await admin.post("/api/live/register", json=registration(stream_id))
        assert r.status_code == 201, r.text
        ids = [s["stream_id"] for s in (await admin.get("/api/live/streams")).json()]
        assert stream_id in ids
    logged = {
        (getattr(rec, "bucket", ""), getattr(rec, "key", ""))
        for rec in caplog.records
        if "malformed" in rec.getMessage()
    }
    assert (subjects.KV_STREAMS, stream_id) in logged
    assert (subjects.KV_STREAMS, f"{stream_id}-spoof") in logged
    assert (subjects.KV_ALERT_RULES, f"{stream_id}.bad") in logged
    assert (subjects.KV_CYCLE_CONFIG, stream_id) in logged
