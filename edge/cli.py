"""The edge agent's command: ``vertac-edge`` on an edge box (``pip install vertac-edge``), and
``vertac edge`` where the whole of VerTac is installed. It imports only ``edge`` and
``schemas``: an edge box needs no server packages."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from edge.client import (
    Bus,
    BusSettings,
    ServerUnreachable,
    beside_local_run,
    open_client,
)
from schemas import logs

app = typer.Typer(
    help="Edge sources that publish frames: Modbus TCP, OPC-UA, MQTT (JSON, Sparkplug B), "
    "CSV or Parquet replay, and a simulated machine.",
    no_args_is_help=True,
)
T = TypeVar("T")


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"vertac: {message}", err=True)
    return typer.Exit(code)


def on_bus(
    common: BusSettings,
    name: str,
    work: Callable[[Bus], Awaitable[T]],
    opener: Callable[[Any, str], Awaitable[Bus]] = open_client,
) -> T:
    """Run ``work`` with a bus opened by ``opener`` (connected only, by default); an
    unreachable NATS is one line, exit 2."""

    async def go() -> T:
        bus = await opener(common, name)
        try:
            return await work(bus)
        finally:
            await bus.close()

    try:
        return asyncio.run(go())
    except ServerUnreachable as exc:
        raise fail(str(exc)) from exc


@app.command("simulate")
def edge_simulate(
    stream_id: Annotated[str, typer.Option(help="Stream id to publish.")] = "sim-01",
    sensors: Annotated[int, typer.Option(min=1, max=4096)] = 8,
    rate: Annotated[float, typer.Option(help="Rate of the fast sensors, Hz.")] = 100.0,
    slow_rate: Annotated[float, typer.Option(help="Rate of temperature sensors, Hz.")] = 1.0,
    cycle_s: Annotated[float, typer.Option(help="Length of one machine cycle, s.")] = 10.0,
    noise: Annotated[float, typer.Option(help="Noise, share of each sensor's amplitude.")] = 0.01,
    drift: Annotated[float, typer.Option(help="Operating-point drift per hour, share.")] = 0.02,
    jitter: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=0.2,
            help="Cycle-to-cycle variation: each cycle's timing shift (share of the cycle) and "
            "gain change, standard deviation.",
        ),
    ] = 0.0,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            help="sensor:kind[:magnitude[:start_cycle]]; kinds: "
            "offset, drift, noise, spike, lag, stuck. Repeatable."
        ),
    ] = None,
    frame_ms: Annotated[float, typer.Option(help="Time covered by one frame, ms.")] = 100.0,
    speed: Annotated[float, typer.Option(help="1 real time; 0 as fast as possible.")] = 1.0,
    frames: Annotated[int | None, typer.Option(help="Stop after this many frames.")] = None,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    encoding: Annotated[str, typer.Option(help="binary or json")] = "binary",
    seed: Annotated[int, typer.Option()] = 7,
    active_signal: Annotated[
        bool, typer.Option(help="Add a digital cycle_active input (1 while the machine works).")
    ] = True,
) -> None:
    """Publish a simulated cyclic machine's frames to the bus."""
    from edge.run import SimulateOptions, SimulateResult, simulate
    from edge.simulator import Fault, build_machine

    if encoding not in ("binary", "json"):
        raise fail(f"--encoding must be binary or json, not {encoding!r}")
    common = beside_local_run(BusSettings())
    logs.setup("simulator", common.log_level, common.log_json)
    try:
        model = build_machine(
            stream_id=stream_id,
            sensors=sensors,
            rate_hz=rate,
            slow_rate_hz=slow_rate,
            cycle_s=cycle_s,
            noise=noise,
            drift_per_hour=drift,
            jitter=jitter,
            faults=tuple(Fault.parse(f) for f in fault or []),
            seed=seed,
            active_signal=active_signal,
        )
    except ValueError as exc:
        raise fail(str(exc)) from exc
    options = SimulateOptions(
        frame_ms=frame_ms,
        speed=speed,
        frames=frames,
        duration_s=duration,
        encoding=encoding,  # type: ignore[arg-type]
    )

    async def run_until_stopped(bus: Bus) -> SimulateResult:
        import signal

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await simulate(bus, model, options, stop=stop)

    result = on_bus(common, "vertac-simulator", run_until_stopped)
    typer.echo(
        f"published {result.frames} frames, {result.samples} samples "
        f"(seq {result.first_seq}..{result.last_seq}, {result.duplicates} duplicates)"
    )


