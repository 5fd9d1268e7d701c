"""Inputs nobody should send, against a real gateway, nats-server and PostgreSQL: each gets a
4xx naming what is wrong (never a 500 or a 503), and the gateway keeps serving."""

from __future__ import annotations

import csv
import io
import time

import httpx
import pytest

from services.gateway.state import FRAME_SAMPLES
from tests.conftest import GatewayUrl, eventually
from tests.helpers import frame_count

pytestmark = pytest.mark.integration


def field(r: httpx.Response) -> str:
    details = r.json().get("details") or [{}]
    return str(details[0].get("field", ""))


async def register(client: httpx.AsyncClient, stream_id: str, sensors: list[str]) -> None:
    body = {"stream_id": stream_id, "device_name": "Rig",
            "sensors": [{"id": s, "name": s} for s in sensors]}  # fmt: skip
    r = await client.post("/api/live/register", json=body)
    assert r.status_code in (200, 201), r.text


async def test_bad_ids_times_and_characters_get_a_4xx_naming_the_field(
    gateway: GatewayUrl, stream_id: str
) -> None:
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers, timeout=60) as client:
        await register(client, stream_id, ["p"])
        # a device name with letters beyond ASCII and no stream id: an id made of it
        r = await client.post("/api/live/register",
                              json={"device_name": "Prüfstand 1", "sensors": [{"id": "p"}]})  # fmt: skip
        assert r.status_code in (200, 201), r.text
        assert r.json()["stream_id"] == "prufstand-1"
        # NUL anywhere: body, query, path
        r = await client.post(
            "/api/live/datasets/d1/cycles", json={"cycle_id": "a", "note": "x\x00"}
        )
        assert (r.status_code, field(r)) == (422, "body"), r.text
        r = await client.get("/api/live/alerts", params={"stream_id": "a\x00"})
        assert (r.status_code, field(r)) == (422, "query"), r.text
        r = await client.get(f"/api/live/stream/{stream_id}%00/status")
        assert (r.status_code, field(r)) == (422, "path"), r.text
        # a stream id with a trailing newline is not a stream id
        r = await client.get(f"/api/live/stream/{stream_id}%0A/status")
        assert (r.status_code, field(r)) == (422, "stream_id"), r.text
        # reference versions: 0 and above int4
        for version in (0, 2**31):
            r = await client.get(f"/api/live/stream/{stream_id}/references/{version}")
            assert (r.status_code, field(r)) == (422, "version"), r.text
            r = await client.post(f"/api/live/stream/{stream_id}/references/{version}/activate")
            assert (r.status_code, field(r)) == (422, "version"), r.text
        # a rule id the KV store cannot key: 422, not "bus unavailable"
        r = await client.delete(f"/api/live/stream/{stream_id}/alert-rules/a.b")
        assert (r.status_code, field(r)) == (422, "rule_id"), r.text
        r = await client.put(f"/api/live/stream/{stream_id}/alert-rules/a%20b",
                             json={"kind": "limit", "sensor_id": "p", "hi": 1})  # fmt: skip
        assert (r.status_code, field(r)) == (422, "rule_id"), r.text
        # cycle ids in bodies
        r = await client.post(f"/api/live/stream/{stream_id}/references",
                              json={"cycle_ids": ["\u0011x"]})  # fmt: skip
        assert r.status_code == 422 and field(r).startswith("body.cycle_ids"), r.text
        # timestamps no frame can carry
        for ts in ("2300-01-01T00:00:00Z", 1e300, "Infinity"):
            body = {"stream_id": stream_id, "samples": [{"timestamp": ts, "values": {"p": 1}}]}
            r = await client.post("/api/live/batch", json=body)
            assert r.status_code == 422, (ts, r.text)
            assert field(r).startswith("body.samples"), r.text
        # a body that is not UTF-8 JSON
        r = await client.put(f"/api/live/stream/{stream_id}/cycle-config", content=b"\xff\xfe{",
                             headers={"Content-Type": "application/json"})  # fmt: skip
        assert r.status_code in (400, 422) and field(r) == "body", r.text
        # a method the path does not have: 405 with every method it has
        r = await client.patch(f"/api/live/stream/{stream_id}/alert-rules/r1")
        assert r.status_code == 405
        assert r.headers["allow"] == "DELETE, PUT"
        assert (await client.get("/api/health")).json()["status"] == "ok"


async def test_bodies_over_the_limit_are_refused_before_they_are_read(gateway: GatewayUrl) -> None:
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers, timeout=60) as client:
        big = b'{"stream_id": "x", "samples": [' + b" " * (9 * 2**20) + b"]}"
        r = await client.post("/api/live/batch", content=big,
                              headers={"Content-Type": "application/json"})  # fmt: skip
        assert (r.status_code, field(r)) == (413, "body"), r.text

        async def chunks():  # no Content-Length: counted as it streams
            for _ in range(10):
                yield b" " * 2**20

        r = await client.post("/api/live/batch", content=chunks(),
                              headers={"Content-Type": "application/json"})  # fmt: skip
        assert r.status_code == 413, r.text
        assert (await client.get("/api/health")).json()["status"] == "ok"


