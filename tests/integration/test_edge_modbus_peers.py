"""The Modbus source against a pymodbus server laid out like real plants are: a register map
with gaps (reads across a gap are refused) and a TCP gateway with a second unit id that never
answers. Every setting of the source stays at its default."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator.simdata import SimData
from pymodbus.simulator.simdevice import SimDevice
from pymodbus.simulator.simutils import DataType

from edge.config import load
from edge.sources.modbus import ModbusPoller
from services.embedded import free_port
from tests.conftest import eventually
from tests.peers import NodePeer

pytestmark = pytest.mark.integration

LIVE, SILENT = 1, 2


class Gateway:
    """A Modbus TCP gateway to two unit ids. Unit 1, a pymodbus server, holds HR0-17 and
    HR20-24; HR18-19 do not exist, so a read of HR0-21 is refused with "illegal data address".
    The device behind unit 2 is gone: the gateway forwards nothing for it and never answers
    (pymodbus's own server answers every unit id, so the gateway is a relay in front of it)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.backend_port = free_port()
        self.requests: Counter[int] = Counter()
        self.silent = {SILENT}
        devices = [
            SimDevice(
                id=LIVE,
                simdata=[
                    SimData(0, values=list(range(100, 118)), datatype=DataType.REGISTERS),
                    SimData(20, values=[500, 501, 502, 503, 504], datatype=DataType.REGISTERS),
                ],
            ),
            SimDevice(id=SILENT, simdata=[SimData(0, values=[42], datatype=DataType.REGISTERS)]),
        ]
        self.server = ModbusTcpServer(devices, address=("127.0.0.1", self.backend_port))
        self.relay: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.serving = asyncio.ensure_future(self.server.serve_forever())
        await asyncio.sleep(0.2)
        self.relay = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.relay is not None:
            self.relay.close()
        for task in self.tasks:
            task.cancel()
        await self.server.shutdown()
        self.serving.cancel()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        back_r, back_w = await asyncio.open_connection("127.0.0.1", self.backend_port)

        async def answers() -> None:
            while data := await back_r.read(4096):
                writer.write(data)

        task = asyncio.ensure_future(answers())
        self.tasks.add(task)
        try:
            while True:
                head = await reader.readexactly(7)  # MBAP: tid, protocol, length, unit id
                body = await reader.readexactly(int.from_bytes(head[4:6], "big") - 1)
                self.requests[head[6]] += 1
                if head[6] not in self.silent:
                    back_w.write(head + body)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            task.cancel()
            back_w.close()
            writer.close()


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[int, Gateway]]:
    port = free_port()
    gw = Gateway(port)
    await gw.start()
    yield port, gw
    await gw.stop()


def machine(tmp_path: Path, port: int) -> Path:
    sensors = [f"  - {{id: r{a}, address: {a}, unit_id: {LIVE}}}" for a in range(0, 18, 2)]
    sensors += [
        f"  - {{id: r17, address: 17, unit_id: {LIVE}}}",
        f"  - {{id: r20, address: 20, unit_id: {LIVE}}}",  # HR18-19 do not exist
        f"  - {{id: gone, address: 0, unit_id: {SILENT}}}",
    ]
    path = tmp_path / "gateway.yaml"
    path.write_text(
        f"stream_id: gw-1\nsource: {{type: modbus, host: 127.0.0.1, port: {port}}}\n"
        "buffer: {path: gw.sqlite}\nsensors:\n" + "\n".join(sensors) + "\n"
    )
    return path


async def test_a_read_refused_across_a_gap_is_split_and_a_silent_unit_holds_up_nothing(
    tmp_path: Path, gateway: tuple[int, Gateway], caplog: pytest.LogCaptureFixture
) -> None:
    port, gw = gateway
    await gap_and_silent_unit(tmp_path, port, caplog, gw.requests)


async def test_the_same_against_modbus_serial(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The same layout served by modbus-serial (npm), whose TCP server ignores unit ids it is
    not: a gateway's silent unit without a relay in front."""
    peer = NodePeer("modbus_server.mjs", free_port()).start()
    try:
        await gap_and_silent_unit(tmp_path, peer.port, caplog, None)
    finally:
        peer.stop()


async def gap_and_silent_unit(
    tmp_path: Path, port: int, caplog: pytest.LogCaptureFixture, requests: Counter[int] | None
) -> None:
    config = load(machine(tmp_path, port))
    assert config.source.max_gap == 8 and config.source.timeout_s == 1.0  # the defaults
    assert config.poll_interval_ms == 100
    poller = ModbusPoller(config.source, config)  # type: ignore[arg-type]
    polls: list[tuple[float, dict[str, tuple[float, int]]]] = []
    stop = asyncio.Event()

    async def run() -> None:
        async for batch in poller.stream(stop):
            polls.append(
                (
                    time.monotonic(),
                    {
                        s: (float(v[0][0]), int(q[0][0]))
                        for (s, v), q in zip(batch.v.items(), batch.q.values(), strict=True)
                    },
                )
            )

    caplog.set_level(logging.INFO, logger="edge")
    task = asyncio.ensure_future(run())
    try:
        await eventually(lambda: _async(len(polls) >= 80), timeout=60)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        poller.close()

    last = polls[-1][1]
    # every sensor of unit 1 reads its value, the gap's neighbour too
    for a in range(0, 18, 2):
        assert last[f"r{a}"] == (100.0 + a, 192)
    assert last["r17"] == (117.0, 192)
    assert last["r20"] == (500.0, 192)
    # the silent unit's sensor reads bad, on every poll
    assert all(math.isnan(p["gone"][0]) and p["gone"][1] == 0 for _, p in polls)
    # the live unit is polled on schedule: 100 ms, not held up by the silent unit's 1 s timeout
    # (it was polled at 0.69/s). The first poll waits that timeout once; measured from the next.
    span = polls[-1][0] - polls[1][0]
    rate = (len(polls) - 2) / span
    print(f"live unit {rate:.2f} polls/s over {span:.1f} s")
    assert rate > 5, f"{rate:.2f} polls/s"
    if requests is not None:
        # the silent unit was asked only by probes with backoff: 1, 2, 4 ... s, not every poll
        assert requests[SILENT] <= 2 + math.log2(span + 1) + 1, requests
    # the split is kept: one refused merged read in all, then one read per sensor
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("modbus read refused, reading its sensors one by one") == 1
    # one line per state change of the silent unit, not one per timeout
    assert (
        messages.count("modbus unit does not answer; its sensors read bad, probing it with backoff")
        == 1
    )
    assert not [
        r for r in caplog.records if r.name.startswith("pymodbus") and r.levelno >= logging.ERROR
    ]


async def _async(value: bool) -> bool:
    return value


async def test_a_unit_that_comes_back_is_read_again(
    tmp_path: Path, gateway: tuple[int, Gateway]
) -> None:
    """The probe finds the unit again once its device answers, and its sensor reads good."""
    port, gw = gateway
    config = load(machine(tmp_path, port))
    poller = ModbusPoller(config.source, config)  # type: ignore[arg-type]
    try:
        _, first = await poller.poll_once()
        assert first["gone"][1] == 0
        assert poller.units[SILENT].dead
        gw.silent.clear()  # the device behind unit 2 is back

        async def answered() -> bool:
            _, values = await poller.poll_once()
            await asyncio.sleep(0.1)
            return values["gone"] == (42.0, 192)

        await eventually(answered, timeout=60)
        assert not poller.units[SILENT].dead
    finally:
        poller.close()