def _machine(config: Path) -> object:
    from edge.config import ConfigError, load

    try:
        return load(config)
    except ConfigError as exc:
        raise fail(str(exc)) from exc


@app.command("run")
def edge_run(config: Annotated[Path, typer.Option(help="The machine's YAML file.")]) -> None:
    """Read a machine (Modbus TCP, OPC-UA, MQTT with JSON or Sparkplug B, CSV or Parquet
    replay), cut its samples into frames, keep them in the durable buffer and forward them to
    the bus (VERTAC_NATS_URL). SIGINT or SIGTERM stops it: what is buffered is forwarded
    while the bus answers, the rest waits in the buffer for the next start (exit 0)."""
    from edge.agent import EdgeAgent
    from edge.config import MachineConfig

    machine = _machine(config)
    assert isinstance(machine, MachineConfig)
    common = BusSettings()
    logs.setup("edge", common.log_level, common.log_json)

    async def go() -> dict[str, object]:
        import signal

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        agent = EdgeAgent(machine, common)
        agent.log_start()
        await agent.run(stop)
        return agent.last_status

    try:
        status = asyncio.run(go())
    except (ValueError, OSError) as exc:
        raise fail(str(exc)) from exc
    typer.echo(json.dumps(status))


@app.command("check")
def edge_check(
    config: Annotated[Path, typer.Option(help="The machine's YAML file.")],
    timeout: Annotated[
        float, typer.Option(help="MQTT: seconds to wait for a message of every sensor.")
    ] = 10.0,
) -> None:
    """Connect, read each sensor once and print a table: its value, or why it cannot be read.
    An MQTT source waits for one message per sensor (up to --timeout)."""
    from edge.check import HEADER, CheckFailed, check
    from edge.config import MachineConfig

    machine = _machine(config)
    assert isinstance(machine, MachineConfig)
    try:
        rows = check(machine, timeout)
    except CheckFailed as exc:
        raise fail(str(exc)) from exc
    typer.echo(HEADER)
    for row in rows:
        typer.echo(row.line())


@app.command("status")
def edge_status(config: Annotated[Path, typer.Option(help="The machine's YAML file.")]) -> None:
    """Depth, size, oldest frame age, next seq, published and refused frames of the buffer."""
    from edge.agent import status_of_file
    from edge.config import MachineConfig

    machine = _machine(config)
    assert isinstance(machine, MachineConfig)
    typer.echo(status_of_file(machine))


@app.command("replay-hydraulic")
def edge_replay_hydraulic(
    folder: Annotated[Path, typer.Option(help="Folder of the hydraulic-1hz data set.")],
    rows: Annotated[
        str, typer.Option(help="Rows to replay: 'all', 'healthy', or numbers like 0-9,893,900.")
    ] = "all",
    stream_id: Annotated[str, typer.Option()] = "hydraulic-rig",
    speed: Annotated[
        float, typer.Option(help="1 real time (61 s a cycle); 0 as fast as possible.")
    ] = 0.0,
) -> None:
    """Replay cycles of the hydraulic test rig as a live stream (with a cycle_active input)."""
    from edge.replay import DataSetError, load_hydraulic, replay_hydraulic

    common = beside_local_run(BusSettings())
    logs.setup("replay", common.log_level, common.log_json)
    try:
        data = load_hydraulic(folder)
    except DataSetError as exc:
        raise fail(str(exc)) from exc
    try:
        chosen = parse_rows(rows, data)
    except ValueError as exc:
        raise fail(f"--rows: {exc}") from exc

    sent = on_bus(
        common,
        "vertac-replay",
        lambda bus: replay_hydraulic(bus, data, chosen, stream_id=stream_id, speed=speed),
    )
    typer.echo(f"replayed {len(chosen)} cycles in {sent} frames on stream {stream_id}")


def parse_rows(text: str, data: object) -> list[int]:
    """'all', 'healthy' or a list of numbers and ranges (``0-9,893``)."""
    total = len(data.profile)  # type: ignore[attr-defined]
    if text == "all":
        return list(range(total))
    if text == "healthy":
        return [int(r) for r in data.rows(100, 100, 0, 130)]  # type: ignore[attr-defined]
    chosen: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        first, last = int(lo), int(hi or lo)
        if not 0 <= first <= last < total:
            raise ValueError(f"{part!r} is outside 0-{total - 1}")
        chosen.extend(range(first, last + 1))
    return chosen


def main() -> None:
    app(prog_name="vertac-edge")


if __name__ == "__main__":
    main()
