"""OPC-UA source (asyncua): monitored items (or polling), source timestamps, reconnect.

Notifications go to a queue; ``stream()`` hands them over in batches every poll interval. A
repeated (value, source timestamp) of a node is not a new sample: a poll of a value that has not
changed, or the first notification of a recreated subscription, adds nothing.

Each sensor is resolved and checked on its own at every connect: a browse path that matches
nothing, a node id the server does not know or a node that holds no number (an array, a text)
is logged once with the sensor's id and the reason, and only that sensor reads bad (one NaN of
bad quality per poll interval) while every other sensor goes on.

The connection is checked every second; when it breaks, the source reconnects with backoff
(0.5 s doubling to at most 2 s) and re-resolves every node by its browse path (node ids may
change when a server restarts). A subscription silent for ``watchdog_s`` is checked by reading
its nodes: only when a node's value or source timestamp moved without a notification is the
subscription recreated (values that never change are not a broken subscription).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.crypto import security_policies
from asyncua.ua.uaerrors import UaError

from edge.config import MachineConfig, OpcUaSource, SensorConfig
from edge.sources import register
from edge.sources.base import QueuedSource, quiet
from schemas.frames import QUALITY_BAD, QUALITY_GOOD, QUALITY_UNCERTAIN
from schemas.timeutil import ns_of

log = logging.getLogger(__name__)
_FAILURES = (OSError, ConnectionError, TimeoutError, UaError, asyncio.TimeoutError)
MAX_BACKOFF_S = 2.0


def quality_of(status: ua.StatusCode | None) -> int:
    if status is None or status.is_good():
        return QUALITY_GOOD
    return QUALITY_UNCERTAIN if status.is_uncertain() else QUALITY_BAD


def number_of(value: Any) -> float | str:
    """The float of a scalar number, or why it is not one."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list | tuple):
        return f"an array of {len(value)} values, not one number"
    if value is None:
        return "no value"
    return f"a {type(value).__name__}, not a number"


@dataclass
class Reading:
    """One sample of a node: its source (or server) timestamp, value and quality."""

    t: int
    value: float
    quality: int


def reading_of(dv: ua.DataValue, sensor: SensorConfig, now_ns: int) -> Reading | str:
    """A sample from a DataValue, or the reason the node cannot give one."""
    status = dv.StatusCode
    if status is not None and status.is_bad() and (dv.Value is None or dv.Value.Value is None):
        name = status.name if hasattr(status, "name") else str(status)
        if name in ("BadNodeIdUnknown", "BadNodeIdInvalid", "BadAttributeIdInvalid"):
            return f"the server answers {name}"
        stamp = dv.SourceTimestamp or dv.ServerTimestamp
        return Reading(ns_of(stamp) if stamp else now_ns, float("nan"), QUALITY_BAD)
    number = number_of(dv.Value.Value if dv.Value is not None else None)
    if isinstance(number, str):
        return number
    stamp = dv.SourceTimestamp or dv.ServerTimestamp
    return Reading(
        ns_of(stamp) if stamp else now_ns,
        number * sensor.scale + sensor.offset,
        quality_of(status),
    )


