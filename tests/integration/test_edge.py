"""The edge agent against real peers: a pymodbus server, nats-server outages, SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator.simdata import SimData
from pymodbus.simulator.simdevice import SimDevice
from pymodbus.simulator.simutils import DataType

from edge.agent import EdgeAgent
from edge.config import load
from edge.sources import Samples
from services.common.config import CommonSettings
from services.embedded import free_port
from services.ingest.app import serve as serve_ingest
from services.ingest.config import Settings as IngestSettings
from tests.conftest import REPO, eventually
from tests.helpers import stored_frames

pytestmark = pytest.mark.integration


def float_regs(value: float) -> list[int]:
    hi, lo = struct.unpack(">HH", struct.pack(">f", value))
    return [hi, lo]


class Plant:
    """A pymodbus TCP server whose values change with time: unit 1 pressure (float32 at 0) and a
    counter (uint16 at 2); unit 2 temperature (int16 x0.1 at 10). Unit 7 does not exist."""

    def __init__(self, port: int) -> None:
        self.t0 = time.monotonic()
        devices = [
            SimDevice(
                id=1,
                simdata=[SimData(0, values=[0] * 20, datatype=DataType.REGISTERS)],
                action=self.unit1,
            ),
            SimDevice(
                id=2,
                simdata=[SimData(0, values=[0] * 20, datatype=DataType.REGISTERS)],
                action=self.unit2,
            ),
        ]
        self.server = ModbusTcpServer(devices, address=("127.0.0.1", port))

    def k(self) -> int:
        return int((time.monotonic() - self.t0) * 50)

    async def unit1(self, fc, start, address, count, registers, set_values):  # type: ignore[no-untyped-def]
        k = self.k()
        registers[0 - start : 3 - start] = [*float_regs(100.0 + k), k % 65536]

    async def unit2(self, fc, start, address, count, registers, set_values):  # type: ignore[no-untyped-def]
        registers[10 - start] = (200 + self.k()) % 65536

    async def run(self, stop: asyncio.Event) -> None:
        serving = asyncio.ensure_future(self.server.serve_forever())
        await stop.wait()
        await self.server.shutdown()
        serving.cancel()


@pytest.fixture
async def plant() -> AsyncIterator[int]:
    port = free_port()
    p = Plant(port)
    stop = asyncio.Event()
    task = asyncio.ensure_future(p.run(stop))
    await asyncio.sleep(0.3)
    yield port
    stop.set()
    await asyncio.wait_for(task, 10)


def machine_file(tmp_path: Path, stream_id: str, port: int, poll_ms: int = 20) -> Path:
    path = tmp_path / "machine.yaml"
    path.write_text(f"""
stream_id: {stream_id}
device_name: Test plant
source: {{type: modbus, host: 127.0.0.1, port: {port}, timeout_s: 0.3}}
poll_interval_ms: {poll_ms}
frame_period_ms: 200
buffer: {{path: buffer.sqlite}}
sensors:
  - {{id: pressure, unit: bar, register: holding, address: 0, data_type: float32, unit_id: 1}}
  - {{id: counter, register: holding, address: 2, data_type: uint16, unit_id: 1}}
  - {{id: temperature, unit: degC, register: input, address: 10, data_type: int16, scale: 0.1, unit_id: 2}}
  - {{id: ghost, register: holding, address: 0, data_type: uint16, unit_id: 7}}
