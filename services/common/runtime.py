"""Start-up and shutdown shared by every service process.

``run_process`` sets up logging, turns SIGINT/SIGTERM into a stop event, and turns an unreachable
server at start-up into one clear line on stderr and exit code 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

from psycopg_pool import AsyncConnectionPool

from edge.client import (
    Bus,
    ServerUnreachable,
    cancel_startup,
    connect,
    redact,
    with_startup_retry,
)
from schemas import logs
from services.common.bus import init_bus
from services.common.config import CommonSettings
from services.common.db import open_pool
from services.common.metrics import Metrics

EXIT_UNREACHABLE = 2

log = logging.getLogger(__name__)


async def open_bus(common: CommonSettings, name: str) -> Bus:
    """Connect and declare streams, buckets and stores (every service does this at start)."""
    nc = await connect(common, name)
    js = nc.jetstream(timeout=10)
    # a cluster still electing its JetStream leader answers 503 or not at all for a while
    await with_startup_retry(
        f"JetStream at {redact(common.nats_url)}",
        lambda: init_bus(js, common),
        retry=common.startup_retry,
    )
    return Bus(nc, js)


def run_process(
    service: str, common: CommonSettings, serve: Callable[[asyncio.Event], Awaitable[None]]
) -> None:
    """Run ``serve`` until SIGINT/SIGTERM; exit 2 with one line if a server is unreachable."""
    logs.setup(service, common.log_level, common.log_json)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            stop.set()
            cancel_startup()  # still waiting for its servers: nothing to finish, stop now

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        try:
            await serve(stop)
        except asyncio.CancelledError:
            if not stop.is_set():
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            log.info("stopped while waiting for its servers")

    try:
        import uvloop

        runner: Callable[[Awaitable[None]], None] = uvloop.run  # type: ignore[assignment]
    except ImportError:  # pragma: no cover - uvloop is optional
        runner = asyncio.run  # type: ignore[assignment]
    try:
        runner(main())
    except ServerUnreachable as exc:
        sys.stderr.write(f"vertac {service}: {exc}\n")
        sys.exit(EXIT_UNREACHABLE)


async def open_service(
    service: str, common: CommonSettings, metrics_host: str, metrics_port: int
) -> tuple[Metrics, Bus, AsyncConnectionPool]:
    """What a database-backed service opens at start: metrics, the bus (declared) and a pool
    (after migrating, unless ``VERTAC_AUTO_MIGRATE`` is off)."""
    metrics = new_metrics(service, metrics_host, metrics_port)
    bus = await open_bus(common, f"vertac-{service}")
    pool = await open_pool(
        common.database_url,
        retry=common.startup_retry,
        name=service,
        migrate_first=common.auto_migrate,
        service=service,
    )
    return metrics, bus, pool


def new_metrics(service: str, host: str, port: int) -> Metrics:
    metrics = Metrics(service)
    metrics.serve(host, port)
    return metrics


async def every(
    stop: asyncio.Event, every_s: float, work: Callable[[], Awaitable[object]], what: str
) -> None:
    """Run ``work`` now and then every ``every_s`` until ``stop``; a failure is logged (as
    ``<what> failed``) and the next round runs as planned."""
    while not stop.is_set():
        try:
            await work()
        except Exception:  # one failing round must not end the loop; it is logged
            log.exception(f"{what} failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
