"""The edge agent: read a source, cut its samples into frames, keep them in the durable buffer,
and forward them to JetStream in order, whatever state the bus is in.

``vertac edge run --config machine.yaml``. The reading side never waits for the bus: frames go
to the buffer (committed) and the forwarder drains it when the bus answers. Status (buffer depth,
age of the oldest frame, publish rate, refused frames, clock offset) is logged and published on
``vertac.edge.<stream_id>.status`` every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

import nats.errors
import numpy as np

from edge.buffer import BufferFull, FrameBuffer
from edge.client import (
    Bus,
    BusSettings,
    ServerUnreachable,
    describe,
    is_transient,
    open_client,
    redact,
)
from edge.config import MachineConfig
from edge.registry_client import clock_offset_s, register_stream
from edge.sources import Samples, Source, source_of
from schemas import subjects
from schemas.frames import CONTENT_TYPE_BINARY, Frame, Series
from schemas.messages import EdgeStatus

log = logging.getLogger(__name__)


class FrameCutter:
    """Collects samples into frames. A frame closes on the edge's clock once ``period_ns`` has
    passed since it opened, whatever has arrived (a source whose values never change, or whose
    last message waits for no successor, still gets its frames out on time); it closes early
    when one sensor's own samples already span ``period_ns`` (a replay faster than real time) or
    when it holds ``max_samples``."""

    def __init__(self, stream_id: str, period_ns: int, max_samples: int = 32_768) -> None:
        self.stream_id = stream_id
        self.period_ns = period_ns
        self.max_samples = max_samples
        self.pending = Samples()
        self.opened_ns: int | None = None  # monotonic clock of the first sample in the frame
        self.count = 0
        self.span: dict[str, tuple[int, int]] = {}

    def add(self, batch: Samples, now_ns: int | None = None) -> bool:
        """Take a batch; True when the frame should be cut now."""
        for sensor, ts in batch.t.items():
            for t, v, q in zip(ts, batch.v[sensor], batch.q[sensor], strict=True):
                if not len(t):
                    continue
                self.pending.add(sensor, t, v, q)
                self.count += len(t)
                lo, hi = self.span.get(sensor, (int(t[0]), int(t[-1])))
                self.span[sensor] = (min(lo, int(t.min())), max(hi, int(t.max())))
        if self.count and self.opened_ns is None:
            self.opened_ns = time.monotonic_ns() if now_ns is None else now_ns
        return self.count >= self.max_samples or any(
            hi - lo >= self.period_ns for lo, hi in self.span.values()
        )

    def due_in_s(self, now_ns: int | None = None) -> float | None:
        """Seconds until the open frame is due on the edge's clock; None when it is empty."""
        if self.opened_ns is None:
            return None
        now = time.monotonic_ns() if now_ns is None else now_ns
        return max(0.0, (self.opened_ns + self.period_ns - now) / 1e9)

    def take(self) -> tuple[Series, ...] | None:
        series = []
        for sensor, ts in self.pending.t.items():
            t = np.concatenate(ts)
            v = np.concatenate(self.pending.v[sensor])
            q = np.concatenate(self.pending.q[sensor])
            if len(t) > 1 and np.any(np.diff(t) < 0):
                order = np.argsort(t, kind="stable")
                t, v, q = t[order], v[order], q[order]
            good = bool((q == 192).all())
            series.append(Series(sensor, v, int(t[0]), 0, t, None if good else q))
        self.pending = Samples()
        self.opened_ns = None
        self.count = 0
        self.span = {}
        return tuple(series) or None


