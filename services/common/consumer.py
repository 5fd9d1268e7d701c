"""The durable pull-consumer loop every service runs.

Fetch a batch, decode each message (a message that does not decode goes to the dead-letter subject
with the reason and is acknowledged), hand the decoded batch to the service's handler, and
acknowledge only after the handler returned, i.e. after its side effects are committed. A
transient failure naks the batch with a delay so it is redelivered; a message delivered more than
``max_deliver`` times is dead-lettered instead of blocking its stream. When a batch fails for an
unexpected reason its messages are retried one by one, so one poison message never drags good
ones into the dead-letter stream.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from schemas import subjects
from schemas.messages import DeadLetter
from services.common.metrics import Metrics

log = logging.getLogger(__name__)
T = TypeVar("T")


class BadMessage(ValueError):
    """A message that can never be processed; ``field`` names the offending part."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


class TransientError(RuntimeError):
    """A failure that may pass (database restarting, network blip): redeliver later."""


@dataclass(frozen=True, slots=True)
class Delivery(Generic[T]):
    """A decoded message and the bus message it came in."""

    msg: Msg
    item: T


Decoder = Callable[[Msg], T]
BatchHandler = Callable[[list[Delivery[T]]], Awaitable[None]]


def dead_letter_for(service: str, msg: Msg, reason: str, field: str = "") -> DeadLetter:
    """The dead-letter record of ``msg``."""
    meta = _metadata(msg)
    return DeadLetter(
        service=service,
        subject=msg.subject,
        reason=reason,
        field=field,
        deliveries=meta[0],
        stream_seq=meta[1],
        headers=dict(msg.headers or {}),
        payload_b64=base64.b64encode(msg.data).decode(),
        at=datetime.now(UTC),
    )


def _metadata(msg: Msg) -> tuple[int, int | None]:
    try:
        meta = msg.metadata
    except (nats.errors.NotJSMessageError, ValueError, IndexError):
        return 1, None
    return meta.num_delivered, meta.sequence.stream


