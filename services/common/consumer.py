"""The durable pull-consumer loop every service runs, and how it classifies failures.

Fetch a batch, decode each message, hand the decoded batch to the service's handler, and
acknowledge only after the handler returned, i.e. after its side effects are committed.

Every failure belongs to one of two kinds (:func:`is_transient` tells them apart):

- **poison** — the message itself is at fault (it does not decode, a value is out of range, the
  handler raised anything that is not an outage). It is isolated from the rest of its batch,
  sent to ``vertac.dlq.<service>`` with the exception type, message and offending field, and
  acknowledged. A process never dies of a message.
- **transient** — a server the handler needs is unreachable (PostgreSQL, NATS, the object store,
  InfluxDB). The batch is retried in place with backoff for as long as the outage lasts, its
  messages kept alive with ``in_progress`` so JetStream neither redelivers them nor counts the
  attempts; nothing is dead-lettered for it, and ``vertac_dependency_down`` reports the outage.

A message delivered more than ``max_deliver`` times (it was in flight while its process died that
often) is dead-lettered too, so one that kills its process cannot crash-loop a service. A dead
letter always fits on the bus: a payload above :data:`INLINE_PAYLOAD_LIMIT` is kept by reference
(source stream and sequence) instead of inline; publishing a dead letter is retried until it
works, and a deleted dead-letter stream is created again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy

from edge.client import describe
from services.common.deadletter import (
    MAX_HEADER_CHARS,
    dead_letter_for,
    delivery_metadata,
    publish_dead_letter,
)
from services.common.failures import BadMessage, is_transient
from services.common.metrics import Metrics
from services.common.pull import Puller, ack_all, mark_in_progress

YIELD_EVERY = 16  # messages decoded between two turns of the event loop
log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Delivery(Generic[T]):
    """A decoded message and the bus message it came in."""

    msg: Msg
    item: T


Decoder = Callable[[Msg], T]
BatchHandler = Callable[[list[Delivery[T]]], Awaitable[None]]


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
        max_deliver: int = 20,
        ack_wait: float = 30.0,
        nak_delay: float = 1.0,
        max_retry_delay: float = 30.0,
        max_ack_pending: int = 20_000,
        linger_s: float = 0.0,
        guard: Callable[[], bool] | None = None,
        handler_acks: bool = False,
        pause_s: float = 0.0,
        ack_policy: AckPolicy = AckPolicy.EXPLICIT,
        probe_every_s: float = 10.0,
        pipelined: bool = False,
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
        self.nak_delay = nak_delay  # first retry delay of an outage, doubling to max_retry_delay
        self.max_retry_delay = max_retry_delay
        # messages waiting behind the last fetched one (JetStream's num_pending); -1 unknown
        self.backlog = -1
        self.seeing_since_ns: int | None = None  # since when fetches reach the bus without a break
        self.retrying = False  # True while a batch waits for an outage to pass
        self.handling_since: float | None = None
        self._stop = asyncio.Event()
        self.max_ack_pending = max_ack_pending
        self.linger_s = linger_s  # wait this long for more before handling a short batch
        # after a batch shorter than asked for (all caught up), wait this long before the next
        # fetch: a fetch costs the same for one message as for many, so a consumer of a trickle
        # (one partition of a plant) lets a few arrive instead of pulling them one by one
        self.pause_s = pause_s
        # fetch (and linger for) the next batch while this one is handled: one batch is handled
        # at a time, in order, but a handler that waits on a database overlaps the fetching, and
        # the next batch grows while it waits (ingest's transactions)
        self.pipelined = pipelined
        # False while this process may not act on what it fetched (a partition whose lease is
        # not confirmed): the fetched batch waits, unhandled, until it is True again
        self.guard = guard
        # the handler acknowledges its messages itself, once their effect is saved (cycles
        # saves state about once a second and acknowledges then)
        self.handler_acks = handler_acks
        # a new durable's policy; one that exists keeps its own (read back in declare()). With
        # AckPolicy.ALL one acknowledgement, of a batch's last message, settles the batch
        self.ack_policy = ack_policy
        self._labels = (service, durable)
        self._sub: Puller | None = None
        # how often an idle consumer asks JetStream whether its stream is empty or out of reach
        # (a consumer_info call, the costliest request of an idle plant); 0: at every fetch
        # timeout, for a consumer whose backlog and seeing_since_ns judge silence (cycles)
        self.probe_every_s = probe_every_s
        self._probed_at = -float("inf")

    async def declare(self) -> None:
        """Create (or bind to) the durable consumer."""
        config = ConsumerConfig(
            durable_name=self.durable,
            ack_policy=self.ack_policy,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            max_deliver=-1,  # counted here, so an exhausted message is dead-lettered, not dropped
            max_ack_pending=self.max_ack_pending,
            filter_subject=self.subject,
        )
        try:
            info = await self.js.consumer_info(self.stream, self.durable)
        except nats.js.errors.NotFoundError:
            info = await self.js.add_consumer(self.stream, config=config)
        # an existing durable keeps the policy it was made with (it cannot be changed)
        self.ack_policy = AckPolicy(info.config.ack_policy or AckPolicy.EXPLICIT)
        puller = Puller(
            self.js._nc, self.js._prefix, self.stream, self.durable, batch=self.batch,
            expires_s=max(2 * self.fetch_timeout, 1.0),
        )  # fmt: skip
        await puller.open()
        self._sub = puller
        log.info(
            "durable consumer ready",
            extra={"durable": self.durable, "stream": self.stream, "subject": self.subject,
                   "ack_policy": str(self.ack_policy.value)},
        )  # fmt: skip

    @property
    def _ack_all(self) -> bool:
        return self.ack_policy == AckPolicy.ALL

    async def info(self) -> ConsumerInfo:
        """The durable's state as JetStream keeps it."""
        info: ConsumerInfo = await self.js.consumer_info(self.stream, self.durable)
        return info

    async def run(self, stop: asyncio.Event) -> None:
        """Process messages until ``stop`` is set."""
        self._stop = stop
        if self._sub is None:
            await self.declare()
        assert self._sub is not None
        lag_task = asyncio.create_task(self._watch_lag(stop))
        handling: asyncio.Task[None] | None = None
        try:
            while not stop.is_set():
                try:
                    msgs = await self._sub.next_batch(self.batch, self.fetch_timeout)
                except (nats.errors.TimeoutError, TimeoutError):
                    await self._probe()
                    continue
                except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
                    if stop.is_set():
                        break
                    raise
                except nats.errors.Error as exc:
                    self._saw(connected=False, empty=True)
                    self.metrics.errors.labels(*self._labels, "fetch").inc()
                    log.warning("fetch failed", extra={"error": str(exc), "durable": self.durable})
                    await asyncio.sleep(0.5)
                    continue
                self._saw(connected=True, empty=False)
                if self.guard is not None and not await self._guarded(stop):
                    break  # stopping: what was fetched stays unacknowledged, for the next holder
                if self.linger_s and len(msgs) < self.batch:
                    await asyncio.sleep(self.linger_s)
                    with contextlib.suppress(nats.errors.TimeoutError, TimeoutError):
                        msgs += await self._sub.next_batch(self.batch - len(msgs), 0.2)
                if self.pipelined:
                    if handling is not None:
                        await handling  # one batch at a time, in order
                    handling = asyncio.create_task(self.process(msgs))
                    continue
                await self.process(msgs)
                if self.pause_s and len(msgs) < self.batch:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.pause_s)
        finally:
            if handling is not None:  # the batch in hand is finished (or given back) first
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(handling)
            lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lag_task
            # what the outstanding requests delivered and was not handled goes back at once,
            # so the next holder gets it in order instead of after ack_wait
            await self._sub.close()
            self._sub = None

    async def _guarded(self, stop: asyncio.Event) -> bool:
        """Wait until the guard allows work (True) or the consumer stops (False). What was
        fetched is held meanwhile and handled next, so nothing newer overtakes it; it is not
        kept alive either: should the work pass to another process, the messages expire and come
        back there first."""
        while not stop.is_set():
            if self.guard is None or self.guard():
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
        return False

    async def _probe(self) -> None:
        """After a fetch that timed out: is the stream empty, or out of reach? The two look
        alike from the fetch (a stream without a leader, during an election or with its
        servers down, answers nothing either), so ask JetStream for the consumer's state; no
        answer means nothing can be said about what waits."""
        if not self._connected() or self._sub is None:
            self._saw(connected=False, empty=True)
            return
        now = time.monotonic()
        if now - self._probed_at < self.probe_every_s and self.seeing_since_ns is not None:
            return  # seen lately, and the connection has held since
        self._probed_at = now
        try:
            info = await asyncio.wait_for(self.info(), timeout=self.fetch_timeout)
            if not info.num_pending and info.cluster is not None and info.cluster.replicas:
                # with replicas the consumer's leader may answer while the stream has none (it
                # was killed, a new one is being elected): nothing can be stored then, so the
                # stream must answer too before "nothing waits" is believed
                await asyncio.wait_for(self.js.stream_info(self.stream), timeout=self.fetch_timeout)
        except (nats.errors.Error, TimeoutError):
            self._saw(connected=False, empty=True)
            return
        pending = int(info.num_pending or 0)
        self._saw(connected=True, empty=pending == 0)
        if pending:
            self.backlog = pending

    def _connected(self) -> bool:
        nc = getattr(self.js, "_nc", None)
        return bool(nc is None or nc.is_connected)

    def _saw(self, *, connected: bool, empty: bool) -> None:
        """Keep ``backlog`` and ``seeing_since_ns`` true to what this consumer can know: while
        the bus is out of reach nothing can be said about what waits (backlog -1)."""
        if not connected:
            self.backlog = -1
            self.seeing_since_ns = None
            return
        if self.seeing_since_ns is None:
            self.seeing_since_ns = time.time_ns()
        if empty:
            self.backlog = 0

    async def process(self, msgs: list[Msg]) -> None:
        """Decode, dead-letter, handle and acknowledge one fetched batch; never raises for a
        message's sake."""
        self.metrics.messages_in.labels(*self._labels).inc(len(msgs))
        good: list[Delivery[T]] = []
        unsettled = False  # a dead letter that could not be published
        for i, msg in enumerate(msgs):
            if i and i % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a long batch must not starve lease renewals and the rest
            deliveries, _, _ = delivery_metadata(msg)
            if deliveries > 1:
                self.metrics.redeliveries.labels(*self._labels).inc()
            if deliveries > self.max_deliver:
                unsettled |= not await self._dead_letter(
                    msg,
                    f"not processed after {deliveries - 1} deliveries",
                    "",
                    "MaxDeliveries",
                    ack=not self._ack_all,
                )
                continue
            try:
                good.append(Delivery(msg, self.decode(msg)))
            except BadMessage as exc:
                unsettled |= not await self._dead_letter(
                    msg, exc.reason, exc.field, type(exc).__name__, ack=not self._ack_all
                )
            except Exception as exc:  # a decoder bug or an unforeseen input: that message's fault
                unsettled |= not await self._dead_letter(
                    msg, describe(exc), "", type(exc).__name__, ack=not self._ack_all
                )
        if msgs:
            with contextlib.suppress(nats.errors.NotJSMessageError, ValueError, IndexError):
                self.backlog = msgs[-1].metadata.num_pending
        if self._ack_all and unsettled:
            # a dead letter could not be published (stopping): acknowledging anything after it
            # would take it along; the whole batch comes back instead
            return
        if not good:
            if self._ack_all and msgs:
                await ack_all([msgs[-1]])  # only dead letters: one acknowledgement settles them
            return
        try:
            done = await self._handle_through_outages(good)
        except Exception as exc:
            self.metrics.errors.labels(*self._labels, "handler").inc()
            log.warning(
                "batch failed, retrying its messages one by one",
                extra={"error": describe(exc), "messages": len(good), "durable": self.durable},
            )
            done = await self._one_by_one(good)
            if done and self._ack_all and not self.handler_acks:
                await ack_all([msgs[-1]])  # the dead letters after the last good message
            return
        if done and not self.handler_acks:
            await self._ack(good, msgs[-1])

    async def _handle_through_outages(self, deliveries: list[Delivery[T]]) -> bool:
        """Run the handler, retrying in place while it fails for a transient reason.

        Returns False when the consumer is stopping during an outage (the messages stay
        unacknowledged and come back later); raises what is not transient.
        """
        delay = self.nak_delay
        down_since: float | None = None
        while True:
            try:
                await self._handle_alive(deliveries)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self.metrics.errors.labels(*self._labels, "transient").inc()
                if down_since is None:
                    down_since = time.monotonic()
                    self.retrying = True
                    self.metrics.dependency_down.labels(*self._labels).set(1)
                    log.warning(
                        "outage: retrying until it passes",
                        extra={"error": describe(exc), "messages": len(deliveries),
                               "durable": self.durable},
                    )  # fmt: skip
                if not await self._keep_alive(deliveries, delay):
                    return False
                delay = min(delay * 2, self.max_retry_delay)
                continue
            if down_since is not None:
                self.retrying = False
                self.metrics.dependency_down.labels(*self._labels).set(0)
                log.warning(
                    "outage over",
                    extra={"down_s": round(time.monotonic() - down_since, 1),
                           "durable": self.durable},
                )  # fmt: skip
            return True

    async def _handle_alive(self, deliveries: list[Delivery[T]]) -> None:
        """Run the handler; while it takes longer than a third of ``ack_wait`` (a pool waiting
        for a database that is down), keep telling JetStream the messages are being worked on
        (a timer, not a task per batch: most batches take milliseconds)."""
        loop = asyncio.get_running_loop()
        every = max(self.ack_wait / 3, 0.5)
        touches: set[asyncio.Future[None]] = set()
        timer: list[asyncio.TimerHandle] = []  # the one pending timer

        def touch() -> None:
            future = asyncio.ensure_future(mark_in_progress(self._held(deliveries)))
            touches.add(future)
            future.add_done_callback(touches.discard)
            timer[0] = loop.call_later(every, touch)

        timer.append(loop.call_later(every, touch))
        self.handling_since = time.monotonic()
        try:
            await self.handle(deliveries)
        finally:
            timer[0].cancel()
            self.handling_since = None

    def _held(self, deliveries: list[Delivery[T]]) -> list[Msg]:
        """The batch in hand and what was delivered behind it, waiting in the inbox: all of
        it is this process's to keep alive while the batch waits."""
        queued = self._sub.queued() if self._sub is not None else []
        return [d.msg for d in deliveries] + queued

    def waiting(self) -> bool:
        """True while a batch waits for an outage, or one handler call has taken over a
        second: what it holds is not applied yet, so silence cannot be judged."""
        since = self.handling_since
        return self.retrying or (since is not None and time.monotonic() - since > 1.0)

    async def _keep_alive(self, deliveries: list[Delivery[T]], seconds: float) -> bool:
        """Wait ``seconds`` while telling JetStream the messages are still being worked on;
        False when the consumer is stopping."""
        deadline = time.monotonic() + seconds
        every = max(self.ack_wait / 3, 0.5)
        while True:
            await mark_in_progress(self._held(deliveries))
            left = deadline - time.monotonic()
            if left <= 0:
                return not self._stop.is_set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=min(every, left))
            if self._stop.is_set():
                return False

    async def _one_by_one(self, deliveries: list[Delivery[T]]) -> bool:
        """Handle ``deliveries`` one at a time, dead-lettering each that fails; False when
        the consumer stopped before the end."""
        for d in deliveries:
            try:
                done = await self._handle_through_outages([d])
            except BadMessage as exc:
                if not await self._dead_letter(d.msg, exc.reason, exc.field, type(exc).__name__):
                    return False
                continue
            except Exception as exc:  # poison: this message, and only it, cannot be processed
                self.metrics.errors.labels(*self._labels, "poison").inc()
                log.exception("message failed", extra={"durable": self.durable})
                if not await self._dead_letter(d.msg, describe(exc), "", type(exc).__name__):
                    return False
                continue
            if not done:
                self.retrying = False
                return False
            if not self.handler_acks:
                await self._ack([d], d.msg)
        return True

    async def _ack(self, deliveries: list[Delivery[T]], last: Msg) -> None:
        """Acknowledge handled ``deliveries``: each of them, or under AckPolicy.ALL only
        ``last``, the batch's last message, which settles everything before it."""
        await ack_all([last] if self._ack_all else [d.msg for d in deliveries])
        self.metrics.messages_done.labels(*self._labels).inc(len(deliveries))

    async def _dead_letter(
        self, msg: Msg, reason: str, field: str, error_type: str, *, ack: bool = True
    ) -> bool:
        """Publish ``msg`` to the dead letters and (with ``ack``) acknowledge it; False when
        the consumer stopped before the dead letter could be published."""
        record = dead_letter_for(self.service, msg, reason, field, error_type)
        if not await publish_dead_letter(self.js, record, self._stop, self.max_retry_delay):
            return False  # stopping: the message stays unacknowledged and comes back
        if ack:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await msg.ack()
        self.metrics.dead_letters.labels(*self._labels).inc()
        log.warning(
            "message dead-lettered",
            extra={
                "subject": msg.subject[:MAX_HEADER_CHARS],
                "reason": record.reason,
                "field": record.field,
                "error_type": error_type,
                "durable": self.durable,
            },
        )
        return True

    async def _watch_lag(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                info = await self.info()
                self.metrics.lag.labels(*self._labels).set(info.num_pending or 0)
                self.metrics.ack_pending.labels(*self._labels).set(info.num_ack_pending or 0)
            except (nats.errors.Error, TimeoutError) as exc:
                log.debug("consumer info failed", extra={"error": str(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=5)
