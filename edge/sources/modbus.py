"""Modbus TCP: the sensors' registers read in as few requests as the gaps allow, polled at each
sensor's rate (pymodbus)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from edge.config import REGISTERS_OF, MachineConfig, ModbusSource, SensorConfig
from edge.sources import register
from edge.sources.base import Samples, quiet
from schemas.frames import QUALITY_BAD, QUALITY_GOOD

log = logging.getLogger(__name__)


def decode_registers(registers: npt.NDArray[np.uint16], sensor: SensorConfig) -> float:
    """One value from its registers, honouring data type, word and byte order, scale and offset."""
    words = registers.astype(">u2")
    if sensor.word_order == "little":
        words = words[::-1]
    raw = words.tobytes()
    if sensor.byte_order == "little":
        raw = b"".join(raw[i : i + 2][::-1] for i in range(0, len(raw), 2))
    kind = {
        "int16": ">i2",
        "uint16": ">u2",
        "int32": ">i4",
        "uint32": ">u4",
        "float32": ">f4",
        "float64": ">f8",
        "bool": ">u2",
    }[sensor.data_type]
    value = float(np.frombuffer(raw, dtype=kind)[0])
    if sensor.data_type == "bool":
        value = float(value != 0)
    return value * sensor.scale + sensor.offset


@dataclass(frozen=True, slots=True)
class ReadGroup:
    """One request: a contiguous range of one register type on one unit."""

    unit_id: int
    register: str
    start: int
    count: int
    sensors: tuple[SensorConfig, ...]


def plan_reads(sensors: list[SensorConfig], max_gap: int) -> list[ReadGroup]:
    """Merge sensors into as few requests as possible (contiguous or nearly so)."""
    groups: list[ReadGroup] = []
    keyed = sorted(sensors, key=lambda s: (s.unit_id, s.register_type, s.address))
    for s in keyed:
        width = 1 if s.register_type in ("coil", "discrete") else REGISTERS_OF[s.data_type]
        last = groups[-1] if groups else None
        if (
            last
            and last.unit_id == s.unit_id
            and last.register == s.register_type
            and s.address <= last.start + last.count + max_gap
            and s.address + width - last.start <= 120
        ):
            end = max(last.start + last.count, s.address + width)
            groups[-1] = ReadGroup(
                last.unit_id, last.register, last.start, end - last.start, (*last.sensors, s)
            )
        else:
            groups.append(ReadGroup(s.unit_id, s.register_type, s.address, width, (s,)))
    return groups


# exception codes of a Modbus answer that mean "the device is not there", not "bad request"
_UNIT_ABSENT = frozenset({10, 11})  # gateway path unavailable, target device failed to respond
_ADDRESS_REFUSED = frozenset({2, 3})  # illegal data address, illegal data value


EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    6: "device busy",
}


class NoAnswer(Exception):
    """The unit did not answer in time (or a gateway says it is absent)."""


class Refused(Exception):
    """The unit answered with an exception: ``code`` (2: illegal data address)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"exception code {code}")
        self.code = code


@dataclass
class UnitState:
    """A unit that stopped answering is left out of the polls and probed on a separate
    connection, at intervals doubling up to ``max_backoff_s``, until it answers again."""

    dead: bool = False
    backoff_s: float = 0.0
    next_probe: float = 0.0
    probing: asyncio.Task[None] | None = None


