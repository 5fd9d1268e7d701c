"""The whole system and its servers: run, service, bus, db, schemas, influx, deploy."""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path
from typing import Annotated

import typer

from edge.cli import fail
from schemas import logs
from services.cli.apps import (
    DEPLOY,
    SERVICES,
    app,
    bus_app,
    db_app,
    deploy_app,
    influx_app,
    on_bus,
    schemas_app,
)
from services.common.config import CommonSettings


@app.command()
def run(
    data_dir: Annotated[
        Path, typer.Option(help="Where NATS and PostgreSQL keep their data.")
    ] = Path(".vertac"),
    port: Annotated[int, typer.Option(help="Gateway HTTP port.")] = 8000,
    nats_port: Annotated[int, typer.Option()] = 4222,
    nats_monitor_port: Annotated[int, typer.Option(help="nats-server's monitoring port.")] = 8222,
    pg_port: Annotated[int, typer.Option()] = 55432,
    metrics_base_port: Annotated[
        int, typer.Option(help="ingest, cycles, analysis, alerts serve /metrics from here on.")
    ] = 9101,
    simulate: Annotated[bool, typer.Option(help="Run the simulated machine.")] = True,
    sim_sensors: Annotated[int, typer.Option(help="Sensors of the simulated machine.")] = 8,
    sim_rate: Annotated[float, typer.Option(help="Rate of its fast sensors, Hz.")] = 100.0,
    influx_url: Annotated[str, typer.Option(help="Also write to this InfluxDB.")] = "",
    gateway_workers: Annotated[
        int, typer.Option(min=1, max=64, help="Gateway processes sharing the port.")
    ] = 1,
    site: Annotated[
        str, typer.Option(help="This plant's site id, when it is a site of a central VerTac.")
    ] = "",
    central: Annotated[
        str,
        typer.Option(
            help="Central's leaf-node URL (nats-leaf://site-<id>:<password>@host:7422, or "
            "tls://... with --central-ca); needs --site."
        ),
    ] = "",
    central_ca: Annotated[
        Path | None,
        typer.Option(help="CA that signed central's leaf-port certificate (with tls://)."),
    ] = None,
) -> None:
    """Run everything on this machine: nats-server, PostgreSQL, services, simulator, gateway."""
    from services.stack import StackOptions, run_stack

    if central and not site:
        raise fail("--central needs --site: the id central knows this plant by")
    if central_ca is not None and not central_ca.is_file():
        raise fail(f"--central-ca: {central_ca} is not a file")
    options = StackOptions(
        data_dir=data_dir,
        gateway_port=port,
        nats_port=nats_port,
        nats_monitor_port=nats_monitor_port,
        pg_port=pg_port,
        metrics_base_port=metrics_base_port,
        simulate=simulate,
        sim_args=("--sensors", str(sim_sensors), "--rate", str(sim_rate)),
        influx_url=influx_url,
        gateway_workers=gateway_workers,
        site="".join(_checked_sites([site] if site else [])),
        central_url=central,
        central_ca=central_ca,
    )
    raise typer.Exit(run_stack(options))


def _checked_sites(ids: list[str]) -> tuple[str, ...]:
    """The site ids, each valid, or one line naming what is wrong (exit 2)."""
    from services.federation import InvalidSite, check_site

    try:
        return tuple(check_site(s) for s in ids)
    except InvalidSite as exc:
        raise fail(f"--site: {exc}") from exc


def _sample_modes(given: list[str], sites: list[str]) -> tuple[tuple[str, str], ...]:
    """``SITE=MODE`` pairs, each naming a --site and a mode, or one line saying what is wrong."""
    from services.federation import SAMPLE_MODES

    modes = []
    for item in given:
        site, _, mode = item.partition("=")
        if site not in sites:
            raise fail(f"--site-samples {item!r}: {site!r} is not one of the --site ids")
        if mode not in SAMPLE_MODES:
            raise fail(f"--site-samples {item!r}: the mode is one of {', '.join(SAMPLE_MODES)}")
        modes.append((site, mode))
    return tuple(modes)


