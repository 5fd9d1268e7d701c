"""The ``vertac`` command's apps, settings and the helpers its commands share."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from edge import cli as edge_cli
from edge.cli import app as edge_app
from edge.cli import fail
from edge.client import Bus
from services.common.config import CommonSettings
from services.common.runtime import open_bus

app = typer.Typer(help="VerTac: real-time monitoring of cyclic machines.", no_args_is_help=True)
bus_app = typer.Typer(help="The NATS JetStream layout.", no_args_is_help=True)
db_app = typer.Typer(help="The PostgreSQL schema.", no_args_is_help=True)
schemas_app = typer.Typer(help="Contracts as JSON Schema and AsyncAPI.", no_args_is_help=True)
cycle_app = typer.Typer(help="Cycle commands for a stream.", no_args_is_help=True)
alerts_app = typer.Typer(help="Alert rules.", no_args_is_help=True)
dataset_app = typer.Typer(
    help="Batch datasets: import recorded cycles, analyse them, export them.", no_args_is_help=True
)
app.add_typer(bus_app, name="bus")
app.add_typer(db_app, name="db")
app.add_typer(edge_app, name="edge")  # the same commands as vertac-edge
app.add_typer(schemas_app, name="schemas")
app.add_typer(cycle_app, name="cycle")
app.add_typer(alerts_app, name="alerts")
app.add_typer(dataset_app, name="dataset")
influx_app = typer.Typer(
    help="The InfluxDB 2 sink's buckets and downsampling.", no_args_is_help=True
)
app.add_typer(influx_app, name="influx")

auth_app = typer.Typer(help="Who may use the API: tokens; NATS credentials.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens (shown once when made).", no_args_is_help=True)
auth_app.add_typer(token_app, name="token")
app.add_typer(auth_app, name="auth")
deploy_app = typer.Typer(help="The production layout in deploy/.", no_args_is_help=True)
app.add_typer(deploy_app, name="deploy")

T = TypeVar("T")
DATA = Path(".vertac")
DEPLOY = Path("deploy")
SERVICES = ("ingest", "cycles", "analysis", "alerts", "gateway")


def on_bus(common: CommonSettings, name: str, work: Callable[[Bus], Awaitable[T]]) -> T:
    """Run ``work`` with a connected, declared bus; an unreachable NATS is one line, exit 2."""
    return edge_cli.on_bus(common, name, work, opener=open_bus)


def on_bus_and_db(common: CommonSettings, work: Callable[[Bus, Any], Awaitable[T]]) -> T:
    """Run ``work`` with the bus and a PostgreSQL pool; unreachable servers are one line, exit 2."""
    from services.common.db import open_pool

    async def go(bus: Bus) -> T:
        pool = await open_pool(common.database_url, retry=common.startup_retry, name="cli",
                               migrate_first=common.auto_migrate)  # fmt: skip
        try:
            return await work(bus, pool)
        finally:
            await pool.close()

    return on_bus(common, "vertac-cli", go)


def on_db(common: CommonSettings, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``work`` with a PostgreSQL pool; an unreachable database is one line, exit 2."""
    from edge.client import ServerUnreachable
    from services.common.db import open_pool

    async def go() -> T:
        pool = await open_pool(common.database_url, retry=False, name="cli",
                               migrate_first=common.auto_migrate)  # fmt: skip
        try:
            return await work(pool)
        finally:
            await pool.close()

    try:
        return asyncio.run(go())
    except ServerUnreachable as exc:
        raise fail(str(exc)) from exc


def cli_principal() -> Any:
    import getpass

    from services.common.auth import Principal

    return Principal(f"cli:{getpass.getuser()}", "admin", via="cli")
