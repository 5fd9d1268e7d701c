"""Data in and out: batch datasets, the evaluation of the analysis, Parquet export."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from edge.cli import fail
from edge.client import Bus
from services.cli.apps import app, dataset_app, on_bus_and_db
from services.common.config import CommonSettings


@dataset_app.command("import")
def dataset_import(
    name: Annotated[str, typer.Argument(help="Dataset name (letters, digits, '_.-').")],
    files: Annotated[list[Path], typer.Argument(help="CSV or Parquet files, or zips of them.")],
    stream: Annotated[
        str | None,
        typer.Option(
            help="Stream of the cycles; default batch-NAME ('.' as '-'; registered from the "
            "files when new)."
        ),
    ] = None,
    label: Annotated[str, typer.Option(help="Label of cycles without a label column.")] = "",
) -> None:
    """Import recorded cycles (one per file, or a cycle_id column) into a dataset."""
    import re

    from services.cycles.dataset_files import DatasetError, parse_cycles, read_file, unpack_upload
    from services.cycles.datasets import DatasetService

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise fail(f"dataset name {name!r}: 1-64 letters, digits, '_', '.' or '-'")
    from schemas import subjects

    target = stream or subjects.dataset_stream_id(name)
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

    async def work(bus: Bus, pool: Any) -> list[Any]:
        # the administrator's own import: what the cycles service does for the gateway's
        return await DatasetService(pool, bus, admin=True).store_cycles(name, target, parsed, label)

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
    from services.cli.raw_export import export_parquet

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
