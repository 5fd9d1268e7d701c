"""Live fan-out: per gateway process, one feed per stream that has viewers.

A :class:`StreamFeed` holds the stream's NATS subscriptions (samples, cycle events, analyses,
alerts), decodes and decimates every frame once, and encodes every update once; the same text goes
to every viewer of the stream. Each viewer has a bounded outbox: a viewer that cannot keep up
skips updates (counted), never slowing the others or growing memory. The first viewer of a
stream opens its feed, the last one to leave closes it (subscriptions removed). One pump per
process sends every feed's update on one cadence (a timer per process, not per stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from pydantic import BaseModel, ValidationError

from schemas import subjects
from schemas.frames import FrameError
from schemas.messages import (
    AlertChanged,
    AnalysisCompleted,
    CycleStateChanged,
    WsAlert,
    WsAnalysisResult,
    WsStateChange,
)
from services.common.sites import qualify
from services.gateway.logic import Decimator, envelope
from services.gateway.wsproto import FrameWriter, text_frame

log = logging.getLogger("vertac.gateway")


class Viewer:
    """One WebSocket's share of its stream's feed.

    With a :class:`FrameWriter` (the gateway's own protocol), an update is written straight to
    the socket as the frame prepared once for every viewer, unless the socket's send buffer holds
    more than ``queue_size`` such frames. Without one, updates go through a bounded queue that the
    session's sender drains with ordinary ASGI sends. Either way a slow viewer skips updates."""

    def __init__(self, queue_size: int, writer: FrameWriter | None = None) -> None:
        self.queue_size = queue_size
        self.writer = writer
        self.outbox: asyncio.Queue[str] = asyncio.Queue(maxsize=queue_size)
        self.skipped = 0

    def offer(self, text: str, frame: bytes | None = None) -> bool:
        """Send ``text`` (``frame``: the same text as a prepared WebSocket frame)."""
        if self.writer is not None:
            frame = text_frame(text) if frame is None else frame
            sent = self.writer.write(frame, self.queue_size * len(frame))
        else:
            try:
                self.outbox.put_nowait(text)
                sent = True
            except asyncio.QueueFull:
                sent = False
        if not sent:
            self.skipped += 1  # a slow viewer loses screen updates, never bus data
        return sent


class StreamFeed:
    """The bus traffic of one stream, decoded and encoded once for all of its viewers."""

    def __init__(self, nc: Client, stream_id: str, interval_s: float, buckets: int) -> None:
        self.nc = nc
        self.stream_id = stream_id
        self.interval_s = interval_s
        self.decimator = Decimator(stream_id, buckets)
        self.viewers: set[Viewer] = set()
        self.subs: list[Any] = []
        self.ready = asyncio.Event()
        # at central, a site's stream: (site, its id there)
        self.site = subjects.site_of(stream_id)

    async def _open_site(self, site: str, stream_id: str) -> None:
        """A site's stream at central: its messages are in central's stream of the site only
        (sourced, never published live at central), so the feed is an ordered consumer of
        what arrives from now on, removed by the server once the feed closes."""
        handlers = {"samples": self._on_samples, "cycles": self._on_cycle,
                    "analysis": self._on_analysis, "alerts": self._on_alert}  # fmt: skip

        async def on_msg(msg: Msg) -> None:
            handle = handlers.get(msg.subject.split(".", 3)[2])
            if handle is not None:
                await handle(msg)

        self.subs.append(
            await self.nc.jetstream().subscribe(
                subjects.site_data(site, "*", stream_id),
                stream=subjects.site_stream(site),
                cb=on_msg,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.NEW,
                inactive_threshold=5.0,
            )
        )
        self.ready.set()

    async def open(self) -> None:
        if self.site is not None:
            await self._open_site(*self.site)
            return
        wanted = (
            (subjects.samples(self.stream_id), self._on_samples),
            (subjects.cycles_of(self.stream_id), self._on_cycle),
            (subjects.analysis(self.stream_id), self._on_analysis),
            (subjects.alerts_of(self.stream_id), self._on_alert),
        )
        try:
            for subject, cb in wanted:  # kept one by one: a failure closes those made before it
                self.subs.append(await self.nc.subscribe(subject, cb=cb))
            await self.nc.flush()  # the server has the subscriptions: viewers may read state
        except BaseException:
            await self.close()
            raise
        self.ready.set()

    async def close(self) -> None:
        subs, self.subs = self.subs, []
        for sub in subs:
            with contextlib.suppress(nats.errors.Error, Exception):
                await sub.unsubscribe()

    def broadcast(self, text: str) -> None:
        frame = text_frame(text)  # one frame, the same bytes for every viewer
        for viewer in self.viewers:
            viewer.offer(text, frame)

    async def _on_samples(self, msg: Msg) -> None:
        try:
            self.decimator.add_message(msg.data, msg.headers)
        except FrameError as exc:
            log.debug("undecodable frame skipped for the screen", extra={"error": str(exc)})

    def _forward(self, msg: Msg, model: type[BaseModel], wrap: Callable[[Any], BaseModel]) -> None:
        try:
            item = model.model_validate_json(msg.data)
        except ValidationError:
            return
        if self.site is not None:
            item = qualify(item, self.site[0])  # with the ids central gives it
        self.broadcast(envelope(wrap(item)))  # encoded once for every viewer

    async def _on_cycle(self, msg: Msg) -> None:
        self._forward(msg, CycleStateChanged,
                      lambda e: WsStateChange(stream_id=self.stream_id, event=e))  # fmt: skip

    async def _on_analysis(self, msg: Msg) -> None:
        self._forward(msg, AnalysisCompleted,
                      lambda r: WsAnalysisResult(stream_id=self.stream_id, result=r))  # fmt: skip

    async def _on_alert(self, msg: Msg) -> None:
        self._forward(msg, AlertChanged, lambda a: WsAlert(stream_id=self.stream_id, alert=a))

    def flush(self) -> None:
        """Send what arrived since the last flush to every viewer, encoded once."""
        text = self.decimator.flush_text()
        if text is not None and self.viewers:
            self.broadcast(text)


class FeedHub:
    """The feeds of one gateway process, opened by the first viewer of a stream and closed when
    its last viewer leaves."""

    def __init__(self, nc: Client, interval_ms: int, points_per_second: int) -> None:
        self.nc = nc
        self.interval_s = interval_ms / 1000
        self.buckets = max(1, math.ceil(points_per_second * interval_ms / 1000))
        self.feeds: dict[str, StreamFeed] = {}
        self._lock = asyncio.Lock()
        self._pump: asyncio.Task[None] | None = None
        self._skipped_by_gone = 0  # skipped updates of viewers that have left

    @property
    def skipped(self) -> int:
        """Updates not delivered to a slow viewer, over the process's life."""
        live = sum(v.skipped for f in self.feeds.values() for v in f.viewers)
        return self._skipped_by_gone + live

    @property
    def subscriptions(self) -> int:
        return sum(len(f.subs) for f in self.feeds.values())

    @property
    def viewers(self) -> int:
        return sum(len(f.viewers) for f in self.feeds.values())

    async def join(self, stream_id: str, viewer: Viewer) -> StreamFeed:
        async with self._lock:
            feed = self.feeds.get(stream_id)
            if feed is None:
                feed = StreamFeed(self.nc, stream_id, self.interval_s, self.buckets)
                await feed.open()  # raises: nothing is left behind
                self.feeds[stream_id] = feed
                if self._pump is None or self._pump.done():
                    self._pump = asyncio.create_task(self._run_pump())
            feed.viewers.add(viewer)
            return feed

    async def leave(self, stream_id: str, viewer: Viewer) -> None:
        async with self._lock:
            feed = self.feeds.get(stream_id)
            if feed is None:
                return
            if viewer in feed.viewers:
                feed.viewers.discard(viewer)
                self._skipped_by_gone += viewer.skipped
            if not feed.viewers:
                del self.feeds[stream_id]
                await feed.close()

    async def _run_pump(self) -> None:
        """Every feed's update on a fixed cadence (never a burst); stops with the last feed."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while self.feeds:
            due = max(due + self.interval_s, loop.time())
            await asyncio.sleep(due - loop.time())
            for feed in list(self.feeds.values()):
                try:
                    feed.flush()
                except Exception:  # one stream's odd frames must not stop the others' screens
                    log.exception("update not sent", extra={"stream_id": feed.stream_id})

    async def close(self) -> None:
        async with self._lock:
            feeds, self.feeds = list(self.feeds.values()), {}
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
            self._pump = None
        for feed in feeds:
            await feed.close()