@register("opcua")
class OpcUaReader(QueuedSource):
    def __init__(self, source: OpcUaSource, config: MachineConfig) -> None:
        super().__init__(config)
        self.source = source
        self.by_node: dict[Any, SensorConfig] = {}
        self.bad: dict[str, str] = {}  # sensor id -> why it cannot be read
        self.last: dict[str, tuple[int, float]] = {}  # sensor id -> (source ns, value)
        self.last_notification = time.monotonic()
        self.reconnects = 0
        self.recreated = 0
        quiet("asyncua", logging.WARNING)

    def _put(self, sensor: SensorConfig, reading: Reading) -> None:
        key = (reading.t, reading.value)
        if self.last.get(sensor.id) == key:
            return  # the same sample again (a poll of an unchanged value, a resubscription)
        self.last[sensor.id] = key
        self.queue.put_nowait((sensor.id, reading.t, reading.value, reading.quality))

    def _mark_bad(self, sensor: SensorConfig, reason: str) -> None:
        if self.bad.get(sensor.id) != reason:
            log.warning(
                "opc-ua sensor cannot be read; it reads bad",
                extra={"sensor": sensor.id, "reason": reason, "url": self.source.url},
            )
        self.bad[sensor.id] = reason

    def _put_bad(self) -> None:
        t = time.time_ns()
        for sensor_id in self.bad:
            self.queue.put_nowait((sensor_id, t, float("nan"), QUALITY_BAD))

    # asyncua calls this for every data change
    async def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        sensor = self.by_node.get(node.nodeid)
        if sensor is None:
            return
        self.last_notification = time.monotonic()
        reading = reading_of(data.monitored_item.Value, sensor, time.time_ns())
        if isinstance(reading, str):
            self._mark_bad(sensor, reading)
            return
        self.bad.pop(sensor.id, None)
        self._put(sensor, reading)

    async def _client(self) -> Client:
        client = Client(self.source.url, timeout=self.source.timeout_s)
        sec = self.source.security
        if sec.application_uri:
            client.application_uri = sec.application_uri
        if sec.policy != "None":
            policy = getattr(security_policies, f"SecurityPolicy{sec.policy}")
            await client.set_security(
                policy,
                str(sec.certificate),
                str(sec.private_key),
                mode=getattr(ua.MessageSecurityMode, sec.mode),
            )
        if sec.username:
            client.set_user(sec.username)
            client.set_password(sec.password or "")
        await client.connect()
        return client

    async def _resolve(self, client: Client) -> dict[Any, SensorConfig]:
        """Every sensor's node, each found and checked on its own; the others are in ``bad``."""
        found: list[tuple[Node, SensorConfig]] = []
        self.bad = {}
        for s in self.config.sensors:
            try:
                if s.browse_path:
                    node = await client.nodes.objects.get_child(s.browse_path)
                else:
                    node = client.get_node(s.node_id or "")
            except UaError as exc:
                where = "/".join(s.browse_path or []) or s.node_id
                self._mark_bad(s, f"{where}: {type(exc).__name__} {exc}".strip())
                continue
            except ValueError as exc:  # a node id asyncua cannot parse
                self._mark_bad(s, f"node id {s.node_id!r}: {exc}")
                continue
            found.append((node, s))
        nodes: dict[Any, SensorConfig] = {}
        if not found:
            return nodes
        value_attr = ua.AttributeIds.Value  # type: ignore[attr-defined]
        values = await client.read_attributes([n for n, _ in found], value_attr)
        now = time.time_ns()
        for (node, s), dv in zip(found, values, strict=True):
            reading = reading_of(dv, s, now)
            if isinstance(reading, str):
                self._mark_bad(s, f"{s.node_id or '/'.join(s.browse_path or [])}: {reading}")
                continue
            nodes[node.nodeid] = s
        return nodes

    async def _subscribe(self, client: Client) -> Any:
        sub = await client.create_subscription(self.source.sampling_interval_ms, self)
        ids = list(self.by_node)
        nodes = [client.get_node(n) for n in ids]
        if not nodes:
            return sub
        if self.source.deadband > 0:
            # absolute deadband (type 1): the server reports only changes larger than it
            results = await sub.deadband_monitor(  # type: ignore[call-overload]
                nodes, self.source.deadband, 1, self.source.queue_size
            )
        else:
            results = await sub.subscribe_data_change(  # type: ignore[call-overload]
                nodes,
                queuesize=self.source.queue_size,
                sampling_interval=self.source.sampling_interval_ms,
            )
        for nodeid, result in zip(ids, results if isinstance(results, list) else [], strict=False):
            if isinstance(result, ua.StatusCode):
                sensor = self.by_node.pop(nodeid)
                self._mark_bad(sensor, f"the server refuses to monitor it: {result.name}")
        return sub

    async def _read_all(self, client: Client) -> list[tuple[SensorConfig, Reading | str]]:
        ids = list(self.by_node)
        if not ids:
            return []
        value_attr = ua.AttributeIds.Value  # type: ignore[attr-defined]
        values = await client.read_attributes([client.get_node(n) for n in ids], value_attr)
        now = time.time_ns()
        return [
            (self.by_node[n], reading_of(dv, self.by_node[n], now))
            for n, dv in zip(ids, values, strict=True)
        ]

    async def _poll(self, client: Client) -> None:
        for sensor, reading in await self._read_all(client):
            if isinstance(reading, str):
                self._mark_bad(sensor, reading)
            else:
                self.bad.pop(sensor.id, None)
                self._put(sensor, reading)
        self._put_bad()

    async def _subscription_missed_changes(self, client: Client) -> bool:
        """After a silence: did a node change without a notification?"""
        for sensor, reading in await self._read_all(client):
            if isinstance(reading, Reading) and self.last.get(sensor.id) != (
                reading.t,
                reading.value,
            ):
                return True
        return False

    async def keep_connected(self, stop: asyncio.Event) -> None:
        delay = 0.5
        while not stop.is_set():
            client = None
            try:
                client = await self._client()
                self.by_node = await self._resolve(client)
                sub = await self._subscribe(client) if self.source.mode == "subscribe" else None
                log.info(
                    "opc-ua connected",
                    extra={
                        "url": self.source.url,
                        "nodes": len(self.by_node),
                        "bad_sensors": sorted(self.bad),
                    },
                )
                delay = 0.5
                self.last_notification = time.monotonic()
                while not stop.is_set():
                    if sub is None:
                        await self._poll(client)
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), self.config.poll_interval_ms / 1000)
                        continue
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 1.0)
                    await client.check_connection()
                    self._put_bad()
                    if time.monotonic() - self.last_notification > self.source.watchdog_s:
                        self.last_notification = time.monotonic()
                        if await self._subscription_missed_changes(client):
                            log.warning(
                                "subscription missed changes, recreating it",
                                extra={"url": self.source.url},
                            )
                            self.recreated += 1
                            with contextlib.suppress(*_FAILURES):
                                await sub.delete()
                            sub = await self._subscribe(client)
            except _FAILURES as exc:
                self.reconnects += 1
                log.warning(
                    "opc-ua connection lost, reconnecting",
                    extra={"url": self.source.url, "error": repr(exc), "retry_in_s": delay},
                )
            finally:
                if client is not None:
                    with contextlib.suppress(*_FAILURES, Exception):
                        await asyncio.wait_for(client.disconnect(), 1.0)
            if not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, MAX_BACKOFF_S)


async def read_once(reader: OpcUaReader) -> dict[str, tuple[float, int, str]]:
    """Connect, resolve every sensor and read it once: sensor -> (value, quality, note), the
    note naming why a sensor cannot be read."""
    client = await reader._client()
    try:
        reader.by_node = await reader._resolve(client)
        readings = await reader._read_all(client)
    finally:
        with contextlib.suppress(*_FAILURES, Exception):
            await asyncio.wait_for(client.disconnect(), 2.0)
    values: dict[str, tuple[float, int, str]] = {
        sensor_id: (float("nan"), QUALITY_BAD, reason) for sensor_id, reason in reader.bad.items()
    }
    for sensor, reading in readings:
        if isinstance(reading, str):
            values[sensor.id] = (float("nan"), QUALITY_BAD, reading)
        else:
            note = "good" if reading.quality == QUALITY_GOOD else f"quality {reading.quality}"
            values[sensor.id] = (reading.value, reading.quality, note)
    return values
