"""What the closed doors cost, measured side by side in one run (medians of alternating rounds,
so that a noisy machine weighs on both sides alike):

- REST: the same read with a bearer token against a gateway with ``VERTAC_AUTH=off``, both
  running at once on the same bus and database;
- the bus: an edge publishing frames (1,600 samples each, acknowledged) as ``edge-<stream>`` on
  a bus with VerTac's users and permissions, against an open nats-server.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from edge.client import connect
from edge.publisher import FramePublisher
from schemas.frames import Frame, Series
from services.common.auth import TokenStore
from services.common.config import CommonSettings
from services.common.db import open_pool
from services.common.runtime import open_bus
from services.embedded import NatsServer, free_port, wait_for_port
from services.natsauth import ADMIN, BusUsers, edge_user, url_for
from tests.bench.stack import embedded_stack

ROUNDS = 7
REQUESTS = 200  # per round and side
FRAMES = 400  # per round and side
STREAM = "bench-auth"


async def _round(client: httpx.AsyncClient, path: str) -> list[float]:
    times = []
    for _ in range(REQUESTS):
        t0 = time.perf_counter()
        r = await client.get(path)
        times.append(time.perf_counter() - t0)
        assert r.status_code == 200, r.text
    return times


async def rest() -> dict[str, float]:
    async with embedded_stack("vertac-bench-auth-") as stack:
        pool = await open_pool(stack.common.database_url, retry=False, name="bench")
        token, _ = await TokenStore(pool).create("bench", "viewer", created_by="bench")
        await pool.close()
        off_port, on_port = free_port(), free_port()
        stack.start("gateway", VERTAC_GATEWAY_PORT=str(off_port), VERTAC_AUTH="off")
        stack.start("gateway", VERTAC_GATEWAY_PORT=str(on_port))
        for port, proc in zip((off_port, on_port), stack.procs, strict=True):
            await asyncio.to_thread(wait_for_port, "127.0.0.1", port, 120, proc)
        path = "/api/live/alerts?limit=10"  # a read of the database, as a viewer's page makes
        off = httpx.AsyncClient(base_url=f"http://127.0.0.1:{off_port}", timeout=30)
        on = httpx.AsyncClient(base_url=f"http://127.0.0.1:{on_port}", timeout=30,
                               headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        async with off, on:
            await _round(off, path)  # warm both: pools, caches
            await _round(on, path)
            rounds: dict[str, list[float]] = {"off": [], "on": []}
            for _ in range(ROUNDS):
                rounds["off"].append(statistics.median(await _round(off, path)))
                rounds["on"].append(statistics.median(await _round(on, path)))
    return {k: statistics.median(v) * 1000 for k, v in rounds.items()}


async def _publish(url: str, first_seq: int) -> float:
    nc = await connect(CommonSettings(nats_url=url), "vertac-bench-edge")
    try:
        publisher = FramePublisher(nc.jetstream(timeout=10))
        values = np.arange(100.0)
        t0 = time.perf_counter()
        for k in range(FRAMES):
            series = tuple(Series(f"s{i}", values, 1_800_000_000 * 10**9 + k * 10**8, 10**6)
                           for i in range(16))  # fmt: skip
            await publisher.publish(Frame(STREAM, first_seq + k, series))
        await publisher.flush()
        return FRAMES * 1600 / (time.perf_counter() - t0)
    finally:
        await nc.close()


async def bus() -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="vertac-bench-bus-"))
    users = BusUsers(root / "nats.secrets", root / "nats.users.conf")
    passwords = users.ensure(edge_user(STREAM))
    open_server = NatsServer(root / "open", port=free_port(), monitor_port=free_port()).start()
    closed = NatsServer(root / "closed", port=free_port(), monitor_port=free_port(),
                        config=users.config_file).start()  # fmt: skip
    try:
        admin_url = url_for(closed.url, ADMIN, passwords[ADMIN])
        edge_url = url_for(closed.url, edge_user(STREAM), passwords[edge_user(STREAM)])
        for url in (open_server.url, admin_url):  # the layout, as bus init makes it
            b = await open_bus(CommonSettings(nats_url=url), "bench")
            await b.close()
        rates: dict[str, list[float]] = {"open": [], "closed": []}
        for r in range(ROUNDS):
            rates["open"].append(await _publish(open_server.url, r * FRAMES))
            rates["closed"].append(await _publish(edge_url, r * FRAMES))
    finally:
        open_server.stop()
        closed.stop()
    return {k: statistics.median(v) for k, v in rates.items()}


def main() -> None:
    http = asyncio.run(rest())
    nats = asyncio.run(bus())
    print(f"VerTac auth benchmark (medians of {ROUNDS} alternating rounds)")
    print("| path | without | with | ratio |")
    print("| --- | --- | --- | --- |")
    print(f"| REST read, {REQUESTS} requests a round: latency ms (VERTAC_AUTH=off / token) "
          f"| {http['off']:.2f} | {http['on']:.2f} | {http['on'] / http['off']:.2f} |")  # fmt: skip
    print(f"| edge publishing, samples/s (open bus / edge user, permissions) "
          f"| {nats['open']:,.0f} | {nats['closed']:,.0f} | {nats['closed'] / nats['open']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
