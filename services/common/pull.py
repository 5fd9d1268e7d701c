"""A durable pull consumer's deliveries, with its requests kept outstanding.

nats-py's ``fetch`` asks anew for every batch (a no-wait request, then a waiting one) and waits
for each message with a task and a timer of its own: at a plant's rate, a consumer spends more on
asking than on its messages. :class:`Puller` works the way JetStream's "consume" does in the
other clients: one inbox receives every delivery; pull requests of ``batch`` messages stay
outstanding, a new one going out whenever less than half a batch is still asked for, so the
server sends messages as they are stored, and the consumer takes whatever has arrived in one go.

Requests expire after ``expires_s``; the server says so with a 408 status (a 409 ends one too:
leadership change, consumer deleted). A request whose end was never heard of (the connection
dropped, the server restarted) is forgotten ``GRACE_S`` after its expiry, so the puller asks again
on its own. :meth:`close` stops asking and leaves the inbox (JetStream then drops the requests
still outstanding) once every message sent to it has arrived, and gives back (naks) what it did
not handle, so the next holder of the durable gets it first.

:func:`ack_all` and :func:`mark_in_progress` are how consumers and handlers acknowledge messages
and keep them alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

GRACE_S = 1.0  # after a request's expiry, wait this long for its 408 before forgetting it
_STATUS = "Status"
_ENDS_A_REQUEST = ("408", "409")


@dataclass(slots=True)
class _Request:
    deadline: float  # monotonic time after which the server has ended it
    left: int  # messages it may still deliver


class Puller:
    """Outstanding pull requests on one durable, and the messages they delivered."""

    def __init__(
        self, nc: Client, api_prefix: str, stream: str, durable: str, *, batch: int,
        expires_s: float,
    ) -> None:  # fmt: skip
        self.nc = nc
        self.subject = f"{api_prefix}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self.batch = max(1, batch)
        self.expires_s = max(0.5, expires_s)
        self.requests: deque[_Request] = deque()
        self.inbox = ""
        self._sub: Subscription | None = None
        self._queue: asyncio.Queue[Msg] | None = None
        self._asking = True

    async def open(self) -> None:
        self.inbox = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(self.inbox)
        self._queue = self._sub._pending_queue

    def _asked(self, now: float) -> int:
        """Messages the outstanding requests may still deliver (forgetting lost requests)."""
        while self.requests and self.requests[0].deadline + GRACE_S < now:
            self.requests.popleft()
        return sum(r.left for r in self.requests)

    async def _top_up(self) -> None:
        now = time.monotonic()
        if not self._asking or self._asked(now) >= (self.batch + 1) // 2:
            return
        body = json.dumps({"batch": self.batch, "expires": int(self.expires_s * 1e9)}).encode()
        await self.nc.publish(self.subject, body, reply=self.inbox)
        self.requests.append(_Request(now + self.expires_s, self.batch))

    def _take(self, msg: Msg, into: list[Msg]) -> None:
        """Count one delivery against its request; keep it when it is a message."""
        assert self._sub is not None
        self._sub._pending_size -= len(msg.data)
        status = msg.headers.get(_STATUS) if msg.headers else None
        if status is None:
            if self.requests:
                self.requests[0].left -= 1
                if self.requests[0].left <= 0:
                    self.requests.popleft()
            into.append(msg)
        elif status in _ENDS_A_REQUEST and self.requests:
            self.requests.popleft()
        # other statuses (100 heartbeat, 404, 503 no responders) end nothing we asked for

    async def next_batch(self, limit: int, wait_s: float) -> list[Msg]:
        """What has been delivered, up to ``limit`` messages, waiting up to ``wait_s`` for the
        first; raises :class:`TimeoutError` when none came."""
        assert self._queue is not None
        deadline = time.monotonic() + wait_s
        msgs: list[Msg] = []
        while not msgs:
            await self._top_up()
            if self._queue.empty():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                try:
                    first = await asyncio.wait_for(self._queue.get(), min(left, self.expires_s))
                except TimeoutError:
                    continue  # asks again when its requests lapsed unheard, then times out
                self._take(first, msgs)
            while len(msgs) < limit and not self._queue.empty():
                self._take(self._queue.get_nowait(), msgs)
        return msgs

    def queued(self) -> list[Msg]:
        """Messages delivered and not yet taken (kept alive with the batch in hand)."""
        if self._queue is None:
            return []
        held: deque[Msg] = self._queue._queue  # type: ignore[attr-defined]
        return [m for m in held if not (m.headers and m.headers.get(_STATUS))]

    async def close(self, give_back: bool = True) -> None:
        """Stop asking, leave the inbox and give back what was delivered and not taken.

        JetStream drops the outstanding requests of an inbox nobody listens to any more, so the
        inbox is left at once, without waiting for them to expire: the server is told first,
        and a round trip later everything it sent before it knew is in the queue (the
        subscription is removed only then), to be given back with the rest.
        """
        self._asking = False
        if self._sub is None or self._queue is None:
            return
        leftovers: list[Msg] = []
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            if self.nc.is_connected:
                await self.nc._send_unsubscribe(self._sub._id)
                await self.nc.flush(timeout=2)
        while not self._queue.empty():
            self._take(self._queue.get_nowait(), leftovers)
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await self._sub.unsubscribe()
        self.requests.clear()
        self._sub = None
        if give_back:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                for msg in leftovers:
                    if msg.reply:
                        await msg.nak()


async def ack_all(msgs: list[Msg]) -> None:
    """Acknowledge ``msgs`` one after the other: an ack only queues a publish on the
    connection, so no task per message is needed. A lost ack means one redelivery, which every
    handler tolerates."""
    with contextlib.suppress(nats.errors.Error, TimeoutError):
        for msg in msgs:
            await msg.ack()


async def mark_in_progress(msgs: list[Msg]) -> None:
    """Tell JetStream the messages are still being worked on (a lost touch is harmless)."""
    with contextlib.suppress(nats.errors.Error, TimeoutError, OSError):
        for msg in msgs:
            await msg.in_progress()
