"""What the benchmarks share: nats-server and PostgreSQL embedded in a temporary folder, services
started as processes against them, and percentiles."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common.auth import TokenStore
from services.common.config import CommonSettings
from services.common.db import migrate, open_pool
from services.embedded import NatsServer, Postgres, free_port

REPO = Path(__file__).resolve().parents[2]


def percentile(xs: list[float], q: float) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Stack:
    root: Path
    common: CommonSettings
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, *services: str, **env: str) -> None:
        """Run ``python -m services.<name>`` for each name, logging to ``<root>/<name>.log``,
        with warnings only and no metrics endpoint; ``env`` adds or overrides variables."""
        base = {
            **os.environ,
            "VERTAC_NATS_URL": self.common.nats_url,
            "VERTAC_DATABASE_URL": self.common.database_url,
            "VERTAC_LOG_LEVEL": "WARNING",
            **{f"VERTAC_{name.upper()}_METRICS_PORT": "0" for name in services},
            **env,
        }
        for name in services:
            log = self.root / f"{name}.log"
            if log.exists():  # a second process of the same service: a log of its own
                log = self.root / f"{name}-{len(self.procs)}.log"
            out = log.open("wb")
            self.procs.append(
                subprocess.Popen([sys.executable, "-m", f"services.{name}"], env=base,
                                 cwd=REPO, stdout=out, stderr=out)
            )  # fmt: skip

    async def token(self, role: str = "viewer") -> str:
        """An API token of ``role`` in the stack's database (the gateways refuse anonymous
        viewers and calls)."""
        pool = await open_pool(self.common.database_url, retry=False, name="bench")
        try:
            token, _ = await TokenStore(pool).create(f"bench-{role}", role, created_by="bench")
        finally:
            await pool.close()
        return token

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:  # a saturated service that does not stop in time
                p.kill()
                p.wait()
        self.procs.clear()


@asynccontextmanager
async def embedded_stack(prefix: str) -> AsyncIterator[Stack]:
    """nats-server and a migrated PostgreSQL on free ports; everything is stopped on exit."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    nats_server = NatsServer(root / "nats", port=free_port(), monitor_port=free_port()).start()
    pg = Postgres(root / "pg", port=free_port()).start()
    stack = Stack(root, CommonSettings(nats_url=nats_server.url, database_url=pg.url))
    try:
        await migrate(pg.url)
        yield stack
    finally:
        stack.stop()
        pg.stop()
        nats_server.stop()


# processes and what they cost (from /proc), and the line-per-message talk with a child


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
    return out


def cpu_s(pids: list[int]) -> float:
    total = 0.0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for p in pids:
        try:
            m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{p}/status").read_text())
        except OSError:
            continue
        total += int(m.group(1)) * 1024 if m else 0
    return total


async def line(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None
    raw = await proc.stdout.readline()
    if not raw:
        err = await proc.stderr.read() if proc.stderr else b""
        raise RuntimeError(f"a viewer process exited: {err.decode()[-2000:]}")
    return json.loads(raw)
