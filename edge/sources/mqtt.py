"""MQTT source (plain JSON topics): each sensor names its topic; a message is a bare number or
a JSON object with the value under ``json_key`` (default ``value``) and optionally ``timestamp``
(seconds or ISO time; else the edge clock at arrival) and ``quality`` (0-255). Reconnects with
backoff; messages between a disconnect and the next connect are the broker's to keep (QoS >= 1
with a persistent session)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from datetime import datetime

import aiomqtt

from edge.config import MachineConfig, MqttSource
from edge.sources import register, sparkplug
from edge.sources.base import QueuedSource
from schemas.frames import QUALITY_BAD, QUALITY_GOOD
from schemas.timeutil import ns_of, ns_of_seconds

log = logging.getLogger(__name__)


def parse(payload: bytes, key: str, arrival_ns: int) -> tuple[int, float, int]:
    """(timestamp ns, value, quality) of one message; a bad payload gives a bad-quality NaN."""
    try:
        data = json.loads(payload)
    except ValueError:
        return arrival_ns, float("nan"), QUALITY_BAD
    if isinstance(data, int | float) and not isinstance(data, bool):
        return arrival_ns, float(data), QUALITY_GOOD
    if not isinstance(data, dict) or not isinstance(data.get(key), int | float):
        return arrival_ns, float("nan"), QUALITY_BAD
    stamp = data.get("timestamp")
    t = arrival_ns
    if isinstance(stamp, int | float):
        t = ns_of_seconds(float(stamp))
    elif isinstance(stamp, str):
        with contextlib.suppress(ValueError):
            t = ns_of(datetime.fromisoformat(stamp))
    quality = data.get("quality", QUALITY_GOOD)
    return (
        t,
        float(data[key]),
        int(quality) if isinstance(quality, int) and 0 <= quality <= 255 else QUALITY_BAD,
    )


@register("mqtt")
class MqttReader(QueuedSource):
    def __init__(self, source: MqttSource, config: MachineConfig) -> None:
        super().__init__(config)
        self.source = source
        self.by_topic = {s.topic: s for s in config.sensors if s.topic}  # JSON topics
        self.by_metric = {s.metric: s for s in config.sensors if s.metric}
        self.aliases: dict[int, str] = {}
        self.datatypes: dict[str, int] = {}  # metric name -> datatype of its birth
        self.reconnects = 0
        self.subscribed = asyncio.Event()  # set once the broker has every subscription

    async def keep_connected(self, stop: asyncio.Event) -> None:
        delay = 0.5
        while not stop.is_set():
            try:
                async with aiomqtt.Client(
                    self.source.host,
                    self.source.port,
                    username=self.source.username,
                    password=self.source.password,
                    identifier=f"vertac-edge-{self.config.stream_id}",
                    clean_session=False,
                ) as client:
                    for topic in self.topics():
                        await client.subscribe(topic, qos=self.source.qos)
                    self.subscribed.set()
                    log.info(
                        "mqtt connected",
                        extra={"host": self.source.host, "topics": len(self.by_topic)},
                    )
                    delay = 0.5
                    async for message in client.messages:
                        if not isinstance(message.payload, bytes | bytearray):
                            continue
                        if self.source.sparkplug is not None:
                            self.on_sparkplug(str(message.topic), bytes(message.payload))
                        else:
                            self.on_json(str(message.topic), bytes(message.payload))
                        if stop.is_set():
                            return
            except aiomqtt.MqttError as exc:
                self.reconnects += 1
                log.warning(
                    "mqtt connection lost, reconnecting",
                    extra={"error": repr(exc), "retry_in_s": delay},
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 10.0)

    def topics(self) -> list[str]:
        sp = self.source.sparkplug
        if sp is None:
            return list(self.by_topic)
        tail = f"/{sp.device}" if sp.device else "/#"
        return [f"spBv1.0/{sp.group}/+/{sp.edge_node}{tail}"]

    def on_json(self, topic: str, payload: bytes) -> None:
        sensor = self.by_topic.get(topic)
        if sensor is None:
            return
        t, v, q = parse(payload, sensor.json_key, time.time_ns())
        self.queue.put_nowait((sensor.id, t, v * sensor.scale + sensor.offset, q))

    def on_sparkplug(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        if len(parts) < 4 or parts[0] != "spBv1.0":
            return
        kind = parts[2]
        try:
            decoded = sparkplug.decode(payload)
        except sparkplug.SparkplugError as exc:
            log.warning("bad Sparkplug payload", extra={"topic": topic, "error": str(exc)})
            return
        if kind in ("NBIRTH", "DBIRTH"):
            for m in decoded.metrics:
                if m.name is not None and m.alias is not None:
                    self.aliases[m.alias] = m.name
                if m.name is not None and m.datatype is not None:
                    self.datatypes[m.name] = m.datatype
        if kind not in ("NBIRTH", "DBIRTH", "NDATA", "DDATA"):
            return
        now = time.time_ns()
        for m in decoded.metrics:
            name = m.name if m.name is not None else self.aliases.get(m.alias or -1)
            sensor = self.by_metric.get(name) if name is not None else None
            if sensor is None:
                continue
            stamp_ms = m.timestamp_ms if m.timestamp_ms is not None else decoded.timestamp_ms
            t = stamp_ms * 1_000_000 if stamp_ms is not None else now
            value = m.number(self.datatypes.get(name)) if name is not None else None
            if value is None:
                self.queue.put_nowait((sensor.id, t, float("nan"), QUALITY_BAD))
            else:
                self.queue.put_nowait(
                    (sensor.id, t, value * sensor.scale + sensor.offset, QUALITY_GOOD)
                )
