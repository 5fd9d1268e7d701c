"""Edge benchmark (``make bench``): Modbus TCP poll rate and store-and-forward buffer throughput.

- Modbus: the edge's poller reading 16 float32 sensors (one merged request) from a pymodbus
  server on loopback, as fast as it can; baseline: pymodbus's own client reading the same range
  in a bare loop, in the same run.
- Buffer: frames of 16 sensors x 100 samples put, read and removed; baseline: the same payloads
  inserted into a bare SQLite table with the same durability settings.
- Light install (``VERTAC_BENCH_EDGE_INSTALL=0`` skips it; it needs PyPI): ``pip install
  ./deploy/edge`` into a new virtual environment, its size against ``pip install .`` (the whole
  of VerTac) in the same run, and the resident memory of the agent reading 16 Modbus sensors at
  its defaults (100 ms polls, 1 s frames) into a nats-server, as ``vertac-edge run`` (light)
  and as ``vertac edge run`` (whole install).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator.simdata import SimData
from pymodbus.simulator.simdevice import SimDevice
from pymodbus.simulator.simutils import DataType

from edge.buffer import FrameBuffer
from edge.config import MachineConfig
from edge.sources.modbus import ModbusPoller
from schemas.frames import Frame, Series, encode_binary
from services.embedded import free_port

SECONDS = float(os.environ.get("VERTAC_BENCH_SECONDS", "4"))


async def modbus_server() -> tuple[int, ModbusTcpServer, asyncio.Future[None]]:
    """A pymodbus server on a free port, unit 1 holding 64 registers: (port, server, task)."""
    port = free_port()
    server = ModbusTcpServer(
        [
            SimDevice(
                id=1, simdata=[SimData(0, values=list(range(64)), datatype=DataType.REGISTERS)]
            )
        ],
        address=("127.0.0.1", port),
    )
    serving = asyncio.ensure_future(server.serve_forever())
    await asyncio.sleep(0.3)
    return port, server, serving


async def modbus() -> tuple[float, float]:
    port, server, serving = await modbus_server()
    config = MachineConfig.model_validate(
        {
            "stream_id": "bench",
            "source": {"type": "modbus", "host": "127.0.0.1", "port": port},
            "poll_interval_ms": 1,
            "buffer": {"path": "/dev/null"},
            "sensors": [
                {"id": f"s{i}", "address": 2 * i, "data_type": "float32"} for i in range(16)
            ],
        }
    )
    poller = ModbusPoller(config.source, config)  # type: ignore[arg-type]
    await poller.poll_once()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < SECONDS:
        await poller.poll_once()
        n += 1
    ours = n / (time.perf_counter() - t0)
    poller.close()
    client = AsyncModbusTcpClient("127.0.0.1", port=port)
    await client.connect()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < SECONDS:
        await client.read_holding_registers(0, count=32, device_id=1)
        n += 1
    raw = n / (time.perf_counter() - t0)
    client.close()
    await server.shutdown()
    serving.cancel()
    return ours, raw


def buffer_rates(folder: Path) -> tuple[float, float]:
    rng = np.random.default_rng(1)
    frames = [
        Frame(
            "bench",
            k,
            tuple(
                Series(f"s{i}", rng.normal(size=100).astype("f4"), k * 10**8, 10**6)
                for i in range(16)
            ),
        )
        for k in range(2000)
    ]
    buf = FrameBuffer(folder / "edge.sqlite", "bench", 10**10)
    t0 = time.perf_counter()
    for f in frames:
        buf.put(lambda seq, f=f: Frame(f.stream_id, seq, f.series))
        rows = buf.peek(64)
        if len(rows) >= 64:
            buf.remove([seq for seq, _ in rows])
    ours = len(frames) / (time.perf_counter() - t0)
    buf.close()
    db = sqlite3.connect(folder / "raw.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE f (seq INTEGER PRIMARY KEY, payload BLOB)")
    payloads = [encode_binary(f) for f in frames]
    t0 = time.perf_counter()
    for k, p in enumerate(payloads):
        db.execute("INSERT INTO f VALUES (?, ?)", (k, p))
    raw = len(frames) / (time.perf_counter() - t0)
    db.close()
    return ours, raw


async def opcua() -> tuple[float, float]:
    """Notifications/s the edge's OPC-UA reader receives while a server writes 16 variables as
    fast as it can; baseline: the server's own write rate."""
    import logging

    from asyncua import Server

    from edge.sources.opcua import OpcUaReader

    logging.getLogger("asyncua").setLevel(logging.ERROR)
    port = free_port()
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/bench/")
    ns = await server.register_namespace("urn:vertac:bench")
    obj = await server.nodes.objects.add_object(ns, "Rig")
    variables = [await obj.add_variable(ns, f"S{i}", 0.0) for i in range(16)]
    await server.start()
    config = MachineConfig.model_validate(
        {
            "stream_id": "bench",
            "source": {
                "type": "opcua",
                "url": f"opc.tcp://127.0.0.1:{port}/bench/",
                "sampling_interval_ms": 0,
                "queue_size": 1000,
            },
            "poll_interval_ms": 50,
            "buffer": {"path": "/dev/null"},
            "sensors": [
                {"id": f"s{i}", "browse_path": [f"{ns}:Rig", f"{ns}:S{i}"]} for i in range(16)
            ],
        }
    )
    reader = OpcUaReader(config.source, config)  # type: ignore[arg-type]
    stop = asyncio.Event()
    keeper = asyncio.ensure_future(reader.keep_connected(stop))
    await asyncio.sleep(1.5)
    while not reader.queue.empty():
        reader.queue.get_nowait()
    writes, received, t0 = 0, 0, time.perf_counter()
    k = 0.0
    while time.perf_counter() - t0 < SECONDS:
        k += 1
        for v in variables:
            await server.write_attribute_value(v.nodeid, ua_variant(k))
        writes += 16
        while not reader.queue.empty():
            reader.queue.get_nowait()
            received += 1
        await asyncio.sleep(0)
    await asyncio.sleep(0.5)
    while not reader.queue.empty():
        reader.queue.get_nowait()
        received += 1
    elapsed = time.perf_counter() - t0
    stop.set()
    await keeper
    await server.stop()
    return received / elapsed, writes / elapsed


