"""Live fan-out on real servers: one feed per stream shared by its viewers (every update encoded
once), and sessions that leave by any path — closed or killed — leave nothing behind."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import os
import re
import socket

import httpx
import pytest
import websockets

from edge.run import SimulateOptions, simulate
from edge.simulator import build_machine
from services.embedded import NatsServer
from services.gateway.fanout import StreamFeed, Viewer
from services.gateway.wsproto import FrameWriter
from tests.conftest import GatewayUrl, eventually

pytestmark = pytest.mark.integration


async def gauges(base: str) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=base, headers=getattr(base, "headers", {})) as client:
        text = (await client.get("/metrics")).text
    out = {}
    for name in ("vertac_websocket_clients", "vertac_gateway_feeds",
                 "vertac_gateway_feed_subscriptions", "vertac_websocket_skipped_total"):  # fmt: skip
        m = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
        out[name] = float(m.group(1)) if m else -1.0
    return out


async def gateway_subscriptions(nats_server: NatsServer | str) -> int | None:
    """What nats-server itself counts for the gateway's connection (None: no monitor port)."""
    if not isinstance(nats_server, NatsServer):
        return None
    async with httpx.AsyncClient() as client:
        r = await client.get(f"http://127.0.0.1:{nats_server.monitor_port}/connz",
                             params={"subs": "1", "limit": "1024"})  # fmt: skip
    return sum(c.get("subscriptions", 0) for c in r.json()["connections"]
               if c.get("name") == "vertac-gateway")  # fmt: skip


async def test_viewers_of_a_stream_share_one_feed_and_get_the_same_bytes(
    bus, gateway: GatewayUrl, stream_id: str
) -> None:
    other = f"{stream_id}-b"
    url = gateway.replace("http", "ws") + "/api/live/ws/stream/"
    async with (
        websockets.connect(url + stream_id, additional_headers=gateway.headers) as a,
        websockets.connect(url + stream_id, additional_headers=gateway.headers) as b,
        websockets.connect(url + stream_id, additional_headers=gateway.headers) as c,
        websockets.connect(url + other, additional_headers=gateway.headers) as d,
    ):
        for ws in (a, b, c, d):
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "ready"
        g = await gauges(gateway)
        assert g["vertac_websocket_clients"] == 4
        assert g["vertac_gateway_feeds"] == 2  # one per stream, not per viewer
        assert g["vertac_gateway_feed_subscriptions"] == 8
        model = build_machine(stream_id=stream_id, sensors=4, rate_hz=200)
        await simulate(bus, model, SimulateOptions(speed=0, frames=20))

        async def samples(ws) -> dict[int, str]:  # type: ignore[no-untyped-def]
            got: dict[int, str] = {}
            while sum(len(json.loads(t)["data"]["sensors"]) > 0 for t in got.values()) < 1:
                text = await asyncio.wait_for(ws.recv(), 10)
                m = json.loads(text)
                if m["type"] == "samples":
                    got[m["data"]["seq"]] = text
            return got

        first = await samples(a)
        seq, text = next(iter(first.items()))
        for ws in (b, c):
            seen = await samples(ws)
            while seq not in seen and max(seen) < seq:
                seen.update(await samples(ws))
            assert seen.get(seq) == text  # the very same text: encoded once for all viewers


async def open_raw(
    host: str, port: int, path: str, rcvbuf: int | None = None, token: str = ""
) -> asyncio.StreamWriter:
    """A WebSocket opened by hand, to be killed without a closing handshake (``rcvbuf``: a small
    receive buffer, for a viewer that stops reading)."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
        .encode()
    )  # fmt: skip
    status = await asyncio.wait_for(reader.readline(), 30)
    assert b" 101 " in status, status
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    return writer


async def test_a_thousand_sessions_closed_or_killed_leave_nothing_behind(
    gateway: GatewayUrl, stream_id: str, nats_server
) -> None:
    host, port = gateway.removeprefix("http://").split(":")
    baseline = await gateway_subscriptions(nats_server)
    streams = [f"{stream_id}-{k}" for k in range(10)]
    killed: list[asyncio.StreamWriter] = []
    closed = []
    for start in range(0, 1000, 100):  # 1,000 sessions, 100 at a time, over 10 streams
        batch = range(start, start + 100)
        killed += await asyncio.gather(*(
            open_raw(host, int(port), f"/api/live/ws/stream/{streams[i % 10]}", token=gateway.token)
            for i in batch if i % 2 == 0
        ))  # fmt: skip
        closed += await asyncio.gather(*(
            websockets.connect(gateway.replace("http", "ws") + f"/api/live/ws/stream/{streams[i % 10]}", additional_headers=gateway.headers)
            for i in batch if i % 2 == 1
        ))  # fmt: skip

    async def all_open() -> dict[str, float] | None:
        g = await gauges(gateway)
        return g if g["vertac_websocket_clients"] == 1000 else None

    g = await eventually(all_open, timeout=60, interval=0.5)
    assert g["vertac_gateway_feeds"] == 10
    assert g["vertac_gateway_feed_subscriptions"] == 40
    for writer in killed:
        writer.transport.abort()  # gone without a word: a crashed browser, a pulled cable
    await asyncio.gather(*(ws.close() for ws in closed))

    async def released() -> dict[str, float] | None:
        g = await gauges(gateway)
        return g if g["vertac_websocket_clients"] == 0 else None

    g = await eventually(released, timeout=120, interval=0.5)
    assert g["vertac_gateway_feeds"] == 0
    assert g["vertac_gateway_feed_subscriptions"] == 0
    if baseline is not None:

        async def server_side() -> bool:
            return await gateway_subscriptions(nats_server) == baseline

        await eventually(server_side, timeout=30, interval=0.5)
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers) as client:
        assert (await client.get("/api/health")).status_code == 200
    gc.collect()
    alive = [o for o in gc.get_objects() if isinstance(o, Viewer | StreamFeed | FrameWriter)]
    assert alive == []  # the gateway runs in this process: nothing of a session is kept


async def test_a_viewer_that_stops_reading_skips_updates_and_slows_no_one(
    bus, gateway: GatewayUrl, stream_id: str
) -> None:
    host, port = gateway.removeprefix("http://").split(":")
    path = f"/api/live/ws/stream/{stream_id}"
    stalled = await open_raw(
        host, int(port), path, rcvbuf=4096, token=gateway.token
    )  # never read again
    model = build_machine(stream_id=stream_id, sensors=100, rate_hz=1000)
    publishing = asyncio.ensure_future(simulate(bus, model, SimulateOptions(speed=1, frames=600)))
    try:
        async with websockets.connect(
            gateway.replace("http", "ws") + path, additional_headers=gateway.headers
        ) as reader:
            seqs: list[int] = []
            skipped = 0.0
            # each update is ~100 KB, 20 a second: the stalled socket's buffers fill in seconds
            while skipped < 20 and not publishing.done():
                m = json.loads(await asyncio.wait_for(reader.recv(), 30))
                if m["type"] == "samples":
                    seqs.append(m["data"]["seq"])
                    skipped = (await gauges(gateway))["vertac_websocket_skipped_total"]
            assert skipped >= 20, "the stalled viewer never skipped an update"
            # the reading viewer got every update in order and kept up with the publisher
            assert seqs == sorted(seqs) and len(seqs) >= 20
    finally:
        publishing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publishing
        stalled.transport.abort()
