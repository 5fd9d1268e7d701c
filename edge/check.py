"""``edge check``: connect to the machine, read every sensor once and say, per sensor, what it
read or why it could not."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass

from edge.config import CsvSource, MachineConfig, ModbusSource, MqttSource, OpcUaSource
from schemas.frames import QUALITY_GOOD


class CheckFailed(RuntimeError):
    """Nothing could be read at all; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Row:
    sensor: str
    value: float
    state: str

    def line(self) -> str:
        value = "-" if math.isnan(self.value) else number(self.value)
        return f"{self.sensor:<24} {value:>14}  {self.state}"


def number(value: float) -> str:
    """A reading as read: whole numbers in full (a counter of 123456789 stays so), others in
    the shortest form that reads back to the same float."""
    if math.isfinite(value) and value.is_integer() and abs(value) < 2**63:
        return str(int(value))
    return repr(value)


HEADER = f"{'sensor':<24} {'value':>14}  state"


async def check_modbus(machine: MachineConfig, source: ModbusSource) -> list[Row]:
    from edge.sources.modbus import EXCEPTION_NAMES, ModbusPoller

    poller = ModbusPoller(source, machine)  # the client needs a running loop
    try:
        _, values = await poller.poll_once()
    finally:
        poller.close()
    if all(q != QUALITY_GOOD for _, q in values.values()):
        raise CheckFailed(
            f"no sensor answered at {source.host}:{source.port} (unreachable, or wrong unit ids)"
        )
    rows = []
    for s in machine.sensors:
        value, quality = values[s.id]
        if quality == QUALITY_GOOD:
            state = "good"
        elif poller.units[s.unit_id].dead:
            state = f"NO ANSWER from unit {s.unit_id}"
        elif s.id in poller.refused:
            code = poller.refused[s.id]
            why = EXCEPTION_NAMES.get(code, "exception")
            state = f"REFUSED: {why} (code {code}) at {s.register_type} {s.address}"
        else:
            state = "NO ANSWER"
        rows.append(Row(s.id, value, state))
    return rows


async def check_opcua(machine: MachineConfig, source: OpcUaSource) -> list[Row]:
    from edge.sources.opcua import OpcUaReader, read_once

    try:
        values = await read_once(OpcUaReader(source, machine))
    except Exception as exc:  # asyncua raises many kinds; the user gets one line
        raise CheckFailed(f"OPC-UA server {source.url}: {exc!r}") from exc
    return [Row(s.id, values[s.id][0], values[s.id][2]) for s in machine.sensors]


async def check_mqtt(machine: MachineConfig, source: MqttSource, timeout_s: float) -> list[Row]:
    """Wait until every sensor has had a message (or ``timeout_s`` has passed)."""
    from edge.sources.mqtt import MqttReader

    reader = MqttReader(source, machine)
    stop = asyncio.Event()
    keeper = asyncio.ensure_future(reader.keep_connected(stop))
    heard: dict[str, tuple[float, int]] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and len(heard) < len(machine.sensors):
            with contextlib.suppress(TimeoutError):
                sensor_id, _t, value, quality = await asyncio.wait_for(
                    reader.queue.get(), max(0.0, deadline - time.monotonic())
                )
                heard[sensor_id] = (value, quality)
    finally:
        stop.set()
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
    if not reader.subscribed.is_set():
        raise CheckFailed(f"MQTT broker {source.host}:{source.port} did not accept the client")
    rows = []
    for s in machine.sensors:
        if s.id not in heard:
            where = s.metric if source.sparkplug else s.topic
            rows.append(Row(s.id, math.nan, f"NO MESSAGE on {where} in {timeout_s:g} s"))
            continue
        value, quality = heard[s.id]
        rows.append(Row(s.id, value, "good" if quality == QUALITY_GOOD else f"quality {quality}"))
    return rows


def check_file(machine: MachineConfig, source: CsvSource) -> list[Row]:
    from edge.sources.files import read_table

    try:
        _, cols = read_table(source.path, machine.sensors)
    except (ValueError, OSError) as exc:
        raise CheckFailed(str(exc)) from exc
    return [
        Row(s.id, float(cols[s.id][0]) if len(cols[s.id]) else math.nan, "good")
        for s in machine.sensors
    ]


def check(machine: MachineConfig, timeout_s: float = 10.0) -> list[Row]:
    """Read each sensor of ``machine`` once; :class:`CheckFailed` when nothing can be read."""
    source = machine.source
    if isinstance(source, CsvSource):
        return check_file(machine, source)
    if isinstance(source, ModbusSource):
        return asyncio.run(check_modbus(machine, source))
    if isinstance(source, OpcUaSource):
        return asyncio.run(check_opcua(machine, source))
    return asyncio.run(check_mqtt(machine, source, timeout_s))