class DurableConsumer(Generic[T]):
    """One durable pull consumer on one JetStream stream."""

    def __init__(
        self,
        js: JetStreamContext,
        *,
        service: str,
        durable: str,
        stream: str,
        subject: str,
        decode: Decoder[T],
        handle: BatchHandler[T],
        metrics: Metrics,
        batch: int = 256,
        fetch_timeout: float = 1.0,
        max_deliver: int = 5,
        ack_wait: float = 30.0,
        nak_delay: float = 1.0,
        max_ack_pending: int = 20_000,
        linger_s: float = 0.0,
    ) -> None:
        self.js = js
        self.service = service
        self.durable = durable
        self.stream = stream
        self.subject = subject
        self.decode = decode
        self.handle = handle
        self.metrics = metrics
        self.batch = batch
        self.fetch_timeout = fetch_timeout
        self.max_deliver = max_deliver
        self.ack_wait = ack_wait
        self.nak_delay = nak_delay
        self.max_ack_pending = max_ack_pending
        self.linger_s = linger_s  # wait this long for more before handling a short batch
        self._labels = (service, durable)
        self._sub: JetStreamContext.PullSubscription | None = None

    async def declare(self) -> None:
        """Create (or bind to) the durable consumer."""
        config = ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            max_deliver=-1,  # counted here, so an exhausted message is dead-lettered, not dropped
            max_ack_pending=self.max_ack_pending,
            filter_subject=self.subject,
        )
        self._sub = await self.js.pull_subscribe(
            self.subject, durable=self.durable, stream=self.stream, config=config
        )
        log.info(
            "durable consumer ready",
            extra={"durable": self.durable, "stream": self.stream, "subject": self.subject},
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Process messages until ``stop`` is set."""
        if self._sub is None:
            await self.declare()
        assert self._sub is not None
        lag_task = asyncio.create_task(self._watch_lag(stop))
        try:
            while not stop.is_set():
                try:
                    msgs = await self._sub.fetch(self.batch, timeout=self.fetch_timeout)
                except (nats.errors.TimeoutError, TimeoutError):
                    continue
                except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
                    if stop.is_set():
                        break
                    raise
                except nats.errors.Error as exc:
                    self.metrics.errors.labels(*self._labels, "fetch").inc()
                    log.warning("fetch failed", extra={"error": str(exc), "durable": self.durable})
                    await asyncio.sleep(0.5)
                    continue
                if self.linger_s and len(msgs) < self.batch:
                    await asyncio.sleep(self.linger_s)
                    with contextlib.suppress(nats.errors.TimeoutError, TimeoutError):
                        msgs += await self._sub.fetch(self.batch - len(msgs), timeout=0.2)
                await self.process(msgs)
        finally:
            lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lag_task

    async def process(self, msgs: list[Msg]) -> None:
        """Decode, dead-letter, handle and acknowledge one fetched batch."""
        self.metrics.messages_in.labels(*self._labels).inc(len(msgs))
        good: list[Delivery[T]] = []
        for msg in msgs:
            deliveries, _ = _metadata(msg)
            if deliveries > 1:
                self.metrics.redeliveries.labels(*self._labels).inc()
            if deliveries > self.max_deliver:
                await self._dead_letter(msg, f"not processed after {deliveries - 1} deliveries")
                continue
            try:
                good.append(Delivery(msg, self.decode(msg)))
            except BadMessage as exc:
                await self._dead_letter(msg, exc.reason, exc.field)
        if not good:
            return
        try:
            await self.handle(good)
        except TransientError as exc:
            self.metrics.errors.labels(*self._labels, "transient").inc()
            log.warning(
                "batch failed, redelivering",
                extra={"error": str(exc), "messages": len(good), "durable": self.durable},
            )
            await asyncio.gather(*(d.msg.nak(delay=self.nak_delay) for d in good))
            return
        except Exception:
            self.metrics.errors.labels(*self._labels, "handler").inc()
            log.exception("batch failed unexpectedly", extra={"durable": self.durable})
            await self._one_by_one(good)
            return
        await self._ack(good)

    async def _one_by_one(self, deliveries: list[Delivery[T]]) -> None:
        for d in deliveries:
            try:
                await self.handle([d])
            except Exception as exc:
                self.metrics.errors.labels(*self._labels, "handler").inc()
                log.warning(
                    "message failed, redelivering",
                    extra={"error": repr(exc), "subject": d.msg.subject, "durable": self.durable},
                )
                await d.msg.nak(delay=self.nak_delay)
            else:
                await self._ack([d])

    async def _ack(self, deliveries: list[Delivery[T]]) -> None:
        await asyncio.gather(*(d.msg.ack() for d in deliveries))
        self.metrics.messages_done.labels(*self._labels).inc(len(deliveries))

    async def _dead_letter(self, msg: Msg, reason: str, field: str = "") -> None:
        record = dead_letter_for(self.service, msg, reason, field)
        await self.js.publish(
            subjects.dead_letter(self.service),
            record.model_dump_json().encode(),
            headers={subjects.HEADER_CONTENT_TYPE: "application/json"},
        )
        await msg.ack()
        self.metrics.dead_letters.labels(*self._labels).inc()
        log.warning(
            "message dead-lettered",
            extra={
                "subject": msg.subject,
                "reason": reason,
                "field": field,
                "durable": self.durable,
            },
        )

    async def _watch_lag(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                assert self._sub is not None
                info = await self._sub.consumer_info()
                self.metrics.lag.labels(*self._labels).set(info.num_pending or 0)
                self.metrics.ack_pending.labels(*self._labels).set(info.num_ack_pending or 0)
            except (nats.errors.Error, TimeoutError) as exc:
                log.debug("consumer info failed", extra={"error": str(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=5)
