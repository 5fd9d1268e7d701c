"""The ``vertac`` command: run the stack, a service, the simulator; set up the bus and database."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from edge import cli as edge_cli
from edge.cli import app as edge_app
from edge.cli import fail
from schemas import logs
from schemas.client import Bus
from schemas.messages import AlertRule
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
) -> None:
    """Run everything on this machine: nats-server, PostgreSQL, services, simulator, gateway."""
    from services.stack import StackOptions, run_stack

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


def _cycle_command(stream_id: str, command: str, reason: str) -> None:
    from datetime import UTC, datetime

    from schemas import subjects
    from schemas.messages import CycleCommand

    try:
        subjects.check_stream_id(stream_id)
    except subjects.InvalidStreamId as exc:
        raise fail(str(exc)) from exc
    cmd = CycleCommand(
        stream_id=stream_id,
        command=command,
        issued_at=datetime.now(UTC),
        source="cli",
        reason=reason,
    )
    common = CommonSettings()

    async def publish(bus: Bus) -> int:
        ack = await bus.js.publish(subjects.control(stream_id), cmd.model_dump_json().encode())
        return int(ack.seq)

    seq = on_bus(common, "vertac-cli", publish)
    typer.echo(f"{command} for {stream_id} published (control stream sequence {seq})")


@cycle_app.command("start")
def cycle_start(stream_id: str, reason: str = "") -> None:
    """Start a cycle on STREAM_ID now."""
    _cycle_command(stream_id, "cycle_start", reason)


@cycle_app.command("stop")
def cycle_stop(stream_id: str, reason: str = "") -> None:
    """Stop the running cycle on STREAM_ID (it completes)."""
    _cycle_command(stream_id, "cycle_stop", reason)


@cycle_app.command("abort")
def cycle_abort(stream_id: str, reason: str = "") -> None:
    """Abort the running cycle on STREAM_ID (it ends aborted, with the reason)."""
    _cycle_command(stream_id, "cycle_abort", reason)


def load_rules_file(path: Path) -> list[AlertRule]:
    """Rules from a YAML (or JSON) file: a list of rules, or ``{"rules": [...]}``. Raises
    ValueError naming the rule and the field that is wrong."""
    import yaml
    from pydantic import ValidationError

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
    if isinstance(data, dict):
        data = data.get("rules")
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of rules (or a 'rules:' key holding one)")
    rules: list[AlertRule] = []
    for i, item in enumerate(data):
        try:
            rules.append(AlertRule.model_validate(item))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "rule"
            name = item.get("rule_id", "?") if isinstance(item, dict) else "?"
            raise ValueError(f"{path}: rule {i} ({name}), {where}: {err['msg']}") from exc
    return rules


@alerts_app.command("load")
def alerts_load(path: Annotated[Path, typer.Argument(help="YAML or JSON file of rules.")]) -> None:
    """Create or replace the alert rules of a file (each names its stream_id and rule_id)."""
    from schemas import subjects

    try:
        rules = load_rules_file(path)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    common = CommonSettings()

    async def put_rules(bus: Bus) -> None:
        kv = await bus.js.key_value(subjects.KV_ALERT_RULES)
        for rule in rules:
            await kv.put(f"{rule.stream_id}.{rule.rule_id}", rule.model_dump_json().encode())

    on_bus(common, "vertac-cli", put_rules)
    typer.echo(f"loaded {len(rules)} alert rules from {path}")


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


@dataset_app.command("import")
def dataset_import(
    name: Annotated[str, typer.Argument(help="Dataset name (letters, digits, '_.-').")],
    files: Annotated[list[Path], typer.Argument(help="CSV or Parquet files, or zips of them.")],
    stream: Annotated[
        str | None,
        typer.Option(
            help="Stream of the cycles; default batch-NAME (registered from the files when new)."
        ),
    ] = None,
    label: Annotated[str, typer.Option(help="Label of cycles without a label column.")] = "",
) -> None:
    """Import recorded cycles (one per file, or a cycle_id column) into a dataset."""
    import re

    from services.common.datasets import (
        DatasetError,
        parse_cycles,
        read_file,
        store_cycles,
        unpack_upload,
    )

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise fail(f"dataset name {name!r}: 1-64 letters, digits, '_', '.' or '-'")
    target = stream or f"batch-{name}"[:64]
    try:
        parsed = [
            cycle
            for path in files
            for member, data in unpack_upload(path.name, _read(path))
            for cycle in parse_cycles(member, read_file(member, data))
        ]
    except DatasetError as exc:
        raise fail(exc.message) from exc
    common = CommonSettings()
    from schemas import subjects

    async def work(bus: Bus, pool: Any) -> list[Any]:
        kv = await bus.js.key_value(subjects.KV_STREAMS)
        return await store_cycles(bus.js, kv, pool, name, target, parsed, label)

    try:
        imported = on_bus_and_db(common, work)
    except DatasetError as exc:
        raise fail(exc.message) from exc
    for c in imported:
        typer.echo(f"{c.cycle_id}\t{c.label or '-'}\t{c.samples} samples\t{c.duration_s:.2f} s")
    typer.echo(f"imported {len(imported)} cycles into dataset {name} (stream {target})")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror}") from exc


@dataset_app.command("analyse")
def dataset_analyse(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    stream: Annotated[
        str, typer.Option(help="Stream whose reference the cycles are compared with.")
    ],
    version: Annotated[
        int | None, typer.Option(help="Reference version; default the stream's active one.")
    ] = None,
    label: Annotated[str | None, typer.Option(help="Only cycles with this label.")] = None,
) -> None:
    """Analyse every cycle of a dataset against one reference; results are stored as for live
    cycles (shown by each cycle's report), not published."""
    from schemas import subjects
    from services.analysis.app import params_of
    from services.analysis.batch import BatchError, analyse_dataset
    from services.analysis.config import Settings as AnalysisSettings
    from services.analysis.dtw import warm_up

    common = CommonSettings()
    warm_up()

    async def work(bus: Bus, pool: Any) -> list[Any]:
        kv = await bus.js.key_value(subjects.KV_STREAMS)
        from services.analysis.adapters import Catalogue

        total = len(await Catalogue(pool).of_dataset(name, label))
        with typer.progressbar(length=total, label=f"analysing {name}", file=sys.stderr) as bar:
            return await analyse_dataset(
                bus, pool, kv, name, stream, version, label, params_of(AnalysisSettings()),
                progress=lambda _: bar.update(1),
            )  # fmt: skip

    try:
        results = on_bus_and_db(common, work)
    except BatchError as exc:
        raise fail(exc.message) from exc
    for r in results:
        top = r.sensors[0].sensor_id if r.sensors else "-"
        score = "  n/a" if r.health_score is None else f"{r.health_score:5.1f}"
        typer.echo(f"{r.cycle_id}\t{score}\t{r.risk_class}\ttop {top}")
    scores = sorted(r.health_score for r in results if r.health_score is not None)
    blind = len(results) - len(scores)
    if scores:
        typer.echo(f"analysed {len(results)} cycles against {stream} reference "
                   f"v{results[0].reference_version}: median score "
                   f"{scores[len(scores) // 2]:.1f}, lowest {scores[0]:.1f}")  # fmt: skip
    if blind:
        typer.echo(f"{blind} of {len(results)} cycles were not comparable with the reference "
                   "(no score): see each cycle's qualification", err=True)  # fmt: skip


@app.command("evaluate")
def evaluate(
    data: Annotated[
        Path, typer.Option(help="Folder of the hydraulic rig's 1 Hz cycles (hydraulic-1hz).")
    ] = Path("../shared/data/hydraulic-1hz"),
    fault: Annotated[
        str,
        typer.Option(help="The simulated slow fault, sensor:drift:growth_per_cycle:start_cycle."),
    ] = "pressure_1:drift:0.1:10",
    cycles: Annotated[int, typer.Option(min=20, help="Most simulated cycles.")] = 150,
    rig: Annotated[bool, typer.Option(help="Evaluate on the rig data (--no-rig: skip it).")] = True,
) -> None:
    """How well the analysis, at its default settings, tells faulty cycles from healthy ones:
    AUC per fault level of the rig for four methods, the healthy cycles' score spread, and how
    early a simulated slow drift is flagged before it scores critical."""
    from edge.replay import DataSetError
    from edge.simulator import Fault
    from services.analysis import evaluate as ev
    from services.analysis.app import params_of, trend_params_of
    from services.analysis.config import Settings as AnalysisSettings
    from services.analysis.dtw import warm_up

    settings = AnalysisSettings()
    params = params_of(settings)
    try:
        drift = Fault.parse(fault)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    if drift.kind not in ("drift", "offset", "noise"):
        raise fail(f"fault {fault!r}: evaluate takes a fault that grows or stays: drift, "
                   "offset or noise")  # fmt: skip
    warm_up()
    if rig:
        if not (data / "profile.txt").exists():
            raise fail(f"no hydraulic rig data at {data} (profile.txt missing); give --data "
                       "FOLDER, or --no-rig to evaluate on the simulated drift only")  # fmt: skip
        try:
            found = ev.evaluate_rig(data, params, settings.auto_reference_cycles, settings.n_points)
        except DataSetError as exc:
            raise fail(str(exc)) from exc
        typer.echo("\n".join(ev.rig_report(found)))
        typer.echo("")
    try:
        result = ev.evaluate_drift(
            drift, params, trend_params_of(settings), settings.auto_reference_cycles,
            settings.n_points, cycles,
        )  # fmt: skip
    except ValueError as exc:
        raise fail(str(exc)) from exc
    typer.echo("\n".join(ev.drift_report(result, ev.SIM_CYCLE_S)))
    healthy = ev.evaluate_drift(
        dataclasses.replace(drift, magnitude=0.0), params, trend_params_of(settings),
        settings.auto_reference_cycles, settings.n_points, cycles,
    )  # fmt: skip
    typer.echo("\n".join(ev.baseline_report(healthy)))


@app.command("export")
def export(
    stream: Annotated[str, typer.Option(help="The stream id.")],
    start: Annotated[str, typer.Option(help="Start, ISO time (UTC when no zone is given).")],
    end: Annotated[str, typer.Option(help="End, ISO time (UTC when no zone is given).")],
    out: Annotated[Path, typer.Option(help="The Parquet file to write.")],
) -> None:
    """Raw samples of a stream's range as Parquet (long form: time, sensor, value, quality),
    read a few hundred frames at a time: memory stays bounded whatever the range."""
    from datetime import UTC, datetime

    import psycopg
    from rich.progress import Progress

    from schemas import subjects
    from services.common.raw_export import export_parquet

    try:
        subjects.check_stream_id(stream)
    except subjects.InvalidStreamId as exc:
        raise fail(f"--stream: {exc}") from exc
    moments = []
    for name, text in (("--start", start), ("--end", end)):
        try:
            moment = datetime.fromisoformat(text)
        except ValueError as exc:
            raise fail(f"{name}: {text!r} is not an ISO time (2026-12-01T08:00:00Z)") from exc
        moments.append(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    if moments[0] >= moments[1]:
        raise fail("--start must be before --end")
    start_ns, end_ns = (int(m.timestamp() * 1e6) * 1000 for m in moments)
    common = CommonSettings()
    with Progress(transient=True) as bar:
        task = bar.add_task(f"exporting {stream}", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            result = asyncio.run(
                export_parquet(common.database_url, stream, start_ns, end_ns, out, progress)
            )
        except psycopg.OperationalError as exc:
            raise fail(f"PostgreSQL is unreachable: {exc}") from exc
        except OSError as exc:
            raise fail(f"--out: {exc}") from exc
    typer.echo(f"wrote {result.samples} samples of {result.frames} frames to {out}")


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


def on_db(common: CommonSettings, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``work`` with a PostgreSQL pool; an unreachable database is one line, exit 2."""
    from schemas.client import ServerUnreachable
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


def _cli_principal() -> Any:
    import getpass

    from services.common.auth import Principal

    return Principal(f"cli:{getpass.getuser()}", "admin", via="cli")


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="Who or what uses it, e.g. line-3-hmi, press-01.")],
    role: Annotated[
        str, typer.Option(help="viewer, operator, admin, or edge (posts samples only).")
    ] = "viewer",
    stream: Annotated[
        list[str] | None, typer.Option(help="For an edge: a stream it may post (repeat).")
    ] = None,
) -> None:
    """Make an API token. The token alone goes to standard output (shown this once)."""
    import re

    from schemas.messages import TOKEN_NAME_PATTERN
    from services.common.auth import ROLES, AuditLog, TokenStore

    if role not in ROLES:
        raise fail(f"--role must be one of {', '.join(ROLES)}")
    if not re.fullmatch(TOKEN_NAME_PATTERN, name):
        raise fail(
            "name: 1-64 letters, digits, '_', '.', '@' or '-', starting with a letter or digit"
        )
    if (role == "edge") != bool(stream):
        raise fail("an edge token needs --stream, and only an edge token takes it")
    from schemas import subjects

    for s in stream or []:
        try:
            subjects.check_stream_id(s)
        except subjects.InvalidStreamId as exc:
            raise fail(f"--stream: {exc}") from exc

    async def work(pool: Any) -> str:
        token, info = await TokenStore(pool).create(name, role, stream, _cli_principal().name)
        await AuditLog(pool).record(_cli_principal(), "token.create", info.token_id, None, info)
        typer.echo(f"token {info.token_id} for {name} (role {role}) made", err=True)
        return token

    typer.echo(on_db(CommonSettings(), work))


@token_app.command("list")
def token_list(
    all_: Annotated[bool, typer.Option("--all", help="Revoked ones too.")] = False,
) -> None:
    """The API tokens (never their secrets)."""
    from services.common.auth import TokenStore

    async def work(pool: Any) -> Any:
        return await TokenStore(pool).list(all_)

    rows = on_db(CommonSettings(), work)
    typer.echo(f"{'id':<17} {'name':<24} {'role':<9} {'created':<20} {'last used':<20} streams")
    for t in rows:
        used = f"{t.last_used_at:%Y-%m-%d %H:%M:%S}" if t.last_used_at else "-"
        state = f" (revoked {t.revoked_at:%Y-%m-%d})" if t.revoked_at else ""
        typer.echo(f"{t.token_id:<17} {t.name:<24} {t.role:<9} {t.created_at:%Y-%m-%d %H:%M:%S}"
                   f" {used:<20} {','.join(t.streams) or '-'}{state}")  # fmt: skip


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(help="Its id (see list).")]) -> None:
    """Revoke a token: requests with it are refused within seconds."""
    from services.common.auth import AuditLog, TokenStore

    async def work(pool: Any) -> Any:
        revoked = await TokenStore(pool).revoke(token_id)
        if revoked is not None:
            await AuditLog(pool).record(_cli_principal(), "token.revoke", token_id, None, revoked)
        return revoked

    if on_db(CommonSettings(), work) is None:
        raise fail(f"no active token {token_id!r}")
    typer.echo(f"token {token_id} revoked")


@auth_app.command("edge")
def auth_edge(
    stream_id: Annotated[str, typer.Argument(help="The stream this edge publishes.")],
    out: Annotated[Path, typer.Option(help="Credentials file to write (mode 600).")],
    data_dir: Annotated[Path, typer.Option(help="vertac run's data folder.")] = DATA,
    url: Annotated[
        str, typer.Option(help="NATS as the edge reaches it.")
    ] = "nats://127.0.0.1:4222",
) -> None:
    """NATS credentials for one edge: it may publish that stream's samples, registration and
    status only. Adds the user to vertac run's nats-server (reloaded at once if it runs) and
    writes an environment file for ``vertac edge run`` (systemd EnvironmentFile=, docker
    --env-file, or ``set -a; . FILE; set +a``)."""
    from schemas import subjects
    from services.common.auth import write_secret
    from services.common.embedded import reload_nats
    from services.common.natsauth import BusUsers, edge_user, url_for

    try:
        user = edge_user(stream_id)
    except subjects.InvalidStreamId as exc:
        raise fail(str(exc)) from exc
    root = data_dir.resolve()
    if not (root / "nats").is_dir():
        raise fail(f"{root} is not a vertac run data folder (--data-dir)")
    users = BusUsers(root / "nats.secrets", root / "nats.conf")
    password = users.ensure(user)[user]
    reloaded = reload_nats(root / "nats" / "nats-server.pid")
    write_secret(out, f"# NATS credentials of {user}: publishes stream {stream_id} only\n"
                      f"VERTAC_NATS_URL={url_for(url, user, password)}\n")  # fmt: skip
    typer.echo(f"wrote {out} for {user}; nats-server "
               + ("reloaded" if reloaded else "takes it on its next start"))  # fmt: skip


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
    """Write JSON Schemas and the AsyncAPI document into schemas/json/, and the dashboard's
    TypeScript types into services/gateway/web/src/contracts.ts."""
    from schemas import asyncapi, export, typescript

    paths = export.write()
    (export.JSON_DIR / "asyncapi.json").write_text(asyncapi.render())
    ts = typescript.write()
    typer.echo(f"wrote {len(paths)} JSON Schemas and asyncapi.json to {export.JSON_DIR}, "
               f"and the dashboard's types to {ts}")  # fmt: skip


def main() -> None:
    app(prog_name="vertac")


if __name__ == "__main__":
    main()
