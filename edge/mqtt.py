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
from collections.abc import AsyncIterator
from datetime import datetime

import aiomqtt
import numpy as np

from edge.config import MachineConfig, MqttSource
from edge.sources import Samples
from schemas.frames import QUALITY_BAD, QUALITY_GOOD
from services.common.timeutil import ns_of, ns_of_seconds

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


class MqttReader:
    def __init__(self, source: MqttSource, config: MachineConfig) -> None:
        self.source = source
        self.config = config
        self.by_topic = {s.topic: s for s in config.sensors if s.topic}
        self.queue: asyncio.Queue[tuple[str, int, float, int]] = asyncio.Queue(maxsize=1_000_000)
        self.reconnects = 0

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
                    for topic in self.by_topic:
                        await client.subscribe(topic, qos=self.source.qos)
                    log.info(
                        "mqtt connected",
                        extra={"host": self.source.host, "topics": len(self.by_topic)},
                    )
                    delay = 0.5
                    async for message in client.messages:
                        sensor = self.by_topic.get(str(message.topic))
                        if sensor is None or not isinstance(message.payload, bytes | bytearray):
                            continue
                        t, v, q = parse(bytes(message.payload), sensor.json_key, time.time_ns())
                        self.queue.put_nowait((sensor.id, t, v * sensor.scale + sensor.offset, q))
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

    async def stream(self, stop: asyncio.Event) -> AsyncIterator[Samples]:
        keeper = asyncio.ensure_future(self.keep_connected(stop))
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.config.poll_interval_ms / 1000)
                batch = drain(self.queue)
                if batch is not None:
                    yield batch
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    def close(self) -> None:
        pass


def drain(queue: asyncio.Queue[tuple[str, int, float, int]]) -> Samples | None:
    """Everything waiting in ``queue`` as one batch, each sensor in time order."""
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    if not items:
        return None
    batch = Samples()
    by_sensor: dict[str, list[tuple[int, float, int]]] = {}
    for sensor_id, stamp, value, quality in items:
        by_sensor.setdefault(sensor_id, []).append((stamp, value, quality))
    for sensor_id, rows in by_sensor.items():
        ts = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vs = np.fromiter((r[1] for r in rows), dtype=np.float64, count=len(rows))
        qs = np.fromiter((r[2] for r in rows), dtype=np.uint8, count=len(rows))
        order = np.argsort(ts, kind="stable")
        batch.add(sensor_id, ts[order], vs[order], qs[order])
    return batch