@app.command()
def central(
    site: Annotated[
        list[str], typer.Option(help="A site whose data central takes (repeat for each).")
    ],
    data_dir: Annotated[Path, typer.Option(help="Where central keeps its data.")] = Path(
        ".vertac-central"
    ),
    port: Annotated[int, typer.Option(help="Gateway HTTP port.")] = 8000,
    nats_port: Annotated[int, typer.Option()] = 4222,
    nats_monitor_port: Annotated[int, typer.Option()] = 8222,
    leaf_port: Annotated[int, typer.Option(help="Where the sites' leaf nodes connect.")] = 7422,
    pg_port: Annotated[int, typer.Option()] = 55432,
    metrics_base_port: Annotated[int, typer.Option()] = 9101,
    leaf_tls_cert: Annotated[
        Path | None, typer.Option(help="Certificate of the leaf port (TLS for the sites).")
    ] = None,
    leaf_tls_key: Annotated[Path | None, typer.Option(help="Its private key.")] = None,
    site_samples: Annotated[
        list[str],
        typer.Option(
            help="SITE=MODE: what central takes of a site's samples: full (every frame, the "
            "default), digest (each sensor's lowest and highest sample per frame) or none "
            "(repeat for each site)."
        ),
    ] = [],  # noqa: B006 (typer reads the default, nobody mutates it)
) -> None:
    """Run a central VerTac: as ``vertac run`` without a simulated machine, taking each site's
    registrations, samples, cycles, analyses and alerts over its leaf node (JetStream
    sourcing, under ``vertac.<site>.>``)."""
    from services.stack import StackOptions, run_stack

    for option, path in (("--leaf-tls-cert", leaf_tls_cert), ("--leaf-tls-key", leaf_tls_key)):
        if path is not None and not path.is_file():
            raise fail(f"{option}: {path} is not a file")
    if (leaf_tls_cert is None) != (leaf_tls_key is None):
        raise fail("--leaf-tls-cert and --leaf-tls-key go together")
    options = StackOptions(
        data_dir=data_dir,
        gateway_port=port,
        nats_port=nats_port,
        nats_monitor_port=nats_monitor_port,
        pg_port=pg_port,
        metrics_base_port=metrics_base_port,
        simulate=False,
        leaf_port=leaf_port,
        sites=_checked_sites(site),
        site_samples=_sample_modes(site_samples, site),
        leaf_tls_cert=leaf_tls_cert,
        leaf_tls_key=leaf_tls_key,
    )
    raise typer.Exit(run_stack(options))


@app.command()
def service(name: Annotated[str, typer.Argument(help=f"One of: {', '.join(SERVICES)}")]) -> None:
    """Run one service in the foreground (same as ``python -m services.<name>``)."""
    if name not in SERVICES:
        raise fail(f"unknown service {name!r}; choose one of {', '.join(SERVICES)}")
    module = importlib.import_module(f"services.{name}.app")
    module.main()


