"""Thin handlers of ingest: decode frames, call logic, write through adapters."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import zstandard
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from edge.publisher import frame_message
from schemas import subjects
from schemas.frames import Frame
from schemas.messages import StreamRegistered
from services.common.consumer import Delivery
from services.common.metrics import Metrics
from services.ingest.adapters import FrameStore, LineSink
from services.ingest.logic import digest, influx_lines, to_row

log = logging.getLogger(__name__)


class PersistFrames:
    """Writes each fetched batch of frames, and their 1 s and 1 min rollups, in one
    transaction."""

    def __init__(
        self,
        store: FrameStore,
        metrics: Metrics,
        durable: str,
        zstd_level: int,
        *,
        rollups: bool = True,
    ) -> None:
        self.store = store
        self.rollups = rollups
        self.metrics = metrics
        self.durable = durable
        self.compressor = zstandard.ZstdCompressor(level=zstd_level)

    async def __call__(self, batch: list[Delivery[Frame]]) -> None:
        rows = [to_row(d.item, self.compressor) for d in batch]
        frames = [d.item for d in batch] if self.rollups else None
        stored = await self.store.write(rows, frames)
        self.metrics.samples.labels(self.metrics.service, self.durable).inc(stored)


class PersistAndDigest:
    """At a site: store each batch as :class:`PersistFrames` does, then publish each frame's
    digest (``vertac.digest.<stream>.<p>``, for a central that takes digests); the batch is
    acknowledged once both are done, and a digest sent again is dropped by its Nats-Msg-Id."""

    def __init__(self, persist: PersistFrames, js: JetStreamContext) -> None:
        self.persist = persist
        self.js = js

    async def __call__(self, batch: list[Delivery[Frame]]) -> None:
        await self.persist(batch)
        sends = []
        for d in batch:
            small = digest(d.item)
            _, payload, headers = frame_message(small)  # as a publisher sends a frame
            sends.append(
                self.js.publish(subjects.digest(small.stream_id), payload, headers=headers)
            )
        await asyncio.gather(*sends)


class PersistRegistrations:
    def __init__(self, store: FrameStore) -> None:
        self.store = store

    async def __call__(self, batch: list[Delivery[StreamRegistered]]) -> None:
        await self.store.upsert_streams([d.item for d in batch])
        for d in batch:
            log.info("stream registered", extra={"stream_id": d.item.stream_id})


class ImportRegistrations:
    """At central: a site's registrations, into ``live_streams`` and the registry (under the
    id central gives the site's stream), so that history, REST and the dashboard list them."""

    def __init__(self, store: FrameStore, streams: KeyValue) -> None:
        self.store = store
        self.streams = streams

    async def __call__(self, batch: list[Delivery[StreamRegistered]]) -> None:
        records = [d.item for d in batch]
        await self.store.upsert_streams(records)
        for record in records:  # in order: the newest registration of a stream is kept
            await self.streams.put(record.stream_id, record.model_dump_json().encode())


class DatasetIds:
    """A stream's ``dataset_id`` from its registration, cached for ``ttl_s`` (a stream
    registered again with another dataset is tagged with it from then on)."""

    def __init__(self, lookup: Callable[[str], Awaitable[StreamRegistered | None]],
                 ttl_s: float = 30.0) -> None:  # fmt: skip
        self.lookup = lookup
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, str]] = {}

    async def of(self, stream_id: str) -> str:
        now = time.monotonic()
        hit = self._cache.get(stream_id)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        try:
            record = await self.lookup(stream_id)
        except Exception as exc:  # the tag is a convenience; the samples go on without it
            log.warning("dataset id not looked up", extra={"stream_id": stream_id,
                                                           "error": repr(exc)})  # fmt: skip
            return hit[1] if hit else ""
        dataset_id = record.dataset_id if record is not None else ""
        self._cache[stream_id] = (now, dataset_id)
        return dataset_id


class WriteInflux:
    """Writes frames to the InfluxDB sink as ``sensor_readings``, tagged with the stream's
    ``dataset_id`` when ``datasets`` is given."""

    def __init__(
        self, sink: LineSink, metrics: Metrics, durable: str, datasets: DatasetIds | None = None
    ) -> None:
        self.sink = sink
        self.metrics = metrics
        self.durable = durable
        self.datasets = datasets

    async def __call__(self, batch: list[Delivery[Frame]]) -> None:
        now = time.time_ns()
        tags = {}
        if self.datasets is not None:
            for stream_id in {d.item.stream_id for d in batch}:
                tags[stream_id] = await self.datasets.of(stream_id)
        body = b"\n".join(
            influx_lines(d.item, now, dataset_id=tags.get(d.item.stream_id) or None) for d in batch
        )
        await self.sink.write(body)
        self.metrics.samples.labels(self.metrics.service, self.durable).inc(
            sum(d.item.n_samples for d in batch)
        )