def ua_variant(value: float):  # type: ignore[no-untyped-def]
    from asyncua import ua

    return ua.DataValue(ua.Variant(value, ua.VariantType.Double))


def venv(folder: Path, what: str) -> tuple[Path, float, int]:
    """A new virtual environment with ``what`` pip-installed: (its python, seconds, MB)."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    py = folder / "bin" / "python"
    t0 = time.perf_counter()
    subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", what],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    took = time.perf_counter() - t0
    site = next((folder / "lib").glob("python*/site-packages"))
    pip = site / "pip"
    size = sum(f.stat().st_size for f in site.rglob("*") if f.is_file())
    size -= sum(f.stat().st_size for f in pip.rglob("*") if f.is_file())  # pip itself
    return py, took, size // 1024**2


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def agent_memory(command: list[str], seconds: float) -> tuple[float, float, int]:
    """Run an edge agent on 16 Modbus sensors at its defaults for ``seconds``: (median RSS
    MB after a third of the run, peak RSS MB, frames the bus received)."""
    import subprocess

    import nats

    from services.common.config import CommonSettings
    from services.common.runtime import open_bus
    from services.embedded import NatsServer

    folder = Path(tempfile.mkdtemp(prefix="vertac-bench-edge-agent-"))
    nats_server = NatsServer(folder / "nats", port=free_port(), monitor_port=free_port()).start()
    port, server, serving = await modbus_server()
    bus = await open_bus(CommonSettings(nats_url=nats_server.url), "bench")  # declares the bus
    frames = 0

    async def count(_msg: nats.aio.msg.Msg) -> None:
        nonlocal frames
        frames += 1

    await bus.nc.subscribe("vertac.samples.>", cb=count)
    machine = folder / "machine.yaml"
    machine.write_text(
        f"stream_id: bench-edge\nsource: {{type: modbus, host: 127.0.0.1, port: {port}}}\n"
        "buffer: {path: edge.sqlite}\nsensors:\n"
        + "".join(f"  - {{id: s{i}, address: {2 * i}, data_type: float32}}\n" for i in range(16))
    )
    env = {**os.environ, "VERTAC_NATS_URL": nats_server.url, "VERTAC_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(
        [*command, "run", "--config", str(machine)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    samples: list[float] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds and proc.poll() is None:
        await asyncio.sleep(1)
        if time.monotonic() - t0 > seconds / 3:
            samples.append(rss_mb(proc.pid))
    proc.terminate()
    proc.wait(30)
    await bus.close()
    await server.shutdown()
    serving.cancel()
    nats_server.stop()
    if not samples:
        raise RuntimeError(f"{command[0]} exited early ({proc.returncode})")
    return statistics.median(samples), max(samples), frames


def light_install() -> None:
    repo = Path(__file__).resolve().parents[2]
    folder = Path(tempfile.mkdtemp(prefix="vertac-bench-edge-install-"))
    light_py, light_s, light_mb = venv(folder / "light", str(repo / "deploy" / "edge"))
    whole_py, whole_s, whole_mb = venv(folder / "whole", str(repo))
    print(
        f"  light install (pip install ./deploy/edge): {light_mb} MB in {light_s:.0f} s; "
        f"the whole of VerTac (pip install .): {whole_mb} MB in {whole_s:.0f} s "
        f"(ratio {light_mb / whole_mb:.2f})"
    )
    seconds = float(os.environ.get("VERTAC_BENCH_EDGE_AGENT_S", "30"))
    light = asyncio.run(agent_memory([str(light_py.parent / "vertac-edge")], seconds))
    whole = asyncio.run(agent_memory([str(whole_py.parent / "vertac"), "edge"], seconds))
    for name, (median, peak, frames) in (("vertac-edge run", light), ("vertac edge run", whole)):
        print(
            f"  {name}, 16 Modbus sensors at defaults for {seconds:g} s: RSS median "
            f"{median:.0f} MB, peak {peak:.0f} MB; {frames} frames on the bus"
        )


def main() -> None:
    ours, raw = asyncio.run(modbus())
    print(f"VerTac edge benchmark ({SECONDS:g} s per measurement)")
    print(
        f"  Modbus TCP, 16 float32 sensors in one merged read: {ours:,.0f} polls/s "
        f"({ours * 16:,.0f} samples/s); baseline bare pymodbus reads {raw:,.0f}/s (ratio {ours / raw:.2f})"
    )
    notified, written = asyncio.run(opcua())
    print(
        f"  OPC-UA, 16 variables written as fast as the server can: {notified:,.0f} notifications/s "
        f"received by the edge; baseline server writes {written:,.0f}/s (ratio {notified / written:.2f})"
    )
    folder = Path(tempfile.mkdtemp(prefix="vertac-bench-edge-"))
    rates = [buffer_rates(folder / str(i)) for i in range(3)]
    ours_b = statistics.median(r[0] for r in rates)
    raw_b = statistics.median(r[1] for r in rates)
    print(
        f"  store-and-forward buffer (put, peek, remove; fsync per frame): {ours_b:,.0f} frames/s "
        f"= {ours_b * 1600 / 1e6:.2f} M samples/s; baseline bare SQLite insert {raw_b:,.0f} frames/s "
        f"(ratio {ours_b / raw_b:.2f})"
    )
    if os.environ.get("VERTAC_BENCH_EDGE_INSTALL", "1") != "0":
        light_install()


if __name__ == "__main__":
    main()
