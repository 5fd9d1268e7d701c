"""Thin handlers of ingest: decode frames, call logic, write through adapters."""

from __future__ import annotations

import logging
import time

import zstandard

from schemas.frames import Frame
from schemas.messages import StreamRegistered
from services.common.consumer import Delivery
from services.common.metrics import Metrics
from services.ingest.adapters import FrameStore, LineSink
from services.ingest.logic import influx_lines, to_row

log = logging.getLogger(__name__)


class PersistFrames:
    """Writes each fetched batch of frames in one transaction."""

    def __init__(self, store: FrameStore, metrics: Metrics, durable: str, zstd_level: int) -> None:
        self.store = store
        self.metrics = metrics
        self.durable = durable
        self.compressor = zstandard.ZstdCompressor(level=zstd_level)

    async def __call__(self, batch: list[Delivery[Frame]]) -> None:
        rows = [to_row(d.item, self.compressor) for d in batch]
        stored = await self.store.write(rows)
        self.metrics.samples.labels(self.metrics.service, self.durable).inc(stored)


class PersistRegistrations:
    def __init__(self, store: FrameStore) -> None:
        self.store = store

    async def __call__(self, batch: list[Delivery[StreamRegistered]]) -> None:
        await self.store.upsert_streams([d.item for d in batch])
        for d in batch:
            log.info("stream registered", extra={"stream_id": d.item.stream_id})


class WriteInflux:
    """Writes frames to the InfluxDB sink as ``sensor_readings``."""

    def __init__(self, sink: LineSink, metrics: Metrics, durable: str) -> None:
        self.sink = sink
        self.metrics = metrics
        self.durable = durable

    async def __call__(self, batch: list[Delivery[Frame]]) -> None:
        now = time.time_ns()
        body = b"\n".join(influx_lines(d.item, now) for d in batch)
        await self.sink.write(body)
        self.metrics.samples.labels(self.metrics.service, self.durable).inc(
            sum(d.item.n_samples for d in batch)
        )