""")
    return path


async def test_modbus_values_arrive_in_postgres_and_a_dead_unit_blocks_nothing(
    tmp_path: Path, plant: int, bus, common: CommonSettings, running, stream_id: str
) -> None:
    import json

    running.start(serve_ingest(IngestSettings(metrics_port=0), common, running.stop))
    statuses: list[dict] = []

    async def on_status(msg) -> None:
        statuses.append(json.loads(msg.data))

    await bus.nc.subscribe(f"vertac.edge.{stream_id}.status", cb=on_status)
    config = load(machine_file(tmp_path, stream_id, plant))
    stop = asyncio.Event()
    agent = EdgeAgent(config, common, status_every_s=0.5)
    task = asyncio.ensure_future(agent.run(stop))
    await asyncio.sleep(3)
    stop.set()
    await asyncio.wait_for(task, 20)
    frames = await stored_frames(common.database_url, stream_id)
    assert len(frames) >= 10
    series = {
        sid: [s for f in frames for s in f.series if s.sensor_id == sid]
        for sid in ("pressure", "counter", "temperature", "ghost")
    }
    pressure = np.concatenate([s.values for s in series["pressure"]])
    t = np.concatenate([s.timestamps() for s in series["pressure"]])
    assert len(pressure) >= 100  # about 50 Hz for 3 s
    assert np.all(np.diff(t) > 0)  # timestamps of the edge's clock at read time, in order
    assert abs(int(t[-1]) - time.time_ns()) < 10 * 1_000_000_000
    assert pressure.min() > 100 and np.ptp(pressure) > 10  # the values change
    temperature = np.concatenate([s.values for s in series["temperature"]])
    assert np.all((temperature > 20) & (temperature < 7000))
    ghost_q = np.concatenate([s.qualities() for s in series["ghost"]])
    assert set(ghost_q.tolist()) == {0}  # the dead unit is marked bad, the others are good
    assert set(np.concatenate([s.qualities() for s in series["pressure"]]).tolist()) == {192}
    assert [f.seq for f in frames] == list(range(frames[0].seq, frames[0].seq + len(frames)))
    assert statuses, "no status on the bus"
    assert statuses[-1]["stream_id"] == stream_id
    assert statuses[-1]["published"] > 0
    assert statuses[-1]["refused"] == 0
    assert abs(statuses[-1]["clock_offset_s"]) < 0.5  # same machine, same clock


class Synthetic:
    """16 sensors x 1 kHz in real time (what a fast DAQ would deliver)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def stream(self, stop: asyncio.Event):  # type: ignore[no-untyped-def]
        start, k = time.time_ns(), 0
        while not stop.is_set() and k < self.seconds * 10:
            await asyncio.sleep(max(0.0, (start + (k + 1) * 100_000_000 - time.time_ns()) / 1e9))
            batch = Samples()
            t = start + (k * 100 + np.arange(100, dtype=np.int64)) * 1_000_000
            for i in range(16):
                batch.add(
                    f"s{i}",
                    t,
                    (k * 100 + np.arange(100)).astype(np.float64) + i,
                    np.full(100, 192, dtype=np.uint8),
                )
            yield batch
            k += 1

    def close(self) -> None:
        pass


async def test_a_bus_outage_loses_nothing_at_16_sensors_by_1_khz(
    tmp_path: Path, nats_server, common: CommonSettings, running, stream_id: str
) -> None:
    if isinstance(nats_server, str):
        pytest.skip("needs the embedded nats-server to stop it")
    outage = float(os.environ.get("VERTAC_TEST_OUTAGE_S", "60"))
    running.start(serve_ingest(IngestSettings(metrics_port=0), common, running.stop))
    config = load(machine_file(tmp_path, stream_id, 1))
    config = config.model_copy(update={"frame_period_ms": 100})
    seconds = outage + 10
    agent = EdgeAgent(config, common, Synthetic(seconds))
    stop = asyncio.Event()
    task = asyncio.ensure_future(agent.run(stop))
    await asyncio.sleep(3)
    nats_server.stop()
    await asyncio.sleep(outage)
    depth = agent.buffer.status().depth
    nats_server.start()
    await asyncio.wait_for(task, seconds + 120)
    # the frames of the outage waited in the buffer: the cutter closes a frame once 100 ms of
    # data time lie between its first and last sample, so 100 ms source batches make 200 ms
    # frames, 5 per second; a bound at exactly that count failed on the edge of timing
    assert depth >= outage * 4, depth

    async def all_in() -> int | None:
        async with await psycopg.AsyncConnection.connect(common.database_url) as conn:
            cur = await conn.execute(
                "SELECT count(*), sum(n_samples) FROM live_frames WHERE stream_id = %s",
                (stream_id,),
            )
            _n, samples = await cur.fetchone()
        return samples if samples == seconds * 1000 * 16 else None

    await eventually(all_in, timeout=120, interval=1)
    frames = await stored_frames(common.database_url, stream_id)
    values = np.concatenate([s.values for f in frames for s in f.series if s.sensor_id == "s0"])
    assert np.array_equal(values, np.arange(seconds * 1000, dtype=np.float64))  # once, in order