async def test_other_origins_may_not_change_anything(gateway: GatewayUrl, stream_id: str) -> None:
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers, timeout=60) as client:
        await register(client, stream_id, ["p"])
        evil = {"Origin": "https://evil.example"}
        r = await client.post(
            "/api/live/cycle/start", params={"stream_id": stream_id}, headers=evil
        )
        assert (r.status_code, field(r)) == (403, "Origin"), r.text
        r = await client.get(f"/api/live/stream/{stream_id}/status", headers=evil)
        assert r.status_code == 200  # reading is not a change (and CORS keeps the answer away)
        assert "access-control-allow-origin" not in r.headers
        own = {"Origin": gateway}
        r = await client.post("/api/live/cycle/start", params={"stream_id": stream_id}, headers=own)
        assert r.status_code == 202, r.text
    import websockets

    url = gateway.replace("http", "ws") + f"/api/live/ws/stream/{stream_id}"
    with pytest.raises(websockets.exceptions.InvalidStatus):
        async with websockets.connect(url, additional_headers={**evil, **gateway.headers}):
            pass
    async with websockets.connect(url, additional_headers={**own, **gateway.headers}) as ws:
        assert "ready" in await ws.recv()


async def test_a_batch_too_large_for_one_frame_is_split(
    gateway: GatewayUrl, common, running, stream_id: str
) -> None:
    from services.ingest.app import serve as serve_ingest
    from services.ingest.config import Settings as IngestSettings

    running.start(serve_ingest(IngestSettings(metrics_port=0), common, running.stop))
    sensors = [f"s{i}" for i in range(10)]
    t0 = time.time() - 600
    rows = 8000  # 80,000 samples: above one bus message
    samples = [{"timestamp": t0 + i / 100, "values": {s: i for s in sensors}} for i in range(rows)]
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers, timeout=120) as client:
        await register(client, stream_id, sensors)
        r = await client.post("/api/live/batch",
                              json={"stream_id": stream_id, "samples": samples, "batch_id": "b1"})  # fmt: skip
        assert r.status_code == 200, r.text
        assert r.json()["samples_received"] == rows * len(sensors)
        parts = -(-rows * len(sensors) // FRAME_SAMPLES)

        async def stored() -> bool:
            return await frame_count(common.database_url, stream_id) == parts

        await eventually(stored, timeout=60)
        # the same batch again: stored once
        r = await client.post("/api/live/batch",
                              json={"stream_id": stream_id, "samples": samples, "batch_id": "b1"})  # fmt: skip
        assert r.status_code == 200 and r.json()["buffer"]["duplicate"] is True, r.text


async def test_a_large_body_cut_short_or_invalid_gets_the_422_naming_where(
    gateway: GatewayUrl, stream_id: str
) -> None:
    import json

    from services.gateway.bodies import THREAD_FROM_BYTES

    samples = [{"timestamp": 1.7e9 + i, "values": {"p": i}} for i in range(20_000)]
    body = json.dumps({"stream_id": stream_id, "samples": samples}).encode()
    assert len(body) > THREAD_FROM_BYTES  # parsed on a worker thread
    cut = body[: len(body) // 2]
    headers = {**gateway.headers, "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=gateway, headers=headers, timeout=120) as client:
        await register(client, stream_id, ["p"])
        r = await client.post("/api/live/batch", content=cut)
        assert r.status_code == 422, r.text
        assert "JSON" in r.text and str(len(cut)) in r.text
        # validated there too: a bad sample deep inside is named like FastAPI names it
        bad = [*samples[:15_000], {"timestamp": "soon", "values": {"p": 1}}, *samples[15_001:]]
        r = await client.post("/api/live/batch",
                              content=json.dumps({"stream_id": stream_id, "samples": bad}))  # fmt: skip
        assert r.status_code == 422, r.text
        fields = [d["field"] for d in r.json()["details"]]
        assert fields and all(f.startswith("body.samples.15000.timestamp") for f in fields)
        # ... as FastAPI names it in a small body
        small = {"stream_id": stream_id, "samples": bad[14_999:15_002]}
        r = await client.post("/api/live/batch", content=json.dumps(small))
        assert [d["field"].replace(".1.", ".15000.") for d in r.json()["details"]] == fields
        r = await client.post("/api/live/batch", content=body)  # the whole one is taken
        assert r.status_code == 200 and r.json()["samples_received"] == 20_000, r.text


async def test_csv_exports_quote_ids_and_neutralise_formulas() -> None:
    import numpy as np

    from schemas.frames import Frame, Series
    from services.gateway.csvtext import cell
    from services.gateway.logic import recording_csv

    frame = Frame("s", 0, (Series('x"9999,forged', np.array([1.0]), 0, 1),
                           Series("@HYPERLINK(1)", np.array([2.0]), 0, 1)))  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(recording_csv(frame))))
    assert [r["sensor_id"] for r in rows] == ['x"9999,forged', "'@HYPERLINK(1)"]
    assert [len(r) for r in rows] == [5, 5]
    assert cell("=1+1") == "'=1+1" and cell("-3") == "'-3" and cell("a,b") == '"a,b"'
