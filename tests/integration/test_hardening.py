"""What an attacker, a fuzzer and unfamiliar peers tried: reads that must leave nothing behind
on the server, records in buckets that must not break anyone, edges that may do no more than
send frames and register. Against a real gateway, nats-server and PostgreSQL at default
settings (auth on, the bus closed)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import stat
import time
import zipfile
from pathlib import Path

import httpx
import psycopg
import pytest
import websockets

from edge.agent import EdgeAgent
from edge.client import Bus, ServerUnreachable, open_client
from edge.config import ModbusSource, load
from schemas import subjects
from schemas.logs import JsonFormatter, TextFormatter, private_file
from services.common.config import CommonSettings
from services.embedded import NatsServer
from services.ingest.app import serve as serve_ingest
from services.ingest.config import Settings as IngestSettings
from services.natsauth import edge_user, url_for
from tests.conftest import (
    ClosedBus,
    GatewayUrl,
    Running,
    admin_token,
    cycles_service,
    eventually,
)
from tests.helpers import stored_frames
from tests.integration.test_edge import Synthetic, machine_file

pytestmark = pytest.mark.integration


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


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
        # a recorded cycle, imported (by the cycles service, stopped before the reads)
        csv = "timestamp,p\n" + "".join(f"{i / 10},{i}\n" for i in range(50))
        async with cycles_service(common):
            r = await admin.post(f"/api/live/datasets/{stream_id}/import",
                                 params={"filename": "c1.csv", "stream_id": stream_id},
                                 content=csv.encode())  # fmt: skip
        assert r.status_code == 201, r.text
        cycle_id = r.json()["cycles"][0]["cycle_id"]
    before = await consumers(bus)
    paths = (
        "/api/live/streams",
        f"/api/live/stream/{stream_id}/alert-rules",
        f"/api/live/stream/{stream_id}/recent?seconds=60",
        f"/api/live/stream/{stream_id}/status",
        f"/api/live/cycles/{cycle_id}/samples",
        f"/api/live/cycles/{cycle_id}/overlay",
    )
    async with httpx.AsyncClient(base_url=gateway, headers=viewer, timeout=60) as client:
        for _ in range(50):  # 1,800 reads, 36 at a time
            answers = await asyncio.gather(*(client.get(p) for p in paths * 6))
            assert {a.status_code for a in answers} <= {200, 409}, answers[0].text
        samples_of_cycle = (await client.get(paths[4])).json()
        assert samples_of_cycle["sensors"]["p"]["values"][:3] == [0.0, 1.0, 2.0]
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


async def test_an_edge_with_its_own_credentials_publishes_steadily_and_stops_at_once(
    tmp_path: Path,
    nats_server: NatsServer | str,
    common: CommonSettings,
    running: Running,
    stream_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if isinstance(nats_server, str):
        pytest.skip("needs the embedded nats-server to add an edge user")
    closed: ClosedBus = nats_server.closed  # type: ignore[attr-defined]
    user = edge_user(stream_id)
    password = closed.users.ensure(user)[user]
    nats_server.reload()
    as_edge = CommonSettings(nats_url=url_for(nats_server.url, user, password))

    async def edge_may_connect() -> bool:
        try:
            bus = await open_client(as_edge, "probe")
        except ServerUnreachable:
            return False
        await bus.close()
        return True

    await eventually(edge_may_connect)
    running.start(serve_ingest(IngestSettings(metrics_port=0), common, running.stop))
    seconds = 6
    config = load(machine_file(tmp_path, stream_id, 1)).model_copy(update={"frame_period_ms": 100})
    agent = EdgeAgent(config, as_edge, Synthetic(seconds), status_every_s=0.5)
    stop = asyncio.Event()
    task = asyncio.ensure_future(agent.run(stop))
    # registered (the ingest service answers once it runs), then publishing as frames come
    await eventually(lambda: asyncio.sleep(0, agent.buffer.status().published > 0), timeout=20)
    depths = []
    while not task.done() and len(depths) < (seconds - 2) * 10:
        depths.append(agent.buffer.status().depth)
        await asyncio.sleep(0.1)
    await asyncio.wait_for(task, 10)  # the source ended: drained and stopped (a refused call
    # in the publish loop made a stop take 10-15 s)
    # frames left as they were cut, none waited for a refused call
    assert max(depths) <= 10, depths
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refused == []
    assert agent.last_status["clock_offset_s"] is not None
    assert abs(float(agent.last_status["clock_offset_s"])) < 0.5  # type: ignore[arg-type]

    async def all_in() -> bool:
        frames = await stored_frames(common.database_url, stream_id)
        return sum(f.n_samples for f in frames) == seconds * 1000 * 16

    await eventually(all_in, timeout=60)


async def test_no_credential_reaches_a_log_line_and_log_files_are_private(
    gateway: GatewayUrl, tmp_path: Path, caplog: pytest.LogCaptureFixture, stream_id: str
) -> None:
    caplog.set_level(logging.INFO)
    ws = gateway.replace("http", "ws") + f"/api/live/ws/stream/{stream_id}"
    async with websockets.connect(f"{ws}?access_token={gateway.token}") as socket:
        ready = json.loads(await socket.recv())
        assert ready["type"] != "error", ready
    raw = [r.getMessage() for r in caplog.records]
    assert any(gateway.token in m for m in raw)  # what a log line would have carried
    for formatter in (JsonFormatter("gateway"), TextFormatter("gateway")):
        lines = [formatter.format(r) for r in caplog.records]
        assert not [line for line in lines if gateway.token in line]
        assert any("access_token=***" in line for line in lines)
    # files written by vertac run: only their owner may read them, also one made before
    older = tmp_path / "logs" / "stack.log"
    older.parent.mkdir()
    older.write_text("old\n")
    older.chmod(0o644)
    for path in (older, tmp_path / "logs" / "gateway.log"):
        with private_file(path) as f:
            f.write("line\n")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


async def audit_rows(database_url: str) -> int:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute("SELECT count(*) FROM audit_log")
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize(
    "content_type",
    ["Application/JSON", "application/vnd.x+json", "application/json; charset=utf-8", "text/plain"],
)
async def test_a_nul_is_refused_whatever_the_content_type_and_a_refusal_changes_nothing(
    gateway: GatewayUrl, common: CommonSettings, stream_id: str, content_type: str
) -> None:
    edge = await admin_token(common.database_url, "edge-1", "edge", [stream_id])
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as client:
        r = await client.post(
            "/api/live/register", json=registration(stream_id), headers=bearer(edge)
        )
        assert r.status_code == 201, r.text
        rows = await audit_rows(common.database_url)
        renamed = registration(stream_id)
        renamed["device_name"] = "Renamed\u0000"
        renamed["sensors"].append({"id": "q", "type": "flow"})
        r = await client.post(
            "/api/live/register",
            content=json.dumps(renamed).encode(),
            headers={**bearer(edge), "Content-Type": content_type},
        )
        assert r.status_code == 422, r.text
        assert r.json()["details"][0]["field"] == "body"
        status = (
            await client.get(f"/api/live/stream/{stream_id}/status", headers=gateway.headers)
        ).json()
        assert status["device_name"] == f"Press {stream_id}"
        assert [s["id"] for s in status["sensors"]] == ["p"]
        assert await audit_rows(common.database_url) == rows


async def test_a_stranger_gets_401_before_any_body_is_read_and_nesting_is_bounded(
    gateway: GatewayUrl, stream_id: str
) -> None:
    big = json.dumps(
        {"stream_id": stream_id, "samples": [{"timestamp": 1.0, "values": {"p": 1.0}}] * 20_000}
    ).encode()
    deep = b"[" * 100_000 + b"]" * 100_000
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as client:
        for body in (big, deep, b"{not json"):
            r = await client.post(
                "/api/live/batch", content=body, headers={"Content-Type": "application/json"}
            )
            assert r.status_code == 401, r.text[:200]
            assert r.json()["details"][0]["field"] == "Authorization"
        # signed in: nesting beyond the bound is a 422 naming it, small or large
        for body in (deep, b'{"stream_id": ' + b"[" * 40 + b"]" * 40 + b"}"):
            r = await client.post(
                "/api/live/batch",
                content=body,
                headers={**gateway.headers, "Content-Type": "application/json"},
            )
            assert r.status_code == 422, r.text[:200]
            assert "nested too deeply" in r.text
        # sign-in, open to anyone, takes small bodies only
        r = await client.post("/api/auth/session", content=big,
                              headers={"Content-Type": "application/json"})  # fmt: skip
        assert r.status_code == 413, r.text[:200]


async def test_odd_times_and_column_names_get_a_4xx_not_a_500(
    gateway: GatewayUrl, common: CommonSettings, stream_id: str
) -> None:
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers, timeout=60) as client:
        r = await client.post("/api/live/register", json=registration(stream_id))
        assert r.status_code == 201, r.text
        # query times read within what is stored: the earliest, or "until forever"
        r = await client.get(f"/api/live/stream/{stream_id}/samples",
                             params={"end": "0001-01-01T00:00:03Z"})  # fmt: skip
        assert r.status_code == 200 and r.json()["sensors"] == {}, r.text  # nothing stored then
        r = await client.get(f"/api/live/stream/{stream_id}/samples",
                             params={"start": "2026-01-01T00:00:00Z", "end": "9999-12-31T23:59:59Z"})  # fmt: skip
        assert r.status_code == 200, r.text
        assert r.json()["end"].startswith("2262-04-11")
        r = await client.get("/api/live/alerts", params={"until": "2771-05-11T21:50:12+05:46"})
        assert r.status_code == 200, r.text
        async with cycles_service(common):
            for header in (b"timestamp,=1+1\n0,1\n1,2\n", b'timestamp,"a b"\n0,1\n1,2\n'):
                r = await client.post(
                    "/api/live/datasets/odd/import", params={"filename": "c.csv"}, content=header
                )
                assert 400 <= r.status_code < 500, r.text
                assert r.json()["details"][0]["field"], r.text
            # a dataset name may hold '.', a stream id may not: its default stream has '-'
            r = await client.post("/api/live/datasets/odd.v2/import", params={"filename": "c.csv"},
                                  content=b"timestamp,p\n0,1\n1,2\n")  # fmt: skip
            assert r.status_code == 201 and r.json()["stream_id"] == "batch-odd-v2", r.text


async def test_origin_scheme_security_headers_audit_via_invisible_ids_and_health(
    gateway: GatewayUrl, stream_id: str
) -> None:
    host = gateway.removeprefix("http://")
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers, timeout=60) as client:
        # the page of another scheme on the same host is another origin
        for origin, refused in ((f"https://{host}", True), (f"http://{host}", False)):
            r = await client.post("/api/live/register", json=registration(stream_id),
                                  headers={"Origin": origin})  # fmt: skip
            assert (r.status_code == 403) is refused, (origin, r.text)
        # every answer says how a browser must treat it
        for path in ("/", "/api/live/streams", "/api/health"):
            r = await client.get(path)
            assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
            assert r.headers["x-frame-options"] == "DENY"
            assert r.headers["x-content-type-options"] == "nosniff"
            assert "strict-transport-security" not in r.headers  # plain HTTP here
        # the audit trail says how the actor signed in
        entry = (await client.get("/api/audit", params={"action": "stream.register"})).json()[0]
        assert entry["target"] == stream_id and entry["via"] == "token"
        # invisible characters make no sensor id
        for sneaky in ("p\u200b", "\u202ep", "p\u2060q"):
            body = registration(f"{stream_id}-x")
            body["sensors"][0]["id"] = sneaky
            r = await client.post("/api/live/register", json=body)
            assert r.status_code == 422, (sneaky, r.text)
            assert r.json()["details"][0]["field"].endswith("id")
        mine = (await client.get("/api/health")).json()
        assert mine["version"] and mine["pid"] > 0
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as anonymous:
        told = (await anonymous.get("/api/health")).json()
        assert told["status"] == "ok" and told["version"] == "" and told["pid"] == 0


async def test_every_cycle_can_be_reached_page_by_page_and_by_time(
    gateway: GatewayUrl, common: CommonSettings, stream_id: str
) -> None:
    n = 1203
    async with await psycopg.AsyncConnection.connect(common.database_url) as conn:
        await conn.execute(
            "INSERT INTO live_cycles (cycle_id, stream_id, state, started_at, ended_at,"
            " duration_s, cycle_no)"
            " SELECT %s || '-' || k, %s, 'completed',"
            "  timestamptz '2026-01-01Z' + k * interval '1 minute',"
            "  timestamptz '2026-01-01Z' + k * interval '1 minute' + interval '30 s', 30, k"
            " FROM generate_series(1, %s) AS k",
            (stream_id, stream_id, n),
        )
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers, timeout=60) as client:
        seen: list[int] = []
        url: str | None = f"/api/live/stream/{stream_id}/cycles?limit=500"
        while url:
            r = await client.get(url)
            assert r.status_code == 200, r.text
            seen += [c["cycle_no"] for c in r.json()]
            link = r.headers.get("link")
            url = link[1 : link.index(">")] if link else None
            if url:
                assert r.headers["x-next-cursor"] in url
        assert seen == list(range(n, 0, -1))  # each once, newest first, the oldest included
        r = await client.get(f"/api/live/stream/{stream_id}/cycles", params={
            "start": "2026-01-01T00:10:00Z", "end": "2026-01-01T00:20:00Z", "limit": 1000})  # fmt: skip
        assert [c["cycle_no"] for c in r.json()] == list(range(19, 9, -1))
        assert "x-next-cursor" not in r.headers
        r = await client.get(f"/api/live/stream/{stream_id}/cycles", params={"cursor": "nope"})
        assert r.status_code == 422 and r.json()["details"][0]["field"] == "cursor"


async def test_history_says_which_samples_were_bad_and_leaves_them_out_of_the_values(
    gateway: GatewayUrl, common: CommonSettings, running: Running, stream_id: str
) -> None:
    running.start(serve_ingest(IngestSettings(metrics_port=0), common, running.stop))
    t0 = 1_800_000_000.0
    samples = [
        {"timestamp": t0 + i * 0.1, "values": {"p": v}, "quality": {"p": q}}
        for i, (v, q) in enumerate([(1.0, 192), (999.0, 0), (3.0, 192), (-50.0, 64)])
    ]
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers, timeout=60) as client:
        r = await client.post("/api/live/register", json=registration(stream_id))
        assert r.status_code == 201, r.text
        r = await client.post("/api/live/batch", json={"stream_id": stream_id, "samples": samples})
        assert r.status_code == 200, r.text
        params = {"start": "2027-01-15T08:00:00Z", "end": "2027-01-15T08:00:01Z",
                  "max_points": 1}  # fmt: skip

        async def stored() -> dict | None:
            r = await client.get(f"/api/live/stream/{stream_id}/samples", params=params)
            trace = r.json()["sensors"].get("p")
            return trace if trace and sum(trace["count"]) == 4 else None

        trace = await eventually(stored, timeout=60)
    assert trace["bad"] == [2]
    assert trace["min"] == [1.0] and trace["max"] == [3.0] and trace["mean"] == [2.0]


async def test_a_zip_that_unpacks_beyond_the_bound_is_refused_without_stalling_the_gateway(
    gateway: GatewayUrl, common: CommonSettings
) -> None:
    buf = io.BytesIO()
    with (
        zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z,
        z.open("cycle.csv", "w") as f,
    ):
        f.write(b"timestamp,p\n")
        row = b"0,1\n" * 2**18
        for _ in range(300 * 2**20 // len(row)):
            f.write(row)
    bomb = buf.getvalue()
    assert len(bomb) < 2**20
    async with (
        cycles_service(common),
        httpx.AsyncClient(base_url=gateway, headers=gateway.headers, timeout=120) as client,
    ):
        importing = asyncio.ensure_future(client.post(
            "/api/live/datasets/bomb/import", params={"filename": "b.zip"}, content=bomb))  # fmt: skip
        # the gateway answers others meanwhile: the cycles service parses, off its event loop
        answered = 0
        while not importing.done():
            r = await client.get("/api/live/streams")
            assert r.status_code == 200
            answered += 1
        r = await importing
        assert r.status_code == 422, r.text
        assert "unpacks to more than 256 MiB" in r.json()["error"]
        assert answered >= 1


async def test_a_modbus_server_that_goes_and_comes_back_is_told_in_one_line_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, stream_id: str
) -> None:
    from edge.sources.modbus import ModbusPoller
    from services.embedded import free_port
    from tests.integration.test_edge import Plant

    caplog.set_level(logging.INFO)
    port = free_port()
    config = load(machine_file(tmp_path, stream_id, port))
    assert isinstance(config.source, ModbusSource)
    poller = ModbusPoller(config.source, config)

    async def serve() -> tuple[asyncio.Event, asyncio.Future[None]]:
        stop = asyncio.Event()
        return stop, asyncio.ensure_future(Plant(port).run(stop))

    def said(text: str) -> int:
        return sum(text in r.getMessage() for r in caplog.records)

    stop, task = await serve()

    async def reads_good() -> bool:
        _, values = await poller.poll_once()
        return values["pressure"][1] == 192

    await eventually(reads_good)
    gone, back = said("modbus server unreachable"), said("modbus server answers again")
    stop.set()
    await task

    async def reads_bad() -> bool:
        _, values = await poller.poll_once()
        return values["pressure"][1] == 0 and said("modbus server unreachable") == gone + 1

    await eventually(reads_bad)
    for _ in range(3):  # still away: no more lines
        await poller.poll_once()
    assert said("modbus server unreachable") == gone + 1, [r.getMessage() for r in caplog.records]
    stop, task = await serve()
    await eventually(reads_good, timeout=60)
    assert said("modbus server answers again") == back + 1
    poller.close()
    stop.set()
    await task