async def test_an_edge_killed_while_buffering_loses_nothing(
    tmp_path: Path, plant: int, nats_server, common: CommonSettings, running, stream_id: str
) -> None:
    if isinstance(nats_server, str):
        pytest.skip("needs the embedded nats-server to stop it")
    running.start(serve_ingest(IngestSettings(metrics_port=0), common, running.stop))
    await asyncio.sleep(1)
    path = machine_file(tmp_path, stream_id, plant)
    env = {**os.environ, "VERTAC_NATS_URL": common.nats_url, "VERTAC_LOG_JSON": "true"}
    run = [sys.executable, "-m", "services.cli", "edge", "run", "--config", str(path)]

    def start_edge() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            run, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    edge = start_edge()
    await asyncio.sleep(3)  # registered, numbering seeded, publishing
    nats_server.stop()
    await asyncio.sleep(3)  # buffering
    edge.send_signal(signal.SIGKILL)
    edge.wait(10)
    status = subprocess.run(
        [*run[:4], "status", "--config", str(path)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    import json

    buffered = json.loads(status.stdout)
    assert buffered["depth"] > 5
    edge = start_edge()
    await asyncio.sleep(2)
    nats_server.start()
    await asyncio.sleep(4)
    edge.send_signal(signal.SIGTERM)
    assert edge.wait(30) == 0  # a stop by SIGTERM is a clean exit
    last = json.loads(
        subprocess.run(
            [*run[:4], "status", "--config", str(path)],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert last["depth"] == 0

    async def stored() -> list | None:
        frames = await stored_frames(common.database_url, stream_id)
        return frames if frames and frames[-1].seq == last["next_seq"] - 1 else None

    frames = await eventually(stored, timeout=60)
    seqs = [f.seq for f in frames]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # every frame, once, in order
    t = np.concatenate(
        [s.timestamps() for f in frames for s in f.series if s.sensor_id == "pressure"]
    )
    assert np.all(np.diff(t) > 0)


def test_bad_config_and_unreachable_endpoints_give_one_clear_line(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "services.cli", "edge"]
    bad = machine_file(tmp_path, "press-1", free_port()).read_text().replace("float32", "float17")
    (tmp_path / "bad.yaml").write_text(bad)
    out = subprocess.run(
        [*run, "run", "--config", str(tmp_path / "bad.yaml")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "sensors.0.data_type" in out.stderr
    assert "Traceback" not in out.stderr
    good = machine_file(tmp_path, "press-1", free_port())  # nothing listens there
    out = subprocess.run(
        [*run, "check", "--config", str(good)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "no sensor answered at 127.0.0.1" in out.stderr
    assert "Traceback" not in out.stderr


async def test_check_reads_each_sensor_once(tmp_path: Path, plant: int) -> None:
    path = machine_file(tmp_path, "press-1", plant)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "edge",
        "check",
        "--config",
        str(path),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert proc.returncode == 0, err.decode()
    lines = {line.split()[0]: line.split()[1:] for line in text.splitlines()[1:]}
    assert float(lines["pressure"][0]) > 100
    assert lines["pressure"][1] == "good"
    # pymodbus answers a unit id it does not have with "device failure"
    assert " ".join(lines["ghost"][1:]) == "REFUSED: device failure (code 4) at holding 0"


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
async def test_a_file_replays_as_a_live_stream(
    tmp_path: Path, common: CommonSettings, running, stream_id: str, suffix: str
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    seconds = np.round(np.arange(500) * 0.01, 2)
    pressure = 100 + np.sin(np.arange(500) / 20)
    data = tmp_path / f"run.{suffix}"
    if suffix == "csv":
        rows = ["timestamp,p,temp"] + [
            f"{t},{float(p)!r},{20 + i / 100}"
            for i, (t, p) in enumerate(zip(seconds, pressure, strict=True))
        ]
        data.write_text("\n".join(rows) + "\n")
    else:
        pq.write_table(
            pa.table({"timestamp": seconds, "p": pressure, "temp": 20 + np.arange(500) / 100}), data
        )
    machine = tmp_path / "replay.yaml"
    machine.write_text(f"""
stream_id: {stream_id}
source: {{type: {suffix}, path: {data.name}, speed: 0}}
poll_interval_ms: 100
frame_period_ms: 1000
buffer: {{path: replay.sqlite}}
sensors:
  - {{id: pressure, column: p, unit: bar}}
  - {{id: temp}}
""")
    running.start(serve_ingest(IngestSettings(metrics_port=0), common, running.stop))
    agent = EdgeAgent(load(machine), common)
    await asyncio.wait_for(agent.run(asyncio.Event()), 60)

    async def all_in() -> list | None:
        frames = await stored_frames(common.database_url, stream_id)
        n = sum(s.n for f in frames for s in f.series if s.sensor_id == "pressure")
        return frames if n == 500 else None

    frames = await eventually(all_in)
    p = [s for f in frames for s in f.series if s.sensor_id == "pressure"]
    values = np.concatenate([s.values for s in p])
    stamps = np.concatenate([s.timestamps() for s in p])
    assert values == pytest.approx(pressure)
    assert np.diff(stamps).tolist() == [10_000_000] * 499  # the file's spacing, moved to now
    assert abs(int(stamps[0]) - time.time_ns()) < 60 * 1_000_000_000


def test_edge_run_says_where_frames_go_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    """Without VERTAC_NATS_URL the start line says the default is used; SIGTERM while the bus
    is unreachable keeps the frames in the buffer and exits 0 (it used to exit 1 reading the
    status of a closed buffer)."""
    data = tmp_path / "run.csv"
    data.write_text("timestamp,p\n" + "".join(f"{i / 10},{i}\n" for i in range(100)))
    machine = tmp_path / "m.yaml"
    machine.write_text(
        f"stream_id: sig-1\nsource: {{type: csv, path: {data.name}, speed: 1, loop: true}}\n"
        "buffer: {path: sig.sqlite}\nsensors:\n  - {id: p}\n"
    )
    # as on a fresh edge box: VERTAC_NATS_URL is not set
    env = {k: v for k, v in os.environ.items() if k != "VERTAC_NATS_URL"}
    env["VERTAC_LOG_JSON"] = "true"
    edge = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "edge", "run", "--config", str(machine)],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        lines: list[str] = []
        while time.monotonic() < deadline:
            line = edge.stderr.readline()  # type: ignore[union-attr]
            lines.append(line)
            if '"edge starting"' in line or "edge starting" in line:
                break
        start = next(line for line in lines if "edge starting" in line)
        assert "nats://127.0.0.1:4222" in start
        assert "default (VERTAC_NATS_URL is not set)" in start
        edge.send_signal(signal.SIGTERM)
        out, err = edge.communicate(timeout=60)
    finally:
        if edge.poll() is None:
            edge.kill()
    assert edge.returncode == 0, err
    assert "Traceback" not in err
    import json

    assert json.loads(out.strip().splitlines()[-1])["stream_id"] == "sig-1"


def test_edge_run_help_names_every_source() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "services.cli", "edge", "run", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for source in ("Modbus TCP", "OPC-UA", "MQTT", "Sparkplug B", "CSV", "Parquet"):
        assert source in " ".join(out.split()), source
