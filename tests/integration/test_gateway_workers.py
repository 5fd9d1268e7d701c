"""Gateway replicas on one host: ``VERTAC_GATEWAY_WORKERS`` processes share the port
(SO_REUSEPORT), a killed worker is started again, and SIGTERM stops them all."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import httpx
import pytest

from services.common.config import CommonSettings
from services.embedded import free_port, wait_for_port
from tests.conftest import REPO, admin_token, bus_url, eventually

pytestmark = pytest.mark.integration


async def pids(base: str, token: str, tries: int = 60) -> list[int]:
    """Which process answered each of ``tries`` health requests, each on a new connection
    (the pid is told to a signed-in caller only)."""
    out = []
    limits = httpx.Limits(max_keepalive_connections=0)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        base_url=base, limits=limits, timeout=20, headers=headers
    ) as client:
        for _ in range(tries):
            try:
                r = await client.get("/api/health", headers={"Connection": "close"})
            except httpx.TransportError:
                continue  # a worker being replaced
            if r.status_code == 200:
                out.append(r.json()["pid"])
    return out


async def test_workers_share_the_port_and_a_killed_one_comes_back(
    common: CommonSettings, nats_server, tmp_path
) -> None:
    port = free_port()
    token = await admin_token(common.database_url)
    env = {**os.environ, "VERTAC_GATEWAY_WORKERS": "2", "VERTAC_GATEWAY_PORT": str(port),
           "VERTAC_NATS_URL": bus_url(nats_server, "gateway"),
           "VERTAC_DATABASE_URL": common.database_url}  # fmt: skip
    log = (tmp_path / "gateway.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "services.gateway"], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        await asyncio.to_thread(wait_for_port, "127.0.0.1", port, 120, proc)

        async def two_workers() -> set[int] | None:
            seen = set(await pids(base, token))
            return seen if len(seen) == 2 else None

        workers = await eventually(two_workers, timeout=120, interval=0.5)
        assert proc.pid not in workers  # the parent only supervises
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)

        async def replaced() -> set[int] | None:
            seen = set(await pids(base, token))
            return seen if len(seen) == 2 and victim not in seen else None

        after = await eventually(replaced, timeout=120, interval=0.5)
        assert max(workers) in after  # the other worker served throughout
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(proc.wait, 30)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
    assert code == 0, (tmp_path / "gateway.log").read_text()[-2000:]