@register("modbus")
class ModbusPoller:
    """Polls every sensor each interval. Requests share one TCP connection (a Modbus TCP
    connection answers one request at a time), so a unit that stops answering would hold up
    every poll by its timeout: it is marked dead after one timeout, its sensors read bad, and it
    is probed on a second connection with exponential backoff until it answers again. A merged
    read that the device refuses (a gap in its register map) is split into one read per sensor,
    and the split is kept."""

    MIN_BACKOFF_S = 1.0
    MAX_BACKOFF_S = 60.0

    def __init__(self, source: ModbusSource, config: MachineConfig) -> None:
        self.source = source
        self.config = config
        self.groups = plan_reads(config.sensors, source.max_gap)
        self.units: dict[int, UnitState] = {g.unit_id: UnitState() for g in self.groups}
        self.refused: dict[str, int] = {}  # sensor -> exception code of its refused read
        self.client = self._new_client()
        self.probe_client: AsyncModbusTcpClient | None = None
        self.server_down = False
        quiet("pymodbus")

    def _new_client(self) -> AsyncModbusTcpClient:
        return AsyncModbusTcpClient(
            self.source.host,
            port=self.source.port,
            timeout=self.source.timeout_s,
            retries=0,
            reconnect_delay=0.5,
            reconnect_delay_max=10,
        )

    async def _read(
        self, g: ReadGroup, client: AsyncModbusTcpClient | None = None
    ) -> list[int] | list[bool]:
        """The group's registers; :class:`NoAnswer`, :class:`Refused` or ``OSError``."""
        client = client or self.client
        call = {
            "holding": client.read_holding_registers,
            "input": client.read_input_registers,
            "coil": client.read_coils,
            "discrete": client.read_discrete_inputs,
        }[g.register]
        try:
            rr = await asyncio.wait_for(
                call(g.start, count=g.count, device_id=g.unit_id), self.source.timeout_s * 1.5
            )
        except TimeoutError as exc:
            raise NoAnswer() from exc
        except ConnectionException as exc:
            raise OSError(str(exc)) from exc
        except ModbusIOException as exc:
            raise NoAnswer() from exc
        except ModbusException as exc:
            raise OSError(str(exc)) from exc
        if rr.isError():
            code = int(getattr(rr, "exception_code", 0) or 0)
            if code in _UNIT_ABSENT:
                raise NoAnswer()
            raise Refused(code)
        return (
            list(rr.bits[: g.count]) if g.register in ("coil", "discrete") else list(rr.registers)
        )

    def _split(self, g: ReadGroup, code: int) -> list[ReadGroup]:
        parts = [
            ReadGroup(
                s.unit_id,
                s.register_type,
                s.address,
                1 if s.register_type in ("coil", "discrete") else REGISTERS_OF[s.data_type],
                (s,),
            )
            for s in g.sensors
        ]
        self.groups[self.groups.index(g) : self.groups.index(g) + 1] = parts
        log.warning(
            "modbus read refused, reading its sensors one by one",
            extra={
                "unit_id": g.unit_id,
                "register": g.register,
                "start": g.start,
                "count": g.count,
                "exception_code": code,
                "sensors": len(g.sensors),
            },
        )
        return parts

    def _mark_dead(self, unit_id: int, reason: str) -> None:
        state = self.units[unit_id]
        if state.dead:
            return
        state.dead = True
        state.backoff_s = max(self.MIN_BACKOFF_S, self.source.timeout_s)
        state.next_probe = time.monotonic() + state.backoff_s
        log.warning(
            "modbus unit does not answer; its sensors read bad, probing it with backoff",
            extra={
                "unit_id": unit_id,
                "reason": reason,
                "probe_in_s": state.backoff_s,
                "max_backoff_s": self.MAX_BACKOFF_S,
            },
        )

    async def _probe(self, unit_id: int) -> None:
        state = self.units[unit_id]
        group = next(g for g in self.groups if g.unit_id == unit_id)
        try:
            if self.probe_client is None:
                self.probe_client = self._new_client()
            if not self.probe_client.connected:
                await self.probe_client.connect()
            await self._read(group, self.probe_client)
        except Refused:
            pass  # an answer, even a refusal, means the unit is there
        except (NoAnswer, OSError, ModbusException):
            state.backoff_s = min(state.backoff_s * 2, self.MAX_BACKOFF_S)
            state.next_probe = time.monotonic() + state.backoff_s
            return
        state.dead = False
        log.info("modbus unit answers again", extra={"unit_id": unit_id})

    def _start_probes(self) -> None:
        now = time.monotonic()
        for unit_id, state in self.units.items():
            busy = state.probing is not None and not state.probing.done()
            if state.dead and not busy and now >= state.next_probe:
                state.probing = asyncio.ensure_future(self._probe(unit_id))

    async def _read_group(self, g: ReadGroup, values: dict[str, tuple[float, int]]) -> None:
        if self.units[g.unit_id].dead:
            return
        try:
            regs = await self._read(g)
        except NoAnswer:
            self._mark_dead(g.unit_id, f"no answer in {self.source.timeout_s} s")
            return
        except Refused as exc:
            if len(g.sensors) > 1 and exc.code in _ADDRESS_REFUSED:
                for part in self._split(g, exc.code):
                    await self._read_group(part, values)
                return
            fresh = [s.id for s in g.sensors if s.id not in self.refused]
            for s in g.sensors:
                self.refused[s.id] = exc.code
            if fresh:
                log.warning(
                    "modbus device refuses the read; its sensors read bad",
                    extra={
                        "sensors": fresh,
                        "unit_id": g.unit_id,
                        "register": g.register,
                        "address": g.start,
                        "count": g.count,
                        "exception_code": exc.code,
                        "exception": EXCEPTION_NAMES.get(exc.code, "exception"),
                    },
                )
            return
        except OSError as exc:
            log.debug("modbus read failed", extra={"unit_id": g.unit_id, "error": repr(exc)})
            return
        for s in g.sensors:
            self.refused.pop(s.id, None)
            i = s.address - g.start
            if g.register in ("coil", "discrete"):
                value = float(bool(regs[i])) * s.scale + s.offset
            else:
                width = REGISTERS_OF[s.data_type]
                value = decode_registers(np.asarray(regs[i : i + width], dtype=np.uint16), s)
            values[s.id] = (value, QUALITY_GOOD)

    async def _reconnect(self) -> bool:
        """Connect again; one line when the server goes away and one when it is back."""
        try:
            connected = bool(await self.client.connect())
        except (OSError, ModbusException):
            connected = False
        where = f"{self.source.host}:{self.source.port}"
        if not connected and not self.server_down:
            self.server_down = True
            log.warning(
                "modbus server unreachable; every sensor reads bad, reconnecting",
                extra={"server": where},
            )
        elif connected:
            self._server_back()
        return connected

    def _server_back(self) -> None:
        if self.server_down:
            self.server_down = False
            where = f"{self.source.host}:{self.source.port}"
            log.info("modbus server answers again", extra={"server": where})

    async def poll_once(self) -> tuple[int, dict[str, tuple[float, int]]]:
        """Read every sensor once: (timestamp ns, sensor -> (value, quality)); sensors that
        could not be read have NaN and bad quality."""
        t = time.time_ns()  # the edge's clock at read time
        values: dict[str, tuple[float, int]] = {}
        if not self.client.connected:
            if not await self._reconnect():
                return t, {s.id: (float("nan"), QUALITY_BAD) for s in self.config.sensors}
        else:
            self._server_back()  # (the client may have connected again by itself)
        self._start_probes()
        for g in list(self.groups):  # one connection answers one request at a time
            await self._read_group(g, values)
        for s in self.config.sensors:
            values.setdefault(s.id, (float("nan"), QUALITY_BAD))
        return t, {s.id: values[s.id] for s in self.config.sensors}

    async def stream(self, stop: asyncio.Event) -> AsyncIterator[Samples]:
        interval = self.config.poll_interval_ms / 1000
        next_at = time.monotonic()
        while not stop.is_set():
            t, values = await self.poll_once()
            batch = Samples()
            stamp = np.array([t], dtype=np.int64)
            for sensor_id, (value, quality) in values.items():
                batch.add(sensor_id, stamp, np.array([value]), np.array([quality], dtype=np.uint8))
            yield batch
            next_at += interval
            delay = next_at - time.monotonic()
            if delay < 0:
                next_at = time.monotonic()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)

    def close(self) -> None:
        for state in self.units.values():
            if state.probing is not None:
                state.probing.cancel()
        self.client.close()
        if self.probe_client is not None:
            self.probe_client.close()


# --- CSV replay ---------------------------------------------------------------------------------