@bus_app.command("init")
def bus_init() -> None:
    """Create or update JetStream streams, KV buckets and object stores (idempotent)."""
    from services.common.bus import init_bus

    common = CommonSettings()
    logs.setup("cli", common.log_level, common.log_json)
    done = on_bus(common, "vertac-cli", lambda bus: init_bus(bus.js, common))
    for name, what in done.items():
        typer.echo(f"{name:<22} {what}")


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending PostgreSQL migrations."""
    import psycopg

    from services.common.db import migrate

    common = CommonSettings()
    try:
        applied = asyncio.run(migrate(common.database_url))
    except psycopg.OperationalError as exc:
        raise fail(f"PostgreSQL is unreachable: {exc}") from exc
    typer.echo(f"applied: {', '.join(applied)}" if applied else "schema is up to date")


@influx_app.command("init")
def influx_init(
    rollup_bucket: Annotated[
        str, typer.Option(help="Bucket of the 1 min aggregates (default: <bucket>_1m).")
    ] = "",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan and the Flux task only.")
    ] = False,
) -> None:
    """Set up the InfluxDB 2 sink (VERTAC_INGEST_INFLUX_*): its bucket keeps raw samples
    VERTAC_RAW_RETENTION_DAYS, a second bucket keeps 1 min aggregates
    VERTAC_ROLLUP_RETENTION_DAYS, filled by a Flux task every minute. Safe to run again."""
    from services.ingest.config import Settings as IngestSettings
    from services.ingest.influx_setup import InfluxPlan, InfluxSetupError, apply, flux_task

    common, ingest = CommonSettings(), IngestSettings()
    plan = InfluxPlan(
        org=ingest.influx_org,
        bucket=ingest.influx_bucket,
        rollup_bucket=rollup_bucket or f"{ingest.influx_bucket}_1m",
        raw_days=common.raw_retention_days,
        rollup_days=common.rollup_retention_days,
    )
    if plan.rollup_bucket == plan.bucket:
        raise fail("--rollup-bucket must differ from the sink's bucket")
    if dry_run:
        for line in plan.describe():
            typer.echo(line)
        typer.echo(flux_task(plan))
        return
    if not ingest.influx_url:
        raise fail("VERTAC_INGEST_INFLUX_URL is not set (the InfluxDB to set up)")
    try:
        done = apply(plan, ingest.influx_url, ingest.influx_token)
    except InfluxSetupError as exc:
        raise fail(str(exc)) from exc
    for line in done:
        typer.echo(line)


@deploy_app.command("init")
def deploy_init(
    dir_: Annotated[Path, typer.Option("--dir", help="Where docker-compose.yml is.")] = DEPLOY,
    host: Annotated[
        list[str] | None,
        typer.Option(help="A name or address the servers are reached by from outside (repeat)."),
    ] = None,
    edge: Annotated[
        list[str] | None, typer.Option(help="A stream to make edge credentials for (repeat).")
    ] = None,
    edge_url: Annotated[
        str, typer.Option(help="NATS as edges reach it (default tls://<first --host>:4222).")
    ] = "",
    renew_certs: Annotated[
        bool, typer.Option(help="Make the server certificates again (new --host names).")
    ] = False,
) -> None:
    """Make what deploy/ needs to run with TLS and passwords everywhere: a CA and server
    certificates, the NATS users and permissions, edge credentials and the passwords in .env.
    What exists is kept; run it again to add edges (then reload NATS: docker compose kill -s HUP
    nats-1 nats-2 nats-3)."""
    from schemas import subjects
    from services.deploy import DeployInit, describe

    if not (dir_ / "docker-compose.yml").is_file():
        raise fail(f"{dir_} has no docker-compose.yml (--dir)")
    for s in edge or []:
        try:
            subjects.check_stream_id(s)
        except subjects.InvalidStreamId as exc:
            raise fail(f"--edge: {exc}") from exc
    made = DeployInit(dir_, list(host or []), list(edge or []), renew_certs, edge_url).run()
    typer.echo(f"{dir_}:\n{describe(made)}")


@schemas_app.command("export")
def schemas_export() -> None:
    """Write JSON Schemas and the AsyncAPI document into schemas/json/, the dashboard's
    TypeScript types into services/gateway/web/src/contracts.ts, and the docs site's API
    reference (docs/api/rest.md from the OpenAPI document, docs/api/bus.md from the AsyncAPI)."""
    from schemas import asyncapi, export, typescript
    from services import apidocs

    paths = export.write()
    (export.JSON_DIR / "asyncapi.json").write_text(asyncapi.render())
    ts = typescript.write()
    pages = apidocs.write()
    typer.echo(f"wrote {len(paths)} JSON Schemas and asyncapi.json to {export.JSON_DIR}, "
               f"the dashboard's types to {ts}, and {len(pages)} docs pages under "
               f"{apidocs.DOCS_API.parent}")  # fmt: skip