class EdgeAgent:
    def __init__(
        self,
        config: MachineConfig,
        common: BusSettings,
        source: Source | None = None,
        status_every_s: float = 5.0,
    ) -> None:
        self.config = config
        self.common = common
        self.source = source or source_of(config)
        self.buffer = FrameBuffer(
            config.buffer.path,
            config.stream_id,
            int(config.buffer.max_mb * 1024**2),
            exclusive=True,
        )
        self.published_recent: list[tuple[float, int]] = []
        self.bus: Bus | None = None
        self.status_every_s = status_every_s
        self.clock_offset_s: float | None = None
        self._offset_task: asyncio.Future[None] | None = None
        self.last_status: dict[str, object] = {}

    def log_start(self) -> None:
        """One line naming the machine, its source and where frames go (and whether that is
        the default because VERTAC_NATS_URL is not set)."""
        import os

        source = self.config.source
        where = getattr(source, "url", None) or getattr(source, "path", None)
        if where is None:
            where = f"{getattr(source, 'host', '')}:{getattr(source, 'port', '')}"
        log.info(
            "edge starting",
            extra={
                "stream_id": self.config.stream_id,
                "source": source.type,
                "source_at": str(where),
                "sensors": len(self.config.sensors),
                "nats_url": redact(self.common.nats_url),
                "nats_url_from": "VERTAC_NATS_URL"
                if os.environ.get("VERTAC_NATS_URL")
                else "default (VERTAC_NATS_URL is not set)",
                "buffer": str(self.config.buffer.path),
            },
        )

    async def read(self, stop: asyncio.Event) -> None:
        """Source -> frames -> buffer; never waits for the bus."""
        cutter = FrameCutter(self.config.stream_id, round(self.config.frame_period_ms * 1e6))
        batches: asyncio.Queue[Samples | None] = asyncio.Queue(maxsize=1024)

        async def pump() -> None:
            try:
                async for batch in self.source.stream(stop):
                    await batches.put(batch)
            finally:
                await batches.put(None)

        pumping = asyncio.ensure_future(pump())
        try:
            while True:
                try:
                    batch = await asyncio.wait_for(batches.get(), cutter.due_in_s())
                except TimeoutError:
                    self._store(cutter)  # due on the edge's clock
                    continue
                if batch is None:
                    break
                if cutter.add(batch) or cutter.due_in_s() == 0:
                    self._store(cutter)
        finally:
            self._store(cutter)
            if not pumping.done():
                pumping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pumping  # a failure of the source is raised here

    def _store(self, cutter: FrameCutter) -> None:
        series = cutter.take()
        if series is None:
            return
        try:
            self.buffer.put(lambda seq: Frame(self.config.stream_id, seq, series, time.time_ns()))
        except BufferFull as exc:
            log.warning("frame refused", extra={"reason": str(exc)})

    async def _connect(self, stop: asyncio.Event) -> Bus | None:
        delay = 0.5
        while not stop.is_set():
            try:
                bus = await open_client(self.common, f"vertac-edge-{self.config.stream_id}")
            except ServerUnreachable as exc:
                log.warning(
                    "bus unreachable, buffering", extra={"error": str(exc), "retry_in_s": delay}
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 10.0)
                continue
            return bus
        return None

    async def forward(self, stop: asyncio.Event, hard_stop: asyncio.Event | None = None) -> None:
        """Buffer -> JetStream, in seq order, deleting only acknowledged frames. After ``stop``
        it drains what is buffered; after ``hard_stop`` it gives up when the bus fails (the
        frames stay in the buffer for the next run)."""
        hard_stop = hard_stop or stop
        bus = await self._connect(hard_stop)
        if bus is None:
            return
        self.bus = bus
        try:
            if not await self._register(bus, hard_stop):
                return
            # beside publishing, never in its way
            self._offset_task = asyncio.ensure_future(self._measure_offset(bus))
            subject = subjects.samples(self.config.stream_id)
            while True:
                rows = self.buffer.peek(128)
                if not rows:
                    if stop.is_set():
                        return
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 0.05)
                    continue
                try:
                    await asyncio.gather(
                        *(
                            bus.js.publish(
                                subject,
                                payload,
                                timeout=5,
                                headers={
                                    subjects.HEADER_CONTENT_TYPE: CONTENT_TYPE_BINARY,
                                    subjects.HEADER_MSG_ID: subjects.dedup_id(
                                        self.config.stream_id, seq
                                    ),
                                },
                            )
                            for seq, payload in rows
                        )
                    )
                except (nats.errors.Error, TimeoutError, OSError) as exc:
                    log.warning(
                        "publish failed, keeping frames",
                        extra={"error": repr(exc), "depth": len(rows)},
                    )
                    if hard_stop.is_set():
                        return
                    await asyncio.sleep(1.0)
                    continue
                self.buffer.remove([seq for seq, _ in rows])
                self.published_recent.append((time.monotonic(), len(rows)))
        finally:
            self.bus = None
            await bus.close()

    async def _register(self, bus: Bus, hard_stop: asyncio.Event) -> bool:
        """Register the stream and, for a new buffer, continue the stream's numbering where
        other publishers left it. Retried while the bus is not ready (the services declare its
        buckets); False when ``hard_stop`` came first."""
        delay = 0.5
        while True:
            try:
                fresh = self.buffer.status().next_seq == 0
                _, _, first = await register_stream(
                    bus, self.config.registration(), reserve=1 if fresh else 0
                )
                if fresh and first is not None:
                    self.buffer.seed_seq(first)
                return True
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning(
                    "registering the stream failed, buffering and retrying (the ingest "
                    "service answers registrations)",
                    extra={"error": describe(exc), "retry_in_s": delay},
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(hard_stop.wait(), delay)
            if hard_stop.is_set():
                return False
            delay = min(delay * 2, 10.0)

    async def _measure_offset(self, bus: Bus) -> None:
        """Clock offset of the edge, asked of the registry service beside publishing (never
        in its way); unknown while no service answers."""
        try:
            self.clock_offset_s = await clock_offset_s(bus, self.config.stream_id)
        except (nats.errors.Error, TimeoutError, OSError, ValueError) as exc:
            log.debug("clock offset not measured", extra={"error": describe(exc)})

    def status(self) -> dict[str, object]:
        s = self.buffer.status()
        now = time.monotonic()
        self.published_recent = [(t, n) for t, n in self.published_recent if now - t < 10]
        return {
            "stream_id": self.config.stream_id,
            "depth": s.depth,
            "bytes": s.bytes,
            "oldest_age_s": s.oldest_age_s,
            "next_seq": s.next_seq,
            "published": s.published,
            "refused": s.refused,
            "publish_rate_fps": sum(n for _, n in self.published_recent) / 10,
            "clock_offset_s": self.clock_offset_s,
        }

    async def report(self, stop: asyncio.Event, every_s: float = 5.0) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)
            if self.bus is not None and self.bus.nc.is_connected:
                await self._measure_offset(self.bus)
            status = self.status()
            log.info("edge status", extra=status)
            if self.bus is not None and self.bus.nc.is_connected:
                with contextlib.suppress(nats.errors.Error):
                    await self.bus.nc.publish(
                        subjects.edge_status(self.config.stream_id),
                        EdgeStatus(**status).model_dump_json().encode(),
                    )

    async def run(self, stop: asyncio.Event) -> None:
        reading_done = asyncio.Event()

        async def read_then_flag() -> None:
            try:
                await self.read(stop)
            finally:
                reading_done.set()

        try:
            await asyncio.gather(
                read_then_flag(),
                self.forward(reading_done, stop),
                self.report(reading_done, self.status_every_s),
            )
        finally:
            self.source.close()
            self.last_status = self.status()  # read before the buffer closes
            self.buffer.close()


def status_of_file(config: MachineConfig) -> str:
    """``vertac edge status``: what the buffer file says, as JSON."""
    buffer = FrameBuffer(config.buffer.path, config.stream_id, int(config.buffer.max_mb * 1024**2))
    try:
        s = buffer.status()
    finally:
        buffer.close()
    return json.dumps(
        s.__dict__
        if hasattr(s, "__dict__")
        else {
            "depth": s.depth,
            "bytes": s.bytes,
            "oldest_age_s": s.oldest_age_s,
            "next_seq": s.next_seq,
            "refused": s.refused,
            "published": s.published,
        },
        indent=2,
    )
