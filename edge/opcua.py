"""OPC-UA source (asyncua): monitored items (or polling), source timestamps, reconnect.

Notifications go to a queue; ``stream()`` hands them over in batches every poll interval. The
connection is checked every second; when it breaks, the source reconnects with backoff and
re-resolves every node by its browse path (node ids may change when a server restarts). A
subscription that stays silent for ``watchdog_s`` while connected is recreated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.ua.uaerrors import UaError

from edge.config import MachineConfig, OpcUaSource, SensorConfig
from edge.sources import QueuedSource
from schemas.frames import QUALITY_BAD, QUALITY_GOOD, QUALITY_UNCERTAIN
from services.common.timeutil import ns_of

log = logging.getLogger(__name__)
_FAILURES = (OSError, ConnectionError, TimeoutError, UaError, asyncio.TimeoutError)


def quality_of(status: ua.StatusCode | None) -> int:
    if status is None or status.is_good():
        return QUALITY_GOOD
    return QUALITY_UNCERTAIN if status.is_uncertain() else QUALITY_BAD


class OpcUaReader(QueuedSource):
    def __init__(self, source: OpcUaSource, config: MachineConfig) -> None:
        super().__init__(config)
        self.source = source
        self.by_node: dict[Any, SensorConfig] = {}
        self.last_notification = time.monotonic()
        self.reconnects = 0

    # asyncua calls this for every data change
    async def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        sensor = self.by_node.get(node.nodeid)
        if sensor is None:
            return
        dv = data.monitored_item.Value
        stamp = dv.SourceTimestamp or dv.ServerTimestamp
        t = ns_of(stamp) if stamp is not None else time.time_ns()
        self.last_notification = time.monotonic()
        try:
            value = float(val) * sensor.scale + sensor.offset
        except (TypeError, ValueError):
            value, quality = float("nan"), QUALITY_BAD
        else:
            quality = quality_of(dv.StatusCode)
        self.queue.put_nowait((sensor.id, t, value, quality))

    async def _client(self) -> Client:
        client = Client(self.source.url, timeout=self.source.timeout_s)
        sec = self.source.security
        if sec.policy != "None":
            await client.set_security_string(
                f"{sec.policy},{sec.mode},{sec.certificate},{sec.private_key}"
            )
        if sec.username:
            client.set_user(sec.username)
            client.set_password(sec.password or "")
        await client.connect()
        return client

    async def _resolve(self, client: Client) -> dict[Any, SensorConfig]:
        nodes: dict[Any, SensorConfig] = {}
        for s in self.config.sensors:
            if s.browse_path:
                node = await client.nodes.objects.get_child(s.browse_path)
            else:
                node = client.get_node(s.node_id or "")
            nodes[node.nodeid] = s
        return nodes

    async def _subscribe(self, client: Client) -> Any:
        sub = await client.create_subscription(self.source.sampling_interval_ms, self)
        nodes = [client.get_node(n) for n in self.by_node]
        if self.source.deadband > 0:
            # absolute deadband (type 1): the server reports only changes larger than it
            await sub.deadband_monitor(  # type: ignore[call-overload]
                nodes, self.source.deadband, 1, self.source.queue_size
            )
        else:
            await sub.subscribe_data_change(  # type: ignore[call-overload]
                nodes,
                queuesize=self.source.queue_size,
                sampling_interval=self.source.sampling_interval_ms,
            )
        return sub

    async def _poll(self, client: Client) -> None:
        t = time.time_ns()
        nodes = [client.get_node(n) for n in self.by_node]
        value_attr = ua.AttributeIds.Value  # type: ignore[attr-defined]
        values = await client.read_attributes(nodes, value_attr)
        for nodeid, dv in zip(self.by_node, values, strict=True):
            sensor = self.by_node[nodeid]
            stamp = dv.SourceTimestamp or dv.ServerTimestamp
            value = (
                float(dv.Value.Value) * sensor.scale + sensor.offset if dv.Value else float("nan")
            )
            self.queue.put_nowait(
                (sensor.id, ns_of(stamp) if stamp else t, value, quality_of(dv.StatusCode))
            )

    async def keep_connected(self, stop: asyncio.Event) -> None:
        delay = 0.5
        while not stop.is_set():
            client = None
            try:
                client = await self._client()
                self.by_node = await self._resolve(client)
                sub = await self._subscribe(client) if self.source.mode == "subscribe" else None
                log.info(
                    "opc-ua connected", extra={"url": self.source.url, "nodes": len(self.by_node)}
                )
                delay = 0.5
                self.last_notification = time.monotonic()
                while not stop.is_set():
                    if sub is None:
                        await self._poll(client)
                        await asyncio.sleep(self.config.poll_interval_ms / 1000)
                        continue
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 1.0)
                    await client.check_connection()
                    if time.monotonic() - self.last_notification > self.source.watchdog_s:
                        log.warning(
                            "subscription silent, recreating it", extra={"url": self.source.url}
                        )
                        with contextlib.suppress(*_FAILURES):
                            await sub.delete()
                        sub = await self._subscribe(client)
                        self.last_notification = time.monotonic()
            except _FAILURES as exc:
                self.reconnects += 1
                log.warning(
                    "opc-ua connection lost, reconnecting",
                    extra={"url": self.source.url, "error": repr(exc), "retry_in_s": delay},
                )
            finally:
                if client is not None:
                    with contextlib.suppress(*_FAILURES, Exception):
                        await client.disconnect()
            if not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 5.0)


async def read_once(reader: OpcUaReader) -> dict[str, tuple[float, int]]:
    """Connect, resolve every sensor and read it once: sensor -> (value, quality)."""
    client = await reader._client()
    try:
        reader.by_node = await reader._resolve(client)
        await reader._poll(client)
    finally:
        await client.disconnect()
    values: dict[str, tuple[float, int]] = {}
    while not reader.queue.empty():
        sensor_id, _, value, quality = reader.queue.get_nowait()
        values[sensor_id] = (value, quality)
    return values
