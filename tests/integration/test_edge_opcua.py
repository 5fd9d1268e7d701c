"""The OPC-UA source against a real asyncua server on loopback, including a server restart."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import numpy as np
import pytest
from asyncua import Server

from edge.agent import EdgeAgent
from edge.config import load
from services.common.config import CommonSettings
from services.embedded import free_port
from services.ingest.app import serve as serve_ingest
from services.ingest.config import Settings as IngestSettings
from tests.conftest import eventually
from tests.helpers import stored_frames

pytestmark = pytest.mark.integration
logging.getLogger("asyncua").setLevel(logging.WARNING)


class OpcServer:
    """An asyncua server with Press/Pressure (float, changing) and Press/Temperature."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.server: Server | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self, extra_nodes: int = 0) -> None:
        server = Server()
        await server.init()
        server.set_endpoint(f"opc.tcp://127.0.0.1:{self.port}/vertac/")
        ns = await server.register_namespace("urn:vertac:test")
        press = await server.nodes.objects.add_object(ns, "Press")
        for i in range(extra_nodes):  # shifts the numeric node ids of what follows
            await press.add_variable(ns, f"Spare{i}", 0.0)
        pressure = await press.add_variable(ns, "Pressure", 0.0)
        temperature = await press.add_variable(ns, "Temperature", 20.0)
        await server.start()
        self.server = server

        async def change() -> None:
            k = 0
            while True:
                k += 1
                await pressure.write_value(100.0 + k)
                await temperature.write_value(20.0 + k / 10)
                await asyncio.sleep(0.05)

        self.task = asyncio.ensure_future(change())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.server is not None:
            await self.server.stop()


def machine(tmp_path: Path, stream_id: str, port: int) -> Path:
    path = tmp_path / "opc.yaml"
    path.write_text(f"""
stream_id: {stream_id}
source: {{type: opcua, url: "opc.tcp://127.0.0.1:{port}/vertac/", sampling_interval_ms: 20, watchdog_s: 3, timeout_s: 2}}
poll_interval_ms: 50
frame_period_ms: 200
buffer: {{path: opc.sqlite}}
sensors:
  - {{id: pressure, browse_path: ["2:Press", "2:Pressure"]}}
  - {{id: temperature, browse_path: ["2:Press", "2:Temperature"]}}
""")
    return path


async def test_opcua_values_arrive_and_resume_within_10_s_after_a_server_restart(
    tmp_path: Path, common: CommonSettings, running, stream_id: str, caplog
) -> None:
    port = free_port()
    plc = OpcServer(port)
    await plc.start()
    running.start(serve_ingest(IngestSettings(metrics_port=0), common, running.stop))
    agent = EdgeAgent(load(machine(tmp_path, stream_id, port)), common)
    stop = asyncio.Event()
    task = asyncio.ensure_future(agent.run(stop))
    try:

        async def some() -> bool:
            frames = await stored_frames(common.database_url, stream_id)
            return sum(s.n for f in frames for s in f.series if s.sensor_id == "pressure") > 20

        await eventually(some, timeout=30)
        await plc.stop()
        await asyncio.sleep(2)
        plc = OpcServer(port)
        await plc.start(extra_nodes=3)  # the node ids change; browse paths still hold
        # measured from when the server answers again: its own start (5 s on a loaded box,
        # in this process) is not the edge's delay; the edge retries at most 2 s apart
        restarted = time.time_ns()

        async def resumed() -> float | None:
            frames = await stored_frames(common.database_url, stream_id)
            t = [s.timestamps() for f in frames for s in f.series if s.sensor_id == "pressure"]
            after = np.concatenate(t)
            after = after[after > restarted]
            return (int(after[0]) - restarted) / 1e9 if len(after) else None

        delay = await eventually(resumed, timeout=20)
        assert delay < 10
        assert agent.source.reconnects >= 1  # type: ignore[attr-defined]
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await plc.stop()
    frames = await stored_frames(common.database_url, stream_id)
    pressure = np.concatenate(
        [s.values for f in frames for s in f.series if s.sensor_id == "pressure"]
    )
    assert pressure.max() > 100
    assert set(np.concatenate([s.qualities() for f in frames for s in f.series]).tolist()) == {192}
    # the library's errors during the restart reached the log as one line each, no traceback
    assert not [r for r in caplog.records if r.name.startswith("asyncua") and r.exc_info]


async def test_check_reads_each_opcua_node_once(tmp_path: Path) -> None:
    import sys

    from tests.conftest import REPO

    port = free_port()
    plc = OpcServer(port)
    await plc.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli",
            "edge",
            "check",
            "--config",
            str(machine(tmp_path, "opc-1", port)),
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await plc.stop()
    assert proc.returncode == 0, err.decode()
    rows = {line.split()[0]: line.split()[1:] for line in out.decode().splitlines()[1:]}
    assert float(rows["pressure"][0]) >= 100
    assert rows["temperature"][1] == "good"


async def test_an_absolute_deadband_drops_small_changes(
    tmp_path: Path, common: CommonSettings, running, stream_id: str
) -> None:
    port = free_port()
    plc = OpcServer(port)
    await plc.start()
    running.start(serve_ingest(IngestSettings(metrics_port=0), common, running.stop))
    path = machine(tmp_path, stream_id, port)
    path.write_text(path.read_text().replace("watchdog_s: 3", "watchdog_s: 3, deadband: 5"))
    agent = EdgeAgent(load(path), common)
    stop = asyncio.Event()
    task = asyncio.ensure_future(agent.run(stop))
    try:

        async def some() -> list[float] | None:
            frames = await stored_frames(common.database_url, stream_id)
            values = [s.values for f in frames for s in f.series if s.sensor_id == "pressure"]
            joined = np.concatenate(values).tolist() if values else []
            return joined if len(joined) >= 5 else None

        values = await eventually(some, timeout=30)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await plc.stop()
    assert np.all(np.diff(values) > 5)  # the server writes steps of 1; only steps over 5 arrive
